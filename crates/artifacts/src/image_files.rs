//! The `image_files` artifact: a labelled listing of image files on disk, made by the dataset
//! readers (ImageNet, Caltech, VOC, folders) and decoded by `preprocess`.
//!
//! Columns (schema `image_files` v1): `image_id` int64 (position in the listing, stable for the
//! same folder), `path` utf8 (absolute), `label` int32 (class index; `-1` when unlabelled),
//! `class_name` utf8.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::parquet_io::{SchemaId, expect_schema, read_all, write_table};
use crate::{Error, Provenance, Result};

pub const IMAGE_FILES: SchemaId = SchemaId {
    name: "image_files",
    version: 1,
};

/// One listed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFile {
    pub image_id: i64,
    pub path: String,
    pub label: i32,
    pub class_name: String,
}

pub fn image_files_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("image_id", DataType::Int64, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("label", DataType::Int32, false),
        Field::new("class_name", DataType::Utf8, false),
    ]))
}

/// Writes a listing (a listing of 1.3M ImageNet files is ~100 MB in memory: small enough to
/// build whole).
pub fn write_image_files(path: &Path, provenance: &Provenance, files: &[ImageFile]) -> Result<u64> {
    let schema = image_files_schema();
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from_iter_values(
                files.iter().map(|f| f.image_id),
            )),
            Arc::new(StringArray::from_iter_values(files.iter().map(|f| &f.path))),
            Arc::new(Int32Array::from_iter_values(files.iter().map(|f| f.label))),
            Arc::new(StringArray::from_iter_values(
                files.iter().map(|f| &f.class_name),
            )),
        ],
    )?;
    write_table(path, schema, IMAGE_FILES, provenance, &[batch])
}

/// Reads a whole listing.
pub fn read_image_files(path: &Path) -> Result<Vec<ImageFile>> {
    expect_schema(path, IMAGE_FILES)?;
    let mut files = Vec::new();
    for batch in read_all(path)? {
        let mistyped = || Error::contract(path, "image_files columns are mistyped");
        let ids = batch
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(mistyped)?;
        let paths = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(mistyped)?;
        let labels = batch
            .column(2)
            .as_any()
            .downcast_ref::<Int32Array>()
            .ok_or_else(mistyped)?;
        let names = batch
            .column(3)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(mistyped)?;
        for row in 0..batch.num_rows() {
            files.push(ImageFile {
                image_id: ids.value(row),
                path: paths.value(row).to_owned(),
                label: labels.value(row),
                class_name: names.value(row).to_owned(),
            });
        }
        debug_assert_eq!(ids.len(), batch.num_rows());
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("files.parquet");
        let files = vec![
            ImageFile {
                image_id: 0,
                path: "/d/a/1.jpg".into(),
                label: 0,
                class_name: "a".into(),
            },
            ImageFile {
                image_id: 1,
                path: "/d/b/2.jpg".into(),
                label: 1,
                class_name: "b".into(),
            },
        ];
        write_image_files(&path, &Provenance::ad_hoc("t"), &files).unwrap();
        assert_eq!(read_image_files(&path).unwrap(), files);
    }
}
