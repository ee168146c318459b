//! Per-op time of a forward pass (eval mode) on the CPU backend:
//! `op_times <arch> <batch> <iterations>`; prints the best time of each op.

use engine::{Architecture, Backend, CpuBackend, Network, Op};
use std::time::Instant;

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
    let b = &network.backend;
    let input: Vec<f32> = (0..network.input_len() * batch)
        .map(|i| ((i * 7919) % 256) as f32 - 128.0)
        .collect();
    let mut best = vec![f64::INFINITY; network.ops.len()];
    for _ in 0..iterations {
        let mut x = input.clone();
        for (i, op) in network.ops.iter().enumerate() {
            let (c, h, w) = network.shapes[i];
            let out_len = batch * c * h * w;
            let started = Instant::now();
            let y = match op {
                Op::Conv { param, geometry } => {
                    let p = &network.params[*param];
                    let mut y = b.zeros(out_len);
                    if matches!(network.ops.get(i + 1), Some(Op::Relu)) {
                        b.conv_forward_relu(&x, &p.weight, &p.bias, geometry, &mut y);
                    } else {
                        b.conv_forward(&x, &p.weight, &p.bias, geometry, &mut y);
                    }
                    y
                }
                Op::Relu => {
                    let mut y = x;
                    if !matches!(network.ops[i - 1], Op::Conv { .. }) {
                        b.relu(&mut y);
                    }
                    y
                }
                Op::MaxPool { geometry } => {
                    let mut y = b.zeros(out_len);
                    let mut s = b.switches(out_len);
                    b.max_pool(&x, geometry, &mut y, &mut s);
                    y
                }
                Op::Lrn { channels, plane } => {
                    let mut y = b.zeros(out_len);
                    let mut s = b.zeros(out_len);
                    b.lrn_forward(&x, *channels, *plane, &network.lrn, &mut y, &mut s);
                    y
                }
                Op::Dropout { .. } => x,
                Op::Linear { param, n_in, n_out } => {
                    let p = &network.params[*param];
                    let mut y = b.zeros(out_len);
                    b.linear_forward(&x, &p.weight, &p.bias, *n_in, *n_out, &mut y);
                    y
                }
            };
            best[i] = best[i].min(started.elapsed().as_secs_f64());
            x = y;
        }
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
