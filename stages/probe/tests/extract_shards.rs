//! `extract` in shards (what `zfnet run --executor slurm` runs as a Slurm array) merges into
//! the bytes of one run: each image's features do not depend on its batch on the CPU, and the
//! merge pushes rows in the chunks one run pushes.

use std::collections::BTreeMap;
use std::path::Path;

use artifacts::images::write_noise_images_of_size;
use artifacts::{HashMemo, Provenance};
use engine::weights::{ModelInfo, save_model};
use engine::{Architecture, CpuBackend, Network};
use probe::Extract;
use stage_api::{ParamValue, Params, Shard, StageContext, StageKind};

fn context(model: &Path, images: &Path, out: &Path, batch_size: i64) -> StageContext {
    std::fs::create_dir_all(out).unwrap();
    StageContext::for_tests(
        Params::defaults_with(
            &Extract.params(),
            &[("batch_size", ParamValue::Int(batch_size))],
        ),
        BTreeMap::from([
            ("model".to_owned(), vec![model.to_path_buf()]),
            ("images".to_owned(), vec![images.to_path_buf()]),
        ]),
        BTreeMap::from([("features".to_owned(), out.join("features"))]),
        out.to_path_buf(),
    )
}

fn layer_hashes(out: &Path) -> Vec<(String, String)> {
    let memo = HashMemo::in_memory();
    let mut layers: Vec<(String, String)> = std::fs::read_dir(out.join("features"))
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                memo.hash_path(&path).unwrap().to_string(),
            )
        })
        .collect();
    layers.sort();
    layers
}

#[test]
fn extract_in_shards_merges_into_the_bytes_of_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let architecture = Architecture::from_name("zf_small", 6).unwrap();
    let image_size = architecture.input_size * 8 / 7;
    let images = dir.path().join("images");
    write_noise_images_of_size(&images, 400, image_size as u32, 0, 6, 5).unwrap();
    let network = Network::new(CpuBackend, architecture, 0.03, 1);
    let info = ModelInfo {
        architecture: network.architecture.clone(),
        image_size,
        class_names: Vec::new(),
        mean: vec![128.0; image_size * image_size * 3],
    };
    let model = dir.path().join("model.safetensors");
    save_model(&model, &network, &info, &Provenance::ad_hoc("test")).unwrap();

    let batch_size = 16;
    let whole = dir.path().join("whole");
    Extract
        .run(&context(&model, &images, &whole, batch_size))
        .unwrap();
    let expected = layer_hashes(&whole);
    assert_eq!(expected.len(), 7, "{expected:?}");
    // Slices of 200 and ~133 images: they cut through batches of 16 and row groups.
    for count in [2, 3] {
        let out = dir.path().join(format!("merged-{count}"));
        let mut parts = Vec::new();
        for index in 0..count {
            let shard_dir = out.join(format!("shard-{index}"));
            let ctx = context(&model, &images, &shard_dir, batch_size);
            Extract.run_shard(&ctx, Shard { index, count }).unwrap();
            parts.push(ctx.outputs.clone());
        }
        let summary = Extract
            .merge_shards(&context(&model, &images, &out, batch_size), &parts)
            .unwrap();
        assert!(
            summary.lines[0].starts_with("400 images; feature dims by layer 1: "),
            "{:?}",
            summary.lines
        );
        assert_eq!(layer_hashes(&out), expected, "{count} shards");
    }
}
