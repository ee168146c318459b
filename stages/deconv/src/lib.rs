//! Stage kind `deconv_top9` (§4, Fig. 2; §4.1, Fig. 6): for each chosen layer and feature map,
//! the 9 strongest activations over a whole image set, each projected to pixel space by the
//! deconvnet and shown beside the image patch its unit sees; and the conv1 filters.
//!
//! The scan streams the images in batches and keeps only a top-k list per feature map, so
//! memory does not depend on the size of the set. The winners' images are then read again and
//! projected, one batch per layer.

mod evolution;
mod filters;
mod render;
mod scan;

use std::collections::BTreeMap;
use std::sync::Arc;

use engine::Backend;
use engine::cpu::sgd::filter_rms;
use engine::weights::load_model;
use stage_api::{
    Error, InputSpec, OutputSpec, ParamSpec, Params, Resources, Result, RunSummary, StageContext,
    StageKind,
};

pub use scan::{Hit, ScanConfig, chosen_maps, scan_top_k};

use artifacts::table::TableRow;
use artifacts::table::rows::{FilterStatsRow, Top9Row};

pub fn kinds() -> Vec<Arc<dyn StageKind>> {
    vec![
        Arc::new(DeconvTop9),
        Arc::new(evolution::FeatureEvolution),
        Arc::new(filters::Conv1Filters),
    ]
}

pub struct DeconvTop9;

impl StageKind for DeconvTop9 {
    fn name(&self) -> &'static str {
        "deconv_top9"
    }

    fn version(&self) -> u32 {
        // 2: the CPU backend's fixed arithmetic (the same bits on every CPU path).
        // 3: figures labelled: each block's map and its patches, each filter's number.
        3
    }

    fn summary(&self) -> &'static str {
        "Top-9 activations per feature map projected by the deconvnet, beside their patches (Fig. 2); conv1 filters (Fig. 6)."
    }

    fn peak_memory(&self) -> &'static str {
        "The model (12 P bytes); the scan holds one batch of batch_size images and its activations (A B bytes); then the winners' images, read once for all layers (at most layers x maps x top_k images of S^2 3 bytes: 405 at the defaults, ~80 MB at S = 256), and per layer its tiles (maps top_k 2 tile^2 3 bytes) and the figure, with the hits projected batch_size at a time (B (A + 3 C^2 4) bytes). Grows with maps_per_layer x top_k (maps_per_layer 0, every map: 12,384 images at S = 256 for zf, 2.4 GB), not with N."
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::int_list(
                "layers",
                &[1, 2, 3, 4, 5],
                1,
                5,
                "Layers (conv 1-5) to visualise.",
            ),
            ParamSpec::int(
                "maps_per_layer",
                9,
                0,
                100_000,
                "A seeded random subset of this many feature maps per layer (0: all).",
            ),
            ParamSpec::int(
                "top_k",
                9,
                1,
                100,
                "Strongest activations kept per map (paper: 9).",
            ),
            ParamSpec::int("seed", 0, 0, i64::MAX, "Seed of the feature-map subset."),
            ParamSpec::int(
                "batch_size",
                64,
                1,
                4096,
                "Images per forward pass of the scan.",
            ),
            ParamSpec::int(
                "tile",
                48,
                8,
                512,
                "Side in pixels of each projection or patch tile.",
            ),
            ParamSpec::float(
                "dead_filter_rms",
                0.01,
                0.0,
                1.0,
                "A conv1 filter with a lower RMS counts as dead (Fig. 6).",
            ),
            stage_api::device::device_param(),
        ]
    }

    fn inputs(&self) -> Vec<InputSpec> {
        vec![
            InputSpec::model(),
            InputSpec::artifact(
                "images",
                "the images to scan, preprocessed like the training set (the validation set in the paper)",
            ),
        ]
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![
            OutputSpec::new(
                "top9",
                "top9.parquet",
                "layer, map, rank, image_id, y, x, activation",
            ),
            OutputSpec::new(
                "filters",
                "filters.parquet",
                "conv1 filter RMS values with dead/dominating flags",
            ),
            OutputSpec::new(
                "figures",
                "figures",
                "layer<N>.png grids (Fig. 2) and conv1_filters.png (Fig. 6)",
            ),
        ]
    }

    fn resources(&self, params: &Params) -> Resources {
        stage_api::device::device_resources(params)
    }

    fn validate(&self, params: &Params) -> Vec<String> {
        params
            .int_list("layers")
            .iter()
            .filter(|&&l| !(1..=5).contains(&l))
            .map(|l| format!("`layers` holds {l}; the convolutional layers are 1-5"))
            .collect()
    }

    fn run(&self, ctx: &StageContext) -> Result<RunSummary> {
        cuda_backend::run_stage(self, ctx)
    }
}

/// The scan and the figures, on the backend the `device` param picked.
impl cuda_backend::StageBody for DeconvTop9 {
    fn run_on_backend<B: Backend>(&self, ctx: &StageContext, backend: B) -> Result<RunSummary> {
        let model_path = ctx.input("model");
        let (network, info) = load_model(model_path, backend)?;
        let layers: Vec<usize> = ctx
            .params
            .int_list("layers")
            .iter()
            .map(|&l| l as usize)
            .collect();
        let maps = chosen_maps(
            &network,
            &layers,
            ctx.params.usize("maps_per_layer"),
            ctx.params.int("seed") as u64,
        )
        .map_err(Error::Config)?;
        let started = std::time::Instant::now();
        std::fs::create_dir_all(&ctx.resume_dir).map_err(|e| Error::io(&ctx.resume_dir, e))?;
        let scan_checkpoint = ctx.resume_dir.join("scan.json");
        let scan = scan_top_k(
            &network,
            &info,
            ctx.input("images"),
            &maps,
            ScanConfig {
                top_k: ctx.params.usize("top_k"),
                batch_size: ctx.params.usize("batch_size"),
                limit: None,
                checkpoint: Some(&scan_checkpoint),
                checkpoint_every: crate::scan::CHECKPOINT_EVERY,
            },
            &|n| ctx.progress_bar(n, "scanning for top activations"),
        )?;
        let scan_seconds = started.elapsed().as_secs_f64();
        let figures = ctx.output("figures");
        std::fs::create_dir_all(figures).map_err(|e| Error::io(figures, e))?;
        let tile = ctx.params.usize("tile") as u32;
        // The winners' images, read in one pass for all layers.
        let rows: Vec<usize> = scan.hits.iter().map(|h| h.row).collect();
        let images = render::read_rows(ctx.input("images"), &rows)?;
        for (layer, layer_maps) in &maps {
            let path = figures.join(format!("layer{layer}.png"));
            render::top_k_figure(
                &network,
                &info,
                &images,
                *layer,
                layer_maps,
                &scan.hits,
                tile,
                ctx.params.usize("batch_size"),
                &path,
            )?;
        }
        // Fig. 6: the conv1 filters and their RMS.
        let conv1 = filters::first_conv(&network).expect("a ZF network has a conv1");
        render::filters_figure(&network, conv1, &figures.join("conv1_filters.png"))?;
        let counts = filters::count_filters(
            filter_rms(&network.backend.download(&conv1.weight), conv1.filter_len()),
            ctx.params.float("dead_filter_rms"),
        );
        let dead: Vec<i64> = counts.dead.iter().map(|&d| d as i64).collect();
        let dominating: Vec<i64> = counts.dominating.iter().map(|&d| d as i64).collect();
        let n_dead: i64 = dead.iter().sum();
        let n_dominating: i64 = dominating.iter().sum();
        let rms = counts.rms;
        let filter_rows: Vec<FilterStatsRow> = rms
            .iter()
            .zip(dead.iter().zip(&dominating))
            .enumerate()
            .map(|(filter, (&rms, (&dead, &dominating)))| FilterStatsRow {
                filter: filter as i64,
                rms,
                dead,
                dominating,
            })
            .collect();
        FilterStatsRow::write(&filter_rows, ctx.output("filters"), &ctx.provenance)?;
        let top9: Vec<Top9Row> = scan
            .hits
            .iter()
            .map(|h| Top9Row {
                layer: h.layer as i64,
                map: h.map as i64,
                rank: h.rank as i64,
                image_id: h.image_id,
                y: h.y as i64,
                x: h.x as i64,
                activation: h.activation as f64,
            })
            .collect();
        Top9Row::write(&top9, ctx.output("top9"), &ctx.provenance)?;
        let per_layer: BTreeMap<usize, usize> = maps.iter().map(|(l, m)| (*l, m.len())).collect();
        Ok(RunSummary::default()
            .line(format!(
                "scanned {} images in {scan_seconds:.1}s ({:.0} images/s); top-{} of {:?} maps per layer",
                scan.n_images,
                scan.n_images as f64 / scan_seconds.max(1e-9),
                ctx.params.usize("top_k"),
                per_layer
            ))
            .line(format!(
                "conv1: {} filters, {n_dead} dead (RMS < {}), {n_dominating} dominating (RMS > 3x median)",
                rms.len(),
                ctx.params.float("dead_filter_rms")
            )))
    }
}
