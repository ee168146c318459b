//! The command-line contract (what users and tests script against), with clap derive.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "zfnet",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("ZFNET_BUILD_COMMIT"), ")"),
    about = "Reproduce Zeiler & Fergus (2013), Visualizing and Understanding Convolutional \
             Networks, as a cached pipeline of stages."
)]
pub struct Cli {
    /// The pipeline file.
    #[arg(
        short = 'f',
        long = "pipeline",
        global = true,
        default_value = "pipeline.yaml"
    )]
    pub pipeline: PathBuf,
    /// Apply an overlay file to the pipeline (repeatable, in order): other dataset paths and
    /// params for the same graph, e.g. `-f pipelines/paper.yaml --overlay
    /// pipelines/paper-mini.yaml`.
    #[arg(long, global = true, value_name = "FILE")]
    pub overlay: Vec<PathBuf>,
    /// Override a param: `stage.param=value` (repeatable; a swept stage's base name sets it
    /// for every instance).
    #[arg(long = "set", global = true, value_name = "STAGE.PARAM=VALUE")]
    pub set: Vec<String>,
    /// Cache folder (default: the pipeline's `cache_dir`, else `.zfnet/cache` beside it).
    #[arg(long, global = true, env = "ZFNET_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring stages up to date (default: all), running stale upstream stages first.
    Run {
        /// Stages to bring up to date, with everything they depend on.
        stages: Vec<String>,
        /// Re-execute the named stages (all, when none is named) even if cached.
        #[arg(long)]
        force: bool,
        /// Print what would run and why; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Stages to run at the same time (with `--executor slurm`: jobs in flight).
        #[arg(short, long, default_value_t = 1)]
        jobs: usize,
        /// Where stages run: `local` (threads of this process) or `slurm` (one `sbatch` job
        /// per stage run, on nodes that share this folder and the cache; README "On a
        /// cluster"). Default: the pipeline's `executor.default`, else local.
        #[arg(long, value_enum)]
        executor: Option<ExecutorArg>,
    },
    /// Every stage with its state: fresh, stale (and why) or missing.
    Status {
        /// Only these stages (and what they depend on).
        stages: Vec<String>,
        /// Print a JSON array of {stage, state, reason}.
        #[arg(long)]
        json: bool,
    },
    /// Print the resolved DAG.
    Dag {
        #[arg(long, value_enum, default_value_t = DagFormatArg::Text)]
        format: DagFormatArg,
    },
    /// Print an artifact (`stage.output`) and its path.
    Show {
        /// `stage.output`, e.g. `fashion_train.images`.
        artifact: String,
        /// Rows to print at most.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
        format: ShowFormat,
    },
    /// Copy an artifact (`stage.output`) out of the cache to a new folder or file (e.g. the
    /// report into `reports/<pipeline>`). Never writes to `/`, the project, working or home
    /// folder (or above them) or into the cache.
    Export {
        /// `stage.output`, e.g. `report.report`.
        artifact: String,
        /// Where to put it: a path that does not exist yet or is an empty folder (or, with
        /// `--force`, anything that may be replaced).
        destination: PathBuf,
        /// Replace an existing destination (once the new copy is complete and checked).
        #[arg(long)]
        force: bool,
    },
    /// Remove cache entries no stage of this pipeline (or another pipeline's recorded state)
    /// refers to.
    Gc {
        /// Say what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Re-read every cached output (ignoring the stat memo) and evict each entry whose
    /// contents no longer match its manifest; the next `run` rebuilds them.
    Verify,
    /// Run one stage and commit its cache entry: what a Slurm job of `run --executor slurm`
    /// does on its node. Not for direct use.
    #[command(hide = true)]
    ExecStage {
        /// The stage instance.
        #[arg(long)]
        stage: String,
        /// The cache key the submitting run computed; the inputs must still give it.
        #[arg(long)]
        key: String,
        /// Run even if the entry exists (the run was `--force`d).
        #[arg(long)]
        force: bool,
        /// The stage is split into this many shards (a Slurm array).
        #[arg(long, requires = "shard_work")]
        shard_count: Option<usize>,
        /// Run this shard (0-based) only: partial outputs, not committed.
        #[arg(long, group = "shard_work", requires = "shard_count")]
        shard_index: Option<usize>,
        /// Merge the shards written by this array job, and commit.
        #[arg(long, group = "shard_work", requires = "shard_count")]
        merge_shards: Option<u64>,
    },
    /// List the stage kinds with their params, inputs and outputs.
    Kinds {
        /// Only this kind.
        kind: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExecutorArg {
    Local,
    Slurm,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DagFormatArg {
    Text,
    Mermaid,
    Dot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    Table,
    Csv,
    Json,
}
