//! The probe's kernel form (issue #16): the Gram matrix of normalised feature rows, each entry
//! a fixed-order f64 dot product (`linear_models::dot_products`, upper triangle), against
//! numpy's `x @ x.T` (BLAS dgemm on every core, the whole square) on the same rows. 1,024 rows
//! of 32,769 values: a layer-1-like width (Caltech-256's is 290,402). "Effective GFLOP/s"
//! counts the upper triangle's 2 x n (n + 1) / 2 x width for both sides. Then both
//! classifiers in the kernel form on that Gram matrix (32 overlapping classes, the probe's defaults: C = 1,
//! 300 softmax steps), timed alone: no peer, the rates to scale the paper's probes by.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use linear_models::synthetic::clusters;
use linear_models::{
    SvmConfig, dot_products, normalised_with_bias, train_softmax_kernel, train_svm_kernel,
};

const ROWS: usize = 1024;
const DIM: usize = 32_768;

pub fn run() -> Result<()> {
    let width = DIM + 1;
    // Overlapping classes (separation ~4, see `clusters`), so that the SVM has work to do.
    let classes = 32;
    let (values, labels) = clusters(classes, ROWS / classes, DIM, 0.054, 3);
    let rows = normalised_with_bias(&values, DIM);
    let mut seconds = f64::INFINITY;
    let mut gram = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        gram = dot_products(&rows, &rows, width, true);
        seconds = seconds.min(started.elapsed().as_secs_f64());
    }
    let flop = 2.0 * (ROWS * (ROWS + 1) / 2) as f64 * width as f64;

    let folder = tempfile::tempdir()?;
    let write = |name: &str, values: &[f64]| -> Result<std::path::PathBuf> {
        let path = folder.path().join(name);
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };
    let rows_path = write("rows.f64", &rows)?;
    let ours_path = write("ours.f64", &gram)?;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/bench_numpy_gram.py"
    );
    let output = Command::new("python3")
        .arg(script)
        .args([ROWS.to_string(), width.to_string()])
        .arg(&rows_path)
        .arg(&ours_path)
        .output()
        .context("running python3 scripts/bench_numpy_gram.py (make bench installs numpy)")?;
    if !output.status.success() {
        bail!(
            "bench_numpy_gram.py failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let peer: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let peer_seconds = peer["seconds"].as_f64().context("numpy's seconds")?;
    println!(
        "gram: {ROWS} rows x {width} f64, upper triangle: ours {:.3} s ({:.1} GFLOP/s), numpy {} \
         x @ x.T {:.3} s ({:.1} GFLOP/s effective): {:.2}x numpy; largest difference {:.1e}",
        seconds,
        flop / seconds / 1e9,
        peer["version"].as_str().unwrap_or("?"),
        peer_seconds,
        flop / peer_seconds / 1e9,
        peer_seconds / seconds,
        peer["max_abs_difference"].as_f64().unwrap_or(f64::NAN),
    );
    // The classifiers on the full square, 32 classes of 32 rows.
    let mut square = gram.clone();
    for i in 0..ROWS {
        for j in 0..i {
            square[i * ROWS + j] = square[j * ROWS + i];
        }
    }
    let started = Instant::now();
    train_svm_kernel(&square, &labels, classes, &SvmConfig::default());
    let svm_seconds = started.elapsed().as_secs_f64();
    let steps = 300;
    let started = Instant::now();
    train_softmax_kernel(&square, &labels, classes, 1e-4, steps, 1.0);
    let softmax_seconds = started.elapsed().as_secs_f64();
    println!(
        "kernel classifiers on it ({classes} classes): SVM {svm_seconds:.2} s; softmax {steps} \
         steps {softmax_seconds:.2} s ({:.2} GFLOP/s of its 2 n^2 K a step)",
        2.0 * (ROWS * ROWS * classes * steps) as f64 / softmax_seconds / 1e9
    );
    Ok(())
}
