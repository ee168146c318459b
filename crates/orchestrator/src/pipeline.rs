//! The raw shape of `pipeline.yaml`, as parsed by serde with line numbers kept.
//!
//! ```yaml
//! name: default                 # names the report folder and the state namespace
//! cache_dir: .zfnet/cache       # optional; relative to this file
//! stages:
//!   - name: fashion_train
//!     kind: fashion_mnist
//!     inputs: { dir: /usr/share/datasets/fashion-mnist }
//!     params: { split: train }
//!   - name: ablation
//!     kind: train
//!     inputs: { images: preprocess.images }
//!     matrix: { arch: [zf, zf_no_fc67] }   # one instance per value: ablation@arch=zf, ...
//! ```
//! Parsing is done by `serde-saphyr`: it keeps locations (`Spanned`), rejects duplicate keys
//! and unknown fields with line-annotated errors. Meaning is checked later, in `resolve`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::ConfigProblem;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPipeline {
    pub name: Spanned<String>,
    #[serde(default)]
    pub cache_dir: Option<Spanned<String>>,
    pub stages: Vec<RawStage>,
    /// Where stages run: this machine (the default) or Slurm jobs (see `crate::slurm`).
    #[serde(default)]
    pub executor: Option<RawExecutor>,
    /// The file the `executor:` section came from when an overlay replaced it (its lines are
    /// that file's); `None`: the pipeline file's own.
    #[serde(skip)]
    pub executor_file: Option<std::path::PathBuf>,
}

/// The `executor:` section.
///
/// ```yaml
/// executor:
///   default: slurm          # local (the default) or slurm; `zfnet run --executor` beats it
///   slurm:
///     defaults: { partition: gpu, account: vision, cpus: 4, memory_mb: 16384, time: "12:00:00" }
///     stages:
///       train: { cpus: 8, gpus: 1, time: "3-00:00:00" }   # a base name: every instance
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExecutor {
    #[serde(default)]
    pub default: Option<Spanned<String>>,
    #[serde(default)]
    pub slurm: Option<RawSlurm>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSlurm {
    #[serde(default)]
    pub defaults: Option<Spanned<RawSlurmResources>>,
    #[serde(default)]
    pub stages: BTreeMap<String, Spanned<RawSlurmResources>>,
    /// Seconds between two looks at a job's state (default 2).
    #[serde(default)]
    pub poll_seconds: Option<Spanned<f64>>,
}

/// What one stage's job asks Slurm for; every field optional (the defaults fill in).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSlurmResources {
    #[serde(default)]
    pub partition: Option<String>,
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub cpus: Option<u32>,
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// A Slurm time limit: `minutes`, `hours:minutes:seconds`, `days-hours[:minutes]`, ...
    #[serde(default)]
    pub time: Option<String>,
    /// GPUs for a stage that runs on the GPU (`device: cuda`); ignored by CPU stages.
    #[serde(default)]
    pub gpus: Option<u32>,
    /// Split a stage whose kind can (`preprocess`, `extract`) into this many Slurm array tasks, each
    /// over a slice of the input, merged by one more job into the bytes one run writes.
    #[serde(default)]
    pub shards: Option<u32>,
    /// Further `sbatch` options, e.g. `["--qos=long", "--constraint=h100"]`.
    #[serde(default)]
    pub sbatch_args: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStage {
    pub name: Spanned<String>,
    pub kind: Spanned<String>,
    #[serde(default)]
    pub params: BTreeMap<String, Spanned<serde_json::Value>>,
    #[serde(default)]
    pub inputs: BTreeMap<String, Spanned<RawInput>>,
    /// Param sweep: the stage is instantiated once per combination of these param values.
    #[serde(default)]
    pub matrix: BTreeMap<String, Spanned<Vec<serde_json::Value>>>,
}

/// An input reference: one `stage.output` or path, or a list of them.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum RawInput {
    One(String),
    Many(Vec<String>),
}

/// Parses pipeline text; a syntax or shape error becomes one located problem.
pub fn parse(text: &str, file: &Path) -> Result<RawPipeline, ConfigProblem> {
    serde_saphyr::from_str(text).map_err(|error| {
        let (line, first) = yaml_error(&error);
        ConfigProblem {
            file: file.to_path_buf(),
            line,
            message: format!("{first} (see the pipeline format in README.md)"),
        }
    })
}

/// A YAML error as (line, what is wrong): serde-saphyr prints a code snippet after its first
/// line and starts that line with `error: ` and its own `line N column M: `, which a
/// `file:line:` prefix already says.
pub(crate) fn yaml_error(error: &serde_saphyr::Error) -> (Option<u64>, String) {
    let line = error.location().map(|location| location.line());
    let message = error.to_string();
    let first = message.lines().next().unwrap_or("invalid YAML").trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let first = match first.split_once(": ") {
        Some((place, rest)) if place.starts_with("line ") => rest,
        _ => first,
    };
    (line, first.to_owned())
}

/// Parses one `--set` value the way YAML would (`3` is an int, `0.1` a float, `[1, 2]` a
/// list, anything else a string).
pub fn parse_scalar(text: &str) -> serde_json::Value {
    serde_saphyr::from_str::<serde_json::Value>(text)
        .ok()
        .filter(|value| !value.is_object())
        .unwrap_or_else(|| serde_json::Value::String(text.to_owned()))
}
