//! [`F64Backend`]: every op of the network in float64, on the generic reference kernels of
//! [`crate::cpu`] (the ones the finite-difference gradient checks use). It is the yardstick
//! that another backend's float32 (or TF32, or bf16) results are measured against: its
//! rounding error is some 2^-29 times smaller than theirs, so a difference from it is the
//! other backend's error and not a mix of two. Slow (im2col and an f64 GEMM), and meant for
//! small batches: the GPU parity check (`cuda-backend`'s `parity`) and tests.
//!
//! Buffers are `Vec<f64>`; `upload` widens the f32 data exactly, `download` rounds to the
//! nearest f32 (the buffers themselves hold the values whole). Dropout draws its
//! keep decisions from the same ChaCha stream as every other backend.

use std::borrow::Cow;

use crate::backend::{Backend, Gradients, Momentum};
use crate::cpu;
use crate::geometry::{ConvGeometry, LinearGeometry, LrnGeometry, PoolGeometry};

/// The float64 reference backend (see the module's documentation).
#[derive(Clone, Copy, Debug, Default)]
pub struct F64Backend;

fn narrow(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}

impl Backend for F64Backend {
    type Buffer = Vec<f64>;
    type Switches = Vec<u32>;
    type Counter = u64;
    type Loss = f64;

    fn name(&self) -> &'static str {
        "f64"
    }
    fn zeros(&self, len: usize) -> Vec<f64> {
        vec![0.0; len]
    }
    fn upload(&self, data: &[f32]) -> Vec<f64> {
        data.iter().map(|&v| f64::from(v)).collect()
    }
    fn download(&self, buffer: &Vec<f64>) -> Vec<f32> {
        narrow(buffer)
    }
    fn read<'a>(&self, buffer: &'a Vec<f64>) -> Cow<'a, [f32]> {
        Cow::Owned(narrow(buffer))
    }
    fn copy(&self, buffer: &Vec<f64>) -> Vec<f64> {
        buffer.clone()
    }
    fn len(&self, buffer: &Vec<f64>) -> usize {
        buffer.len()
    }
    fn switches(&self, len: usize) -> Vec<u32> {
        vec![0; len]
    }
    fn download_switches(&self, switches: &Vec<u32>) -> Vec<u32> {
        switches.clone()
    }
    fn counter(&self) -> u64 {
        0
    }
    fn take_count(&self, counter: &mut u64) -> u64 {
        std::mem::take(counter)
    }
    fn conv_forward(
        &self,
        x: &Vec<f64>,
        w: &Vec<f64>,
        b: &Vec<f64>,
        g: &ConvGeometry,
        y: &mut Vec<f64>,
    ) {
        cpu::conv::conv_forward(x, w, b, g, y);
    }
    fn conv_backward(
        &self,
        x: &Vec<f64>,
        w: &Vec<f64>,
        dy: &Vec<f64>,
        g: &ConvGeometry,
        grads: Gradients<'_, Vec<f64>>,
    ) {
        let Gradients {
            input: dx,
            weight: dw,
            bias: db,
        } = grads;
        cpu::conv::conv_backward(x, w, dy, g, dx.map(|d| d.as_mut_slice()), dw, db);
    }
    fn conv_transpose(&self, y: &Vec<f64>, w: &Vec<f64>, g: &ConvGeometry, x: &mut Vec<f64>) {
        cpu::conv::conv_transpose(y, w, g, x);
    }
    fn max_pool(&self, x: &Vec<f64>, g: &PoolGeometry, y: &mut Vec<f64>, switches: &mut Vec<u32>) {
        cpu::pool::max_pool(x, g, y, switches);
    }
    fn unpool(&self, y: &Vec<f64>, switches: &Vec<u32>, g: &PoolGeometry, x: &mut Vec<f64>) {
        cpu::pool::unpool(y, switches, g, x);
    }
    fn lrn_forward(&self, x: &Vec<f64>, g: &LrnGeometry, y: &mut Vec<f64>, scale: &mut Vec<f64>) {
        cpu::lrn::lrn_forward(x, g.channels, g.plane, &g.config, y, scale);
    }
    fn lrn_backward(
        &self,
        x: &Vec<f64>,
        y: &Vec<f64>,
        scale: &Vec<f64>,
        dy: &Vec<f64>,
        g: &LrnGeometry,
        dx: &mut Vec<f64>,
    ) {
        cpu::lrn::lrn_backward(x, y, scale, dy, g.channels, g.plane, &g.config, dx);
    }
    fn relu(&self, x: &mut Vec<f64>) {
        cpu::activation::relu(x);
    }
    fn relu_backward(&self, y: &Vec<f64>, dy: &mut Vec<f64>) {
        cpu::activation::relu_backward(y, dy);
    }
    fn dropout(&self, x: &mut Vec<f64>, p: f64, seed: u64, mask: &mut Vec<f64>) {
        let uniform = crate::rng::uniform_stream(seed, x.len());
        cpu::activation::dropout(x, p, &uniform, mask);
    }
    fn apply_mask(&self, dy: &mut Vec<f64>, mask: &Vec<f64>) {
        cpu::activation::apply_mask(dy, mask);
    }
    fn linear_forward(
        &self,
        x: &Vec<f64>,
        w: &Vec<f64>,
        b: &Vec<f64>,
        g: &LinearGeometry,
        y: &mut Vec<f64>,
    ) {
        cpu::linear::linear_forward(x, w, b, g.n_in, g.n_out, y);
    }
    fn linear_backward(
        &self,
        x: &Vec<f64>,
        w: &Vec<f64>,
        dy: &Vec<f64>,
        g: &LinearGeometry,
        grads: Gradients<'_, Vec<f64>>,
    ) {
        let Gradients {
            input: dx,
            weight: dw,
            bias: db,
        } = grads;
        let dx = dx.map(|d| d.as_mut_slice());
        cpu::linear::linear_backward(x, w, dy, g.n_in, g.n_out, dx, dw, db);
    }
    fn softmax_cross_entropy(
        &self,
        logits: &Vec<f64>,
        labels: &[usize],
        classes: usize,
        dlogits: &mut Vec<f64>,
    ) -> f64 {
        cpu::softmax::softmax_cross_entropy(logits, labels, classes, dlogits)
    }
    fn read_loss(&self, loss: f64) -> f32 {
        loss as f32
    }
    fn softmax(&self, logits: &Vec<f64>, classes: usize) -> Vec<f32> {
        let mut probs = vec![0.0; logits.len()];
        cpu::softmax::softmax(logits, classes, &mut probs);
        narrow(&probs)
    }
    fn sgd_momentum(&self, w: &mut Vec<f64>, g: &Vec<f64>, v: &mut Vec<f64>, settings: &Momentum) {
        let Momentum {
            learning_rate,
            momentum,
            weight_decay,
        } = *settings;
        cpu::sgd::sgd_momentum(w, g, v, learning_rate, momentum, weight_decay);
    }
    fn renormalise_filters(
        &self,
        w: &mut Vec<f64>,
        filter_len: usize,
        radius: f64,
        rescaled: &mut u64,
    ) {
        *rescaled += cpu::sgd::renormalise_filters(w, filter_len, radius) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Architecture, CpuBackend, Mode, Network};

    /// The reference and the CPU backend run the same network; their activations, loss and
    /// gradients agree to float32's rounding (and the reference is not the CPU backend in
    /// disguise: its values are not all representable in f32).
    #[test]
    fn the_f64_reference_agrees_with_the_cpu_backend_to_f32_rounding() {
        let architecture = Architecture::from_name("zf_small", 10).unwrap();
        let mut cpu = Network::new(CpuBackend, architecture.clone(), 0.05, 3);
        let mut reference = Network::new(F64Backend, architecture, 0.05, 3);
        let input: Vec<f32> = crate::rng::uniform_stream(5, 4 * cpu.input_len())
            .into_iter()
            .map(|u| (2.0 * u - 1.0) as f32)
            .collect();
        let labels = [1, 4, 7, 9];
        let mode = Mode::Train { dropout_stream: 8 };
        let cpu_acts = cpu.forward(cpu.backend.upload(&input), mode);
        let ref_acts = reference.forward(reference.backend.upload(&input), mode);
        let logits = ref_acts.logits();
        let cpu_logits = cpu_acts.logits();
        let scale = logits.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (a, b) in cpu_logits.iter().zip(logits) {
            assert!((f64::from(*a) - b).abs() <= 1e-4 * scale, "{a} vs {b}");
        }
        assert!(
            logits.iter().any(|&v| f64::from(v as f32) != v),
            "the reference computes in f64"
        );
        let cpu_loss = cpu.backward(&cpu_acts, &labels);
        let ref_loss = reference.backward(&ref_acts, &labels);
        assert!((cpu_loss - ref_loss).abs() <= 1e-5 * ref_loss.abs());
        for (c, r) in cpu.params.iter().zip(&reference.params) {
            let scale = r.weight_grad.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(scale > 0.0, "{} has a gradient", c.name);
            for (a, b) in c.weight_grad.iter().zip(&r.weight_grad) {
                assert!((f64::from(*a) - b).abs() <= 1e-3 * scale, "{}", c.name);
            }
        }
    }
}
