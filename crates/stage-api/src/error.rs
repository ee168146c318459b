//! Errors a stage run can end with, grouped by whose fault it is.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The params or inputs make no sense together; the user must change pipeline.yaml.
    #[error("bad configuration: {0}")]
    Config(String),
    /// An input's content is unusable (wrong format, empty dataset, ...).
    #[error("bad input {path}: {message}")]
    Input { path: PathBuf, message: String },
    /// The file system refused an operation.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Artifact(#[from] artifacts::Error),
    /// Numerical failure (NaN loss, divergence): the message says what to change.
    #[error("{0}")]
    Numerical(String),
    /// Anything else a stage library reports.
    #[error(transparent)]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn input(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Input {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn other(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Other(Box::new(error))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
