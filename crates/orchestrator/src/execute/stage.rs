//! Bringing one stage up to date: reusing its verified cache entry, or running it here or as
//! a Slurm job, then recording its state.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::MultiProgress;

use super::commit::{ContextExtras, describe_unknown, execute, record_state, upstream_runs};
use super::{Executor, KeyGate, Outcome, RunEvent};
use crate::cache::{Cache, EntryProblem, Manifest};
use crate::plan::{
    OutputIndex, cache_key, declared_outputs, index_outputs, input_records, staleness_reasons,
};
use crate::{Dag, ResolvedStage};

/// Brings one stage up to date: reuses a verified cache entry or executes the stage.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_one(
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
                "Slurm job {} completed, but cache entry {key} is not usable ({problem:?}); \
                 does the node see the same cache folder ({})?",
                job.id,
                cache.root().display()
            )
        })
}
