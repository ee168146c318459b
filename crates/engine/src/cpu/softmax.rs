//! Softmax and the cross-entropy loss of the C-way output layer (Fig. 3).

use crate::scalar::Scalar;

/// Row-wise softmax of N x C logits into `probs`.
pub fn softmax<S: Scalar>(logits: &[S], classes: usize, probs: &mut [S]) {
    for (row, out) in logits.chunks(classes).zip(probs.chunks_mut(classes)) {
        let max = row.iter().copied().fold(S::neg_infinity(), S::max);
        let mut total = S::zero();
        for (p, &l) in out.iter_mut().zip(row) {
            *p = (l - max).exp_everywhere();
            total = total + *p;
        }
        for p in out.iter_mut() {
            *p = *p / total;
        }
    }
}

/// Mean cross-entropy over the batch and its gradient with respect to the logits. The loss is
/// computed as a log-softmax (no clamping), so a non-finite logit gives a non-finite loss.
pub fn softmax_cross_entropy<S: Scalar>(
    logits: &[S],
    labels: &[usize],
    classes: usize,
    dlogits: &mut [S],
) -> S {
    let n = labels.len();
    softmax(logits, classes, dlogits);
    let mut loss = S::zero();
    let inv_n = S::one() / S::from_f64(n as f64);
    for (i, &label) in labels.iter().enumerate() {
        let logit_row = &logits[i * classes..(i + 1) * classes];
        let max = logit_row.iter().copied().fold(S::neg_infinity(), |a, b| {
            if a.is_nan() || b.is_nan() {
                S::nan()
            } else {
                a.max(b)
            }
        });
        let log_total = logit_row
            .iter()
            .map(|&l| (l - max).exp_everywhere())
            .sum::<S>()
            .ln_everywhere();
        loss = loss - (logit_row[label] - max - log_total);
        let row = &mut dlogits[i * classes..(i + 1) * classes];
        row[label] = row[label] - S::one();
        for d in row.iter_mut() {
            *d = *d * inv_n;
        }
    }
    loss * inv_n
}
