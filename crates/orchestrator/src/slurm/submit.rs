//! Submitting a stage run: the `sbatch` script that runs `zfnet exec-stage`, one job or an
//! array of shards and a merge, each waited for and its end told in words.

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::jobs::{INTERRUPTED, SUBMITTED, in_flight_dir, scancel};
use super::wait::{
    CONTROLLER_PATIENCE, Waited, describe_end, killed_for_memory, stderr_tail, wait_for,
};
use super::{InFlight, JobRequest, JobState, SlurmJob, jobs_dir};
use crate::ResolvedStage;

/// How to start `zfnet exec-stage` on a node: the program and its global arguments (the same
/// pipeline file, overlays, `--set`s and cache folder as this run), and the working folder.
#[derive(Clone, Debug)]
pub struct ExecCommand {
    pub program: PathBuf,
    pub global_args: Vec<OsString>,
    pub working_dir: PathBuf,
}

/// One stage run, submitted and waited for: one job, or (`request.shards > 1`) an array of
/// shards and then a job that merges them. `on_submitted` hears each job id once Slurm has
/// it. Returns when the last job has finished: `Ok` when it completed (the caller then reads
/// the committed entry), `Err` with what Slurm and the job's stderr say otherwise.
#[allow(clippy::too_many_arguments)]
pub fn run_job(
    command: &ExecCommand,
    cache_root: &Path,
    pipeline: &str,
    stage: &ResolvedStage,
    key: &str,
    force: bool,
    request: &JobRequest,
    poll: Duration,
    on_submitted: &dyn Fn(&str),
) -> Result<SlurmJob, String> {
    let job = Job {
        command,
        cache_root,
        pipeline,
        stage,
        key,
        request,
        poll,
    };
    let force_arg: &[&str] = if force { &["--force"] } else { &[] };
    if request.shards <= 1 {
        let id = job.submit(force_arg, None)?;
        on_submitted(&id);
        job.finish(&id)?;
        return Ok(SlurmJob {
            id,
            node: String::new(),
        });
    }
    let count = request.shards.to_string();
    let mut shard_args = vec![
        "--shard-count",
        &count,
        "--shard-index",
        "$SLURM_ARRAY_TASK_ID",
    ];
    shard_args.extend(force_arg);
    let array = job.submit(&shard_args, Some(request.shards))?;
    on_submitted(&format!("{array} (an array of {} shards)", request.shards));
    job.finish(&array)?;
    let mut merge_args = vec!["--shard-count", &count, "--merge-shards", &array];
    merge_args.extend(force_arg);
    let merge = job.submit(&merge_args, None)?;
    on_submitted(&format!("{merge} (merging the shards of {array})"));
    job.finish(&merge)?;
    Ok(SlurmJob {
        id: merge,
        node: String::new(),
    })
}

/// One stage's jobs: what they run and where they log.
struct Job<'a> {
    command: &'a ExecCommand,
    cache_root: &'a Path,
    pipeline: &'a str,
    stage: &'a ResolvedStage,
    key: &'a str,
    request: &'a JobRequest,
    poll: Duration,
}

impl Job<'_> {
    fn logs(&self) -> PathBuf {
        jobs_dir(self.cache_root).join("logs")
    }

    /// Submits `zfnet exec-stage` with `extra` arguments (`$SLURM_ARRAY_TASK_ID` is left to
    /// the shell), as an array of `array` tasks when given; returns the job id.
    fn submit(&self, extra: &[&str], array: Option<u32>) -> Result<String, String> {
        let logs = self.logs();
        fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
        let in_flight = in_flight_dir(self.cache_root);
        fs::create_dir_all(&in_flight).map_err(|e| format!("{}: {e}", in_flight.display()))?;
        // `%j` is the job id, `%A_%a` an array's id and task: one log pair per attempt.
        let stem = match array {
            Some(_) => format!("{}.%A_%a", self.key),
            None => format!("{}.%j", self.key),
        };
        let mut script =
            String::from("#!/bin/sh\n# zfnet: one stage run (zfnet run --executor slurm)\nexec");
        script.push(' ');
        script.push_str(&shell_quote(self.command.program.as_os_str()));
        for arg in &self.command.global_args {
            script.push(' ');
            script.push_str(&shell_quote(arg));
        }
        for arg in ["exec-stage", "--stage", &self.stage.name, "--key", self.key] {
            script.push(' ');
            script.push_str(&shell_quote(arg.as_ref()));
        }
        for arg in extra {
            script.push(' ');
            if *arg == "$SLURM_ARRAY_TASK_ID" {
                script.push_str("\"$SLURM_ARRAY_TASK_ID\"");
            } else {
                script.push_str(&shell_quote(arg.as_ref()));
            }
        }
        script.push('\n');

        // Held until the id is recorded: the interrupt handler takes this lock before it reads
        // the ids, so a job accepted by the controller is never left out of its scancel, and
        // nothing is submitted once it has run.
        let mut submitted = SUBMITTED.lock().unwrap_or_else(|e| e.into_inner());
        if INTERRUPTED.load(Ordering::SeqCst) {
            return Err("interrupted: not submitting".to_owned());
        }
        let mut sbatch = Command::new("sbatch");
        sbatch
            .arg("--parsable")
            .arg(format!("--job-name=zfnet:{}", job_name(&self.stage.name)))
            .arg(format!(
                "--output={}",
                logs.join(format!("{stem}.out")).display()
            ))
            .arg(format!(
                "--error={}",
                logs.join(format!("{stem}.err")).display()
            ))
            .arg(format!("--chdir={}", self.command.working_dir.display()))
            .args(self.request.sbatch_options());
        if let Some(tasks) = array {
            sbatch.arg(format!("--array=0-{}", tasks - 1));
        }
        // Its own process group: a Ctrl-C at the terminal reaches this process only, which
        // lets sbatch finish and report the id it got.
        sbatch
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = sbatch
            .spawn()
            .map_err(|e| format!("cannot run `sbatch` (is Slurm's client installed?): {e}"))?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(script.as_bytes())
            .map_err(|e| format!("writing the job script to sbatch: {e}"))?;
        let output = child
            .wait_with_output()
            .map_err(|e| format!("waiting for sbatch: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "sbatch refused the job ({}): {}",
                self.request.describe(),
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        // `--parsable` prints `<id>` or `<id>;<cluster>`.
        let id = String::from_utf8_lossy(&output.stdout)
            .trim()
            .split(';')
            .next()
            .unwrap_or_default()
            .to_owned();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "sbatch printed no job id: {:?}",
                String::from_utf8_lossy(&output.stdout)
            ));
        }
        submitted.insert(id.clone());
        drop(submitted);
        let record = InFlight {
            job_id: id.clone(),
            pipeline: self.pipeline.to_owned(),
            stage: self.stage.name.clone(),
            key: self.key.to_owned(),
            submitter: format!(
                "pid {} on {}",
                std::process::id(),
                crate::cache::host_name()
            ),
        };
        let _ = fs::write(
            in_flight.join(format!("{id}.json")),
            serde_json::to_vec_pretty(&record).expect("record serialises"),
        );
        Ok(id)
    }

    /// Waits for job `id` and says how it ended.
    fn finish(&self, id: &str) -> Result<(), String> {
        let waited = wait_for(id, self.poll);
        SUBMITTED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        let record = in_flight_dir(self.cache_root).join(format!("{id}.json"));
        let result = match waited {
            Waited::Finished(state) => state,
            Waited::NeverRuns(why) => {
                let cancelled = scancel(id);
                if cancelled.is_ok() {
                    // Otherwise kept: a job released later would run with no record to cancel.
                    let _ = fs::remove_file(&record);
                }
                return Err(format!(
                    "Slurm job {id}: {why}; {}",
                    match cancelled {
                        Ok(()) => "zfnet cancelled it".to_owned(),
                        Err(error) => format!("cancelling it failed ({error}): scancel {id}"),
                    }
                ));
            }
            Waited::Unreachable(error) => {
                // The job may still run: keep its record, so that the next run cancels it.
                let cancelled = scancel(id);
                return Err(format!(
                    "lost contact with the Slurm controller about job {id} for {} min \
                     ({error}); {}",
                    CONTROLLER_PATIENCE.as_secs() / 60,
                    match cancelled {
                        Ok(()) => "zfnet cancelled it".to_owned(),
                        Err(problem) => format!(
                            "cancelling it failed too ({problem}); its record stays in {} and \
                             the next run cancels it if it still runs",
                            record.display()
                        ),
                    }
                ));
            }
        };
        let _ = fs::remove_file(&record);
        let stderr = || stderr_tail(&self.logs(), self.key, id);
        match result {
            JobState::Completed => Ok(()),
            // Where memory is enforced by sampling (jobacct_gather's OverMemoryKill, no
            // cgroups), Slurm marks the job FAILED; its step says why in the job's stderr.
            JobState::Failed { exit_code } if killed_for_memory(&self.logs(), self.key, id) => {
                Err(format!(
                    "Slurm job {id} was ended by Slurm: {} (slurmstepd: exceeded the job's memory \
                 limit; exit code {exit_code}){}",
                    describe_end("OUT_OF_MEMORY", self.request),
                    stderr()
                ))
            }
            JobState::Failed { exit_code } => Err(format!(
                "Slurm job {id} failed (exit code {exit_code}){}",
                stderr()
            )),
            JobState::Ended { state, reason } => Err(format!(
                "Slurm job {id} was ended by Slurm: {}{}{}",
                describe_end(&state, self.request),
                if reason == "None" {
                    String::new()
                } else {
                    format!(" (reason: {reason})")
                },
                stderr()
            )),
            JobState::Unknown => Err(format!(
                "Slurm job {id} left the controller's memory before zfnet saw it finish, and \
                 accounting (sacct) does not know it{}",
                stderr()
            )),
            JobState::Active { .. } => unreachable!("wait_for returns finished states"),
        }
    }
}

/// A job name Slurm accepts: the stage name, its odd characters replaced, at most 100 bytes.
fn job_name(stage: &str) -> String {
    stage
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | '=' | ',') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect()
}

fn shell_quote(text: &std::ffi::OsStr) -> String {
    let text = text.to_string_lossy();
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_script_quotes_every_argument() {
        assert_eq!(shell_quote("a b".as_ref()), "'a b'");
        assert_eq!(shell_quote("it's".as_ref()), "'it'\\''s'");
        assert_eq!(job_name("train@arch=zf small"), "train@arch=zf_small");
    }
}
