//! Fully connected layers (`y = x W^T + b`, W stored OUT x IN) on every [`CpuPath`], in a
//! fixed arithmetic.
//!
//! **Forward** by blocked dot products: both operands are read along their rows, as stored,
//! so the weights — 151 MB for the full net's fc6 — are streamed once per call and never
//! packed (a GEMM library copies all of W into its panel format on every call, which at the
//! small batches of inference costs more than the arithmetic). A task takes 4 output units
//! and walks the batch 4 images at a time. Each dot product is 16 lanes — lane `l` a chain of
//! fused multiply-adds over inputs `l, l + 16, l + 32, ...` from +0, the tail padded with
//! zeros — added in [`reduce16`]'s tree, whatever the vector width that computes the lanes
//! (one 16-float register, two of 8, or an array).
//!
//! **Backward** on the panel [`gemm`]: `dW = dY^T X` (each weight's gradient one chain over
//! the batch in order), `dX = dY W` (each input's gradient one chain over the output units);
//! `db` is a plain sum over the batch in order.

use rayon::prelude::*;

use super::microkernel::{gemm, pack_panels};
use super::path::{CpuPath, reduce16};

/// Output units per task (rows of W sharing each load of x).
const UNITS: usize = 4;
/// Images per inner step (rows of x sharing each load of W).
const IMAGES: usize = 4;
/// Lanes of every dot product.
const LANES: usize = 16;

/// `y` (N x OUT) = `x` (N x IN) W^T (`w`: OUT x IN) + `b`, on `path`.
pub fn linear_forward(
    path: CpuPath,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    n_in: usize,
    n_out: usize,
    y: &mut [f32],
) {
    assert!(path.supported(), "{path} is not supported by this CPU");
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
                let lanes = dot_lanes(path, &w_rows, &x_rows, n_in);
                for u in 0..units {
                    for i in 0..images {
                        yt_block[u * n + image + i] = reduce16(lanes[u][i]) + b[first + u];
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

/// The 16 lanes of the UNITS x IMAGES dot products of `w_rows` with `x_rows` (each `len`).
fn dot_lanes(
    path: CpuPath,
    w_rows: &[&[f32]; UNITS],
    x_rows: &[&[f32]; IMAGES],
    len: usize,
) -> [[[f32; LANES]; IMAGES]; UNITS] {
    assert!(w_rows.iter().chain(x_rows).all(|row| row.len() >= len));
    match path {
        // SAFETY: the path is supported (checked by the caller); every row holds len floats.
        #[cfg(target_arch = "x86_64")]
        CpuPath::Avx512 => unsafe { x86::avx512(w_rows, x_rows, len) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        CpuPath::Avx2 => unsafe { x86::avx2(w_rows, x_rows, len) },
        _ => portable(w_rows, x_rows, len),
    }
}

fn portable(
    w_rows: &[&[f32]; UNITS],
    x_rows: &[&[f32]; IMAGES],
    len: usize,
) -> [[[f32; LANES]; IMAGES]; UNITS] {
    let mut acc = [[[0.0f32; LANES]; IMAGES]; UNITS];
    let mut add = |ws: [&[f32]; UNITS], xs: [&[f32]; IMAGES]| {
        for (acc_row, wv) in acc.iter_mut().zip(ws) {
            for (lanes, xv) in acc_row.iter_mut().zip(xs) {
                for ((sum, &wl), &xl) in lanes.iter_mut().zip(wv).zip(xv) {
                    *sum = wl.mul_add(xl, *sum);
                }
            }
        }
    };
    let full = len / LANES * LANES;
    for at in (0..full).step_by(LANES) {
        add(
            w_rows.map(|row| &row[at..at + LANES]),
            x_rows.map(|row| &row[at..at + LANES]),
        );
    }
    if full < len {
        // The tail zero-padded to 16 lanes, as the vector paths' masked loads read it.
        let pad = |row: &[f32]| -> [f32; LANES] {
            let mut lanes = [0.0f32; LANES];
            lanes[..len - full].copy_from_slice(&row[full..len]);
            lanes
        };
        let (ws, xs) = (w_rows.map(pad), x_rows.map(pad));
        add(ws.each_ref().map(|l| &l[..]), xs.each_ref().map(|l| &l[..]));
    }
    acc
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{IMAGES, LANES, UNITS};

    /// The 16 lanes in one register per dot product; the tail by masked (zeroing) loads.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512(
        w_rows: &[&[f32]; UNITS],
        x_rows: &[&[f32]; IMAGES],
        len: usize,
    ) -> [[[f32; LANES]; IMAGES]; UNITS] {
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
        acc.map(|row| {
            row.map(|sum| {
                let mut lanes = [0.0f32; LANES];
                // SAFETY: 16 floats to a local array.
                unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), sum) };
                lanes
            })
        })
    }

    /// Lanes 0-7 and 8-15 in two registers per dot product; the tail by masked loads
    /// (masked lanes read as 0, as on AVX-512). AVX2 has 16 registers, so the block is done
    /// 2 units x 2 images at a time (8 accumulators); each lane's chain is the same.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2(
        w_rows: &[&[f32]; UNITS],
        x_rows: &[&[f32]; IMAGES],
        len: usize,
    ) -> [[[f32; LANES]; IMAGES]; UNITS] {
        const SUB: usize = 2;
        let mut out = [[[0.0f32; LANES]; IMAGES]; UNITS];
        let tail: [i32; 8] = std::array::from_fn(|l| if l < len % 8 { -1 } else { 0 });
        // SAFETY: 8 i32 from a local array.
        let tail_mask = unsafe { _mm256_loadu_si256(tail.as_ptr().cast()) };
        let load = |p: *const f32, from: usize| -> __m256 {
            // SAFETY: a full load reads elements from .. from + 8 <= len; a masked load reads
            // only the lanes below len.
            unsafe {
                if from + 8 <= len {
                    _mm256_loadu_ps(p.add(from))
                } else if from < len {
                    _mm256_maskload_ps(p.add(from), tail_mask)
                } else {
                    _mm256_setzero_ps()
                }
            }
        };
        for first_unit in (0..UNITS).step_by(SUB) {
            for first_image in (0..IMAGES).step_by(SUB) {
                let w_ptrs: [*const f32; SUB] =
                    std::array::from_fn(|u| w_rows[first_unit + u].as_ptr());
                let x_ptrs: [*const f32; SUB] =
                    std::array::from_fn(|i| x_rows[first_image + i].as_ptr());
                let mut acc = [[[_mm256_setzero_ps(); 2]; SUB]; SUB];
                let mut at = 0;
                while at < len {
                    let ws = w_ptrs.map(|p| [load(p, at), load(p, at + 8)]);
                    let xs = x_ptrs.map(|p| [load(p, at), load(p, at + 8)]);
                    for (acc_row, wv) in acc.iter_mut().zip(&ws) {
                        for (sums, xv) in acc_row.iter_mut().zip(&xs) {
                            sums[0] = _mm256_fmadd_ps(wv[0], xv[0], sums[0]);
                            sums[1] = _mm256_fmadd_ps(wv[1], xv[1], sums[1]);
                        }
                    }
                    at += 16;
                }
                for (u, acc_row) in acc.iter().enumerate() {
                    for (i, sums) in acc_row.iter().enumerate() {
                        let lanes = &mut out[first_unit + u][first_image + i];
                        // SAFETY: 2 x 8 floats into an array of 16.
                        unsafe {
                            _mm256_storeu_ps(lanes.as_mut_ptr(), sums[0]);
                            _mm256_storeu_ps(lanes.as_mut_ptr().add(8), sums[1]);
                        }
                    }
                }
            }
        }
        out
    }
}

/// Gradients of [`linear_forward`] on `path`: `dw` (OUT x IN) and `db` overwritten with batch
/// sums; `dx` (N x IN) with the input gradient when wanted.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    path: CpuPath,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    n_in: usize,
    n_out: usize,
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: &mut [f32],
) {
    let n = x.len() / n_in;
    assert_eq!(x.len(), n * n_in);
    assert_eq!(dy.len(), n * n_out);
    assert_eq!(
        (w.len(), dw.len(), db.len()),
        (n_out * n_in, n_out * n_in, n_out)
    );
    // dW (OUT x IN) = dY^T (OUT x N) X (N x IN): A's row o is column o of dY.
    let dy_t = pack_panels(dy, n_out, n, 1, n_out);
    gemm(path, true, (n_out, n, n_in), &dy_t, x, n_in, dw, n_in);
    for (o, total) in db.iter_mut().enumerate() {
        *total = (0..n).map(|i| dy[i * n_out + o]).sum();
    }
    if let Some(dx) = dx {
        assert_eq!(dx.len(), n * n_in);
        // dX (N x IN) = dY (N x OUT) W (OUT x IN).
        let dy_rows = pack_panels(dy, n, n_out, n_out, 1);
        gemm(path, true, (n, n_out, n_in), &dy_rows, w, n_in, dx, n_in);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(len: usize, state: &mut u64) -> Vec<f32> {
        (0..len)
            .map(|_| {
                *state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                ((*state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    /// Same outputs as the generic GEMM reference (to rounding) for batches and widths that
    /// are not multiples of the blocks, the same bits on every path, and the same value for
    /// an image whatever its batch.
    #[test]
    fn forward_equals_the_reference_on_every_path_and_does_not_depend_on_the_batch() {
        let mut state = 3u64;
        for (n, n_in, n_out) in [
            (16, 576, 512),
            (5, 37, 7),
            (1, 16, 3),
            (9, 300, 10),
            (3, 8, 2),
        ] {
            let x = random(n * n_in, &mut state);
            let w = random(n_out * n_in, &mut state);
            let b = random(n_out, &mut state);
            let mut expected = vec![0.0f32; n * n_out];
            super::super::linear::linear_forward(&x, &w, &b, n_in, n_out, &mut expected);
            let mut first: Option<Vec<u32>> = None;
            for path in CpuPath::supported_paths() {
                let mut y = vec![f32::NAN; n * n_out];
                linear_forward(path, &x, &w, &b, n_in, n_out, &mut y);
                for (&got, &want) in y.iter().zip(&expected) {
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{path}: {got} vs {want}"
                    );
                }
                match &first {
                    None => first = Some(bits(&y)),
                    Some(first) => assert_eq!(first, &bits(&y), "{path} ({n}, {n_in}, {n_out})"),
                }
                // The last image alone gives bit-identical outputs.
                let mut alone = vec![0.0f32; n_out];
                linear_forward(path, &x[(n - 1) * n_in..], &w, &b, n_in, n_out, &mut alone);
                assert_eq!(alone, y[(n - 1) * n_out..]);
            }
        }
    }

    /// The gradients equal the generic reference's to rounding and are the same bits on
    /// every path.
    #[test]
    fn backward_equals_the_reference_and_is_the_same_on_every_path() {
        let mut state = 5u64;
        for (n, n_in, n_out) in [(16, 576, 100), (5, 37, 7), (1, 16, 3), (9, 300, 10)] {
            let x = random(n * n_in, &mut state);
            let w = random(n_out * n_in, &mut state);
            let dy = random(n * n_out, &mut state);
            let (mut dx_want, mut dw_want, mut db_want) = (
                vec![0.0f32; n * n_in],
                vec![0.0f32; n_out * n_in],
                vec![0.0f32; n_out],
            );
            super::super::linear::linear_backward(
                &x,
                &w,
                &dy,
                n_in,
                n_out,
                Some(&mut dx_want),
                &mut dw_want,
                &mut db_want,
            );
            let mut first: Option<Vec<u32>> = None;
            for path in CpuPath::supported_paths() {
                let (mut dx, mut dw, mut db) = (
                    vec![f32::NAN; n * n_in],
                    vec![f32::NAN; n_out * n_in],
                    vec![f32::NAN; n_out],
                );
                linear_backward(
                    path,
                    &x,
                    &w,
                    &dy,
                    n_in,
                    n_out,
                    Some(&mut dx),
                    &mut dw,
                    &mut db,
                );
                for (got, want) in [(&dx, &dx_want), (&dw, &dw_want), (&db, &db_want)] {
                    for (&g, &v) in got.iter().zip(want.iter()) {
                        assert!(
                            (g - v).abs() <= 1e-4 * (1.0 + v.abs()),
                            "{path}: {g} vs {v}"
                        );
                    }
                }
                let all: Vec<u32> = [bits(&dx), bits(&dw), bits(&db)].concat();
                match &first {
                    None => first = Some(all),
                    Some(first) => assert_eq!(first, &all, "{path} ({n}, {n_in}, {n_out})"),
                }
            }
        }
    }
}
