//! The deconvnet (§2.1) against independent computations.

use engine::arch::{Architecture, LayerSpec};
use engine::backend::Backend;
use engine::deconv::{feature_op, project, receptive_field};
use engine::{CpuBackend, Mode, Network};

fn conv(name: &str, filters: usize, kernel: usize, stride: usize, pad: usize) -> LayerSpec {
    LayerSpec::Conv {
        name: name.into(),
        filters,
        kernel,
        stride,
        pad,
    }
}

fn network(layers: Vec<LayerSpec>, input_size: usize) -> Network<CpuBackend> {
    let architecture = Architecture {
        name: "test".into(),
        input_size,
        classes: 2,
        layers,
    };
    Network::new(CpuBackend, architecture, 0.1, 3)
}

fn input(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 10.0)
        .collect()
}

#[test]
fn without_pooling_a_single_unit_projects_to_its_filter_at_its_location() {
    // conv 5x5 stride 2 pad 1 -> ReLU: the projection of unit (m, y, x) with value a is
    // a * W[m] laid at rows y*2-1.., columns x*2-1.. (the transposed filter, by hand).
    let net = network(
        vec![
            conv("conv1", 4, 5, 2, 1),
            LayerSpec::Relu,
            LayerSpec::Linear {
                name: "fc".into(),
                units: 2,
            },
        ],
        15,
    );
    let acts = net.forward(input(3 * 15 * 15), Mode::Eval);
    let op = feature_op(&net, 1).unwrap();
    let (maps, h, w) = net.shapes[op];
    let (m, y, x, a) = (2, 3, 4, 1.5f32);
    let mut signal = vec![0.0; maps * h * w];
    signal[(m * h + y) * w + x] = a;
    let pixels = project(&net, &acts, op, signal);
    let weight = &net.params[0].weight;
    let mut expected = vec![0.0f32; 3 * 15 * 15];
    for c in 0..3 {
        for i in 0..5 {
            for j in 0..5 {
                let (py, px) = (y as i64 * 2 - 1 + i as i64, x as i64 * 2 - 1 + j as i64);
                if (0..15).contains(&py) && (0..15).contains(&px) {
                    expected[(c * 15 + py as usize) * 15 + px as usize] =
                        a * weight[((m * 3 + c) * 5 + i) * 5 + j];
                }
            }
        }
    }
    for (got, want) in pixels.iter().zip(&expected) {
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
}

#[test]
fn unpooling_routes_the_signal_only_to_the_recorded_switches() {
    let net = network(
        vec![
            conv("conv1", 3, 3, 1, 1),
            LayerSpec::Relu,
            LayerSpec::MaxPool { size: 3, stride: 2 },
            conv("conv2", 2, 3, 1, 1),
            LayerSpec::Relu,
        ],
        12,
    );
    let acts = net.forward(input(3 * 12 * 12), Mode::Eval);
    // Project every pooled unit (all ones) from the pool output down one step.
    let (c, h, w) = net.shapes[2];
    let pixels_below_pool = {
        let b = CpuBackend;
        let mut below = b.zeros(net.shapes[1].0 * net.shapes[1].1 * net.shapes[1].2);
        let engine::Op::MaxPool { geometry } = &net.ops[2] else {
            unreachable!()
        };
        b.unpool(
            &vec![1.0; c * h * w],
            acts.switches[2].as_ref().unwrap(),
            geometry,
            &mut below,
        );
        below
    };
    let switches = acts.switches[2].as_ref().unwrap();
    let plane = net.shapes[1].1 * net.shapes[1].2;
    for (map, chunk) in pixels_below_pool.chunks(plane).enumerate() {
        for (position, &value) in chunk.iter().enumerate() {
            let recorded = switches[map * h * w..(map + 1) * h * w].contains(&(position as u32));
            assert_eq!(value > 0.0, recorded, "map {map} position {position}");
        }
    }
}

#[test]
fn a_projection_lies_inside_the_receptive_field_of_its_unit() {
    let net = Network::new(
        CpuBackend,
        Architecture::from_name("zf_small", 4).unwrap(),
        0.05,
        9,
    );
    let acts = net.forward(input(3 * 28 * 28), Mode::Eval);
    for layer in 1..=5 {
        let op = feature_op(&net, layer).unwrap();
        let (maps, h, w) = net.shapes[op];
        let activations = &acts.outputs[op];
        // The strongest unit of map 0.
        let (best, _) =
            activations[..h * w]
                .iter()
                .enumerate()
                .fold(
                    (0, f32::MIN),
                    |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) },
                );
        let (y, x) = (best / w, best % w);
        let mut signal = vec![0.0; maps * h * w];
        signal[best] = activations[best].max(1.0);
        let pixels = project(&net, &acts, op, signal);
        let (rows, cols) = receptive_field(&net, op, y, x);
        let mut inside = 0.0f32;
        for c in 0..3 {
            for py in 0..28 {
                for px in 0..28 {
                    let v = pixels[(c * 28 + py) * 28 + px].abs();
                    if rows.contains(&py) && cols.contains(&px) {
                        inside += v;
                    } else {
                        assert_eq!(
                            v, 0.0,
                            "layer {layer}: signal at ({py}, {px}) outside {rows:?} x {cols:?}"
                        );
                    }
                }
            }
        }
        assert!(inside > 0.0, "layer {layer}: the projection is not empty");
    }
}
