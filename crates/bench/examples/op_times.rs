//! Per-op time of a forward pass (eval mode) on the CPU backend, through
//! `Network::forward_observed` (the real forward, fusions included):
//! `op_times <arch> <batch> <iterations>`; prints the best time of each op.

use engine::{Architecture, CpuBackend, Mode, Network};

fn main() {
    engine::allocator::keep_freed_memory_for_reuse();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arch = args.first().map_or("zf_small", String::as_str);
    let batch: usize = args.get(1).map_or(128, |s| s.parse().expect("batch"));
    let iterations: usize = args.get(2).map_or(5, |s| s.parse().expect("iterations"));
    let network = Network::new(
        CpuBackend,
        Architecture::from_name(arch, 10).expect("arch"),
        0.01,
        1,
    );
    let input: Vec<f32> = (0..network.input_len() * batch)
        .map(|i| ((i * 7919) % 256) as f32 - 128.0)
        .collect();
    let mut best = vec![f64::INFINITY; network.ops.len()];
    for _ in 0..iterations {
        network.forward_observed(input.clone(), Mode::Eval, &mut |op, took| {
            best[op] = best[op].min(took.as_secs_f64());
        });
    }
    let total: f64 = best.iter().sum();
    for (op, t) in network.ops.iter().zip(&best) {
        let name = format!("{op:?}");
        println!(
            "{:7.2} ms {:5.1}%  {}",
            t * 1e3,
            100.0 * t / total,
            &name[..name.len().min(90)]
        );
    }
    println!("{:7.2} ms total", total * 1e3);
}
