//! `zfnet show STAGE.OUTPUT`: prints an artifact and where it lives.

use std::path::Path;

use anyhow::{Context, Result};
use orchestrator::plan::{State, assess};
use orchestrator::{Dag, Error};

use super::open_cache;
use crate::cli::ShowFormat;
use crate::show_table;

pub fn show(dag: &Dag, artifact: &str, limit: usize, format: ShowFormat) -> Result<u8> {
    let (path, bytes) = fresh_artifact(dag, artifact)?;
    eprintln!("# {artifact}: {} ({bytes} bytes)", path.display());
    print_artifact(&path, limit, format).with_context(|| format!("printing {}", path.display()))?;
    Ok(0)
}

/// `zfnet export`: copies a fresh artifact to `destination`, replacing what is there only
/// once the copy is complete.
pub fn export(dag: &Dag, artifact: &str, destination: &Path) -> Result<u8> {
    let (path, _) = fresh_artifact(dag, artifact)?;
    let partial = destination.with_extension(format!("partial-{}", std::process::id()));
    copy_tree(&path, &partial)
        .with_context(|| format!("copying {} to {}", path.display(), partial.display()))?;
    if destination.is_dir() {
        std::fs::remove_dir_all(destination)?;
    } else if destination.exists() {
        std::fs::remove_file(destination)?;
    }
    std::fs::rename(&partial, destination)
        .with_context(|| format!("moving {} to {}", partial.display(), destination.display()))?;
    println!("exported {artifact} to {}", destination.display());
    Ok(0)
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(from, to).map(|_| ())
    }
}

/// The path and size of a fresh artifact, or a usage error saying what to run first.
fn fresh_artifact(dag: &Dag, artifact: &str) -> Result<(std::path::PathBuf, u64)> {
    let (stage_name, output) = artifact
        .rsplit_once('.')
        .ok_or_else(|| Error::Usage(format!("`{artifact}`: name an artifact as stage.output")))?;
    let stage = dag
        .stage(stage_name)
        .ok_or_else(|| Error::Usage(format!("no stage `{stage_name}` in the pipeline")))?;
    if !stage.kind.outputs().iter().any(|spec| spec.name == output) {
        return Err(Error::Usage(format!(
            "stage `{stage_name}` has no output `{output}`; its outputs: {}",
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
    let cache = open_cache(dag)?;
    let stages = dag
        .closure(&[stage_name.to_owned()])
        .map_err(Error::Usage)?;
    let statuses = assess(dag, &cache, &stages);
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
    let record = &manifest.outputs[output];
    Ok((cache.output_path(key, record), record.bytes))
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
