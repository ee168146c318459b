//! Small tables of named columns (metrics, evaluations, report tables): one call to write,
//! one to read back as columns.

use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};

use crate::parquet_io::{SchemaId, expect_schema, read_all, write_table};
use crate::{Error, Provenance, Result};

/// Schemas of the small tables stages exchange (declared here, beside their readers, so that a
/// stage reading another stage's table never depends on that stage's crate).
pub mod schemas {
    use crate::parquet_io::SchemaId;

    /// `train.metrics`: epoch, train_loss, train_top1_error, val_loss, val_top1_error,
    /// val_top5_error, learning_rate, filters_renormalised, seconds.
    pub const TRAIN_METRICS: SchemaId = SchemaId {
        name: "train_metrics",
        version: 1,
    };
    /// `train.evaluation`: split, crops, n_images, top1_error, top5_error, loss.
    pub const EVALUATION: SchemaId = SchemaId {
        name: "evaluation",
        version: 1,
    };
    /// `deconv_top9.top9`: layer, map, rank, image_id, y, x, activation.
    pub const DECONV_TOP9: SchemaId = SchemaId {
        name: "deconv_top9",
        version: 1,
    };
    /// `deconv_top9.filters`: filter, rms, dead, dominating.
    pub const FILTER_STATS: SchemaId = SchemaId {
        name: "filter_stats",
        version: 1,
    };
    /// `conv1_filters.table`: panel (zf | krizhevsky | no_renorm), architecture, stage,
    /// filter, rms, dead, dominating, aliased_energy (Fig. 6 (a)-(c) side by side; the share
    /// of each filter's frequency-response energy that its stride folds back).
    pub const FILTER_COMPARISON: SchemaId = SchemaId {
        name: "filter_comparison",
        version: 2,
    };
    /// `occlusion.maps`: image_id, y, x, map_activation, true_probability, predicted_label.
    pub const OCCLUSION_MAPS: SchemaId = SchemaId {
        name: "occlusion_maps",
        version: 1,
    };
    /// `occlusion.checks`: image_id, label, map, prob_unoccluded, prob_covering,
    /// prob_elsewhere, activation_unoccluded, activation_covering, activation_elsewhere
    /// (panel (d)'s true-class probability and panel (b)'s map activation, unoccluded and
    /// averaged over occluder positions that cover the projection peak or not).
    pub const OCCLUSION_CHECKS: SchemaId = SchemaId {
        name: "occlusion_checks",
        version: 2,
    };
    /// `feature_evolution.strongest`: epoch, layer, map, image_id, y, x, activation.
    pub const FEATURE_EVOLUTION: SchemaId = SchemaId {
        name: "feature_evolution",
        version: 1,
    };
    /// `invariance.curves`: transform, amount, image_id, layer1_distance, layer7_distance,
    /// true_probability.
    pub const INVARIANCE: SchemaId = SchemaId {
        name: "invariance",
        version: 1,
    };
    /// `correspondence.table1`: layer, mask, mean, std, pairs (Table 1's rows).
    pub const CORRESPONDENCE: SchemaId = SchemaId {
        name: "correspondence",
        version: 1,
    };
    /// `probe.table7`: classifier, layer, mean, std, folds (mean per-class accuracy).
    pub const PROBE: SchemaId = SchemaId {
        name: "probe",
        version: 1,
    };
    /// `transfer.table`: method (pretrained | scratch), n_per_class, fold, accuracy (mean
    /// per-class accuracy on the fold's test images), seconds.
    pub const TRANSFER: SchemaId = SchemaId {
        name: "transfer",
        version: 1,
    };
    /// `transfer_multilabel.table6`: class, class_name, average_precision, positives.
    pub const TRANSFER_AP: SchemaId = SchemaId {
        name: "transfer_ap",
        version: 1,
    };
    /// `dedup.matches`: query_id, query_label, reference_id, ncc (pairs above the threshold).
    pub const DEDUP_MATCHES: SchemaId = SchemaId {
        name: "dedup_matches",
        version: 1,
    };
    /// `dedup.removal`: image_id (reference images to leave out of training), best_ncc.
    pub const REMOVAL: SchemaId = SchemaId {
        name: "removal",
        version: 1,
    };
}

/// One column of a small table.
#[derive(Clone, Debug, PartialEq)]
pub enum Column {
    F64(Vec<f64>),
    I64(Vec<i64>),
    Str(Vec<String>),
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::F64(v) => v.len(),
            Column::I64(v) => v.len(),
            Column::Str(v) => v.len(),
        }
    }
}

/// A small table: named columns of equal length.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    pub columns: Vec<(String, Column)>,
}

impl Table {
    pub fn with(mut self, name: &str, column: Column) -> Self {
        self.columns.push((name.to_owned(), column));
        self
    }

    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, |(_, c)| c.len())
    }

    pub fn f64(&self, name: &str) -> Option<&[f64]> {
        self.columns.iter().find_map(|(n, c)| match c {
            Column::F64(v) if n == name => Some(v.as_slice()),
            _ => None,
        })
    }

    pub fn i64(&self, name: &str) -> Option<&[i64]> {
        self.columns.iter().find_map(|(n, c)| match c {
            Column::I64(v) if n == name => Some(v.as_slice()),
            _ => None,
        })
    }

    pub fn str(&self, name: &str) -> Option<&[String]> {
        self.columns.iter().find_map(|(n, c)| match c {
            Column::Str(v) if n == name => Some(v.as_slice()),
            _ => None,
        })
    }

    pub fn write(&self, path: &Path, schema_id: SchemaId, provenance: &Provenance) -> Result<u64> {
        let rows = self.rows();
        assert!(
            self.columns.iter().all(|(_, c)| c.len() == rows),
            "columns of equal length"
        );
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|(name, column)| {
                let ty = match column {
                    Column::F64(_) => DataType::Float64,
                    Column::I64(_) => DataType::Int64,
                    Column::Str(_) => DataType::Utf8,
                };
                Field::new(name, ty, false)
            })
            .collect();
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter()
            .map(|(_, column)| -> ArrayRef {
                match column {
                    Column::F64(v) => Arc::new(Float64Array::from(v.clone())),
                    Column::I64(v) => Arc::new(Int64Array::from(v.clone())),
                    Column::Str(v) => Arc::new(StringArray::from(v.clone())),
                }
            })
            .collect();
        let schema = Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(Arc::clone(&schema), arrays)?;
        write_table(path, schema, schema_id, provenance, &[batch])
    }

    pub fn read(path: &Path, schema_id: SchemaId) -> Result<Table> {
        let header = expect_schema(path, schema_id)?;
        let mut table = Table::default();
        for field in header.arrow_schema.fields() {
            let column = match field.data_type() {
                DataType::Float64 => Column::F64(Vec::new()),
                DataType::Int64 => Column::I64(Vec::new()),
                DataType::Utf8 => Column::Str(Vec::new()),
                other => {
                    return Err(Error::contract(
                        path,
                        format!(
                            "column `{}` has type {other}, not a table type",
                            field.name()
                        ),
                    ));
                }
            };
            table.columns.push((field.name().clone(), column));
        }
        for batch in read_all(path)? {
            for ((_, column), array) in table.columns.iter_mut().zip(batch.columns()) {
                match column {
                    Column::F64(v) => v.extend(array.as_primitive::<Float64Type>().values()),
                    Column::I64(v) => v.extend(array.as_primitive::<Int64Type>().values()),
                    Column::Str(v) => v.extend(
                        array
                            .as_string::<i32>()
                            .iter()
                            .map(|s| s.unwrap_or("").to_owned()),
                    ),
                }
            }
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.parquet");
        let table = Table::default()
            .with("epoch", Column::I64(vec![1, 2]))
            .with("loss", Column::F64(vec![0.5, 0.25]))
            .with("note", Column::Str(vec!["a".into(), "b".into()]));
        let id = SchemaId {
            name: "metrics",
            version: 1,
        };
        table.write(&path, id, &Provenance::ad_hoc("t")).unwrap();
        assert_eq!(Table::read(&path, id).unwrap(), table);
    }
}
