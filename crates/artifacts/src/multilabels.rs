//! The `multilabels` artifact: several labels per image (PASCAL VOC, Table 6).
//! Columns (schema `multilabels` v1): `image_id` int64, `labels` list<int32> (classes present),
//! `difficult` list<int32> (classes marked difficult, ignored by the AP metric).

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{Int32Builder, ListBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};

use crate::parquet_io::{SchemaId, expect_schema, read_all, write_table};
use crate::{Provenance, Result};

/// The 20 VOC classes in the devkit's order: label k of a VOC `multilabels` artifact.
pub const VOC_CLASSES: [&str; 20] = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
];

pub const MULTILABELS: SchemaId = SchemaId {
    name: "multilabels",
    version: 1,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultiLabel {
    pub image_id: i64,
    pub labels: Vec<i32>,
    pub difficult: Vec<i32>,
}

pub fn write_multilabels(path: &Path, provenance: &Provenance, rows: &[MultiLabel]) -> Result<u64> {
    let item = || Field::new("item", DataType::Int32, true);
    let schema = Arc::new(Schema::new(vec![
        Field::new("image_id", DataType::Int64, false),
        Field::new("labels", DataType::List(Arc::new(item())), false),
        Field::new("difficult", DataType::List(Arc::new(item())), false),
    ]));
    let mut labels = ListBuilder::new(Int32Builder::new());
    let mut difficult = ListBuilder::new(Int32Builder::new());
    for row in rows {
        labels.values().append_slice(&row.labels);
        labels.append(true);
        difficult.values().append_slice(&row.difficult);
        difficult.append(true);
    }
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.image_id),
            )),
            Arc::new(labels.finish()),
            Arc::new(difficult.finish()),
        ],
    )?;
    write_table(path, schema, MULTILABELS, provenance, &[batch])
}

pub fn read_multilabels(path: &Path) -> Result<Vec<MultiLabel>> {
    expect_schema(path, MULTILABELS)?;
    let mut rows = Vec::new();
    for batch in read_all(path)? {
        let ids = batch.column(0).as_primitive::<Int64Type>();
        let labels = batch.column(1).as_list::<i32>();
        let difficult = batch.column(2).as_list::<i32>();
        for row in 0..batch.num_rows() {
            let list = |array: &arrow_array::ListArray| {
                array
                    .value(row)
                    .as_primitive::<Int32Type>()
                    .values()
                    .to_vec()
            };
            rows.push(MultiLabel {
                image_id: ids.value(row),
                labels: list(labels),
                difficult: list(difficult),
            });
        }
    }
    Ok(rows)
}
