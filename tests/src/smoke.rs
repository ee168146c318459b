//! The smoke pipeline: every stage kind of the default pipeline on a few hundred generated
//! images (`tests/smoke_pipeline.rs` runs it locally, `tests/slurm.rs` through Slurm).

use crate::{Project, write_fashion_sized};

pub const PIPELINE: &str = r#"name: smoke
stages:
  - name: source_train_files
    kind: fashion_mnist
    inputs: { dir: fashion }
    params: { split: train, classes: [0, 1, 2, 3, 5, 7] }
  - name: source_test_files
    kind: fashion_mnist
    inputs: { dir: fashion }
    params: { split: test, classes: [0, 1, 2, 3, 5, 7] }
  - name: source_train
    kind: preprocess
    inputs: { images: source_train_files.images }
    params: { size: 32 }
  - name: source_test
    kind: preprocess
    inputs: { images: source_test_files.images }
    params: { size: 32 }
  - name: source_mean
    kind: mean_image
    inputs: { images: source_train.images }
  - name: dedup
    kind: dedup
    inputs: { query: target.images, reference: source_train.images }
    params: { size: 32, threshold: 0.99 }
  - name: train
    kind: train
    inputs: { train: source_train.images, val: source_test.images, mean: source_mean.mean, exclude: dedup.removal }
    params: { arch: zf_small, epochs: 1, batch_size: 32, init_std: 0.03, checkpoint_epochs: [1] }
  - name: deconv
    kind: deconv_top9
    inputs: { model: train.model, images: source_test.images }
    params: { maps_per_layer: 2, tile: 16 }
  - name: target_files
    kind: fashion_mnist
    inputs: { dir: fashion }
    params: { split: test, classes: [4, 6, 8, 9] }
  - name: target
    kind: preprocess
    inputs: { images: target_files.images }
    params: { size: 32 }
  - name: target_split
    kind: sample_per_class
    inputs: { images: target.images }
    matrix: { fold: [0, 1] }
    params: { n_train_per_class: 2, max_test_per_class: 3 }
  - name: evolution
    kind: feature_evolution
    inputs: { model: train.model, checkpoints: train.checkpoints, images: source_train.images }
    params: { maps_per_layer: 1, max_images: 50, tile: 16 }
  - name: invariance
    kind: invariance
    inputs: { model: train.model, images: source_test.images }
    params: { n_images: 2, translations: [0, 2], scales: [1, 1.2], rotations: [0, 90] }
  - name: correspondence
    kind: correspondence
    inputs: { model: train.model, images: source_test.images, parts: parts.csv }
    params: { random_draws: 2 }
  - name: occlusion
    kind: occlusion
    inputs: { model: train.model, images: source_test.images }
    params: { n_images: 3, occluder: 10, stride: 6 }
  - name: target_features
    kind: extract
    inputs: { model: train.model, images: target.images }
  - name: probe
    kind: probe
    inputs: { features: target_features.features }
    params: { n_train_per_class: 3, max_test_per_class: 4, folds: 2, softmax_steps: 20 }
  - name: ablation
    kind: train
    inputs: { train: source_train.images, val: source_test.images, mean: source_mean.mean }
    matrix: { arch: [zf_small, zf_small_no_fc67, zf_small_no_conv34_fc67, krizhevsky_small] }
    params: { epochs: 1, batch_size: 32, init_std: 0.03, checkpoint_epochs: [] }
  - name: no_renorm
    kind: train
    inputs: { train: source_train.images, val: source_test.images, mean: source_mean.mean }
    params: { arch: zf_small, epochs: 1, batch_size: 32, init_std: 0.03, filter_rms_radius: 0, checkpoint_epochs: [] }
  - name: filters
    kind: conv1_filters
    inputs: { zf: ablation@arch=zf_small.model, krizhevsky: ablation@arch=krizhevsky_small.model, unrenormalised: no_renorm.model, images: source_test.images }
    params: { layer2_maps: 2, tile: 16 }
  - name: transfer
    kind: transfer
    inputs: { model: train.model, features: target_features.features, images: target.images }
    params: { n_per_class: [1, 3], max_test_per_class: 4, folds: 2, softmax_steps: 20, scratch_steps: 4, scratch_init_std: 0.03 }
  - name: report
    kind: report
    inputs:
      training: [train.metrics]
      evaluation: [train.evaluation]
      deconv_figures: [deconv.figures]
      filters: [deconv.filters]
      occlusion_checks: [occlusion.checks]
      occlusion_figures: [occlusion.figures]
      evolution_figures: [evolution.figures]
      invariance_curves: [invariance.curves]
      invariance_figures: [invariance.figures]
      correspondence: [correspondence.table1]
      correspondence_figures: [correspondence.figures]
      probe: [probe.table7]
      dedup: [dedup.matches]
      ablation_metrics: [ablation.metrics]
      ablation_evaluation: [ablation.evaluation]
      ablation_models: [ablation.model]
      filter_comparison: [filters.table]
      filter_figures: [filters.figures]
      transfer: [transfer.table]
      transfer_figures: [transfer.figures]
    params: { title: smoke }
"#;

/// The smoke pipeline's inputs in `project`: a 300 + 100 image Fashion-MNIST and the part
/// boxes of three sneakers.
pub fn write_smoke_inputs(project: &Project) {
    write_fashion_sized(&project.path("fashion"), 300, 100);
    // Test images 7, 17 and 27 are sneakers (label 7) in the generated set.
    project.write(
        "parts.csv",
        "image_id,part,top,left,height,width\n7,toe,13,1,9,9\n7,heel,9,23,11,8\n\
         17,toe,13,1,9,9\n17,heel,9,23,11,8\n27,toe,13,1,9,9\n27,heel,9,23,11,8\n",
    );
}

/// Replaces what differs between runs of the same pipeline with placeholders: the seconds
/// columns of the training and provenance tables (their last or third cell), the build and
/// machine line, and the cache keys and params hashes of the provenance tables (they move
/// with every implementation change, which the kind versions beside them already show).
pub fn without_timings(readme: &str) -> String {
    let mut in_training_table = false;
    let mut in_runs_table = false;
    let mut in_artifacts_table = false;
    let mut out = String::new();
    for line in readme.lines() {
        if line.starts_with("| epoch | train loss") {
            in_training_table = true;
        } else if line.starts_with("| stage | kind | seconds |") {
            in_runs_table = true;
        } else if line.starts_with("| input | stage | kind | params hash |") {
            in_artifacts_table = true;
        } else if !line.starts_with('|') {
            in_training_table = false;
            in_runs_table = false;
            in_artifacts_table = false;
        }
        if line.starts_with("Generated by `zfnet") {
            out.push_str("Generated by (build) on (machine).\n");
            continue;
        }
        if in_runs_table && !line.starts_with("| stage") && !line.starts_with("|---") {
            let mut cells: Vec<&str> = line.split('|').collect();
            if cells.len() > 3 {
                cells[3] = " s ";
            }
            out.push_str(&without_hashes(&cells.join("|")));
            out.push('\n');
            continue;
        }
        if in_artifacts_table {
            out.push_str(&without_hashes(line));
            out.push('\n');
            continue;
        }
        if in_training_table && !line.starts_with("| epoch") && !line.starts_with("|---") {
            let cells: Vec<&str> = line.trim_end_matches('|').split('|').collect();
            let kept = &cells[..cells.len() - 1];
            out.push_str(&format!("{}| s |\n", kept.join("|")));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn without_hashes(line: &str) -> String {
    line.split('`')
        .enumerate()
        .map(|(i, part)| {
            let is_hash =
                i % 2 == 1 && part.len() == 12 && part.chars().all(|c| c.is_ascii_hexdigit());
            if is_hash { "hash" } else { part }
        })
        .collect::<Vec<_>>()
        .join("`")
}
