//! Fully connected forward (`y = x W^T + b`) as blocked dot products with AVX-512: the CPU
//! backend's f32 path on x86_64 CPUs with AVX-512F (others use
//! [`super::linear::linear_forward`]).
//!
//! Both operands are read along their rows, as stored (W is OUT x IN, x is N x IN), so the
//! weights — 151 MB for the full net's fc6 — are streamed once per call and never packed: a
//! GEMM library copies all of W into its panel format on every call, which at the small
//! batches of inference costs more than the arithmetic. A task takes 4 output units and
//! walks the batch 4 images at a time, keeping 16 accumulators (4 x 4 dot products, 16
//! lanes each) in registers.
//!
//! Each output is one dot product summed in a fixed order (16 lane sums along IN, then one
//! horizontal reduction), whatever the batch size, the thread count or the image's place
//! in the batch.

use std::arch::x86_64::*;

use rayon::prelude::*;

/// Output units per task (rows of W sharing each load of x).
const UNITS: usize = 4;
/// Images per inner step (rows of x sharing each load of W).
const IMAGES: usize = 4;

/// Whether this CPU runs this path.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// `y` (N x OUT) = `x` (N x IN) W^T (`w`: OUT x IN) + `b`. Needs AVX-512F.
pub fn linear_forward(x: &[f32], w: &[f32], b: &[f32], n_in: usize, n_out: usize, y: &mut [f32]) {
    assert!(
        available(),
        "the dot-product fully connected path needs AVX-512F"
    );
    let n = x.len() / n_in;
    assert_eq!(x.len(), n * n_in);
    assert_eq!(w.len(), n_out * n_in);
    assert_eq!(y.len(), n * n_out);
    if n == 0 {
        return;
    }
    // y^T by blocks of UNITS output units, then transposed into y.
    let mut yt = vec![0.0f32; n_out * n];
    yt.par_chunks_mut(UNITS * n)
        .enumerate()
        .for_each(|(block, yt_block)| {
            let first = block * UNITS;
            let units = yt_block.len() / n;
            // Rows past the last unit repeat it; their sums are dropped.
            let w_rows: [&[f32]; UNITS] =
                std::array::from_fn(|u| &w[(first + u.min(units - 1)) * n_in..][..n_in]);
            let mut image = 0;
            while image < n {
                let images = IMAGES.min(n - image);
                let x_rows: [&[f32]; IMAGES] =
                    std::array::from_fn(|i| &x[(image + i.min(images - 1)) * n_in..][..n_in]);
                // SAFETY: AVX-512F checked above; every row holds n_in floats.
                let sums = unsafe { dot_block(&w_rows, &x_rows, n_in) };
                for u in 0..units {
                    for i in 0..images {
                        yt_block[u * n + image + i] = sums[u][i] + b[first + u];
                    }
                }
                image += images;
            }
        });
    for (o, column) in yt.chunks(n).enumerate() {
        for (row, &value) in column.iter().enumerate() {
            y[row * n_out + o] = value;
        }
    }
}

/// The UNITS x IMAGES dot products of `w_rows` with `x_rows` (each `len` floats).
#[target_feature(enable = "avx512f")]
unsafe fn dot_block(
    w_rows: &[&[f32]; UNITS],
    x_rows: &[&[f32]; IMAGES],
    len: usize,
) -> [[f32; IMAGES]; UNITS] {
    let mut acc = [[_mm512_setzero_ps(); IMAGES]; UNITS];
    let w_ptrs = w_rows.map(<[f32]>::as_ptr);
    let x_ptrs = x_rows.map(<[f32]>::as_ptr);
    let mut at = 0;
    while at < len {
        let left = len - at;
        let mask: __mmask16 = if left >= 16 { !0 } else { (1 << left) - 1 };
        // SAFETY: masked loads read only elements at .. at + 16 that are < len.
        let (ws, xs) = unsafe {
            (
                w_ptrs.map(|p| _mm512_maskz_loadu_ps(mask, p.add(at))),
                x_ptrs.map(|p| _mm512_maskz_loadu_ps(mask, p.add(at))),
            )
        };
        for (acc_row, &wv) in acc.iter_mut().zip(&ws) {
            for (sum, &xv) in acc_row.iter_mut().zip(&xs) {
                *sum = _mm512_fmadd_ps(wv, xv, *sum);
            }
        }
        at += 16;
    }
    acc.map(|row| row.map(|sum| _mm512_reduce_add_ps(sum)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Same outputs as the GEMM path (to rounding) for batches and widths that are not
    /// multiples of the blocks, and the same value for an image whatever its batch.
    #[test]
    fn dot_product_path_equals_gemm_path_and_does_not_depend_on_the_batch() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512F (the GEMM path is used instead)");
            return;
        }
        let mut state = 3u64;
        let mut random = |len: usize| -> Vec<f32> {
            (0..len)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
                })
                .collect()
        };
        for (n, n_in, n_out) in [(16, 576, 512), (5, 37, 7), (1, 16, 3), (9, 300, 10)] {
            let x = random(n * n_in);
            let w = random(n_out * n_in);
            let b = random(n_out);
            let mut expected = vec![0.0f32; n * n_out];
            super::super::linear::linear_forward(&x, &w, &b, n_in, n_out, &mut expected);
            let mut y = vec![f32::NAN; n * n_out];
            linear_forward(&x, &w, &b, n_in, n_out, &mut y);
            for (&got, &want) in y.iter().zip(&expected) {
                assert!(
                    (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "{got} vs {want}"
                );
            }
            // The last image alone gives bit-identical outputs.
            let mut alone = vec![0.0f32; n_out];
            linear_forward(&x[(n - 1) * n_in..], &w, &b, n_in, n_out, &mut alone);
            assert_eq!(alone, y[(n - 1) * n_out..]);
        }
    }
}
