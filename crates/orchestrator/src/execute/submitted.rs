//! `zfnet exec-stage`: what a Slurm job runs, the whole stage, one shard of it, or the merge
//! of its shards, committed (or marked complete) in the cache.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use indicatif::MultiProgress;

use super::commit::{ContextExtras, describe_unknown, execute, stage_context, upstream_runs};
use crate::Dag;
use crate::cache::{Cache, Manifest};
use crate::plan::{OutputIndex, cache_key, declared_outputs, index_outputs, input_records};

/// What one `zfnet exec-stage` process does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmittedWork {
    /// The whole stage, committed.
    Whole,
    /// One shard of a sharded stage (a task of Slurm array job `array_job`): its partial
    /// outputs go to `tmp/<key>.<array_job>.<index>/`, marked complete, not committed.
    Shard {
        shard: stage_api::Shard,
        array_job: u64,
    },
    /// The shards of array job `array_job`, merged and committed (then removed).
    Merge { count: usize, array_job: u64 },
}

/// What one `zfnet exec-stage` process did.
#[derive(Clone, Debug)]
pub enum SubmittedOutcome {
    /// The stage's cache entry: committed by this process, or found fresh.
    Committed(Box<Manifest>),
    /// One shard's partial outputs, written and marked complete; no entry (the merge job
    /// commits one).
    ShardDone {
        key: String,
        seconds: f64,
        summary: Vec<String>,
    },
}

/// The file a shard writes last, once its outputs are complete and synced.
const SHARD_COMPLETE: &str = "complete";

/// `zfnet exec-stage`: runs one stage of `dag` in this process (or one shard of it, or the
/// merge of its shards), as a Slurm job does, and commits its entry. Its upstream stages'
/// entries must be committed and recorded (the submitting run does that before it submits a
/// stage); the inputs must still hash to `expected_key`, or nothing runs. An entry that is
/// already there and intact is kept, unless `force`. Takes no cache lock: the submitting
/// `zfnet run` holds it.
#[allow(clippy::too_many_arguments)]
pub fn execute_submitted(
    dag: &Dag,
    cache: &Cache,
    stage_name: &str,
    expected_key: &str,
    force: bool,
    work: SubmittedWork,
    build: &str,
    progress: &MultiProgress,
) -> Result<SubmittedOutcome, String> {
    let stage = dag
        .stage(stage_name)
        .ok_or_else(|| format!("no stage `{stage_name}` in pipeline `{}`", dag.name))?;
    let mut index = OutputIndex::new();
    for upstream in stage.upstream() {
        let upstream_stage = dag
            .stage(upstream)
            .ok_or_else(|| format!("no upstream stage `{upstream}` (a bug)"))?;
        let state = cache.read_state(&dag.name, upstream).ok_or_else(|| {
            format!(
                "upstream `{upstream}` has no recorded run in {}",
                cache.root().display()
            )
        })?;
        let manifest = cache
            .verified_manifest(&state.key, &declared_outputs(upstream_stage))
            .map_err(|problem| {
                format!("upstream `{upstream}`'s cache entry is not usable: {problem:?}")
            })?;
        index_outputs(&mut index, upstream, cache, &manifest);
    }
    let inputs = input_records(stage, &index, cache).map_err(describe_unknown)?;
    let kind = &stage.kind;
    let key = cache_key(kind.name(), kind.version(), &stage.params, &inputs);
    if key != expected_key {
        return Err(format!(
            "the inputs of `{stage_name}` changed after it was submitted (cache key {} now, \
             {} when submitted); rerun `zfnet run`",
            &key[..12.min(key.len())],
            &expected_key[..12.min(expected_key.len())]
        ));
    }
    if !force
        && !matches!(work, SubmittedWork::Shard { .. })
        && let Ok(manifest) = cache.verified_manifest(&key, &declared_outputs(stage))
    {
        return Ok(SubmittedOutcome::Committed(Box::new(manifest)));
    }
    let extras = ContextExtras {
        upstream_runs: upstream_runs(dag, cache, stage),
        build: build.to_owned(),
        measure_peak_rss: true,
    };
    match work {
        SubmittedWork::Whole => execute(
            cache,
            stage,
            &index,
            &key,
            &inputs,
            progress,
            extras,
            &|context| kind.run(context),
        )
        .map(|manifest| SubmittedOutcome::Committed(Box::new(manifest))),
        SubmittedWork::Shard { shard, array_job } => {
            let dir = shard_dir(cache, &key, array_job, shard.index);
            if fs::symlink_metadata(&dir).is_ok() {
                // A requeued task: start its slice again.
                crate::cache::remove_owned(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let context =
                stage_context(cache, stage, &index, &key, &inputs, &dir, progress, extras)?;
            let started = Instant::now();
            let summary = kind.run_shard(&context, shard).map_err(|error| {
                format!("shard {} of {}: {error}", shard.index + 1, shard.count)
            })?;
            for spec in kind.outputs() {
                let path = context.output(spec.name);
                if !path.exists() {
                    return Err(format!(
                        "shard {} finished without writing its output `{}` (a bug in the stage)",
                        shard.index + 1,
                        spec.name
                    ));
                }
            }
            let _ = fs::remove_dir_all(&context.scratch_dir);
            let marker = dir.join(SHARD_COMPLETE);
            fs::write(&marker, summary.lines.join("\n"))
                .map_err(|e| format!("{}: {e}", marker.display()))?;
            crate::cache::fsync_tree(&dir).map_err(|e| e.to_string())?;
            Ok(SubmittedOutcome::ShardDone {
                key: key.clone(),
                seconds: started.elapsed().as_secs_f64(),
                summary: summary.lines,
            })
        }
        SubmittedWork::Merge { count, array_job } => {
            let mut parts = Vec::with_capacity(count);
            for shard_index in 0..count {
                let dir = shard_dir(cache, &key, array_job, shard_index);
                if !dir.join(SHARD_COMPLETE).exists() {
                    return Err(format!(
                        "shard {} of {count} (task {array_job}_{shard_index}) did not complete: \
                         {} has no `{SHARD_COMPLETE}` marker",
                        shard_index + 1,
                        dir.display()
                    ));
                }
                let outputs_dir = dir.join("outputs");
                parts.push(
                    kind.outputs()
                        .iter()
                        .map(|spec| (spec.name.to_owned(), outputs_dir.join(spec.file_name)))
                        .collect::<BTreeMap<String, PathBuf>>(),
                );
            }
            let result = execute(
                cache,
                stage,
                &index,
                &key,
                &inputs,
                progress,
                extras,
                &|context| kind.merge_shards(context, &parts),
            );
            if result.is_ok() {
                for shard_index in 0..count {
                    let _ =
                        crate::cache::remove_owned(&shard_dir(cache, &key, array_job, shard_index));
                }
            }
            result.map(|manifest| SubmittedOutcome::Committed(Box::new(manifest)))
        }
    }
}

/// Where shard `index` of array job `array_job` writes: a temporary folder of the cache
/// (`tmp/<key>.<job>.<index>`), deleted by the merge or by the next run.
fn shard_dir(cache: &Cache, key: &str, array_job: u64, index: usize) -> PathBuf {
    cache
        .root()
        .join("tmp")
        .join(format!("{key}.{array_job}.{index}"))
}
