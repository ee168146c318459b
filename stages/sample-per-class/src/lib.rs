//! Stage kind `sample_per_class`: the Caltech protocol of §5.2 — "15 or 30 training images per
//! class, testing on up to 50 per class, 5 train/test folds".
//!
//! For each class, the image ids are shuffled by a ChaCha RNG seeded from (seed, fold, label):
//! the first N go to `train`, the next up to M to `test`. Folds are different shuffles, so the
//! same `seed` with `fold` 0..4 gives the paper's 5 folds, and reruns give the same split.
//! Works on `images` and `image_files` artifacts alike (rows are filtered, not rewritten).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{BooleanArray, RecordBatch};
use artifacts::image_files::IMAGE_FILES;
use artifacts::images::IMAGES;
use artifacts::parquet_io::{LayoutConfig, TableReader, TableWriter, read_header};
use stage_api::{
    Error, InputSpec, OutputSpec, ParamSpec, Params, Result, RunSummary, StageContext, StageKind,
};

pub fn kinds() -> Vec<Arc<dyn StageKind>> {
    vec![Arc::new(SamplePerClass)]
}

pub struct SamplePerClass;

impl StageKind for SamplePerClass {
    fn name(&self) -> &'static str {
        "sample_per_class"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "Splits a dataset into N train and up to M test images per class, for one seeded fold."
    }

    fn peak_memory(&self) -> &'static str {
        "Reads 4,096 rows at a time, pixels included (4096 S^2 3 bytes: 805 MB at S = 256), then 1,024 rows and a filtered copy while two writers buffer a row group each; the id index grows with N (tens of bytes a row)."
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::int(
                "n_train_per_class",
                30,
                1,
                1_000_000,
                "N: training images per class.",
            ),
            ParamSpec::optional_int(
                "max_test_per_class",
                0,
                i64::MAX,
                "M: test images per class at most (default: all the rest).",
            ),
            ParamSpec::int(
                "fold",
                0,
                0,
                1_000,
                "Which fold (a different shuffle per fold).",
            ),
            ParamSpec::int("seed", 0, 0, i64::MAX, "Seed of the shuffles."),
        ]
    }

    fn inputs(&self) -> Vec<InputSpec> {
        vec![InputSpec::artifact(
            "images",
            "an images or image_files artifact",
        )]
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![
            OutputSpec::new(
                "train",
                "train",
                "the N per class, same schema as the input",
            ),
            OutputSpec::new(
                "test",
                "test",
                "up to M per class from the rest, same schema as the input",
            ),
        ]
    }

    fn run(&self, ctx: &StageContext) -> Result<RunSummary> {
        let input = ctx.input("images");
        let header = read_header(input)?;
        let (schema_id, layout) = match header.schema.as_str() {
            name if name == IMAGES.name => (
                IMAGES,
                LayoutConfig {
                    rows_per_group: 256,
                    rows_per_part: Some(16_384),
                    bytes_per_group: Some(artifacts::images::MAX_GROUP_PIXEL_BYTES),
                },
            ),
            name if name == IMAGE_FILES.name => (
                IMAGE_FILES,
                LayoutConfig {
                    rows_per_group: 8192,
                    rows_per_part: Some(usize::MAX),
                    bytes_per_group: None,
                },
            ),
            other => {
                return Err(Error::input(
                    input,
                    format!("expected an `images` or `image_files` artifact, found `{other}`"),
                ));
            }
        };
        // Pass 1: ids by class, reading only the two small columns of each batch.
        let mut ids_by_label: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for batch in TableReader::open(input, 4096)? {
            let batch = batch?;
            let (ids, labels) = id_and_label(&batch, input)?;
            for (&id, &label) in ids.iter().zip(labels) {
                ids_by_label.entry(label).or_default().push(id);
            }
        }
        let split = split_ids(&ids_by_label, &ctx.params).map_err(Error::Config)?;
        // Pass 2: filter rows into the two outputs.
        let mut train = TableWriter::create(
            ctx.output("train"),
            header.arrow_schema.clone(),
            schema_id,
            &ctx.provenance,
            layout,
        )?;
        let mut test = TableWriter::create(
            ctx.output("test"),
            header.arrow_schema.clone(),
            schema_id,
            &ctx.provenance,
            layout,
        )?;
        for batch in TableReader::open(input, 1024)? {
            let batch = batch?;
            let (ids, _) = id_and_label(&batch, input)?;
            for (writer, wanted) in [(&mut train, &split.train), (&mut test, &split.test)] {
                let mask = BooleanArray::from_iter(ids.iter().map(|id| Some(wanted.contains(id))));
                let rows = arrow_select::filter::filter_record_batch(&batch, &mask)
                    .map_err(artifacts::Error::from)?;
                if rows.num_rows() > 0 {
                    writer.write(&rows)?;
                }
            }
        }
        let n_train = train.finish()?;
        let n_test = test.finish()?;
        Ok(RunSummary::default().line(format!(
            "fold {}: {n_train} train and {n_test} test images over {} classes",
            ctx.params.int("fold"),
            ids_by_label.len()
        )))
    }
}

fn id_and_label<'a>(
    batch: &'a RecordBatch,
    path: &std::path::Path,
) -> Result<(&'a [i64], &'a [i32])> {
    let ids = batch
        .column_by_name("image_id")
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .ok_or_else(|| Error::input(path, "no int64 `image_id` column"))?;
    let labels = batch
        .column_by_name("label")
        .and_then(|c| c.as_primitive_opt::<Int32Type>())
        .ok_or_else(|| Error::input(path, "no int32 `label` column"))?;
    Ok((ids.values(), labels.values()))
}

pub use stage_api::sampling::Split;

/// Chooses N train and up to M test ids per class for the fold in `params`. Pure: the same ids
/// and params always give the same split.
pub fn split_ids(ids_by_label: &BTreeMap<i32, Vec<i64>>, params: &Params) -> Result<Split, String> {
    stage_api::sampling::split_per_class(
        ids_by_label,
        params.usize("n_train_per_class"),
        params
            .optional_int("max_test_per_class")
            .map(|m| m as usize),
        params.int("seed") as u64,
        params.int("fold") as u64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use stage_api::ParamValue;

    fn params(n: i64, m: Option<i64>, fold: i64) -> Params {
        let mut overrides = vec![
            ("n_train_per_class", ParamValue::Int(n)),
            ("fold", ParamValue::Int(fold)),
        ];
        if let Some(m) = m {
            overrides.push(("max_test_per_class", ParamValue::Int(m)));
        }
        Params::defaults_with(&SamplePerClass.params(), &overrides)
    }

    fn dataset() -> BTreeMap<i32, Vec<i64>> {
        BTreeMap::from([(0, (0..40).collect()), (1, (100..160).collect())])
    }

    #[test]
    fn each_class_gets_n_train_and_up_to_m_disjoint_test_images() {
        let split = split_ids(&dataset(), &params(15, Some(20), 0)).unwrap();
        assert_eq!(split.train.len(), 30);
        assert_eq!(split.train.iter().filter(|&&id| id < 100).count(), 15);
        assert_eq!(split.test.iter().filter(|&&id| id < 100).count(), 20);
        assert_eq!(split.test.iter().filter(|&&id| id >= 100).count(), 20);
        assert!(split.train.is_disjoint(&split.test));
    }

    #[test]
    fn folds_differ_and_the_same_fold_repeats() {
        let a = split_ids(&dataset(), &params(15, None, 0)).unwrap();
        let b = split_ids(&dataset(), &params(15, None, 1)).unwrap();
        assert_ne!(a.train, b.train);
        assert_eq!(a, split_ids(&dataset(), &params(15, None, 0)).unwrap());
        assert_eq!(a.test.len(), 40 + 60 - 30, "without M, the rest is test");
    }

    #[test]
    fn a_class_too_small_for_n_is_a_config_error_naming_it() {
        let error = split_ids(&dataset(), &params(40, None, 0)).unwrap_err();
        assert!(error.contains("class 0 has 40 images"), "{error}");
    }
}
