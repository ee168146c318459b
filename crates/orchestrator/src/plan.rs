//! Cache decisions: the key of a stage run, whether a stage is fresh, and why it is stale.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use artifacts::ContentHash;
use serde::Serialize;
use stage_api::Params;

use crate::cache::{Cache, EntryProblem, InputRecord, Manifest, StateRecord};
use crate::{Dag, InputRef, ResolvedStage};

/// Finished outputs known so far: (stage, output) -> (path, content hash).
pub type OutputIndex = BTreeMap<(String, String), (PathBuf, ContentHash)>;

/// The cache key of a run: blake3 over the stage kind and its implementation version, the
/// canonical params, and the content hash of every input. The stage's *name* is not part of
/// it: two stages doing the same work share one entry.
pub fn cache_key(
    kind: &str,
    kind_version: u32,
    params: &Params,
    inputs: &BTreeMap<String, Vec<InputRecord>>,
) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"zfnet-run-v1\n");
    hasher.update(format!("{kind}\n{kind_version}\n").as_bytes());
    hasher.update(params.canonical_json().as_bytes());
    hasher.update(b"\n");
    for (name, records) in inputs {
        hasher.update(name.as_bytes());
        hasher.update(b"=");
        for record in records {
            hasher.update(record.hash.as_str().as_bytes());
            hasher.update(b",");
        }
        hasher.update(b"\n");
    }
    hasher.finalize().to_hex().to_string()
}

/// The input records (what each input names, with its content hash) of `stage`, or the name of
/// an upstream stage whose outputs are not known yet.
pub fn input_records(
    stage: &ResolvedStage,
    index: &OutputIndex,
    cache: &Cache,
) -> Result<BTreeMap<String, Vec<InputRecord>>, InputsUnknown> {
    let mut records = BTreeMap::new();
    for (name, refs) in &stage.inputs {
        let mut list = Vec::new();
        for input in refs {
            let (source, hash) = match input {
                InputRef::Artifact { stage, output } => {
                    let key = (stage.clone(), output.clone());
                    let (_, hash) = index
                        .get(&key)
                        .ok_or_else(|| InputsUnknown::Upstream(stage.clone()))?;
                    (input.to_string(), hash.clone())
                }
                InputRef::Path(path) => {
                    let hash = cache.memo().hash_path(path).map_err(|error| {
                        InputsUnknown::Unreadable {
                            input: name.clone(),
                            message: error.to_string(),
                        }
                    })?;
                    (path.display().to_string(), hash)
                }
            };
            list.push(InputRecord { source, hash });
        }
        records.insert(name.clone(), list);
    }
    Ok(records)
}

/// Why a stage's inputs cannot be hashed yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputsUnknown {
    /// This upstream stage is not fresh: it must run first.
    Upstream(String),
    /// A dataset path could not be read.
    Unreadable { input: String, message: String },
}

/// Resolved paths of a stage's inputs, for its run context.
pub fn input_paths(stage: &ResolvedStage, index: &OutputIndex) -> BTreeMap<String, Vec<PathBuf>> {
    stage
        .inputs
        .iter()
        .map(|(name, refs)| {
            let paths = refs
                .iter()
                .map(|input| match input {
                    InputRef::Artifact { stage, output } => index
                        .get(&(stage.clone(), output.clone()))
                        .map(|(path, _)| path.clone())
                        .expect("upstream outputs are indexed before a stage runs"),
                    InputRef::Path(path) => path.clone(),
                })
                .collect();
            (name.clone(), paths)
        })
        .collect()
}

/// The outputs a stage's kind declares: a cache entry must record each of them to be fresh.
pub fn declared_outputs(stage: &ResolvedStage) -> Vec<&'static str> {
    stage.kind.outputs().iter().map(|spec| spec.name).collect()
}

/// Adds a finished (or verified) entry's outputs to the index.
pub fn index_outputs(index: &mut OutputIndex, stage: &str, cache: &Cache, manifest: &Manifest) {
    for (name, record) in &manifest.outputs {
        index.insert(
            (stage.to_owned(), name.clone()),
            (
                cache.output_path(&manifest.key, record),
                record.hash.clone(),
            ),
        );
    }
}

/// A stage's state as `zfnet status` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Fresh,
    Stale,
    Missing,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            State::Fresh => "fresh",
            State::Stale => "stale",
            State::Missing => "missing",
        })
    }
}

/// The assessed state of one stage.
#[derive(Clone, Debug, Serialize)]
pub struct StageStatus {
    pub stage: String,
    pub state: State,
    /// Why it is stale or missing (empty when fresh).
    pub reason: String,
    /// The cache key, when every input is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Warnings found while assessing (a corrupted output).
    #[serde(skip)]
    pub corrupted: Option<String>,
    /// The Slurm job of a run in progress that is running this stage, e.g.
    /// `job 41: RUNNING on node3` (filled in by `zfnet status`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slurm_job: Option<String>,
}

/// What changed between the last successful run of a stage and now. Pure.
pub fn staleness_reasons(
    previous: &StateRecord,
    kind: &str,
    kind_version: u32,
    params: &Params,
    inputs: &BTreeMap<String, Vec<InputRecord>>,
) -> Vec<String> {
    let mut reasons = Vec::new();
    if previous.kind != kind {
        reasons.push(format!("kind changed: {} -> {kind}", previous.kind));
    } else if previous.kind_version != kind_version {
        reasons.push(format!(
            "implementation of `{kind}` changed (version {} -> {kind_version})",
            previous.kind_version
        ));
    }
    let now = serde_json::to_value(params).expect("params serialise");
    let empty = serde_json::Map::new();
    let (old_map, new_map) = (
        previous.params.as_object().unwrap_or(&empty),
        now.as_object().unwrap_or(&empty),
    );
    let names: BTreeSet<&String> = old_map.keys().chain(new_map.keys()).collect();
    for name in names {
        match (old_map.get(name), new_map.get(name)) {
            (Some(old), Some(new)) if old != new => {
                reasons.push(format!("param `{name}` changed: {old} -> {new}"))
            }
            (None, Some(new)) => reasons.push(format!("param `{name}` added: {new}")),
            (Some(old), None) => reasons.push(format!("param `{name}` removed (was {old})")),
            _ => {}
        }
    }
    let names: BTreeSet<&String> = previous.inputs.keys().chain(inputs.keys()).collect();
    for name in names {
        match (previous.inputs.get(name), inputs.get(name)) {
            (Some(old), Some(new)) if old != new => {
                let old_sources: Vec<&str> = old.iter().map(|r| r.source.as_str()).collect();
                let new_sources: Vec<&str> = new.iter().map(|r| r.source.as_str()).collect();
                if old_sources != new_sources {
                    reasons.push(format!(
                        "input `{name}` now reads {} (was {})",
                        new_sources.join(", "),
                        old_sources.join(", ")
                    ));
                } else {
                    reasons.push(format!(
                        "input `{name}` changed ({})",
                        new_sources.join(", ")
                    ));
                }
            }
            (None, Some(_)) => reasons.push(format!("input `{name}` added")),
            (Some(_), None) => reasons.push(format!("input `{name}` removed")),
            _ => {}
        }
    }
    reasons
}

/// Assesses `stages` (a topologically ordered subset of `dag`, upstream included) against the
/// cache. Reads only; verifies fresh entries' outputs by content hash (through the memo).
pub fn assess(dag: &Dag, cache: &Cache, stages: &[&ResolvedStage]) -> Vec<StageStatus> {
    let mut index = OutputIndex::new();
    let mut statuses: Vec<StageStatus> = Vec::new();
    for stage in stages {
        let previous = cache.read_state(&dag.name, &stage.name);
        let mut status = StageStatus {
            stage: stage.name.clone(),
            state: State::Missing,
            reason: String::new(),
            key: None,
            corrupted: None,
            slurm_job: None,
        };
        match input_records(stage, &index, cache) {
            Err(InputsUnknown::Upstream(upstream)) => {
                let upstream_state = statuses
                    .iter()
                    .find(|s| s.stage == upstream)
                    .map(|s| s.state)
                    .unwrap_or(State::Missing);
                if previous.is_some() {
                    status.state = State::Stale;
                }
                status.reason = format!("upstream `{upstream}` is {upstream_state}");
            }
            Err(InputsUnknown::Unreadable { input, message }) => {
                status.state = if previous.is_some() {
                    State::Stale
                } else {
                    State::Missing
                };
                status.reason = format!("input `{input}` is unreadable: {message}");
            }
            Ok(inputs) => {
                let key = cache_key(
                    stage.kind.name(),
                    stage.kind.version(),
                    &stage.params,
                    &inputs,
                );
                match cache.verified_manifest(&key, &declared_outputs(stage)) {
                    Ok(manifest) => {
                        status.state = State::Fresh;
                        index_outputs(&mut index, &stage.name, cache, &manifest);
                    }
                    Err(problem) => {
                        let changes = previous.as_ref().map(|previous| {
                            staleness_reasons(
                                previous,
                                stage.kind.name(),
                                stage.kind.version(),
                                &stage.params,
                                &inputs,
                            )
                        });
                        status.state = if previous.is_some() {
                            State::Stale
                        } else {
                            State::Missing
                        };
                        status.reason = match (&problem, changes) {
                            (EntryProblem::Corrupted { output, path }, _) => {
                                let message = format!(
                                    "cached output `{output}` ({}) does not match its recorded \
                                     content hash: it is corrupted and will be rebuilt",
                                    path.display()
                                );
                                status.state = State::Stale;
                                status.corrupted = Some(message.clone());
                                message
                            }
                            (EntryProblem::BadManifest(message), _) => {
                                status.state = State::Stale;
                                format!("cache manifest is unreadable ({message})")
                            }
                            (EntryProblem::MissingOutput { output }, _) => {
                                status.state = State::Stale;
                                format!(
                                    "its cache entry does not record the output `{output}`; \
                                     it will be rebuilt"
                                )
                            }
                            (EntryProblem::Absent, Some(changes)) if !changes.is_empty() => {
                                changes.join("; ")
                            }
                            (EntryProblem::Absent, Some(_)) => {
                                "its cache entry was removed".to_owned()
                            }
                            (EntryProblem::Absent, None) => "never run".to_owned(),
                        };
                    }
                }
                status.key = Some(key);
            }
        }
        statuses.push(status);
    }
    statuses
}
