//! The update of §3: SGD with momentum, and the filter RMS renormalisation ("each filter in
//! the convolutional layers whose RMS value exceeds a fixed radius of 1e-1 is renormalised to
//! this fixed radius").

use crate::scalar::Scalar;

/// v = momentum * v - lr * (g + weight_decay * w); w = w + v.
pub fn sgd_momentum<S: Scalar>(
    w: &mut [S],
    g: &[S],
    v: &mut [S],
    lr: f64,
    momentum: f64,
    weight_decay: f64,
) {
    let (lr, momentum, weight_decay) = (
        S::from_f64(lr),
        S::from_f64(momentum),
        S::from_f64(weight_decay),
    );
    for ((w, &g), v) in w.iter_mut().zip(g).zip(v.iter_mut()) {
        *v = momentum * *v - lr * (g + weight_decay * *w);
        *w = *w + *v;
    }
}

/// Rescales every filter (a row of `filter_len` weights) whose RMS exceeds `radius` to RMS
/// `radius`; returns how many were rescaled.
pub fn renormalise_filters<S: Scalar>(w: &mut [S], filter_len: usize, radius: f64) -> usize {
    let mut rescaled = 0;
    for filter in w.chunks_mut(filter_len) {
        let mean_square = filter
            .iter()
            .map(|&v| (v * v).to_f64().unwrap_or(0.0))
            .sum::<f64>()
            / filter_len as f64;
        let rms = mean_square.sqrt();
        if rms > radius {
            let factor = S::from_f64(radius / rms);
            for v in filter.iter_mut() {
                *v = *v * factor;
            }
            rescaled += 1;
        }
    }
    rescaled
}

/// RMS of each filter (Fig. 6's "dead" and "dominating" filter counts use it).
pub fn filter_rms<S: Scalar>(w: &[S], filter_len: usize) -> Vec<f64> {
    w.chunks(filter_len)
        .map(|filter| {
            (filter
                .iter()
                .map(|&v| (v * v).to_f64().unwrap_or(0.0))
                .sum::<f64>()
                / filter_len as f64)
                .sqrt()
        })
        .collect()
}
