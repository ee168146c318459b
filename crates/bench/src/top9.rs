//! Top-9 scan throughput (issue #6): the deconvnet stage's streaming scan of an image set for
//! the strongest activations of 9 maps in each of layers 1-5. No peer runs here (the issue's
//! reference, DeepVis, took 40 h for ImageNet's training set on a GPU); images/s are reported.

use std::time::Instant;

use anyhow::Result;
use artifacts::Provenance;
use artifacts::images::write_noise_images;
use deconv::{ScanConfig, chosen_maps, scan_top_k};
use engine::weights::{ModelInfo, load_model, save_model};
use engine::{Architecture, CpuBackend, Network};

const IMAGES: usize = 6000;

pub fn run() -> Result<()> {
    let dir = std::env::temp_dir().join("zfnet-bench-top9");
    std::fs::create_dir_all(&dir)?;
    let images = dir.join("images");
    if !images.exists() {
        write_noise_images(&images, IMAGES, 0, 6, 3)?;
    }
    let network = Network::new(CpuBackend, Architecture::from_name("zf_small", 6)?, 0.03, 1);
    let info = ModelInfo {
        architecture: network.architecture.clone(),
        image_size: 32,
        class_names: Vec::new(),
        mean: vec![128.0; 32 * 32 * 3],
    };
    let model = dir.join("model.safetensors");
    save_model(&model, &network, &info, &Provenance::ad_hoc("bench"))?;
    let (network, info) = load_model(&model, CpuBackend)?;
    let maps = chosen_maps(&network, &[1, 2, 3, 4, 5], 9, 0).map_err(anyhow::Error::msg)?;
    let config = ScanConfig {
        top_k: 9,
        batch_size: 128,
        limit: None,
        checkpoint: None,
        checkpoint_every: std::time::Duration::ZERO,
    };
    let hidden = |_| indicatif::ProgressBar::hidden();
    scan_top_k(
        &network,
        &info,
        &images,
        &maps,
        ScanConfig {
            limit: Some(256),
            ..config
        },
        &hidden,
    )?;
    let started = Instant::now();
    let scan = scan_top_k(&network, &info, &images, &maps, config, &hidden)?;
    let rate = scan.n_images as f64 / started.elapsed().as_secs_f64();
    println!(
        "\n## top-9 scan (deconv_top9), zf_small, 9 maps x layers 1-5, {IMAGES} images of 32x32"
    );
    println!("| implementation | images/s |");
    println!("|---|---|");
    println!("| zfnet CPU backend, 2 cores | {rate:.0} |");
    Ok(())
}
