//! The figures: Fig. 2's blocks (k projections beside k image patches per feature map) and
//! Fig. 6's conv1 filter grid, as PNG.

use std::collections::BTreeMap;
use std::path::Path;

use artifacts::images::{ImageRecord, ImagesReader};
use engine::deconv::{feature_op, project, receptive_field};
use engine::weights::ModelInfo;
use engine::{Backend, Mode, Network, Param};
use image::{Rgb, RgbImage};
use imaging::centre_crop;
use stage_api::{Error, Result};

use crate::scan::{Hit, network_input};

const BACKGROUND: Rgb<u8> = Rgb([24, 24, 24]);
const GAP: u32 = 4;
/// A line of labels above tiles, and its colour.
const LABEL_H: u32 = 16;
const LABEL_COLOUR: [u8; 3] = [230, 230, 230];

/// Reads the images at `rows` (artifact positions) of an images artifact.
pub fn read_rows(path: &Path, rows: &[usize]) -> Result<BTreeMap<usize, ImageRecord>> {
    let mut wanted: Vec<usize> = rows.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let mut found = BTreeMap::new();
    let mut row = 0;
    for chunk in ImagesReader::open(path, 1024)? {
        for image in chunk? {
            if wanted.binary_search(&row).is_ok() {
                found.insert(row, image);
            }
            row += 1;
        }
    }
    Ok(found)
}

/// A `side` x `side` tile from a region of a CHW float image, nearest-neighbour scaled.
fn tile_from<F: Fn(usize, usize, usize) -> u8>(
    rows: &std::ops::RangeInclusive<usize>,
    cols: &std::ops::RangeInclusive<usize>,
    side: u32,
    pixel: F,
) -> RgbImage {
    let (h, w) = (rows.end() - rows.start() + 1, cols.end() - cols.start() + 1);
    let scale = side as f64 / h.max(w) as f64;
    RgbImage::from_fn(side, side, |tx, ty| {
        let (y, x) = ((ty as f64 / scale) as usize, (tx as f64 / scale) as usize);
        if y >= h || x >= w {
            return BACKGROUND;
        }
        Rgb([0, 1, 2].map(|c| pixel(c, rows.start() + y, cols.start() + x)))
    })
}

/// For hits of one layer: each hit's deconvnet projection and its image patch, both cropped to
/// the unit's receptive field and scaled to `tile` x `tile`. `images` holds the hits' images
/// by row ([`read_rows`], read once for all layers). The hits go through the network
/// `batch_size` at a time, so the forward pass and the projection hold at most that many
/// images' activations whatever the number of hits (an image's projection does not depend on
/// the batch it is in: the same tiles for any `batch_size`).
pub fn hit_tiles<B: Backend>(
    network: &Network<B>,
    info: &ModelInfo,
    images: &BTreeMap<usize, ImageRecord>,
    layer: usize,
    hits: &[&Hit],
    tile: u32,
    batch_size: usize,
) -> Result<Vec<(RgbImage, RgbImage)>> {
    let mut tiles = Vec::with_capacity(hits.len());
    for batch in hits.chunks(batch_size.max(1)) {
        tiles.extend(batch_tiles(network, info, images, layer, batch, tile));
    }
    Ok(tiles)
}

/// [`hit_tiles`] for one batch of hits: one forward pass and one projection.
fn batch_tiles<B: Backend>(
    network: &Network<B>,
    info: &ModelInfo,
    images: &BTreeMap<usize, ImageRecord>,
    layer: usize,
    hits: &[&Hit],
    tile: u32,
) -> Vec<(RgbImage, RgbImage)> {
    let op = feature_op(network, layer).expect("layer checked");
    let crop_size = network.architecture.input_size;
    let per_image = network.input_len();
    let mut input = vec![0.0f32; hits.len() * per_image];
    for (hit, out) in hits.iter().zip(input.chunks_mut(per_image)) {
        network_input(&images[&hit.row], info, crop_size, out);
    }
    let acts = network.forward(network.backend.upload_owned(input), Mode::Eval);
    let (channels, h, w) = network.shapes[op];
    let output = network.backend.read(&acts.outputs[op]);
    // Keep one activation per image: the hit's, all others in the layer set to zero (§2.1).
    let mut signal = vec![0.0f32; hits.len() * channels * h * w];
    for (i, hit) in hits.iter().enumerate() {
        let at = ((i * channels + hit.map) * h + hit.y) * w + hit.x;
        signal[at] = output[at];
    }
    let pixels = network.backend.download(&project(
        network,
        &acts,
        op,
        network.backend.upload_owned(signal),
    ));
    let plane = crop_size * crop_size;
    let mut tiles = Vec::with_capacity(hits.len());
    for (i, hit) in hits.iter().enumerate() {
        let (rows, cols) = receptive_field(network, op, hit.y, hit.x);
        let projection = &pixels[i * per_image..(i + 1) * per_image];
        let max_abs = rows
            .clone()
            .flat_map(|y| {
                cols.clone()
                    .flat_map(move |x| (0..3).map(move |c| c * plane + y * crop_size + x))
            })
            .map(|at| projection[at].abs())
            .fold(0.0f32, f32::max)
            .max(1e-12);
        let projection_tile = tile_from(&rows, &cols, tile, |c, y, x| {
            (128.0 + 127.0 * projection[c * plane + y * crop_size + x] / max_abs).round() as u8
        });
        let image = &images[&hit.row];
        let offset = centre_crop(image.width, crop_size as u32);
        let patch_tile = tile_from(&rows, &cols, tile, |c, y, x| {
            let (sy, sx) = (offset.top as usize + y, offset.left as usize + x);
            image.pixels[(sy * image.width as usize + sx) * 3 + c]
        });
        tiles.push((projection_tile, patch_tile));
    }
    tiles
}

/// Fig. 2 for one layer: per feature map, its top-k projections (left) and patches (right).
#[allow(clippy::too_many_arguments)]
pub fn top_k_figure<B: Backend>(
    network: &Network<B>,
    info: &ModelInfo,
    images: &BTreeMap<usize, ImageRecord>,
    layer: usize,
    maps: &[usize],
    hits: &[Hit],
    tile: u32,
    batch_size: usize,
    path: &Path,
) -> Result<()> {
    let layer_hits: Vec<&Hit> = hits.iter().filter(|h| h.layer == layer).collect();
    let tiles = hit_tiles(network, info, images, layer, &layer_hits, tile, batch_size)?;
    let k = layer_hits.iter().map(|h| h.rank + 1).max().unwrap_or(1);
    let side = (k as f64).sqrt().ceil() as u32;
    let block_w = 2 * side * tile + 3 * GAP + (side - 1);
    // Each block under a line naming its map, over the projections and over the patches.
    let block_h = LABEL_H + side * tile + (side - 1);
    let per_row = 3u32;
    let rows_of_blocks = (maps.len() as u32).div_ceil(per_row).max(1);
    let mut canvas = RgbImage::from_pixel(
        per_row * (block_w + GAP) + GAP,
        rows_of_blocks * (block_h + GAP) + GAP,
        BACKGROUND,
    );
    let label = |canvas: &mut RgbImage, text: &str, x: u32, y: u32| {
        plots::draw_text(canvas, text, (x as i32, y as i32), 13, LABEL_COLOUR)
            .map_err(|e| Error::io(path, std::io::Error::other(e)))
    };
    for (block, &map) in maps.iter().enumerate() {
        let (bx, label_y) = (
            GAP + (block as u32 % per_row) * (block_w + GAP),
            GAP + (block as u32 / per_row) * (block_h + GAP),
        );
        label(&mut canvas, &format!("map {map}"), bx, label_y)?;
        label(
            &mut canvas,
            "patches",
            bx + side * (tile + 1) + 2 * GAP,
            label_y,
        )?;
        let by = label_y + LABEL_H;
        for (hit, (projection_tile, patch_tile)) in
            layer_hits.iter().zip(&tiles).filter(|(h, _)| h.map == map)
        {
            let (gx, gy) = (
                (hit.rank as u32 % side) * (tile + 1),
                (hit.rank as u32 / side) * (tile + 1),
            );
            image::imageops::replace(
                &mut canvas,
                projection_tile,
                (bx + gx) as i64,
                (by + gy) as i64,
            );
            let right = bx + side * (tile + 1) + 2 * GAP;
            image::imageops::replace(
                &mut canvas,
                patch_tile,
                (right + gx) as i64,
                (by + gy) as i64,
            );
        }
    }
    canvas
        .save(path)
        .map_err(|e| Error::io(path, std::io::Error::other(e)))
}

/// Fig. 4: one row per (layer, map), one column per epoch, each cell the projection of the
/// map's strongest activation at that epoch. `columns[e]` holds the tiles of epoch e, in the
/// order of `rows`.
pub fn evolution_figure(
    rows: usize,
    columns: &[Vec<RgbImage>],
    tile: u32,
    (row_labels, column_labels): (&[String], &[String]),
    path: &Path,
) -> Result<()> {
    // Room for the epoch above each column and the layer and map left of each row.
    const TOP: u32 = 18;
    const LEFT: u32 = 104;
    let mut canvas = RgbImage::from_pixel(
        LEFT + columns.len() as u32 * (tile + 1) + 2 * GAP,
        TOP + rows as u32 * (tile + 1) + 2 * GAP,
        BACKGROUND,
    );
    for (e, column) in columns.iter().enumerate() {
        for (r, cell) in column.iter().enumerate() {
            let (x, y) = (
                LEFT + GAP + e as u32 * (tile + 1),
                TOP + GAP + r as u32 * (tile + 1),
            );
            image::imageops::replace(&mut canvas, cell, x as i64, y as i64);
        }
    }
    let label = |canvas: &mut RgbImage, text: &str, x: u32, y: u32| {
        plots::draw_text(canvas, text, (x as i32, y as i32), 12, LABEL_COLOUR)
            .map_err(|e| Error::io(path, std::io::Error::other(e)))
    };
    // Column labels are short (the epoch number), centred over their column.
    label(&mut canvas, "epoch", 4, 3)?;
    for (e, text) in column_labels.iter().enumerate() {
        let centre = LEFT + GAP + e as u32 * (tile + 1) + tile / 2;
        label(
            &mut canvas,
            text,
            centre.saturating_sub(4 * text.len() as u32),
            3,
        )?;
    }
    for (r, text) in row_labels.iter().enumerate() {
        let y = TOP + GAP + r as u32 * (tile + 1) + tile / 2 - 7;
        label(&mut canvas, text, 4, y)?;
    }
    canvas
        .save(path)
        .map_err(|e| Error::io(path, std::io::Error::other(e)))
}

/// Fig. 6: each conv1 filter as an RGB tile, contrast-stretched per filter.
pub fn filters_figure<B: Backend>(
    network: &Network<B>,
    conv1: &Param<B>,
    path: &Path,
) -> Result<()> {
    let (filters, channels, k) = (conv1.shape[0], conv1.shape[1], conv1.shape[2]);
    let all_weights = network.backend.download(&conv1.weight);
    let scale = (48 / k).max(1) as u32;
    let tile = k as u32 * scale;
    let columns = (filters as f64).sqrt().ceil() as u32;
    let rows = (filters as u32).div_ceil(columns);
    // Each tile under its filter's number.
    let cell_h = LABEL_H + tile + 2;
    let mut canvas = RgbImage::from_pixel(columns * (tile + 2) + 2, rows * cell_h + 2, BACKGROUND);
    for f in 0..filters {
        let weights = &all_weights[f * channels * k * k..(f + 1) * channels * k * k];
        let (lo, hi) = weights
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let range = (hi - lo).max(1e-12);
        let image = RgbImage::from_fn(tile, tile, |x, y| {
            let (i, j) = ((y / scale) as usize, (x / scale) as usize);
            Rgb([0, 1, 2].map(|c| {
                let channel = c.min(channels - 1);
                (255.0 * (weights[(channel * k + i) * k + j] - lo) / range).round() as u8
            }))
        });
        let (x, y) = (
            2 + (f as u32 % columns) * (tile + 2),
            2 + (f as u32 / columns) * cell_h,
        );
        plots::draw_text(
            &mut canvas,
            &f.to_string(),
            (x as i32, y as i32),
            13,
            LABEL_COLOUR,
        )
        .map_err(|e| Error::io(path, std::io::Error::other(e)))?;
        image::imageops::replace(&mut canvas, &image, x as i64, (y + LABEL_H) as i64);
    }
    canvas
        .save(path)
        .map_err(|e| Error::io(path, std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use engine::{Architecture, CpuBackend};

    use super::*;
    use crate::scan::{ScanConfig, chosen_maps, scan_top_k};

    /// The figure step projects its hits `batch_size` at a time (its memory bounded by the
    /// batch, not by maps x top-k): the tiles are the same bits whatever the batch.
    #[test]
    fn hit_tiles_do_not_depend_on_how_many_hits_go_through_the_network_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images");
        artifacts::images::write_noise_images(&path, 20, 100, 1, 3).unwrap();
        let network = Network::new(
            CpuBackend,
            Architecture::from_name("zf_small", 3).unwrap(),
            0.03,
            4,
        );
        let info = ModelInfo {
            architecture: network.architecture.clone(),
            image_size: 32,
            class_names: Vec::new(),
            mean: vec![115.0; 32 * 32 * 3],
        };
        let maps = chosen_maps(&network, &[2, 4], 3, 2).unwrap();
        let config = ScanConfig {
            top_k: 5,
            batch_size: 8,
            limit: None,
            checkpoint: None,
            checkpoint_every: std::time::Duration::ZERO,
        };
        let hidden = |_| indicatif::ProgressBar::hidden();
        let scan = scan_top_k(&network, &info, &path, &maps, config, &hidden).unwrap();
        let rows: Vec<usize> = scan.hits.iter().map(|h| h.row).collect();
        let images = read_rows(&path, &rows).unwrap();
        for layer in [2, 4] {
            let hits: Vec<&Hit> = scan.hits.iter().filter(|h| h.layer == layer).collect();
            assert_eq!(hits.len(), 15, "3 maps x top 5");
            let tiles = |batch| hit_tiles(&network, &info, &images, layer, &hits, 16, batch);
            let whole = tiles(1_000).unwrap();
            assert!(
                whole
                    .iter()
                    .any(|(p, _)| p.pixels().any(|px| px.0 != [128; 3])),
                "the projections are not blank"
            );
            for batch in [1, 4, 15] {
                assert!(
                    tiles(batch).unwrap() == whole,
                    "layer {layer}, batch {batch}"
                );
            }
        }
    }
}
