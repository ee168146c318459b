//! Preprocess throughput (issue #3 target: >= 1.5x Pillow's images/s on this machine).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use image::{ImageEncoder, Rgb, RgbImage};
use imaging::{DecodeLimits, ShortSideResizer, decode_rgb};
use rayon::prelude::*;

const N_IMAGES: usize = 400;
const SIZE: u32 = 256;

/// Writes `N_IMAGES` textured 500x375 JPEGs (quality 90, like ImageNet's) once.
fn make_jpegs(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    (0..N_IMAGES)
        .into_par_iter()
        .map(|i| {
            let path = dir.join(format!("img_{i:04}.jpg"));
            if !path.exists() {
                let image = RgbImage::from_fn(500, 375, |x, y| {
                    let v = (x * 7 + y * 13 + i as u32 * 31) ^ (x * y / 11);
                    Rgb([
                        (v % 251) as u8,
                        ((v / 3) % 241) as u8,
                        ((x + y + i as u32) % 256) as u8,
                    ])
                });
                let mut bytes = Vec::new();
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90).write_image(
                    image.as_raw(),
                    500,
                    375,
                    image::ExtendedColorType::Rgb8,
                )?;
                std::fs::write(&path, bytes)?;
            }
            Ok(path)
        })
        .collect()
}

pub fn run() -> Result<()> {
    let dir = std::env::temp_dir().join("zfnet-bench-jpegs");
    let files = make_jpegs(&dir)?;
    // Warm the page cache so both sides read from memory.
    for file in &files {
        std::fs::read(file)?;
    }
    let ours = |files: &[PathBuf]| -> Result<f64> {
        let started = Instant::now();
        let total: usize = files
            .par_iter()
            .map_init(ShortSideResizer::default, |resizer, path| {
                let bytes = std::fs::read(path).expect("bench file");
                let decoded = decode_rgb(&bytes, DecodeLimits::default()).expect("valid JPEG");
                resizer.resize(&decoded, SIZE).len()
            })
            .sum();
        assert_eq!(total, files.len() * (SIZE * SIZE * 3) as usize);
        Ok(files.len() as f64 / started.elapsed().as_secs_f64())
    };
    ours(&files[..50])?;
    let ours_rate = (0..3).map(|_| ours(&files)).collect::<Result<Vec<_>>>()?;
    let ours_best = ours_rate.iter().cloned().fold(0.0, f64::max);

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/bench_pillow.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(&dir)
        .arg(SIZE.to_string())
        .output()
        .context("running python3 scripts/bench_pillow.py (make bench installs Pillow)")?;
    if !output.status.success() {
        bail!(
            "Pillow bench failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let pillow: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let one = pillow["one_process_images_per_s"].as_f64().unwrap_or(0.0);
    let pool = pillow["pool_images_per_s"].as_f64().unwrap_or(0.0);
    println!(
        "\n## preprocess: decode + shortest side to {SIZE} + centre crop, {N_IMAGES} JPEGs of 500x375"
    );
    println!("| implementation | images/s | ours / it |");
    println!("|---|---|---|");
    println!("| zfnet (zune-jpeg strict + fast_image_resize, rayon) | {ours_best:.0} | 1.00 |");
    println!(
        "| Pillow {} (1 process) | {one:.0} | {:.2} |",
        pillow["version"].as_str().unwrap_or("?"),
        ours_best / one
    );
    println!(
        "| Pillow (multiprocessing pool, {} processes) | {pool:.0} | {:.2} |",
        pillow["processes"],
        ours_best / pool
    );
    Ok(())
}
