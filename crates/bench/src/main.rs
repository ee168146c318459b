//! `zfnet-bench`: our code and its named peer on the same inputs in the same run, reported as
//! ratios (the numbers in BENCHMARKS.md come from here). Run through `make bench`.
//!
//! Benchmarks: `preprocess` (decode + shortest side to 256 + centre crop of ImageNet-like
//! 500x375 JPEGs) against Pillow, in one process and in a pool of one process per core;
//! `engine` (training and inference steps) against onnxruntime and the machine's SGEMM rate;
//! `dedup` (blocked normalised correlations) against numpy; `svm` (one-vs-rest linear SVM)
//! against scikit-learn's LinearSVC; `gram` (the probe's kernel form: Gram matrix of f64 rows)
//! against numpy's `x @ x.T`; `top9` (the deconvnet's scan).

mod dedup;
mod engine;
mod gram;
mod peer;
mod preprocess;
mod svm;
mod top9;

use anyhow::Result;

fn main() -> Result<()> {
    ::engine::allocator::keep_freed_memory_for_reuse();
    let which: Vec<String> = std::env::args().skip(1).collect();
    let wants = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    println!(
        "zfnet-bench on {} cores ({})",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        std::env::consts::ARCH
    );
    if wants("preprocess") {
        preprocess::run()?;
    }
    if wants("engine") {
        engine::run()?;
    }
    if wants("dedup") {
        dedup::run()?;
    }
    if wants("svm") {
        svm::run()?;
    }
    if wants("gram") {
        gram::run()?;
    }
    if wants("top9") {
        let after = which.iter().position(|w| w == "top9").map_or(0, |i| i + 1);
        top9::run(&top9::Top9Options::parse(&which[after..])?)?;
    }
    Ok(())
}
