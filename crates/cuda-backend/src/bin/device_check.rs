//! `zfnet-device-check`: the GPU check of issue #5, one run on the GPU machine
//! (scripts/device-check.sh builds it here and runs it there).
//!
//! 1. Parity: the full ZF net (Fig. 3) on fresh random inputs, GPU vs a float64 reference
//!    from identical weights (`cuda_backend::parity`) — every op's activations, the pooling
//!    switches, dropout's choices, every gradient, each parameter's change over two SGD steps, filter
//!    renormalisation, and a
//!    deconvnet projection on the GPU's switches — by norm-wise relative error against stated
//!    tolerances per precision, with the GPU's outputs poisoned (NaN) before they are written.
//! 2. Speed: the training step (forward, backward, SGD update) and inference at batch 128,
//!    224x224, per precision, in ms/step and images/s (device synchronised before the clock
//!    stops). The PyTorch numbers come from scripts/torch_zf.py in the same run.
//! 3. Learning: the full ZF net trained for a few hundred steps on Fashion-MNIST upsampled to
//!    224x224 (8x nearest), printing the loss as it falls and the test accuracy after.
//!
//! Usage: zfnet-device-check [parity|speed|train|all] [--fashion DIR] [--steps N] [--seed S]
//! The parity inputs are fresh each run (a seed from the clock, printed) unless `--seed` replays
//! one.
//! DIR holds the uncompressed IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte,
//! t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte).

use std::path::{Path, PathBuf};
use std::time::Instant;

use cuda_backend::parity::{self, Parity, Tolerance};
use cuda_backend::{CudaBackend, Precision};
use engine::{Architecture, Backend, Mode, Network, UpdateConfig};

const PARITY_BATCH: usize = 8;
const SPEED_BATCH: usize = 128;

/// The full ZF net on the GPU against the float64 reference (`cuda_backend::parity`: every
/// op, the switches, dropout's choices, every gradient, two SGD steps, renormalisation, a deconvnet
/// projection), then what only a GPU has: cuDNN's fused conv-bias-ReLU against separate
/// steps, and crops cut on the device. Every output the GPU allocates is filled with NaN
/// first, so an element a kernel leaves unwritten fails its row.
fn parity(precision: Precision, seed: u64) -> usize {
    let tolerance = Tolerance::of(precision);
    println!(
        "\n## parity, {precision:?}: full ZF net, batch {PARITY_BATCH}, GPU vs float64 reference, inputs from seed {seed}\n"
    );
    println!("{}", parity::TABLE_HEADER);
    let gpu_backend = CudaBackend::new(0, precision).expect("the GPU backend starts");
    gpu_backend.poison_outputs(true);
    let architecture = Architecture::from_name("zf", 10).expect("zf");
    let mut gpu = Network::new(gpu_backend, architecture, 0.01, seed);
    let mut table = Parity::new(|row| println!("{}", row.markdown()));
    parity::check(&mut gpu, tolerance, PARITY_BATCH, seed, &mut table);

    // The same forward with convolution, bias and ReLU as separate steps.
    let input = parity::uniform_input(PARITY_BATCH * gpu.input_len(), seed ^ 0x5eed);
    let fused = gpu.backend.cudnn_fusion();
    let fused_acts = gpu.forward(gpu.backend.upload(&input), Mode::Eval);
    gpu.backend.set_cudnn_fusion(false);
    let unfused_acts = gpu.forward(gpu.backend.upload(&input), Mode::Eval);
    gpu.backend.set_cudnn_fusion(fused);
    let worst = fused_acts
        .outputs
        .iter()
        .zip(&unfused_acts.outputs)
        .map(|(fused, separate)| {
            let separate: Vec<f64> = gpu
                .backend
                .download(separate)
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            parity::relative_error(&separate, &gpu.backend.download(fused))
        })
        .fold(0.0f64, f64::max);
    table.push(
        format!(
            "cuDNN fused conv-bias-ReLU ({}) vs separate steps, worst op",
            if fused {
                "in use"
            } else {
                "refused by cuDNN, off"
            }
        ),
        worst,
        tolerance.values,
    );
    table.push(
        "input crops cut on the device, max abs difference",
        crop_difference(&gpu.backend, seed),
        0.0,
    );
    let failures = table.failures();
    println!(
        "\nparity {precision:?}: {}",
        if failures == 0 {
            "PASS".to_owned()
        } else {
            format!("{failures} FAILED")
        }
    );
    failures
}

/// `crop_batch` on the GPU vs the host: 256x256 images, 224 crops, flipped and not; three
/// batches queued back to back before any is read (the upload's stream and events must keep
/// each batch's bytes apart).
fn crop_difference(gpu: &CudaBackend, seed: u64) -> f64 {
    let (n, size, crop_size) = (6, 256, 224);
    let mean: Vec<f32> = parity::uniform_input(size * size * 3, seed ^ 22)
        .iter()
        .map(|v| v * 128.0 + 128.0)
        .collect();
    let batches: Vec<(Vec<u8>, Vec<imaging::crops::Crop>)> = (0..3u64)
        .map(|b| {
            let bytes: Vec<u8> = parity::uniform_input(n * size * size * 3, (seed ^ 21) + b)
                .iter()
                .map(|v| ((v + 1.0) * 127.5) as u8)
                .collect();
            let crops = (0..n)
                .map(|i| imaging::crops::Crop {
                    top: (i * 5 + b as usize) as u32,
                    left: (32 - i * 3) as u32,
                    flip: (i + b as usize) % 2 == 1,
                })
                .collect();
            (bytes, crops)
        })
        .collect();
    let on_device: Vec<_> = batches
        .iter()
        .map(|(bytes, crops)| {
            let images: Vec<&[u8]> = bytes.chunks(size * size * 3).collect();
            gpu.crop_batch(&images, size, crops, crop_size, &mean)
        })
        .collect();
    let mut worst = 0.0f64;
    for ((bytes, crops), device) in batches.iter().zip(&on_device) {
        let images: Vec<&[u8]> = bytes.chunks(size * size * 3).collect();
        let host = engine::backend::crop_batch_on_host(&images, size, crops, crop_size, &mean);
        let device = gpu.download(device);
        worst = host
            .iter()
            .zip(&device)
            .fold(worst, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
    }
    worst
}

/// One training step queued on the GPU, its loss not read: like the PyTorch step (no
/// `loss.item()`), nothing waits per step.
fn queued_step(
    network: &mut Network<CudaBackend>,
    input: cudarc::driver::CudaSlice<f32>,
    labels: &[usize],
    update: &UpdateConfig,
    i: usize,
) {
    let acts = network.forward(
        input,
        Mode::Train {
            dropout_stream: i as u64,
        },
    );
    drop(network.backward_queued(&acts, labels));
    network.update(update);
}

/// Milliseconds per call of `call(i)` over `steps` calls, after `warm_up` untimed ones; the
/// device is synchronised before the clock starts and before it stops.
fn ms_per_call(
    backend: &CudaBackend,
    warm_up: usize,
    steps: usize,
    mut call: impl FnMut(usize),
) -> f64 {
    (0..warm_up).for_each(&mut call);
    backend.synchronize();
    let started = Instant::now();
    (0..steps).for_each(&mut call);
    backend.synchronize();
    started.elapsed().as_secs_f64() * 1000.0 / steps as f64
}

fn speed(precision: Precision, steps: usize) {
    let backend = CudaBackend::new(0, precision).expect("the GPU backend starts");
    let free_before = free_memory();
    let architecture = Architecture::from_name("zf", 1000).expect("zf");
    let mut network = Network::new(backend.clone(), architecture, 0.01, 1);
    let input = parity::uniform_input(SPEED_BATCH * network.input_len(), 3);
    let labels: Vec<usize> = (0..SPEED_BATCH).map(|i| i % 1000).collect();
    let update = UpdateConfig {
        learning_rate: 0.01,
        momentum: 0.9,
        weight_decay: 5e-4,
        filter_rms_radius: 0.1,
    };
    let device_input = backend.upload(&input);
    let train_ms = ms_per_call(&backend, 3, steps, |i| {
        queued_step(
            &mut network,
            backend.copy(&device_input),
            &labels,
            &update,
            i,
        );
    });
    let used = free_before.saturating_sub(free_memory());
    // The same step fed as the trainer feeds it: 256x256 u8 images gathered into page-locked
    // memory, uploaded as bytes and cropped (224, random flips) on the device.
    let pixels: Vec<u8> = parity::uniform_input(SPEED_BATCH * 256 * 256 * 3, 4)
        .iter()
        .map(|v| ((v + 1.0) * 127.5) as u8)
        .collect();
    let images: Vec<&[u8]> = pixels.chunks(256 * 256 * 3).collect();
    let mean = vec![120.0f32; 256 * 256 * 3];
    let fed_ms = ms_per_call(&backend, 1, steps, |i| {
        let crops: Vec<imaging::crops::Crop> = (0..SPEED_BATCH)
            .map(|j| imaging::crops::Crop {
                top: ((i + j) % 33) as u32,
                left: ((i * 7 + j) % 33) as u32,
                flip: (i + j).is_multiple_of(2),
            })
            .collect();
        let input = backend.crop_batch(&images, 256, &crops, 224, &mean);
        queued_step(&mut network, input, &labels, &update, i);
    });
    let infer_ms = ms_per_call(&backend, 3, steps, |_| {
        drop(network.forward(backend.copy(&device_input), Mode::Eval));
    });
    println!(
        "| zfnet {precision:?} | {train_ms:.2} | {:.0} | {fed_ms:.2} | {infer_ms:.2} | {:.0} | {:.1} |",
        SPEED_BATCH as f64 * 1000.0 / train_ms,
        SPEED_BATCH as f64 * 1000.0 / infer_ms,
        used as f64 / 1e9
    );
}

fn free_memory() -> usize {
    cudarc::driver::result::mem_get_info()
        .map(|(free, _)| free)
        .unwrap_or(0)
}

/// Fashion-MNIST from uncompressed IDX files: (images as u8 28x28, labels).
fn read_fashion(dir: &Path, prefix: &str) -> (Vec<u8>, Vec<usize>) {
    let read = |name: &str| -> Vec<u8> {
        let path = dir.join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    };
    let images = read(&format!("{prefix}-images-idx3-ubyte"));
    let labels = read(&format!("{prefix}-labels-idx1-ubyte"));
    (
        images[16..].to_vec(),
        labels[8..].iter().map(|&l| l as usize).collect(),
    )
}

/// 28x28 grey -> 3 x 224 x 224, 8x nearest, scaled to [0, 1] minus `mean`.
fn upsampled_batch(images: &[u8], indices: &[usize], mean: f32) -> Vec<f32> {
    let mut out = vec![0.0f32; indices.len() * 3 * 224 * 224];
    for (slot, &index) in indices.iter().enumerate() {
        let image = &images[index * 784..(index + 1) * 784];
        let base = slot * 3 * 224 * 224;
        for y in 0..224 {
            for x in 0..224 {
                let v = image[(y / 8) * 28 + x / 8] as f32 / 255.0 - mean;
                for c in 0..3 {
                    out[base + c * 224 * 224 + y * 224 + x] = v;
                }
            }
        }
    }
    out
}

fn train(dir: &Path, steps: usize) {
    println!("\n## learning: full ZF net on Fashion-MNIST upsampled to 224x224, batch 128\n");
    let (images, labels) = read_fashion(dir, "train");
    let (test_images, test_labels) = read_fashion(dir, "t10k");
    let mean = images.iter().map(|&v| v as f64).sum::<f64>() / images.len() as f64 / 255.0;
    let backend = CudaBackend::new(0, Precision::Tf32).expect("the GPU backend starts");
    let architecture = Architecture::from_name("zf", 10).expect("zf");
    let mut network = Network::new(backend, architecture, 0.01, 2013);
    let update = UpdateConfig {
        learning_rate: 0.01,
        momentum: 0.9,
        weight_decay: 5e-4,
        filter_rms_radius: 0.1,
    };
    let started = Instant::now();
    let mut window = Vec::new();
    for step in 0..steps {
        let indices: Vec<usize> = (0..SPEED_BATCH)
            .map(|i| (step * SPEED_BATCH + i * 7919) % labels.len())
            .collect();
        let batch_labels: Vec<usize> = indices.iter().map(|&i| labels[i]).collect();
        let input = network
            .backend
            .upload(&upsampled_batch(&images, &indices, mean as f32));
        let acts = network.forward(
            input,
            Mode::Train {
                dropout_stream: step as u64,
            },
        );
        let loss = network.backward(&acts, &batch_labels);
        network.update(&update);
        window.push(loss);
        if (step + 1) % 25 == 0 {
            println!(
                "step {:4}: mean loss of the last 25 steps {:.4} ({:.0} s)",
                step + 1,
                window.iter().sum::<f32>() / window.len() as f32,
                started.elapsed().as_secs_f64()
            );
            window.clear();
        }
    }
    let mut correct = 0;
    let test: Vec<usize> = (0..2000).collect();
    for chunk in test.chunks(SPEED_BATCH) {
        let input = network
            .backend
            .upload(&upsampled_batch(&test_images, chunk, mean as f32));
        let acts = network.forward(input, Mode::Eval);
        let probs = network.backend.softmax(acts.logits(), 10);
        for (row, &i) in probs.chunks(10).zip(chunk) {
            let best = (0..10).fold(0, |b, k| if row[k] > row[b] { k } else { b });
            correct += (best == test_labels[i]) as usize;
        }
    }
    println!(
        "test accuracy after {steps} steps: {:.1}% on {} images",
        100.0 * correct as f64 / test.len() as f64,
        test.len()
    );
}

/// Runs one part of the check. A panic (a CUDA call that failed: the backend panics with the
/// call and the error) is counted and reported, and the check goes on with the next part, so
/// that one unsupported configuration does not cost the rest of a scarce GPU session.
fn section<T>(what: &str, failures: &mut usize, part: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(part)) {
        Ok(value) => Some(value),
        Err(_) => {
            println!("\n{what}: FAILED (panicked; the message is above)");
            *failures += 1;
            None
        }
    }
}

fn main() {
    // The backend's debug log (RUST_LOG=cuda_backend=debug: algorithms, math types, cuDNN's
    // refusals of a fused op) on stderr, as it happens.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    engine::allocator::keep_freed_memory_for_reuse();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let what = args.first().cloned().unwrap_or_else(|| "all".to_owned());
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let fashion = value("--fashion").map(PathBuf::from);
    let steps: usize = value("--steps").and_then(|s| s.parse().ok()).unwrap_or(300);
    let seed: u64 = value("--seed")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|t| t.as_secs())
                .unwrap_or(0)
        });
    match cuda_backend::probe() {
        Ok(info) => println!(
            "device: {} ({:.0} GB, compute capability {}.{})",
            info.name,
            info.memory_bytes as f64 / 1e9,
            info.compute_capability.0,
            info.compute_capability.1
        ),
        Err(error) => {
            eprintln!("zfnet-device-check: {error}");
            std::process::exit(2);
        }
    }
    let mut failures = 0;
    if what == "parity" || what == "all" {
        for precision in [Precision::Fp32, Precision::Tf32, Precision::Bf16] {
            let what = format!("parity {precision:?}");
            let failed = section(&what, &mut failures, || parity(precision, seed));
            failures += failed.unwrap_or(0);
        }
    }
    if what == "speed" || what == "all" {
        println!("\n## speed: full ZF net, batch {SPEED_BATCH}, 224x224, 1000 classes\n");
        println!(
            "| implementation | train ms/step | train img/s | train ms/step with input from u8 | inference ms | inference img/s | GPU memory GB |"
        );
        println!("|---|---|---|---|---|---|---|");
        for precision in [Precision::Fp32, Precision::Tf32, Precision::Bf16] {
            section(&format!("speed {precision:?}"), &mut failures, || {
                speed(precision, 20)
            });
        }
    }
    if what == "train" || what == "all" {
        match &fashion {
            Some(dir) => {
                section("learning run", &mut failures, || train(dir, steps));
            }
            None => println!("\n(learning run skipped: pass --fashion DIR)"),
        }
    }
    if failures > 0 {
        std::process::exit(1);
    }
}
