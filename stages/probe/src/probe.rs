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
    SvmConfig, mean_class_accuracy, normalise_row_with_bias, predict, softmax_memory_bytes,
    train_softmax, train_svm,
};

pub struct Probe;

/// Bytes in the MB of `memory_limit_mb` (as `train`'s).
const MB: u64 = 1_000_000;

/// The two sets of a fold.
#[derive(Clone, Copy)]
enum Set {
    Train,
    Test,
}

impl StageKind for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }

    fn version(&self) -> u32 {
        // 2: the CPU backend's fixed arithmetic (the same bits on every CPU path).
        // 3: `std` is the sample standard deviation over folds (the report's one `±`).
        // 4: SVM and softmax dot products in a fixed 8-way order; the softmax descends
        // through the rows' Gram matrix when there are fewer rows than dimensions (same
        // iterates, other rounding; the layer-1 probe of 60 rows ran ~500 s, now seconds).
        4
    }

    fn summary(&self) -> &'static str {
        "Linear SVM and softmax on each layer's features, Caltech protocol (Table 7)."
    }

    fn peak_memory(&self) -> &'static str {
        "Per fold its normalised rows and the SVM weights, (rows + K)(F + 1) 8 bytes, and the softmax's: with n train rows < F, n^2 + K (2 n + F + 1) f64 (its Gram matrix, coefficients and final weights), else 2 K (F + 1) f64; plus one ~4 MiB row group, and, when it fits beside them, every row the folds use as f32 (used F 4 bytes): checked against memory_limit_mb before anything is read (a fold that cannot fit is refused). Outside it: the ids and labels of all rows (~100 bytes a row) and the SVM's per-thread temporaries."
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
                "Memory (MB of 10^6 bytes) for one fold: its normalised train and test \
                 features and the SVM's weights (rows + classes) x (dim + 1) x 8 bytes, the \
                 softmax's (with fewer train rows n than dimensions: n x n + classes x (2 n + \
                 dim + 1) x 8 bytes, else 2 x classes x (dim + 1) x 8), plus one row group of \
                 the artifact; a fold that needs more is refused \
                 before anything is read, with the numbers. The rows all folds use are read \
                 once when they fit beside that, else streamed per fold.",
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
        let memory_limit = (ctx.params.int("memory_limit_mb") as u64).saturating_mul(MB);
        let mut read_modes = Vec::new();
        for (layer, path) in &layers {
            // Ids and labels in memory; the features stay on disk until a fold needs them.
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
            // A fold holds its train and test rows normalised in f64, the SVM its weights
            // and the softmax its own (linear_models::softmax_memory_bytes: with fewer rows
            // than dimensions, the rows' Gram matrix and the final weights).
            let fold_bytes = |split: &stage_api::sampling::Split| {
                ((split.train.len() + split.test.len() + classes) as u64)
                    .saturating_mul(width as u64)
                    .saturating_mul(8)
                    .saturating_add(softmax_memory_bytes(split.train.len(), width, classes))
            };
            for (fold, split) in splits.iter().enumerate() {
                let needed = fold_bytes(split).saturating_add(matrix.group_bytes());
                if needed > memory_limit {
                    return Err(Error::Config(format!(
                        "probing {} (layer {layer}) needs {} MB for fold {fold}: {} train \
                         and test rows of {width} normalised features in f64, the \
                         classifiers' weights and a row group; memory_limit_mb is {}. Lower \
                         n_train_per_class or max_test_per_class, probe a later layer, or \
                         raise memory_limit_mb on a machine that has the memory",
                        path.display(),
                        needed.div_ceil(MB),
                        split.train.len() + split.test.len(),
                        memory_limit / MB
                    )));
                }
            }
            // The rows any fold uses are read once, when they fit (as f32) beside the largest
            // fold; otherwise each fold streams its rows from the file.
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
            read_modes.push(format!(
                "{layer}: {}",
                if read_once {
                    "read once"
                } else {
                    "streamed per fold"
                }
            ));
            // The used rows' values in row order; `used_rank[row]` is a row's place in them.
            let mut used_rank = vec![usize::MAX; matrix.image_ids.len()];
            for (rank, &row) in used.iter().enumerate() {
                used_rank[row] = rank;
            }
            let mut in_memory = Vec::new();
            if read_once {
                in_memory = vec![0.0f32; used.len() * matrix.dim];
                matrix.for_each_row(
                    |row| used_rank[row] != usize::MAX,
                    |row, values| {
                        in_memory[used_rank[row] * matrix.dim..][..matrix.dim]
                            .copy_from_slice(values);
                    },
                )?;
            }
            for split in &splits {
                // Each set in id order (as a BTreeSet iterates): `place[row]` is the row's set
                // (train or test) and slot in it.
                let mut place: Vec<Option<(Set, usize)>> = vec![None; matrix.image_ids.len()];
                for (set, ids) in [(Set::Train, &split.train), (Set::Test, &split.test)] {
                    for (slot, id) in ids.iter().enumerate() {
                        place[row_of[id]] = Some((set, slot));
                    }
                }
                let mut x_train = vec![0.0f64; split.train.len() * width];
                let mut x_test = vec![0.0f64; split.test.len() * width];
                let mut labels = (
                    vec![0usize; split.train.len()],
                    vec![0usize; split.test.len()],
                );
                let mut normalise = |row: usize, values: &[f32]| {
                    let Some((set, slot)) = place[row] else {
                        return;
                    };
                    let (x, y) = match set {
                        Set::Train => (&mut x_train, &mut labels.0),
                        Set::Test => (&mut x_test, &mut labels.1),
                    };
                    normalise_row_with_bias(values, &mut x[slot * width..(slot + 1) * width]);
                    y[slot] = matrix.labels[row] as usize;
                };
                if read_once {
                    for (row, values) in used.iter().zip(in_memory.chunks_exact(matrix.dim.max(1)))
                    {
                        normalise(*row, values);
                    }
                } else {
                    matrix.for_each_row(|row| place[row].is_some(), normalise)?;
                }
                let (y_train, y_test) = labels;
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
                let summary = stats::Summary::of(&values).expect("one value per fold");
                rows.push((
                    classifier.to_owned(),
                    *layer,
                    summary.mean,
                    summary.std.unwrap_or(0.0),
                ));
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
            .line(format!("softmax by layer: {}", line("softmax")))
            .line(format!("features by layer: {}", read_modes.join(", "))))
    }
}
