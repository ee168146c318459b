//! Dedup correlation throughput (issue #8: >= 1.0x numpy doing the same blocked computation).
//! Both sides: 4,000 query and 36,000 reference unit vectors of 1,024 values (Fashion-MNIST's
//! target and source sets at 32x32), correlations by blocks of 4,096 references, keeping the
//! pairs above 0.99.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use engine::scalar::{MatRef, gemm};
use rayon::prelude::*;

const QUERIES: usize = 4000;
const REFERENCES: usize = 36000;
const DIM: usize = 1024;
const BLOCK: usize = 4096;

fn unit_vectors(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed | 1;
    let mut values: Vec<f32> = (0..n * DIM)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 10_000) as f32 / 10_000.0 - 0.5
        })
        .collect();
    for row in values.chunks_mut(DIM) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    }
    values
}

/// The computation of `dedup::find_overlaps`: query chunks of 256 rows in parallel, one GEMM
/// per chunk and reference block.
fn ours(queries: &[f32], references: &[f32]) -> usize {
    let mut found = 0;
    for block in references.chunks(BLOCK * DIM) {
        let n = block.len() / DIM;
        found += queries
            .par_chunks(256 * DIM)
            .map(|q| {
                let rows = q.len() / DIM;
                let mut scores = vec![0.0f32; rows * n];
                gemm(
                    1.0,
                    MatRef::row_major(q, rows, DIM),
                    MatRef::row_major(block, n, DIM).t(),
                    0.0,
                    &mut scores,
                );
                scores.iter().filter(|&&s| s >= 0.99).count()
            })
            .sum::<usize>();
    }
    found
}

pub fn run() -> Result<()> {
    let queries = unit_vectors(QUERIES, 1);
    let references = unit_vectors(REFERENCES, 2);
    ours(&queries[..256 * DIM], &references[..BLOCK * DIM]);
    let seconds = (0..3)
        .map(|_| {
            let started = Instant::now();
            ours(&queries, &references);
            started.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    let flops = 2.0 * QUERIES as f64 * REFERENCES as f64 * DIM as f64;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/bench_numpy_dedup.py"
    );
    let output = Command::new("python3")
        .args([
            script,
            &QUERIES.to_string(),
            &REFERENCES.to_string(),
            &DIM.to_string(),
            &BLOCK.to_string(),
        ])
        .output()
        .context("running python3 scripts/bench_numpy_dedup.py (make bench installs numpy)")?;
    if !output.status.success() {
        bail!(
            "numpy bench failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let numpy: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let numpy_seconds = numpy["seconds"].as_f64().unwrap_or(f64::NAN);
    println!(
        "\n## dedup: {QUERIES} x {REFERENCES} normalised correlations of {DIM} values, blocks of {BLOCK}"
    );
    println!("| implementation | seconds | GFLOP/s | ours / it |");
    println!("|---|---|---|---|");
    println!(
        "| zfnet (matrixmultiply GEMM per query chunk, rayon) | {seconds:.2} | {:.0} | 1.00 |",
        flops / seconds / 1e9
    );
    println!(
        "| numpy {} ({}) | {numpy_seconds:.2} | {:.0} | {:.2} |",
        numpy["version"].as_str().unwrap_or("?"),
        numpy["blas"].as_str().unwrap_or("?"),
        flops / numpy_seconds / 1e9,
        numpy_seconds / seconds
    );
    Ok(())
}
