//! Stage kind `invariance` (§4, Fig. 5): vertical translation, scaling and rotation of a few
//! images, and how much the layer-1 and layer-7 feature vectors and the true-class
//! probability change.
//!
//! Transforms act on the network's (mean-subtracted) input crop, resampled bilinearly about
//! its centre; pixels brought in from outside are the mean pixel (0 after subtraction). The
//! distance plotted is the Euclidean distance between the feature vectors of the original and
//! the transformed image divided by the norm of the original's — Fig. 5's curves are compared
//! across layers, whose scales differ by orders of magnitude, so a relative distance is used.
//! Layer 1 is the rectified conv1 output; layer 7 the rectified fc7 output.

use std::path::Path;

use artifacts::images::ImagesReader;
use artifacts::table::TableRow;
use artifacts::table::rows::InvarianceRow;
use engine::deconv::feature_op;
use engine::weights::load_model;
use engine::{Backend, Mode, Network, Op};
use stage_api::{
    Error, InputSpec, OutputSpec, ParamSpec, Params, Resources, Result, RunSummary, StageContext,
    StageKind,
};

pub struct Invariance;

/// The measurements, one entry per (image, transform, amount).
#[derive(Debug, Default)]
struct Curves {
    transform: Vec<String>,
    amount: Vec<f64>,
    image_id: Vec<i64>,
    layer1: Vec<f64>,
    layer7: Vec<f64>,
    probability: Vec<f64>,
}

/// The three sweeps of Fig. 5.
const TRANSFORMS: [&str; 3] = ["translation", "scale", "rotation"];

impl StageKind for Invariance {
    fn name(&self) -> &'static str {
        "invariance"
    }

    fn version(&self) -> u32 {
        // 2: the CPU backend's fixed arithmetic (the same bits on every CPU path).
        // 3: Fig. 5 drawn with axis titles, tick labels and a legend.
        3
    }

    fn summary(&self) -> &'static str {
        "Layer-1 / layer-7 feature change and true-class probability under translation, scale and rotation (Fig. 5)."
    }

    fn peak_memory(&self) -> &'static str {
        "The model (12 P bytes), up to n_images images, and one forward of an image with its transformed copies at a time: (1 + L)(3 C^2 4 + A) bytes, L the longest of translations, scales, rotations (at most 1,024 each)."
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::int(
                "n_images",
                5,
                1,
                100,
                "Images (the first of each class in turn).",
            ),
            ParamSpec::float_list(
                "translations",
                &[-6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0],
                -1000.0,
                1000.0,
                "Vertical shifts, in input pixels.",
            ),
            ParamSpec::float_list(
                "scales",
                &[0.6, 0.8, 1.0, 1.2, 1.4, 1.6],
                0.05,
                20.0,
                "Scale factors.",
            ),
            ParamSpec::float_list(
                "rotations",
                &[
                    0.0, 30.0, 60.0, 90.0, 120.0, 150.0, 180.0, 210.0, 240.0, 270.0, 300.0, 330.0,
                ],
                -360.0,
                360.0,
                "Rotations, degrees.",
            ),
            stage_api::device::device_param(),
        ]
    }

    fn inputs(&self) -> Vec<InputSpec> {
        vec![
            InputSpec::model(),
            InputSpec::artifact("images", "test images, preprocessed like the training set"),
        ]
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![
            OutputSpec::new(
                "curves",
                "curves.parquet",
                "transform, amount, image_id, layer1_distance, layer7_distance, true_probability",
            ),
            OutputSpec::new(
                "figures",
                "figures",
                "invariance.png: rows translation/scale/rotation, columns layer 1, layer 7, P(true class)",
            ),
        ]
    }

    fn resources(&self, params: &Params) -> Resources {
        stage_api::device::device_resources(params)
    }

    fn run(&self, ctx: &StageContext) -> Result<RunSummary> {
        cuda_backend::run_stage(self, ctx)
    }
}

/// The invariance sweep, on the backend the `device` param picked.
impl cuda_backend::StageBody for Invariance {
    fn run_on_backend<B: Backend>(&self, ctx: &StageContext, backend: B) -> Result<RunSummary> {
        let (network, info) = load_model(ctx.input("model"), backend)?;
        let crop = network.architecture.input_size;
        let layer1 = feature_op(&network, 1).expect("conv1");
        let layer7 = fc7_op(&network).ok_or_else(|| {
            Error::Config(format!(
                "architecture `{}` has no fc7: layer 7 needs it",
                network.architecture.name
            ))
        })?;
        let images = first_per_class(ctx.input("images"), ctx.params.usize("n_images"))?;
        let amounts = [
            ctx.params.float_list("translations"),
            ctx.params.float_list("scales"),
            ctx.params.float_list("rotations"),
        ];
        let mut rows = Curves::default();
        for image in &images {
            let mut base = vec![0.0f32; 3 * crop * crop];
            info.centre_input(&image.pixels, image.width, crop, &mut base);
            let label = image.label.max(0) as usize;
            for (transform, values) in TRANSFORMS.iter().zip(&amounts) {
                let mut batch = base.clone();
                for &amount in values {
                    batch.extend(transformed(&base, crop, transform, amount));
                }
                let acts = network.forward(network.backend.upload_owned(batch), Mode::Eval);
                let probs = network.backend.softmax(acts.logits(), network.classes());
                let (f1, f7) = (
                    network.backend.read(&acts.outputs[layer1]),
                    network.backend.read(&acts.outputs[layer7]),
                );
                let distance = |op: usize, j: usize| {
                    let f = if op == layer1 { &f1 } else { &f7 };
                    let len = f.len() / (values.len() + 1);
                    let (original, moved) = (&f[..len], &f[(j + 1) * len..(j + 2) * len]);
                    let norm = original
                        .iter()
                        .map(|v| (v * v) as f64)
                        .sum::<f64>()
                        .sqrt()
                        .max(1e-12);
                    original
                        .iter()
                        .zip(moved)
                        .map(|(a, b)| ((a - b) * (a - b)) as f64)
                        .sum::<f64>()
                        .sqrt()
                        / norm
                };
                for (j, &amount) in values.iter().enumerate() {
                    rows.transform.push((*transform).to_owned());
                    rows.amount.push(amount);
                    rows.image_id.push(image.image_id);
                    rows.layer1.push(distance(layer1, j));
                    rows.layer7.push(distance(layer7, j));
                    rows.probability
                        .push(probs[(j + 1) * network.classes() + label] as f64);
                }
            }
        }
        let figures = ctx.output("figures");
        std::fs::create_dir_all(figures).map_err(|e| Error::io(figures, e))?;
        let legend: Vec<(i64, String)> = images
            .iter()
            .map(|image| {
                let class = info
                    .class_names
                    .get(image.label.max(0) as usize)
                    .cloned()
                    .unwrap_or_else(|| image.label.to_string());
                (
                    image.image_id,
                    format!("image {} ({class})", image.image_id),
                )
            })
            .collect();
        plot(&rows, &legend, &figures.join("invariance.png"))?;
        let smallest = rows
            .transform
            .iter()
            .zip(&rows.amount)
            .filter(|(t, a)| t.as_str() == "translation" && **a != 0.0)
            .map(|(_, a)| a.abs())
            .fold(f64::INFINITY, f64::min);
        let small_shift = |layer: &[f64]| {
            let picked: Vec<f64> = rows
                .transform
                .iter()
                .zip(&rows.amount)
                .zip(layer)
                .filter(|((t, a), _)| {
                    t.as_str() == "translation" && a.abs() > 0.0 && a.abs() <= smallest
                })
                .map(|(_, d)| *d)
                .collect();
            picked.iter().sum::<f64>() / picked.len().max(1) as f64
        };
        let (d1, d7) = (small_shift(&rows.layer1), small_shift(&rows.layer7));
        let curves: Vec<InvarianceRow> = (0..rows.transform.len())
            .map(|i| InvarianceRow {
                transform: rows.transform[i].clone(),
                amount: rows.amount[i],
                image_id: rows.image_id[i],
                layer1_distance: rows.layer1[i],
                layer7_distance: rows.layer7[i],
                true_probability: rows.probability[i],
            })
            .collect();
        InvarianceRow::write(&curves, ctx.output("curves"), &ctx.provenance)?;
        Ok(RunSummary::default().line(format!(
            "{} images; mean relative feature change for a vertical shift of {smallest} px: layer 1 {d1:.3}, layer 7 {d7:.3}",
            images.len()
        )))
    }
}

/// The rectified fc7 output (the ReLU after the Linear layer named fc7).
fn fc7_op<B: Backend>(network: &Network<B>) -> Option<usize> {
    let linear = network.ops.iter().position(|op| match op {
        Op::Linear { param, .. } => network.params[*param].name == "fc7",
        _ => false,
    })?;
    matches!(network.ops.get(linear + 1), Some(Op::Relu)).then_some(linear + 1)
}

fn first_per_class(path: &Path, n: usize) -> Result<Vec<artifacts::images::ImageRecord>> {
    let mut chosen: Vec<artifacts::images::ImageRecord> = Vec::new();
    for chunk in ImagesReader::open(path, 512)? {
        for image in chunk? {
            if chosen.len() < n && !chosen.iter().any(|c| c.label == image.label) {
                chosen.push(image);
            }
        }
    }
    Ok(chosen)
}

/// Bilinear sample of a CHW plane at (y, x); 0 outside.
fn sample(plane: &[f32], size: usize, y: f64, x: f64) -> f32 {
    let (y0, x0) = (y.floor(), x.floor());
    let (fy, fx) = ((y - y0) as f32, (x - x0) as f32);
    let at = |yy: f64, xx: f64| {
        if yy < 0.0 || xx < 0.0 || yy >= size as f64 || xx >= size as f64 {
            0.0
        } else {
            plane[yy as usize * size + xx as usize]
        }
    };
    let top = at(y0, x0) * (1.0 - fx) + at(y0, x0 + 1.0) * fx;
    let bottom = at(y0 + 1.0, x0) * (1.0 - fx) + at(y0 + 1.0, x0 + 1.0) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// The input transformed about its centre: each output pixel samples the source position the
/// inverse transform maps it to.
pub fn transformed(input: &[f32], size: usize, transform: &str, amount: f64) -> Vec<f32> {
    let centre = (size as f64 - 1.0) / 2.0;
    let (sin, cos) = amount.to_radians().sin_cos();
    let mut out = vec![0.0f32; input.len()];
    for c in 0..3 {
        let plane = &input[c * size * size..(c + 1) * size * size];
        for y in 0..size {
            for x in 0..size {
                let (dy, dx) = (y as f64 - centre, x as f64 - centre);
                let (sy, sx) = match transform {
                    "translation" => (y as f64 - amount, x as f64),
                    "scale" => (centre + dy / amount, centre + dx / amount),
                    _ => (centre + cos * dy - sin * dx, centre + sin * dy + cos * dx),
                };
                out[c * size * size + y * size + x] = sample(plane, size, sy, sx);
            }
        }
    }
    out
}

/// Fig. 5's grid: rows translation / scale / rotation; columns layer-1 distance, layer-7
/// distance, P(true class); one line per image (the legend names each), axis titles and tick
/// labels on every panel.
fn plot(rows: &Curves, legend: &[(i64, String)], path: &Path) -> Result<()> {
    let units = ["vertical shift (px)", "scale factor", "rotation (degrees)"];
    let columns = [
        ("layer 1", "relative distance"),
        ("layer 7", "relative distance"),
        ("output", "P(true class)"),
    ];
    let mut panels = Vec::new();
    for (r, transform) in TRANSFORMS.iter().enumerate() {
        for (c, values) in [&rows.layer1, &rows.layer7, &rows.probability]
            .iter()
            .enumerate()
        {
            let picked: Vec<usize> = (0..rows.transform.len())
                .filter(|&i| rows.transform[i] == *transform)
                .collect();
            let series: Vec<plots::Series> = legend
                .iter()
                .enumerate()
                .map(|(k, (id, label))| plots::Series {
                    label: label.clone(),
                    colour: plots::PALETTE[k % plots::PALETTE.len()],
                    points: picked
                        .iter()
                        .filter(|&&i| rows.image_id[i] == *id)
                        .map(|&i| (rows.amount[i], values[i]))
                        .collect(),
                    error_bars: None,
                })
                .collect();
            let xs = picked.iter().map(|&i| rows.amount[i]);
            let (x_lo, x_hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
                (a.min(x), b.max(x))
            });
            let y_range = if c == 2 {
                (0.0, 1.0)
            } else {
                plots::padded_range(picked.iter().map(|&i| values[i]), true)
            };
            panels.push(plots::Panel {
                title: format!("{transform}: {}", columns[c].0),
                x_title: units[r].to_owned(),
                y_title: columns[c].1.to_owned(),
                x_range: if x_lo.is_finite() {
                    (x_lo, x_hi.max(x_lo + 1e-9))
                } else {
                    (0.0, 1.0)
                },
                y_range,
                series,
                x_integer: false,
            });
        }
    }
    plots::Figure {
        panels,
        columns: 3,
        panel_size: (340, 250),
    }
    .save_png(path)
    .map_err(|e| Error::io(path, std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transforms_move_content_the_way_they_say() {
        // A 5x5 image with one bright pixel at row 1, column 2 (all channels).
        let mut input = vec![0.0f32; 3 * 25];
        for c in 0..3 {
            input[c * 25 + 5 + 2] = 1.0;
        }
        let down = transformed(&input, 5, "translation", 2.0);
        assert_eq!(down[3 * 5 + 2], 1.0, "moved down 2 rows");
        let identity = transformed(&input, 5, "scale", 1.0);
        assert_eq!(identity, input);
        let half_turn = transformed(&input, 5, "rotation", 180.0);
        assert!(
            (half_turn[3 * 5 + 2] - 1.0).abs() < 1e-5,
            "row 1 -> row 3 through the centre"
        );
    }
}
