//! Linear-SVM training time (issue #8: <= scikit-learn LinearSVC's on the same features).
//! Both sides solve the same problem — hinge loss, C = 1, liblinear's stopping rule at the
//! same tolerance, no intercept (the bias is a feature column) — on Caltech-101-sized
//! features: 101 classes x 30 training images, 9,216 values (the ZF net's layer 5, 6x6x256),
//! one-vs-rest. Ours spreads the classes over the cores with rayon; scikit-learn runs once
//! as LinearSVC (liblinear: one thread) and once under OneVsRestClassifier(n_jobs = cores).

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use linear_models::synthetic::clusters;
use linear_models::{SvmConfig, mean_class_accuracy, normalised_with_bias, predict, train_svm};

const CLASSES: usize = 101;
const TRAIN_PER_CLASS: usize = 30;
const TEST_PER_CLASS: usize = 20;
const DIM: usize = 9216;
/// Class separation (see `clusters`): both solvers reach ~80% test accuracy, not 100%.
const SPREAD: f64 = 0.3;

fn write<T: Copy>(path: &std::path::Path, values: &[T], bytes: fn(T) -> [u8; 8]) -> Result<()> {
    let data: Vec<u8> = values.iter().flat_map(|&v| bytes(v)).collect();
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

pub fn run() -> Result<()> {
    let (train_values, train_labels) = clusters(CLASSES, TRAIN_PER_CLASS, DIM, SPREAD, 1);
    let (test_values, test_labels) = clusters(CLASSES, TEST_PER_CLASS, DIM, SPREAD, 2);
    let x_train = normalised_with_bias(&train_values, DIM);
    let x_test = normalised_with_bias(&test_values, DIM);
    let config = SvmConfig::default();
    let mut seconds = f64::INFINITY;
    let mut accuracy = 0.0;
    for _ in 0..3 {
        let started = Instant::now();
        let weights = train_svm(&x_train, &train_labels, CLASSES, &config);
        seconds = seconds.min(started.elapsed().as_secs_f64());
        accuracy = mean_class_accuracy(&predict(&weights, &x_test), &test_labels, CLASSES);
    }

    let folder = tempfile::tempdir()?;
    write(
        &folder.path().join("x_train.f64"),
        &x_train,
        f64::to_le_bytes,
    )?;
    write(&folder.path().join("x_test.f64"), &x_test, f64::to_le_bytes)?;
    let as_i64 = |labels: &[usize]| labels.iter().map(|&l| l as i64).collect::<Vec<_>>();
    write(
        &folder.path().join("y_train.i64"),
        &as_i64(&train_labels),
        i64::to_le_bytes,
    )?;
    write(
        &folder.path().join("y_test.i64"),
        &as_i64(&test_labels),
        i64::to_le_bytes,
    )?;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/sklearn_linear_svc.py"
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut peers = Vec::new();
    for jobs in [1, cores] {
        let mut best: Option<serde_json::Value> = None;
        for _ in 0..3 {
            let output = Command::new("python3")
                .arg(script)
                .arg(folder.path())
                .args([
                    (DIM + 1).to_string(),
                    config.c.to_string(),
                    config.tolerance.to_string(),
                    jobs.to_string(),
                ])
                .output()
                .context("running python3 scripts/sklearn_linear_svc.py (make bench installs scikit-learn)")?;
            if !output.status.success() {
                bail!(
                    "scikit-learn bench failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            let reply: serde_json::Value = serde_json::from_slice(&output.stdout)?;
            let faster = best.as_ref().is_none_or(|b| {
                reply["seconds"].as_f64().unwrap_or(f64::INFINITY)
                    < b["seconds"].as_f64().unwrap_or(f64::INFINITY)
            });
            if faster {
                best = Some(reply);
            }
        }
        peers.push((jobs, best.expect("three runs")));
    }
    println!(
        "\n## svm: one-vs-rest linear SVM, {CLASSES} classes x {TRAIN_PER_CLASS} images, {DIM} features (best of 3)"
    );
    println!("| implementation | seconds | test accuracy | its time / ours |");
    println!("|---|---|---|---|");
    println!(
        "| zfnet dual coordinate descent ({cores} cores, rayon over classes) | {seconds:.2} | {:.1}% | 1.00 |",
        100.0 * accuracy
    );
    for (jobs, reply) in &peers {
        let peer_seconds = reply["seconds"].as_f64().unwrap_or(f64::NAN);
        println!(
            "| scikit-learn {} LinearSVC{} | {peer_seconds:.2} | {:.1}% | {:.2} |",
            reply["version"].as_str().unwrap_or("?"),
            if *jobs > 1 {
                format!(" in OneVsRestClassifier(n_jobs={jobs})")
            } else {
                " (liblinear, 1 thread)".to_owned()
            },
            100.0 * reply["accuracy"].as_f64().unwrap_or(f64::NAN),
            peer_seconds / seconds
        );
    }
    Ok(())
}
