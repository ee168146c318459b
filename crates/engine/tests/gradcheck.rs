//! Every layer's backward against central finite differences, in f64 (the kernels are generic,
//! so this checks the very code the network runs in f32). L = sum(r * y) for a fixed random r,
//! so dL/dy = r.

use engine::cpu::{activation, conv, linear, lrn, pool, softmax};
use engine::geometry::{ConvGeometry, PoolGeometry};
use engine::lrn::LrnConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(len: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Checks `analytic` against finite differences of `loss` at every coordinate of `x`.
fn check(name: &str, x: &[f64], analytic: &[f64], loss: impl Fn(&[f64]) -> f64) {
    let eps = 1e-6;
    let mut worst: f64 = 0.0;
    for i in 0..x.len() {
        let mut plus = x.to_vec();
        plus[i] += eps;
        let mut minus = x.to_vec();
        minus[i] -= eps;
        let numeric = (loss(&plus) - loss(&minus)) / (2.0 * eps);
        let error = (numeric - analytic[i]).abs() / (1e-6 + numeric.abs().max(analytic[i].abs()));
        worst = worst.max(error);
    }
    // Tolerance: relative error 1e-5 in f64 (central differences with eps 1e-6 are accurate
    // to ~1e-8 here; anything wrong in a backward is off by O(1)).
    assert!(worst < 1e-5, "{name}: worst relative error {worst}");
}

#[test]
fn conv_backward_matches_finite_differences_for_input_weights_and_bias() {
    let g = ConvGeometry {
        in_channels: 2,
        in_h: 7,
        in_w: 6,
        out_channels: 3,
        kernel: 3,
        stride: 2,
        pad: 1,
    };
    let n = 2;
    let x = random(n * g.in_len(), 1);
    let w = random(g.weight_len(), 2);
    let b = random(3, 3);
    let r = random(n * g.out_len(), 4);
    let forward = |x: &[f64], w: &[f64], b: &[f64]| {
        let mut y = vec![0.0; n * g.out_len()];
        conv::conv_forward(x, w, b, &g, &mut y);
        dot(&y, &r)
    };
    let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; 3]);
    conv::conv_backward(&x, &w, &r, &g, Some(&mut dx), &mut dw, &mut db);
    check("conv dx", &x, &dx, |x| forward(x, &w, &b));
    check("conv dw", &w, &dw, |w| forward(&x, w, &b));
    check("conv db", &b, &db, |b| forward(&x, &w, b));
}

#[test]
fn conv_transpose_is_the_adjoint_of_convolution() {
    // <conv(x), y> == <x, conv_transpose(y)> for zero bias: the deconvnet's filtering really
    // uses the transposed filters.
    let g = ConvGeometry {
        in_channels: 3,
        in_h: 9,
        in_w: 9,
        out_channels: 4,
        kernel: 5,
        stride: 2,
        pad: 0,
    };
    let x = random(g.in_len(), 5);
    let w = random(g.weight_len(), 6);
    let y = random(g.out_len(), 7);
    let mut cx = vec![0.0; g.out_len()];
    conv::conv_forward(&x, &w, &[0.0; 4], &g, &mut cx);
    let mut ty = vec![0.0; g.in_len()];
    conv::conv_transpose(&y, &w, &g, &mut ty);
    assert!((dot(&cx, &y) - dot(&x, &ty)).abs() < 1e-10);
}

#[test]
fn max_pool_backward_matches_finite_differences() {
    let g = PoolGeometry {
        channels: 2,
        in_h: 8,
        in_w: 7,
        size: 3,
        stride: 2,
    };
    let x = random(2 * g.in_len(), 8);
    let r = random(2 * g.out_len(), 9);
    let forward = |x: &[f64]| {
        let mut y = vec![0.0; 2 * g.out_len()];
        let mut s = vec![0; 2 * g.out_len()];
        pool::max_pool(x, &g, &mut y, &mut s);
        dot(&y, &r)
    };
    let mut y = vec![0.0; 2 * g.out_len()];
    let mut s = vec![0; 2 * g.out_len()];
    pool::max_pool(&x, &g, &mut y, &mut s);
    let mut dx = vec![0.0; x.len()];
    pool::unpool(&r, &s, &g, &mut dx);
    check("pool dx", &x, &dx, forward);
}

#[test]
fn lrn_backward_matches_finite_differences() {
    // Large activations (like conv1's on [-128, 128] inputs) so the normaliser matters.
    let (channels, plane) = (7, 5);
    let x: Vec<f64> = random(2 * channels * plane, 10)
        .iter()
        .map(|v| v * 40.0)
        .collect();
    let r = random(x.len(), 11);
    let config = LrnConfig::default();
    let forward = |x: &[f64]| {
        let (mut y, mut s) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        lrn::lrn_forward(x, channels, plane, &config, &mut y, &mut s);
        dot(&y, &r)
    };
    let (mut y, mut s) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    lrn::lrn_forward(&x, channels, plane, &config, &mut y, &mut s);
    let mut dx = vec![0.0; x.len()];
    lrn::lrn_backward(&x, &y, &s, &r, channels, plane, &config, &mut dx);
    check("lrn dx", &x, &dx, forward);
}

#[test]
fn linear_backward_matches_finite_differences() {
    let (n, n_in, n_out) = (3, 5, 4);
    let x = random(n * n_in, 12);
    let w = random(n_out * n_in, 13);
    let b = random(n_out, 14);
    let r = random(n * n_out, 15);
    let forward = |x: &[f64], w: &[f64], b: &[f64]| {
        let mut y = vec![0.0; n * n_out];
        linear::linear_forward(x, w, b, n_in, n_out, &mut y);
        dot(&y, &r)
    };
    let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; n_out]);
    linear::linear_backward(&x, &w, &r, n_in, n_out, Some(&mut dx), &mut dw, &mut db);
    check("linear dx", &x, &dx, |x| forward(x, &w, &b));
    check("linear dw", &w, &dw, |w| forward(&x, w, &b));
    check("linear db", &b, &db, |b| forward(&x, &w, b));
}

#[test]
fn relu_and_dropout_backward_match_finite_differences() {
    let x: Vec<f64> = random(20, 16)
        .iter()
        .map(|v| if v.abs() < 0.05 { 0.5 } else { *v })
        .collect();
    let r = random(20, 17);
    let relu = |x: &[f64]| {
        let mut y = x.to_vec();
        activation::relu(&mut y);
        dot(&y, &r)
    };
    let mut y = x.clone();
    activation::relu(&mut y);
    let mut dy = r.clone();
    activation::relu_backward(&y, &mut dy);
    check("relu dx", &x, &dy, relu);

    let uniform = random(20, 18)
        .iter()
        .map(|v| (v + 1.0) / 2.0)
        .collect::<Vec<_>>();
    let dropout = |x: &[f64]| {
        let mut y = x.to_vec();
        let mut mask = vec![0.0; 20];
        activation::dropout(&mut y, 0.5, &uniform, &mut mask);
        dot(&y, &r)
    };
    let mut mask = vec![0.0; 20];
    activation::dropout(&mut x.clone(), 0.5, &uniform, &mut mask);
    let mut dy = r.clone();
    activation::apply_mask(&mut dy, &mask);
    check("dropout dx", &x, &dy, dropout);
    assert!(
        mask.iter().all(|&m| m == 0.0 || m == 2.0),
        "kept units are scaled by 1/(1-p)"
    );
}

#[test]
fn softmax_cross_entropy_gradient_matches_finite_differences() {
    let (n, classes) = (3, 5);
    let logits = random(n * classes, 19);
    let labels = [4, 0, 2];
    let loss = |l: &[f64]| {
        let mut d = vec![0.0; l.len()];
        softmax::softmax_cross_entropy(l, &labels, classes, &mut d)
    };
    let mut d = vec![0.0; logits.len()];
    softmax::softmax_cross_entropy(&logits, &labels, classes, &mut d);
    check("softmax-xent dlogits", &logits, &d, loss);
}
