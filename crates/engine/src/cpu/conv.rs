//! Convolution by im2col + GEMM, forward and backward, and the deconvnet's transposed
//! filtering (§2.1: "the deconvnet uses transposed versions of the same filters").
//!
//! Images of a batch are processed in parallel (rayon), each with single-threaded GEMMs, so the
//! 2 cores are never oversubscribed. Weight gradients are summed per fixed chunk of
//! [`CHUNK`] images and the chunk partials added in chunk order: the result is bit-identical
//! whatever the number of threads.

use rayon::prelude::*;

use crate::geometry::ConvGeometry;
use crate::scalar::{MatRef, Scalar, gemm};

/// Images per weight-gradient partial sum (fixed, so reductions do not depend on threads).
pub const CHUNK: usize = 4;

/// Unfolds one image (C x H x W) into `cols` ((C k k) x (OH OW)); out-of-image taps are 0.
pub fn im2col<S: Scalar>(x: &[S], g: &ConvGeometry, cols: &mut [S]) {
    let (oh, ow) = (g.out_h(), g.out_w());
    let plane = oh * ow;
    debug_assert_eq!(cols.len(), g.patch_len() * plane);
    for c in 0..g.in_channels {
        let x_plane = &x[c * g.in_h * g.in_w..][..g.in_h * g.in_w];
        for ki in 0..g.kernel {
            for kj in 0..g.kernel {
                let row = (c * g.kernel + ki) * g.kernel + kj;
                let out = &mut cols[row * plane..][..plane];
                for oy in 0..oh {
                    let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                    let out_row = &mut out[oy * ow..][..ow];
                    if iy < 0 || iy >= g.in_h as isize {
                        out_row.fill(S::zero());
                        continue;
                    }
                    let x_row = &x_plane[iy as usize * g.in_w..][..g.in_w];
                    for (ox, value) in out_row.iter_mut().enumerate() {
                        let ix = (ox * g.stride + kj) as isize - g.pad as isize;
                        *value = if ix < 0 || ix >= g.in_w as isize {
                            S::zero()
                        } else {
                            x_row[ix as usize]
                        };
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds each column entry back into the image position it came
/// from. `dx` is overwritten.
pub fn col2im<S: Scalar>(cols: &[S], g: &ConvGeometry, dx: &mut [S]) {
    let (oh, ow) = (g.out_h(), g.out_w());
    let plane = oh * ow;
    dx.fill(S::zero());
    for c in 0..g.in_channels {
        let dx_plane = &mut dx[c * g.in_h * g.in_w..][..g.in_h * g.in_w];
        for ki in 0..g.kernel {
            for kj in 0..g.kernel {
                let row = (c * g.kernel + ki) * g.kernel + kj;
                let col = &cols[row * plane..][..plane];
                for oy in 0..oh {
                    let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.in_h as isize {
                        continue;
                    }
                    let dx_row = &mut dx_plane[iy as usize * g.in_w..][..g.in_w];
                    for ox in 0..ow {
                        let ix = (ox * g.stride + kj) as isize - g.pad as isize;
                        if ix >= 0 && ix < g.in_w as isize {
                            dx_row[ix as usize] = dx_row[ix as usize] + col[oy * ow + ox];
                        }
                    }
                }
            }
        }
    }
}

/// y = W * x + b for a batch: `x` is N x C x H x W, `w` is K x C x k x k, `y` is N x K x OH x OW.
pub fn conv_forward<S: Scalar>(x: &[S], w: &[S], b: &[S], g: &ConvGeometry, y: &mut [S]) {
    let n = x.len() / g.in_len();
    assert_eq!(x.len(), n * g.in_len());
    assert_eq!(y.len(), n * g.out_len());
    assert_eq!(w.len(), g.weight_len());
    let plane = g.out_h() * g.out_w();
    y.par_chunks_mut(g.out_len())
        .zip(x.par_chunks(g.in_len()))
        .for_each_init(
            || vec![S::zero(); g.patch_len() * plane],
            |cols, (y_image, x_image)| {
                im2col(x_image, g, cols);
                for (k, y_plane) in y_image.chunks_mut(plane).enumerate() {
                    y_plane.fill(b[k]);
                }
                gemm(
                    S::one(),
                    MatRef::row_major(w, g.out_channels, g.patch_len()),
                    MatRef::row_major(cols, g.patch_len(), plane),
                    S::one(),
                    y_image,
                );
            },
        );
}

/// Gradients of [`conv_forward`]: `dw` and `db` are overwritten with the batch sums; `dx`
/// (when wanted) with the input gradient.
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
    let mut dx_owned;
    let dx: &mut [S] = match dx {
        Some(dx) => dx,
        None => {
            dx_owned = Vec::new();
            &mut dx_owned
        }
    };
    let want_dx = !dx.is_empty();
    let dx_chunks: Vec<Option<&mut [S]>> = if want_dx {
        dx.chunks_mut(CHUNK * g.in_len()).map(Some).collect()
    } else {
        (0..n_chunks).map(|_| None).collect()
    };
    let partials: Vec<(Vec<S>, Vec<S>)> = dx_chunks
        .into_par_iter()
        .enumerate()
        .map(|(chunk, mut dx_chunk)| {
            let mut dw_part = vec![S::zero(); g.weight_len()];
            let mut db_part = vec![S::zero(); g.out_channels];
            let mut cols = vec![S::zero(); patch * plane];
            let first = chunk * CHUNK;
            for image in first..(first + CHUNK).min(n) {
                let x_image = &x[image * g.in_len()..][..g.in_len()];
                let dy_image = &dy[image * g.out_len()..][..g.out_len()];
                im2col(x_image, g, &mut cols);
                // dW += dY (K x P) * cols^T (P x CKK)
                gemm(
                    S::one(),
                    MatRef::row_major(dy_image, g.out_channels, plane),
                    MatRef::row_major(&cols, patch, plane).t(),
                    S::one(),
                    &mut dw_part,
                );
                for (k, dy_plane) in dy_image.chunks(plane).enumerate() {
                    db_part[k] = db_part[k] + dy_plane.iter().copied().sum::<S>();
                }
                if let Some(dx_chunk) = dx_chunk.as_deref_mut() {
                    // dcols = W^T (CKK x K) * dY (K x P), then fold back into the image.
                    gemm(
                        S::one(),
                        MatRef::row_major(w, g.out_channels, patch).t(),
                        MatRef::row_major(dy_image, g.out_channels, plane),
                        S::zero(),
                        &mut cols,
                    );
                    let local = image - first;
                    col2im(&cols, g, &mut dx_chunk[local * g.in_len()..][..g.in_len()]);
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
    let n = y.len() / g.out_len();
    assert_eq!(x.len(), n * g.in_len());
    let plane = g.out_h() * g.out_w();
    x.par_chunks_mut(g.in_len())
        .zip(y.par_chunks(g.out_len()))
        .for_each_init(
            || vec![S::zero(); g.patch_len() * plane],
            |cols, (x_image, y_image)| {
                gemm(
                    S::one(),
                    MatRef::row_major(w, g.out_channels, g.patch_len()).t(),
                    MatRef::row_major(y_image, g.out_channels, plane),
                    S::zero(),
                    cols,
                );
                col2im(cols, g, x_image);
            },
        );
}
