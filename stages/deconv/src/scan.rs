//! The streaming top-k scan: each image's strongest activation in each chosen feature map,
//! keeping the k strongest images per map.

use std::collections::BTreeMap;
use std::path::Path;

use artifacts::images::{ImageRecord, ImagesReader};
use engine::deconv::feature_op;
use engine::rng::rng_for;
use engine::weights::ModelInfo;
use engine::{Backend, CpuBackend, Mode, Network};
use rand::seq::index::sample;
use stage_api::{Error, Result};

/// One of the top-k activations of a feature map.
#[derive(Clone, Debug, PartialEq)]
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
pub struct ScanConfig {
    /// Activations kept per feature map (paper: 9).
    pub top_k: usize,
    /// Images per forward pass.
    pub batch_size: usize,
    /// Scan only the first images (default: all).
    pub limit: Option<usize>,
}

/// Scans the images of `images_path` (the first `limit`, if given) and keeps, per (layer, map), the `k` images with the
/// strongest activation (ties: the earlier image).
pub fn scan_top_k(
    network: &Network<CpuBackend>,
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
    } = config;
    let crop_size = network.architecture.input_size;
    let per_image = network.input_len();
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
    let reader = ImagesReader::open(images_path, batch_size)?;
    let total = limit.map_or(reader.num_images, |l| (l as u64).min(reader.num_images));
    let bar = progress(total);
    let mut row = 0usize;
    for chunk in reader {
        let mut chunk = chunk?;
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
        let mut input = vec![0.0f32; chunk.len() * per_image];
        for (image, out) in chunk.iter().zip(input.chunks_mut(per_image)) {
            network_input(image, info, crop_size, out);
        }
        let acts = network.forward(input, Mode::Eval);
        for (&layer, &op) in &ops {
            let (channels, h, w) = network.shapes[op];
            let plane = h * w;
            let output = &acts.outputs[op];
            for &map in &maps[&layer] {
                let list = best.entry((layer, map)).or_default();
                for (j, image) in chunk.iter().enumerate() {
                    let values = &output[(j * channels + map) * plane..][..plane];
                    let (position, &activation) =
                        values
                            .iter()
                            .enumerate()
                            .fold((0, &f32::NEG_INFINITY), |best, item| {
                                if item.1 > best.1 { item } else { best }
                            });
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
