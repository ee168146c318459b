//! Fig. 7's panels for one image: (a) the input with the occluder's size, (b) the layer-5
//! map's total activation and (d) the true-class probability as heat maps over occluder
//! positions, (c) the map's deconvnet projection in this image (top-left) and in up to three
//! other images, (e) the most probable label per position.

use std::path::Path;

use image::{Rgb, RgbImage};
use stage_api::{Error, Result};

use crate::ImageResult;

const PANEL: u32 = 112;
const GAP: u32 = 6;

/// Blue (low) to red (high).
fn heat(t: f32) -> Rgb<u8> {
    let t = t.clamp(0.0, 1.0);
    Rgb([
        (255.0 * t) as u8,
        (255.0 * (1.0 - (2.0 * t - 1.0).abs())) as u8,
        (255.0 * (1.0 - t)) as u8,
    ])
}

/// A distinct colour per class.
fn class_colour(class: usize) -> Rgb<u8> {
    const COLOURS: [[u8; 3]; 10] = [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 190],
    ];
    Rgb(COLOURS[class % COLOURS.len()])
}

fn grid_panel<F: Fn(usize) -> Rgb<u8>>(grid: usize, colour: F) -> RgbImage {
    RgbImage::from_fn(PANEL, PANEL, |x, y| {
        let (gy, gx) = (
            (y as usize * grid) / PANEL as usize,
            (x as usize * grid) / PANEL as usize,
        );
        colour(gy * grid + gx)
    })
}

pub fn render(
    result: &ImageResult,
    others: &[Vec<f32>],
    crop: usize,
    occluder: usize,
    path: &Path,
) -> Result<()> {
    let mut canvas =
        RgbImage::from_pixel(5 * PANEL + 6 * GAP, PANEL + 2 * GAP, Rgb([255, 255, 255]));
    let image = &result.image;
    let offset = (image.width as usize - crop) / 2;
    // (a) the input crop, with the occluder's size drawn in the corner.
    let input = RgbImage::from_fn(PANEL, PANEL, |x, y| {
        let (sy, sx) = (
            y as usize * crop / PANEL as usize,
            x as usize * crop / PANEL as usize,
        );
        if sy < occluder && sx < occluder && (sy == occluder - 1 || sx == occluder - 1) {
            return Rgb([128, 128, 128]);
        }
        let at = ((offset + sy) * image.width as usize + offset + sx) * 3;
        Rgb([image.pixels[at], image.pixels[at + 1], image.pixels[at + 2]])
    });
    let range = |values: &[f32]| {
        values
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)))
    };
    let (lo, hi) = range(&result.map_activation);
    let activation = grid_panel(result.grid, |i| {
        heat((result.map_activation[i] - lo) / (hi - lo).max(1e-12))
    });
    // (c): the image's own projection top-left, the other images' in the other quarters.
    let plane = crop * crop;
    let half = PANEL / 2;
    let mut projection = RgbImage::from_pixel(PANEL, PANEL, Rgb([255, 255, 255]));
    for (k, pixels) in std::iter::once(&result.projection)
        .chain(others)
        .take(4)
        .enumerate()
    {
        let max_abs = pixels.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
        let quarter = RgbImage::from_fn(half, half, |x, y| {
            let (sy, sx) = (
                y as usize * crop / half as usize,
                x as usize * crop / half as usize,
            );
            Rgb([0, 1, 2]
                .map(|c| (128.0 + 127.0 * pixels[c * plane + sy * crop + sx] / max_abs) as u8))
        });
        let (qx, qy) = ((k as u32 % 2) * half, (k as u32 / 2) * half);
        image::imageops::replace(&mut projection, &quarter, qx as i64, qy as i64);
    }
    let probability = grid_panel(result.grid, |i| heat(result.true_probability[i]));
    let labels = grid_panel(result.grid, |i| class_colour(result.predicted[i]));
    for (i, panel) in [input, activation, projection, probability, labels]
        .iter()
        .enumerate()
    {
        image::imageops::replace(
            &mut canvas,
            panel,
            (GAP + i as u32 * (PANEL + GAP)) as i64,
            GAP as i64,
        );
    }
    canvas
        .save(path)
        .map_err(|e| Error::io(path, std::io::Error::other(e)))
}
