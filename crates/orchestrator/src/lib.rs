//! The orchestrator: `pipeline.yaml` -> typed DAG -> cache decisions -> execution.
//!
//! Only this crate reads YAML. Parsing ([`pipeline`]) and resolution ([`resolve`]) are pure
//! functions over data that report every problem at once with file:line; [`plan`] decides what
//! is fresh and why something is stale; [`cache`] is the thin, atomic part that touches the
//! file system; [`execute`] schedules runs over `--jobs` workers with an exclusive GPU token.

pub mod cache;
mod error;
pub mod execute;
pub mod overlay;
pub mod pipeline;
pub mod plan;
pub mod registry;
pub mod render;
pub mod resolve;
pub mod slurm;
pub mod suggest;

pub use error::{ConfigProblem, Error, Result};
pub use registry::Registry;
pub use resolve::{Dag, InputRef, ResolvedStage};

/// The zfnet version recorded in manifests and artifacts.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

use std::path::{Path, PathBuf};

/// Reads, parses and resolves a pipeline file, with its overlays (see [`overlay`]) applied in
/// order. Every problem is reported at once.
pub fn load_pipeline(
    file: &Path,
    overlays: &[PathBuf],
    registry: &Registry,
    overrides: &[resolve::Override],
    cache_dir_override: Option<PathBuf>,
) -> Result<Dag> {
    // Absolute, so that dataset paths resolve the same from any working directory.
    let file = &std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf());
    let text = std::fs::read_to_string(file).map_err(|source| {
        Error::Config(vec![ConfigProblem {
            file: file.to_path_buf(),
            line: None,
            message: format!("cannot read the pipeline file: {source} (pass another with -f)"),
        }])
    })?;
    let mut raw = pipeline::parse(&text, file).map_err(|problem| Error::Config(vec![problem]))?;
    let mut problems = Vec::new();
    for overlay_file in overlays {
        let overlay_file =
            std::path::absolute(overlay_file).unwrap_or_else(|_| overlay_file.clone());
        if let Err(found) =
            overlay::apply_file(&overlay_file, &mut raw, file, registry, &|path: &Path| {
                path.exists()
            })
        {
            problems.extend(found);
        }
    }
    if !problems.is_empty() {
        return Err(Error::Config(problems));
    }
    let config = resolve::ResolveConfig {
        registry,
        file,
        overrides,
        cache_dir_override,
        path_exists: &|path: &Path| path.exists(),
    };
    resolve::resolve(&raw, &config).map_err(Error::Config)
}
