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

/// One row type per small table ([`TableRow`]): the fields are the columns, in the order the
/// files hold them. A writer and every reader of a table use its row type.
pub mod rows {
    use super::schemas::*;

    crate::table_row! {
        /// `train.metrics`: one row per epoch.
        pub struct TrainMetricsRow in TRAIN_METRICS {
            pub epoch: i64,
            pub train_loss: f64,
            pub train_top1_error: f64,
            pub val_loss: f64,
            pub val_top1_error: f64,
            pub val_top5_error: f64,
            pub learning_rate: f64,
            pub filters_renormalised: i64,
            pub seconds: f64,
        }
    }

    crate::table_row! {
        /// `train.evaluation`: the final validation errors, per crop scheme.
        pub struct EvaluationRow in EVALUATION {
            pub split: String,
            /// `centre` or `ten`.
            pub crops: String,
            pub n_images: i64,
            pub top1_error: f64,
            pub top5_error: f64,
            pub loss: f64,
        }
    }

    crate::table_row! {
        /// `deconv_top9.top9`: one of a map's strongest activations.
        pub struct Top9Row in DECONV_TOP9 {
            pub layer: i64,
            pub map: i64,
            pub rank: i64,
            pub image_id: i64,
            pub y: i64,
            pub x: i64,
            pub activation: f64,
        }
    }

    crate::table_row! {
        /// `deconv_top9.filters`: a conv1 filter's RMS and flags (0 or 1).
        pub struct FilterStatsRow in FILTER_STATS {
            pub filter: i64,
            pub rms: f64,
            pub dead: i64,
            pub dominating: i64,
        }
    }

    crate::table_row! {
        /// `conv1_filters.table`: a conv1 filter of one of Fig. 6's panels.
        pub struct FilterComparisonRow in FILTER_COMPARISON {
            /// `zf`, `krizhevsky` or `no_renorm`.
            pub panel: String,
            pub architecture: String,
            pub stage: String,
            pub filter: i64,
            pub rms: f64,
            pub dead: i64,
            pub dominating: i64,
            pub aliased_energy: f64,
        }
    }

    crate::table_row! {
        /// `occlusion.maps`: one occluder position of one image.
        pub struct OcclusionMapRow in OCCLUSION_MAPS {
            pub image_id: i64,
            pub y: i64,
            pub x: i64,
            pub map_activation: f64,
            pub true_probability: f64,
            pub predicted_label: i64,
        }
    }

    crate::table_row! {
        /// `occlusion.checks`: one image's probabilities and map activations, unoccluded and
        /// averaged over occluder positions that cover the projection peak or not.
        pub struct OcclusionCheckRow in OCCLUSION_CHECKS {
            pub image_id: i64,
            pub label: i64,
            pub map: i64,
            pub prob_unoccluded: f64,
            pub prob_covering: f64,
            pub prob_elsewhere: f64,
            pub activation_unoccluded: f64,
            pub activation_covering: f64,
            pub activation_elsewhere: f64,
        }
    }

    crate::table_row! {
        /// `feature_evolution.strongest`: a map's strongest activation at one epoch.
        pub struct EvolutionRow in FEATURE_EVOLUTION {
            pub epoch: i64,
            pub layer: i64,
            pub map: i64,
            pub image_id: i64,
            pub y: i64,
            pub x: i64,
            pub activation: f64,
        }
    }

    crate::table_row! {
        /// `invariance.curves`: one image under one transformation.
        pub struct InvarianceRow in INVARIANCE {
            /// `translation`, `scale` or `rotation`.
            pub transform: String,
            pub amount: f64,
            pub image_id: i64,
            pub layer1_distance: f64,
            pub layer7_distance: f64,
            pub true_probability: f64,
        }
    }

    crate::table_row! {
        /// `correspondence.table1`: one (layer, mask) cell of Table 1.
        pub struct CorrespondenceRow in CORRESPONDENCE {
            pub layer: i64,
            /// A part's name, or `random`.
            pub mask: String,
            pub mean: f64,
            pub std: f64,
            pub pairs: i64,
        }
    }

    crate::table_row! {
        /// `probe.table7`: one (classifier, layer) cell of Table 7.
        pub struct ProbeRow in PROBE {
            /// `svm` or `softmax`.
            pub classifier: String,
            pub layer: i64,
            pub mean: f64,
            pub std: f64,
            pub folds: i64,
        }
    }

    crate::table_row! {
        /// `transfer.table`: one (method, N, fold) run.
        pub struct TransferRow in TRANSFER {
            /// `pretrained` or `scratch`.
            pub method: String,
            pub n_per_class: i64,
            pub fold: i64,
            pub accuracy: f64,
            pub seconds: f64,
        }
    }

    crate::table_row! {
        /// `transfer_multilabel.table6`: one class's average precision.
        pub struct TransferApRow in TRANSFER_AP {
            pub class: i64,
            pub class_name: String,
            pub average_precision: f64,
            pub positives: i64,
        }
    }

    crate::table_row! {
        /// `dedup.matches`: a (query, reference) pair above the threshold.
        pub struct DedupMatchRow in DEDUP_MATCHES {
            pub query_id: i64,
            pub query_label: i64,
            pub reference_id: i64,
            pub ncc: f64,
        }
    }

    crate::table_row! {
        /// `dedup.removal`: a reference image to leave out of training.
        pub struct RemovalRow in REMOVAL {
            pub image_id: i64,
            pub best_ncc: f64,
        }
    }
}

/// A value a table column holds: `i64`, `f64` or `String`.
pub trait ColumnValue: Clone + Sized {
    /// The column's type as the error messages name it.
    const TYPE: &'static str;
    fn into_column(values: Vec<Self>) -> Column;
    fn slice<'a>(table: &'a Table, name: &str) -> Option<&'a [Self]>;
}

impl ColumnValue for i64 {
    const TYPE: &'static str = "int64";
    fn into_column(values: Vec<Self>) -> Column {
        Column::I64(values)
    }
    fn slice<'a>(table: &'a Table, name: &str) -> Option<&'a [Self]> {
        table.i64(name)
    }
}

impl ColumnValue for f64 {
    const TYPE: &'static str = "float64";
    fn into_column(values: Vec<Self>) -> Column {
        Column::F64(values)
    }
    fn slice<'a>(table: &'a Table, name: &str) -> Option<&'a [Self]> {
        table.f64(name)
    }
}

impl ColumnValue for String {
    const TYPE: &'static str = "utf8";
    fn into_column(values: Vec<Self>) -> Column {
        Column::Str(values)
    }
    fn slice<'a>(table: &'a Table, name: &str) -> Option<&'a [Self]> {
        table.str(name)
    }
}

/// Column `name` of `table` read from `path`, as `T`: a missing or mistyped column is a
/// contract error naming the file, the column and the type expected.
pub fn typed_column<'a, T: ColumnValue>(
    table: &'a Table,
    name: &str,
    path: &Path,
) -> Result<&'a [T]> {
    T::slice(table, name).ok_or_else(|| {
        Error::contract(
            path,
            format!(
                "column `{name}` ({}) is missing or has another type: the file was written by \
                 another version; run its stage again",
                T::TYPE
            ),
        )
    })
}

/// A row of one of the small tables stages exchange: the struct's fields are the table's
/// columns, in order, and its schema is [`TableRow::SCHEMA`]. Declared with [`table_row!`]; a
/// writer builds rows and calls [`TableRow::write`], a reader gets them from
/// [`TableRow::read`], so that a renamed or retyped column is a compile error in both, not an
/// empty slice at run time.
pub trait TableRow: Sized {
    const SCHEMA: SchemaId;
    fn to_table(rows: &[Self]) -> Table;
    /// The rows of a table read from `path` (for its error messages).
    fn from_table(table: &Table, path: &Path) -> Result<Vec<Self>>;

    fn write(rows: &[Self], path: &Path, provenance: &Provenance) -> Result<u64> {
        Self::to_table(rows).write(path, Self::SCHEMA, provenance)
    }

    /// The rows of the table at `path`, whose schema must be [`TableRow::SCHEMA`] (name and
    /// version) and which must hold every column.
    fn read(path: &Path) -> Result<Vec<Self>> {
        let table = Table::read(path, Self::SCHEMA)?;
        Self::from_table(&table, path)
    }
}

/// Declares a [`TableRow`]: `table_row! { /// doc \n pub struct Name in SCHEMA { pub a: i64,
/// pub b: f64, pub c: String, } }`.
#[macro_export]
macro_rules! table_row {
    (
        $(#[$meta:meta])*
        pub struct $name:ident in $schema:path {
            $($(#[$field_meta:meta])* pub $field:ident: $ty:ty,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty,)+
        }

        impl $crate::table::TableRow for $name {
            const SCHEMA: $crate::parquet_io::SchemaId = $schema;

            fn to_table(rows: &[Self]) -> $crate::table::Table {
                $crate::table::Table::default()
                    $(.with(
                        stringify!($field),
                        <$ty as $crate::table::ColumnValue>::into_column(
                            rows.iter().map(|row| row.$field.clone()).collect(),
                        ),
                    ))+
            }

            fn from_table(
                table: &$crate::table::Table,
                path: &std::path::Path,
            ) -> $crate::Result<Vec<Self>> {
                $(let $field =
                    $crate::table::typed_column::<$ty>(table, stringify!($field), path)?;)+
                Ok((0..table.rows())
                    .map(|i| $name { $($field: $field[i].clone(),)+ })
                    .collect())
            }
        }
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

    /// A row type writes exactly the table the column-by-column writer wrote (the same
    /// columns, in order, with their types: the same bytes), reads it back, and a file
    /// missing a column or of another schema version is an error naming the file and why.
    #[test]
    fn typed_rows_round_trip_and_a_missing_column_is_named() {
        use rows::RemovalRow;
        let dir = tempfile::tempdir().unwrap();
        let provenance = Provenance::ad_hoc("dedup");
        let rows = vec![
            RemovalRow {
                image_id: 7,
                best_ncc: 0.97,
            },
            RemovalRow {
                image_id: 9,
                best_ncc: 0.991,
            },
        ];
        let typed = dir.path().join("typed.parquet");
        RemovalRow::write(&rows, &typed, &provenance).unwrap();
        assert_eq!(RemovalRow::read(&typed).unwrap(), rows);
        let by_columns = dir.path().join("columns.parquet");
        Table::default()
            .with("image_id", Column::I64(vec![7, 9]))
            .with("best_ncc", Column::F64(vec![0.97, 0.991]))
            .write(&by_columns, schemas::REMOVAL, &provenance)
            .unwrap();
        assert_eq!(
            std::fs::read(&typed).unwrap(),
            std::fs::read(&by_columns).unwrap()
        );

        let renamed = dir.path().join("renamed.parquet");
        Table::default()
            .with("image", Column::I64(vec![7]))
            .with("best_ncc", Column::F64(vec![0.97]))
            .write(&renamed, schemas::REMOVAL, &provenance)
            .unwrap();
        let error = RemovalRow::read(&renamed).unwrap_err().to_string();
        assert!(error.contains("renamed.parquet"), "{error}");
        assert!(
            error.contains("column `image_id` (int64) is missing"),
            "{error}"
        );

        let older = dir.path().join("older.parquet");
        let old_schema = SchemaId {
            name: "removal",
            version: 0,
        };
        Table::default()
            .with("image_id", Column::I64(vec![7]))
            .with("best_ncc", Column::F64(vec![0.97]))
            .write(&older, old_schema, &provenance)
            .unwrap();
        assert!(RemovalRow::read(&older).is_err());
    }
}
