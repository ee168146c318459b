//! The `features` artifact: one float vector per image (a layer's activations), as
//! `FixedSizeList<float32>` so numpy/pandas see a fixed-width matrix.
//!
//! Columns (schema `features` v1): `image_id` int64, `label` int32, `features`
//! fixed_size_list<float32, dim>. The layer name is in the key-value metadata `zfnet.layer`.

use std::path::Path;
use std::sync::Arc;

use arrow_array::types::Float32Type;
use arrow_array::{Array, FixedSizeListArray, Float32Array, Int32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::parquet_io::{
    RowGroupRef, SchemaId, expect_schema, read_row_group, row_groups, typed_column, write_table,
};
use crate::{Error, Provenance, Result};

pub const FEATURES: SchemaId = SchemaId {
    name: "features",
    version: 1,
};

/// The Arrow schema of a `features` artifact with `dim` values per row.
pub fn features_schema(dim: usize, layer: &str) -> SchemaRef {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let metadata: std::collections::HashMap<String, String> =
        [("zfnet.layer".to_owned(), layer.to_owned())].into();
    Arc::new(
        Schema::new(vec![
            Field::new("image_id", DataType::Int64, false),
            Field::new("label", DataType::Int32, false),
            Field::new("features", DataType::FixedSizeList(item, dim as i32), false),
        ])
        .with_metadata(metadata),
    )
}

/// Writes a feature matrix (`values` is row-major, `image_ids.len()` rows of `dim`).
pub fn write_features(
    path: &Path,
    provenance: &Provenance,
    layer: &str,
    image_ids: &[i64],
    labels: &[i32],
    values: &[f32],
    dim: usize,
) -> Result<u64> {
    assert_eq!(image_ids.len(), labels.len());
    assert_eq!(values.len(), image_ids.len() * dim);
    let schema = features_schema(dim, layer);
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let list = FixedSizeListArray::try_new(
        item,
        dim as i32,
        Arc::new(Float32Array::from(values.to_vec())),
        None,
    )?;
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from(image_ids.to_vec())),
            Arc::new(Int32Array::from(labels.to_vec())),
            Arc::new(list),
        ],
    )?;
    write_table(path, schema, FEATURES, provenance, &[batch])
}

/// A feature matrix read back into memory.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureMatrix {
    pub image_ids: Vec<i64>,
    pub labels: Vec<i32>,
    pub values: Vec<f32>,
    pub dim: usize,
}

/// Reads a whole `features` artifact.
pub fn read_features(path: &Path) -> Result<FeatureMatrix> {
    let rows = FeatureRows::open(path)?;
    let mut values = Vec::with_capacity(rows.image_ids.len() * rows.dim);
    rows.for_each_row(|_| true, |_, row| values.extend_from_slice(row))?;
    Ok(FeatureMatrix {
        image_ids: rows.image_ids,
        labels: rows.labels,
        values,
        dim: rows.dim,
    })
}

/// The feature values of a batch, row-major (`num_rows x dim`).
fn feature_values<'a>(batch: &'a RecordBatch, dim: usize, path: &Path) -> Result<&'a [f32]> {
    let list = typed_column::<FixedSizeListArray>(batch, "features", path)?;
    let values = list
        .values()
        .as_any()
        .downcast_ref::<arrow_array::PrimitiveArray<Float32Type>>()
        .ok_or_else(|| Error::contract(path, "column `features` holds no float32 values"))?;
    let start = list.offset() * dim;
    values
        .values()
        .get(start..start + list.len() * dim)
        .ok_or_else(|| Error::contract(path, "column `features` is shorter than its rows"))
}

/// A `features` artifact opened for reading selected rows: its ids and labels are in memory
/// (12 bytes a row), the feature values stay on disk and are streamed a row group at a time.
/// Reading the rows a fold needs this way holds one row group besides them, where
/// [`read_features`] holds the whole matrix.
pub struct FeatureRows {
    path: std::path::PathBuf,
    groups: Vec<RowGroupRef>,
    pub image_ids: Vec<i64>,
    pub labels: Vec<i32>,
    pub dim: usize,
}

impl FeatureRows {
    pub fn open(path: &Path) -> Result<Self> {
        let header = expect_schema(path, FEATURES)?;
        let dim = match header
            .arrow_schema
            .field_with_name("features")
            .map(|f| f.data_type())
        {
            Ok(DataType::FixedSizeList(_, dim)) if *dim >= 0 => *dim as usize,
            _ => {
                return Err(Error::contract(
                    path,
                    "column `features` missing or mistyped",
                ));
            }
        };
        let groups = row_groups(path)?;
        let mut image_ids = Vec::new();
        let mut labels = Vec::new();
        for group in &groups {
            for batch in read_row_group(group, Some(&["image_id", "label"]))? {
                image_ids.extend(
                    typed_column::<Int64Array>(&batch, "image_id", path)?
                        .values()
                        .iter(),
                );
                labels.extend(
                    typed_column::<Int32Array>(&batch, "label", path)?
                        .values()
                        .iter(),
                );
            }
        }
        Ok(FeatureRows {
            path: path.to_path_buf(),
            groups,
            image_ids,
            labels,
            dim,
        })
    }

    /// The largest row group's feature values, in bytes.
    pub fn group_bytes(&self) -> u64 {
        self.groups.iter().map(|g| g.rows).max().unwrap_or(0) as u64 * self.dim as u64 * 4
    }

    /// What streaming rows holds at once, in bytes: 4 x [`Self::group_bytes`]. Reading one
    /// 4.3 MB group of random values (32,768 a row) grew the peak RSS by 4.2 to 17 MB across
    /// runs (the reader's page buffer, its growing arrow buffer and the array; measured
    /// 2026-12-03 by a throwaway test that streamed a 400-row layer with `for_each_row` under
    /// `/proc/self/clear_refs` resets, not kept).
    pub fn stream_bytes(&self) -> u64 {
        self.group_bytes().saturating_mul(4)
    }

    /// Calls `visit(row, values)` for every row whose index `wanted` accepts, in file order,
    /// reading only the row groups that hold such a row, one at a time (a reader over several
    /// groups was measured to hold 6-8 groups' worth of memory at once; one group's reader
    /// holds about one, and the footer parsed at `open` is reused for each).
    pub fn for_each_row(
        &self,
        wanted: impl Fn(usize) -> bool,
        mut visit: impl FnMut(usize, &[f32]),
    ) -> Result<()> {
        let mut first_row = 0;
        for group in &self.groups {
            let rows = first_row..first_row + group.rows;
            first_row += group.rows;
            if !rows.clone().any(&wanted) {
                continue;
            }
            let mut row = rows.start;
            for batch in read_row_group(group, Some(&["features"]))? {
                let values = feature_values(&batch, self.dim, &self.path)?;
                for chunk in values.chunks_exact(self.dim.max(1)).take(batch.num_rows()) {
                    if wanted(row) {
                        visit(row, chunk);
                    }
                    row += 1;
                }
            }
        }
        Ok(())
    }
}

/// Writes `rows` rows of `dim` pseudo-random features in [0, 1) (a 64-bit LCG seeded with
/// `seed`), ids 0.. and labels cycling over `classes`, 16 rows at a time (so that writing holds
/// little memory itself): a `features` artifact for tests and benchmarks of the stages that
/// read one.
pub fn write_pseudo_random_features(
    path: &Path,
    layer: &str,
    (rows, dim): (usize, usize),
    classes: usize,
    seed: u64,
) -> Result<u64> {
    let mut writer = FeaturesWriter::create(path, &Provenance::ad_hoc("synthetic"), layer, dim)?;
    let mut state = seed;
    for start in (0..rows).step_by(16) {
        let n = 16.min(rows - start);
        let ids: Vec<i64> = (start..start + n).map(|i| i as i64).collect();
        let labels: Vec<i32> = (start..start + n)
            .map(|i| (i % classes.max(1)) as i32)
            .collect();
        let values: Vec<f32> = (0..n * dim)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                (state >> 40) as f32 / (1u64 << 24) as f32
            })
            .collect();
        writer.push(&ids, &labels, &values)?;
    }
    writer.finish()
}

/// Streams a feature matrix to a Parquet file, a batch of rows at a time (memory bounded by
/// the batch, not the dataset).
pub struct FeaturesWriter {
    inner: crate::parquet_io::TableWriter,
    schema: SchemaRef,
    dim: usize,
}

impl FeaturesWriter {
    pub fn create(path: &Path, provenance: &Provenance, layer: &str, dim: usize) -> Result<Self> {
        let schema = features_schema(dim, layer);
        let layout = crate::parquet_io::LayoutConfig {
            rows_per_group: (1 << 20) / dim.max(1) + 1,
            rows_per_part: None,
            bytes_per_group: None,
        };
        Ok(FeaturesWriter {
            inner: crate::parquet_io::TableWriter::create(
                path,
                Arc::clone(&schema),
                FEATURES,
                provenance,
                layout,
            )?,
            schema,
            dim,
        })
    }

    /// Appends rows (`values` row-major, `image_ids.len()` x dim).
    pub fn push(&mut self, image_ids: &[i64], labels: &[i32], values: &[f32]) -> Result<()> {
        assert_eq!(values.len(), image_ids.len() * self.dim);
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let list = FixedSizeListArray::try_new(
            item,
            self.dim as i32,
            Arc::new(Float32Array::from(values.to_vec())),
            None,
        )?;
        let batch = RecordBatch::try_new(
            Arc::clone(&self.schema),
            vec![
                Arc::new(Int64Array::from(image_ids.to_vec())),
                Arc::new(Int32Array::from(labels.to_vec())),
                Arc::new(list),
            ],
        )?;
        self.inner.write(&batch)
    }

    pub fn finish(self) -> Result<u64> {
        self.inner.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.parquet");
        let values: Vec<f32> = (0..12).map(|i| i as f32 * 0.5).collect();
        write_features(
            &path,
            &Provenance::ad_hoc("t"),
            "fc7",
            &[10, 11, 12],
            &[1, 2, 3],
            &values,
            4,
        )
        .unwrap();
        let matrix = read_features(&path).unwrap();
        assert_eq!(matrix.dim, 4);
        assert_eq!(matrix.image_ids, vec![10, 11, 12]);
        assert_eq!(matrix.values, values);
    }

    /// Streaming selected rows gives exactly the rows of the whole matrix, reads only the row
    /// groups that hold one, and keeps ids and labels in file order.
    #[test]
    fn streamed_rows_are_the_rows_written_and_only_the_wanted_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.parquet");
        let dim = 70_000; // 15 rows a row group: (1 << 20) / dim + 1
        let rows = 40;
        let (mut all_ids, mut all_labels, mut all_values) = (Vec::new(), Vec::new(), Vec::new());
        let mut writer =
            FeaturesWriter::create(&path, &Provenance::ad_hoc("t"), "l1", dim).unwrap();
        for chunk in 0..4 {
            let ids: Vec<i64> = (0..10).map(|i| 100 + chunk * 10 + i).collect();
            let labels: Vec<i32> = ids.iter().map(|id| (id % 3) as i32).collect();
            let values: Vec<f32> = (0..10 * dim)
                .map(|i| ((i as i64 * 7919 + chunk * 13) % 1000) as f32 * 1e-3)
                .collect();
            writer.push(&ids, &labels, &values).unwrap();
            all_ids.extend(ids);
            all_labels.extend(labels);
            all_values.extend(values);
        }
        writer.finish().unwrap();
        let streamed = FeatureRows::open(&path).unwrap();
        assert_eq!(streamed.image_ids, all_ids);
        assert_eq!(streamed.labels, all_labels);
        assert_eq!(streamed.dim, dim);
        assert!(
            streamed.groups.len() >= 3,
            "{} row groups",
            streamed.groups.len()
        );
        let wanted = [0usize, 1, 17, 39];
        let mut seen = Vec::new();
        streamed
            .for_each_row(
                |row| wanted.contains(&row),
                |row, values| {
                    assert!(
                        values == &all_values[row * dim..(row + 1) * dim],
                        "row {row}"
                    );
                    seen.push(row);
                },
            )
            .unwrap();
        assert_eq!(seen, wanted);
        assert_eq!(streamed.image_ids.len(), rows);
        assert!(read_features(&path).unwrap().values == all_values);
    }
}
