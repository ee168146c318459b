//! Runs forward passes or training steps of an architecture in a loop, for profilers
//! (`perf record`): `engine_loop <arch> <batch> <infer|train> <iterations>`.

use engine::{Architecture, CpuBackend, Mode, Network, UpdateConfig};
use std::time::Instant;

fn main() {
    engine::allocator::keep_freed_memory_for_reuse();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arch = args.first().map_or("zf_small", String::as_str);
    let batch: usize = args.get(1).map_or(128, |s| s.parse().expect("batch"));
    let train = args.get(2).is_some_and(|s| s == "train");
    let iterations: usize = args.get(3).map_or(10, |s| s.parse().expect("iterations"));
    let architecture = Architecture::from_name(arch, 10).expect("architecture");
    let mut network = Network::new(CpuBackend, architecture, 0.01, 1);
    let input: Vec<f32> = (0..network.input_len() * batch)
        .map(|i| ((i * 7919) % 256) as f32 - 128.0)
        .collect();
    let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    let update = UpdateConfig {
        learning_rate: 0.0,
        momentum: 0.9,
        weight_decay: 0.0,
        filter_rms_radius: 0.1,
    };
    for _ in 0..iterations {
        let started = Instant::now();
        if train {
            let acts = network.forward(input.clone(), Mode::Train { dropout_stream: 1 });
            network.backward(&acts, &labels);
            network.update(&update);
        } else {
            let _ = network.forward(input.clone(), Mode::Eval);
        }
        println!("{:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    }
}
