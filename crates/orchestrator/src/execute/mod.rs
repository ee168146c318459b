//! Execution: brings stages up to date, running independent stages on `--jobs` workers.
//!
//! The scheduler runs on the calling thread and hands ready stages to scoped worker threads.
//! A stage whose kind asks for the GPU is only dispatched while no other GPU stage runs (the
//! GPU token). A failed stage skips its downstream; independent branches carry on.
//!
//! With [`Executor::Slurm`] a worker submits its stage as a Slurm job instead and waits for it
//! (`--jobs` caps the jobs in flight; the cluster shares out its GPUs, so there is no token).
//! The job runs [`execute_submitted`] in `zfnet exec-stage`, which commits the entry itself.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Condvar, Mutex};

use indicatif::MultiProgress;

use crate::cache::{Cache, LockMode, Manifest};
use crate::plan::OutputIndex;
use crate::{Dag, Error, ResolvedStage, Result};

mod commit;
mod stage;
mod submitted;

use stage::run_one;
pub use submitted::{SubmittedOutcome, SubmittedWork, execute_submitted};

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
