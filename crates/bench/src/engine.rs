//! Network speed (issue #4): training and inference steps of `zf_small` (batch 128) and the
//! full `zf` at 224x224 (batch 16), against onnxruntime running the identical network exported
//! to ONNX in the same run (the same weights and input: the outputs are compared first), and
//! against this machine's measured SGEMM rate.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use artifacts::Provenance;
use artifacts::tensors::{NamedTensor, write_tensors};
use engine::cpu::CpuPath;
use engine::scalar::{MatRef, gemm};
use engine::{Architecture, CpuBackend, Mode, Network, Op, UpdateConfig, weights};
use rayon::prelude::*;

use crate::peer::PeerCpu;

/// Multiply-accumulates of one image's forward pass.
fn forward_macs(network: &Network<CpuBackend>) -> f64 {
    network
        .ops
        .iter()
        .map(|op| match op {
            Op::Conv { geometry, .. } => (geometry.out_len() * geometry.patch_len()) as f64,
            Op::Linear { n_in, n_out, .. } => (n_in * n_out) as f64,
            _ => 0.0,
        })
        .sum()
}

/// SGEMM GFLOP/s at 1024^3 with one GEMM per core, by matrixmultiply (with the features we
/// build it with, AVX-512 kernels where the CPU has them, whatever `ZFNET_CPU` says).
fn sgemm_gflops() -> f64 {
    let n = 1024;
    let threads = rayon::current_num_threads();
    let a = vec![0.5f32; n * n];
    let b = vec![0.25f32; n * n];
    let mut outputs = vec![vec![0.0f32; n * n]; threads];
    let run = |outputs: &mut Vec<Vec<f32>>| {
        outputs.par_iter_mut().for_each(|c| {
            gemm(
                1.0,
                MatRef::row_major(&a, n, n),
                MatRef::row_major(&b, n, n),
                0.0,
                c,
            );
        });
    };
    run(&mut outputs);
    let started = Instant::now();
    let reps = 3;
    for _ in 0..reps {
        run(&mut outputs);
    }
    (2.0 * (n * n * n) as f64 * threads as f64 * reps as f64)
        / started.elapsed().as_secs_f64()
        / 1e9
}

/// OpenBLAS's SGEMM through numpy at 1024^3 on all cores, with the kernels of the selected
/// path's vector width (see [`PeerCpu`]): the rate that width can reach, for the "% of SGEMM
/// at this width" column. Returns GFLOP/s and OpenBLAS's kernels.
fn openblas_sgemm(path: CpuPath, peers: &PeerCpu) -> Result<(f64, String)> {
    if path == CpuPath::Portable {
        // OpenBLAS has no kernels of the portable path's width to compare with.
        return Ok((f64::NAN, "none for the portable path".to_owned()));
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/bench_numpy_sgemm.py"
    );
    let output = peers
        .python()
        .arg(script)
        .env(
            "OPENBLAS_NUM_THREADS",
            rayon::current_num_threads().to_string(),
        )
        .output()
        .context("running python3 scripts/bench_numpy_sgemm.py (make bench installs numpy)")?;
    if !output.status.success() {
        bail!(
            "numpy SGEMM failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let value: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    peers.check("numpy (SGEMM)", &value)?;
    Ok((
        value["gflops"].as_f64().unwrap_or(f64::NAN),
        value["kernels"].as_str().unwrap_or("?").to_owned(),
    ))
}

fn best_of<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Alternating rounds of our inference timing and onnxruntime's.
const ROUNDS: usize = 3;

struct Case {
    arch: &'static str,
    batch: usize,
    reps: usize,
}

pub fn run() -> Result<()> {
    let peak = sgemm_gflops();
    let path = engine::cpu::selected();
    let peers = PeerCpu::for_path(path)?;
    let (width_peak, kernels) = openblas_sgemm(path, &peers)?;
    println!(
        "\n## network steps (CPU backend, path {path}) vs onnxruntime; SGEMM 1024^3 on all cores: matrixmultiply {peak:.0} GFLOP/s, OpenBLAS ({kernels} kernels, this path's width) {width_peak:.0} GFLOP/s; the peers see {}",
        peers.describe()
    );
    println!(
        "| network | batch | our inference ms | onnxruntime ms | ours/ORT speed | max logit diff | our train step ms | train GFLOP/s | % of SGEMM | % of SGEMM at this width |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let dir = std::env::temp_dir().join("zfnet-bench-engine");
    std::fs::create_dir_all(&dir)?;
    for case in [
        Case {
            arch: "zf_small",
            batch: 128,
            reps: 5,
        },
        Case {
            arch: "zf",
            batch: 16,
            reps: 5,
        },
    ] {
        let architecture = Architecture::from_name(case.arch, 10)?;
        let mut network = Network::new(CpuBackend, architecture.clone(), 0.01, 1);
        let input_len = network.input_len() * case.batch;
        let mut state = 7u64;
        let input: Vec<f32> = (0..input_len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) % 256) as f32 - 128.0
            })
            .collect();
        let labels: Vec<usize> = (0..case.batch).map(|i| i % 10).collect();
        let mut logits = Vec::new();
        let mut inference = best_of(case.reps, || {
            let acts = network.forward(input.clone(), Mode::Eval);
            logits = acts.logits().clone();
        });
        let update = UpdateConfig {
            learning_rate: 0.0,
            momentum: 0.9,
            weight_decay: 0.0,
            filter_rms_radius: 0.1,
        };
        let train_step = best_of(case.reps, || {
            let acts = network.forward(input.clone(), Mode::Train { dropout_stream: 1 });
            network.backward(&acts, &labels);
            network.update(&update);
        });
        // Forward + backward ≈ 3x the forward multiply-adds (input and weight gradients).
        let train_gflops =
            3.0 * 2.0 * forward_macs(&network) * case.batch as f64 / train_step / 1e9;

        let case_dir = dir.join(case.arch);
        std::fs::create_dir_all(&case_dir)?;
        let info = weights::ModelInfo {
            architecture,
            image_size: network.architecture.input_size,
            class_names: Vec::new(),
            mean: vec![0.0; network.input_len()],
        };
        weights::save_model(
            &case_dir.join("model.safetensors"),
            &network,
            &info,
            &Provenance::ad_hoc("bench"),
        )?;
        let shape = vec![
            case.batch,
            3,
            network.architecture.input_size,
            network.architecture.input_size,
        ];
        let tensors = [
            NamedTensor::new("input", shape, input.clone()),
            NamedTensor::new("logits", vec![case.batch, 10], logits.clone()),
        ];
        write_tensors(
            &case_dir.join("io.safetensors"),
            &Provenance::ad_hoc("bench"),
            &tensors,
            &BTreeMap::new(),
        )?;
        // The machine is shared: a disturbance during one side's timing would skew the
        // ratio, so the two sides alternate over ROUNDS rounds and each keeps its best.
        let ort = onnxruntime(&peers, &case_dir, case.reps)?;
        let mut ort_ms = ort["inference_ms"].as_f64().unwrap_or(f64::NAN);
        for _ in 1..ROUNDS {
            inference = inference.min(best_of(case.reps, || {
                network.forward(input.clone(), Mode::Eval);
            }));
            let again = onnxruntime(&peers, &case_dir, case.reps)?;
            ort_ms = ort_ms.min(again["inference_ms"].as_f64().unwrap_or(f64::NAN));
        }
        let of_width = if width_peak.is_nan() {
            "n/a".to_owned()
        } else {
            format!("{:.0}%", 100.0 * train_gflops / width_peak)
        };
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.2} | {:.2e} | {:.1} | {:.0} | {:.0}% | {of_width} |",
            case.arch,
            case.batch,
            inference * 1e3,
            ort_ms,
            ort_ms / (inference * 1e3),
            ort["max_abs_diff"].as_f64().unwrap_or(f64::NAN),
            train_step * 1e3,
            train_gflops,
            100.0 * train_gflops / peak,
        );
    }
    println!(
        "(onnxruntime: {} threads, the same weights and input; logits compared before timing; inference: best of {ROUNDS} alternating rounds of each side)",
        rayon::current_num_threads()
    );
    Ok(())
}

fn onnxruntime(peers: &PeerCpu, dir: &Path, reps: usize) -> Result<serde_json::Value> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/bench_onnxruntime.py"
    );
    let output = peers
        .python()
        .arg(script)
        .arg(dir)
        .arg(reps.to_string())
        .arg(rayon::current_num_threads().to_string())
        .output()
        .context(
            "running python3 scripts/bench_onnxruntime.py (make bench installs onnxruntime)",
        )?;
    if !output.status.success() {
        bail!(
            "onnxruntime bench failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    peers.check("onnxruntime", &report)?;
    Ok(report)
}
