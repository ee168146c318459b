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

/// Forward for one batch of `channels x plane` images. `scale` (same shape as `x`) keeps
/// `k + alpha * sum a^2` for the backward pass.
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
    let half = config.size / 2;
    y.par_chunks_mut(image)
        .zip(scale.par_chunks_mut(image))
        .zip(x.par_chunks(image))
        .for_each(|((y, scale), x)| {
            for c in 0..channels {
                let lo = c.saturating_sub(half);
                let hi = (c + half).min(channels - 1);
                for p in 0..plane {
                    let mut sum = S::zero();
                    for c2 in lo..=hi {
                        let a = x[c2 * plane + p];
                        sum = sum + a * a;
                    }
                    let s = k + alpha * sum;
                    scale[c * plane + p] = s;
                    y[c * plane + p] = x[c * plane + p] * s.powf(-beta);
                }
            }
        });
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
                dx[i] = dy[i] * scale[i].powf(-beta) - two * alpha * beta * x[i] * cross;
            }
        }
    });
}
