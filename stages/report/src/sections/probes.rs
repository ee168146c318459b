//! §5 on the features: the per-layer probes and their trend across layers (§5.3, Table 7), and the
//! overlap removal before transfer (§5.2).

use super::*;

/// Least-squares slope weights for x values: w_i = (x_i − x̄) / Σ (x − x̄)².
fn slope_weights(xs: &[f64]) -> Vec<f64> {
    let m = mean(xs);
    let ss: f64 = xs.iter().map(|x| (x - m) * (x - m)).sum();
    xs.iter().map(|x| (x - m) / ss).collect()
}

/// Table 7: probe accuracy per layer, and the trend across layers.
pub fn probe(path: &Path) -> Result<Section> {
    let table = ProbeRow::read(path)?;
    let folds = table.first().map_or(0, |row| row.folds);
    let mut section = Section::new("Per-layer probes", "§5.3, Table 7", Some(stage_of(path)));
    section.text(format!(
        "Mean per-class accuracy (%) of a linear SVM and a softmax trained on each layer's \
         features of the held-out classes, mean ± std over n = {folds} folds. The paper's \
         columns are Caltech-101 (30/class) and Caltech-256 (60/class) with ImageNet features: \
         quoted for the trend across layers, not comparable in value."
    ));
    let classifiers = &field!(table, classifier);
    let layers = &field!(table, layer);
    let (means, stds) = (&field!(table, mean), &field!(table, std));
    let paper = |classifier: &str, layer: i64| {
        TABLE7
            .iter()
            .find(|r| r.classifier == classifier && r.layer == layer)
    };
    let mut md = MdTable::new(&[
        "classifier (layer)",
        "ours",
        "paper, Caltech-101",
        "paper, Caltech-256",
    ]);
    let mut order: Vec<usize> = (0..table.len()).collect();
    order.sort_by_key(|&i| (classifiers[i] != "svm", layers[i]));
    let summary = |i: usize| Summary::from_parts(means[i], stds[i], folds.max(0) as usize);
    for &i in &order {
        let name = if classifiers[i] == "svm" {
            "SVM"
        } else {
            "Softmax"
        };
        let (c101, c256) = paper(classifiers[i].as_str(), layers[i]).map_or(
            ("–".to_owned(), "–".to_owned()),
            |r| {
                let ((a, b), (c, d)) = (r.caltech101, r.caltech256);
                (format!("{a:.1} ± {b:.1}"), format!("{c:.1} ± {d:.1}"))
            },
        );
        md.row(vec![
            format!("{name} ({})", layers[i]),
            summary(i).format(100.0, 1),
            c101,
            c256,
        ]);
    }
    section.table(md);
    let paper_slope = |classifier: &str, column: usize| {
        let rows: Vec<(f64, f64)> = TABLE7
            .iter()
            .filter(|r| r.classifier == classifier)
            .map(|r| {
                let value = if column == 0 {
                    r.caltech101.0
                } else {
                    r.caltech256.0
                };
                (r.layer as f64, value)
            })
            .collect();
        let w = slope_weights(&rows.iter().map(|r| r.0).collect::<Vec<_>>());
        rows.iter().zip(&w).map(|(r, w)| r.1 * w).sum::<f64>()
    };
    let mut claim = Claim::new(
        "Table 7",
        "\"a steady improvement as we ascend the model\" (§5.3)",
        "least-squares slope of probe accuracy against layer number, points per layer, from \
         each layer's fold spread (layers treated as independent, though they share folds)",
    )
    .unit("points/layer", 2)
    .paper_effect(format!(
        "SVM slope {:+.2} (Caltech-101) and {:+.2} (Caltech-256) points per layer over its \
         layers 1-5, 7; softmax {:+.2} and {:+.2} over layers 5, 7",
        paper_slope("svm", 0),
        paper_slope("svm", 1),
        paper_slope("softmax", 0),
        paper_slope("softmax", 1)
    ));
    for (classifier, label) in [("svm", "SVM"), ("softmax", "softmax")] {
        let rows: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| classifiers[i] == classifier)
            .collect();
        if rows.len() < 2 {
            continue;
        }
        let xs: Vec<f64> = rows.iter().map(|&i| layers[i] as f64).collect();
        let terms: Vec<(f64, Summary)> = slope_weights(&xs)
            .into_iter()
            .zip(&rows)
            .map(|(w, &i)| {
                let s = summary(i);
                (
                    w,
                    Summary {
                        mean: 100.0 * s.mean,
                        std: s.std.map(|v| 100.0 * v),
                        n: s.n,
                    },
                )
            })
            .collect();
        if let Some(e) = Estimate::linear_combination(&terms) {
            claim = claim.compare(Comparison::new(
                format!(
                    "{label}, layers {}",
                    rows.iter()
                        .map(|&i| layers[i].to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                e,
            ));
        }
    }
    section.claim(claim);
    Ok(section)
}

/// §5.2 overlap removal: what dedup found.
pub fn dedup(path: &Path) -> Result<Section> {
    let table = DedupMatchRow::read(path)?;
    let labels = &field!(table, query_label);
    let queries = &field!(table, query_id);
    let references = &field!(table, reference_id);
    let mut per_class: BTreeMap<i64, std::collections::BTreeSet<i64>> = BTreeMap::new();
    for (label, query) in labels.iter().zip(queries) {
        per_class.entry(*label).or_default().insert(*query);
    }
    let removed: std::collections::BTreeSet<i64> = references.iter().copied().collect();
    let mut section = Section::new("Overlap removal", "§5.2", Some(stage_of(path)));
    section.text(
        "Target images whose normalised correlation with a training image is above the \
         threshold, and the training images left out because of them (the paper: 44 of 9,144 \
         Caltech-101 images, at most 10 per class).",
    );
    let mut md = MdTable::new(&["target class", "overlapping target images"]);
    for (label, ids) in &per_class {
        md.row(vec![label.to_string(), ids.len().to_string()]);
    }
    section.table(md);
    let total: usize = per_class.values().map(|s| s.len()).sum();
    let max = per_class.values().map(|s| s.len()).max().unwrap_or(0);
    section.text(format!(
        "{total} overlapping target images (at most {max} per class); {} training images \
         removed before training.",
        removed.len()
    ));
    Ok(section)
}
