//! Running a stage's work in a fresh temporary folder of the cache and committing the entry:
//! the `StageContext` the stage sees, its outputs hashed into the manifest, and the state
//! record of the run.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::time::{Instant, SystemTime};

use artifacts::{HashMemo, Provenance};
use indicatif::MultiProgress;
use stage_api::{StageContext, UpstreamRun};

use crate::cache::{Cache, MANIFEST_FORMAT, Manifest, OutputRecord, StateRecord};
use crate::plan::{InputsUnknown, OutputIndex, input_paths};
use crate::{Dag, ResolvedStage, TOOL_VERSION};

/// Why a stage's inputs cannot be known, for its failure line.
pub(super) fn describe_unknown(unknown: InputsUnknown) -> String {
    match unknown {
        InputsUnknown::Upstream(name) => format!("upstream `{name}` has no outputs (a bug)"),
        InputsUnknown::Unreadable { input, message } => {
            format!("input `{input}` is unreadable: {message}")
        }
    }
}

/// What a stage's context carries besides its own inputs and outputs.
pub(super) struct ContextExtras {
    pub(super) upstream_runs: Vec<UpstreamRun>,
    pub(super) build: String,
    /// The stage runs alone in the process: its peak RSS can be measured.
    pub(super) measure_peak_rss: bool,
}

/// The recorded runs of every stage upstream of `stage` (transitively), in pipeline order.
/// Each has a state record by now: its run (or reuse) finished before this one started.
pub(super) fn upstream_runs(dag: &Dag, cache: &Cache, stage: &ResolvedStage) -> Vec<UpstreamRun> {
    let mut wanted: BTreeSet<&str> = stage.upstream();
    let mut frontier: Vec<&str> = wanted.iter().copied().collect();
    while let Some(name) = frontier.pop() {
        if let Some(upstream) = dag.stages.iter().find(|s| s.name == name) {
            for next in upstream.upstream() {
                if wanted.insert(next) {
                    frontier.push(next);
                }
            }
        }
    }
    dag.stages
        .iter()
        .filter(|s| wanted.contains(s.name.as_str()))
        .filter_map(|s| {
            let state = cache.read_state(&dag.name, &s.name)?;
            let manifest = cache.read_manifest(&state.key).ok()?;
            Some(UpstreamRun {
                stage: s.name.clone(),
                kind: manifest.kind,
                kind_version: manifest.kind_version,
                cache_key: manifest.key,
                duration_s: manifest.duration_s,
                started_unix_s: manifest.started_unix_s,
                params: manifest.params,
                ran_on: manifest
                    .slurm_job
                    .map(|job| format!("Slurm job {} on {}", job.id, job.node)),
            })
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
pub(super) fn stage_context(
    cache: &Cache,
    stage: &ResolvedStage,
    index: &OutputIndex,
    key: &str,
    inputs: &BTreeMap<String, Vec<crate::cache::InputRecord>>,
    temp_dir: &std::path::Path,
    progress: &MultiProgress,
    extras: ContextExtras,
) -> Result<StageContext, String> {
    let kind = &stage.kind;
    let outputs_dir = temp_dir.join("outputs");
    let scratch_dir = temp_dir.join("scratch");
    for dir in [&outputs_dir, &scratch_dir] {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let output_specs = kind.outputs();
    let outputs = output_specs
        .iter()
        .map(|spec| (spec.name.to_owned(), outputs_dir.join(spec.file_name)))
        .collect();
    let provenance = Provenance {
        stage: stage.name.clone(),
        kind: kind.name().to_owned(),
        kind_version: kind.version(),
        cache_key: key.to_owned(),
        params_hash: blake3::hash(stage.params.canonical_json().as_bytes())
            .to_hex()
            .to_string(),
        input_hashes: inputs
            .iter()
            .map(|(name, records)| {
                (
                    name.clone(),
                    records.iter().map(|r| r.hash.to_string()).collect(),
                )
            })
            .collect(),
        tool_version: TOOL_VERSION.to_owned(),
    };
    let resume_dir = cache.resume_dir(key);
    fs::create_dir_all(&resume_dir).map_err(|e| format!("{}: {e}", resume_dir.display()))?;
    let context = StageContext {
        resume_dir: resume_dir.clone(),
        stage_name: stage.name.clone(),
        params: stage.params.clone(),
        inputs: input_paths(stage, index),
        outputs,
        scratch_dir: scratch_dir.clone(),
        provenance,
        progress: progress.clone(),
        upstream_runs: extras.upstream_runs,
        build: extras.build,
    };
    Ok(context)
}

/// Runs `work` (the stage, or the merge of its shards) in a fresh temporary folder of the
/// cache and commits the outputs; the folder is removed if it fails.
#[allow(clippy::too_many_arguments)]
pub(super) fn execute(
    cache: &Cache,
    stage: &ResolvedStage,
    index: &OutputIndex,
    key: &str,
    inputs: &BTreeMap<String, Vec<crate::cache::InputRecord>>,
    progress: &MultiProgress,
    extras: ContextExtras,
    work: &dyn Fn(&StageContext) -> stage_api::Result<stage_api::RunSummary>,
) -> Result<Manifest, String> {
    let temp_dir = cache.new_temp_dir(key).map_err(|e| e.to_string())?;
    let result = execute_in(
        cache, stage, index, key, inputs, &temp_dir, progress, extras, work,
    );
    if result.is_err() {
        let _ = fs::remove_dir_all(&temp_dir);
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn execute_in(
    cache: &Cache,
    stage: &ResolvedStage,
    index: &OutputIndex,
    key: &str,
    inputs: &BTreeMap<String, Vec<crate::cache::InputRecord>>,
    temp_dir: &std::path::Path,
    progress: &MultiProgress,
    extras: ContextExtras,
    work: &dyn Fn(&StageContext) -> stage_api::Result<stage_api::RunSummary>,
) -> Result<Manifest, String> {
    let kind = &stage.kind;
    let measure_peak_rss = extras.measure_peak_rss;
    let context = stage_context(cache, stage, index, key, inputs, temp_dir, progress, extras)?;
    let scratch_dir = context.scratch_dir.clone();
    let output_specs = kind.outputs();
    let started_unix_s = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let peak_rss = stage_api::memory::PeakRss::start(measure_peak_rss);
    let started = Instant::now();
    let span = tracing::info_span!("stage", name = %stage.name, kind = kind.name());
    let summary = span
        .in_scope(|| work(&context))
        .map_err(|error| format!("{error}"))?;
    let duration_s = started.elapsed().as_secs_f64();
    let (peak_rss_bytes, start_rss_bytes) = peak_rss.bytes().unzip();
    fs::remove_dir_all(&scratch_dir).map_err(|e| format!("{}: {e}", scratch_dir.display()))?;

    let mut records = BTreeMap::new();
    for spec in &output_specs {
        let path = context.output(spec.name);
        if !path.exists() {
            return Err(format!(
                "stage kind `{}` finished without writing its output `{}` (a bug in the stage)",
                kind.name(),
                spec.name
            ));
        }
        let memo = HashMemo::in_memory();
        let hash = memo.hash_path(path).map_err(|e| e.to_string())?;
        let bytes = HashMemo::size_of(path).map_err(|e| e.to_string())?;
        records.insert(
            spec.name.to_owned(),
            OutputRecord {
                file_name: spec.file_name.to_owned(),
                hash,
                bytes,
            },
        );
    }
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        key: key.to_owned(),
        stage: stage.name.clone(),
        kind: kind.name().to_owned(),
        kind_version: kind.version(),
        params: serde_json::to_value(&stage.params).expect("params serialise"),
        inputs: inputs.clone(),
        outputs: records,
        started_unix_s,
        duration_s,
        peak_rss_bytes,
        start_rss_bytes,
        slurm_job: crate::slurm::SlurmJob::from_env(),
        tool_version: TOOL_VERSION.to_owned(),
        summary: summary.lines,
    };
    cache
        .commit(temp_dir, &manifest)
        .map_err(|e| e.to_string())?;
    // The run is committed: its checkpoints are no longer needed.
    let _ = cache.remove_resume(key);
    Ok(manifest)
}

pub(super) fn record_state(
    dag: &Dag,
    cache: &Cache,
    stage: &ResolvedStage,
    key: &str,
    inputs: &BTreeMap<String, Vec<crate::cache::InputRecord>>,
) -> Result<(), String> {
    let record = StateRecord {
        pipeline: dag.name.clone(),
        stage: stage.name.clone(),
        key: key.to_owned(),
        kind: stage.kind.name().to_owned(),
        kind_version: stage.kind.version(),
        params: serde_json::to_value(&stage.params).expect("params serialise"),
        inputs: inputs.clone(),
    };
    cache
        .write_state(&dag.name, &stage.name, &record)
        .map_err(|e| e.to_string())
}
