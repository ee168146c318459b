//! The artifacts crate's error type, grouped by whose fault it is.

use std::path::PathBuf;

/// Errors raised while reading, writing or hashing artifacts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file system refused an operation on `path`.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A Parquet file could not be read or written.
    #[error("{path}: parquet: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// An Arrow array could not be built (a bug in the writer, or mismatched columns).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// The file exists but does not hold the artifact kind the reader expects: the artifact
    /// contract between two stages is broken.
    #[error("{path}: {message}")]
    Contract { path: PathBuf, message: String },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn contract(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Contract {
            path: path.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
