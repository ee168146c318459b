//! Stage kind `feature_evolution` (§4.1, Fig. 4): "the strongest activation (across all
//! training examples) within a given feature map projected back to pixel space", for a fixed
//! random subset of maps per layer, at each kept epoch of training. Lower layers settle within
//! a few epochs; upper layers only later.

use std::path::{Path, PathBuf};

use artifacts::table::TableRow;
use artifacts::table::rows::EvolutionRow;
use artifacts::tensors::read_tensors;
use engine::weights::{import, load_model};
use engine::{Backend, Network};
use stage_api::{
    Error, InputSpec, OutputSpec, ParamSpec, Params, Resources, Result, RunSummary, StageContext,
    StageKind,
};

use crate::render::{evolution_figure, hit_tiles, read_rows};
use crate::scan::{Hit, ScanConfig, chosen_maps, scan_top_k};

pub struct FeatureEvolution;

/// `epoch_NNN.safetensors` files of a checkpoints folder, by epoch.
fn epoch_files(folder: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder).map_err(|e| Error::io(folder, e))? {
        let path = entry.map_err(|e| Error::io(folder, e))?.path();
        let epoch = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("epoch_"))
            .and_then(|n| n.strip_suffix(".safetensors"))
            .and_then(|n| n.parse().ok());
        if let Some(epoch) = epoch {
            files.push((epoch, path));
        }
    }
    files.sort();
    Ok(files)
}

impl StageKind for FeatureEvolution {
    fn name(&self) -> &'static str {
        "feature_evolution"
    }

    fn version(&self) -> u32 {
        // 2: the CPU backend's fixed arithmetic (the same bits on every CPU path).
        // 3: Fig. 4 labels its columns (epochs) and rows (layer and map).
        // 4: the epoch numbers centred over their columns.
        4
    }

    fn summary(&self) -> &'static str {
        "The strongest activation of fixed feature maps at each kept epoch, projected to pixels (Fig. 4)."
    }

    fn peak_memory(&self) -> &'static str {
        "Two networks (the final model and the epoch's, 24 P bytes), one scan batch (batch_size images and their activations), the winning images, a layer's maps_per_layer hits projected batch_size at a time, and the figure's tiles. Does not grow with N."
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::int_list("layers", &[1, 2, 3, 4, 5], 1, 5, "Layers (conv 1-5)."),
            ParamSpec::int(
                "maps_per_layer",
                4,
                1,
                100_000,
                "A seeded random subset of maps per layer.",
            ),
            ParamSpec::int("seed", 0, 0, i64::MAX, "Seed of the subset."),
            ParamSpec::optional_int(
                "max_images",
                1,
                i64::MAX,
                "Scan only the first N images (default: all).",
            ),
            ParamSpec::int("batch_size", 128, 1, 4096, "Images per forward pass."),
            ParamSpec::int("tile", 40, 8, 512, "Side in pixels of each projection."),
            stage_api::device::device_param(),
        ]
    }

    fn inputs(&self) -> Vec<InputSpec> {
        vec![
            InputSpec::artifact("model", "the trained model (architecture and input mean)"),
            InputSpec::artifact("checkpoints", "train.checkpoints: epoch_NNN.safetensors"),
            InputSpec::artifact("images", "the training images"),
        ]
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![
            OutputSpec::new(
                "strongest",
                "strongest.parquet",
                "epoch, layer, map, image_id, y, x, activation",
            ),
            OutputSpec::new(
                "figures",
                "figures",
                "evolution.png: rows (layer, map), columns epochs",
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

/// Fig. 4's scans, on the backend the `device` param picked.
impl cuda_backend::StageBody for FeatureEvolution {
    fn run_on_backend<B: Backend>(&self, ctx: &StageContext, backend: B) -> Result<RunSummary> {
        let (model, info) = load_model(ctx.input("model"), backend.clone())?;
        let files = epoch_files(ctx.input("checkpoints"))?;
        if files.is_empty() {
            return Err(Error::input(
                ctx.input("checkpoints"),
                "no epoch_NNN.safetensors: set `checkpoint_epochs` on the train stage",
            ));
        }
        let layers: Vec<usize> = ctx
            .params
            .int_list("layers")
            .iter()
            .map(|&l| l as usize)
            .collect();
        let maps = chosen_maps(
            &model,
            &layers,
            ctx.params.usize("maps_per_layer"),
            ctx.params.int("seed") as u64,
        )
        .map_err(Error::Config)?;
        let tile = ctx.params.usize("tile") as u32;
        let limit = ctx.params.optional_int("max_images").map(|l| l as usize);
        let mut columns = Vec::new();
        let mut row_labels: Vec<String> = Vec::new();
        let mut table: Vec<(usize, Hit)> = Vec::new();
        let mut scanned = 0;
        for (epoch, path) in &files {
            let mut network = Network::new(backend.clone(), info.architecture.clone(), 0.0, 0);
            import(&mut network, &read_tensors(path)?, path)?;
            let scan = scan_top_k(
                &network,
                &info,
                ctx.input("images"),
                &maps,
                ScanConfig {
                    top_k: 1,
                    batch_size: ctx.params.usize("batch_size"),
                    limit,
                    checkpoint: None,
                    checkpoint_every: std::time::Duration::ZERO,
                },
                &|n| ctx.progress_bar(n, &format!("epoch {epoch}: scanning")),
            )?;
            scanned = scan.n_images;
            let rows: Vec<usize> = scan.hits.iter().map(|h| h.row).collect();
            let images = read_rows(ctx.input("images"), &rows)?;
            let mut column = Vec::new();
            let first = row_labels.is_empty();
            for &layer in maps.keys() {
                let hits: Vec<&Hit> = scan.hits.iter().filter(|h| h.layer == layer).collect();
                if first {
                    row_labels.extend(hits.iter().map(|h| format!("layer {layer}, map {}", h.map)));
                }
                let tiles = hit_tiles(
                    &network,
                    &info,
                    &images,
                    layer,
                    &hits,
                    tile,
                    ctx.params.usize("batch_size"),
                )?;
                column.extend(tiles.into_iter().map(|(projection, _)| projection));
            }
            table.extend(scan.hits.into_iter().map(|hit| (*epoch, hit)));
            columns.push(column);
        }
        let figures = ctx.output("figures");
        std::fs::create_dir_all(figures).map_err(|e| Error::io(figures, e))?;
        let rows: usize = maps.values().map(Vec::len).sum();
        let column_labels: Vec<String> = files.iter().map(|(e, _)| e.to_string()).collect();
        evolution_figure(
            rows,
            &columns,
            tile,
            (&row_labels, &column_labels),
            &figures.join("evolution.png"),
        )?;
        let strongest: Vec<EvolutionRow> = table
            .iter()
            .map(|(epoch, h)| EvolutionRow {
                epoch: *epoch as i64,
                layer: h.layer as i64,
                map: h.map as i64,
                image_id: h.image_id,
                y: h.y as i64,
                x: h.x as i64,
                activation: h.activation as f64,
            })
            .collect();
        EvolutionRow::write(&strongest, ctx.output("strongest"), &ctx.provenance)?;
        Ok(RunSummary::default().line(format!(
            "epochs {:?}: strongest activation of {rows} maps over {scanned} images each",
            files.iter().map(|(e, _)| *e).collect::<Vec<_>>()
        )))
    }
}
