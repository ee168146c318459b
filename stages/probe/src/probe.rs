//! Kind `probe` (§5.3, Table 7): per layer, a linear SVM and a softmax classifier on N
//! images per class, tested on up to M others, mean per-class accuracy, mean ± std over
//! seeded folds.

use std::collections::BTreeMap;

use artifacts::features::FeatureRows;
use artifacts::table::TableRow;
use artifacts::table::rows::ProbeRow;
use stage_api::sampling::split_per_class;
use stage_api::{
    Error, InputSpec, OutputSpec, ParamSpec, Result, RunSummary, StageContext, StageKind,
};

use linear_models::{
    SvmConfig, SymmetricMatrix, dot_products, kernel_fold_bytes, mean_class_accuracy,
    normalise_row_with_bias, predict, predict_kernel, softmax_memory_bytes, train_softmax,
    train_softmax_kernel, train_svm, train_svm_kernel,
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
        // 5: a layer whose folds use fewer rows than it has dimensions is probed in the
        // kernel form (both classifiers through the Gram matrix of the used rows, built
        // blockwise from streamed rows): the paper's Caltech-256 layer 1 fits in memory.
        5
    }

    fn summary(&self) -> &'static str {
        "Linear SVM and softmax on each layer's features, Caltech protocol (Table 7)."
    }

    fn peak_memory(&self) -> &'static str {
        "With U the rows the folds use and F the features a row: when U < F + 1 (the kernel form), the Gram matrix of the U rows, U (U + 1) / 2 f64, plus the larger of two blocks of B rows in f64 with their products (2 B (F + 1) + B^2 f64 and a row group's reading, ~17 MB; B as large as the budget allows, at least 16) and one fold's Gram and test products with the coefficients ((n + t + 6 K) n f64 for n train and t test rows, K classes); otherwise per fold its normalised rows and the SVM weights, (rows + K)(F + 1) 8 bytes, the softmax's (n < F: n^2 + K (2 n + F + 1) f64, else 2 K (F + 1) f64), a row group's reading (4 x its ~4 MiB of values), and, when it fits beside them, every used row as f32 (U F 4 bytes). Checked against memory_limit_mb before anything is read (a layer that cannot fit is refused). Outside it: the ids and labels of all rows (~100 bytes a row) and per-thread temporaries."
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
                "Memory (MB of 10^6 bytes) for one layer's probe. With fewer used rows U \
                 than dimensions (the kernel form): the Gram matrix of the U rows (U (U + 1) \
                 / 2 x 8 bytes) plus the larger of two 16-row-or-larger blocks of features in \
                 f64 and one fold's Gram and test products; otherwise one fold's normalised \
                 train and test features and the SVM's weights (rows + classes) x (dim + 1) x \
                 8 bytes, the softmax's, plus one row group, the used rows read once when they \
                 fit beside that, else streamed per fold. A layer that needs more is refused \
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
        let classifiers = Classifiers {
            svm: SvmConfig {
                c: ctx.params.float("svm_c"),
                seed,
                ..SvmConfig::default()
            },
            softmax_l2: ctx.params.float("softmax_l2"),
            softmax_steps: ctx.params.usize("softmax_steps"),
        };
        let mut rows: Vec<ProbeRow> = Vec::new();
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
            // The rows any fold uses, in row order; `used_rank[row]` is a row's place in them.
            let used: Vec<usize> = splits
                .iter()
                .flat_map(|split| split.train.iter().chain(&split.test))
                .map(|id| row_of[id])
                .collect::<std::collections::BTreeSet<usize>>()
                .into_iter()
                .collect();
            let mut used_rank = vec![usize::MAX; matrix.image_ids.len()];
            for (rank, &row) in used.iter().enumerate() {
                used_rank[row] = rank;
            }
            let layer_probe = LayerProbe {
                matrix: &matrix,
                path,
                layer: *layer,
                splits: &splits,
                row_of: &row_of,
                used: &used,
                used_rank: &used_rank,
                classes,
                classifiers: &classifiers,
                memory_limit,
            };
            // With fewer rows than dimensions the Gram matrix of the used rows is smaller than
            // the rows: both classifiers run in the kernel form (the paper's layer 1 and 2).
            let (fold_accuracy, mode) = if used.len() < width {
                layer_probe.kernel_form(ctx, &bar)?
            } else {
                layer_probe.primal_form(&bar)?
            };
            read_modes.push(format!("{layer}: {mode}"));
            for (svm, softmax) in fold_accuracy {
                accuracy.entry("svm").or_default().push(svm);
                accuracy.entry("softmax").or_default().push(softmax);
            }
            for (classifier, values) in accuracy {
                let summary = stats::Summary::of(&values).expect("one value per fold");
                rows.push(ProbeRow {
                    classifier: classifier.to_owned(),
                    layer: *layer as i64,
                    mean: summary.mean,
                    std: summary.std.unwrap_or(0.0),
                    folds: folds as i64,
                });
            }
        }
        bar.finish_and_clear();
        ProbeRow::write(&rows, ctx.output("table7"), &ctx.provenance)?;
        let line = |classifier: &str| {
            rows.iter()
                .filter(|r| r.classifier == classifier)
                .map(|r| format!("{}: {:.1}%", r.layer, 100.0 * r.mean))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Ok(RunSummary::default()
            .line(format!("SVM by layer: {}", line("svm")))
            .line(format!("softmax by layer: {}", line("softmax")))
            .line(format!("features by layer: {}", read_modes.join(", "))))
    }
}

/// The classifiers' settings.
struct Classifiers {
    svm: SvmConfig,
    softmax_l2: f64,
    softmax_steps: usize,
}

/// One layer's probe: its rows on disk, its folds and the rows they use.
struct LayerProbe<'a> {
    matrix: &'a FeatureRows,
    path: &'a std::path::Path,
    layer: usize,
    splits: &'a [stage_api::sampling::Split],
    row_of: &'a BTreeMap<i64, usize>,
    /// The rows some fold uses, ascending.
    used: &'a [usize],
    /// A row's place in `used` (`usize::MAX` for the others).
    used_rank: &'a [usize],
    classes: usize,
    classifiers: &'a Classifiers,
    memory_limit: u64,
}

/// A fold's rows as ranks in the used rows, with their labels.
struct FoldRows {
    train: Vec<usize>,
    y_train: Vec<usize>,
    test: Vec<usize>,
    y_test: Vec<usize>,
}

/// Per fold, the SVM's and the softmax's mean class accuracy.
type FoldAccuracy = Vec<(f64, f64)>;

/// Smallest block of rows the kernel form streams (when the budget allows no larger one).
const MIN_BLOCK_ROWS: usize = 16;

impl LayerProbe<'_> {
    fn width(&self) -> usize {
        self.matrix.dim + 1
    }

    fn refuse(&self, what: String) -> Error {
        Error::Config(format!(
            "probing {} (layer {}) needs {what}; memory_limit_mb is {}. Lower \
             n_train_per_class or max_test_per_class, probe a later layer, or raise \
             memory_limit_mb on a machine that has the memory",
            self.path.display(),
            self.layer,
            self.memory_limit / MB
        ))
    }

    /// A fold's train and test rows (each set in id order, as a BTreeSet iterates) as ranks
    /// in `used`, and their labels.
    fn fold_rows(&self, split: &stage_api::sampling::Split) -> FoldRows {
        let ranks_and_labels = |ids: &std::collections::BTreeSet<i64>| {
            ids.iter()
                .map(|id| {
                    let row = self.row_of[id];
                    (self.used_rank[row], self.matrix.labels[row] as usize)
                })
                .unzip()
        };
        let (train, y_train) = ranks_and_labels(&split.train);
        let (test, y_test) = ranks_and_labels(&split.test);
        FoldRows {
            train,
            y_train,
            test,
            y_test,
        }
    }

    /// The classifiers on the rows themselves, normalised in f64: every fold's rows read once
    /// when they fit (as f32) beside the largest fold, else each fold streams its rows.
    fn primal_form(&self, bar: &indicatif::ProgressBar) -> Result<(FoldAccuracy, String)> {
        let (matrix, width, classes) = (self.matrix, self.width(), self.classes);
        // A fold holds its train and test rows normalised in f64, the SVM its weights and the
        // softmax its own (linear_models::softmax_memory_bytes).
        let fold_bytes = |split: &stage_api::sampling::Split| {
            ((split.train.len() + split.test.len() + classes) as u64)
                .saturating_mul(width as u64)
                .saturating_mul(8)
                .saturating_add(softmax_memory_bytes(split.train.len(), width, classes))
        };
        for (fold, split) in self.splits.iter().enumerate() {
            let needed = fold_bytes(split).saturating_add(matrix.stream_bytes());
            if needed > self.memory_limit {
                return Err(self.refuse(format!(
                    "{} MB for fold {fold}: {} train and test rows of {width} normalised \
                     features in f64, the classifiers' weights and a row group",
                    needed.div_ceil(MB),
                    split.train.len() + split.test.len(),
                )));
            }
        }
        let largest_fold = self.splits.iter().map(fold_bytes).max().unwrap_or(0);
        let used_bytes = (self.used.len() as u64).saturating_mul(matrix.dim as u64 * 4);
        let read_once = used_bytes
            .saturating_add(largest_fold)
            .saturating_add(matrix.stream_bytes())
            <= self.memory_limit;
        let mut in_memory = Vec::new();
        if read_once {
            in_memory = vec![0.0f32; self.used.len() * matrix.dim];
            matrix.for_each_row(
                |row| self.used_rank[row] != usize::MAX,
                |row, values| {
                    in_memory[self.used_rank[row] * matrix.dim..][..matrix.dim]
                        .copy_from_slice(values);
                },
            )?;
        }
        let mut accuracy = Vec::new();
        for split in self.splits {
            let FoldRows {
                train: train_ranks,
                y_train,
                test: test_ranks,
                y_test,
            } = self.fold_rows(split);
            // `place[rank]` is a used row's set (train or test) and slot in it.
            let mut place: Vec<Option<(Set, usize)>> = vec![None; self.used.len()];
            for (set, ranks) in [(Set::Train, &train_ranks), (Set::Test, &test_ranks)] {
                for (slot, &rank) in ranks.iter().enumerate() {
                    place[rank] = Some((set, slot));
                }
            }
            let mut x_train = vec![0.0f64; train_ranks.len() * width];
            let mut x_test = vec![0.0f64; test_ranks.len() * width];
            let mut normalise = |rank: usize, values: &[f32]| {
                let Some((set, slot)) = place[rank] else {
                    return;
                };
                let x = match set {
                    Set::Train => &mut x_train,
                    Set::Test => &mut x_test,
                };
                normalise_row_with_bias(values, &mut x[slot * width..(slot + 1) * width]);
            };
            if read_once {
                for (rank, values) in in_memory.chunks_exact(matrix.dim.max(1)).enumerate() {
                    normalise(rank, values);
                }
            } else {
                matrix.for_each_row(
                    |row| self.used_rank[row] != usize::MAX && place[self.used_rank[row]].is_some(),
                    |row, values| normalise(self.used_rank[row], values),
                )?;
            }
            let w = train_svm(&x_train, &y_train, classes, &self.classifiers.svm);
            let svm = mean_class_accuracy(&predict(&w, &x_test), &y_test, classes);
            let w = train_softmax(
                &x_train,
                &y_train,
                classes,
                self.classifiers.softmax_l2,
                self.classifiers.softmax_steps,
                1.0,
            );
            let softmax = mean_class_accuracy(&predict(&w, &x_test), &y_test, classes);
            accuracy.push((svm, softmax));
            bar.inc(1);
        }
        let mode = if read_once {
            "read once"
        } else {
            "streamed per fold"
        };
        Ok((accuracy, mode.to_owned()))
    }

    /// The classifiers in the kernel form: the Gram matrix of every used row (normalised,
    /// bias included), built from blocks of rows streamed from the file (as many rows a block
    /// as the budget allows; the same bits for any block size), then per fold its part of
    /// it. Memory: the Gram matrix's upper triangle, plus the larger of two blocks of rows
    /// with their products, and one fold's Gram and test products with the classifiers'
    /// coefficients.
    fn kernel_form(
        &self,
        ctx: &StageContext,
        bar: &indicatif::ProgressBar,
    ) -> Result<(FoldAccuracy, String)> {
        let (matrix, width, classes) = (self.matrix, self.width(), self.classes);
        let n = self.used.len();
        let gram_bytes = SymmetricMatrix::bytes(n);
        let block_bytes = |rows: usize| {
            let rows = rows as u64;
            (2 * rows)
                .saturating_mul(width as u64 * 8)
                .saturating_add(rows.saturating_mul(rows).saturating_mul(8))
                .saturating_add(matrix.stream_bytes())
        };
        let largest_fold = self
            .splits
            .iter()
            .map(|s| kernel_fold_bytes(s.train.len(), s.test.len(), classes))
            .max()
            .unwrap_or(0);
        let min_block = n.min(MIN_BLOCK_ROWS);
        let needed = gram_bytes.saturating_add(block_bytes(min_block).max(largest_fold));
        if needed > self.memory_limit {
            return Err(self.refuse(format!(
                "{} MB in the kernel form: the Gram matrix of the {n} rows its folds use \
                 ({} MB), then the larger of {min_block}-row blocks of {width} features in \
                 f64 ({} MB) and one fold's Gram matrix and classifiers ({} MB)",
                needed.div_ceil(MB),
                gram_bytes.div_ceil(MB),
                block_bytes(min_block).div_ceil(MB),
                largest_fold.div_ceil(MB),
            )));
        }
        // The largest block that fits beside the Gram matrix.
        let room = self.memory_limit - gram_bytes;
        let (mut low, mut high) = (min_block, n.max(min_block));
        while low < high {
            let mid = low + (high - low).div_ceil(2);
            if block_bytes(mid) <= room {
                low = mid;
            } else {
                high = mid - 1;
            }
        }
        let block = low.max(1);
        let blocks: Vec<std::ops::Range<usize>> = (0..n)
            .step_by(block)
            .map(|start| start..(start + block).min(n))
            .collect();
        let load = |ranks: &std::ops::Range<usize>| -> Result<Vec<f64>> {
            let mut rows = vec![0.0f64; ranks.len() * width];
            matrix.for_each_row(
                |row| ranks.contains(&self.used_rank[row]),
                |row, values| {
                    let slot = self.used_rank[row] - ranks.start;
                    normalise_row_with_bias(values, &mut rows[slot * width..(slot + 1) * width]);
                },
            )?;
            Ok(rows)
        };
        let pairs = blocks.len() * (blocks.len() + 1) / 2;
        let gram_bar = ctx.progress_bar(
            pairs as u64,
            &format!("layer {}: Gram matrix of {n} rows", self.layer),
        );
        let mut gram = SymmetricMatrix::zeros(n);
        for (at, first) in blocks.iter().enumerate() {
            let rows_a = load(first)?;
            {
                // Dropped before the next block is read: two blocks and one block of products
                // at a time, as stated.
                let products = dot_products(&rows_a, &rows_a, width, true);
                for i in 0..first.len() {
                    for j in i..first.len() {
                        gram.set(
                            first.start + i,
                            first.start + j,
                            products[i * first.len() + j],
                        );
                    }
                }
            }
            gram_bar.inc(1);
            for second in &blocks[at + 1..] {
                let rows_b = load(second)?;
                let products = dot_products(&rows_a, &rows_b, width, false);
                for i in 0..first.len() {
                    for j in 0..second.len() {
                        gram.set(
                            first.start + i,
                            second.start + j,
                            products[i * second.len() + j],
                        );
                    }
                }
                gram_bar.inc(1);
            }
        }
        gram_bar.finish_and_clear();
        let mut accuracy = Vec::new();
        for split in self.splits {
            let FoldRows {
                train,
                y_train,
                test,
                y_test,
            } = self.fold_rows(split);
            let train_gram = gram.submatrix(&train, &train);
            let cross = gram.submatrix(&test, &train);
            let beta = train_svm_kernel(&train_gram, &y_train, classes, &self.classifiers.svm);
            let svm =
                mean_class_accuracy(&predict_kernel(&beta, &cross, test.len()), &y_test, classes);
            let a = train_softmax_kernel(
                &train_gram,
                &y_train,
                classes,
                self.classifiers.softmax_l2,
                self.classifiers.softmax_steps,
                1.0,
            );
            let softmax =
                mean_class_accuracy(&predict_kernel(&a, &cross, test.len()), &y_test, classes);
            accuracy.push((svm, softmax));
            bar.inc(1);
        }
        Ok((
            accuracy,
            format!(
                "kernel form (Gram matrix of {n} rows, {} block{} of up to {block} rows)",
                blocks.len(),
                if blocks.len() == 1 { "" } else { "s" }
            ),
        ))
    }
}
