//! Fully connected layers (fc6, fc7, the softmax layer): y = x W^T + b, with W stored as
//! out x in (PyTorch's layout, so exported weights need no transpose).
//!
//! The GEMM is split over blocks of output units across threads; each output element is
//! computed by one thread in a fixed order, so results do not depend on the thread count.

use rayon::prelude::*;

use crate::scalar::{MatRef, Scalar, gemm};

/// Output units per parallel block.
const BLOCK: usize = 256;

/// `x` is N x IN, `w` is OUT x IN, `b` OUT, `y` N x OUT.
pub fn linear_forward<S: Scalar>(
    x: &[S],
    w: &[S],
    b: &[S],
    n_in: usize,
    n_out: usize,
    y: &mut [S],
) {
    let n = x.len() / n_in;
    assert_eq!(y.len(), n * n_out);
    // Compute y^T (OUT x N) by output blocks, then transpose into y.
    let mut yt = vec![S::zero(); n_out * n];
    yt.par_chunks_mut(BLOCK * n)
        .enumerate()
        .for_each(|(block, yt_block)| {
            let first = block * BLOCK;
            let rows = yt_block.len() / n;
            gemm(
                S::one(),
                MatRef::row_major(&w[first * n_in..(first + rows) * n_in], rows, n_in),
                MatRef::row_major(x, n, n_in).t(),
                S::zero(),
                yt_block,
            );
        });
    for i in 0..n {
        for o in 0..n_out {
            y[i * n_out + o] = yt[o * n + i] + b[o];
        }
    }
}

/// Gradients: `dw` (OUT x IN) and `db` overwritten with batch sums; `dx` (N x IN) if wanted.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward<S: Scalar>(
    x: &[S],
    w: &[S],
    dy: &[S],
    n_in: usize,
    n_out: usize,
    dx: Option<&mut [S]>,
    dw: &mut [S],
    db: &mut [S],
) {
    let n = x.len() / n_in;
    // dW (OUT x IN) = dy^T (OUT x N) * x (N x IN), by blocks of output rows.
    dw.par_chunks_mut(BLOCK * n_in)
        .enumerate()
        .for_each(|(block, dw_block)| {
            let first = block * BLOCK;
            let rows = dw_block.len() / n_in;
            let dyt = MatRef {
                data: &dy[first..],
                rows,
                cols: n,
                row_stride: 1,
                col_stride: n_out,
            };
            gemm(
                S::one(),
                dyt,
                MatRef::row_major(x, n, n_in),
                S::zero(),
                dw_block,
            );
        });
    for (o, total) in db.iter_mut().enumerate() {
        *total = (0..n).map(|i| dy[i * n_out + o]).sum();
    }
    if let Some(dx) = dx {
        // dx^T (IN x N) = W^T (IN x OUT) * dy^T (OUT x N), by blocks of input units, then
        // transposed into dx: one GEMM per block instead of one per image.
        let mut dxt = vec![S::zero(); n_in * n];
        dxt.par_chunks_mut(BLOCK * n)
            .enumerate()
            .for_each(|(block, dxt_block)| {
                let first = block * BLOCK;
                let rows = dxt_block.len() / n;
                let wt = MatRef {
                    data: &w[first..],
                    rows,
                    cols: n_out,
                    row_stride: 1,
                    col_stride: n_in,
                };
                gemm(
                    S::one(),
                    wt,
                    MatRef::row_major(dy, n, n_out).t(),
                    S::zero(),
                    dxt_block,
                );
            });
        for i in 0..n {
            for j in 0..n_in {
                dx[i * n_in + j] = dxt[j * n + i];
            }
        }
    }
}
