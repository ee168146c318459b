//! Kind `probe` (§5.3, Table 7): per layer, a linear SVM and a softmax classifier on N
//! images per class, tested on up to M others, mean per-class accuracy, mean ± std over
//! seeded folds.

use std::collections::BTreeMap;

use artifacts::features::FeatureRows;
use artifacts::table::schemas::PROBE;
use artifacts::table::{Column, Table};
use stage_api::sampling::split_per_class;
use stage_api::{
    Error, InputSpec, OutputSpec, ParamSpec, Result, RunSummary, StageContext, StageKind,
};

use linear_models::{
    SvmConfig, mean_class_accuracy, normalise_row_with_bias, predict, train_softmax, train_svm,
};

pub struct Probe;

impl StageKind for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }

    fn version(&self) -> u32 {
        // 2: the CPU backend's fixed arithmetic (the same bits on every CPU path).
        2
    }

    fn summary(&self) -> &'static str {
        "Linear SVM and softmax on each layer's features, Caltech protocol (Table 7)."
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::int(
                "n_train_per_class",
                30,
                1,
                1_000_000,
                "N training images per class (paper: 30 / 60).",
            ),
            ParamSpec::optional_int(
                "max_test_per_class",
                1,
                i64::MAX,
                "Test images per class at most (paper: 50 for Caltech-101).",
            ),
            ParamSpec::int("folds", 5, 1, 100, "Seeded train/test folds (paper: 5)."),
            ParamSpec::int(
                "seed",
                0,
                0,
                i64::MAX,
                "Seed of the folds and of the SVM's coordinate order.",
            ),
            ParamSpec::float("svm_c", 1.0, 1e-9, 1e9, "SVM penalty C."),
            ParamSpec::float("softmax_l2", 1e-4, 0.0, 10.0, "Softmax L2 regularisation."),
            ParamSpec::int("softmax_steps", 300, 1, 100_000, "Softmax gradient steps."),
            ParamSpec::int(
                "memory_limit_mb",
                16_384,
                1,
                i64::MAX,
                "Memory for one fold's normalised train and test features (rows x (dim + 1) x 8 \
                 bytes) plus one row group of the artifact; a fold that needs more is refused \
                 before anything is read, with the numbers.",
            ),
        ]
    }

    fn inputs(&self) -> Vec<InputSpec> {
        vec![InputSpec::artifact(
            "features",
            "extract.features: layer<N>.parquet",
        )]
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec::new(
            "table7",
            "table7.parquet",
            "classifier, layer, mean, std, folds",
        )]
    }

    fn run(&self, ctx: &StageContext) -> Result<RunSummary> {
        let folder = ctx.input("features");
        let mut layers: Vec<(usize, std::path::PathBuf)> = std::fs::read_dir(folder)
            .map_err(|e| Error::io(folder, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| {
                let n = p
                    .file_name()?
                    .to_str()?
                    .strip_prefix("layer")?
                    .strip_suffix(".parquet")?
                    .parse()
                    .ok()?;
                Some((n, p))
            })
            .collect();
        layers.sort();
        if layers.is_empty() {
            return Err(Error::input(
                folder,
                "no layer<N>.parquet files: wire an `extract` output here",
            ));
        }
        let (n_train, max_test) = (
            ctx.params.usize("n_train_per_class"),
            ctx.params
                .optional_int("max_test_per_class")
                .map(|m| m as usize),
        );
        let seed = ctx.params.int("seed") as u64;
        let folds = ctx.params.usize("folds");
        let svm = SvmConfig {
            c: ctx.params.float("svm_c"),
            seed,
            ..SvmConfig::default()
        };
        let mut rows: Vec<(String, usize, f64, f64)> = Vec::new();
        let bar = ctx.progress_bar((layers.len() * folds) as u64, "probing layers");
        let memory_limit = (ctx.params.int("memory_limit_mb") as u64).saturating_mul(1 << 20);
        for (layer, path) in &layers {
            // Ids and labels in memory; the features stay on disk, streamed per fold.
            let matrix = FeatureRows::open(path)?;
            let classes = matrix.labels.iter().copied().max().unwrap_or(0).max(0) as usize + 1;
            let mut ids_by_label: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
            for (&id, &label) in matrix.image_ids.iter().zip(&matrix.labels) {
                ids_by_label.entry(label).or_default().push(id);
            }
            let row_of: BTreeMap<i64, usize> = matrix
                .image_ids
                .iter()
                .enumerate()
                .map(|(i, &id)| (id, i))
                .collect();
            let mut accuracy: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
            let splits = (0..folds)
                .map(|fold| split_per_class(&ids_by_label, n_train, max_test, seed, fold as u64))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(Error::Config)?;
            let width = matrix.dim + 1;
            let fold_bytes = |split: &stage_api::sampling::Split| {
                ((split.train.len() + split.test.len()) as u64)
                    .saturating_mul(width as u64)
                    .saturating_mul(8)
            };
            for (fold, split) in splits.iter().enumerate() {
                let needed = fold_bytes(split).saturating_add(matrix.group_bytes());
                if needed > memory_limit {
                    return Err(Error::Config(format!(
                        "probing {} (layer {layer}) needs {} MB for fold {fold}: {} train \
                         and test rows of {width} normalised features in f64, plus a row group; \
                         memory_limit_mb is {}. Lower n_train_per_class or \
                         max_test_per_class, probe a later layer, or raise memory_limit_mb on \
                         a machine that has the memory",
                        path.display(),
                        needed.div_ceil(1 << 20),
                        split.train.len() + split.test.len(),
                        memory_limit >> 20
                    )));
                }
            }
            // The rows any fold uses are read once, when they fit (as f32) beside the largest
            // fold's matrix; otherwise each fold streams its rows from the file.
            let used: std::collections::BTreeSet<usize> = splits
                .iter()
                .flat_map(|split| split.train.iter().chain(&split.test))
                .map(|id| row_of[id])
                .collect();
            let largest_fold = splits.iter().map(fold_bytes).max().unwrap_or(0);
            let used_bytes = (used.len() as u64).saturating_mul(matrix.dim as u64 * 4);
            let read_once = used_bytes
                .saturating_add(largest_fold)
                .saturating_add(matrix.group_bytes())
                <= memory_limit;
            let in_memory: Option<(BTreeMap<usize, usize>, Vec<f32>)> = if read_once {
                let index: BTreeMap<usize, usize> =
                    used.iter().enumerate().map(|(i, &row)| (row, i)).collect();
                let mut values = vec![0.0f32; used.len() * matrix.dim];
                matrix.for_each_row(
                    |row| index.contains_key(&row),
                    |row, row_values| {
                        values[index[&row] * matrix.dim..][..matrix.dim]
                            .copy_from_slice(row_values);
                    },
                )?;
                Some((index, values))
            } else {
                None
            };
            for split in &splits {
                // Each set in id order (as a BTreeSet iterates).
                let slot_of = |ids: &std::collections::BTreeSet<i64>| -> BTreeMap<usize, usize> {
                    ids.iter()
                        .enumerate()
                        .map(|(slot, id)| (row_of[id], slot))
                        .collect()
                };
                let (train_slots, test_slots) = (slot_of(&split.train), slot_of(&split.test));
                let mut x_train = vec![0.0f64; train_slots.len() * width];
                let mut x_test = vec![0.0f64; test_slots.len() * width];
                let mut normalise = |row: usize, values: &[f32]| {
                    let (x, slot) = match train_slots.get(&row) {
                        Some(&slot) => (&mut x_train, slot),
                        None => (&mut x_test, test_slots[&row]),
                    };
                    normalise_row_with_bias(values, &mut x[slot * width..(slot + 1) * width]);
                };
                match &in_memory {
                    Some((index, values)) => {
                        for &row in train_slots.keys().chain(test_slots.keys()) {
                            normalise(row, &values[index[&row] * matrix.dim..][..matrix.dim]);
                        }
                    }
                    None => matrix.for_each_row(
                        |row| train_slots.contains_key(&row) || test_slots.contains_key(&row),
                        normalise,
                    )?,
                }
                let labels_of = |slots: &BTreeMap<usize, usize>| {
                    let mut labels = vec![0usize; slots.len()];
                    for (&row, &slot) in slots {
                        labels[slot] = matrix.labels[row] as usize;
                    }
                    labels
                };
                let (y_train, y_test) = (labels_of(&train_slots), labels_of(&test_slots));
                let w = train_svm(&x_train, &y_train, classes, &svm);
                accuracy.entry("svm").or_default().push(mean_class_accuracy(
                    &predict(&w, &x_test),
                    &y_test,
                    classes,
                ));
                let w = train_softmax(
                    &x_train,
                    &y_train,
                    classes,
                    ctx.params.float("softmax_l2"),
                    ctx.params.usize("softmax_steps"),
                    1.0,
                );
                accuracy
                    .entry("softmax")
                    .or_default()
                    .push(mean_class_accuracy(&predict(&w, &x_test), &y_test, classes));
                bar.inc(1);
            }
            for (classifier, values) in accuracy {
                let mean = values.iter().sum::<f64>() / values.len() as f64;
                let std = (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>()
                    / values.len() as f64)
                    .sqrt();
                rows.push((classifier.to_owned(), *layer, mean, std));
            }
        }
        bar.finish_and_clear();
        Table::default()
            .with(
                "classifier",
                Column::Str(rows.iter().map(|r| r.0.clone()).collect()),
            )
            .with(
                "layer",
                Column::I64(rows.iter().map(|r| r.1 as i64).collect()),
            )
            .with("mean", Column::F64(rows.iter().map(|r| r.2).collect()))
            .with("std", Column::F64(rows.iter().map(|r| r.3).collect()))
            .with("folds", Column::I64(vec![folds as i64; rows.len()]))
            .write(ctx.output("table7"), PROBE, &ctx.provenance)?;
        let line = |classifier: &str| {
            rows.iter()
                .filter(|r| r.0 == classifier)
                .map(|r| format!("{}: {:.1}%", r.1, 100.0 * r.2))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Ok(RunSummary::default()
            .line(format!("SVM by layer: {}", line("svm")))
            .line(format!("softmax by layer: {}", line("softmax"))))
    }
}
