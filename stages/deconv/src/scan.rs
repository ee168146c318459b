//! The streaming top-k scan: each image's strongest activation in each chosen feature map,
//! keeping the k strongest images per map.

use std::collections::BTreeMap;
use std::path::Path;

use artifacts::images::{ImageRecord, ImagesReader};
use engine::deconv::feature_op;
use engine::rng::rng_for;
use engine::weights::ModelInfo;
use engine::{Backend, Mode, Network};
use rand::seq::index::sample;
use stage_api::{Error, Result};

/// One of the top-k activations of a feature map.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Hit {
    pub layer: usize,
    pub map: usize,
    /// 0 = strongest.
    pub rank: usize,
    pub image_id: i64,
    /// Position of the image in the artifact (to read it again).
    pub row: usize,
    pub y: usize,
    pub x: usize,
    pub activation: f32,
}

pub struct ScanResult {
    pub hits: Vec<Hit>,
    pub n_images: usize,
}

/// The feature maps to show per layer: all, or a seeded random subset of `per_layer`.
pub fn chosen_maps<B: Backend>(
    network: &Network<B>,
    layers: &[usize],
    per_layer: usize,
    seed: u64,
) -> Result<BTreeMap<usize, Vec<usize>>, String> {
    let mut maps = BTreeMap::new();
    for &layer in layers {
        let op = feature_op(network, layer)
            .ok_or_else(|| format!("the network has no conv layer {layer}"))?;
        let available = network.shapes[op].0;
        let mut chosen: Vec<usize> = if per_layer == 0 || per_layer >= available {
            (0..available).collect()
        } else {
            sample(&mut rng_for(&[seed, layer as u64]), available, per_layer).into_vec()
        };
        chosen.sort_unstable();
        maps.insert(layer, chosen);
    }
    Ok(maps)
}

/// The centre crop of `image`, mean subtracted, as the network's input.
pub fn network_input(image: &ImageRecord, info: &ModelInfo, crop_size: usize, out: &mut [f32]) {
    info.centre_input(&image.pixels, image.width, crop_size, out);
}

/// How a scan runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanConfig<'a> {
    /// Activations kept per feature map (paper: 9).
    pub top_k: usize,
    /// Images per forward pass.
    pub batch_size: usize,
    /// Scan only the first images (default: all).
    pub limit: Option<usize>,
    /// Where the scan saves its progress (the run's resume folder): a scan killed part-way
    /// resumes after the last saved batch and ends with the same hits as an uninterrupted one.
    pub checkpoint: Option<&'a Path>,
    /// How often the progress is saved (a zero interval saves after every batch).
    pub checkpoint_every: std::time::Duration,
}

/// Saved progress of a scan: the images done and the top-k lists so far.
#[derive(serde::Serialize, serde::Deserialize)]
struct ScanCheckpoint {
    rows_done: usize,
    hits: Vec<Hit>,
}

/// The usual interval between scan checkpoints: often enough to lose little, rarely enough to
/// cost nothing.
pub const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

fn save_checkpoint(
    path: &Path,
    rows_done: usize,
    best: &BTreeMap<(usize, usize), Vec<Hit>>,
) -> Result<()> {
    let checkpoint = ScanCheckpoint {
        rows_done,
        hits: best.values().flatten().cloned().collect(),
    };
    let temporary = path.with_extension("tmp");
    let json = serde_json::to_vec(&checkpoint).expect("a checkpoint serialises");
    std::fs::write(&temporary, json).map_err(|e| Error::io(&temporary, e))?;
    std::fs::rename(&temporary, path).map_err(|e| Error::io(path, e))
}

/// Scans the images of `images_path` (the first `limit`, if given) and keeps, per (layer, map), the `k` images with the
/// strongest activation (ties: the earlier image).
pub fn scan_top_k<B: Backend>(
    network: &Network<B>,
    info: &ModelInfo,
    images_path: &Path,
    maps: &BTreeMap<usize, Vec<usize>>,
    config: ScanConfig,
    progress: &dyn Fn(u64) -> indicatif::ProgressBar,
) -> Result<ScanResult> {
    let ScanConfig {
        top_k: k,
        batch_size,
        limit,
        checkpoint,
        checkpoint_every,
    } = config;
    let crop_size = network.architecture.input_size;
    let ops: BTreeMap<usize, usize> = maps
        .keys()
        .map(|&layer| {
            (
                layer,
                feature_op(network, layer).expect("checked by chosen_maps"),
            )
        })
        .collect();
    let mut best: BTreeMap<(usize, usize), Vec<Hit>> = BTreeMap::new();
    // Resume: the run's resume folder belongs to this exact cache key (same model, images and
    // params), so a saved state is always this scan's.
    let mut resumed_rows = 0;
    if let Some(path) = checkpoint
        && let Ok(bytes) = std::fs::read(path)
    {
        let saved: ScanCheckpoint = serde_json::from_slice(&bytes).map_err(|e| {
            Error::input(
                path,
                format!("unreadable scan checkpoint ({e}); delete it to start over"),
            )
        })?;
        for hit in saved.hits {
            best.entry((hit.layer, hit.map)).or_default().push(hit);
        }
        resumed_rows = saved.rows_done;
        tracing::info!(rows = resumed_rows, "resuming the scan");
    }
    let reader = ImagesReader::open(images_path, batch_size)?;
    let total = limit.map_or(reader.num_images, |l| (l as u64).min(reader.num_images));
    let bar = progress(total);
    bar.inc(resumed_rows as u64);
    let mut row = 0usize;
    let mut last_saved = std::time::Instant::now();
    for chunk in reader {
        let mut chunk = chunk?;
        if row + chunk.len() <= resumed_rows {
            row += chunk.len();
            continue;
        }
        if let Some(limit) = limit {
            if row >= limit {
                break;
            }
            chunk.truncate(limit - row);
        }
        if let Some(bad) = chunk
            .iter()
            .find(|i| i.width as usize != info.image_size || i.height != i.width)
        {
            return Err(Error::input(
                images_path,
                format!(
                    "image {} is {}x{}; the model was trained on {}x{} images: preprocess them the same way",
                    bad.image_id, bad.height, bad.width, info.image_size, info.image_size
                ),
            ));
        }
        // Centre crops minus the mean (`network_input`), cut by the backend: on a GPU the
        // bytes go up and the crops are cut there, and only each map's maximum comes back.
        let images: Vec<&[u8]> = chunk.iter().map(|image| image.pixels.as_slice()).collect();
        let centre = imaging::centre_crop(info.image_size as u32, crop_size as u32);
        let input = network.backend.crop_batch(
            &images,
            info.image_size,
            &vec![centre; chunk.len()],
            crop_size,
            &info.mean,
        );
        let acts = network.forward(input, Mode::Eval);
        for (&layer, &op) in &ops {
            let (channels, h, w) = network.shapes[op];
            let chosen = &maps[&layer];
            let maxima = network
                .backend
                .map_maxima(&acts.outputs[op], channels, h * w, chosen);
            for (i, &map) in chosen.iter().enumerate() {
                let list = best.entry((layer, map)).or_default();
                for (j, image) in chunk.iter().enumerate() {
                    let (activation, position) = maxima[j * chosen.len() + i];
                    let position = position as usize;
                    if list.len() == k && activation <= list[k - 1].activation {
                        continue;
                    }
                    let hit = Hit {
                        layer,
                        map,
                        rank: 0,
                        image_id: image.image_id,
                        row: row + j,
                        y: position / w,
                        x: position % w,
                        activation,
                    };
                    let at = list.partition_point(|other| other.activation >= activation);
                    list.insert(at, hit);
                    list.truncate(k);
                }
            }
        }
        row += chunk.len();
        bar.inc(chunk.len() as u64);
        if let Some(path) = checkpoint
            && last_saved.elapsed() >= checkpoint_every
        {
            save_checkpoint(path, row, &best)?;
            last_saved = std::time::Instant::now();
        }
    }
    bar.finish_and_clear();
    let mut hits = Vec::new();
    for (_, list) in best {
        for (rank, mut hit) in list.into_iter().enumerate() {
            hit.rank = rank;
            hits.push(hit);
        }
    }
    Ok(ScanResult {
        hits,
        n_images: row,
    })
}

#[cfg(test)]
mod tests {
    use engine::{Architecture, CpuBackend};

    use super::*;

    fn images(dir: &Path, n: usize) -> std::path::PathBuf {
        let path = dir.join("images");
        artifacts::images::write_noise_images(&path, n, 100, 1, 7).unwrap();
        path
    }

    /// A zf_small net (3 classes, weights from `seed`) and its model info for 32x32 images
    /// with a flat mean of `mean`.
    fn model(seed: u64, mean: f32) -> (Network<CpuBackend>, ModelInfo) {
        let network = Network::new(
            CpuBackend,
            Architecture::from_name("zf_small", 3).unwrap(),
            0.03,
            seed,
        );
        let info = ModelInfo {
            architecture: network.architecture.clone(),
            image_size: 32,
            class_names: Vec::new(),
            mean: vec![mean; 32 * 32 * 3],
        };
        (network, info)
    }

    fn config(batch_size: usize) -> ScanConfig<'static> {
        ScanConfig {
            top_k: 9,
            batch_size,
            limit: None,
            checkpoint: None,
            checkpoint_every: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn the_scan_finds_each_maps_nine_strongest_images_as_one_image_at_a_time_does() {
        // Independent of the batched path (crops cut by the backend, per-map maxima): each
        // image alone through `network_input` and a forward pass, its maxima by hand.
        let dir = tempfile::tempdir().unwrap();
        let images_path = images(dir.path(), 30);
        let (network, info) = model(6, 110.0);
        let maps = chosen_maps(&network, &[1, 2, 5], 3, 1).unwrap();
        let hidden = |_| indicatif::ProgressBar::hidden();
        let scan = scan_top_k(&network, &info, &images_path, &maps, config(7), &hidden).unwrap();

        let records = artifacts::images::read_images(&images_path).unwrap();
        let crop = network.architecture.input_size;
        let mut expected = Vec::new();
        for (&layer, chosen) in &maps {
            let op = feature_op(&network, layer).unwrap();
            let (channels, h, w) = network.shapes[op];
            for &map in chosen {
                let mut all: Vec<Hit> = Vec::new();
                for (row, image) in records.iter().enumerate() {
                    let mut input = vec![0.0f32; network.input_len()];
                    network_input(image, &info, crop, &mut input);
                    let acts = network.forward(input, Mode::Eval);
                    let values = &acts.outputs[op][map * h * w..(map + 1) * h * w];
                    let mut at = 0;
                    for (i, &v) in values.iter().enumerate() {
                        if v > values[at] {
                            at = i;
                        }
                    }
                    assert_eq!(acts.outputs[op].len(), channels * h * w);
                    all.push(Hit {
                        layer,
                        map,
                        rank: 0,
                        image_id: image.image_id,
                        row,
                        y: at / w,
                        x: at % w,
                        activation: values[at],
                    });
                }
                // Strongest first; equal activations in image order (a stable sort).
                all.sort_by(|a, b| b.activation.total_cmp(&a.activation));
                expected.extend(
                    all.into_iter()
                        .take(9)
                        .enumerate()
                        .map(|(rank, hit)| Hit { rank, ..hit }),
                );
            }
        }
        let key = |h: &Hit| (h.layer, h.map, h.rank);
        let mut found = scan.hits.clone();
        found.sort_by_key(key);
        expected.sort_by_key(key);
        assert_eq!(found, expected);
    }

    #[test]
    fn a_scan_resumed_from_its_checkpoint_finds_what_an_uninterrupted_scan_finds() {
        let dir = tempfile::tempdir().unwrap();
        let images = images(dir.path(), 48);
        let (network, info) = model(5, 120.0);
        let maps = chosen_maps(&network, &[1, 3, 5], 4, 0).unwrap();
        let hidden = |_| indicatif::ProgressBar::hidden();
        let config = config(8);
        let whole = scan_top_k(&network, &info, &images, &maps, config, &hidden).unwrap();

        // "Killed" after 24 images: the checkpoint holds the first three batches.
        let checkpoint = dir.path().join("scan.json");
        let first_part = ScanConfig {
            limit: Some(24),
            checkpoint: Some(&checkpoint),
            ..config
        };
        scan_top_k(&network, &info, &images, &maps, first_part, &hidden).unwrap();
        let saved: ScanCheckpoint =
            serde_json::from_slice(&std::fs::read(&checkpoint).unwrap()).unwrap();
        assert_eq!(saved.rows_done, 24);

        let resumed = ScanConfig {
            checkpoint: Some(&checkpoint),
            ..config
        };
        let after = scan_top_k(&network, &info, &images, &maps, resumed, &hidden).unwrap();
        assert_eq!(after.hits, whole.hits);
        assert_eq!(after.n_images, 48);
        // Hits from before the "kill" survived: some winners are among the first 24 images.
        assert!(whole.hits.iter().any(|h| h.row < 24));
    }
}
