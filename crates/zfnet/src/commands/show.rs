//! `zfnet show STAGE.OUTPUT`: prints an artifact and where it lives.

use std::path::Path;

use anyhow::{Context, Result};
use orchestrator::cache::{Cache, LockMode, OutputRecord};
use orchestrator::plan::{State, assess};
use orchestrator::{Dag, Error};

use super::open_cache;
use crate::cli::ShowFormat;
use crate::show_table;

pub fn show(dag: &Dag, artifact: &str, limit: usize, format: ShowFormat) -> Result<u8> {
    let cache = open_cache(dag)?;
    // Shared: a `run --force` cannot replace the entry while it is printed.
    let _lock = cache.lock(LockMode::Shared, "show")?;
    let (path, record) = fresh_artifact(dag, &cache, artifact)?;
    eprintln!("# {artifact}: {} ({} bytes)", path.display(), record.bytes);
    print_artifact(&path, limit, format).with_context(|| format!("printing {}", path.display()))?;
    Ok(0)
}

/// The path and manifest record of a fresh artifact, or a usage error saying what to run
/// first.
pub fn fresh_artifact(
    dag: &Dag,
    cache: &Cache,
    artifact: &str,
) -> Result<(std::path::PathBuf, OutputRecord)> {
    let (stage_name, output) = artifact
        .rsplit_once('.')
        .ok_or_else(|| Error::Usage(format!("`{artifact}`: name an artifact as stage.output")))?;
    let stage = dag.stage(stage_name).ok_or_else(|| {
        Error::Usage(format!(
            "no stage `{stage_name}` in the pipeline{}",
            orchestrator::suggest::did_you_mean(
                stage_name,
                dag.stages.iter().map(|stage| stage.name.as_str())
            )
        ))
    })?;
    if !stage.kind.outputs().iter().any(|spec| spec.name == output) {
        return Err(Error::Usage(format!(
            "stage `{stage_name}` has no output `{output}`{}; its outputs: {}",
            orchestrator::suggest::did_you_mean(
                output,
                stage.kind.outputs().iter().map(|spec| spec.name)
            ),
            stage
                .kind
                .outputs()
                .iter()
                .map(|spec| spec.name)
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into());
    }
    let stages = dag
        .closure(&[stage_name.to_owned()])
        .map_err(Error::Usage)?;
    let statuses = assess(dag, cache, &stages);
    let status = statuses
        .last()
        .expect("the closure ends with the stage itself");
    if status.state != State::Fresh {
        return Err(Error::Usage(format!(
            "`{stage_name}` is {} ({}); run `zfnet run {stage_name}` first",
            status.state, status.reason
        ))
        .into());
    }
    let key = status.key.as_deref().expect("fresh stages have a key");
    let manifest = cache
        .read_manifest(key)
        .map_err(|problem| anyhow::anyhow!("cache entry {key}: {problem:?}"))?;
    let record = manifest.outputs[output].clone();
    Ok((cache.output_path(key, &record), record))
}

fn print_artifact(path: &Path, limit: usize, format: ShowFormat) -> Result<()> {
    let is_parquet = path.extension().is_some_and(|ext| ext == "parquet")
        || (path.is_dir() && artifacts::parquet_io::part_files(path).is_ok());
    if is_parquet {
        return show_table::print(path, limit, format);
    }
    if path.is_dir() {
        for file in artifacts::hash::list_files(path)? {
            println!("{}", file.display());
        }
    } else {
        println!("(binary file; open it with the tool for its format)");
    }
    Ok(())
}
