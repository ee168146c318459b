//! What a running stage sees: its params, resolved input paths, output paths, provenance.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use artifacts::Provenance;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::Params;

/// Everything one stage run needs. Built by the orchestrator; stages only read it.
#[derive(Debug)]
pub struct StageContext {
    /// The stage instance name (`train`, `ablation@arch=zf`), for messages.
    pub stage_name: String,
    pub params: Params,
    /// Input name -> resolved paths (one for `Artifact`/`Path` inputs, several for lists).
    pub inputs: BTreeMap<String, Vec<PathBuf>>,
    /// Output name -> path to write (inside a temporary folder the orchestrator commits).
    pub outputs: BTreeMap<String, PathBuf>,
    /// Scratch space, deleted after the run.
    pub scratch_dir: PathBuf,
    /// Survives a failed or killed run of the same cache key (and is deleted once the run
    /// commits): long stages keep their checkpoints here to resume.
    pub resume_dir: PathBuf,
    /// Written into every artifact's metadata.
    pub provenance: Provenance,
    /// Where progress bars are drawn (hidden when stderr is not a terminal).
    pub progress: MultiProgress,
    /// The finished runs of every stage upstream of this one (transitively), in pipeline
    /// order, from their manifests: for reports that say how their results were made.
    pub upstream_runs: Vec<UpstreamRun>,
    /// The program running the stage, e.g. `zfnet 0.1.0 (commit 1a2b3c4)`.
    pub build: String,
}

/// One finished run of an upstream stage.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamRun {
    pub stage: String,
    pub kind: String,
    pub kind_version: u32,
    pub cache_key: String,
    pub duration_s: f64,
    pub started_unix_s: f64,
    /// The run's params, every default filled in (from its manifest): what a report compares
    /// with the paper's settings.
    pub params: serde_json::Value,
    /// Where it ran when not in the `zfnet run` process itself, e.g. `Slurm job 41 on node3`.
    pub ran_on: Option<String>,
}

impl StageContext {
    /// The path of a single required input. Panics on an undeclared name: the orchestrator
    /// has already checked the pipeline against the stage's declaration.
    pub fn input(&self, name: &str) -> &Path {
        self.optional_input(name)
            .unwrap_or_else(|| panic!("input `{name}` was not wired; the orchestrator checks this"))
    }

    /// A single optional input, if the pipeline wired it.
    pub fn optional_input(&self, name: &str) -> Option<&Path> {
        self.inputs
            .get(name)
            .and_then(|paths| paths.first())
            .map(PathBuf::as_path)
    }

    /// Every path of a list input (empty when not wired).
    pub fn input_list(&self, name: &str) -> &[PathBuf] {
        self.inputs.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Where to write output `name`.
    pub fn output(&self, name: &str) -> &Path {
        self.outputs
            .get(name)
            .unwrap_or_else(|| panic!("output `{name}` is not declared by this stage kind"))
    }

    /// A progress bar for `len` steps of work, drawn under the run's other bars.
    pub fn progress_bar(&self, len: u64, message: &str) -> ProgressBar {
        self.progress.add(progress_bar(
            len,
            &format!("{}: {message}", self.stage_name),
        ))
    }

    /// A context for calling a stage outside the orchestrator (tests, benchmarks): inputs
    /// and outputs as given, scratch in `scratch_dir`, progress hidden.
    pub fn for_tests(
        params: Params,
        inputs: BTreeMap<String, Vec<PathBuf>>,
        outputs: BTreeMap<String, PathBuf>,
        scratch_dir: PathBuf,
    ) -> Self {
        StageContext {
            stage_name: "test".to_owned(),
            params,
            inputs,
            outputs,
            resume_dir: scratch_dir.join("resume"),
            scratch_dir,
            provenance: Provenance::ad_hoc("test"),
            progress: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
            upstream_runs: Vec::new(),
            build: "test".to_owned(),
        }
    }
}

/// A progress bar in the house style: bar, position, rate (three significant digits) and ETA.
pub fn progress_bar(len: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:32} [{bar:30}] {human_pos}/{human_len} {rate} eta {eta_human}",
        )
        .expect("template is valid")
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = out.write_str(&human_rate(state.per_sec()));
            },
        )
        .with_key(
            "eta_human",
            |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = out.write_str(&human_duration(state.eta().as_secs_f64()));
            },
        )
        .progress_chars("=> "),
    );
    bar.set_message(message.to_owned());
    bar
}

/// A rate as a person reads it, to three significant digits: `0.523/s`, `19.3/s`, `11.6k/s`.
pub fn human_rate(per_second: f64) -> String {
    if !per_second.is_finite() || per_second <= 0.0 {
        return "-/s".to_owned();
    }
    let (value, suffix) = if per_second >= 1e6 {
        (per_second / 1e6, "M")
    } else if per_second >= 1e3 {
        (per_second / 1e3, "k")
    } else {
        (per_second, "")
    };
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else if value >= 1.0 {
        2
    } else {
        3
    };
    format!("{value:.decimals$}{suffix}/s")
}

/// A duration as a person reads it: `42 s`, `3 min 05 s`, `2 h 10 min`, `3 d 4 h`.
pub fn human_duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "?".to_owned();
    }
    let total = seconds.round() as u64;
    let (days, hours, minutes, secs) = (
        total / 86_400,
        total / 3600 % 24,
        total / 60 % 60,
        total % 60,
    );
    if days > 0 {
        format!("{days} d {hours} h")
    } else if hours > 0 {
        format!("{hours} h {minutes:02} min")
    } else if minutes > 0 {
        format!("{minutes} min {secs:02} s")
    } else {
        format!("{secs} s")
    }
}

#[cfg(test)]
mod human_tests {
    use super::*;

    #[test]
    fn rates_and_durations_read_as_a_person_writes_them() {
        assert_eq!(human_rate(11_601.295_8), "11.6k/s");
        assert_eq!(human_rate(19.27), "19.3/s");
        assert_eq!(human_rate(0.5234), "0.523/s");
        assert_eq!(human_rate(2_500_000.0), "2.50M/s");
        assert_eq!(human_rate(0.0), "-/s");
        assert_eq!(human_duration(42.4), "42 s");
        assert_eq!(human_duration(185.0), "3 min 05 s");
        assert_eq!(human_duration(7_800.0), "2 h 10 min");
        assert_eq!(human_duration(273_600.0), "3 d 4 h");
        assert_eq!(human_duration(f64::INFINITY), "?");
    }
}
