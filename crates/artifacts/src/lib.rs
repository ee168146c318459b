//! Artifacts: the only contract between zfnet stages.
//!
//! This crate owns every artifact schema (one schema function and one writer per kind), the
//! Parquet reading and writing with provenance in the key-value metadata, and content hashing of
//! files and folders (with a stat-keyed memo so that unchanged files are not re-read).
//! It does not know about pipelines, stages or the cache layout: that is the orchestrator's job.

mod error;
pub mod features;
pub mod hash;
pub mod image_files;
pub mod images;
pub mod multilabels;
pub mod parquet_io;
pub mod provenance;
pub mod rejects;
pub mod table;
pub mod tensors;

pub use error::{Error, Result};
pub use hash::{ContentHash, HashMemo};
pub use provenance::Provenance;
