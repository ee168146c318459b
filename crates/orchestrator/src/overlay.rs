//! Overlays: run a pipeline's own graph with other data and a smaller scale.
//!
//! An overlay file names stages of a base pipeline and changes only their params and their
//! dataset paths; it can rename the pipeline (so its state and report are kept apart), move
//! its cache and say where stages run (an `executor:` section, which replaces the base file's
//! whole: a cluster's partitions and accounts kept beside the shared pipeline). It cannot add,
//! remove or rewire a stage, change a kind or a `matrix:`, so what runs is the base file's
//! graph — `make paper-mini` runs `pipelines/paper.yaml` this way.
//!
//! ```yaml
//! overlays: paper.yaml          # the base pipeline this overlay was written for
//! name: paper-mini
//! stages:
//!   imagenet_train_files: { inputs: { root: ../data/paper-mini/imagenet } }
//!   train: { params: { epochs: 2 } }
//! ```
//! Paths in an overlay are relative to the overlay file. Every problem is reported at once,
//! with the overlay's file and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::Spanned;
use stage_api::InputKind;

use crate::ConfigProblem;
use crate::pipeline::{RawInput, RawPipeline};
use crate::registry::Registry;
use crate::suggest::did_you_mean;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOverlay {
    /// The base pipeline's file name, checked against the file the overlay is applied to.
    pub overlays: Spanned<String>,
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    #[serde(default)]
    pub cache_dir: Option<Spanned<String>>,
    #[serde(default)]
    pub stages: BTreeMap<String, Spanned<StageOverlay>>,
    /// Replaces the base file's `executor:` section (checked at this file's lines).
    #[serde(default)]
    pub executor: Option<crate::pipeline::RawExecutor>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageOverlay {
    #[serde(default)]
    pub params: BTreeMap<String, Spanned<serde_json::Value>>,
    #[serde(default)]
    pub inputs: BTreeMap<String, Spanned<String>>,
}

/// Reads an overlay file and applies it to `base` (the pipeline read from `base_file`).
pub fn apply_file(
    overlay_file: &Path,
    base: &mut RawPipeline,
    base_file: &Path,
    registry: &Registry,
    path_exists: &dyn Fn(&Path) -> bool,
) -> Result<(), Vec<ConfigProblem>> {
    let problem = |line: Option<u64>, message: String| ConfigProblem {
        file: overlay_file.to_path_buf(),
        line,
        message,
    };
    let text = std::fs::read_to_string(overlay_file).map_err(|source| {
        vec![problem(
            None,
            format!("cannot read the overlay file: {source}"),
        )]
    })?;
    let overlay: RawOverlay = serde_saphyr::from_str(&text).map_err(|error| {
        let (line, first) = crate::pipeline::yaml_error(&error);
        vec![problem(
            line,
            format!("{first} (see the overlay format in README.md)"),
        )]
    })?;
    let overlay_dir = overlay_file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    apply(
        &overlay,
        &overlay_dir,
        base,
        base_file,
        registry,
        path_exists,
    )
    .map_err(|list| {
        list.into_iter()
            .map(|(line, message)| problem(line, message))
            .collect::<Vec<_>>()
    })?;
    if let Some(executor) = overlay.executor {
        base.executor = Some(executor);
        base.executor_file = Some(overlay_file.to_path_buf());
    }
    Ok(())
}

/// Applies a parsed overlay; problems are (overlay line, message).
pub fn apply(
    overlay: &RawOverlay,
    overlay_dir: &Path,
    base: &mut RawPipeline,
    base_file: &Path,
    registry: &Registry,
    path_exists: &dyn Fn(&Path) -> bool,
) -> Result<(), Vec<(Option<u64>, String)>> {
    let mut problems = Vec::new();
    let base_name = base_file
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    if overlay.overlays.value != base_name {
        problems.push((
            Some(overlay.overlays.referenced.line()),
            format!(
                "this overlay is for `{}`, not `{}` (pass that file with -f)",
                overlay.overlays.value,
                base_file.display()
            ),
        ));
    }
    if let Some(name) = &overlay.name {
        base.name = name.clone();
    }
    if let Some(cache_dir) = &overlay.cache_dir {
        let mut moved = cache_dir.clone();
        moved.value = rebase(overlay_dir, &cache_dir.value);
        base.cache_dir = Some(moved);
    }
    for (stage_name, stage_overlay) in &overlay.stages {
        let line = Some(stage_overlay.referenced.line());
        let Some(stage) = base
            .stages
            .iter_mut()
            .find(|stage| &stage.name.value == stage_name)
        else {
            problems.push((
                line,
                format!(
                    "there is no stage `{stage_name}` in {base_name}{}; an overlay cannot add \
                     stages",
                    did_you_mean(
                        stage_name,
                        base.stages.iter().map(|s| s.name.value.as_str())
                    )
                ),
            ));
            continue;
        };
        let Some(kind) = registry.get(&stage.kind.value) else {
            continue; // resolve reports the unknown kind
        };
        let param_specs = kind.params();
        for (param, value) in &stage_overlay.value.params {
            let line = Some(value.referenced.line());
            if stage.matrix.contains_key(param) {
                problems.push((
                    line,
                    format!(
                        "stage `{stage_name}`: `{param}` is swept by its matrix, which is part \
                         of the graph; an overlay cannot change it"
                    ),
                ));
                continue;
            }
            let Some(spec) = param_specs.iter().find(|spec| spec.name == param) else {
                problems.push((
                    line,
                    format!(
                        "stage `{stage_name}`: kind `{}` has no param `{param}`{}; its params: {}",
                        kind.name(),
                        did_you_mean(param, param_specs.iter().map(|spec| spec.name)),
                        param_specs
                            .iter()
                            .map(|spec| spec.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
                continue;
            };
            if let Err(message) = spec.check(&value.value) {
                problems.push((
                    line,
                    format!("stage `{stage_name}`, param `{param}`: {message}"),
                ));
                continue;
            }
            stage.params.insert(param.clone(), value.clone());
        }
        let input_specs = kind.inputs();
        for (input, path) in &stage_overlay.value.inputs {
            let line = Some(path.referenced.line());
            match input_specs.iter().find(|spec| spec.name == input) {
                Some(spec) if spec.kind == InputKind::Path => {
                    let rebased = rebase(overlay_dir, &path.value);
                    // Checked here, so that a missing path is reported at the overlay's line
                    // (resolve would name the base file).
                    if !path_exists(Path::new(&rebased)) {
                        problems.push((
                            line,
                            format!(
                                "stage `{stage_name}`, input `{input}`: path `{rebased}` does \
                                 not exist; write the data there or point the overlay at it"
                            ),
                        ));
                        continue;
                    }
                    let spanned =
                        Spanned::new(RawInput::One(rebased), path.referenced, path.defined);
                    stage.inputs.insert(input.clone(), spanned);
                }
                Some(_) => problems.push((
                    line,
                    format!(
                        "stage `{stage_name}`, input `{input}` takes another stage's output: \
                         that is an edge of the graph, which an overlay cannot change (only \
                         dataset paths)"
                    ),
                )),
                None => problems.push((
                    line,
                    format!(
                        "stage `{stage_name}`: kind `{}` has no input `{input}`{}; its inputs: {}",
                        kind.name(),
                        did_you_mean(input, input_specs.iter().map(|spec| spec.name)),
                        input_specs
                            .iter()
                            .map(|spec| spec.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// A path written in the overlay, made absolute against the overlay's folder (so that it
/// means the same when the base file resolves it against its own folder).
fn rebase(overlay_dir: &Path, text: &str) -> String {
    let path = PathBuf::from(text);
    if path.is_absolute() {
        text.to_owned()
    } else {
        // Joined as `resolve` joins the base file's paths: `..` is left to the file system,
        // so both mean the same through a symlinked folder.
        let joined = overlay_dir.join(path);
        std::path::absolute(&joined)
            .unwrap_or(joined)
            .display()
            .to_string()
    }
}
