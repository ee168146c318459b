//! The `executor:` section: which executor runs stages, what each stage's job asks Slurm for
//! (bounded and checked before anything is submitted), and the [`JobRequest`] made from it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

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
}
