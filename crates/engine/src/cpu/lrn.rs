//! Local contrast normalisation across feature maps (§3, Fig. 3; Krizhevsky et al. 2012, §3.3):
//!
//! `b[c] = a[c] / (k + alpha * sum_{c' in window(c)} a[c']^2) ^ beta`
//!
//! over a window of `size` adjacent maps centred on `c`, with Krizhevsky's constants
//! k = 2, size = 5, alpha = 1e-4, beta = 0.75 (alpha is *not* divided by the window size, as in
//! the original paper and unlike Caffe's variant).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::scalar::Scalar;

/// The constants of the normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrnConfig {
    pub size: usize,
    pub k: f64,
    pub alpha: f64,
    pub beta: f64,
}

impl Default for LrnConfig {
    fn default() -> Self {
        LrnConfig {
            size: 5,
            k: 2.0,
            alpha: 1e-4,
            beta: 0.75,
        }
    }
}

/// `s^-beta`, with a fast path for the paper's beta = 3/4 (two square roots instead of a
/// `powf`, which dominated the layer's time).
#[inline]
fn inverse_power<S: Scalar>(s: S, beta: S, three_quarters: bool) -> S {
    if three_quarters {
        let root = s.sqrt();
        S::one() / (root * root.sqrt())
    } else {
        s.powf_everywhere(-beta)
    }
}

/// Forward for one batch of `channels x plane` images. `scale` (same shape as `x`) keeps
/// `k + alpha * sum a^2` for the backward pass. The window sums slide over the channels (one
/// add and one subtract per map), so the cost does not grow with the window size.
pub fn lrn_forward<S: Scalar>(
    x: &[S],
    channels: usize,
    plane: usize,
    config: &LrnConfig,
    y: &mut [S],
    scale: &mut [S],
) {
    let image = channels * plane;
    let (k, alpha, beta) = (
        S::from_f64(config.k),
        S::from_f64(config.alpha),
        S::from_f64(config.beta),
    );
    let three_quarters = config.beta == 0.75;
    let half = config.size / 2;
    y.par_chunks_mut(image)
        .zip(scale.par_chunks_mut(image))
        .zip(x.par_chunks(image))
        .for_each(|((y, scale), x)| {
            let mut sums = vec![S::zero(); plane];
            // Window of map 0: maps 0..=half.
            for c in 0..=half.min(channels - 1) {
                for (sum, &a) in sums.iter_mut().zip(&x[c * plane..(c + 1) * plane]) {
                    *sum = *sum + a * a;
                }
            }
            for c in 0..channels {
                if c > 0 {
                    if c + half < channels {
                        let entering = &x[(c + half) * plane..(c + half + 1) * plane];
                        for (sum, &a) in sums.iter_mut().zip(entering) {
                            *sum = *sum + a * a;
                        }
                    }
                    if c > half {
                        let leaving = &x[(c - half - 1) * plane..(c - half) * plane];
                        for (sum, &a) in sums.iter_mut().zip(leaving) {
                            *sum = *sum - a * a;
                        }
                    }
                }
                let rows = c * plane..(c + 1) * plane;
                let (y, scale, x) = (&mut y[rows.clone()], &mut scale[rows.clone()], &x[rows]);
                normalise_map(x, &sums, k, alpha, beta, three_quarters, y, scale);
            }
        });
}

/// One map: `scale = k + alpha * sum`, `y = x * scale^-beta`. The beta = 3/4 case is its own
/// branch-free loop over equal-length slices, so that it vectorises (square roots and
/// divisions 16 at a time).
#[allow(clippy::too_many_arguments)]
#[inline]
fn normalise_map<S: Scalar>(
    x: &[S],
    sums: &[S],
    k: S,
    alpha: S,
    beta: S,
    three_quarters: bool,
    y: &mut [S],
    scale: &mut [S],
) {
    let n = x.len();
    let (sums, y, scale) = (&sums[..n], &mut y[..n], &mut scale[..n]);
    // Sliding sums can drift below the true (non-negative) value by rounding.
    let clamp = |sum: S| if sum > S::zero() { sum } else { S::zero() };
    if three_quarters {
        for p in 0..n {
            let s = k + alpha * clamp(sums[p]);
            scale[p] = s;
            let root = s.sqrt();
            y[p] = x[p] / (root * root.sqrt());
        }
    } else {
        for p in 0..n {
            let s = k + alpha * clamp(sums[p]);
            scale[p] = s;
            y[p] = x[p] * s.powf_everywhere(-beta);
        }
    }
}

/// Backward: `dx[j] = dy[j] s[j]^-beta - 2 alpha beta a[j] sum_{c: j in window(c)} dy[c] y[c] / s[c]`.
#[allow(clippy::too_many_arguments)]
pub fn lrn_backward<S: Scalar>(
    x: &[S],
    y: &[S],
    scale: &[S],
    dy: &[S],
    channels: usize,
    plane: usize,
    config: &LrnConfig,
    dx: &mut [S],
) {
    let image = channels * plane;
    let (alpha, beta) = (S::from_f64(config.alpha), S::from_f64(config.beta));
    let two = S::from_f64(2.0);
    let three_quarters = config.beta == 0.75;
    let half = config.size / 2;
    dx.par_chunks_mut(image).enumerate().for_each(|(n, dx)| {
        let at = n * image;
        let (x, y, scale, dy) = (
            &x[at..at + image],
            &y[at..at + image],
            &scale[at..at + image],
            &dy[at..at + image],
        );
        for j in 0..channels {
            // Maps c whose window contains j: |c - j| <= half.
            let lo = j.saturating_sub(half);
            let hi = (j + half).min(channels - 1);
            for p in 0..plane {
                let mut cross = S::zero();
                for c in lo..=hi {
                    let i = c * plane + p;
                    cross = cross + dy[i] * y[i] / scale[i];
                }
                let i = j * plane + p;
                dx[i] = dy[i] * inverse_power(scale[i], beta, three_quarters)
                    - two * alpha * beta * x[i] * cross;
            }
        }
    });
}
