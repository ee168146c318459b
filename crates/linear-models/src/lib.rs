//! The two classifiers of Table 7, on L2-normalised feature vectors (the paper does not say
//! how features were scaled; unit norm makes one C and one learning rate fit every layer).
//!
//! - Linear SVM: one-vs-rest, L2-regularised hinge loss, solved in the dual by coordinate
//!   descent (Hsieh et al. 2008, the liblinear solver behind scikit-learn's LinearSVC with
//!   `dual=True`), with a bias feature of 1. Chosen over linfa-svm, which builds a dense
//!   kernel matrix (measured by the issue: 50 s for one 3,000 x 9,216 problem, vs 1.8 s).
//! - Softmax: multinomial logistic regression, L2-regularised, full-batch gradient descent.
//!
//! Both are deterministic: the coordinate order comes from a seeded RNG, classes are solved
//! independently (in parallel), sums run in a fixed order.

pub mod kernel;
pub mod synthetic;

pub use kernel::{
    SymmetricMatrix, dot_products, kernel_fold_bytes, predict_kernel, train_softmax_kernel,
    train_svm_kernel,
};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Knobs of the SVM solver.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SvmConfig {
    /// Penalty C (liblinear's default 1).
    pub c: f64,
    /// Stop when the projected-gradient range falls below this (liblinear's default 0.1).
    pub tolerance: f64,
    pub max_passes: usize,
    pub seed: u64,
}

impl Default for SvmConfig {
    fn default() -> Self {
        SvmConfig {
            c: 1.0,
            tolerance: 0.1,
            max_passes: 1000,
            seed: 0,
        }
    }
}

/// Rows scaled to unit L2 norm, with a trailing bias feature of 1.
pub fn normalised_with_bias(values: &[f32], dim: usize) -> Vec<f64> {
    let mut out = vec![0.0; values.len() / dim * (dim + 1)];
    for (row, out_row) in values.chunks(dim).zip(out.chunks_mut(dim + 1)) {
        normalise_row_with_bias(row, out_row);
    }
    out
}

/// One row of [`normalised_with_bias`]: `row` scaled to unit L2 norm into `out` (length
/// `row.len() + 1`), the bias feature 1 last. Lets a caller fill a matrix row by row as the
/// rows stream in, with the same arithmetic.
pub fn normalise_row_with_bias(row: &[f32], out: &mut [f64]) {
    assert_eq!(
        out.len(),
        row.len() + 1,
        "one more slot than the row, for the bias"
    );
    let norm = row
        .iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt()
        .max(1e-12);
    for (slot, &v) in out.iter_mut().zip(row) {
        *slot = v as f64 / norm;
    }
    out[row.len()] = 1.0;
}

/// The dot product in a fixed order (eight running sums, then a fixed tree), so that it
/// pipelines without depending on the machine: the same bits everywhere.
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut sums = [0.0f64; 8];
    let mut chunks_a = a.chunks_exact(8);
    let mut chunks_b = b.chunks_exact(8);
    for (ca, cb) in (&mut chunks_a).zip(&mut chunks_b) {
        for lane in 0..8 {
            sums[lane] += ca[lane] * cb[lane];
        }
    }
    let mut tail = 0.0;
    for (x, y) in chunks_a.remainder().iter().zip(chunks_b.remainder()) {
        tail += x * y;
    }
    reduce8(&sums) + tail
}

/// [`dot`]'s eight running sums added by its fixed tree.
fn reduce8(sums: &[f64; 8]) -> f64 {
    ((sums[0] + sums[4]) + (sums[2] + sums[6])) + ((sums[1] + sums[5]) + (sums[3] + sums[7]))
}

/// One-vs-rest linear SVMs; returns the weight rows (classes x (dim + 1), bias last) of
/// `x` (rows of `dim + 1`, from [`normalised_with_bias`]).
pub fn train_svm(x: &[f64], labels: &[usize], classes: usize, config: &SvmConfig) -> Vec<Vec<f64>> {
    let d = x.len() / labels.len();
    let rows: Vec<&[f64]> = x.chunks(d).collect();
    let q: Vec<f64> = rows.iter().map(|r| dot(r, r)).collect();
    (0..classes)
        .into_par_iter()
        .map(|class| {
            let mut w = vec![0.0; d];
            dual_coordinate_descent(
                labels,
                class,
                config,
                &q,
                &mut w,
                |w, i| dot(w, rows[i]),
                |w, i, step| {
                    for (wj, xj) in w.iter_mut().zip(rows[i]) {
                        *wj += step * xj;
                    }
                },
            );
            w
        })
        .collect()
}

/// liblinear's dual coordinate descent for the SVM of `class` against the rest (Hsieh et al.
/// 2008), on a model `state` that both forms keep their own way: `decision(state, i)` is row
/// i's decision value, `add(state, i, step)` adds `step` times row i to the weights, `q[i]`
/// is row i's squared norm. The coordinate order comes from the seeded RNG; returns alpha.
pub(crate) fn dual_coordinate_descent<S>(
    labels: &[usize],
    class: usize,
    config: &SvmConfig,
    q: &[f64],
    state: &mut S,
    decision: impl Fn(&S, usize) -> f64,
    add: impl Fn(&mut S, usize, f64),
) -> Vec<f64> {
    let n = labels.len();
    let y: Vec<f64> = labels
        .iter()
        .map(|&l| if l == class { 1.0 } else { -1.0 })
        .collect();
    let mut alpha = vec![0.0; n];
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ (class as u64).wrapping_mul(0x9E37_79B9));
    for _ in 0..config.max_passes {
        order.shuffle(&mut rng);
        let (mut max_pg, mut min_pg) = (f64::NEG_INFINITY, f64::INFINITY);
        for &i in &order {
            let g = y[i] * decision(state, i) - 1.0;
            let pg = if alpha[i] == 0.0 {
                g.min(0.0)
            } else if alpha[i] == config.c {
                g.max(0.0)
            } else {
                g
            };
            max_pg = max_pg.max(pg);
            min_pg = min_pg.min(pg);
            if pg != 0.0 {
                let old = alpha[i];
                alpha[i] = (alpha[i] - g / q[i]).clamp(0.0, config.c);
                add(state, i, (alpha[i] - old) * y[i]);
            }
        }
        if max_pg - min_pg < config.tolerance {
            break;
        }
    }
    alpha
}

/// Multinomial logistic regression by full-batch gradient descent from zero weights, with L2
/// weight decay; returns weight rows like [`train_svm`].
///
/// Gradient descent from zero keeps every class's weights in the span of the training rows
/// (each gradient is a combination of them), so when there are fewer rows than dimensions
/// (the layer-1 probe: ~60 rows of 290,401) the descent runs on the coefficients of that
/// combination through the rows' Gram matrix: the same iterates in exact arithmetic, at
/// n x n instead of n x dim per class and step ([`softmax_memory_bytes`] states the memory).
/// Which form runs depends only on the shape, so results stay deterministic.
pub fn train_softmax(
    x: &[f64],
    labels: &[usize],
    classes: usize,
    l2: f64,
    steps: usize,
    learning_rate: f64,
) -> Vec<Vec<f64>> {
    let n = labels.len();
    let d = x.len() / n;
    if n < d {
        train_softmax_gram(x, labels, classes, l2, steps, learning_rate)
    } else {
        train_softmax_primal(x, labels, classes, l2, steps, learning_rate)
    }
}

/// [`train_softmax`] on the weights themselves.
fn train_softmax_primal(
    x: &[f64],
    labels: &[usize],
    classes: usize,
    l2: f64,
    steps: usize,
    learning_rate: f64,
) -> Vec<Vec<f64>> {
    let n = labels.len();
    let d = x.len() / n;
    let mut w = vec![vec![0.0; d]; classes];
    for _ in 0..steps {
        let mut grad = vec![vec![0.0; d]; classes];
        for (i, row) in x.chunks(d).enumerate() {
            let scores: Vec<f64> = w.iter().map(|wk| dot(wk, row)).collect();
            let p = softmax_residual(&scores, labels[i]);
            for k in 0..classes {
                for (g, xj) in grad[k].iter_mut().zip(row) {
                    *g += p[k] * xj / n as f64;
                }
            }
        }
        descend(&mut w, &grad, learning_rate, l2);
    }
    w
}

/// The softmax's memory beyond its input rows, in bytes: the weights and their gradient
/// (2 x classes x dim f64) in the primal form, or the Gram matrix and coefficients
/// (n x n + 2 x classes x n f64) plus the final weights (classes x dim) in the Gram form.
pub fn softmax_memory_bytes(n: usize, dim: usize, classes: usize) -> u64 {
    let (n, dim, classes) = (n as u64, dim as u64, classes as u64);
    let words = if n < dim {
        n * n + 2 * classes * n + classes * dim
    } else {
        2 * classes * dim
    };
    words.saturating_mul(8)
}

/// One gradient step with L2 weight decay, `p -= lr (g + l2 p)`, on weights or (in the Gram
/// form) on their coefficients: the same update in both.
fn descend(params: &mut [Vec<f64>], gradient: &[Vec<f64>], learning_rate: f64, l2: f64) {
    for (pk, gk) in params.iter_mut().zip(gradient) {
        for (pj, gj) in pk.iter_mut().zip(gk) {
            *pj -= learning_rate * (gj + l2 * *pj);
        }
    }
}

/// p(k | row) minus the one-hot label: the softmax loss's gradient with respect to the scores.
fn softmax_residual(scores: &[f64], label: usize) -> Vec<f64> {
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = scores.iter().map(|s| libm::exp(s - max)).collect();
    let total: f64 = exps.iter().sum();
    exps.iter()
        .enumerate()
        .map(|(k, e)| e / total - if k == label { 1.0 } else { 0.0 })
        .collect()
}

/// [`train_softmax`] on the coefficients `a` (classes x n) of `w_k = sum_i a[k][i] x_i`.
fn train_softmax_gram(
    x: &[f64],
    labels: &[usize],
    classes: usize,
    l2: f64,
    steps: usize,
    learning_rate: f64,
) -> Vec<Vec<f64>> {
    let n = labels.len();
    let d = x.len() / n;
    let rows: Vec<&[f64]> = x.chunks(d).collect();
    // Gram matrix, each entry dot's fixed-order sum (the same bits for any thread count or
    // blocking), each pair once and mirrored below the diagonal.
    let mut gram = dot_products(x, x, d, true);
    for i in 0..n {
        for j in 0..i {
            gram[i * n + j] = gram[j * n + i];
        }
    }
    let a = softmax_coefficients(&gram, labels, classes, l2, steps, learning_rate);
    a.par_iter()
        .map(|ak| {
            let mut w = vec![0.0; d];
            for (coefficient, row) in ak.iter().zip(&rows) {
                for (wj, xj) in w.iter_mut().zip(*row) {
                    *wj += coefficient * xj;
                }
            }
            w
        })
        .collect()
}

/// The softmax's descent on the coefficients `a` (classes x n) of `w_k = sum_i a[k][i] x_i`,
/// through the rows' Gram matrix (n x n, row-major).
fn softmax_coefficients(
    gram: &[f64],
    labels: &[usize],
    classes: usize,
    l2: f64,
    steps: usize,
    learning_rate: f64,
) -> Vec<Vec<f64>> {
    let n = labels.len();
    let mut a = vec![vec![0.0; n]; classes];
    for _ in 0..steps {
        // Each row's residual on its own (rows in parallel; the same operations either way).
        let by_row: Vec<Vec<f64>> = (0..n)
            .into_par_iter()
            .map(|i| {
                let column = &gram[i * n..(i + 1) * n];
                let scores: Vec<f64> = a.iter().map(|ak| dot(ak, column)).collect();
                softmax_residual(&scores, labels[i])
            })
            .collect();
        let mut residual = vec![vec![0.0; n]; classes];
        for (i, p) in by_row.iter().enumerate() {
            for k in 0..classes {
                residual[k][i] = p[k] / n as f64;
            }
        }
        descend(&mut a, &residual, learning_rate, l2);
    }
    a
}

/// The class with the highest score for each row.
pub fn predict(weights: &[Vec<f64>], x: &[f64]) -> Vec<usize> {
    let d = weights[0].len();
    x.chunks(d)
        .map(|row| {
            let scores: Vec<f64> = weights.iter().map(|w| dot(w, row)).collect();
            (0..scores.len()).fold(0, |best, k| if scores[k] > scores[best] { k } else { best })
        })
        .collect()
}

/// The mean over classes of each class's accuracy (the Caltech metric of §5.2).
pub fn mean_class_accuracy(predicted: &[usize], labels: &[usize], classes: usize) -> f64 {
    let mut correct = vec![0usize; classes];
    let mut total = vec![0usize; classes];
    for (&p, &l) in predicted.iter().zip(labels) {
        total[l] += 1;
        correct[l] += (p == l) as usize;
    }
    let present: Vec<f64> = (0..classes)
        .filter(|&k| total[k] > 0)
        .map(|k| correct[k] as f64 / total[k] as f64)
        .collect();
    present.iter().sum::<f64>() / present.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three Gaussian-ish clusters in 5 dimensions, deterministic.
    fn clusters(n_per_class: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
        let mut state = seed | 1;
        let mut noise = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 1000) as f32 / 1000.0 - 0.5
        };
        let mut values = Vec::new();
        let mut labels = Vec::new();
        for class in 0..3 {
            for _ in 0..n_per_class {
                for j in 0..5 {
                    values.push(if j == class { 3.0 } else { 0.5 } + noise());
                }
                labels.push(class);
            }
        }
        (values, labels)
    }

    #[test]
    fn both_classifiers_separate_separable_clusters() {
        let (train, train_labels) = clusters(20, 1);
        let (test, test_labels) = clusters(30, 2);
        let (xtr, xte) = (
            normalised_with_bias(&train, 5),
            normalised_with_bias(&test, 5),
        );
        let svm = train_svm(&xtr, &train_labels, 3, &SvmConfig::default());
        assert_eq!(
            mean_class_accuracy(&predict(&svm, &xte), &test_labels, 3),
            1.0
        );
        let softmax = train_softmax(&xtr, &train_labels, 3, 1e-4, 300, 1.0);
        assert_eq!(
            mean_class_accuracy(&predict(&softmax, &xte), &test_labels, 3),
            1.0
        );
    }

    #[test]
    fn a_tightly_solved_svm_puts_every_training_point_on_its_side() {
        // Separable clusters, a tight tolerance: each class's own points score positive.
        let (train, labels) = clusters(15, 3);
        let x = normalised_with_bias(&train, 5);
        let config = SvmConfig {
            tolerance: 1e-4,
            ..SvmConfig::default()
        };
        let w = train_svm(&x, &labels, 3, &config);
        for (row, &label) in x.chunks(6).zip(&labels) {
            let margin = dot(&w[label], row);
            assert!(margin > 0.0, "{margin}");
        }
    }

    #[test]
    fn mean_class_accuracy_weighs_classes_equally() {
        // Class 0: 9 of 10 right; class 1: 0 of 1 right -> (0.9 + 0) / 2.
        let labels = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let predicted = [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert!((mean_class_accuracy(&predicted, &labels, 2) - 0.45).abs() < 1e-12);
    }

    #[test]
    fn the_gram_form_of_the_softmax_follows_the_same_descent_as_the_weights_themselves() {
        // 12 rows of 40 dimensions (fewer rows than dimensions: the probe's case).
        let (values, labels) = synthetic::clusters(3, 4, 40, 1.5, 7);
        let x = normalised_with_bias(&values, 40);
        let primal = train_softmax_primal(&x, &labels, 3, 1e-3, 200, 1.0);
        let gram = train_softmax(&x, &labels, 3, 1e-3, 200, 1.0);
        for (wp, wg) in primal.iter().zip(&gram) {
            for (p, g) in wp.iter().zip(wg) {
                assert!((p - g).abs() <= 1e-9 * (1.0 + p.abs()), "{p} vs {g}");
            }
        }
        assert_eq!(predict(&primal, &x), predict(&gram, &x));
    }
}
