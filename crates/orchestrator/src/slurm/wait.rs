//! Waiting for a submitted job: polling its state (patient with a controller that does not
//! answer, giving up on a job that can never start) and reading its logs when it failed.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{JobRequest, JobState, job_state};

/// How long a controller that does not answer is waited for before the run gives up on a job.
pub(super) const CONTROLLER_PATIENCE: Duration = Duration::from_secs(600);

/// How waiting for a job ended.
pub(super) enum Waited {
    /// In a final state (or, `Unknown`, forgotten by the controller: it no longer runs).
    Finished(JobState),
    /// Still pending or held, for a reason waiting cannot clear.
    NeverRuns(String),
    /// The controller did not answer for [`CONTROLLER_PATIENCE`]; the job may still run.
    Unreachable(String),
}

/// Polls until the job has finished. A job the controller says it no longer knows five times
/// in a row has ended; a controller that cannot be asked is waited for up to
/// [`CONTROLLER_PATIENCE`]; a job that can never start is given up at once.
pub(super) fn wait_for(id: &str, poll: Duration) -> Waited {
    let mut unknown = 0;
    let mut told_held = false;
    let mut unreachable_since: Option<std::time::Instant> = None;
    loop {
        match job_state(id) {
            Ok(active @ JobState::Active { .. }) => {
                unknown = 0;
                unreachable_since = None;
                if let Some(why) = active.never_runs() {
                    return Waited::NeverRuns(why);
                }
                // A hold a user or an administrator placed (and may lift): said once, waited.
                if let JobState::Active { reason, .. } = &active
                    && reason.starts_with("JobHeld")
                    && !told_held
                {
                    eprintln!(
                        "Slurm job {id} is held ({reason}); it waits until released \
                         (scontrol release {id}), or Ctrl-C cancels the run"
                    );
                    told_held = true;
                }
            }
            Ok(JobState::Unknown) if unknown < 5 => {
                unknown += 1;
                unreachable_since = None;
            }
            Ok(finished) => return Waited::Finished(finished),
            Err(error) => {
                let since = *unreachable_since.get_or_insert_with(|| {
                    tracing::warn!("cannot read the state of Slurm job {id}: {error}; retrying");
                    std::time::Instant::now()
                });
                if since.elapsed() >= CONTROLLER_PATIENCE {
                    return Waited::Unreachable(error);
                }
            }
        }
        std::thread::sleep(poll);
    }
}

/// Whether a failed job's stderr (any task's, for an array) says Slurm killed it for its
/// memory.
pub(super) fn killed_for_memory(logs: &Path, key: &str, id: &str) -> bool {
    stderr_files(logs, key, id).into_iter().any(|path| {
        fs::read_to_string(path).is_ok_and(|text| {
            text.contains("Exceeded job memory limit") || text.contains("exceeded memory limit")
        })
    })
}

/// A job's stderr files: `<key>.<id>.err`, then an array's `<key>.<id>_<task>.err` in order.
fn stderr_files(logs: &Path, key: &str, id: &str) -> Vec<PathBuf> {
    let single = format!("{key}.{id}.err");
    let task_prefix = format!("{key}.{id}_");
    let mut files = vec![logs.join(&single)];
    files.extend(crate::cache::files_named(logs, |name| {
        name.starts_with(&task_prefix) && name.ends_with(".err")
    }));
    files
}

pub(super) fn describe_end(state: &str, request: &JobRequest) -> String {
    match state {
        "TIMEOUT" => format!(
            "TIMEOUT, over its time limit{} (raise `time` in executor.slurm)",
            request
                .time
                .as_deref()
                .map(|t| format!(" of {t}"))
                .unwrap_or_default()
        ),
        "OUT_OF_MEMORY" => format!(
            "OUT_OF_MEMORY, over its {} MB (raise `memory_mb` in executor.slurm)",
            request.memory_mb
        ),
        "NODE_FAIL" => "NODE_FAIL, its node failed (rerun to resubmit)".to_owned(),
        "CANCELLED" => "CANCELLED (by a user or an administrator)".to_owned(),
        "PREEMPTED" => "PREEMPTED by a job of higher priority (rerun to resubmit)".to_owned(),
        other => other.to_owned(),
    }
}

/// The last lines of a job's stderr (for an array, of the first task that wrote any), for a
/// failure message.
pub(super) fn stderr_tail(logs: &Path, key: &str, id: &str) -> String {
    let candidates = stderr_files(logs, key, id);
    for path in &candidates {
        let Ok(text) = fs::read_to_string(path) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.is_empty() {
            continue;
        }
        let tail = &lines[lines.len().saturating_sub(12)..];
        return format!(
            "; the end of its stderr ({}):\n    {}",
            path.display(),
            tail.join("\n    ")
        );
    }
    format!(
        "; its stderr ({}) is empty or missing",
        candidates[0].display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_slurm_ends_are_told_apart_and_named_with_the_field_to_change() {
        let request = JobRequest {
            cpus: 1,
            memory_mb: 4096,
            time: Some("10".to_owned()),
            partition: None,
            account: None,
            gpus: 0,
            sbatch_args: Vec::new(),
            shards: 1,
        };
        for (line, state, advice) in [
            (
                "JobId=3 JobState=OUT_OF_MEMORY Reason=OutOfMemory ExitCode=0:125",
                "OUT_OF_MEMORY",
                "over its 4096 MB (raise `memory_mb`",
            ),
            (
                "JobId=4 JobState=NODE_FAIL Reason=NodeDown ExitCode=0:0",
                "NODE_FAIL",
                "its node failed (rerun to resubmit)",
            ),
            (
                "JobId=5 JobState=TIMEOUT Reason=TimeLimit ExitCode=0:15",
                "TIMEOUT",
                "over its time limit of 10 (raise `time`",
            ),
            (
                "JobId=6 JobState=PREEMPTED Reason=None ExitCode=0:15",
                "PREEMPTED",
                "rerun to resubmit",
            ),
        ] {
            let JobState::Ended { state: read, .. } = JobState::from_scontrol(line) else {
                panic!("{line}: not read as ended by Slurm");
            };
            assert_eq!(read, state);
            let message = describe_end(&read, &request);
            assert!(message.contains(advice), "{state}: {message}");
        }
    }
}
