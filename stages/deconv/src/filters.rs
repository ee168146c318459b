//! Kind `conv1_filters` (§4.1, Fig. 6 (a)-(c)): the first-layer filters of up to three
//! models side by side, with counts of dead and dominating filters.
//!
//! The paper's panels: (a) conv1 trained *without* the filter RMS renormalisation of §3, where
//! "a few filters dominate"; (b) Krizhevsky et al.'s 11x11 stride-4 conv1, with "a mix of
//! extremely high and low frequency information, with little coverage of the mid
//! frequencies" and dead filters; (c) the ZF 7x7 stride-2 conv1, with fewer dead filters.
//! A filter is *dead* when its RMS is below `dead_filter_rms`, *dominating* when its RMS is
//! over 3x the median filter's (the same definitions as `deconv_top9`'s filter table).
//!
//! With `images` wired, also Fig. 6 (d)-(e): for the Krizhevsky and the ZF model, the top-9
//! activations of a seeded random subset of layer-2 maps over the images, projected by the
//! deconvnet beside their patches — where the paper sees the aliasing of the 4-pixel stride.

use std::path::Path;

use artifacts::Provenance;
use artifacts::parquet_io::PROVENANCE_KEY;
use artifacts::table::TableRow;
use artifacts::table::rows::FilterComparisonRow;
use artifacts::tensors::read_tensor_metadata;
use engine::cpu::sgd::filter_rms;
use engine::weights::load_model;
use engine::{CpuBackend, Op};
use stage_api::{
    Error, InputSpec, OutputSpec, ParamSpec, Result, RunSummary, StageContext, StageKind,
};

use crate::render;
use crate::scan::{ScanConfig, chosen_maps, scan_top_k};

pub struct Conv1Filters;

/// The panels in the paper's order: (input name, panel label, figure file).
pub const PANELS: [(&str, &str, &str); 3] = [
    ("unrenormalised", "no_renorm", "a_no_renorm.png"),
    ("krizhevsky", "krizhevsky", "b_krizhevsky.png"),
    ("zf", "zf", "c_zf.png"),
];

/// Counts of one model's conv1 filters.
#[derive(Clone, Debug, PartialEq)]
pub struct FilterCounts {
    pub rms: Vec<f64>,
    pub dead: Vec<bool>,
    pub dominating: Vec<bool>,
}

/// The first convolution's parameters (conv1).
pub fn first_conv<B: engine::Backend>(network: &engine::Network<B>) -> Option<&engine::Param<B>> {
    network.ops.iter().find_map(|op| match op {
        Op::Conv { param, .. } => Some(&network.params[*param]),
        _ => None,
    })
}

/// Frequencies per axis at which [`aliased_energy`] samples a filter's response.
const SPECTRUM: usize = 64;

/// The share of a conv filter's frequency-response energy that its stride folds back (§4.1's
/// aliasing, as a number): the energy, summed over input channels, at frequencies beyond the
/// stride's Nyquist frequency 1/(2 stride) cycles per pixel on either axis, over the total
/// energy. `weights` holds one filter, channels x k x k. Computed as a separable DFT on a
/// 64 x 64 grid of frequencies with `libm`'s sine and cosine, so the value is the same on
/// every machine. A stride of 1 aliases nothing.
pub fn aliased_energy(weights: &[f32], k: usize, stride: usize) -> f64 {
    if stride <= 1 || k == 0 {
        return 0.0;
    }
    let nyquist = 0.5 / stride as f64;
    let channels = weights.len() / (k * k);
    // Frequencies in cycles per pixel, in [-0.5, 0.5), and e^(-2 pi i f t) for t in 0..k,
    // tabulated once: the 2-D transform is separable (rows, then columns).
    let frequencies: Vec<f64> = (0..SPECTRUM)
        .map(|u| (u as f64 / SPECTRUM as f64 + 0.5).rem_euclid(1.0) - 0.5)
        .collect();
    let twiddle: Vec<(f64, f64)> = frequencies
        .iter()
        .flat_map(|f| {
            (0..k).map(move |t| {
                let phase = -2.0 * std::f64::consts::PI * f * t as f64;
                (libm::cos(phase), libm::sin(phase))
            })
        })
        .collect();
    let mut power = vec![0.0f64; SPECTRUM * SPECTRUM];
    let mut rows = vec![(0.0f64, 0.0f64); k * SPECTRUM];
    for c in 0..channels {
        let filter = &weights[c * k * k..(c + 1) * k * k];
        // rows[y][v] = sum over x of w[y][x] e^(-2 pi i fx_v x).
        for y in 0..k {
            for v in 0..SPECTRUM {
                let (mut re, mut im) = (0.0, 0.0);
                for x in 0..k {
                    let w = filter[y * k + x] as f64;
                    let (cos, sin) = twiddle[v * k + x];
                    re += w * cos;
                    im += w * sin;
                }
                rows[y * SPECTRUM + v] = (re, im);
            }
        }
        // F[u][v] = sum over y of rows[y][v] e^(-2 pi i fy_u y).
        for u in 0..SPECTRUM {
            for v in 0..SPECTRUM {
                let (mut re, mut im) = (0.0, 0.0);
                for y in 0..k {
                    let (a, b) = rows[y * SPECTRUM + v];
                    let (cos, sin) = twiddle[u * k + y];
                    re += a * cos - b * sin;
                    im += a * sin + b * cos;
                }
                power[u * SPECTRUM + v] += re * re + im * im;
            }
        }
    }
    let (mut total, mut aliased) = (0.0f64, 0.0f64);
    for u in 0..SPECTRUM {
        for v in 0..SPECTRUM {
            let p = power[u * SPECTRUM + v];
            total += p;
            if frequencies[u].abs() > nyquist || frequencies[v].abs() > nyquist {
                aliased += p;
            }
        }
    }
    if total > 0.0 { aliased / total } else { 0.0 }
}

/// Dead (RMS under `dead_threshold`) and dominating (RMS over 3x the median) filters.
pub fn count_filters(rms: Vec<f64>, dead_threshold: f64) -> FilterCounts {
    let median = {
        let mut sorted = rms.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    };
    FilterCounts {
        dead: rms.iter().map(|&r| r < dead_threshold).collect(),
        dominating: rms.iter().map(|&r| r > 3.0 * median).collect(),
        rms,
    }
}

impl StageKind for Conv1Filters {
    fn name(&self) -> &'static str {
        "conv1_filters"
    }

    fn version(&self) -> u32 {
        // 2: the CPU backend's fixed arithmetic (the same bits on every CPU path).
        // 3: each filter's aliased energy (schema filter_comparison v2).
        // 4: the same, computed as a separable transform (last bits may differ).
        // 5: figures labelled: each block's map and its patches, each filter's number.
        5
    }

    fn summary(&self) -> &'static str {
        "conv1 filters of the ZF net, Krizhevsky's net and a run without RMS renormalisation, side by side (Fig. 6)."
    }

    fn peak_memory(&self) -> &'static str {
        "One model at a time (12 P bytes, ~20 P while loading); with images, a layer-2 scan in batches of 64, the layer2_maps x 9 winning images (S^2 3 bytes each), their tiles, and their forward and projection 64 at a time (64 (A + 3 C^2 4) bytes). Does not grow with N."
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::float(
                "dead_filter_rms",
                0.01,
                0.0,
                1.0,
                "A conv1 filter with a lower RMS counts as dead.",
            ),
            ParamSpec::int(
                "layer2_maps",
                8,
                1,
                4096,
                "Fig. 6 (d)-(e): layer-2 maps shown per model (a seeded random subset).",
            ),
            ParamSpec::optional_int(
                "max_images",
                1,
                i64::MAX,
                "Fig. 6 (d)-(e): scan only the first images (all when unset).",
            ),
            ParamSpec::int("seed", 0, 0, i64::MAX, "Seed of the layer-2 map subset."),
            ParamSpec::int("tile", 48, 8, 512, "Pixels per projection / patch tile."),
        ]
    }

    fn inputs(&self) -> Vec<InputSpec> {
        vec![
            InputSpec::artifact(
                "zf",
                "a ZF-family model trained with filter RMS renormalisation (Fig. 6(c))",
            ),
            InputSpec::optional_artifact(
                "krizhevsky",
                "a Krizhevsky-family model (11x11/4 conv1 or its small variant), Fig. 6(b)",
            ),
            InputSpec::optional_artifact(
                "unrenormalised",
                "the ZF model trained with `filter_rms_radius: 0`, Fig. 6(a)",
            ),
            InputSpec::optional_artifact(
                "images",
                "images for Fig. 6 (d)-(e)'s layer-2 top-9 projections (preprocessed like the training set)",
            ),
        ]
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![
            OutputSpec::new(
                "table",
                "filters.parquet",
                "panel, architecture, stage, filter, rms, dead, dominating, aliased_energy",
            ),
            OutputSpec::new(
                "figures",
                "figures",
                "a_no_renorm.png, b_krizhevsky.png, c_zf.png: each model's conv1 filters; d_krizhevsky_layer2.png, e_zf_layer2.png: layer-2 top-9 projections (Fig. 6)",
            ),
        ]
    }

    fn run(&self, ctx: &StageContext) -> Result<RunSummary> {
        let figures = ctx.output("figures");
        std::fs::create_dir_all(figures).map_err(|e| Error::io(figures, e))?;
        let dead_threshold = ctx.params.float("dead_filter_rms");
        let mut table: Vec<FilterComparisonRow> = Vec::new();
        let mut summary = RunSummary::default();
        for (input, panel, figure) in PANELS {
            let Some(path) = ctx.optional_input(input) else {
                continue;
            };
            let (network, info) = load_model(path, CpuBackend)?;
            let conv1 = first_conv(&network)
                .ok_or_else(|| Error::input(path, "the model has no convolution"))?;
            render::filters_figure(&network, conv1, &figures.join(figure))?;
            let counts = count_filters(
                filter_rms(&conv1.weight, conv1.filter_len()),
                dead_threshold,
            );
            let stage = model_stage(path);
            let (kernel, stride) = (conv1.shape[3], conv1_stride(&network).unwrap_or(1));
            let weights: &[f32] = &conv1.weight;
            let aliased: Vec<f64> = weights
                .chunks(conv1.filter_len())
                .map(|filter| aliased_energy(filter, kernel, stride))
                .collect();
            let (n_dead, n_dominating) = (
                counts.dead.iter().filter(|d| **d).count(),
                counts.dominating.iter().filter(|d| **d).count(),
            );
            summary = summary.line(format!(
                "{panel} (`{}`, {}x{}/{}): {} filters, {n_dead} dead, {n_dominating} dominating",
                info.architecture.name,
                conv1.shape[2],
                conv1.shape[3],
                conv1_stride(&network).unwrap_or(0),
                counts.rms.len()
            ));
            for (f, &rms) in counts.rms.iter().enumerate() {
                table.push(FilterComparisonRow {
                    panel: panel.to_owned(),
                    architecture: info.architecture.name.clone(),
                    stage: stage.clone(),
                    filter: f as i64,
                    rms,
                    dead: counts.dead[f] as i64,
                    dominating: counts.dominating[f] as i64,
                    aliased_energy: aliased[f],
                });
            }
        }
        if let Some(images) = ctx.optional_input("images") {
            for (input, figure) in [
                ("krizhevsky", "d_krizhevsky_layer2.png"),
                ("zf", "e_zf_layer2.png"),
            ] {
                let Some(path) = ctx.optional_input(input) else {
                    continue;
                };
                let scanned = layer2_figure(ctx, path, images, &figures.join(figure))?;
                summary = summary.line(format!("{figure}: top-9 of layer 2 over {scanned} images"));
            }
        }
        FilterComparisonRow::write(&table, ctx.output("table"), &ctx.provenance)?;
        Ok(summary)
    }
}

/// Images per forward pass of the layer-2 scan and of the projections.
const SCAN_BATCH: usize = 64;

/// Fig. 6 (d)/(e) for one model: its layer-2 top-9 projections beside their patches.
/// Returns how many images were scanned.
fn layer2_figure(ctx: &StageContext, model: &Path, images: &Path, out: &Path) -> Result<usize> {
    let (network, info) = load_model(model, CpuBackend)?;
    let maps = chosen_maps(
        &network,
        &[2],
        ctx.params.usize("layer2_maps"),
        ctx.params.int("seed") as u64,
    )
    .map_err(Error::Config)?;
    let scan = scan_top_k(
        &network,
        &info,
        images,
        &maps,
        ScanConfig {
            top_k: 9,
            batch_size: SCAN_BATCH,
            limit: ctx.params.optional_int("max_images").map(|m| m as usize),
            checkpoint: None,
            checkpoint_every: std::time::Duration::ZERO,
        },
        &|n| ctx.progress_bar(n, "scanning layer 2"),
    )?;
    let rows: Vec<usize> = scan.hits.iter().map(|h| h.row).collect();
    let winners = render::read_rows(images, &rows)?;
    render::top_k_figure(
        &network,
        &info,
        &winners,
        2,
        &maps[&2],
        &scan.hits,
        ctx.params.usize("tile") as u32,
        SCAN_BATCH,
        out,
    )?;
    Ok(scan.n_images)
}

/// conv1's stride.
fn conv1_stride(network: &engine::Network<CpuBackend>) -> Option<usize> {
    network
        .architecture
        .layers
        .iter()
        .find_map(|layer| match layer {
            engine::arch::LayerSpec::Conv { stride, .. } => Some(*stride),
            _ => None,
        })
}

/// The pipeline stage that wrote a model, from its provenance ("?" when it has none).
fn model_stage(path: &Path) -> String {
    read_tensor_metadata(path)
        .ok()
        .and_then(|metadata| metadata.get(PROVENANCE_KEY).cloned())
        .and_then(|json| serde_json::from_str::<Provenance>(&json).ok())
        .map_or_else(|| "?".to_owned(), |p| p.stage)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_smooth_filter_aliases_less_than_a_sharp_one_and_a_larger_stride_aliases_more() {
        // A 7x7 Gaussian blob (low frequencies) and a checkerboard (the highest frequency).
        let k = 7;
        let gaussian: Vec<f32> = (0..k * k)
            .map(|i| {
                let (y, x) = ((i / k) as f32 - 3.0, (i % k) as f32 - 3.0);
                (-(x * x + y * y) / 4.0).exp()
            })
            .collect();
        let checker: Vec<f32> = (0..k * k)
            .map(|i| if (i / k + i % k) % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let smooth = aliased_energy(&gaussian, k, 2);
        let sharp = aliased_energy(&checker, k, 2);
        assert!(smooth < 0.1 && sharp > 0.9, "{smooth} {sharp}");
        assert!(aliased_energy(&gaussian, k, 4) > smooth);
        assert_eq!(aliased_energy(&checker, k, 1), 0.0);
        // White noise: about the area beyond Nyquist, 1 - (1/s)^2.
        let noise: Vec<f32> = (0..3 * 11 * 11)
            .map(|i| ((i * 7919 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let white = aliased_energy(&noise, 11, 4);
        assert!((white - 0.9375).abs() < 0.08, "{white}");
    }

    #[test]
    fn dead_and_dominating_filters_are_counted_against_the_threshold_and_the_median() {
        let counts = count_filters(vec![0.001, 0.05, 0.06, 0.07, 0.5], 0.01);
        assert_eq!(counts.dead, vec![true, false, false, false, false]);
        // Median 0.06: only 0.5 is over 3x.
        assert_eq!(counts.dominating, vec![false, false, false, false, true]);
    }
}
