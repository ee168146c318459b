//! Execution: brings stages up to date, running independent stages on `--jobs` workers.
//!
//! The scheduler runs on the calling thread and hands ready stages to scoped worker threads.
//! A stage whose kind asks for the GPU is only dispatched while no other GPU stage runs (the
//! GPU token). A failed stage skips its downstream; independent branches carry on.
//!
//! With [`Executor::Slurm`] a worker submits its stage as a Slurm job instead and waits for it
//! (`--jobs` caps the jobs in flight; the cluster shares out its GPUs, so there is no token).
//! The job runs [`execute_submitted`] in `zfnet exec-stage`, which commits the entry itself.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use artifacts::{HashMemo, Provenance};
use indicatif::MultiProgress;
use stage_api::{StageContext, UpstreamRun};

use crate::cache::{
    Cache, EntryProblem, LockMode, MANIFEST_FORMAT, Manifest, OutputRecord, StateRecord,
};
use crate::plan::{
    InputsUnknown, OutputIndex, cache_key, declared_outputs, index_outputs, input_paths,
    input_records, staleness_reasons,
};
use crate::{Dag, Error, ResolvedStage, Result, TOOL_VERSION};

/// What `zfnet run` was asked to do.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Stages to bring up to date (with everything upstream); empty means all.
    pub targets: Vec<String>,
    /// Re-execute the named stages (all, when no target is named) even if cached.
    pub force: bool,
    /// Stages run at the same time, at most.
    pub jobs: usize,
    /// The program, as stages see it (`StageContext::build`), e.g. `zfnet 0.1.0 (commit ..)`.
    pub build: String,
    /// Where stage runs happen.
    pub executor: Executor,
}

/// Where the stage runs of `zfnet run` happen.
#[derive(Clone, Debug, Default)]
pub enum Executor {
    /// Worker threads of this process.
    #[default]
    Local,
    /// One Slurm job each, running this command's `exec-stage`.
    Slurm(crate::slurm::ExecCommand),
}

/// Progress of a run, reported to the caller as it happens.
#[derive(Clone, Debug)]
pub enum RunEvent {
    Reused {
        stage: String,
        key: String,
    },
    Started {
        stage: String,
        reason: String,
    },
    /// A stage run was submitted to Slurm (`Started` came first).
    Submitted {
        stage: String,
        job_id: String,
        resources: String,
    },
    Finished {
        stage: String,
        seconds: f64,
        /// The process's peak resident memory while the stage ran, when it ran alone
        /// (`--jobs 1`, Linux); an upper bound of the stage's own.
        peak_rss_bytes: Option<u64>,
        /// The process's resident memory when the stage started (held from earlier work):
        /// the stage's own peak is at least `peak - start`.
        start_rss_bytes: Option<u64>,
        summary: Vec<String>,
        /// The Slurm job that ran it, with its node.
        slurm_job: Option<crate::slurm::SlurmJob>,
    },
    Failed {
        stage: String,
        error: String,
    },
    Skipped {
        stage: String,
        because: String,
    },
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    pub executed: Vec<String>,
    pub reused: Vec<String>,
    pub failed: Vec<(String, String)>,
    pub skipped: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Pending,
    Running,
    Done,
    Failed,
}

enum Outcome {
    Reused(Manifest),
    Executed(Manifest),
}

/// Brings the requested stages up to date.
pub fn run(
    dag: &Dag,
    cache: &Cache,
    options: &RunOptions,
    progress: &MultiProgress,
    observer: &(dyn Fn(&RunEvent) + Sync),
) -> Result<RunReport> {
    let all: Vec<String> = dag.stages.iter().map(|s| s.name.clone()).collect();
    let targets = if options.targets.is_empty() {
        &all
    } else {
        &options.targets
    };
    let stages = dag.closure(targets).map_err(Error::Usage)?;
    let forced = |stage: &ResolvedStage| {
        options.force
            && (options.targets.is_empty()
                || options
                    .targets
                    .iter()
                    .any(|t| *t == stage.name || *t == stage.base_name))
    };

    let _lock = cache.lock(LockMode::Exclusive, "run")?;
    // Slurm jobs of an earlier run that died without cancelling them (we hold the lock: that
    // run is over), whatever this run's executor: one still queued or running would write in
    // the temporary folder and commit beside this run. Cancelled and waited for before the
    // temporary folder is cleaned.
    if crate::slurm::cancel_leftover_jobs(cache.root()) {
        let leftover = cache.clean_temp()?;
        if leftover > 0 {
            tracing::info!(
                bytes = leftover,
                "removed temporary files of interrupted runs"
            );
        }
    }
    let index = Mutex::new(OutputIndex::new());
    let keys = KeyGate::default();
    let mut slots = vec![Slot::Pending; stages.len()];
    let mut report = RunReport::default();
    let position: BTreeMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let jobs = options.jobs.max(1);
    let mut gpu_busy = false;
    // On a cluster, Slurm shares out the GPUs.
    let gpu_token = matches!(options.executor, Executor::Local);

    std::thread::scope(|scope| {
        let (sender, receiver) = mpsc::channel::<(usize, Result<Outcome, String>)>();
        let mut running = 0usize;
        loop {
            // Dispatch every ready stage that fits.
            let mut dispatched_any = true;
            while dispatched_any && running < jobs {
                dispatched_any = false;
                for i in 0..stages.len() {
                    if slots[i] != Slot::Pending {
                        continue;
                    }
                    let stage = stages[i];
                    let upstream: Vec<usize> =
                        stage.upstream().iter().map(|name| position[name]).collect();
                    if let Some(&bad) = upstream.iter().find(|&&u| slots[u] == Slot::Failed) {
                        slots[i] = Slot::Failed;
                        let because = format!("upstream `{}` failed", stages[bad].name);
                        observer(&RunEvent::Skipped {
                            stage: stage.name.clone(),
                            because,
                        });
                        report.skipped.push(stage.name.clone());
                        dispatched_any = true;
                        continue;
                    }
                    if !upstream.iter().all(|&u| slots[u] == Slot::Done) {
                        continue;
                    }
                    let needs_token = gpu_token && stage.resources.gpu;
                    if needs_token && gpu_busy {
                        continue;
                    }
                    if needs_token {
                        gpu_busy = true;
                    }
                    slots[i] = Slot::Running;
                    running += 1;
                    dispatched_any = true;
                    let sender = sender.clone();
                    let index = &index;
                    let keys = &keys;
                    let force = forced(stage);
                    scope.spawn(move || {
                        let outcome = catch_unwind(AssertUnwindSafe(|| {
                            run_one(
                                dag,
                                cache,
                                stage,
                                index,
                                keys,
                                force,
                                &options.build,
                                jobs == 1,
                                &options.executor,
                                progress,
                                observer,
                            )
                        }))
                        .unwrap_or_else(|panic| Err(describe_panic(panic.as_ref())));
                        let _ = sender.send((i, outcome));
                    });
                    if running >= jobs {
                        break;
                    }
                }
            }
            if running == 0 {
                break;
            }
            let (i, outcome) = receiver.recv().expect("a worker is running");
            running -= 1;
            let stage = stages[i];
            if gpu_token && stage.resources.gpu {
                gpu_busy = false;
            }
            match outcome {
                Ok(Outcome::Reused(manifest)) => {
                    slots[i] = Slot::Done;
                    observer(&RunEvent::Reused {
                        stage: stage.name.clone(),
                        key: manifest.key.clone(),
                    });
                    report.reused.push(stage.name.clone());
                }
                Ok(Outcome::Executed(manifest)) => {
                    slots[i] = Slot::Done;
                    observer(&RunEvent::Finished {
                        stage: stage.name.clone(),
                        seconds: manifest.duration_s,
                        peak_rss_bytes: manifest.peak_rss_bytes,
                        start_rss_bytes: manifest.start_rss_bytes,
                        summary: manifest.summary.clone(),
                        slurm_job: manifest.slurm_job.clone(),
                    });
                    report.executed.push(stage.name.clone());
                }
                Err(error) => {
                    slots[i] = Slot::Failed;
                    observer(&RunEvent::Failed {
                        stage: stage.name.clone(),
                        error: error.clone(),
                    });
                    report.failed.push((stage.name.clone(), error));
                }
            }
        }
    });
    cache.save_memo()?;
    Ok(report)
}

/// Names a stage's panic for what it is: a GPU failure ([`stage_api::GpuFailure`], raised by
/// the CUDA backend when the driver, cuDNN or cuBLAS refuses a call), the GPU out of memory,
/// or a bug in zfnet. (A host allocation failure cannot unwind: the binary's allocator says
/// "out of memory" and the process ends.)
fn describe_panic(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(failure) = panic.downcast_ref::<stage_api::GpuFailure>() {
        return failure.to_string();
    }
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".to_owned());
    format!(
        "stage panicked (a bug in zfnet; please report it with this message and the \
         pipeline): {message}"
    )
}

/// Cache keys that this run is executing or has executed. Two stage instances with the same
/// kind, params and inputs ("twins") share a key: the first executes it, the other waits and
/// then reuses the entry, even under `--force` (the entry was just made).
#[derive(Default)]
struct KeyGate {
    keys: Mutex<BTreeMap<String, KeyProgress>>,
    changed: Condvar,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyProgress {
    Running,
    Committed,
}

/// The right to execute one key, held while it runs.
struct KeyClaim<'a> {
    gate: &'a KeyGate,
    key: String,
    committed: bool,
}

impl KeyGate {
    /// Waits while a twin executes `key`; `None` once a twin has committed it.
    fn claim(&self, key: &str) -> Option<KeyClaim<'_>> {
        let mut keys = self.keys.lock().expect("key gate lock");
        loop {
            match keys.get(key) {
                Some(KeyProgress::Running) => {
                    keys = self.changed.wait(keys).expect("key gate lock");
                }
                Some(KeyProgress::Committed) => return None,
                None => {
                    keys.insert(key.to_owned(), KeyProgress::Running);
                    return Some(KeyClaim {
                        gate: self,
                        key: key.to_owned(),
                        committed: false,
                    });
                }
            }
        }
    }
}

impl Drop for KeyClaim<'_> {
    fn drop(&mut self) {
        let mut keys = self.gate.keys.lock().unwrap_or_else(|e| e.into_inner());
        if self.committed {
            keys.insert(self.key.clone(), KeyProgress::Committed);
        } else {
            // Failed: a twin may try for itself (and will most likely say why it fails).
            keys.remove(&self.key);
        }
        self.gate.changed.notify_all();
    }
}

/// Brings one stage up to date: reuses a verified cache entry or executes the stage.
#[allow(clippy::too_many_arguments)]
fn run_one(
    dag: &Dag,
    cache: &Cache,
    stage: &ResolvedStage,
    index: &Mutex<OutputIndex>,
    keys: &KeyGate,
    force: bool,
    build: &str,
    alone: bool,
    executor: &Executor,
    progress: &MultiProgress,
    observer: &(dyn Fn(&RunEvent) + Sync),
) -> Result<Outcome, String> {
    let snapshot = index.lock().expect("index lock").clone();
    let inputs = input_records(stage, &snapshot, cache).map_err(describe_unknown)?;
    let kind = &stage.kind;
    let key = cache_key(kind.name(), kind.version(), &stage.params, &inputs);
    let previous = cache.read_state(&dag.name, &stage.name);
    // One execution per key and run; a twin that committed it leaves an entry to reuse.
    let mut claim = keys.claim(&key);
    let force = force && claim.is_some();

    let mut reason = match &previous {
        None => "never run".to_owned(),
        Some(previous) => {
            let changes = staleness_reasons(
                previous,
                kind.name(),
                kind.version(),
                &stage.params,
                &inputs,
            );
            if changes.is_empty() {
                "its cache entry was removed".to_owned()
            } else {
                changes.join("; ")
            }
        }
    };
    if force {
        reason = "forced with --force".to_owned();
    } else {
        match cache.verified_manifest(&key, &declared_outputs(stage)) {
            Ok(manifest) => {
                index_outputs(
                    &mut index.lock().expect("index lock"),
                    &stage.name,
                    cache,
                    &manifest,
                );
                record_state(dag, cache, stage, &key, &inputs)?;
                return Ok(Outcome::Reused(manifest));
            }
            Err(EntryProblem::Absent) => {}
            Err(EntryProblem::Corrupted { output, path }) => {
                tracing::warn!(
                    "stage `{}`: cached output `{output}` ({}) does not match its recorded \
                     content hash; discarding the entry and rerunning the stage",
                    stage.name,
                    path.display()
                );
                cache.remove_entry(&key).map_err(|e| e.to_string())?;
                reason = format!("cached output `{output}` was corrupted");
            }
            Err(EntryProblem::BadManifest(message)) => {
                tracing::warn!(
                    "stage `{}`: cache manifest unreadable ({message}); rerunning",
                    stage.name
                );
                cache.remove_entry(&key).map_err(|e| e.to_string())?;
                reason = "its cache manifest was unreadable".to_owned();
            }
            Err(EntryProblem::MissingOutput { output }) => {
                tracing::warn!(
                    "stage `{}`: cache entry {key} does not record the output `{output}`; \
                     discarding it and rerunning",
                    stage.name
                );
                cache.remove_entry(&key).map_err(|e| e.to_string())?;
                reason = format!("its cache entry lacked the output `{output}`");
            }
        }
    }
    let Some(claim) = claim.as_mut() else {
        return Err(format!(
            "a stage with the same kind, params and inputs made cache entry {key} in this \
             run, but it is not usable now"
        ));
    };

    observer(&RunEvent::Started {
        stage: stage.name.clone(),
        reason,
    });
    let result = match executor {
        Executor::Local => {
            let context_extras = ContextExtras {
                upstream_runs: upstream_runs(dag, cache, stage),
                build: build.to_owned(),
                measure_peak_rss: alone,
            };
            execute(
                cache,
                stage,
                &snapshot,
                &key,
                &inputs,
                progress,
                context_extras,
                &|context| stage.kind.run(context),
            )
        }
        Executor::Slurm(command) => {
            run_as_slurm_job(dag, cache, stage, &key, force, command, observer)
        }
    };
    match result {
        Ok(manifest) => {
            claim.committed = true;
            index_outputs(
                &mut index.lock().expect("index lock"),
                &stage.name,
                cache,
                &manifest,
            );
            record_state(dag, cache, stage, &key, &inputs)?;
            Ok(Outcome::Executed(manifest))
        }
        Err(error) => Err(error),
    }
}

/// One stage run as a Slurm job: submitted, waited for, and its committed entry read back.
fn run_as_slurm_job(
    dag: &Dag,
    cache: &Cache,
    stage: &ResolvedStage,
    key: &str,
    force: bool,
    command: &crate::slurm::ExecCommand,
    observer: &(dyn Fn(&RunEvent) + Sync),
) -> Result<Manifest, String> {
    if cache.lock_lost() {
        return Err(crate::Error::LockLost {
            path: cache.root().join("lock.owner"),
        }
        .to_string());
    }
    // The job hashes the same inputs: hand it what this process knows (the memo is only
    // written here, under the run's lock; the job only reads it).
    {
        static SAVING: Mutex<()> = Mutex::new(());
        let _one_at_a_time = SAVING.lock().unwrap_or_else(|e| e.into_inner());
        cache.save_memo().map_err(|e| e.to_string())?;
    }
    let request = crate::slurm::JobRequest::for_stage(stage, &dag.executor.slurm);
    let on_submitted = |job_id: &str| {
        observer(&RunEvent::Submitted {
            stage: stage.name.clone(),
            job_id: job_id.to_owned(),
            resources: request.describe(),
        })
    };
    let job = crate::slurm::run_job(
        command,
        cache.root(),
        &dag.name,
        stage,
        key,
        force,
        &request,
        dag.executor.slurm.poll,
        &on_submitted,
    )?;
    // The entry was committed on another node: on NFS this host may still have cached that
    // `runs/<key>` did not exist (a negative lookup, kept up to `acdirmax`, 60 s by default).
    // Listing the folder revalidates it; retried for up to a minute.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let _ = std::fs::read_dir(cache.root().join("runs")).map(|entries| entries.count());
        if cache.entry_dir(key).join("manifest.json").exists() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    cache
        .verified_manifest(key, &declared_outputs(stage))
        .map_err(|problem| {
            format!(
                "Slurm job {} completed, but cache entry {key} is not usable ({problem:?});                  does the node see the same cache folder ({})?",
                job.id,
                cache.root().display()
            )
        })
}

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

/// Why a stage's inputs cannot be known, for its failure line.
fn describe_unknown(unknown: InputsUnknown) -> String {
    match unknown {
        InputsUnknown::Upstream(name) => format!("upstream `{name}` has no outputs (a bug)"),
        InputsUnknown::Unreadable { input, message } => {
            format!("input `{input}` is unreadable: {message}")
        }
    }
}

/// What a stage's context carries besides its own inputs and outputs.
struct ContextExtras {
    upstream_runs: Vec<UpstreamRun>,
    build: String,
    /// The stage runs alone in the process: its peak RSS can be measured.
    measure_peak_rss: bool,
}

/// The recorded runs of every stage upstream of `stage` (transitively), in pipeline order.
/// Each has a state record by now: its run (or reuse) finished before this one started.
fn upstream_runs(dag: &Dag, cache: &Cache, stage: &ResolvedStage) -> Vec<UpstreamRun> {
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
fn stage_context(
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
fn execute(
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

fn record_state(
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

#[cfg(test)]
mod tests {
    use super::describe_panic;
    use stage_api::GpuFailure;

    /// A GPU failure is named as one (with the remedy for running out of GPU memory), and only
    /// a panic of any other kind is called a bug (before, every CUDA failure read "stage
    /// panicked (a bug in zfnet)").
    #[test]
    fn a_gpu_failure_is_named_for_what_it_is_and_a_bug_as_a_bug() {
        let out_of_memory = GpuFailure {
            message: "cuMemAlloc failed: DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")"
                .to_owned(),
        };
        let text = describe_panic(&out_of_memory);
        assert!(
            text.starts_with("out of GPU memory: cuMemAlloc failed"),
            "{text}"
        );
        assert!(!text.contains("bug"), "{text}");

        let refused = GpuFailure {
            message: "cudnnConvolutionForward failed: CUDNN_STATUS_EXECUTION_FAILED".to_owned(),
        };
        let text = describe_panic(&refused);
        assert!(
            text.starts_with("GPU error: cudnnConvolutionForward failed"),
            "{text}"
        );
        assert!(!text.contains("bug"), "{text}");

        let bug = String::from("index out of bounds: the len is 3 but the index is 7");
        let text = describe_panic(&bug);
        assert!(text.contains("a bug in zfnet"), "{text}");
        assert!(text.contains("index out of bounds"), "{text}");
    }

    /// A GPU failure raised on a worker thread unwinds to the catch with its payload intact.
    #[test]
    fn a_raised_gpu_failure_reaches_the_scheduler_as_a_gpu_failure() {
        let caught = std::panic::catch_unwind(|| {
            GpuFailure::raise("cublasGemmEx failed: CUBLAS_STATUS_NOT_SUPPORTED".to_owned())
        })
        .unwrap_err();
        assert!(describe_panic(caught.as_ref()).starts_with("GPU error: cublasGemmEx"));
    }
}
