//! The kernel form of both classifiers: trained and applied through the dot products of the
//! normalised rows (their Gram matrix) instead of the rows themselves.
//!
//! For a layer with far more dimensions than images (Caltech-256's layer 1: 290,401 values a
//! row, 21,760 rows a fold) the rows in f64 do not fit in memory (~51 GB a fold), their Gram
//! matrix does (~2.7 GB a fold with the test rows' products). Both solvers keep the weights in
//! the span of the training rows (`w = sum_i beta_i x_i`), so they run on the coefficients
//! `beta` with the same steps as [`crate::train_svm`] and [`crate::train_softmax`] in exact
//! arithmetic (the tests compare them); only the rounding differs.
//!
//! [`dot_products`] computes Gram blocks tile by tile, for the cache, yet each entry is
//! bit-for-bit [`crate::dot`] of its two rows: the same numbers however the rows are blocked,
//! so a caller may split the rows by its memory budget without changing a result.

use rayon::prelude::*;

use crate::{SvmConfig, dot, dual_coordinate_descent, reduce8, softmax_coefficients};

/// Columns of a tile: a multiple of [`crate::dot`]'s 8 lanes, so that tiling keeps each
/// lane's order of additions.
const TILE_COLUMNS: usize = 512;
/// Rows of a tile on each side (`TILE_ROWS^2` running sums of 8 lanes: 64 KiB).
const TILE_ROWS: usize = 32;

/// `dot(a_i, b_j)` for every row `a_i` of `a` and `b_j` of `b` (rows of `width` values),
/// row-major (`a` rows x `b` rows), each bit-for-bit equal to [`crate::dot`]: every entry
/// keeps dot's eight running sums over the columns in order, tile after tile, then the same
/// reduction and tail.
///
/// With `upper_only` (`a` and `b` the same rows) only the entries with `j >= i` are computed;
/// the others are left 0.
pub fn dot_products(a: &[f64], b: &[f64], width: usize, upper_only: bool) -> Vec<f64> {
    assert!(width > 0, "rows of at least one value");
    let (na, nb) = (a.len() / width, b.len() / width);
    let full = width / 8 * 8;
    let mut out = vec![0.0; na * nb];
    if nb == 0 {
        return out;
    }
    out.par_chunks_mut(nb * TILE_ROWS)
        .enumerate()
        .for_each(|(tile, out_rows)| {
            let i0 = tile * TILE_ROWS;
            let i1 = (i0 + TILE_ROWS).min(na);
            let mut sums = vec![[0.0f64; 8]; TILE_ROWS * TILE_ROWS];
            for j0 in (0..nb).step_by(TILE_ROWS) {
                let j1 = (j0 + TILE_ROWS).min(nb);
                if upper_only && j1 <= i0 {
                    continue;
                }
                sums.iter_mut().for_each(|s| *s = [0.0; 8]);
                let tile = Tile {
                    a,
                    b,
                    width,
                    full,
                    rows: i0..i1,
                    columns: j0..j1,
                    upper_only,
                };
                tile.accumulate(&mut sums);
                for i in i0..i1 {
                    for j in j0.max(if upper_only { i } else { 0 })..j1 {
                        let mut tail = 0.0;
                        for k in full..width {
                            tail += a[i * width + k] * b[j * width + k];
                        }
                        out_rows[(i - i0) * nb + j] =
                            reduce8(&sums[(i - i0) * TILE_ROWS + (j - j0)]) + tail;
                    }
                }
            }
        });
    out
}

/// One tile of [`dot_products`]: rows `rows` of `a` against rows `columns` of `b`.
struct Tile<'a> {
    a: &'a [f64],
    b: &'a [f64],
    width: usize,
    /// The columns in whole chunks of 8 (`width` rounded down).
    full: usize,
    rows: std::ops::Range<usize>,
    columns: std::ops::Range<usize>,
    upper_only: bool,
}

impl Tile<'_> {
    /// Adds every entry's products over the whole chunks to its eight running sums
    /// (`sums[(i - rows.start) * TILE_ROWS + (j - columns.start)]`), in dot's order. Entries
    /// below the diagonal (with `upper_only`) may be summed too; they are not used. The same
    /// IEEE operations on every instruction set (separate multiply and add, never fused): the
    /// wider paths only keep more sums in registers.
    fn accumulate(&self, sums: &mut [[f64; 8]]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F, checked just above.
                return unsafe { self.accumulate_avx512(sums) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2, checked just above.
                return unsafe { self.accumulate_avx2(sums) };
            }
        }
        self.accumulate_portable(sums);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn accumulate_avx512(&self, sums: &mut [[f64; 8]]) {
        self.accumulate_portable(sums);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn accumulate_avx2(&self, sums: &mut [[f64; 8]]) {
        self.accumulate_portable(sums);
    }

    /// Blocks of 4 x 4 entries (16 sets of running sums, 8 chunks loaded a step), the edges
    /// entry by entry.
    #[inline(always)]
    fn accumulate_portable(&self, sums: &mut [[f64; 8]]) {
        let (i0, j0) = (self.rows.start, self.columns.start);
        for c0 in (0..self.full).step_by(TILE_COLUMNS) {
            let c1 = (c0 + TILE_COLUMNS).min(self.full);
            let mut i = i0;
            while i < self.rows.end {
                let block_i = (self.rows.end - i).min(4);
                let mut j = j0;
                while j < self.columns.end {
                    let block_j = (self.columns.end - j).min(4);
                    // Skip what lies wholly below the diagonal.
                    if !(self.upper_only && j + block_j <= i) {
                        if block_i == 4 && block_j == 4 {
                            self.block4(sums, i, j, c0, c1);
                        } else {
                            for r in i..i + block_i {
                                for s in j..j + block_j {
                                    self.single(sums, r, s, c0, c1);
                                }
                            }
                        }
                    }
                    j += block_j;
                }
                i += block_i;
            }
        }
    }

    #[inline(always)]
    fn slot(&self, i: usize, j: usize) -> usize {
        (i - self.rows.start) * TILE_ROWS + (j - self.columns.start)
    }

    #[inline(always)]
    fn block4(&self, sums: &mut [[f64; 8]], i: usize, j: usize, c0: usize, c1: usize) {
        let w = self.width;
        let mut acc = [[[0.0f64; 8]; 4]; 4];
        for r in 0..4 {
            for s in 0..4 {
                acc[r][s] = sums[self.slot(i + r, j + s)];
            }
        }
        let a: [&[f64]; 4] = std::array::from_fn(|r| &self.a[(i + r) * w + c0..(i + r) * w + c1]);
        let b: [&[f64]; 4] = std::array::from_fn(|s| &self.b[(j + s) * w + c0..(j + s) * w + c1]);
        for c in (0..c1 - c0).step_by(8) {
            let ca: [[f64; 8]; 4] = std::array::from_fn(|r| a[r][c..c + 8].try_into().unwrap());
            let cb: [[f64; 8]; 4] = std::array::from_fn(|s| b[s][c..c + 8].try_into().unwrap());
            for r in 0..4 {
                for s in 0..4 {
                    for lane in 0..8 {
                        acc[r][s][lane] += ca[r][lane] * cb[s][lane];
                    }
                }
            }
        }
        for r in 0..4 {
            for s in 0..4 {
                sums[self.slot(i + r, j + s)] = acc[r][s];
            }
        }
    }

    #[inline(always)]
    fn single(&self, sums: &mut [[f64; 8]], i: usize, j: usize, c0: usize, c1: usize) {
        let w = self.width;
        let slot = self.slot(i, j);
        let mut lanes = sums[slot];
        let (row_a, row_b) = (
            &self.a[i * w + c0..i * w + c1],
            &self.b[j * w + c0..j * w + c1],
        );
        for (ca, cb) in row_a.chunks_exact(8).zip(row_b.chunks_exact(8)) {
            for lane in 0..8 {
                lanes[lane] += ca[lane] * cb[lane];
            }
        }
        sums[slot] = lanes;
    }
}

/// A symmetric n x n matrix held as its upper triangle, row by row (n (n + 1) / 2 values):
/// the Gram matrix of every row a probe's folds use, from which each fold takes its part.
#[derive(Clone, Debug, PartialEq)]
pub struct SymmetricMatrix {
    n: usize,
    values: Vec<f64>,
}

impl SymmetricMatrix {
    pub fn zeros(n: usize) -> Self {
        SymmetricMatrix {
            n,
            values: vec![0.0; n * (n + 1) / 2],
        }
    }

    /// The memory of an n x n one, in bytes.
    pub fn bytes(n: usize) -> u64 {
        (n as u64)
            .saturating_mul(n as u64 + 1)
            .saturating_div(2)
            .saturating_mul(8)
    }

    pub fn size(&self) -> usize {
        self.n
    }

    fn index(&self, i: usize, j: usize) -> usize {
        let (i, j) = if i <= j { (i, j) } else { (j, i) };
        assert!(j < self.n, "({i}, {j}) outside a {} matrix", self.n);
        // Rows 0..i hold n + (n - 1) + ... + (n - i + 1) values.
        i * self.n - i * i.saturating_sub(1) / 2 + (j - i)
    }

    pub fn get(&self, i: usize, j: usize) -> f64 {
        self.values[self.index(i, j)]
    }

    pub fn set(&mut self, i: usize, j: usize, value: f64) {
        let index = self.index(i, j);
        self.values[index] = value;
    }

    /// The dense row-major matrix of `rows` x `columns` entries (indexes into this matrix).
    pub fn submatrix(&self, rows: &[usize], columns: &[usize]) -> Vec<f64> {
        let mut out = Vec::with_capacity(rows.len() * columns.len());
        for &i in rows {
            out.extend(columns.iter().map(|&j| self.get(i, j)));
        }
        out
    }
}

/// One-vs-rest linear SVMs in the kernel form: [`crate::train_svm`]'s dual coordinate descent
/// (the same coordinate order from the same seed, the same clipped steps), with the decision
/// values `f = K (alpha * y)` of the training rows kept instead of the weights. `gram` is the
/// n x n Gram matrix of the normalised training rows (bias included), row-major. Returns per
/// class the coefficients `alpha_i y_i` of the training rows, for [`predict_kernel`].
pub fn train_svm_kernel(
    gram: &[f64],
    labels: &[usize],
    classes: usize,
    config: &SvmConfig,
) -> Vec<Vec<f64>> {
    let n = labels.len();
    assert_eq!(gram.len(), n * n, "an n x n Gram matrix");
    let q: Vec<f64> = (0..n).map(|i| gram[i * n + i]).collect();
    (0..classes)
        .into_par_iter()
        .map(|class| {
            let mut decision = vec![0.0; n];
            let alpha = dual_coordinate_descent(
                labels,
                class,
                config,
                &q,
                &mut decision,
                |decision, i| decision[i],
                |decision, i, step| {
                    for (f, k) in decision.iter_mut().zip(&gram[i * n..(i + 1) * n]) {
                        *f += step * k;
                    }
                },
            );
            alpha
                .iter()
                .zip(labels)
                .map(|(a, &l)| if l == class { *a } else { -a })
                .collect()
        })
        .collect()
}

/// Multinomial logistic regression in the kernel form: [`crate::train_softmax`]'s descent on
/// the coefficients of the training rows (`gram` n x n, row-major), for [`predict_kernel`].
/// Given the Gram matrix [`crate::train_softmax`] builds itself, these are the very
/// coefficients it descends through (the same bits).
pub fn train_softmax_kernel(
    gram: &[f64],
    labels: &[usize],
    classes: usize,
    l2: f64,
    steps: usize,
    learning_rate: f64,
) -> Vec<Vec<f64>> {
    assert_eq!(
        gram.len(),
        labels.len() * labels.len(),
        "an n x n Gram matrix"
    );
    softmax_coefficients(gram, labels, classes, l2, steps, learning_rate)
}

/// The class with the highest score for each of `n_test` test rows, from per-class
/// coefficients of the training rows and `cross` (test rows x training rows of dot products,
/// row-major).
pub fn predict_kernel(coefficients: &[Vec<f64>], cross: &[f64], n_test: usize) -> Vec<usize> {
    if n_test == 0 {
        return Vec::new();
    }
    let n = cross.len() / n_test;
    assert_eq!(cross.len(), n_test * n, "a test x train matrix");
    (0..n_test)
        .map(|t| {
            let row = &cross[t * n..(t + 1) * n];
            let scores: Vec<f64> = coefficients.iter().map(|c| dot(c, row)).collect();
            (0..scores.len()).fold(0, |best, k| if scores[k] > scores[best] { k } else { best })
        })
        .collect()
}

/// What one fold holds in the kernel form, in bytes: its training Gram matrix (n_train^2),
/// the test rows' products (n_test x n_train) and both classifiers' coefficients and
/// per-class state (6 x classes x n_train), all f64.
pub fn kernel_fold_bytes(n_train: usize, n_test: usize, classes: usize) -> u64 {
    let (n, t, k) = (n_train as u64, n_test as u64, classes as u64);
    n.saturating_mul(n)
        .saturating_add(t.saturating_mul(n))
        .saturating_add(k.saturating_mul(6).saturating_mul(n))
        .saturating_mul(8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::clusters;
    use crate::{normalised_with_bias, predict, train_softmax, train_svm};

    /// Rows of `width` values in [-1, 1) from a xorshift stream.
    fn rows(n: usize, width: usize, seed: u64) -> Vec<f64> {
        let mut state = seed | 1;
        (0..n * width)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 11) as f64 / (1u64 << 52) as f64 - 1.0
            })
            .collect()
    }

    #[test]
    fn every_tiled_dot_product_has_the_bits_of_dot_itself() {
        // Widths with and without a tail, shorter and longer than a tile; row counts across
        // the tile's edge.
        for width in [1, 7, 8, 9, 517, 1031, 1536] {
            let (a, b) = (rows(33, width, 1), rows(70, width, 2));
            let products = dot_products(&a, &b, width, false);
            for i in 0..33 {
                for j in 0..70 {
                    let expected = dot(&a[i * width..][..width], &b[j * width..][..width]);
                    assert_eq!(
                        products[i * 70 + j].to_bits(),
                        expected.to_bits(),
                        "width {width}, ({i}, {j})"
                    );
                }
            }
            let upper = dot_products(&b, &b, width, true);
            for i in 0..70 {
                for j in 0..70 {
                    let expected = if j >= i {
                        dot(&b[i * width..][..width], &b[j * width..][..width])
                    } else {
                        0.0
                    };
                    assert_eq!(
                        upper[i * 70 + j].to_bits(),
                        expected.to_bits(),
                        "({i}, {j})"
                    );
                }
            }
        }
    }

    #[test]
    fn every_instruction_set_sums_a_tile_in_the_same_bits() {
        let width = 1031;
        let (a, b) = (rows(TILE_ROWS, width, 3), rows(TILE_ROWS - 3, width, 4));
        for upper_only in [false, true] {
            let b = if upper_only { &a } else { &b };
            let tile = Tile {
                a: &a,
                b,
                width,
                full: width / 8 * 8,
                rows: 1..TILE_ROWS,
                columns: 0..b.len() / width,
                upper_only,
            };
            let run = |path: &dyn Fn(&mut [[f64; 8]])| {
                let mut sums = vec![[0.0f64; 8]; TILE_ROWS * TILE_ROWS];
                path(&mut sums);
                sums.iter()
                    .flatten()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            };
            let portable = run(&|sums| tile.accumulate_portable(sums));
            assert!(portable.iter().any(|&v| v != 0), "something summed");
            assert_eq!(run(&|sums| tile.accumulate(sums)), portable);
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: checked just above.
                    assert_eq!(run(&|sums| unsafe { tile.accumulate_avx2(sums) }), portable);
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: checked just above.
                    assert_eq!(
                        run(&|sums| unsafe { tile.accumulate_avx512(sums) }),
                        portable
                    );
                }
            }
        }
    }

    #[test]
    fn a_symmetric_matrix_holds_each_pair_once() {
        let n = 7;
        let mut m = SymmetricMatrix::zeros(n);
        assert_eq!(SymmetricMatrix::bytes(n), 28 * 8);
        for i in 0..n {
            for j in i..n {
                m.set(j, i, (i * 10 + j) as f64);
            }
        }
        for i in 0..n {
            for j in 0..n {
                let (lo, hi) = (i.min(j), i.max(j));
                assert_eq!(m.get(i, j), (lo * 10 + hi) as f64, "({i}, {j})");
            }
        }
        assert_eq!(
            m.submatrix(&[6, 0], &[1, 6, 2]),
            vec![16.0, 66.0, 26.0, 1.0, 6.0, 2.0]
        );
    }

    /// Training and test rows normalised with the bias, their Gram and cross matrices.
    struct Problem {
        x_train: Vec<f64>,
        labels: Vec<usize>,
        x_test: Vec<f64>,
        n_test: usize,
        gram: Vec<f64>,
        cross: Vec<f64>,
    }

    fn problem(dim: usize) -> Problem {
        let (train, labels) = clusters(3, 12, dim, 1.0, 5);
        let (test, test_labels) = clusters(3, 20, dim, 1.0, 6);
        let (x_train, x_test) = (
            normalised_with_bias(&train, dim),
            normalised_with_bias(&test, dim),
        );
        Problem {
            gram: dot_products(&x_train, &x_train, dim + 1, false),
            cross: dot_products(&x_test, &x_train, dim + 1, false),
            x_train,
            labels,
            x_test,
            n_test: test_labels.len(),
        }
    }

    /// The weights that per-class `coefficients` of the training rows stand for are `weights`
    /// (within 1e-9), and both classify the test rows alike.
    fn assert_same_classifier(
        weights: &[Vec<f64>],
        coefficients: &[Vec<f64>],
        x_train: &[f64],
        x_test: &[f64],
        cross: &[f64],
        n_test: usize,
    ) {
        let width = weights[0].len();
        for (w, c) in weights.iter().zip(coefficients) {
            for (j, wj) in w.iter().enumerate() {
                let from_c: f64 = c
                    .iter()
                    .enumerate()
                    .map(|(i, ci)| ci * x_train[i * width + j])
                    .sum();
                assert!(
                    (wj - from_c).abs() < 1e-9,
                    "width {width}: {wj} vs {from_c}"
                );
            }
        }
        assert_eq!(
            predict(weights, x_test),
            predict_kernel(coefficients, cross, n_test),
            "width {width}"
        );
    }

    #[test]
    fn the_kernel_svm_takes_the_primal_solvers_steps() {
        // More dimensions than rows (the kernel form's case) and fewer.
        for dim in [200, 4] {
            let Problem {
                x_train,
                labels,
                x_test,
                n_test,
                gram,
                cross,
            } = problem(dim);
            let config = SvmConfig {
                tolerance: 1e-3,
                ..SvmConfig::default()
            };
            let weights = train_svm(&x_train, &labels, 3, &config);
            let coefficients = train_svm_kernel(&gram, &labels, 3, &config);
            // The weights the coefficients stand for are the primal solver's.
            assert_same_classifier(&weights, &coefficients, &x_train, &x_test, &cross, n_test);
        }
    }

    #[test]
    fn the_kernel_softmax_predicts_as_the_softmax_on_the_rows() {
        for dim in [200, 4] {
            let Problem {
                x_train,
                labels,
                x_test,
                n_test,
                gram,
                cross,
            } = problem(dim);
            let weights = train_softmax(&x_train, &labels, 3, 1e-3, 150, 1.0);
            let coefficients = train_softmax_kernel(&gram, &labels, 3, 1e-3, 150, 1.0);
            assert_same_classifier(&weights, &coefficients, &x_train, &x_test, &cross, n_test);
        }
    }
}
