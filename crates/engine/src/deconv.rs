//! The deconvnet of §2.1 (Fig. 1): maps activity at a layer back to input pixel space.
//!
//! "To examine a given convnet activation, we set all other activations in the layer to zero
//! and pass the feature maps as input to the attached deconvnet layer. Then we successively
//! (i) unpool, (ii) rectify and (iii) filter to reconstruct the activity in the layer beneath."
//! Going down the ops of the network:
//! - max pool: *unpool* — each value goes to the location its switch recorded on the way up;
//! - ReLU: *rectify* the reconstruction;
//! - conv: *filter* with the transposed (flipped) filters of the same layer, no bias;
//! - contrast normalisation: passed through unchanged. The paper's deconvnet has no LRN step;
//!   normalisation rescales activity per location but does not move it, and inverting it
//!   would need the forward pass's divisors, which the paper does not use;
//! - dropout: nothing (projections use the network in evaluation mode).
//!
//! This is a separate, explicit path, not autograd: gradients would gate by the forward ReLU
//! masks, the deconvnet rectifies its own signal.

use crate::backend::Backend;
use crate::network::{Activations, Network, Op};

/// Layer `n` of the paper (1-5) is the rectified output of the n-th convolution.
pub fn feature_op<B: Backend>(network: &Network<B>, layer: usize) -> Option<usize> {
    let conv = network
        .ops
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(op, Op::Conv { .. }))
        .nth(layer.checked_sub(1)?)?
        .0;
    // The ReLU right after the convolution.
    matches!(network.ops.get(conv + 1), Some(Op::Relu)).then_some(conv + 1)
}

/// Projects `signal` (N x the shape of op `from_op`'s output) down to pixels (N x 3 x S x S),
/// using the switches in `acts` (which must come from a forward pass of the same images).
pub fn project<B: Backend>(
    network: &Network<B>,
    acts: &Activations<B>,
    from_op: usize,
    signal: B::Buffer,
) -> B::Buffer {
    let b = &network.backend;
    let batch = acts.batch;
    let mut signal = signal;
    for i in (0..=from_op).rev() {
        let input_len = if i == 0 {
            batch * network.input_len()
        } else {
            let (c, h, w) = network.shapes[i - 1];
            batch * c * h * w
        };
        signal = match &network.ops[i] {
            Op::MaxPool { geometry } => {
                let mut below = b.output(input_len);
                let switches = acts.switches[i]
                    .as_ref()
                    .expect("forward kept the switches");
                b.unpool(&signal, switches, geometry, &mut below);
                below
            }
            Op::Relu => {
                b.relu(&mut signal);
                signal
            }
            Op::Conv { param, geometry } => {
                let mut below = b.output(input_len);
                b.conv_transpose(
                    &signal,
                    &network.params[*param].weight,
                    geometry,
                    &mut below,
                );
                below
            }
            Op::Lrn { .. } | Op::Dropout { .. } => signal,
            Op::Linear { .. } => panic!("the deconvnet projects from convolutional layers"),
        };
    }
    signal
}

/// The input rows and columns (inclusive, clipped to the image) that can influence the unit at
/// (`y`, `x`) of op `op`'s output: its receptive field.
pub fn receptive_field<B: Backend>(
    network: &Network<B>,
    op: usize,
    y: usize,
    x: usize,
) -> (
    std::ops::RangeInclusive<usize>,
    std::ops::RangeInclusive<usize>,
) {
    let (mut y0, mut y1, mut x0, mut x1) = (y as i64, y as i64, x as i64, x as i64);
    for i in (0..=op).rev() {
        match &network.ops[i] {
            Op::Conv { geometry, .. } => {
                let (s, p, k) = (
                    geometry.stride as i64,
                    geometry.pad as i64,
                    geometry.kernel as i64,
                );
                (y0, y1) = (y0 * s - p, y1 * s - p + k - 1);
                (x0, x1) = (x0 * s - p, x1 * s - p + k - 1);
            }
            Op::MaxPool { geometry } => {
                let (s, k) = (geometry.stride as i64, geometry.size as i64);
                (y0, y1) = (y0 * s, y1 * s + k - 1);
                (x0, x1) = (x0 * s, x1 * s + k - 1);
            }
            _ => {}
        }
    }
    let last = network.architecture.input_size as i64 - 1;
    let clip = |v: i64| v.clamp(0, last) as usize;
    (clip(y0)..=clip(y1), clip(x0)..=clip(x1))
}
