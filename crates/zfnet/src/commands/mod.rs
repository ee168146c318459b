//! One module per subcommand; `dispatch` validates the raw CLI into orchestrator calls.

mod export;
mod gc;
mod run;
mod show;
mod status;
mod verify;

use show::fresh_artifact;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use orchestrator::resolve::Override;
use orchestrator::{Dag, Error, load_pipeline};

use crate::cli::{Cli, Command, DagFormatArg, ExecutorArg};
use crate::kinds::registry;
use orchestrator::execute::{Executor, SubmittedWork};
use orchestrator::slurm::{ExecCommand, ExecutorKind};

/// Runs the command; returns the process exit code.
pub fn dispatch(cli: Cli) -> Result<u8> {
    let registry = registry();
    if let Command::Kinds { kind } = &cli.command {
        return describe_kinds(&registry, kind.as_deref());
    }
    let overrides: Vec<Override> = cli
        .set
        .iter()
        .map(|text| Override::parse(text))
        .collect::<Result<_, String>>()
        .map_err(Error::Usage)?;
    let cli_globals = Globals {
        pipeline: cli.pipeline.clone(),
        overlays: cli.overlay.clone(),
        sets: cli.set.clone(),
    };
    let dag = load_pipeline(
        &cli.pipeline,
        &cli.overlay,
        &registry,
        &overrides,
        cli.cache_dir.clone(),
    )?;
    match cli.command {
        Command::Run {
            stages,
            force,
            dry_run,
            jobs,
            executor,
        } => {
            let executor = match executor {
                Some(ExecutorArg::Local) => ExecutorKind::Local,
                Some(ExecutorArg::Slurm) => ExecutorKind::Slurm,
                None => dag.executor.default,
            };
            let executor = match executor {
                ExecutorKind::Local => Executor::Local,
                ExecutorKind::Slurm => Executor::Slurm(exec_command(&cli_globals, &dag)?),
            };
            run::run(&dag, stages, force, dry_run, jobs, executor)
        }
        Command::ExecStage {
            stage,
            key,
            force,
            shard_count,
            shard_index,
            merge_shards,
        } => {
            let work = match (shard_count, shard_index, merge_shards) {
                (Some(count), Some(index), None) if index < count => SubmittedWork::Shard {
                    shard: stage_api::Shard { index, count },
                    array_job: std::env::var("SLURM_ARRAY_JOB_ID")
                        .ok()
                        .and_then(|id| id.parse().ok())
                        .ok_or_else(|| {
                            Error::Usage(
                                "--shard-index runs inside a Slurm array task \
                                 (SLURM_ARRAY_JOB_ID is not set)"
                                    .to_owned(),
                            )
                        })?,
                },
                (Some(count), None, Some(array_job)) => SubmittedWork::Merge { count, array_job },
                (None, None, None) => SubmittedWork::Whole,
                _ => {
                    return Err(Error::Usage(
                        "give --shard-count with --shard-index (below it) or --merge-shards"
                            .to_owned(),
                    )
                    .into());
                }
            };
            run::exec_stage(&dag, &stage, &key, force, work)
        }
        Command::Status { stages, json } => status::status(&dag, &stages, json),
        Command::Dag { format } => {
            let format = match format {
                DagFormatArg::Text => orchestrator::render::DagFormat::Text,
                DagFormatArg::Mermaid => orchestrator::render::DagFormat::Mermaid,
                DagFormatArg::Dot => orchestrator::render::DagFormat::Dot,
            };
            print!("{}", orchestrator::render::render(&dag, format));
            Ok(0)
        }
        Command::Show {
            artifact,
            limit,
            format,
        } => show::show(&dag, &artifact, limit, format),
        Command::Export {
            artifact,
            destination,
            force,
        } => export::export(&dag, &artifact, &destination, force),
        Command::Gc { dry_run } => gc::gc(&dag, dry_run),
        Command::Verify => verify::verify(&dag),
        Command::Kinds { .. } => unreachable!("handled above"),
    }
}

/// The global arguments that select the pipeline, as given.
struct Globals {
    pipeline: PathBuf,
    overlays: Vec<PathBuf>,
    sets: Vec<String>,
}

/// How a Slurm job starts this program on the same pipeline: absolute paths (the job may
/// start elsewhere), the same overlays and `--set`s, and the resolved cache folder.
fn exec_command(globals: &Globals, dag: &Dag) -> Result<ExecCommand> {
    let absolute = |path: &Path| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let program = job_program(
        std::env::current_exe().context("finding this program's path for Slurm jobs")?,
    )?;
    let mut global_args: Vec<OsString> = vec!["-f".into(), absolute(&globals.pipeline).into()];
    for overlay in &globals.overlays {
        global_args.push("--overlay".into());
        global_args.push(absolute(overlay).into());
    }
    for set in &globals.sets {
        global_args.push("--set".into());
        global_args.push(set.into());
    }
    global_args.push("--cache-dir".into());
    global_args.push(dag.cache_dir.clone().into());
    Ok(ExecCommand {
        program,
        global_args,
        working_dir: std::env::current_dir().context("reading the working folder")?,
    })
}

/// The program a Slurm job starts: this one's path. Linux names a program whose file was
/// replaced since it started (a rebuild) `<path> (deleted)`; the jobs then run the new build at
/// `<path>`, which is told (every job re-derives its stage's key and refuses to run on another),
/// or, with no file left there, nothing can run.
fn job_program(exe: PathBuf) -> Result<PathBuf> {
    let Some(text) = exe.to_str() else {
        return Ok(exe);
    };
    let Some(path) = text.strip_suffix(" (deleted)") else {
        return Ok(exe);
    };
    let path = PathBuf::from(path);
    if !path.is_file() {
        anyhow::bail!(
            "this program's file {} was deleted since it started, so Slurm jobs cannot start \
             it: rerun with the program as it is now",
            path.display()
        );
    }
    eprintln!(
        "warning: {} was replaced since this run started (a rebuild?); Slurm jobs run the new \
         file, and refuse a stage whose cache key it derives differently",
        path.display()
    );
    Ok(path)
}

fn open_cache(dag: &Dag) -> Result<orchestrator::cache::Cache> {
    orchestrator::cache::Cache::open(&dag.cache_dir)
        .with_context(|| format!("opening the cache at {}", dag.cache_dir.display()))
}

fn describe_kinds(registry: &orchestrator::Registry, only: Option<&str>) -> Result<u8> {
    if only.is_none() {
        println!("{}\n", stage_api::PEAK_MEMORY_LEGEND);
    }
    let mut found = false;
    for kind in registry.kinds() {
        if only.is_some_and(|name| name != kind.name()) {
            continue;
        }
        found = true;
        println!("{} (v{}): {}", kind.name(), kind.version(), kind.summary());
        println!("  peak memory: {}", kind.peak_memory());
        for input in kind.inputs() {
            let required = if input.required { "" } else { ", optional" };
            println!(
                "  input  {} ({:?}{required}): {}",
                input.name, input.kind, input.doc
            );
        }
        for output in kind.outputs() {
            println!(
                "  output {} ({}): {}",
                output.name, output.file_name, output.doc
            );
        }
        for param in kind.params() {
            println!(
                "  param  {} = {} ({}): {}",
                param.name, param.default, param.ty, param.doc
            );
        }
        println!();
    }
    if let Some(name) = only
        && !found
    {
        return Err(Error::Usage(format!(
            "no stage kind `{name}`; known kinds: {}",
            registry.names().collect::<Vec<_>>().join(", ")
        ))
        .into());
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rebuilt_program_is_started_from_its_path_and_a_deleted_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("zfnet");
        std::fs::write(&program, "new build").unwrap();
        let deleted = PathBuf::from(format!("{} (deleted)", program.display()));
        assert_eq!(job_program(deleted.clone()).unwrap(), program);
        assert_eq!(job_program(program.clone()).unwrap(), program);
        std::fs::remove_file(&program).unwrap();
        let error = job_program(deleted).unwrap_err().to_string();
        assert!(error.contains("was deleted since it started"), "{error}");
    }
}
