//! §3: the training section, its per-epoch table, the curves figure and the final centre / 10-crop
//! validation errors.

use super::*;

/// §3: the training curve and the final centre / 10-crop validation errors.
pub fn training(
    metrics_path: &Path,
    evaluation: Option<&Path>,
    paper_scale: bool,
    figures: &Path,
) -> Result<Section> {
    let metrics = TrainMetricsRow::read(metrics_path)?;
    let p = metrics_path;
    let stage = stage_of(p);
    let mut section = Section::new("Training", "§3", Some(stage.clone()));
    let mut table = MdTable::new(&[
        "epoch",
        "train loss",
        "train top-1 err",
        "val loss",
        "val top-1 err",
        "val top-5 err",
        "lr",
        "filters renormalised",
        "seconds",
    ]);
    let (epoch, renorm) = (
        &field!(metrics, epoch),
        &field!(metrics, filters_renormalised),
    );
    let (tl, te, vl, v1, v5, lr, secs) = (
        &field!(metrics, train_loss),
        &field!(metrics, train_top1_error),
        &field!(metrics, val_loss),
        &field!(metrics, val_top1_error),
        &field!(metrics, val_top5_error),
        &field!(metrics, learning_rate),
        &field!(metrics, seconds),
    );
    for i in 0..metrics.len() {
        table.row(vec![
            epoch[i].to_string(),
            format!("{:.4}", tl[i]),
            format!("{:.2}%", 100.0 * te[i]),
            format!("{:.4}", vl[i]),
            format!("{:.2}%", 100.0 * v1[i]),
            format!("{:.2}%", 100.0 * v5[i]),
            format!("{:.0e}", lr[i]),
            renorm[i].to_string(),
            format!("{:.0}", secs[i]),
        ]);
    }
    section.table(table);
    if !metrics.is_empty() {
        let file = format!("{stage}_training_curves.png");
        training_curves(epoch, (te, v1), (tl, vl), &figures.join(&file))?;
        section.figure("training curves", &file, false);
    }
    if let Some(path) = evaluation {
        let eval = EvaluationRow::read(path)?;
        section.text("Final validation error (§3: \"10 different sub-crops ... averaged\"):");
        let mut table = MdTable::new(&[
            "crops",
            "images",
            "top-1 error",
            "top-5 error",
            "paper, 1 convnet as Fig. 3 (ImageNet val)",
        ]);
        let crops = &field!(eval, crops);
        let n = &field!(eval, n_images);
        let (e1, e5) = (&field!(eval, top1_error), &field!(eval, top5_error));
        for i in 0..eval.len() {
            let paper = match (crops[i].as_str(), paper_scale) {
                ("ten", true) => format!(
                    "38.4 / 16.5 (ours − paper: {:+.1} / {:+.1})",
                    100.0 * e1[i] - 38.4,
                    100.0 * e5[i] - 16.5
                ),
                ("ten", false) => "38.4 / 16.5 — not comparable: different data".to_owned(),
                _ => "–".to_owned(),
            };
            table.row(vec![
                crops[i].clone(),
                n[i].to_string(),
                format!("{:.2}%", 100.0 * e1[i]),
                format!("{:.2}%", 100.0 * e5[i]),
                paper,
            ]);
        }
        section.table(table);
    }
    Ok(section)
}

/// Top-1 error and loss per epoch, training (dropout active) and validation (centre crop).
fn training_curves(
    epochs: &[i64],
    errors: (&[f64], &[f64]),
    losses: (&[f64], &[f64]),
    path: &Path,
) -> Result<()> {
    let x: Vec<f64> = epochs.iter().map(|&e| e as f64).collect();
    let series = |values: (&[f64], &[f64]), scale: f64| {
        [("training", values.0), ("validation", values.1)]
            .into_iter()
            .enumerate()
            .map(|(k, (label, v))| plots::Series {
                label: label.to_owned(),
                colour: plots::PALETTE[k],
                points: x.iter().copied().zip(v.iter().map(|y| scale * y)).collect(),
                error_bars: None,
            })
            .collect::<Vec<_>>()
    };
    let x_range = (x[0] - 0.2, x[x.len() - 1] + 0.2);
    let all = |values: (&[f64], &[f64]), scale: f64| {
        values
            .0
            .iter()
            .chain(values.1)
            .map(|v| scale * v)
            .collect::<Vec<_>>()
    };
    plots::Figure {
        panels: vec![
            plots::Panel {
                title: "top-1 error".to_owned(),
                x_title: "epoch".to_owned(),
                y_title: "top-1 error (%)".to_owned(),
                x_range,
                y_range: plots::padded_range(all(errors, 100.0), true),
                series: series(errors, 100.0),
                x_integer: true,
            },
            plots::Panel {
                title: "loss".to_owned(),
                x_title: "epoch".to_owned(),
                y_title: "cross-entropy".to_owned(),
                x_range,
                y_range: plots::padded_range(all(losses, 1.0), true),
                series: series(losses, 1.0),
                x_integer: true,
            },
        ],
        columns: 2,
        panel_size: (380, 280),
    }
    .save_png(path)
    .map_err(|e| Error::io(path, std::io::Error::other(e)))
}
