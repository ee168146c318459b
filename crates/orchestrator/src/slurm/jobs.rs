//! Jobs this process submitted: cancelled on Ctrl-C, listed for `zfnet status` (their
//! records under `<cache>/jobs/in-flight/`), and those an earlier, killed run left behind.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{JobState, job_state};

pub(super) static SUBMITTED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
pub(super) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// A job in flight, as `<cache>/jobs/in-flight/<id>.json` records it for `zfnet status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub job_id: String,
    pub pipeline: String,
    pub stage: String,
    pub key: String,
    /// The process id and host of the `zfnet run` that submitted it.
    pub submitter: String,
}

/// The folder of job records and logs inside the cache.
pub fn jobs_dir(cache_root: &Path) -> PathBuf {
    cache_root.join("jobs")
}

pub(super) fn in_flight_dir(cache_root: &Path) -> PathBuf {
    jobs_dir(cache_root).join("in-flight")
}

/// Every job record of runs in progress (or killed before they could tidy up).
pub fn in_flight(cache_root: &Path) -> Vec<InFlight> {
    let Ok(entries) = fs::read_dir(in_flight_dir(cache_root)) else {
        return Vec::new();
    };
    let mut jobs: Vec<InFlight> = entries
        .filter_map(|entry| fs::read(entry.ok()?.path()).ok())
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .collect();
    jobs.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    jobs
}

/// Cancels the still active jobs of earlier runs (whose in-flight records remain because the
/// run was killed), waits for Slurm to end them, and removes their records. A record is
/// removed only once its job is known to have ended; the others stay for the next run, and
/// the answer is `false`: a job may still be writing in the cache's temporary folder, which
/// must then be left alone. Call under the cache's exclusive lock, before anything in the
/// cache such a job may write is touched.
pub fn cancel_leftover_jobs(cache_root: &Path) -> bool {
    let mut all_ended = true;
    for job in in_flight(cache_root) {
        let ended = match job_state(&job.job_id) {
            Ok(JobState::Active { state, .. }) => {
                eprintln!(
                    "cancelling Slurm job {} ({state}, stage `{}`), left by an earlier run \
                     ({}) that ended without it",
                    job.job_id, job.stage, job.submitter
                );
                match scancel(&job.job_id) {
                    Ok(()) => {
                        // Its processes may still be writing: wait until Slurm has ended it.
                        let deadline = std::time::Instant::now() + Duration::from_secs(120);
                        loop {
                            match job_state(&job.job_id) {
                                Ok(JobState::Active { .. }) | Err(_)
                                    if std::time::Instant::now() < deadline =>
                                {
                                    std::thread::sleep(Duration::from_millis(500));
                                }
                                Ok(JobState::Active { .. }) | Err(_) => break false,
                                Ok(_) => break true,
                            }
                        }
                    }
                    Err(error) => {
                        eprintln!("warning: {error}");
                        false
                    }
                }
            }
            Ok(_) => true,
            Err(error) => {
                eprintln!(
                    "warning: cannot read the state of Slurm job {}: {error}",
                    job.job_id
                );
                false
            }
        };
        if ended {
            let _ = fs::remove_file(in_flight_dir(cache_root).join(format!("{}.json", job.job_id)));
        } else {
            all_ended = false;
            eprintln!(
                "warning: Slurm job {} (stage `{}`, left by {}) may still run; its record \
                 stays in {} for the next run, and the cache's temporary folder is left as it \
                 is",
                job.job_id,
                job.stage,
                job.submitter,
                in_flight_dir(cache_root).display()
            );
        }
    }
    all_ended
}

/// `scancel` of one job; says whether it ran and succeeded.
pub(super) fn scancel(id: &str) -> Result<(), String> {
    match Command::new("scancel")
        .arg(id)
        .stdin(Stdio::null())
        .process_group(0)
        .status()
    {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("`scancel {id}` exited with {status}")),
        Err(error) => Err(format!("cannot run scancel: {error}")),
    }
}

/// Installs the SIGINT and SIGTERM handler of a Slurm run: the first signal cancels every job
/// this process submitted (`scancel`), removes their in-flight records and exits with 130.
pub fn cancel_jobs_on_interrupt(cache_root: PathBuf) {
    extern "C" fn on_signal(signal: libc::c_int) {
        INTERRUPTED.store(true, Ordering::SeqCst);
        // A second Ctrl-C ends the process at once (while the first waits for a hung sbatch,
        // say). signal() is async-signal-safe.
        // SAFETY: restoring the default action of the signal being handled.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
    // SAFETY: the handler stores to an atomic and calls signal(), both async-signal-safe.
    let handler: extern "C" fn(libc::c_int) = on_signal;
    unsafe {
        libc::signal(libc::SIGINT, handler as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as *const () as libc::sighandler_t);
    }
    std::thread::spawn(move || {
        while !INTERRUPTED.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Waits for a submission in progress to record its id.
        let ids: Vec<String> = SUBMITTED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        if ids.is_empty() {
            eprintln!("interrupted: no Slurm job of this run was in flight");
        } else {
            let cancelled = Command::new("scancel")
                .args(&ids)
                .stdin(Stdio::null())
                .process_group(0)
                .status();
            match cancelled {
                Ok(status) if status.success() => {
                    eprintln!("interrupted: cancelled Slurm job(s) {}", ids.join(", "))
                }
                Ok(status) => eprintln!(
                    "interrupted: `scancel {}` exited with {status}; check with squeue",
                    ids.join(" ")
                ),
                Err(error) => eprintln!(
                    "interrupted: cannot run scancel ({error}); cancel job(s) {} by hand",
                    ids.join(", ")
                ),
            }
            for id in &ids {
                let _ = fs::remove_file(in_flight_dir(&cache_root).join(format!("{id}.json")));
            }
        }
        // The lock's owner file, so that another host does not wait for a dead heartbeat.
        crate::cache::release_owner_files();
        std::process::exit(130);
    });
}
