//! Kind `transfer` (§5.2, Tables 4 and 5, Fig. 9): how well do features learnt on one
//! dataset serve another, with few training images per class?
//!
//! For each N in `n_per_class` and each seeded fold of the Caltech protocol (N training
//! images per class, up to M test images per class, the mean of per-class accuracies):
//! - **pretrained**: "layers 1-7 of the ImageNet model are kept fixed and a new softmax is
//!   trained on the new dataset" — a softmax on the frozen layer-7 features (read from an
//!   `extract` artifact of the target images);
//! - **scratch**: "resets layers 1-7 and trains everything on the new dataset's training
//!   images" — the pretrained model's architecture, freshly initialised, trained by SGD with
//!   the §3 recipe (random crops and flips, momentum, dropout, filter RMS renormalisation) on
//!   the same N images per class, its mean image taken from them.
//!
//! Both arms see exactly the same training and test images in each fold. The scratch arm runs
//! a fixed number of SGD steps (`scratch_steps`, the rate dropping tenfold after two thirds of
//! them): with N images per class there is no validation set to anneal on, and a fixed
//! budget keeps the comparison across N even-handed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use stage_api::device::Device;
use std::time::Instant;

use artifacts::features::{FeatureMatrix, FeatureRows, read_features};
use artifacts::table::TableRow;
use artifacts::table::rows::TransferRow;
use engine::Backend;
use engine::rng::stream_key;
use engine::weights::read_architecture;

use linear_models::{mean_class_accuracy, normalised_with_bias, predict, train_softmax};
use stage_api::sampling::split_per_class;
use stage_api::{
    Error, InputSpec, OutputSpec, ParamSpec, Params, Resources, Result, RunSummary, StageContext,
    StageKind,
};
use training::{Crops, FixedSteps, ImageStore, predict_probabilities, train_fixed_steps};

mod memory;
mod multilabel;

use memory::{ImagesShape, transfer_need};

pub use multilabel::{TransferMultilabel, average_precision};

pub fn kinds() -> Vec<Arc<dyn StageKind>> {
    vec![Arc::new(Transfer), Arc::new(multilabel::TransferMultilabel)]
}

pub struct Transfer;

/// The SGD settings of the scratch arm: a fixed number of steps.
pub type ScratchConfig = FixedSteps;

impl StageKind for Transfer {
    fn name(&self) -> &'static str {
        "transfer"
    }

    fn version(&self) -> u32 {
        // 2: Fig. 9 has axis ticks.
        // 3: the CPU backend's fixed arithmetic (the same bits on every CPU path).
        // 4: Fig. 9's bars are the sample standard deviation over folds.
        // 5: the scratch arm trains on the paper's ten sub-crops, on the model's own layers;
        // Fig. 9 drawn with axis titles, tick labels and a legend.
        // 6: the softmax's dot products in a fixed 8-way order; with fewer rows than
        // dimensions it descends through the rows' Gram matrix (same iterates, other rounding).
        6
    }

    fn summary(&self) -> &'static str {
        "Softmax on frozen pretrained features vs the network trained from scratch, N images per class (Tables 4-5, Fig. 9)."
    }

    fn peak_memory(&self) -> &'static str {
        "The whole layer-7 feature matrix (N F 4 bytes) and, with the scratch arm, the whole target image set (N S^2 3 bytes, one allocation); per fold and N its rows (f32 and normalised f64: n (F + 1) 12 bytes), the softmax and the test predictions, and with the scratch arm the fold's image copies ((n_train + n_test) S^2 3 bytes), a fresh network (12 P bytes) and one batch's activations (on the CPU). Computed from the inputs' headers and the folds before anything larger is read, and checked against memory_limit_mb (a run over it is refused, with its parts). Outside it: ids and labels (~60 bytes a row) and per-thread temporaries."
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::int_list(
                "n_per_class",
                &[15, 30],
                1,
                100_000,
                "Training images per class, one experiment each (paper: 15, 30 for Caltech-101; 15, 30, 45, 60 for Caltech-256; 1-60 for Fig. 9).",
            ),
            ParamSpec::optional_int(
                "max_test_per_class",
                1,
                i64::MAX,
                "Test images per class at most (paper: 50 for Caltech-101); the rest of the class when unset.",
            ),
            ParamSpec::int("folds", 5, 1, 100, "Seeded train/test folds (paper: 5)."),
            ParamSpec::int(
                "seed",
                0,
                0,
                i64::MAX,
                "Seed of the folds and of the scratch networks.",
            ),
            ParamSpec::int(
                "layer",
                7,
                1,
                7,
                "Which frozen layer's features the pretrained softmax reads (paper: 7).",
            ),
            ParamSpec::float("softmax_l2", 1e-4, 0.0, 10.0, "Softmax L2 regularisation."),
            ParamSpec::int("softmax_steps", 300, 1, 100_000, "Softmax gradient steps."),
            ParamSpec::bool(
                "scratch",
                true,
                "Also train the network from scratch on the same images (the tables' \"non-pretrained\" row).",
            ),
            ParamSpec::int(
                "scratch_steps",
                300,
                1,
                10_000_000,
                "SGD steps of each scratch run; the rate drops tenfold after two thirds.",
            ),
            ParamSpec::int(
                "scratch_batch_size",
                128,
                1,
                65_536,
                "Mini-batch size of the scratch runs (all N x classes images when fewer).",
            ),
            ParamSpec::float(
                "scratch_learning_rate",
                0.01,
                0.0,
                10.0,
                "Initial learning rate of the scratch runs (paper: 1e-2).",
            ),
            ParamSpec::float(
                "scratch_init_std",
                0.01,
                0.0,
                10.0,
                "Std of the scratch runs' initial weights (paper: 1e-2).",
            ),
            ParamSpec::float(
                "scratch_weight_decay",
                5e-4,
                0.0,
                1.0,
                "L2 weight decay of the scratch runs.",
            ),
            ParamSpec::float(
                "filter_rms_radius",
                0.1,
                0.0,
                100.0,
                "Filter RMS renormalisation of the scratch runs (paper: 0.1; 0 = off).",
            ),
            ParamSpec::int(
                "memory_limit_mb",
                16_384,
                1,
                i64::MAX,
                "The most the run may hold: its need (the features, the largest fold's rows and \
                 softmax, and with the scratch arm the target images, a fold's copies of them and \
                 the network) is computed from the inputs' headers and the folds and checked \
                 before anything larger is read; a run over it is refused with its parts.",
            ),
            stage_api::device::device_param(),
        ]
    }

    fn inputs(&self) -> Vec<InputSpec> {
        vec![
            InputSpec::model(),
            InputSpec::artifact(
                "features",
                "extract.features of the target images through the pretrained model",
            ),
            InputSpec::artifact(
                "images",
                "the target images, preprocessed like the pre-training set (the scratch arm trains on them)",
            ),
        ]
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![
            OutputSpec::new(
                "table",
                "transfer.parquet",
                "method, n_per_class, fold, accuracy (mean per-class), seconds",
            ),
            OutputSpec::new(
                "figures",
                "figures",
                "fig9.png: accuracy against training images per class",
            ),
        ]
    }

    fn resources(&self, params: &Params) -> Resources {
        stage_api::device::device_resources(params)
    }

    fn validate(&self, params: &Params) -> Vec<String> {
        let ns = params.int_list("n_per_class");
        if ns.is_empty() {
            return vec!["`n_per_class` lists no N".to_owned()];
        }
        ns.iter()
            .filter(|&&n| n < 1)
            .map(|n| format!("`n_per_class` has {n}; each N must be at least 1"))
            .collect()
    }

    fn run(&self, ctx: &StageContext) -> Result<RunSummary> {
        let params = &ctx.params;
        let layer = params.usize("layer");
        let features_path = ctx.input("features").join(format!("layer{layer}.parquet"));
        if !features_path.exists() {
            return Err(Error::input(
                ctx.input("features"),
                format!("no layer{layer}.parquet: extract layer {layer} (its `layers` param)"),
            ));
        }
        // The ids and labels first (12 bytes a row): the folds, and so the memory the run
        // needs, follow from them; nothing larger is read before it is checked.
        let rows = FeatureRows::open(&features_path)?;
        let mut ids_by_label: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for (&id, &label) in rows.image_ids.iter().zip(&rows.labels) {
            ids_by_label.entry(label).or_default().push(id);
        }
        let classes = ids_by_label.keys().copied().max().unwrap_or(0).max(0) as usize + 1;
        let architecture = read_architecture(ctx.input("model"))?;
        let images = if params.bool("scratch") {
            Some(ImagesShape::of(ctx.input("images"))?)
        } else {
            None
        };
        let need = transfer_need(
            params,
            &ids_by_label,
            rows.image_ids.len(),
            rows.dim,
            classes,
            images,
            &architecture,
        )?;
        need.check(
            (params.int("memory_limit_mb") as u64).saturating_mul(1_000_000),
            "lower n_per_class / max_test_per_class (or set scratch: false)",
        )?;
        drop(rows);
        let features = read_features(&features_path)?;
        let row_of: BTreeMap<i64, usize> = features
            .image_ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i))
            .collect();

        let scratch = params.bool("scratch");
        let (store, store_index) = if scratch {
            let store = ImageStore::load(ctx.input("images"))?;
            let index: BTreeMap<i64, usize> = store
                .image_ids
                .iter()
                .enumerate()
                .map(|(i, &id)| (id, i))
                .collect();
            if let Some(missing) = features.image_ids.iter().find(|id| !index.contains_key(id)) {
                return Err(Error::input(
                    ctx.input("images"),
                    format!(
                        "image {missing} has features but is not in these images: wire the \
                         images the `extract` stage read"
                    ),
                ));
            }
            (Some(store), index)
        } else {
            (None, BTreeMap::new())
        };
        let config = ScratchConfig {
            architecture,
            steps: params.usize("scratch_steps"),
            batch_size: params.usize("scratch_batch_size"),
            learning_rate: params.float("scratch_learning_rate"),
            momentum: 0.9,
            weight_decay: params.float("scratch_weight_decay"),
            init_std: params.float("scratch_init_std"),
            filter_rms_radius: params.float("filter_rms_radius"),
        };

        let ns: Vec<usize> = params
            .int_list("n_per_class")
            .iter()
            .map(|&n| n as usize)
            .collect();
        let task = Experiments {
            ctx,
            ids_by_label: &ids_by_label,
            features: &features,
            row_of: &row_of,
            classes,
            store: store.as_ref(),
            store_index: &store_index,
            config: &config,
        };
        let rows = cuda_backend::run_on(Device::of(params)?, task)
            .map_err(|e| Error::Config(e.to_string()))??;

        let figures = ctx.output("figures");
        std::fs::create_dir_all(figures).map_err(|e| Error::io(figures, e))?;
        plot_fig9(&rows, &figures.join("fig9.png"))?;
        TransferRow::write(&rows.table(), ctx.output("table"), &ctx.provenance)?;
        let mut summary = RunSummary::default();
        for method in ["pretrained", "scratch"] {
            let line: Vec<String> = ns
                .iter()
                .filter_map(|&n| {
                    let (mean, std) = rows.mean_std(method, n)?;
                    Some(format!(
                        "{n}/class {:.1} ± {:.1}%",
                        100.0 * mean,
                        100.0 * std
                    ))
                })
                .collect();
            if !line.is_empty() {
                summary = summary.line(format!("{method}: {}", line.join(", ")));
            }
        }
        Ok(summary)
    }
}

/// Every (fold, N) experiment, the scratch arm on the backend the `device` param picked.
struct Experiments<'a> {
    ctx: &'a StageContext,
    ids_by_label: &'a BTreeMap<i32, Vec<i64>>,
    features: &'a FeatureMatrix,
    row_of: &'a BTreeMap<i64, usize>,
    classes: usize,
    store: Option<&'a ImageStore>,
    store_index: &'a BTreeMap<i64, usize>,
    config: &'a ScratchConfig,
}

impl cuda_backend::BackendTask for Experiments<'_> {
    type Output = Result<Rows>;

    fn run<B: Backend>(self, backend: B) -> Result<Rows> {
        let Experiments {
            ctx,
            ids_by_label,
            features,
            row_of,
            classes,
            store,
            store_index,
            config,
        } = self;
        let params = &ctx.params;
        let ns: Vec<usize> = params
            .int_list("n_per_class")
            .iter()
            .map(|&n| n as usize)
            .collect();
        let folds = params.usize("folds");
        let seed = params.int("seed") as u64;
        let max_test = params
            .optional_int("max_test_per_class")
            .map(|m| m as usize);
        let mut rows = Rows::default();
        let bar = ctx.progress_bar((ns.len() * folds) as u64, "transfer (N x folds)");
        for fold in 0..folds {
            for &n in &ns {
                let split = split_per_class(ids_by_label, n, max_test, seed, fold as u64)
                    .map_err(Error::Config)?;
                let started = Instant::now();
                let gather = |ids: &BTreeSet<i64>| {
                    let mut values = Vec::with_capacity(ids.len() * features.dim);
                    let mut labels = Vec::with_capacity(ids.len());
                    for id in ids {
                        let r = row_of[id];
                        values.extend_from_slice(
                            &features.values[r * features.dim..(r + 1) * features.dim],
                        );
                        labels.push(features.labels[r] as usize);
                    }
                    (normalised_with_bias(&values, features.dim), labels)
                };
                let (x_train, y_train) = gather(&split.train);
                let (x_test, y_test) = gather(&split.test);
                let weights = train_softmax(
                    &x_train,
                    &y_train,
                    classes,
                    params.float("softmax_l2"),
                    params.usize("softmax_steps"),
                    1.0,
                );
                let accuracy = mean_class_accuracy(&predict(&weights, &x_test), &y_test, classes);
                rows.push(
                    "pretrained",
                    n,
                    fold,
                    accuracy,
                    started.elapsed().as_secs_f64(),
                );

                if let Some(store) = &store {
                    let started = Instant::now();
                    let pick = |ids: &BTreeSet<i64>| {
                        store.subset(&ids.iter().map(|id| store_index[id]).collect::<Vec<_>>())
                    };
                    let (train_set, test_set) = (pick(&split.train), pick(&split.test));
                    let run_seed = stream_key(&[seed, fold as u64, n as u64]);
                    let accuracy = train_from_scratch(
                        backend.clone(),
                        config,
                        classes,
                        &train_set,
                        &test_set,
                        run_seed,
                    )?;
                    rows.push(
                        "scratch",
                        n,
                        fold,
                        accuracy,
                        started.elapsed().as_secs_f64(),
                    );
                }
                bar.inc(1);
            }
        }
        bar.finish_and_clear();
        Ok(rows)
    }
}

/// Trains `config.architecture` from a fresh initialisation on `train`
/// ([`training::train_fixed_steps`]) and returns its mean per-class accuracy on `test`
/// (centre crop).
pub fn train_from_scratch<B: Backend>(
    backend: B,
    config: &ScratchConfig,
    classes: usize,
    train: &ImageStore,
    test: &ImageStore,
    seed: u64,
) -> Result<f64> {
    let (network, mean) = train_fixed_steps(backend, config, classes, train, seed)?;
    let probabilities = predict_probabilities(&network, test, &mean, Crops::Centre, 128);
    let predicted: Vec<usize> = probabilities
        .chunks(classes)
        .map(|row| (0..classes).fold(0, |best, k| if row[k] > row[best] { k } else { best }))
        .collect();
    Ok(mean_class_accuracy(&predicted, &test.labels, classes))
}

/// The rows of the `table` artifact.
#[derive(Default)]
struct Rows {
    method: Vec<String>,
    n: Vec<i64>,
    fold: Vec<i64>,
    accuracy: Vec<f64>,
    seconds: Vec<f64>,
}

impl Rows {
    fn push(&mut self, method: &str, n: usize, fold: usize, accuracy: f64, seconds: f64) {
        self.method.push(method.to_owned());
        self.n.push(n as i64);
        self.fold.push(fold as i64);
        self.accuracy.push(accuracy);
        self.seconds.push(seconds);
    }

    /// Mean and sample std over folds of one method at one N.
    fn mean_std(&self, method: &str, n: usize) -> Option<(f64, f64)> {
        let values: Vec<f64> = (0..self.n.len())
            .filter(|&i| self.method[i] == method && self.n[i] == n as i64)
            .map(|i| self.accuracy[i])
            .collect();
        mean_std(&values)
    }

    /// The `table` artifact's rows.
    fn table(&self) -> Vec<TransferRow> {
        (0..self.n.len())
            .map(|i| TransferRow {
                method: self.method[i].clone(),
                n_per_class: self.n[i],
                fold: self.fold[i],
                accuracy: self.accuracy[i],
                seconds: self.seconds[i],
            })
            .collect()
    }
}

/// Mean and sample standard deviation (0 for a single value); `None` for no values.
pub fn mean_std(values: &[f64]) -> Option<(f64, f64)> {
    stats::Summary::of(values).map(|s| (s.mean, s.std.unwrap_or(0.0)))
}

/// Fig. 9: mean accuracy (%) against training images per class, one line per method with
/// ±1 std bars over folds, axis titles, tick labels and a legend.
fn plot_fig9(rows: &Rows, path: &Path) -> Result<()> {
    let mut ns: Vec<i64> = rows.n.clone();
    ns.sort_unstable();
    ns.dedup();
    let x_max = ns.last().copied().unwrap_or(1).max(1) as f64;
    let series = [
        (
            "pretrained",
            "pretrained (softmax on frozen layer 7)",
            plots::PALETTE[0],
        ),
        ("scratch", "trained from scratch", plots::PALETTE[1]),
    ]
    .into_iter()
    .map(|(method, label, colour)| {
        let points: Vec<(f64, f64, f64)> = ns
            .iter()
            .filter_map(|&n| {
                let (mean, std) = rows.mean_std(method, n as usize)?;
                Some((n as f64, 100.0 * mean, 100.0 * std))
            })
            .collect();
        plots::Series {
            label: label.to_owned(),
            colour,
            points: points.iter().map(|p| (p.0, p.1)).collect(),
            error_bars: Some(points.iter().map(|p| p.2).collect()),
        }
    })
    .filter(|s| !s.points.is_empty())
    .collect();
    plots::Figure {
        panels: vec![plots::Panel {
            title: "Fig. 9: accuracy vs training images per class".to_owned(),
            x_title: "training images per class (N)".to_owned(),
            y_title: "mean per-class accuracy (%)".to_owned(),
            x_range: (0.0, x_max * 1.05),
            y_range: (0.0, 100.0),
            series,
            x_integer: false,
        }],
        columns: 1,
        panel_size: (560, 380),
    }
    .save_png(path)
    .map_err(|e| Error::io(path, std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use engine::{Architecture, CpuBackend};

    use super::*;

    /// Class 0: the top half bright; class 1: the bottom half; with per-image noise.
    fn halves(n_per_class: usize, seed: u64) -> ImageStore {
        use rand::{Rng, SeedableRng};
        let size = 32;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut store = ImageStore {
            image_size: size,
            pixels: Vec::new(),
            labels: Vec::new(),
            image_ids: Vec::new(),
            class_names: vec!["top".into(), "bottom".into()],
        };
        for i in 0..2 * n_per_class {
            let label = i % 2;
            for y in 0..size {
                for _x in 0..size {
                    let bright = (y < size / 2) == (label == 0);
                    let base: u8 = if bright { 190 } else { 40 };
                    let value = base.saturating_add(rng.random_range(0..40));
                    store.pixels.extend([value; 3]);
                }
            }
            store.labels.push(label);
            store.image_ids.push(i as i64);
        }
        store
    }

    fn config() -> ScratchConfig {
        ScratchConfig {
            architecture: Architecture::from_name("zf_small", 2).unwrap(),
            steps: 30,
            batch_size: 16,
            learning_rate: 0.01,
            momentum: 0.9,
            weight_decay: 5e-4,
            init_std: 0.03,
            filter_rms_radius: 0.1,
        }
    }

    #[test]
    fn a_network_trained_from_scratch_learns_a_separable_task_and_is_deterministic() {
        let (train, test) = (halves(8, 1), halves(10, 2));
        let accuracy = train_from_scratch(CpuBackend, &config(), 2, &train, &test, 7).unwrap();
        assert!(accuracy >= 0.9, "accuracy {accuracy}");
        let again = train_from_scratch(CpuBackend, &config(), 2, &train, &test, 7).unwrap();
        assert_eq!(accuracy.to_bits(), again.to_bits());
    }

    #[test]
    fn a_crop_larger_than_the_images_is_a_config_error() {
        let mut small = halves(2, 1);
        small.image_size = 16;
        small.pixels.truncate(4 * 16 * 16 * 3);
        let error = train_from_scratch(CpuBackend, &config(), 2, &small, &small, 0).unwrap_err();
        assert!(error.to_string().contains("takes 28x28 crops"), "{error}");
    }

    #[test]
    fn mean_and_std_are_over_folds() {
        assert_eq!(mean_std(&[]), None);
        // The sample standard deviation (n - 1): sqrt(0.02 / 1), not the population's 0.1.
        let (mean, std) = mean_std(&[0.5, 0.7]).unwrap();
        assert!((mean - 0.6).abs() < 1e-12 && (std - 0.02f64.sqrt()).abs() < 1e-12);
        assert_eq!(mean_std(&[0.5]), Some((0.5, 0.0)));
    }
}
