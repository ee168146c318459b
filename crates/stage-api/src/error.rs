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

/// The payload of a panic raised when the GPU, its driver, cuDNN or cuBLAS refuses an
/// operation (the `Backend` ops return no `Result`, so the CUDA backend panics with this
/// instead). The orchestrator names it as a GPU failure, not a bug in zfnet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuFailure {
    /// What was asked of the GPU, and what it answered (e.g. `cuMemAlloc failed:
    /// CUDA_ERROR_OUT_OF_MEMORY`).
    pub message: String,
}

impl GpuFailure {
    /// Whether the GPU ran out of memory (the one GPU failure with an obvious remedy).
    pub fn is_out_of_memory(&self) -> bool {
        self.message.contains("OUT_OF_MEMORY") || self.message.contains("ALLOC_FAILED")
    }

    /// Unwinds with this failure as the panic payload.
    pub fn raise(message: String) -> ! {
        std::panic::panic_any(GpuFailure { message })
    }
}

impl std::fmt::Display for GpuFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_out_of_memory() {
            write!(
                f,
                "out of GPU memory: {}; lower the stage's batch size, free the GPU (nvidia-smi \
                 lists what uses it), or run the stage with `device: cpu`",
                self.message
            )
        } else {
            write!(
                f,
                "GPU error: {}; check the driver and the GPU with nvidia-smi, or run the stage \
                 with `device: cpu`",
                self.message
            )
        }
    }
}
