//! The `rejects` artifact: input files a stage could not use, and why (nothing is dropped
//! silently). Columns (schema `rejects` v1): `image_id` int64, `source` utf8, `reason` utf8.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};

use crate::Error;
use crate::parquet_io::{SchemaId, expect_schema, read_all, write_table};
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

/// Reads a rejects artifact back, in its order.
pub fn read_rejects(path: &Path) -> Result<Vec<Reject>> {
    expect_schema(path, REJECTS)?;
    let mut rejects = Vec::new();
    for batch in read_all(path)? {
        let mistyped = || Error::contract(path, "rejects columns are mistyped");
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(mistyped)?;
        let sources = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(mistyped)?;
        let reasons = batch
            .column(2)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(mistyped)?;
        for row in 0..batch.num_rows() {
            rejects.push(Reject {
                image_id: ids.value(row),
                source: sources.value(row).to_owned(),
                reason: reasons.value(row).to_owned(),
            });
        }
    }
    Ok(rejects)
}
