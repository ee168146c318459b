//! Dedup correlation throughput (issue #8: >= 1.0x numpy doing the same blocked computation).
//! Both sides: 4,000 query and 36,000 reference unit vectors of 1,024 values (Fashion-MNIST's
//! target and source sets at 32x32), 7 of the queries near-copies of references,
//! correlations by blocks of 4,096 references, keeping the pairs at or above 0.99; every
//! implementation must find the same pairs. "Effective GFLOP/s" counts the full product
//! (2 x 4,000 x 36,000 x 1,024) whatever the method.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use dedup::screen;
use linear_models::synthetic::unit_rows;

use crate::peer::PeerCpu;

const QUERIES: usize = 4000;
const REFERENCES: usize = 36000;
const DIM: usize = 1024;
const BLOCK: usize = 4096;
const THRESHOLD: f32 = 0.99;

/// The computation of `dedup::find_overlaps`: references by blocks, each block screened
/// against all queries (bf16 where the CPU has AVX-512 BF16, else an f32 GEMM) and the
/// candidates recomputed exactly. Returns the pairs found.
fn ours(queries: &[f32], references: &[f32], use_bf16: bool) -> usize {
    let screen = screen::CpuScreen::new(queries, DIM, use_bf16);
    references
        .chunks(BLOCK * DIM)
        .map(|block| screen::pairs_at_least(&screen, queries, block, DIM, THRESHOLD).len())
        .sum()
}

pub fn run() -> Result<()> {
    let mut queries = unit_rows(QUERIES, DIM, 1);
    let references = unit_rows(REFERENCES, DIM, 2);
    // Plant near-copies of 7 references among the queries, so that there is something to find.
    for (q, r) in [
        (0, 5),
        (100, 4095),
        (999, 4096),
        (2000, 17_000),
        (2500, 35_999),
        (3333, 123),
        (3999, 20_000),
    ] {
        for d in 0..DIM {
            queries[q * DIM + d] = references[r * DIM + d] * 0.999 + queries[q * DIM + d] * 0.04;
        }
        let norm = queries[q * DIM..(q + 1) * DIM]
            .iter()
            .map(|v| v * v)
            .sum::<f32>()
            .sqrt();
        queries[q * DIM..(q + 1) * DIM]
            .iter_mut()
            .for_each(|v| *v /= norm);
    }
    // As the stage chooses: bf16 where the CPU has it and it is faster here (timed).
    let has_bf16 = screen::bf16_available();
    let use_bf16 = has_bf16 && screen::bf16_is_faster(&queries, DIM, THRESHOLD);
    let time = |use_bf16: bool| {
        ours(&queries[..256 * DIM], &references[..BLOCK * DIM], use_bf16);
        let mut found = 0;
        let seconds = (0..3)
            .map(|_| {
                let started = Instant::now();
                found = ours(&queries, &references, use_bf16);
                started.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        (seconds, found)
    };
    let (seconds, found) = time(use_bf16);
    let (f32_seconds, f32_found) = time(false);
    let write = |values: &[f32]| -> Result<tempfile::NamedTempFile> {
        let file = tempfile::NamedTempFile::new()?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(file.path(), bytes)?;
        Ok(file)
    };
    let (queries_file, references_file) = (write(&queries)?, write(&references)?);
    let flops = 2.0 * QUERIES as f64 * REFERENCES as f64 * DIM as f64;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/bench_numpy_dedup.py"
    );
    // The peer on the same vector width (AVX-512 hidden from it when our AVX2 path is forced
    // on an AVX-512 machine, see PeerCpu).
    let path = engine::cpu::selected();
    let peers = PeerCpu::for_path(path)?;
    let mut numpy_command = peers.python();
    numpy_command.env(
        "OPENBLAS_NUM_THREADS",
        rayon::current_num_threads().to_string(),
    );
    let output = numpy_command
        .args([
            script,
            &QUERIES.to_string(),
            &REFERENCES.to_string(),
            &DIM.to_string(),
            &BLOCK.to_string(),
            &queries_file.path().display().to_string(),
            &references_file.path().display().to_string(),
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
    peers.check("numpy (dedup)", &numpy)?;
    let numpy_seconds = numpy["seconds"].as_f64().unwrap_or(f64::NAN);
    let numpy_found = numpy["found"].as_u64().unwrap_or(u64::MAX) as usize;
    if numpy_found != found || f32_found != found {
        bail!(
            "the implementations disagree: pairs found by zfnet bf16 {found}, zfnet f32 {f32_found}, numpy {numpy_found}"
        );
    }
    println!(
        "\n## dedup: {QUERIES} x {REFERENCES} normalised correlations of {DIM} values, blocks of {BLOCK}"
    );
    println!(
        "{found} pairs >= {THRESHOLD} found by every implementation (7 planted); CPU path {path}; numpy sees {}",
        peers.describe()
    );
    println!("| implementation | seconds | effective GFLOP/s | its time / ours |");
    println!("|---|---|---|---|");
    println!(
        "| zfnet{} | {seconds:.2} | {:.0} | 1.00 |",
        match (has_bf16, use_bf16) {
            (_, true) => " (bf16 screen, AVX-512 BF16, exact f64 re-check)",
            (true, false) => " (f32 GEMM screen: timed faster than bf16 on this CPU)",
            (false, _) => " (f32 GEMM screen: no AVX-512 BF16 on this path)",
        },
        flops / seconds / 1e9
    );
    println!(
        "| zfnet, f32 GEMM screen (panel microkernel, {path}) | {f32_seconds:.2} | {:.0} | {:.2} |",
        flops / f32_seconds / 1e9,
        f32_seconds / seconds
    );
    println!(
        "| numpy {} ({}, {} kernels) f32 `queries @ block.T` | {numpy_seconds:.2} | {:.0} | {:.2} |",
        numpy["version"].as_str().unwrap_or("?"),
        numpy["blas"].as_str().unwrap_or("?"),
        numpy["kernels"].as_str().unwrap_or("?"),
        flops / numpy_seconds / 1e9,
        numpy_seconds / seconds
    );
    Ok(())
}
