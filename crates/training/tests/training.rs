//! Training as §3 describes it, on a small learnable set: resumable bit for bit, stopped on a
//! diverging loss, and learning — from memory and streamed from an artifact.

use engine::CpuBackend;
use stage_api::Error;
use std::collections::BTreeSet;
use std::path::Path;

use artifacts::Provenance;
use artifacts::images::{ImageRecord, ImagesWriter};
use training::{
    Crops, Holding, ImageSet, ImageStore, LrSchedule, StreamedImages, TrainConfig, TrainingCrops,
    evaluate_set, queue_sgd_step, sgd_step, step_input, train,
};

/// `n` 32x32 images of 4 classes: class c is a bright horizontal band (rows 8c..8c+8), on
/// noise — a task that horizontal flips and small crop shifts leave intact.
fn store(n: usize, seed: u64) -> ImageStore {
    let mut pixels = Vec::with_capacity(n * 32 * 32 * 3);
    let mut labels = Vec::new();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in 0..n {
        let c = i % 4;
        labels.push(c);
        for y in 0..32 {
            for _x in 0..32 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let inside = y / 8 == c;
                let value = (state % 60) as u8 + if inside { 150 } else { 30 };
                pixels.extend_from_slice(&[value, value, value]);
            }
        }
    }
    ImageStore {
        image_size: 32,
        pixels,
        labels,
        image_ids: (0..n as i64).collect(),
        class_names: (0..4).map(|c| format!("band{c}")).collect(),
    }
}

fn config(epochs: usize) -> TrainConfig {
    TrainConfig {
        architecture: "zf_small".into(),
        layers: Vec::new(),
        crops: TrainingCrops::Random,
        epochs,
        batch_size: 16,
        learning_rate: 0.01,
        momentum: 0.9,
        weight_decay: 5e-4,
        init_std: 0.03,
        filter_rms_radius: 0.1,
        schedule: LrSchedule::Plateau {
            patience: 1,
            factor: 0.1,
        },
        seed: 11,
        checkpoint_epochs: vec![1, 3],
    }
}

/// The learning tests' settings. lr 0.01 with the plateau schedule sits at the edge of
/// stability on this tiny task: whether epoch 2's loss blows up then depends on the last bits
/// of the summation order (it did for seeds 11 and 12 after the engine's GEMM changed). At a
/// constant 0.003 every seed tried (11-14) reaches 0% validation error with a falling loss.
fn steady_config() -> TrainConfig {
    TrainConfig {
        learning_rate: 0.003,
        schedule: LrSchedule::Manual {
            epochs: vec![],
            factor: 1.0,
        },
        ..config(3)
    }
}

const MEAN: f32 = 90.0;

#[test]
fn a_run_resumed_after_any_epoch_ends_bit_identical_to_an_uninterrupted_run() {
    let (train_set, val_set) = (ImageSet::from(store(64, 1)), ImageSet::from(store(16, 2)));
    let mean = vec![MEAN; 32 * 32 * 3];
    let whole_dir = tempfile::tempdir().unwrap();
    let whole = train(
        CpuBackend,
        &config(3),
        &train_set,
        &val_set,
        &mean,
        whole_dir.path(),
        3,
        &mut |_| {},
    )
    .unwrap();

    let resumed_dir = tempfile::tempdir().unwrap();
    // "Killed" after epoch 1 (the checkpoint is written), then after epoch 2, then finished
    // by fresh processes' worth of state: a new network each time.
    for until in [1, 2, 3] {
        let partial = train(
            CpuBackend,
            &config(3),
            &train_set,
            &val_set,
            &mean,
            resumed_dir.path(),
            until,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(partial.metrics.len(), until);
    }
    let resumed = train(
        CpuBackend,
        &config(3),
        &train_set,
        &val_set,
        &mean,
        resumed_dir.path(),
        3,
        &mut |_| {},
    )
    .unwrap();

    for (a, b) in whole.network.params.iter().zip(&resumed.network.params) {
        assert_eq!(a.weight, b.weight, "{} weights", a.name);
        assert_eq!(a.weight_velocity, b.weight_velocity, "{} momentum", a.name);
    }
    let losses = |t: &training::Trained<CpuBackend>| {
        t.metrics
            .iter()
            .map(|m| (m.train_loss, m.learning_rate))
            .collect::<Vec<_>>()
    };
    assert_eq!(losses(&whole), losses(&resumed));
    assert_eq!(
        resumed
            .epoch_files
            .iter()
            .map(|(e, _)| *e)
            .collect::<Vec<_>>(),
        vec![1, 3]
    );
}

#[test]
fn pipelined_steps_make_the_same_updates_as_one_step_after_another() {
    // The trainer cuts step k+1's input before it reads step k's loss (so that a GPU's host
    // work overlaps the step): that must change nothing.
    let images = store(48, 3);
    let mean = vec![MEAN; 32 * 32 * 3];
    let arch = engine::Architecture::from_name("zf_small", 4).unwrap();
    let update = engine::UpdateConfig {
        learning_rate: 0.003,
        momentum: 0.9,
        weight_decay: 5e-4,
        filter_rms_radius: 0.1,
    };
    let batches: Vec<Vec<usize>> = (0..4)
        .map(|b| (0..12).map(|i| (b * 7 + i * 5) % 48).collect())
        .collect();
    let key = |step: usize| [11, 0, step as u64];

    let mut sequential = engine::Network::new(CpuBackend, arch.clone(), 0.03, 5);
    let sequential_losses: Vec<f32> = batches
        .iter()
        .enumerate()
        .map(|(step, indices)| {
            sgd_step(
                &mut sequential,
                &images,
                indices,
                &mean,
                TrainingCrops::Random,
                key(step),
                &update,
            )
            .loss
        })
        .collect();

    let mut pipelined = engine::Network::new(CpuBackend, arch, 0.03, 5);
    let mut in_flight = None;
    let mut pipelined_losses = Vec::new();
    for (step, indices) in batches.iter().enumerate() {
        let (input, labels) = step_input(
            &CpuBackend,
            &images,
            indices,
            &mean,
            28,
            TrainingCrops::Random,
            key(step),
        );
        if let Some(queued) = in_flight.take() {
            pipelined_losses.push(training::QueuedStep::finish(queued, &pipelined).loss);
        }
        in_flight = Some(queue_sgd_step(
            &mut pipelined,
            input,
            labels,
            key(step),
            &update,
        ));
    }
    pipelined_losses.push(in_flight.unwrap().finish(&pipelined).loss);

    assert_eq!(sequential_losses, pipelined_losses);
    assert!(sequential_losses.iter().all(|l| l.is_finite()));
    for (a, b) in sequential.params.iter().zip(&pipelined.params) {
        assert_eq!(a.weight, b.weight, "{} weights", a.name);
    }
}

#[test]
fn the_network_learns_the_band_task() {
    let (train_set, val_set) = (ImageSet::from(store(256, 3)), ImageSet::from(store(64, 4)));
    let mean = vec![MEAN; 32 * 32 * 3];
    let dir = tempfile::tempdir().unwrap();
    let steady = steady_config();
    let trained = train(
        CpuBackend,
        &steady,
        &train_set,
        &val_set,
        &mean,
        dir.path(),
        3,
        &mut |_| {},
    )
    .unwrap();
    let ten = evaluate_set(&trained.network, &val_set, &mean, Crops::Ten, 32).unwrap();
    assert!(
        ten.top1_error < 0.25,
        "10-crop error {} (chance is 0.75)",
        ten.top1_error
    );
    assert!(trained.metrics[2].train_loss < trained.metrics[0].train_loss);
}

#[test]
fn a_diverging_loss_stops_training_with_a_clear_message_and_keeps_the_last_checkpoint() {
    let (train_set, val_set) = (ImageSet::from(store(64, 5)), ImageSet::from(store(16, 6)));
    let mean = vec![MEAN; 32 * 32 * 3];
    let dir = tempfile::tempdir().unwrap();
    train(
        CpuBackend,
        &config(3),
        &train_set,
        &val_set,
        &mean,
        dir.path(),
        1,
        &mut |_| {},
    )
    .unwrap();
    // A non-finite input poisons the forward pass the way an exploding update does.
    let poisoned = vec![f32::NAN; mean.len()];
    let error = train(
        CpuBackend,
        &config(3),
        &train_set,
        &val_set,
        &poisoned,
        dir.path(),
        3,
        &mut |_| {},
    )
    .err()
    .expect("diverges");
    match error {
        Error::Numerical(message) => {
            assert!(message.contains("training diverged"), "{message}");
            assert!(message.contains("after epoch 1"), "{message}");
        }
        other => panic!("expected a numerical error, got {other}"),
    }
    assert!(dir.path().join("checkpoint.safetensors").exists());
}

/// Writes a store as an `images` artifact (row groups of 256 images).
fn write_artifact(store: &ImageStore, path: &Path) {
    let mut writer = ImagesWriter::create(path, &Provenance::ad_hoc("test")).unwrap();
    for (i, &label) in store.labels.iter().enumerate() {
        writer
            .push(ImageRecord {
                image_id: store.image_ids[i],
                label: label as i32,
                class_name: store.class_names[label].clone(),
                source: String::new(),
                height: 32,
                width: 32,
                channels: 3,
                pixels: store.image(i).to_vec(),
            })
            .unwrap();
    }
    writer.finish().unwrap();
}

/// A streamed set: each epoch visits every kept image exactly once,
/// in an order that mixes the row groups and changes with the epoch but not between runs,
/// and never holds more than the shuffle buffer (plus the groups read ahead).
#[test]
fn a_streamed_epoch_visits_every_kept_image_once_in_a_seeded_mixed_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train");
    write_artifact(&store(1000, 7), &path); // row groups of 256, 256, 256, 232
    let set = ImageSet::open(
        &path,
        Holding::Streamed {
            shuffle_buffer: 300,
        },
    )
    .unwrap();
    assert!(set.is_streamed());
    assert!(!ImageSet::open(&path, Holding::Whole).unwrap().is_streamed());
    let ImageSet::Streamed(mut streamed) = set else {
        unreachable!()
    };
    let excluded: BTreeSet<i64> = [3, 500, 999].into();
    assert_eq!(streamed.exclude(&excluded), 3);
    let epoch = |streamed: &StreamedImages, epoch: u64| -> Vec<Vec<i64>> {
        streamed
            .epoch_batches(11, epoch, 128)
            .map(|batch| batch.unwrap().image_ids)
            .collect()
    };
    let first = epoch(&streamed, 0);
    assert_eq!(first.len(), 997usize.div_ceil(128));
    assert!(first[..first.len() - 1].iter().all(|b| b.len() == 128));
    let mut seen: Vec<i64> = first.concat();
    seen.sort_unstable();
    let expected: Vec<i64> = (0..1000).filter(|id| !excluded.contains(id)).collect();
    assert_eq!(seen, expected, "every kept image once");
    // The first batch draws from more than one row group (ids 256 apart).
    let groups: BTreeSet<i64> = first[0].iter().map(|id| id / 256).collect();
    assert!(groups.len() >= 2, "first batch from groups {groups:?}");
    assert_eq!(
        first,
        epoch(&streamed, 0),
        "same seed and epoch, same batches"
    );
    assert_ne!(first, epoch(&streamed, 1), "another epoch, another order");
    let in_order: Vec<i64> = streamed
        .in_order(100)
        .flat_map(|chunk| chunk.unwrap().image_ids)
        .collect();
    assert_eq!(
        in_order, expected,
        "evaluation reads the kept images in file order"
    );
}

/// Streamed training learns the band task and resumes bit for bit, like in-memory training.
#[test]
fn streamed_training_learns_and_resumes_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let (train_path, val_path) = (dir.path().join("train"), dir.path().join("val"));
    write_artifact(&store(600, 3), &train_path);
    write_artifact(&store(64, 4), &val_path);
    let open = |path: &Path| {
        ImageSet::open(
            path,
            Holding::Streamed {
                shuffle_buffer: 200,
            },
        )
        .unwrap()
    };
    let mean = vec![MEAN; 32 * 32 * 3];
    let steady = steady_config();
    let run = |folder: &Path, until_epoch: usize| {
        train(
            CpuBackend,
            &steady,
            &open(&train_path),
            &open(&val_path),
            &mean,
            folder,
            until_epoch,
            &mut |_| {},
        )
        .unwrap()
    };
    let (whole_dir, resumed_dir) = (dir.path().join("whole"), dir.path().join("resumed"));
    let whole = run(&whole_dir, 3);
    run(&resumed_dir, 1);
    let resumed = run(&resumed_dir, 3);
    for (a, b) in whole.network.params.iter().zip(&resumed.network.params) {
        assert_eq!(a.weight, b.weight, "{} weights", a.name);
    }
    let val = open(&val_path);
    let ten = evaluate_set(&whole.network, &val, &mean, Crops::Ten, 32).unwrap();
    assert!(
        ten.top1_error < 0.25,
        "10-crop error {} (chance is 0.75)",
        ten.top1_error
    );
    assert!(whole.metrics[2].train_loss < whole.metrics[0].train_loss);
    // Streamed evaluation gives what the in-memory evaluation of the same images gives.
    let in_memory = ImageSet::open(&val_path, Holding::Whole).unwrap();
    let reference = evaluate_set(&whole.network, &in_memory, &mean, Crops::Ten, 32).unwrap();
    assert_eq!(ten.top1_error, reference.top1_error);
    assert!((ten.loss - reference.loss).abs() < 1e-9);
}

#[test]
fn the_papers_training_crops_are_the_ten_sub_crops_each_drawn_alike() {
    // §3: "10 different sub-crops of size 224x224 (corners + center with(out) horizontal
    // flips)". Drawn from random bits, every draw is one of the ten, and all ten come up
    // about equally often.
    let ten = imaging::ten_crops(32, 28);
    let mut counts = [0usize; 10];
    let mut rng = engine::rng::rng_for(&[1, 2, 3]);
    for _ in 0..10_000 {
        let crop = TrainingCrops::Ten.draw(32, 28, rand::Rng::random(&mut rng));
        let which = ten.iter().position(|c| *c == crop).expect("one of the ten");
        counts[which] += 1;
    }
    assert!(
        counts.iter().all(|&c| (850..1150).contains(&c)),
        "{counts:?}"
    );
    // Random crops reach positions the ten never use.
    let random: std::collections::BTreeSet<(u32, u32)> = (0..1000u64)
        .map(|i| {
            let c = TrainingCrops::Random.draw(32, 28, i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            (c.top, c.left)
        })
        .collect();
    assert!(random.len() > 5, "{random:?}");
}
