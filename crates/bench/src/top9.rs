//! Top-9 scan throughput (issue #6): the deconvnet stage's streaming scan of an image set for
//! the strongest activations of 9 maps in each of layers 1-5. No peer runs here (the issue's
//! reference, DeepVis, took 40 h for ImageNet's training set on a GPU); images/s are reported.
//!
//! `zfnet-bench top9` scans 6,000 32x32 images with zf_small on the CPU (the default
//! pipeline's scale). `zfnet-bench top9 --device cuda-tf32 --arch zf [--images N]` scans N
//! (default 2,000) 256x256 images with the full ZF net at 224x224 on the GPU (a build with
//! `--features cuda`; scripts/device-check.sh runs it), the paper's scale.

use std::time::Instant;

use anyhow::Result;
use artifacts::Provenance;
use artifacts::images::write_noise_images_of_size;
use cuda_backend::BackendTask;
use deconv::{ScanConfig, chosen_maps, scan_top_k};
use engine::weights::{ModelInfo, load_model, save_model};
use engine::{Architecture, Backend, CpuBackend, Network};

/// What to scan, on which backend.
pub struct Top9Options {
    pub device: String,
    pub arch: String,
    pub images: Option<usize>,
}

impl Top9Options {
    /// From the command line after `top9`: `--device D`, `--arch A`, `--images N`.
    pub fn parse(args: &[String]) -> Result<Self> {
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        Ok(Top9Options {
            device: value("--device").unwrap_or_else(|| "cpu".to_owned()),
            arch: value("--arch").unwrap_or_else(|| "zf_small".to_owned()),
            images: value("--images")
                .map(|n| n.parse())
                .transpose()
                .map_err(|e| anyhow::anyhow!("--images: {e}"))?,
        })
    }
}

struct Scan {
    model: std::path::PathBuf,
    images: std::path::PathBuf,
}

impl BackendTask for Scan {
    type Output = Result<(usize, f64)>;

    fn run<B: Backend>(self, backend: B) -> Self::Output {
        let (network, info) = load_model(&self.model, backend)?;
        let maps = chosen_maps(&network, &[1, 2, 3, 4, 5], 9, 0).map_err(anyhow::Error::msg)?;
        let config = ScanConfig {
            top_k: 9,
            batch_size: 128,
            limit: None,
            checkpoint: None,
            checkpoint_every: std::time::Duration::ZERO,
        };
        let hidden = |_| indicatif::ProgressBar::hidden();
        // Warm-up: the first batches pick cuDNN algorithms and fault pages in.
        let warm_up = ScanConfig {
            limit: Some(256),
            ..config
        };
        scan_top_k(&network, &info, &self.images, &maps, warm_up, &hidden)?;
        let started = Instant::now();
        let scan = scan_top_k(&network, &info, &self.images, &maps, config, &hidden)?;
        Ok((scan.n_images, started.elapsed().as_secs_f64()))
    }
}

pub fn run(options: &Top9Options) -> Result<()> {
    if options.device != "cpu" {
        // Say that the GPU cannot be used before writing hundreds of MB of test images.
        cuda_backend::probe()?;
    }
    let architecture = Architecture::from_name(&options.arch, 6)?;
    // Images 8/7 of the crop, as in the pipeline: 256 for 224 (§3), 32 for zf_small's 28.
    let image_size = (architecture.input_size * 8 / 7) as u32;
    let n_images = options
        .images
        .unwrap_or(if image_size > 32 { 2000 } else { 6000 });
    let dir = std::env::temp_dir().join(format!("zfnet-bench-top9-{image_size}-{n_images}"));
    std::fs::create_dir_all(&dir)?;
    let images = dir.join("images");
    if !images.exists() {
        write_noise_images_of_size(&images, n_images, image_size, 0, 6, 3)?;
    }
    let network = Network::new(CpuBackend, architecture, 0.03, 1);
    let info = ModelInfo {
        architecture: network.architecture.clone(),
        image_size: image_size as usize,
        class_names: Vec::new(),
        mean: vec![128.0; (image_size * image_size * 3) as usize],
    };
    let model = dir.join(format!("{}.safetensors", options.arch));
    save_model(&model, &network, &info, &Provenance::ad_hoc("bench"))?;
    let (scanned, seconds) = cuda_backend::run_on(
        options.device.parse().map_err(anyhow::Error::msg)?,
        Scan { model, images },
    )??;
    let rate = scanned as f64 / seconds;
    println!(
        "\n## top-9 scan (deconv_top9), {}, 9 maps x layers 1-5, {scanned} images of {image_size}x{image_size}",
        options.arch
    );
    println!("| implementation | images/s | 50,000 images would take |");
    println!("|---|---|---|");
    println!(
        "| zfnet, device {} ({} cores) | {rate:.0} | {:.1} min |",
        options.device,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        50_000.0 / rate / 60.0
    );
    Ok(())
}
