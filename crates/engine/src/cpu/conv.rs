//! Convolution by im2col + GEMM, forward and backward, and the deconvnet's transposed
//! filtering (§2.1: "the deconvnet uses transposed versions of the same filters").
//!
//! Chunks of [`CHUNK`] images are processed in parallel (rayon), each with single-threaded
//! GEMMs, so the cores are never oversubscribed. Weight gradients are summed per chunk and the
//! chunk partials added in chunk order: the result is bit-identical whatever the number of
//! threads.

use rayon::prelude::*;

use crate::geometry::ConvGeometry;
use crate::scalar::{MatRef, Scalar, gemm};

/// Images unfolded side by side per GEMM, and per weight-gradient partial sum (fixed, so
/// reductions do not depend on the thread count).
pub const CHUNK: usize = 8;

/// The output columns `ox` of kernel column `kj` whose input column `ox s + kj - pad` lies
/// inside the image, as a range (empty when none does).
fn valid_columns(g: &ConvGeometry, kj: usize) -> std::ops::Range<usize> {
    let ow = g.out_w();
    let first = g.pad.saturating_sub(kj).div_ceil(g.stride).min(ow);
    let end = (g.in_w + g.pad)
        .saturating_sub(kj)
        .div_ceil(g.stride)
        .min(ow);
    first..end.max(first)
}

/// Unfolds one image (C x H x W) into columns `offset..offset + OH OW` of `cols`, a
/// (C k k) x `row_len` matrix (several images side by side); out-of-image taps are 0.
/// Row by row: the in-image part of each output row is one strided (for stride 1,
/// contiguous) copy.
pub fn im2col<S: Scalar>(x: &[S], g: &ConvGeometry, cols: &mut [S], row_len: usize, offset: usize) {
    let (oh, ow) = (g.out_h(), g.out_w());
    let plane = oh * ow;
    debug_assert!(cols.len() >= g.patch_len() * row_len && offset + plane <= row_len);
    for c in 0..g.in_channels {
        let x_plane = &x[c * g.in_h * g.in_w..][..g.in_h * g.in_w];
        for ki in 0..g.kernel {
            for kj in 0..g.kernel {
                let row = (c * g.kernel + ki) * g.kernel + kj;
                let out = &mut cols[row * row_len + offset..][..plane];
                let valid = valid_columns(g, kj);
                for oy in 0..oh {
                    let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                    let out_row = &mut out[oy * ow..][..ow];
                    if iy < 0 || iy >= g.in_h as isize {
                        out_row.fill(S::zero());
                        continue;
                    }
                    let x_row = &x_plane[iy as usize * g.in_w..][..g.in_w];
                    out_row[..valid.start].fill(S::zero());
                    out_row[valid.end..].fill(S::zero());
                    // Input column of output column `valid.start`.
                    let from = valid.start * g.stride + kj - g.pad;
                    let out_valid = &mut out_row[valid.clone()];
                    if g.stride == 1 {
                        out_valid.copy_from_slice(&x_row[from..from + out_valid.len()]);
                    } else {
                        for (t, value) in out_valid.iter_mut().enumerate() {
                            *value = x_row[from + t * g.stride];
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds each entry of columns `offset..offset + OH OW` back into
/// the image position it came from. `dx` is overwritten.
pub fn col2im<S: Scalar>(
    cols: &[S],
    g: &ConvGeometry,
    dx: &mut [S],
    row_len: usize,
    offset: usize,
) {
    let (oh, ow) = (g.out_h(), g.out_w());
    let plane = oh * ow;
    dx.fill(S::zero());
    for c in 0..g.in_channels {
        let dx_plane = &mut dx[c * g.in_h * g.in_w..][..g.in_h * g.in_w];
        for ki in 0..g.kernel {
            for kj in 0..g.kernel {
                let row = (c * g.kernel + ki) * g.kernel + kj;
                let col = &cols[row * row_len + offset..][..plane];
                let valid = valid_columns(g, kj);
                if valid.is_empty() {
                    continue;
                }
                let from = valid.start * g.stride + kj - g.pad;
                for oy in 0..oh {
                    let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.in_h as isize {
                        continue;
                    }
                    let dx_row = &mut dx_plane[iy as usize * g.in_w..][..g.in_w];
                    let col_valid = &col[oy * ow..][valid.clone()];
                    if g.stride == 1 {
                        let dx_valid = &mut dx_row[from..from + col_valid.len()];
                        for (total, &value) in dx_valid.iter_mut().zip(col_valid) {
                            *total = *total + value;
                        }
                    } else {
                        for (t, &value) in col_valid.iter().enumerate() {
                            let at = from + t * g.stride;
                            dx_row[at] = dx_row[at] + value;
                        }
                    }
                }
            }
        }
    }
}

/// y = W * x + b for a batch: `x` is N x C x H x W, `w` is K x C x k x k, `y` is N x K x OH x OW.
/// Each task unfolds [`CHUNK`] images side by side and does one GEMM for them, so that layers
/// with small feature maps (7x7, 13x13) still give the GEMM a wide matrix.
pub fn conv_forward<S: Scalar>(x: &[S], w: &[S], b: &[S], g: &ConvGeometry, y: &mut [S]) {
    let n = x.len() / g.in_len();
    assert_eq!(x.len(), n * g.in_len());
    assert_eq!(y.len(), n * g.out_len());
    assert_eq!(w.len(), g.weight_len());
    let plane = g.out_h() * g.out_w();
    let patch = g.patch_len();
    y.par_chunks_mut(CHUNK * g.out_len())
        .zip(x.par_chunks(CHUNK * g.in_len()))
        .for_each(|(y_chunk, x_chunk)| {
            let images = x_chunk.len() / g.in_len();
            let row_len = images * plane;
            let mut cols = vec![S::zero(); patch * row_len];
            for (j, x_image) in x_chunk.chunks(g.in_len()).enumerate() {
                im2col(x_image, g, &mut cols, row_len, j * plane);
            }
            let mut product = vec![S::zero(); g.out_channels * row_len];
            gemm(
                S::one(),
                MatRef::row_major(w, g.out_channels, patch),
                MatRef::row_major(&cols, patch, row_len),
                S::zero(),
                &mut product,
            );
            // product is K x (image, position): scatter to image-major NCHW, adding the bias.
            for (j, y_image) in y_chunk.chunks_mut(g.out_len()).enumerate() {
                for (k, y_plane) in y_image.chunks_mut(plane).enumerate() {
                    let source = &product[k * row_len + j * plane..][..plane];
                    for (out, &value) in y_plane.iter_mut().zip(source) {
                        *out = value + b[k];
                    }
                }
            }
        });
}

/// Gradients of [`conv_forward`]: `dw` and `db` are overwritten with the batch sums; `dx`
/// (when wanted) with the input gradient. Partial sums are per chunk of [`CHUNK`] images and
/// added in chunk order, so the result does not depend on the thread count.
pub fn conv_backward<S: Scalar>(
    x: &[S],
    w: &[S],
    dy: &[S],
    g: &ConvGeometry,
    dx: Option<&mut [S]>,
    dw: &mut [S],
    db: &mut [S],
) {
    let n = x.len() / g.in_len();
    assert_eq!(dy.len(), n * g.out_len());
    let plane = g.out_h() * g.out_w();
    let patch = g.patch_len();
    let n_chunks = n.div_ceil(CHUNK);
    let dx_chunks: Vec<Option<&mut [S]>> = match dx {
        Some(dx) => dx.chunks_mut(CHUNK * g.in_len()).map(Some).collect(),
        None => (0..n_chunks).map(|_| None).collect(),
    };
    let partials: Vec<(Vec<S>, Vec<S>)> = dx_chunks
        .into_par_iter()
        .enumerate()
        .map(|(chunk, dx_chunk)| {
            let first = chunk * CHUNK;
            let images = CHUNK.min(n - first);
            let row_len = images * plane;
            let mut cols = vec![S::zero(); patch * row_len];
            // dY of the chunk as K x (image, position), the layout of the forward product.
            let mut dy_chunk = vec![S::zero(); g.out_channels * row_len];
            let mut db_part = vec![S::zero(); g.out_channels];
            for j in 0..images {
                let image = first + j;
                im2col(
                    &x[image * g.in_len()..][..g.in_len()],
                    g,
                    &mut cols,
                    row_len,
                    j * plane,
                );
                let dy_image = &dy[image * g.out_len()..][..g.out_len()];
                for (k, dy_plane) in dy_image.chunks(plane).enumerate() {
                    dy_chunk[k * row_len + j * plane..][..plane].copy_from_slice(dy_plane);
                    db_part[k] = db_part[k] + dy_plane.iter().copied().sum::<S>();
                }
            }
            // dW = dY (K x R) * cols^T (R x CKK)
            let mut dw_part = vec![S::zero(); g.weight_len()];
            gemm(
                S::one(),
                MatRef::row_major(&dy_chunk, g.out_channels, row_len),
                MatRef::row_major(&cols, patch, row_len).t(),
                S::zero(),
                &mut dw_part,
            );
            if let Some(dx_chunk) = dx_chunk {
                // dcols = W^T (CKK x K) * dY (K x R), then fold each image back.
                gemm(
                    S::one(),
                    MatRef::row_major(w, g.out_channels, patch).t(),
                    MatRef::row_major(&dy_chunk, g.out_channels, row_len),
                    S::zero(),
                    &mut cols,
                );
                for (j, dx_image) in dx_chunk.chunks_mut(g.in_len()).enumerate() {
                    col2im(&cols, g, dx_image, row_len, j * plane);
                }
            }
            (dw_part, db_part)
        })
        .collect();
    dw.fill(S::zero());
    db.fill(S::zero());
    for (dw_part, db_part) in partials {
        for (total, part) in dw.iter_mut().zip(dw_part) {
            *total = *total + part;
        }
        for (total, part) in db.iter_mut().zip(db_part) {
            *total = *total + part;
        }
    }
}

/// The deconvnet's filtering step (§2.1): maps a reconstruction at a conv layer's *output*
/// (N x K x OH x OW) back to its *input* space (N x C x H x W) with the transposed filters —
/// exactly the input-gradient computation of [`conv_backward`], without biases.
pub fn conv_transpose<S: Scalar>(y: &[S], w: &[S], g: &ConvGeometry, x: &mut [S]) {
    let plane = g.out_h() * g.out_w();
    transpose_by_columns(y, g, x, |y_image, cols| {
        gemm(
            S::one(),
            MatRef::row_major(w, g.out_channels, g.patch_len()).t(),
            MatRef::row_major(y_image, g.out_channels, plane),
            S::zero(),
            cols,
        );
    });
}

/// The driver of a transposed convolution by columns, whatever computes them: per image (in
/// parallel), `columns(y_image, cols)` fills the (C k k) x (OH OW) matrix `W^T y_image`, and
/// [`col2im`] folds it into `x_image` (overwritten).
pub fn transpose_by_columns<S: Scalar>(
    y: &[S],
    g: &ConvGeometry,
    x: &mut [S],
    columns: impl Fn(&[S], &mut [S]) + Sync,
) {
    let n = y.len() / g.out_len();
    assert_eq!(x.len(), n * g.in_len());
    let plane = g.out_h() * g.out_w();
    x.par_chunks_mut(g.in_len())
        .zip(y.par_chunks(g.out_len()))
        .for_each_init(
            || vec![S::zero(); g.patch_len() * plane],
            |cols, (x_image, y_image)| {
                columns(y_image, cols);
                col2im(cols, g, x_image, plane, 0);
            },
        );
}
