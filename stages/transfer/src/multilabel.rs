//! Kind `transfer_multilabel` (§5.2, Table 6): PASCAL VOC 2012 with the pretrained features.
//!
//! "A 20-way softmax on the pretrained features trained on train+val, results on test ...
//! Per-class AP is the metric (multi-label images, single exclusive prediction)." The softmax
//! reads the frozen layer-7 features; an image with several classes contributes one training
//! row per class it contains (its difficult-only classes excluded). Each class's average
//! precision ranks the test images by that class's softmax probability, with the VOC 2012
//! protocol: all-points interpolated AP (the area under the precision envelope), and images
//! where the class is marked only *difficult* left out of that class's ranking.
//!
//! VOC 2012's test annotations are not public (the paper used the evaluation server), so
//! the pipeline trains on `train` and tests on `val`; the report says so.

use std::collections::BTreeMap;

use artifacts::features::{FeatureMatrix, FeatureRows, read_features};

use artifacts::multilabels::{MultiLabel, VOC_CLASSES, read_multilabels};
use artifacts::table::TableRow;
use artifacts::table::rows::TransferApRow;
use linear_models::{normalised_with_bias, train_softmax};
use stage_api::memory::MemoryNeed;
use stage_api::{
    Error, InputSpec, OutputSpec, ParamSpec, Result, RunSummary, StageContext, StageKind,
};

pub struct TransferMultilabel;

impl StageKind for TransferMultilabel {
    fn name(&self) -> &'static str {
        "transfer_multilabel"
    }

    fn version(&self) -> u32 {
        // 2: the CPU backend's fixed arithmetic (the same bits on every CPU path).
        // 3: the softmax's dot products in a fixed 8-way order; with fewer rows than
        // dimensions it descends through the rows' Gram matrix (same iterates, other rounding).
        3
    }

    fn summary(&self) -> &'static str {
        "Softmax on frozen pretrained features of a multi-label set, per-class average precision (Table 6)."
    }

    fn peak_memory(&self) -> &'static str {
        "Train and test features (N F 4 bytes) and their f64 normalised copies (N (F + 1) 8 bytes), one f64 row per (image, label) pair, the softmax and the test probabilities (N_test K 8 bytes). Computed from the headers and the labels before the features are read and checked against memory_limit_mb (a run over it is refused, with its parts); outside it: the labels (~100 bytes an image)."
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::int(
                "layer",
                7,
                1,
                7,
                "Which frozen layer's features the softmax reads (paper: 7).",
            ),
            ParamSpec::float("softmax_l2", 1e-4, 0.0, 10.0, "Softmax L2 regularisation."),
            ParamSpec::int("softmax_steps", 300, 1, 100_000, "Softmax gradient steps."),
            ParamSpec::str_list(
                "class_names",
                &[],
                "Names of the classes by index, for the table (VOC's 20 in reader order when empty and there are 20).",
            ),
            ParamSpec::int(
                "memory_limit_mb",
                16_384,
                1,
                i64::MAX,
                "The most the run may hold: its need (both feature matrices, their normalised \
                 copies, a row per (image, label), the softmax, the probabilities) is computed \
                 from the headers and the labels and checked before the features are read; a \
                 run over it is refused with its parts.",
            ),
        ]
    }

    fn inputs(&self) -> Vec<InputSpec> {
        vec![
            InputSpec::artifact(
                "train_features",
                "extract.features of the training images (VOC train / trainval)",
            ),
            InputSpec::artifact(
                "train_labels",
                "the training images' multilabels artifact (voc2012.multilabels)",
            ),
            InputSpec::artifact("test_features", "extract.features of the test images"),
            InputSpec::artifact("test_labels", "the test images' multilabels artifact"),
        ]
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec::new(
            "table6",
            "table6.parquet",
            "class, class_name, average_precision, positives",
        )]
    }

    fn run(&self, ctx: &StageContext) -> Result<RunSummary> {
        let layer = ctx.params.usize("layer");
        let features = |input: &str| -> Result<FeatureMatrix> {
            let path = ctx.input(input).join(format!("layer{layer}.parquet"));
            if !path.exists() {
                return Err(Error::input(
                    ctx.input(input),
                    format!("no layer{layer}.parquet: extract layer {layer} (its `layers` param)"),
                ));
            }
            Ok(read_features(&path)?)
        };
        let labels = |input: &str| -> Result<BTreeMap<i64, MultiLabel>> {
            Ok(read_multilabels(ctx.input(input))?
                .into_iter()
                .map(|row| (row.image_id, row))
                .collect())
        };
        let (train_labels, test_labels) = (labels("train_labels")?, labels("test_labels")?);
        // The need follows from the features' headers and the labels (rows, dimensions, one
        // training row per (image, label)); checked before the features are read.
        let layer_path = |input: &str| ctx.input(input).join(format!("layer{layer}.parquet"));
        if layer_path("train_features").exists() && layer_path("test_features").exists() {
            let train_rows = FeatureRows::open(&layer_path("train_features"))?;
            let test_rows = FeatureRows::open(&layer_path("test_features"))?;
            let pairs: usize = train_rows
                .image_ids
                .iter()
                .map(|id| train_labels.get(id).map_or(0, |l| l.labels.len()))
                .sum();
            multilabel_need(
                (train_rows.image_ids.len(), test_rows.image_ids.len()),
                pairs,
                train_rows.dim,
                VOC_CLASSES
                    .len()
                    .max(ctx.params.str_list("class_names").len()),
            )
            .check(
                (ctx.params.int("memory_limit_mb") as u64).saturating_mul(1_000_000),
                "run on fewer images (the layer's features are read whole)",
            )?;
        }
        let (train, test) = (features("train_features")?, features("test_features")?);
        let max_label = train_labels
            .values()
            .chain(test_labels.values())
            .flat_map(|row| row.labels.iter().chain(&row.difficult))
            .copied()
            .max()
            .unwrap_or(-1);
        // A multilabels artifact numbers VOC's 20 classes unless the class names say otherwise.
        let given_names = ctx.params.str_list("class_names");
        let declared = if given_names.is_empty() {
            VOC_CLASSES.len()
        } else {
            given_names.len()
        };
        let classes = declared.max((max_label + 1).max(0) as usize);
        if classes < 2 {
            return Err(Error::input(
                ctx.input("train_labels"),
                "fewer than 2 classes among the labels",
            ));
        }

        // One training row per (image, class present and not difficult-only).
        let x_all = normalised_with_bias(&train.values, train.dim);
        let d = train.dim + 1;
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for (row, id) in train.image_ids.iter().enumerate() {
            let Some(labels) = train_labels.get(id) else {
                return Err(Error::input(
                    ctx.input("train_labels"),
                    format!(
                        "image {id} has features but no labels here: wire the multilabels of the \
                         images `extract` read"
                    ),
                ));
            };
            for &class in &labels.labels {
                x.extend_from_slice(&x_all[row * d..(row + 1) * d]);
                y.push(class as usize);
            }
        }
        if y.is_empty() {
            return Err(Error::input(
                ctx.input("train_labels"),
                "no training image has a (non-difficult) label",
            ));
        }
        let weights = train_softmax(
            &x,
            &y,
            classes,
            ctx.params.float("softmax_l2"),
            ctx.params.usize("softmax_steps"),
            1.0,
        );
        let x_test = normalised_with_bias(&test.values, test.dim);
        let probabilities: Vec<Vec<f64>> = x_test
            .chunks(test.dim + 1)
            .map(|row| softmax_row(&weights, row))
            .collect();

        let names = class_names(&given_names, classes);
        let (mut ap, mut positives) = (Vec::new(), Vec::new());
        // Column `class` of every row: indexing reads more plainly than a transposition.
        #[allow(clippy::needless_range_loop)]
        for class in 0..classes {
            let mut scores = Vec::new();
            let mut is_positive = Vec::new();
            for (row, id) in test.image_ids.iter().enumerate() {
                let Some(labels) = test_labels.get(id) else {
                    return Err(Error::input(
                        ctx.input("test_labels"),
                        format!("image {id} has features but no labels here"),
                    ));
                };
                let positive = labels.labels.contains(&(class as i32));
                if !positive && labels.difficult.contains(&(class as i32)) {
                    continue; // VOC: difficult-only images do not count either way.
                }
                scores.push(probabilities[row][class]);
                is_positive.push(positive);
            }
            positives.push(is_positive.iter().filter(|p| **p).count() as i64);
            ap.push(average_precision(&scores, &is_positive));
        }
        let measured: Vec<f64> = ap.iter().copied().filter(|v| v.is_finite()).collect();
        let mean_ap = measured.iter().sum::<f64>() / measured.len().max(1) as f64;
        let table: Vec<TransferApRow> = (0..classes)
            .map(|class| TransferApRow {
                class: class as i64,
                class_name: names[class].clone(),
                average_precision: ap[class],
                positives: positives[class],
            })
            .collect();
        TransferApRow::write(&table, ctx.output("table6"), &ctx.provenance)?;
        Ok(RunSummary::default().line(format!(
            "mean AP {:.1}% over {} classes ({} training rows from {} images, {} test images)",
            100.0 * mean_ap,
            measured.len(),
            y.len(),
            train.image_ids.len(),
            test.image_ids.len()
        )))
    }
}

fn class_names(given: &[String], classes: usize) -> Vec<String> {
    (0..classes)
        .map(|k| {
            given
                .get(k)
                .cloned()
                .or_else(|| (classes == VOC_CLASSES.len()).then(|| VOC_CLASSES[k].to_owned()))
                .unwrap_or_else(|| format!("class {k}"))
        })
        .collect()
}

fn softmax_row(weights: &[Vec<f64>], row: &[f64]) -> Vec<f64> {
    let scores: Vec<f64> = weights
        .iter()
        .map(|w| w.iter().zip(row).map(|(a, b)| a * b).sum())
        .collect();
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = scores
        .iter()
        .map(|s| engine::scalar::Scalar::exp_everywhere(s - max))
        .collect();
    let total: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / total).collect()
}

/// VOC 2010+ average precision: rank by score (ties keep input order), then the area under
/// the precision-recall curve with precision replaced by its running maximum from the right.
/// NaN when there is no positive.
pub fn average_precision(scores: &[f64], is_positive: &[bool]) -> f64 {
    let total = is_positive.iter().filter(|p| **p).count();
    if total == 0 {
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut recall, mut precision) = (0usize, Vec::new(), Vec::new());
    for (rank, &i) in order.iter().enumerate() {
        tp += is_positive[i] as usize;
        recall.push(tp as f64 / total as f64);
        precision.push(tp as f64 / (rank + 1) as f64);
    }
    for i in (0..precision.len().saturating_sub(1)).rev() {
        precision[i] = precision[i].max(precision[i + 1]);
    }
    let mut ap = 0.0;
    let mut previous_recall = 0.0;
    for (r, p) in recall.iter().zip(&precision) {
        ap += (r - previous_recall) * p;
        previous_recall = *r;
    }
    ap
}

/// A `transfer_multilabel` run's need: `rows` (train, test) of `dim` features, `pairs`
/// training rows (one per image and label) and `classes` outputs. Classes are counted at
/// least at the declared names (the labels may add more: a few KB each).
fn multilabel_need(rows: (usize, usize), pairs: usize, dim: usize, classes: usize) -> MemoryNeed {
    let (train, test, pairs) = (rows.0 as u64, rows.1 as u64, pairs as u64);
    let (f, d, k) = (dim as u64, dim as u64 + 1, classes as u64);
    MemoryNeed {
        parts: vec![
            (
                format!("{train} training rows of {dim} features and their normalised copy"),
                train * (f * 4 + d * 8),
            ),
            (format!("{pairs} (image, label) rows"), pairs * d * 8),
            (
                "the softmax".into(),
                linear_models::softmax_memory_bytes(pairs as usize, d as usize, classes),
            ),
            (
                format!("{test} test rows, their normalised copy and probabilities"),
                test * (f * 4 + d * 8 + k * 8),
            ),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_precision_is_one_for_a_perfect_ranking_and_matches_a_hand_computed_case() {
        assert_eq!(
            average_precision(&[0.9, 0.8, 0.1], &[true, true, false]),
            1.0
        );
        // Ranking: P, N, P, N. Precision at the positives: 1 and 2/3; the envelope keeps them.
        // AP = 0.5 * 1 + 0.5 * 2/3.
        let ap = average_precision(&[0.9, 0.8, 0.7, 0.6], &[true, false, true, false]);
        assert!((ap - (0.5 + 1.0 / 3.0)).abs() < 1e-12, "{ap}");
        // Ranking N, P: precision 1/2 at full recall.
        assert_eq!(average_precision(&[0.9, 0.1], &[false, true]), 0.5);
        assert!(average_precision(&[0.3], &[false]).is_nan());
    }

    #[test]
    fn twenty_classes_get_voc_names_unless_named() {
        assert_eq!(class_names(&[], 20)[14], "person");
        assert_eq!(class_names(&["a".into()], 2), ["a", "class 1"]);
    }
}
