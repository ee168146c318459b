//! Fig. 7's panels for one image: (a) the input with the occluder's size, (b) the layer-5
//! map's total activation and (d) the true-class probability as heat maps over occluder
//! positions, (c) the map's deconvnet projection in this image (top-left) and in up to three
//! other images, (e) the most probable label per position. Each panel is titled (a)-(e); (b)
//! and (d) have a colour bar with the values at its ends, (e) a legend naming the classes.

use std::path::Path;

use image::{Rgb, RgbImage};
use stage_api::{Error, Result};

use crate::ImageResult;

const PANEL: u32 = 140;
const GAP: u32 = 8;
/// Room above the panels for their titles.
const TITLE: u32 = 22;
/// Room below for the colour bars and the class legend.
const BELOW: u32 = 96;

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
    class_names: &[String],
    path: &Path,
) -> Result<()> {
    let mut canvas = RgbImage::from_pixel(
        5 * PANEL + 6 * GAP,
        TITLE + PANEL + BELOW,
        Rgb([255, 255, 255]),
    );
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
    let left = |i: u32| GAP + i * (PANEL + GAP);
    for (i, panel) in [input, activation, projection, probability, labels]
        .iter()
        .enumerate()
    {
        image::imageops::replace(&mut canvas, panel, left(i as u32) as i64, TITLE as i64);
    }
    let text = |canvas: &mut RgbImage, words: &str, x: u32, y: u32, size: u32| {
        plots::draw_text(canvas, words, (x as i32, y as i32), size, [0, 0, 0])
            .map_err(|e| Error::io(path, std::io::Error::other(e)))
    };
    let class_name = |c: usize| {
        class_names
            .get(c)
            .cloned()
            .unwrap_or_else(|| format!("class {c}"))
    };
    let titles = [
        format!("(a) input: {}", class_name(image.label.max(0) as usize)),
        format!("(b) layer-5 map {}", result.map),
        "(c) its projections".to_owned(),
        "(d) p(true class)".to_owned(),
        "(e) most probable".to_owned(),
    ];
    for (i, title) in titles.iter().enumerate() {
        text(&mut canvas, title, left(i as u32), 3, 13)?;
    }
    // Colour bars under (b) and (d), blue (low) to red (high), with their end values.
    let bar_top = TITLE + PANEL + 6;
    for (i, (low, high, what)) in [(lo, hi, "total activation"), (0.0, 1.0, "probability")]
        .into_iter()
        .enumerate()
    {
        let x0 = left(if i == 0 { 1 } else { 3 });
        for dx in 0..PANEL {
            for dy in 0..10 {
                canvas.put_pixel(x0 + dx, bar_top + dy, heat(dx as f32 / (PANEL - 1) as f32));
            }
        }
        let format = |v: f32| {
            if v.abs() >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        };
        text(&mut canvas, &format(low), x0, bar_top + 12, 11)?;
        let high = format(high);
        text(
            &mut canvas,
            &high,
            x0 + PANEL - 7 * high.len() as u32,
            bar_top + 12,
            11,
        )?;
        text(&mut canvas, what, x0 + PANEL / 2 - 30, bar_top + 26, 11)?;
    }
    // (e)'s legend: the classes that appear, in order of first appearance.
    let mut shown: Vec<usize> = Vec::new();
    for &c in &result.predicted {
        if !shown.contains(&c) {
            shown.push(c);
        }
    }
    for (k, &c) in shown.iter().take(6).enumerate() {
        let (x, y) = (left(4), bar_top + 15 * k as u32);
        for dx in 0..10 {
            for dy in 0..10 {
                canvas.put_pixel(x + dx, y + dy, class_colour(c));
            }
        }
        text(&mut canvas, &class_name(c), x + 14, y - 1, 11)?;
    }
    canvas
        .save(path)
        .map_err(|e| Error::io(path, std::io::Error::other(e)))
}
