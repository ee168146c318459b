//! `transfer` and `transfer_multilabel` are bounded by their `memory_limit_mb` (issue #16):
//! their need is computed from the inputs' headers and the folds or labels before anything
//! large is read, a run over the budget is refused with its parts, and a run under it stays
//! under it. One measured test per binary, since it reads this process's peak RSS.

use std::path::{Path, PathBuf};

use artifacts::Provenance;
use artifacts::multilabels::{MultiLabel, write_multilabels};
use engine::weights::{ModelInfo, save_model};
use engine::{Architecture, CpuBackend, Network};
use stage_api::ParamValue::{Bool, Int, List};
use stage_api::{Params, StageContext, StageKind};

const MB: u64 = 1_000_000;

/// `rows` rows of `dim` pseudo-random features, ids 0.. and labels cycling over `classes`
/// (as `write_noise_images` numbers its images).
fn write_layer(path: &Path, rows: usize, dim: usize, classes: usize) {
    artifacts::features::write_pseudo_random_features(
        path,
        "layer7",
        (rows, dim),
        classes,
        0x9e37_79b9_7f4a_7c15,
    )
    .unwrap();
}

fn context(
    kind: &dyn StageKind,
    inputs: &[(&str, PathBuf)],
    outputs: &[(&str, PathBuf)],
    overrides: &[(&str, stage_api::ParamValue)],
    scratch: PathBuf,
) -> StageContext {
    let params = Params::defaults_with(&kind.params(), overrides);
    StageContext::for_tests(
        params,
        inputs
            .iter()
            .map(|(name, path)| (name.to_string(), vec![path.clone()]))
            .collect(),
        outputs
            .iter()
            .map(|(name, path)| (name.to_string(), path.clone()))
            .collect(),
        scratch,
    )
}

#[test]
fn transfer_runs_are_checked_against_their_budget_before_reading_and_stay_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("features")).unwrap();
    std::fs::create_dir_all(root.join("scratch")).unwrap();
    // 240 target images of 256x256 (47 MB of pixels), 6 classes, and their layer-7 features.
    let (images, classes, size) = (240, 6, 256);
    artifacts::images::write_noise_images_of_size(
        &root.join("images"),
        images,
        size,
        0,
        classes,
        3,
    )
    .unwrap();
    write_layer(&root.join("features/layer7.parquet"), images, 512, classes);
    let network = Network::new(
        CpuBackend,
        Architecture::from_name("zf_small", classes).unwrap(),
        0.01,
        1,
    );
    let info = ModelInfo {
        architecture: network.architecture.clone(),
        image_size: size as usize,
        class_names: Vec::new(),
        mean: vec![120.0; (size * size * 3) as usize],
    };
    save_model(
        &root.join("model.safetensors"),
        &network,
        &info,
        &Provenance::ad_hoc("t"),
    )
    .unwrap();
    drop(network);
    let inputs = [
        ("model", root.join("model.safetensors")),
        ("features", root.join("features")),
        ("images", root.join("images")),
    ];
    let outputs = |name: &str| {
        [
            ("table", root.join(format!("{name}.parquet"))),
            ("figures", root.join(format!("{name}_figures"))),
        ]
    };
    let small = |budget_mb: i64| {
        vec![
            ("n_per_class", List(vec![Int(3)])),
            ("folds", Int(1)),
            ("softmax_steps", Int(5)),
            ("scratch_steps", Int(2)),
            ("scratch_batch_size", Int(8)),
            ("memory_limit_mb", Int(budget_mb)),
        ]
    };
    let kind = transfer::Transfer;

    // 40 MB cannot hold the 47 MB of images: refused before they are read, every part named.
    let error = kind
        .run(&context(
            &kind,
            &inputs,
            &outputs("tight"),
            &small(40),
            root.join("scratch"),
        ))
        .unwrap_err()
        .to_string();
    for part in [
        "memory_limit_mb is 40",
        "240 target images: 47 MB",
        "240 rows of 512 features (f32)",
        "the largest fold's image copies: 47 MB",
        "the scratch network and a batch of 128",
    ] {
        assert!(error.contains(part), "{part:?} not in: {error}");
    }
    // Without the scratch arm the images are not counted (nor read).
    let mut pretrained_only = small(40);
    pretrained_only.push(("scratch", Bool(false)));
    kind.run(&context(
        &kind,
        &inputs,
        &outputs("pretrained"),
        &pretrained_only,
        root.join("scratch"),
    ))
    .expect("the pretrained arm alone fits 40 MB");

    // A budget that holds the need: the run stays under it.
    let budget_mb = 400;
    let peak = stage_api::memory::PeakRss::start(true);
    kind.run(&context(
        &kind,
        &inputs,
        &outputs("fits"),
        &small(budget_mb),
        root.join("scratch"),
    ))
    .expect("the run fits its budget");
    let grown = peak
        .grown()
        .expect("the peak RSS is measurable here (Linux)");
    eprintln!(
        "transfer under {budget_mb} MB: peak RSS grew by {} MB",
        grown / MB
    );
    assert!(
        grown < budget_mb as u64 * MB,
        "peak RSS grew by {} MB (budget {budget_mb} MB)",
        grown / MB
    );

    // transfer_multilabel: 2,000 training rows of 4,096 features with 2 labels each (the
    // pairs alone are 131 MB) do not fit 100 MB: refused before the features are read.
    let multi = root.join("multi");
    for set in ["train", "test"] {
        std::fs::create_dir_all(multi.join(set)).unwrap();
        let rows = if set == "train" { 2_000 } else { 10 };
        write_layer(&multi.join(set).join("layer7.parquet"), rows, 4_096, 20);
        let labels: Vec<MultiLabel> = (0..rows as i64)
            .map(|id| MultiLabel {
                image_id: id,
                labels: vec![(id % 20) as i32, ((id + 1) % 20) as i32],
                difficult: Vec::new(),
            })
            .collect();
        write_multilabels(
            &multi.join(format!("{set}_labels.parquet")),
            &Provenance::ad_hoc("t"),
            &labels,
        )
        .unwrap();
    }
    let kind = transfer::TransferMultilabel;
    let inputs = [
        ("train_features", multi.join("train")),
        ("train_labels", multi.join("train_labels.parquet")),
        ("test_features", multi.join("test")),
        ("test_labels", multi.join("test_labels.parquet")),
    ];
    let run = |budget_mb: i64| {
        kind.run(&context(
            &kind,
            &inputs,
            &[("table6", multi.join(format!("table6_{budget_mb}.parquet")))],
            &[
                ("softmax_steps", Int(2)),
                ("memory_limit_mb", Int(budget_mb)),
            ],
            root.join("scratch"),
        ))
    };
    let error = run(100).unwrap_err().to_string();
    eprintln!("{error}");
    for part in [
        "memory_limit_mb is 100",
        "4000 (image, label) rows: 131 MB",
        "2000 training rows of 4096 features and their normalised copy: 98 MB",
    ] {
        assert!(error.contains(part), "{part:?} not in: {error}");
    }
    run(1_000).expect("fits 1,000 MB");
}
