//! Max pooling that records its switches (§2.1): "the locations of the maxima within each
//! pooling region", which the deconvnet's unpooling needs.
//!
//! Switches are flat indices into each input plane (`y * W + x`). Ties go to the first maximum
//! in row-major scan order, so switches are deterministic; a NaN propagates (as in PyTorch). Backward and unpooling are the same
//! operation: each output value goes back to its switch location, everything else is zero.

use rayon::prelude::*;

use crate::geometry::PoolGeometry;
use crate::scalar::Scalar;

/// The maximum of output `(oy, ox)`'s window and its flat index in the plane. NaN wins, so
/// that a diverged network shows as NaN; branch-free (selects, not jumps): maxima are
/// unpredictable.
#[inline]
fn window_max<S: Scalar>(x_plane: &[S], g: &PoolGeometry, oy: usize, ox: usize) -> (S, u32) {
    let (y0, x0) = (oy * g.stride, ox * g.stride);
    let (y1, x1) = ((y0 + g.size).min(g.in_h), (x0 + g.size).min(g.in_w));
    let mut best = y0 * g.in_w + x0;
    let mut best_value = x_plane[best];
    for iy in y0..y1 {
        let row = &x_plane[iy * g.in_w..][..x1];
        for (ix, &value) in row.iter().enumerate().skip(x0) {
            let take = (value > best_value) | value.is_nan();
            best_value = if take { value } else { best_value };
            best = if take { iy * g.in_w + ix } else { best };
        }
    }
    (best_value, best as u32)
}

/// Forward: `y` and `switches` are N x C x OH x OW.
pub fn max_pool<S: Scalar>(x: &[S], g: &PoolGeometry, y: &mut [S], switches: &mut [u32]) {
    for_each_plane(x, g, y, switches, |x_plane, y_plane, s_plane| {
        let ow = g.out_w();
        for (at, (out, switch)) in y_plane.iter_mut().zip(s_plane.iter_mut()).enumerate() {
            (*out, *switch) = window_max(x_plane, g, at / ow, at % ow);
        }
    });
}

/// f32 forward on the selected path: 3x3 stride-2 windows (every pool of the ZF nets) 16
/// outputs at a time with AVX-512, 8 with AVX2, else [`max_pool`]. Same values and switches.
pub fn max_pool_f32(x: &[f32], g: &PoolGeometry, y: &mut [f32], switches: &mut [u32]) {
    max_pool_f32_on(super::selected(), x, g, y, switches);
}

/// [`max_pool_f32`] on `path` (which this CPU must support).
pub fn max_pool_f32_on(
    path: super::CpuPath,
    x: &[f32],
    g: &PoolGeometry,
    y: &mut [f32],
    switches: &mut [u32],
) {
    assert!(path.supported(), "{path} is not supported by this CPU");
    #[cfg(target_arch = "x86_64")]
    if g.size == 3 && g.stride == 2 {
        match path {
            super::CpuPath::Avx512 => {
                return for_each_plane(x, g, y, switches, |x_plane, y_plane, s_plane| {
                    // SAFETY: AVX-512F checked above; the planes have the geometry's sizes.
                    unsafe { avx512::pool_plane_3x3_stride2(x_plane, g, y_plane, s_plane) }
                });
            }
            super::CpuPath::Avx2 => {
                return for_each_plane(x, g, y, switches, |x_plane, y_plane, s_plane| {
                    // SAFETY: AVX2 checked above; the planes have the geometry's sizes.
                    unsafe { avx2::pool_plane_3x3_stride2(x_plane, g, y_plane, s_plane) }
                });
            }
            super::CpuPath::Portable => {}
        }
    }
    max_pool(x, g, y, switches);
}

/// Runs `pool_plane(x_plane, y_plane, switch_plane)` on every plane, in parallel over images
/// (one plane is too little work per task).
fn for_each_plane<S: Scalar>(
    x: &[S],
    g: &PoolGeometry,
    y: &mut [S],
    switches: &mut [u32],
    pool_plane: impl Fn(&[S], &mut [S], &mut [u32]) + Sync,
) {
    let in_plane = g.in_h * g.in_w;
    let out_plane = g.out_h() * g.out_w();
    y.par_chunks_mut(g.out_len())
        .zip(switches.par_chunks_mut(g.out_len()))
        .zip(x.par_chunks(g.in_len()))
        .for_each(|((y_image, s_image), x_image)| {
            for ((y_plane, s_plane), x_plane) in y_image
                .chunks_mut(out_plane)
                .zip(s_image.chunks_mut(out_plane))
                .zip(x_image.chunks(in_plane))
            {
                pool_plane(x_plane, y_plane, s_plane);
            }
        });
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::window_max;
    use crate::geometry::PoolGeometry;

    /// One plane of 3x3 stride-2 pooling: full windows 16 outputs at a time (the window's
    /// three columns are the even, odd and next even elements of two 16-float loads), the
    /// partial windows of ceil mode (last row, last column) one at a time. The scan order and
    /// the comparison are [`window_max`]'s, so values and switches are identical.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn pool_plane_3x3_stride2(
        x_plane: &[f32],
        g: &PoolGeometry,
        y_plane: &mut [f32],
        s_plane: &mut [u32],
    ) {
        let (oh, ow) = (g.out_h(), g.out_w());
        let full = |len: usize| if len >= 3 { (len - 3) / 2 + 1 } else { 0 };
        let (full_rows, full_cols) = (full(g.in_h), full(g.in_w));
        let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odds = _mm512_add_epi32(evens, _mm512_set1_epi32(1));
        let base = x_plane.as_ptr();
        for oy in 0..full_rows {
            let mut ox = 0;
            while ox < full_cols {
                let count = (full_cols - ox).min(16);
                let out_mask: __mmask16 = if count == 16 { !0 } else { (1 << count) - 1 };
                // Inputs 2 ox .. 2 ox + 2 count + 1 of each row (within the row).
                let span = 2 * count + 1;
                let mask = |from: usize| -> __mmask16 {
                    let n = span.saturating_sub(from).min(16);
                    if n == 16 { !0 } else { (1u32 << n) as u16 - 1 }
                };
                let mut best = _mm512_setzero_ps();
                let mut best_index = _mm512_setzero_si512();
                for dy in 0..3 {
                    let row = (2 * oy + dy) * g.in_w;
                    // SAFETY: masked loads touch only elements 2 ox .. 2 ox + span of this
                    // row, all inside the plane.
                    let (lo, hi, lo2, hi2) = unsafe {
                        let p = base.add(row + 2 * ox);
                        (
                            _mm512_maskz_loadu_ps(mask(0), p),
                            _mm512_maskz_loadu_ps(mask(16), p.add(16)),
                            _mm512_maskz_loadu_ps(mask(2), p.add(2)),
                            _mm512_maskz_loadu_ps(mask(18), p.add(18)),
                        )
                    };
                    let columns = [
                        _mm512_permutex2var_ps(lo, evens, hi),
                        _mm512_permutex2var_ps(lo, odds, hi),
                        _mm512_permutex2var_ps(lo2, evens, hi2),
                    ];
                    for (dx, value) in columns.into_iter().enumerate() {
                        let index =
                            _mm512_add_epi32(_mm512_set1_epi32((row + 2 * ox + dx) as i32), evens);
                        if dy == 0 && dx == 0 {
                            (best, best_index) = (value, index);
                            continue;
                        }
                        let take = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(value, best)
                            | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(value, value);
                        best = _mm512_mask_mov_ps(best, take, value);
                        best_index = _mm512_mask_mov_epi32(best_index, take, index);
                    }
                }
                let at = oy * ow + ox;
                // SAFETY: outputs at .. at + count lie in row oy of the output planes.
                unsafe {
                    _mm512_mask_storeu_ps(y_plane.as_mut_ptr().add(at), out_mask, best);
                    _mm512_mask_storeu_epi32(
                        s_plane.as_mut_ptr().add(at).cast(),
                        out_mask,
                        best_index,
                    );
                }
                ox += count;
            }
            for ox in full_cols..ow {
                (y_plane[oy * ow + ox], s_plane[oy * ow + ox]) = window_max(x_plane, g, oy, ox);
            }
        }
        for oy in full_rows..oh {
            for ox in 0..ow {
                (y_plane[oy * ow + ox], s_plane[oy * ow + ox]) = window_max(x_plane, g, oy, ox);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::window_max;
    use crate::geometry::PoolGeometry;

    /// One plane of 3x3 stride-2 pooling, full windows 8 outputs at a time: each of the 9
    /// taps is a masked gather of every other input; the partial windows of ceil mode one at
    /// a time. The scan order and the comparison are [`window_max`]'s, so values and switches
    /// are identical.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn pool_plane_3x3_stride2(
        x_plane: &[f32],
        g: &PoolGeometry,
        y_plane: &mut [f32],
        s_plane: &mut [u32],
    ) {
        let (oh, ow) = (g.out_h(), g.out_w());
        let full = |len: usize| if len >= 3 { (len - 3) / 2 + 1 } else { 0 };
        let (full_rows, full_cols) = (full(g.in_h), full(g.in_w));
        let evens = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let base = x_plane.as_ptr();
        for oy in 0..full_rows {
            let mut ox = 0;
            while ox < full_cols {
                let count = (full_cols - ox).min(8);
                // Lanes below `count`: all ones.
                let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(count as i32), lanes);
                let mut best = _mm256_setzero_ps();
                let mut best_index = _mm256_setzero_si256();
                for dy in 0..3 {
                    let row = (2 * oy + dy) * g.in_w;
                    for dx in 0..3 {
                        let index =
                            _mm256_add_epi32(_mm256_set1_epi32((row + 2 * ox + dx) as i32), evens);
                        // SAFETY: unmasked lanes read inputs 2 (ox + lane) + dx of row 2 oy + dy
                        // of a full window: inside the plane; masked lanes are not read.
                        let value = unsafe {
                            _mm256_mask_i32gather_ps::<4>(
                                _mm256_setzero_ps(),
                                base,
                                index,
                                _mm256_castsi256_ps(mask),
                            )
                        };
                        if dy == 0 && dx == 0 {
                            (best, best_index) = (value, index);
                            continue;
                        }
                        let take = _mm256_or_ps(
                            _mm256_cmp_ps::<_CMP_GT_OQ>(value, best),
                            _mm256_cmp_ps::<_CMP_UNORD_Q>(value, value),
                        );
                        best = _mm256_blendv_ps(best, value, take);
                        best_index = _mm256_castps_si256(_mm256_blendv_ps(
                            _mm256_castsi256_ps(best_index),
                            _mm256_castsi256_ps(index),
                            take,
                        ));
                    }
                }
                let at = oy * ow + ox;
                // SAFETY: outputs at .. at + count lie in row oy of the output planes; masked
                // lanes are not written.
                unsafe {
                    _mm256_maskstore_ps(y_plane.as_mut_ptr().add(at), mask, best);
                    _mm256_maskstore_epi32(s_plane.as_mut_ptr().add(at).cast(), mask, best_index);
                }
                ox += count;
            }
            for ox in full_cols..ow {
                (y_plane[oy * ow + ox], s_plane[oy * ow + ox]) = window_max(x_plane, g, oy, ox);
            }
        }
        for oy in full_rows..oh {
            for ox in 0..ow {
                (y_plane[oy * ow + ox], s_plane[oy * ow + ox]) = window_max(x_plane, g, oy, ox);
            }
        }
    }
}

/// Places each value of `y` (N x C x OH x OW) at its switch in `x` (N x C x H x W, zeroed
/// first). This is both max-pool backward and the deconvnet's unpooling.
pub fn unpool<S: Scalar>(y: &[S], switches: &[u32], g: &PoolGeometry, x: &mut [S]) {
    let in_plane = g.in_h * g.in_w;
    let out_plane = g.out_h() * g.out_w();
    x.par_chunks_mut(g.in_len())
        .zip(y.par_chunks(g.out_len()))
        .zip(switches.par_chunks(g.out_len()))
        .flat_map_iter(|((x_image, y_image), s_image)| {
            x_image
                .chunks_mut(in_plane)
                .zip(y_image.chunks(out_plane))
                .zip(s_image.chunks(out_plane))
        })
        .for_each(|((x_plane, y_plane), s_plane)| {
            x_plane.fill(S::zero());
            for (value, &switch) in y_plane.iter().zip(s_plane) {
                // Overlapping windows (3x3 stride 2) can share a maximum: gradients add up.
                x_plane[switch as usize] = x_plane[switch as usize] + *value;
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path gives the scalar path's values and switches, ties and NaNs included, for
    /// planes whose sides are odd, even, smaller than a window and wider than 16 windows.
    #[test]
    fn every_path_pools_as_the_scalar_pool_with_ties_and_nans() {
        let mut state = 11u64;
        for (h, w) in [
            (28, 28),
            (14, 14),
            (7, 7),
            (110, 110),
            (26, 27),
            (3, 5),
            (2, 2),
            (9, 70),
        ] {
            let g = PoolGeometry {
                channels: 3,
                in_h: h,
                in_w: w,
                size: 3,
                stride: 2,
            };
            let images = 2;
            let x: Vec<f32> = (0..images * g.in_len())
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    match (state >> 33) % 50 {
                        0 => f32::NAN,
                        v => (v % 7) as f32, // many ties
                    }
                })
                .collect();
            let out = images * g.out_len();
            let (mut y, mut s) = (vec![0.0f32; out], vec![0u32; out]);
            max_pool(&x, &g, &mut y, &mut s);
            for path in super::super::CpuPath::supported_paths() {
                let (mut y_fast, mut s_fast) = (vec![0.0f32; out], vec![0u32; out]);
                max_pool_f32_on(path, &x, &g, &mut y_fast, &mut s_fast);
                assert_eq!(s, s_fast, "{path}: switches of {h}x{w}");
                for (a, b) in y.iter().zip(&y_fast) {
                    assert!(
                        a == b || (a.is_nan() && b.is_nan()),
                        "{path}: values of {h}x{w}"
                    );
                }
            }
        }
    }
}
