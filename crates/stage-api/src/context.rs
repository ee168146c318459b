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

/// A progress bar in the house style: bar, position, rate and ETA.
pub fn progress_bar(len: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:32} [{bar:30}] {human_pos}/{human_len} {per_sec} eta {eta}",
        )
        .expect("template is valid")
        .progress_chars("=> "),
    );
    bar.set_message(message.to_owned());
    bar
}
