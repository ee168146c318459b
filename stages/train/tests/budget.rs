//! `memory_limit_mb` is one budget for the network and the images (issue #16): on the CPU the
//! model and one batch's activations come out of it first, so a set that fits the budget
//! alone but not beside the network is streamed, and a budget the network alone passes is
//! refused before any pixel is read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use artifacts::Provenance;
use artifacts::tensors::{NamedTensor, write_tensors};
use engine::{Architecture, Plan};
use stage_api::ParamValue::{Bool, Int, Str};
use stage_api::{Params, StageContext, StageKind};

fn context(dir: &Path, overrides: &[(&str, stage_api::ParamValue)]) -> StageContext {
    let params = Params::defaults_with(&train::Train.params(), overrides);
    let input = |name: &str| (name.to_owned(), vec![dir.join(name)]);
    let output = |name: &str| (name.to_owned(), dir.join("out").join(name));
    StageContext::for_tests(
        params,
        BTreeMap::from([
            input("train"),
            input("val"),
            input("mean"),
            ("exclude".to_owned(), Vec::<PathBuf>::new()),
        ]),
        BTreeMap::from([
            output("model"),
            output("checkpoints"),
            output("metrics"),
            output("evaluation"),
        ]),
        dir.join("scratch"),
    )
}

#[test]
fn the_network_comes_out_of_the_budget_before_the_images() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    let small = [
        ("arch", Str("zf_small".into())),
        ("epochs", Int(1)),
        ("batch_size", Int(8)),
        ("crops", Str("random".into())),
        ("shuffle_buffer", Int(8)),
    ];

    // 40 images of 256x256 (7.9 MB of pixels) in each set, 3 classes.
    let size = 256;
    for set in ["train", "val"] {
        artifacts::images::write_noise_images_of_size(&dir.path().join(set), 40, size, 0, 3, 9)
            .unwrap();
    }
    let mean = NamedTensor::new(
        "mean",
        vec![size as usize, size as usize, 3],
        vec![120.0; (size * size * 3) as usize],
    );
    write_tensors(
        &dir.path().join("mean"),
        &Provenance::ad_hoc("t"),
        &[mean],
        &BTreeMap::new(),
    )
    .unwrap();
    // A budget below the network alone: refused from the artifacts' rows, before any pixel
    // is read.
    let mut tight = small.to_vec();
    tight.push(("memory_limit_mb", Int(5)));
    let error = train::Train
        .run(&context(dir.path(), &tight))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("memory_limit_mb is 5, but the model (10 MB"),
        "{error}"
    );
    assert!(error.contains("batch_size 8"), "{error}");

    let plan = Plan::of(&Architecture::from_name("zf_small", 3).unwrap());
    let network = plan.model_bytes() + 8 * plan.training_bytes_per_image();
    let pixels = 40 * (size * size * 3) as u64;
    // The training set fits this budget alone but not beside the network: streamed (both
    // sets, through shuffle buffers of 8 images). With a budget that holds both sets beside
    // the network, they are held.
    // A training set that fits beside the network, but not with the validation set's least
    // (its buffer of 8 images, 1.6 MB) besides, is streamed too, not refused.
    for (budget, streamed) in [
        (network + pixels / 2, true),
        (network + pixels + 500_000, true),
        (2 * pixels + network + 1_000_000, false),
    ] {
        let mut params = small.to_vec();
        params.push(("memory_limit_mb", Int(budget.div_ceil(1_000_000) as i64)));
        let summary = train::Train
            .run(&context(dir.path(), &params))
            .expect("trains");
        let said = summary
            .lines
            .iter()
            .any(|line| line.contains("streamed the training images"));
        assert_eq!(said, streamed, "budget {budget}: {:?}", summary.lines);
    }

    // Streaming can be asked for, and a network beside shuffle buffers over the budget is
    // refused, naming them.
    let mut forced = small.to_vec();
    forced.push(("stream_images", Bool(true)));
    let summary = train::Train.run(&context(dir.path(), &forced)).unwrap();
    assert!(summary.lines.iter().any(|l| l.contains("stream_images")));
    forced.push(("shuffle_buffer", Int(30)));
    forced.push((
        "memory_limit_mb",
        Int((network + 3_000_000).div_ceil(1_000_000) as i64),
    ));
    let error = train::Train
        .run(&context(dir.path(), &forced))
        .unwrap_err()
        .to_string();
    assert!(error.contains("shuffle buffers of 30 images"), "{error}");
}
