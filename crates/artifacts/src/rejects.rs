//! The `rejects` artifact: input files a stage could not use, and why (nothing is dropped
//! silently). Columns (schema `rejects` v1): `image_id` int64, `source` utf8, `reason` utf8.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};

use crate::parquet_io::{SchemaId, write_table};
use crate::{Provenance, Result};

pub const REJECTS: SchemaId = SchemaId {
    name: "rejects",
    version: 1,
};

/// One rejected input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    pub image_id: i64,
    pub source: String,
    pub reason: String,
}

pub fn write_rejects(path: &Path, provenance: &Provenance, rejects: &[Reject]) -> Result<u64> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("image_id", DataType::Int64, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from_iter_values(
                rejects.iter().map(|r| r.image_id),
            )),
            Arc::new(StringArray::from_iter_values(
                rejects.iter().map(|r| &r.source),
            )),
            Arc::new(StringArray::from_iter_values(
                rejects.iter().map(|r| &r.reason),
            )),
        ],
    )?;
    write_table(path, schema, REJECTS, provenance, &[batch])
}
