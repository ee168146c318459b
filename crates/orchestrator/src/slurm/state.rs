//! Where Slurm is in a job's life: `scontrol` and `sacct` read into a [`JobState`], and the
//! [`SlurmJob`] a manifest records.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

/// The Slurm job that made a cache entry, as its manifest records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlurmJob {
    pub id: String,
    pub node: String,
}

impl SlurmJob {
    /// The job this process runs in, from the variables Slurm sets (`SLURM_JOB_ID`,
    /// `SLURMD_NODENAME`); `None` outside Slurm.
    pub fn from_env() -> Option<SlurmJob> {
        let id = std::env::var("SLURM_JOB_ID").ok()?;
        let node = std::env::var("SLURMD_NODENAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_default();
        Some(SlurmJob { id, node })
    }
}

/// Where Slurm is in a job's life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Waiting, starting or running: not finished yet (`PENDING`, `RUNNING`, ...).
    Active {
        state: String,
        node: Option<String>,
        /// Why it waits (`Reason=`), `None` when it does not.
        reason: String,
    },
    /// Finished by itself; `exit_code` is the program's.
    Completed,
    Failed {
        exit_code: String,
    },
    /// Ended by Slurm or an operator: `TIMEOUT`, `OUT_OF_MEMORY`, `NODE_FAIL`, `CANCELLED`,
    /// `PREEMPTED`, `BOOT_FAIL`, `DEADLINE`.
    Ended {
        state: String,
        reason: String,
    },
    /// Neither `scontrol` nor `sacct` knows the job any more.
    Unknown,
}

impl JobState {
    /// Reads one `scontrol show job -o` line (`Key=Value` pairs).
    pub fn from_scontrol(line: &str) -> JobState {
        let fields: BTreeMap<&str, &str> = line
            .split_whitespace()
            .filter_map(|pair| pair.split_once('='))
            .collect();
        let state = fields.get("JobState").copied().unwrap_or("UNKNOWN");
        let exit_code = fields.get("ExitCode").copied().unwrap_or("?").to_owned();
        let reason = fields.get("Reason").copied().unwrap_or("None").to_owned();
        let node = fields
            .get("NodeList")
            .filter(|n| **n != "(null)")
            .map(|n| (*n).to_owned());
        Self::classify(state, exit_code, reason, node)
    }

    /// Why an active job will never start or finish by itself, if so: a held or
    /// special-exit state, or a pending reason that waiting cannot clear (a limit of the
    /// partition, an account or QOS the controller refuses, a dependency that can no longer be
    /// met). Such a job would otherwise be polled for ever.
    pub fn never_runs(&self) -> Option<String> {
        let JobState::Active { state, reason, .. } = self else {
            return None;
        };
        match state.as_str() {
            "REQUEUE_HOLD" | "SPECIAL_EXIT" => {
                return Some(format!(
                    "Slurm will not run it: it is held in state {state} (reason: {reason})"
                ));
            }
            "PENDING" => {}
            _ => return None,
        }
        let what = match reason.as_str() {
            "PartitionTimeLimit" => "its time limit is above the partition's (lower `time`)",
            "PartitionNodeLimit" => "it asks for more nodes than the partition allows",
            "PartitionConfig" => {
                "the partition's limits do not allow what it asks for (time, cpus, memory_mb \
                 or gpus)"
            }
            "DependencyNeverSatisfied" => "a job it depends on failed",
            "InvalidAccount" => "the controller refuses its account (check `account`)",
            "InvalidQOS" => "the controller refuses its QOS",
            "BadConstraints" => "no node has what it asks for (cpus, memory_mb, gpus)",
            "AssocMaxWallDurationPerJobLimit" | "QOSMaxWallDurationPerJobLimit" => {
                "its time limit is above what its account or QOS allows (lower `time`)"
            }
            // Resources, Priority, limits on jobs at once, ...: waiting clears them.
            _ => return None,
        };
        Some(format!(
            "Slurm will never start it: {what} (reason: {reason})"
        ))
    }

    /// The state of a job made of several (an array's tasks): active while any is, else the
    /// first that did not complete, else completed.
    pub fn of_all(states: Vec<JobState>) -> JobState {
        if let Some(active) = states.iter().find(|s| matches!(s, JobState::Active { .. })) {
            return active.clone();
        }
        states
            .into_iter()
            .find(|s| *s != JobState::Completed)
            .unwrap_or(JobState::Completed)
    }

    fn classify(state: &str, exit_code: String, reason: String, node: Option<String>) -> Self {
        // sacct writes `CANCELLED by 0`.
        let state = state.split_whitespace().next().unwrap_or(state);
        match state {
            "COMPLETED" => JobState::Completed,
            "FAILED" => JobState::Failed { exit_code },
            "TIMEOUT" | "OUT_OF_MEMORY" | "NODE_FAIL" | "CANCELLED" | "PREEMPTED" | "BOOT_FAIL"
            | "DEADLINE" | "REVOKED" => JobState::Ended {
                state: state.to_owned(),
                reason,
            },
            other => JobState::Active {
                state: other.to_owned(),
                node,
                reason,
            },
        }
    }
}

/// Asks Slurm where job `id` is. `Ok(Unknown)` only when the controller answered that it no
/// longer knows the job (and accounting does not either); `Err` when it could not be asked.
pub fn job_state(id: &str) -> Result<JobState, String> {
    let output = Command::new("scontrol")
        .args(["show", "job", "-o", id])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `scontrol` (is Slurm's client installed?): {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let states: Vec<JobState> = text
        .lines()
        .filter(|l| l.contains("JobState="))
        .map(JobState::from_scontrol)
        .collect();
    if output.status.success() && !states.is_empty() {
        // An array job has one line per task (pending ones folded into one).
        return Ok(JobState::of_all(states));
    }
    let complaint = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    // Purged from the controller's memory (MinJobAge): ask the accounting database.
    let accounting = Command::new("sacct")
        .args(["-n", "-X", "-P", "-j", id, "-o", "State,ExitCode,Reason"])
        .stdin(Stdio::null())
        .output();
    if let Ok(output) = accounting
        && output.status.success()
    {
        let states: Vec<JobState> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let mut fields = line.split('|');
                let state = fields.next().unwrap_or("UNKNOWN").to_owned();
                let exit_code = fields.next().unwrap_or("?").to_owned();
                let reason = fields.next().unwrap_or("None").to_owned();
                JobState::classify(&state, exit_code, reason, None)
            })
            .collect();
        if !states.is_empty() {
            return Ok(JobState::of_all(states));
        }
    }
    if complaint.contains("Invalid job id") {
        Ok(JobState::Unknown)
    } else {
        Err(format!("`scontrol show job {id}` failed: {complaint}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scontrol_lines_are_read_into_states() {
        let line = "JobId=7 JobName=x JobState=TIMEOUT Reason=TimeLimit Dependency=(null) \
                    ExitCode=0:15 NodeList=vm";
        assert_eq!(
            JobState::from_scontrol(line),
            JobState::Ended {
                state: "TIMEOUT".to_owned(),
                reason: "TimeLimit".to_owned()
            }
        );
        let line = "JobId=8 JobState=RUNNING Reason=None ExitCode=0:0 NodeList=node3";
        assert_eq!(
            JobState::from_scontrol(line),
            JobState::Active {
                state: "RUNNING".to_owned(),
                node: Some("node3".to_owned()),
                reason: "None".to_owned(),
            }
        );
        let line = "JobId=9 JobState=FAILED Reason=NonZeroExitCode ExitCode=1:0 NodeList=vm";
        assert_eq!(
            JobState::from_scontrol(line),
            JobState::Failed {
                exit_code: "1:0".to_owned()
            }
        );
        assert_eq!(
            JobState::from_scontrol("JobId=1 JobState=COMPLETED ExitCode=0:0"),
            JobState::Completed
        );
    }

    #[test]
    fn a_job_that_can_never_start_is_recognised_and_one_that_waits_is_not() {
        let never = |line: &str| JobState::from_scontrol(line).never_runs();
        let message = never("JobId=1 JobState=PENDING Reason=PartitionTimeLimit").unwrap();
        assert!(message.contains("lower `time`"), "{message}");
        assert!(never("JobId=1 JobState=PENDING Reason=DependencyNeverSatisfied").is_some());
        assert!(never("JobId=1 JobState=PENDING Reason=InvalidAccount").is_some());
        assert!(never("JobId=1 JobState=REQUEUE_HOLD Reason=JobHeldAdmin").is_some());
        assert!(never("JobId=1 JobState=PENDING Reason=Resources").is_none());
        assert!(never("JobId=1 JobState=PENDING Reason=Priority").is_none());
        assert!(never("JobId=1 JobState=RUNNING Reason=None NodeList=vm").is_none());
        assert!(never("JobId=1 JobState=COMPLETED Reason=None").is_none());
    }
}
