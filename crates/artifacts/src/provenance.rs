//! Provenance written into every artifact: which stage made it, from what, with which params.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where an artifact came from. Stored as JSON under the Parquet key `zfnet.provenance`, and in
/// the cache manifest, so a file found on its own still says how to make it again.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The stage instance name in the pipeline (`train`, `ablation@arch=zf`).
    pub stage: String,
    /// The stage kind and its implementation version.
    pub kind: String,
    pub kind_version: u32,
    /// The cache key of the run that wrote the artifact.
    pub cache_key: String,
    /// blake3 of the canonical params JSON.
    pub params_hash: String,
    /// Content hashes of every input, by input name.
    pub input_hashes: BTreeMap<String, Vec<String>>,
    /// The zfnet version that ran the stage.
    pub tool_version: String,
}

impl Provenance {
    /// Provenance for artifacts made outside a pipeline (tests, benchmarks, tools).
    pub fn ad_hoc(stage: &str) -> Self {
        Provenance {
            stage: stage.to_owned(),
            kind: stage.to_owned(),
            ..Provenance::default()
        }
    }
}
