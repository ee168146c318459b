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

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::pipeline::{RawExecutor, RawSlurmResources};
use crate::{ConfigProblem, ResolvedStage};

/// Where stages run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExecutorKind {
    /// Threads of the `zfnet run` process (the default).
    #[default]
    Local,
    /// One Slurm job per stage run.
    Slurm,
}

impl ExecutorKind {
    pub fn parse(text: &str) -> Option<ExecutorKind> {
        match text {
            "local" => Some(ExecutorKind::Local),
            "slurm" => Some(ExecutorKind::Slurm),
            _ => None,
        }
    }
}

/// The resolved `executor:` section.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExecutorConfig {
    pub default: ExecutorKind,
    pub slurm: SlurmConfig,
}

/// Resources per stage and how often to look at jobs.
#[derive(Clone, Debug, PartialEq)]
pub struct SlurmConfig {
    pub defaults: SlurmResources,
    /// By base stage name (every instance of a swept stage).
    pub stages: BTreeMap<String, SlurmResources>,
    pub poll: Duration,
}

impl Default for SlurmConfig {
    fn default() -> Self {
        SlurmConfig {
            defaults: SlurmResources::default(),
            stages: BTreeMap::new(),
            poll: Duration::from_secs(2),
        }
    }
}

/// What a job asks for; `None` leaves the choice to the next level (stage, defaults, zfnet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlurmResources {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub cpus: Option<u32>,
    pub memory_mb: Option<u64>,
    pub time: Option<String>,
    pub gpus: Option<u32>,
    pub sbatch_args: Vec<String>,
    pub shards: Option<u32>,
}

impl SlurmResources {
    /// `self` where it says something, `fallback` elsewhere (extra arguments: both, in order).
    fn or(&self, fallback: &SlurmResources) -> SlurmResources {
        SlurmResources {
            partition: self
                .partition
                .clone()
                .or_else(|| fallback.partition.clone()),
            account: self.account.clone().or_else(|| fallback.account.clone()),
            cpus: self.cpus.or(fallback.cpus),
            memory_mb: self.memory_mb.or(fallback.memory_mb),
            time: self.time.clone().or_else(|| fallback.time.clone()),
            gpus: self.gpus.or(fallback.gpus),
            shards: self.shards.or(fallback.shards),
            sbatch_args: fallback
                .sbatch_args
                .iter()
                .chain(&self.sbatch_args)
                .cloned()
                .collect(),
        }
    }
}

/// CPUs a job gets when nothing says otherwise.
pub const DEFAULT_CPUS: u32 = 2;
/// Memory a job gets when neither the executor section nor the stage's own memory param says.
pub const DEFAULT_MEMORY_MB: u64 = 8192;
/// Added to a stage's `memory_limit_mb` (its budget: data and, for `train` on the CPU, the
/// model and a batch's activations) for what the budget leaves out (buffers, per-thread
/// temporaries, the program itself).
pub const MEMORY_HEADROOM_MB: u64 = 2048;
/// The most shards one stage is split into (Slurm's default `MaxArraySize` is 1001).
pub const MAX_SHARDS: u32 = 1000;

/// `sbatch` options zfnet sets itself; `sbatch_args` may not set them.
const MANAGED_OPTIONS: &[&str] = &[
    "--output",
    "--error",
    "--job-name",
    "--chdir",
    "--parsable",
    "--wrap",
    "--array",
    "--dependency",
    "--wait",
    "--cpus-per-task",
    "--mem",
    "--time",
    "--gpus",
    "--gres",
    "--partition",
    "--account",
    // Other ways of asking for memory or GPUs, which sbatch refuses beside --mem / --gpus.
    "--mem-per-cpu",
    "--mem-per-gpu",
    "--gpus-per-node",
    "--gpus-per-task",
    "--gpus-per-socket",
    "--cpus-per-gpu",
    "--tres-per-task",
    // A job zfnet submits must be able to start: no holds.
    "--hold",
    "-H",
    "-o",
    "-e",
    "-J",
    "-D",
    "-a",
    "-d",
    "-c",
    "-t",
    "-p",
    "-A",
    "-G",
    "-W",
];

/// Reads the `executor:` section; every problem at its line.
pub fn resolve_config(
    raw: Option<&RawExecutor>,
    stages: &[ResolvedStage],
    file: &Path,
) -> Result<ExecutorConfig, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let mut problem = |line: Option<u64>, message: String| {
        problems.push(ConfigProblem {
            file: file.to_path_buf(),
            line,
            message,
        })
    };
    let mut config = ExecutorConfig::default();
    let Some(raw) = raw else {
        return Ok(config);
    };
    if let Some(default) = &raw.default {
        match ExecutorKind::parse(&default.value) {
            Some(kind) => config.default = kind,
            None => problem(
                Some(default.referenced.line()),
                format!(
                    "executor.default is `{}`; it must be `local` or `slurm`",
                    default.value
                ),
            ),
        }
    }
    if let Some(slurm) = &raw.slurm {
        if let Some(defaults) = &slurm.defaults {
            let line = defaults.referenced.line();
            for message in check_resources(&defaults.value) {
                problem(Some(line), format!("executor.slurm.defaults: {message}"));
            }
            if defaults.value.shards.is_some() {
                problem(
                    Some(line),
                    "executor.slurm.defaults: `shards` belongs in a stage's block (only some \
                     kinds can be split)"
                        .to_owned(),
                );
            }
            config.slurm.defaults = resources(&defaults.value);
        }
        let base_names: BTreeSet<&str> = stages.iter().map(|s| s.base_name.as_str()).collect();
        for (name, spec) in &slurm.stages {
            let line = spec.referenced.line();
            if !base_names.contains(name.as_str()) {
                problem(
                    Some(line),
                    format!(
                        "executor.slurm.stages names `{name}`, which is no stage of this \
                         pipeline{}",
                        crate::suggest::did_you_mean(name, base_names.iter().copied())
                    ),
                );
            }
            for message in check_resources(&spec.value) {
                problem(
                    Some(line),
                    format!("executor.slurm.stages.{name}: {message}"),
                );
            }
            if spec.value.shards.is_some_and(|n| n > 1)
                && let Some(stage) = stages.iter().find(|s| s.base_name == *name)
                && !stage.kind.shardable()
            {
                problem(
                    Some(line),
                    format!(
                        "executor.slurm.stages.{name}: stage kind `{}` cannot be split into \
                         shards (`preprocess` and `extract` can); remove `shards`",
                        stage.kind.name()
                    ),
                );
            }
            config
                .slurm
                .stages
                .insert(name.clone(), resources(&spec.value));
        }
        if let Some(poll) = &slurm.poll_seconds {
            if poll.value.is_finite() && (0.05..=600.0).contains(&poll.value) {
                config.slurm.poll = Duration::from_secs_f64(poll.value);
            } else {
                problem(
                    Some(poll.referenced.line()),
                    format!(
                        "executor.slurm.poll_seconds is {}; give 0.05 to 600",
                        poll.value
                    ),
                );
            }
        }
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems)
    }
}

fn resources(raw: &RawSlurmResources) -> SlurmResources {
    SlurmResources {
        partition: raw.partition.clone(),
        account: raw.account.clone(),
        cpus: raw.cpus,
        memory_mb: raw.memory_mb,
        time: raw.time.clone(),
        gpus: raw.gpus,
        sbatch_args: raw.sbatch_args.clone(),
        shards: raw.shards,
    }
}

/// What is wrong with one resources block (bounded before anything is submitted).
fn check_resources(raw: &RawSlurmResources) -> Vec<String> {
    let mut messages = Vec::new();
    if let Some(cpus) = raw.cpus
        && !(1..=4096).contains(&cpus)
    {
        messages.push(format!("cpus is {cpus}; give 1 to 4096"));
    }
    if let Some(memory) = raw.memory_mb
        && !(64..=64 * 1024 * 1024).contains(&memory)
    {
        messages.push(format!(
            "memory_mb is {memory}; give 64 to 67108864 (64 TiB)"
        ));
    }
    if let Some(shards) = raw.shards
        && !(1..=MAX_SHARDS).contains(&shards)
    {
        messages.push(format!("shards is {shards}; give 1 to {MAX_SHARDS}"));
    }
    if let Some(gpus) = raw.gpus
        && !(1..=64).contains(&gpus)
    {
        messages.push(format!("gpus is {gpus}; give 1 to 64"));
    }
    if let Some(time) = &raw.time
        && time_limit_minutes(time).is_none()
    {
        messages.push(format!(
            "time `{time}` is not a Slurm time limit (minutes, minutes:seconds, \
             hours:minutes:seconds, days-hours, days-hours:minutes or \
             days-hours:minutes:seconds)"
        ));
    }
    for (name, value) in [("partition", &raw.partition), ("account", &raw.account)] {
        if let Some(value) = value
            && !is_slurm_name(value)
        {
            messages.push(format!(
                "{name} `{value}` is not a Slurm name (letters, digits, `-`, `_`, `.`, `,`)"
            ));
        }
    }
    for arg in &raw.sbatch_args {
        let option = arg.split('=').next().unwrap_or(arg);
        if !arg.starts_with('-') {
            messages.push(format!(
                "sbatch_args `{arg}` is not an option (write `--name=value` as one item)"
            ));
        } else if is_managed_option(option) {
            messages.push(format!(
                "sbatch_args `{arg}` sets what zfnet sets itself; use the field for it \
                 (cpus, memory_mb, time, gpus, partition, account) or leave it out"
            ));
        }
    }
    messages
}

/// Whether an `sbatch_args` option sets what zfnet sets itself: a managed option, a short one
/// with its value attached (`-c4`, `-t10`), or an abbreviation of a managed long option
/// (sbatch, through getopt_long, accepts `--tim=10` for `--time=10`).
fn is_managed_option(option: &str) -> bool {
    if MANAGED_OPTIONS.contains(&option) {
        return true;
    }
    if let Some(name) = option.strip_prefix("--") {
        return name.len() >= 2
            && MANAGED_OPTIONS
                .iter()
                .filter_map(|managed| managed.strip_prefix("--"))
                .any(|managed| managed.starts_with(name));
    }
    option.len() > 2
        && option
            .get(..2)
            .is_some_and(|short| MANAGED_OPTIONS.contains(&short))
}

fn is_slurm_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 200
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ','))
}

/// A Slurm time limit in minutes (rounded up), or `None` when `text` is not one. The forms are
/// sbatch's: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`.
pub fn time_limit_minutes(text: &str) -> Option<u64> {
    let number = |part: &str| -> Option<u64> {
        (!part.is_empty() && part.len() <= 6 && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse().ok())
            .flatten()
    };
    let (days, rest) = match text.split_once('-') {
        Some((days, rest)) => (Some(number(days)?), rest),
        None => (None, text),
    };
    let parts: Vec<u64> = rest.split(':').map(number).collect::<Option<_>>()?;
    let seconds = match (days, parts.as_slice()) {
        (None, [m]) => m * 60,
        (None, [m, s]) => m * 60 + s,
        (None, [h, m, s]) => h * 3600 + m * 60 + s,
        (Some(d), [h]) => d * 86400 + h * 3600,
        (Some(d), [h, m]) => d * 86400 + h * 3600 + m * 60,
        (Some(d), [h, m, s]) => d * 86400 + h * 3600 + m * 60 + s,
        _ => return None,
    };
    (seconds > 0).then_some(seconds.div_ceil(60))
}

/// What one stage's job asks for, all choices made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRequest {
    pub cpus: u32,
    pub memory_mb: u64,
    pub time: Option<String>,
    pub partition: Option<String>,
    pub account: Option<String>,
    /// GPUs, for a stage that runs on the GPU; 0 otherwise.
    pub gpus: u32,
    pub sbatch_args: Vec<String>,
    /// Array tasks the stage is split into (1: one job, no merge).
    pub shards: u32,
}

impl JobRequest {
    /// The resources of `stage`'s job: its own block, else the defaults; memory from the
    /// stage's own data budget (`memory_limit_mb` + [`MEMORY_HEADROOM_MB`]) where it has one
    /// and no block names a memory; a GPU stage gets `gpus` (default 1).
    pub fn for_stage(stage: &ResolvedStage, config: &SlurmConfig) -> JobRequest {
        let empty = SlurmResources::default();
        let own = config.stages.get(&stage.base_name).unwrap_or(&empty);
        let chosen = own.or(&config.defaults);
        let stated = stage
            .params
            .get("memory_limit_mb")
            .and_then(|value| match value {
                stage_api::ParamValue::Int(mb) => u64::try_from(*mb).ok(),
                _ => None,
            })
            .map(|mb| mb.saturating_add(MEMORY_HEADROOM_MB));
        let memory_mb = own
            .memory_mb
            .or(stated)
            .or(config.defaults.memory_mb)
            .unwrap_or(DEFAULT_MEMORY_MB);
        JobRequest {
            cpus: chosen.cpus.unwrap_or(DEFAULT_CPUS),
            memory_mb,
            time: chosen.time,
            partition: chosen.partition,
            account: chosen.account,
            gpus: if stage.resources.gpu {
                chosen.gpus.unwrap_or(1)
            } else {
                0
            },
            sbatch_args: chosen.sbatch_args,
            shards: own.shards.unwrap_or(1).max(1),
        }
    }

    /// The `sbatch` options for this request (without the ones naming logs and the job).
    pub fn sbatch_options(&self) -> Vec<String> {
        let mut options = vec![
            format!("--cpus-per-task={}", self.cpus),
            format!("--mem={}M", self.memory_mb),
        ];
        if let Some(time) = &self.time {
            options.push(format!("--time={time}"));
        }
        if let Some(partition) = &self.partition {
            options.push(format!("--partition={partition}"));
        }
        if let Some(account) = &self.account {
            options.push(format!("--account={account}"));
        }
        if self.gpus > 0 {
            options.push(format!("--gpus={}", self.gpus));
        }
        options.extend(self.sbatch_args.iter().cloned());
        options
    }

    /// One line for the user: `2 CPUs, 8192 MB, 1 GPU, 1:00:00`.
    pub fn describe(&self) -> String {
        let mut parts = vec![
            format!("{} CPU{}", self.cpus, if self.cpus == 1 { "" } else { "s" }),
            format!("{} MB", self.memory_mb),
        ];
        if self.gpus > 0 {
            parts.push(format!(
                "{} GPU{}",
                self.gpus,
                if self.gpus == 1 { "" } else { "s" }
            ));
        }
        if let Some(time) = &self.time {
            parts.push(format!("time limit {time}"));
        }
        if let Some(partition) = &self.partition {
            parts.push(format!("partition {partition}"));
        }
        let each = parts.join(", ");
        if self.shards > 1 {
            format!("{} shards then a merge, each {each}", self.shards)
        } else {
            each
        }
    }
}

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

// ---------------------------------------------------------------------------------------
// Jobs this process submitted: cancelled on Ctrl-C, listed for `zfnet status`.

static SUBMITTED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

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

fn in_flight_dir(cache_root: &Path) -> PathBuf {
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
fn scancel(id: &str) -> Result<(), String> {
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

/// How long a controller that does not answer is waited for before the run gives up on a job.
const CONTROLLER_PATIENCE: Duration = Duration::from_secs(600);

/// How waiting for a job ended.
enum Waited {
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
fn wait_for(id: &str, poll: Duration) -> Waited {
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
fn killed_for_memory(logs: &Path, key: &str, id: &str) -> bool {
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

fn describe_end(state: &str, request: &JobRequest) -> String {
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
fn stderr_tail(logs: &Path, key: &str, id: &str) -> String {
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
    fn slurm_time_limits_are_read_in_every_form_sbatch_accepts() {
        assert_eq!(time_limit_minutes("30"), Some(30));
        assert_eq!(time_limit_minutes("1:30"), Some(2));
        assert_eq!(time_limit_minutes("2:00:00"), Some(120));
        assert_eq!(time_limit_minutes("1-0"), Some(1440));
        assert_eq!(time_limit_minutes("1-2:30"), Some(1590));
        assert_eq!(time_limit_minutes("3-00:00:00"), Some(4320));
        for bad in ["", "0", "1h", "1:2:3:4", "-5", "1-", "a-1", "1-2-3", "1.5"] {
            assert_eq!(time_limit_minutes(bad), None, "{bad}");
        }
    }

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

    #[test]
    fn options_that_zfnet_sets_itself_are_refused_in_sbatch_args() {
        let raw = RawSlurmResources {
            sbatch_args: vec![
                "--qos=long".to_owned(),
                "--time=10".to_owned(),
                "-c4".to_owned(),
                "constraint=h100".to_owned(),
                "--tim=10".to_owned(),
                "--mem-per-cpu=4G".to_owned(),
                "--part=gpu".to_owned(),
                "--constraint=h100".to_owned(),
                "--exclusive".to_owned(),
            ],
            ..RawSlurmResources::default()
        };
        let messages = check_resources(&raw);
        assert_eq!(messages.len(), 6, "{messages:?}");
        assert!(messages[0].contains("--time=10"), "{messages:?}");
        assert!(messages[1].contains("-c4"), "{messages:?}");
        assert!(messages[2].contains("not an option"), "{messages:?}");
        // Abbreviations of managed long options, and the other ways of asking for memory.
        assert!(messages[3].contains("--tim=10"), "{messages:?}");
        assert!(messages[4].contains("--mem-per-cpu=4G"), "{messages:?}");
        assert!(messages[5].contains("--part=gpu"), "{messages:?}");
    }

    #[test]
    fn a_job_script_quotes_every_argument() {
        assert_eq!(shell_quote("a b".as_ref()), "'a b'");
        assert_eq!(shell_quote("it's".as_ref()), "'it'\\''s'");
        assert_eq!(job_name("train@arch=zf small"), "train@arch=zf_small");
    }
}
