//! Slurm as the executor: each stage run that `zfnet run` decides is needed becomes one
//! `sbatch` job running the hidden `zfnet exec-stage`, on a node that shares the project folder
//! and the cache (the shared-file-system assumption; README's "On a cluster").
//!
//! The orchestrator keeps every decision (what is stale, in which order, twins, `--jobs` as the
//! cap on jobs in flight); Slurm only runs processes. A job commits its cache entry itself, by
//! a rename inside the cache folder, and the orchestrator — the one process that holds the
//! cache's lock, on the submitting host — then reads the committed manifest. No lock is taken
//! on a compute node; the submitting host's lock holds against other hosts through
//! `lock.owner` (created with O_EXCL, with a heartbeat: see `Cache::lock_with`).
//!
//! Job states come from `scontrol show job` (finished jobs stay there for `MinJobAge`, 300 s by
//! default) and, once a job has left it, from `sacct` where accounting is on. A job that Slurm
//! ended (time limit, out of memory, node failure, cancelled, preempted) is reported as such
//! and leaves no cache entry; a job that failed reports the tail of its stderr.

mod config;
mod jobs;
mod state;
mod submit;
mod wait;

pub use config::{
    DEFAULT_CPUS, DEFAULT_MEMORY_MB, ExecutorConfig, ExecutorKind, JobRequest, MAX_SHARDS,
    MEMORY_HEADROOM_MB, SlurmConfig, SlurmResources, resolve_config, time_limit_minutes,
};
pub use jobs::{InFlight, cancel_jobs_on_interrupt, cancel_leftover_jobs, in_flight, jobs_dir};
pub use state::{JobState, SlurmJob, job_state};
pub use submit::{ExecCommand, run_job};
