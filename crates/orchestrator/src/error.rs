//! The orchestrator's errors, grouped by whose fault it is.

use std::fmt;
use std::path::PathBuf;

/// One problem in a pipeline file, located by file and line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    pub file: PathBuf,
    /// 1-based line; `None` for problems that have no single place (a `--set` flag).
    pub line: Option<u64>,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pipeline file (or a `--set` override) is wrong; every problem found is listed.
    #[error("{} problem(s) in the pipeline:\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Config(Vec<ConfigProblem>),
    /// The command line names something the pipeline does not have.
    #[error("{0}")]
    Usage(String),
    /// One or more stages failed; the others that could run did.
    #[error("{} stage(s) failed: {}", .0.len(), .0.iter().map(|(s, e)| format!("`{s}`: {e}")).collect::<Vec<_>>().join("; "))]
    StagesFailed(Vec<(String, String)>),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Artifact(#[from] artifacts::Error),
    /// A cache entry or state file is unreadable in a way that is not simply corruption of an
    /// output (which is repaired by rerunning).
    #[error("cache {path}: {message}")]
    Cache { path: PathBuf, message: String },
    /// The cache folder exists, is not empty, and is not a zfnet cache.
    #[error(
        "{path} is not a zfnet cache: {found}. zfnet deletes and replaces files inside its \
         cache folder, so it will not use a folder it did not create. Point `--cache-dir`, \
         ZFNET_CACHE_DIR or the pipeline's `cache_dir:` at a new or empty folder (zfnet marks \
         it as its own on first use)"
    )]
    NotACache { path: PathBuf, found: String },
    /// Another process took over the cache lock this one held (after its heartbeat in `path`
    /// stalled): nothing more is committed or submitted.
    #[error(
        "{path} was taken over by another zfnet process while this one held the cache lock \
         (was this process suspended, or its file system unreachable, for longer than the \
         lock's 90 s?): stopping without committing. Rerun once the other run is over"
    )]
    LockLost { path: PathBuf },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// The process exit code for this error: 2 for bad usage/config, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::Usage(_) | Error::NotACache { .. } => 2,
            _ => 1,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
