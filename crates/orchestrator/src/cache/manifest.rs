//! What the cache records: an entry's manifest, a stage's state record, and why an entry
//! cannot be used.

use std::collections::BTreeMap;
use std::path::PathBuf;

use artifacts::ContentHash;
use serde::{Deserialize, Serialize};

/// One output as recorded in a manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// Path relative to the entry's `outputs/` folder.
    pub file_name: String,
    pub hash: ContentHash,
    pub bytes: u64,
}

/// The manifest of one cached run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub key: String,
    /// The stage instance that produced the entry first (another with identical kind, params
    /// and inputs shares it).
    pub stage: String,
    pub kind: String,
    pub kind_version: u32,
    pub params: serde_json::Value,
    pub inputs: BTreeMap<String, Vec<InputRecord>>,
    pub outputs: BTreeMap<String, OutputRecord>,
    pub started_unix_s: f64,
    pub duration_s: f64,
    /// The process's peak RSS during the run, when the stage ran alone (`--jobs 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    /// The process's RSS when that stage started (what it held from earlier work).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_rss_bytes: Option<u64>,
    /// The Slurm job that ran the stage (`zfnet run --executor slurm`), with its node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_job: Option<crate::slurm::SlurmJob>,
    pub tool_version: String,
    pub summary: Vec<String>,
}

/// One input as recorded in a manifest or state file: what it named and its content hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRecord {
    pub source: String,
    pub hash: ContentHash,
}

/// The last successful run of a stage instance in a pipeline: what `status` compares against
/// to say why a stage is stale.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateRecord {
    /// The pipeline and stage instance this record belongs to (its file name may be a hash of
    /// them, when they are too long for a file name). Empty in records written before zfnet
    /// 0.1 recorded them; the file name says then.
    #[serde(default)]
    pub pipeline: String,
    #[serde(default)]
    pub stage: String,
    pub key: String,
    pub kind: String,
    pub kind_version: u32,
    pub params: serde_json::Value,
    pub inputs: BTreeMap<String, Vec<InputRecord>>,
}

pub const MANIFEST_FORMAT: u32 = 1;

/// Why a cached entry cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryProblem {
    /// No entry for this key.
    Absent,
    /// The entry's manifest is unreadable.
    BadManifest(String),
    /// An output is gone or its content hash changed.
    Corrupted { output: String, path: PathBuf },
    /// The manifest lacks an output the stage kind declares (written by an older or broken
    /// run): the entry is stale.
    MissingOutput { output: String },
}
