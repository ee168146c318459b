//! ReLU and dropout (§3: "dropout is used in the fully connected layers 6 and 7 with a rate of
//! 0.5"). Dropout is "inverted": kept units are scaled by 1/(1-p) during training, so nothing
//! changes at test time.

use rayon::prelude::*;

use crate::scalar::Scalar;

pub fn relu<S: Scalar>(x: &mut [S]) {
    x.par_iter_mut().for_each(|v| {
        if *v < S::zero() {
            *v = S::zero();
        }
    });
}

/// Backward of ReLU given its *output* `y`: the gradient passes where `y > 0`.
pub fn relu_backward<S: Scalar>(y: &[S], dy: &mut [S]) {
    dy.par_iter_mut().zip(y).for_each(|(d, &v)| {
        if v <= S::zero() {
            *d = S::zero();
        }
    });
}

/// Multiplies `x` by a keep-mask scaled by 1/(1-p); `mask` holds the multipliers (0 or
/// 1/(1-p)) for the backward pass. `keep` gives one uniform draw in [0, 1) per unit.
pub fn dropout<S: Scalar>(x: &mut [S], p: f64, uniform: &[f64], mask: &mut [S]) {
    let scale = S::from_f64(1.0 / (1.0 - p));
    for ((v, m), &u) in x.iter_mut().zip(mask.iter_mut()).zip(uniform) {
        *m = if u >= p { scale } else { S::zero() };
        *v = *v * *m;
    }
}

pub fn apply_mask<S: Scalar>(dy: &mut [S], mask: &[S]) {
    for (d, &m) in dy.iter_mut().zip(mask) {
        *d = *d * m;
    }
}
