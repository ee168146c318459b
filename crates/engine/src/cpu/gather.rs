//! The implicit GEMM's data movement, per CPU path: gathering a panel's operand from the
//! phase planes (run copies for the forward pass, per-tap gathers for the weight gradient)
//! and copying short runs. Every path moves the same floats; AVX-512 and AVX2 do it with
//! masked vector loads, stores and gathers.

use super::implicit_gemm::Run;
use super::microkernel::NR;
use super::path::CpuPath;

/// Fills the operand (positions x NR) with the given taps of every position: row `r` holds
/// `planes[sources[r] + taps[j]]` for j < taps.len(), zero after. Data movement only: every
/// path fills the same floats.
///
/// # Safety
/// `path` must be supported; every `sources[r] + taps[j]` must lie inside `planes`; the
/// operand must hold `sources.len()` x NR floats.
pub(super) unsafe fn gather_taps(
    path: CpuPath,
    planes: &[f32],
    taps: &[i32],
    sources: &[i32],
    operand: *mut f32,
) {
    #[cfg(target_arch = "x86_64")]
    match path {
        // SAFETY: forwarded.
        CpuPath::Avx512 => return unsafe { avx512::gather_taps(planes, taps, sources, operand) },
        // SAFETY: forwarded.
        CpuPath::Avx2 => return unsafe { avx2::gather_taps(planes, taps, sources, operand) },
        CpuPath::Portable => {}
    }
    let _ = path;
    for (r, &source) in sources.iter().enumerate() {
        // SAFETY: row r of the operand holds NR floats, and every `source + tap` lies inside
        // `planes` (the caller's contract).
        unsafe {
            let row = std::slice::from_raw_parts_mut(operand.add(r * NR), NR);
            for (value, &tap) in row.iter_mut().zip(taps) {
                *value = *planes.get_unchecked((source + tap) as usize);
            }
            row[taps.len()..].fill(0.0);
        }
    }
}

/// Gathers a panel's operand: row `k` (NR floats) holds tap `k` of the panel's columns,
/// copied run by run from the phase planes; columns past `count` are zero.
///
/// # Safety
/// `path` must be supported; the operand must hold taps x NR floats and every run's
/// `source + tap .. + len` lie inside `planes`.
pub(super) unsafe fn gather_operand(
    path: CpuPath,
    planes: &[f32],
    taps: &[usize],
    runs: &[Run],
    count: usize,
    operand: *mut f32,
) {
    // SAFETY (whole body): forwarded to the caller.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        match path {
            CpuPath::Avx512 => return avx512::gather_operand(planes, taps, runs, count, operand),
            CpuPath::Avx2 => return avx2::gather_operand(planes, taps, runs, count, operand),
            CpuPath::Portable => {}
        }
        let _ = path;
        gather_operand_with(
            |from, to, len| std::ptr::copy_nonoverlapping(from, to, len),
            planes,
            taps,
            runs,
            count,
            operand,
        );
    }
}

/// The body of [`gather_operand`], inlined into each path with its own run copy.
///
/// # Safety
/// As [`gather_operand`]; `copy(from, to, len)` must copy `len` floats.
#[inline(always)]
unsafe fn gather_operand_with(
    copy: impl Fn(*const f32, *mut f32, usize),
    planes: &[f32],
    taps: &[usize],
    runs: &[Run],
    count: usize,
    operand: *mut f32,
) {
    let source = planes.as_ptr();
    for (k, &tap) in taps.iter().enumerate() {
        // SAFETY (whole body): the caller guarantees the operand's size and the runs' ranges.
        unsafe {
            let row = operand.add(k * NR);
            for run in runs {
                copy(source.add(run.source + tap), row.add(run.first), run.len);
            }
            if count < NR {
                std::ptr::write_bytes(row.add(count), 0, NR - count);
            }
        }
    }
}

/// Copies a run of `len` floats (at most a few dozen): masked 16-float moves on AVX-512,
/// masked 8-float moves on AVX2, a `memcpy` elsewhere.
///
/// # Safety
/// `path` must be supported; `len` floats must be readable at `from` and writable at `to`.
#[inline]
pub(super) unsafe fn copy_run(path: CpuPath, from: *const f32, to: *mut f32, len: usize) {
    // SAFETY (whole body): forwarded to the caller.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        match path {
            CpuPath::Avx512 => return avx512::copy_short(from, to, len),
            CpuPath::Avx2 => return avx2::copy_short(from, to, len),
            CpuPath::Portable => {}
        }
        let _ = path;
        std::ptr::copy_nonoverlapping(from, to, len);
    }
}

/// The AVX-512 data movement: masked 16-float copies and gathers.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{NR, Run};

    /// Fills the operand (positions x NR) with the given taps of every position: row `r` holds
    /// `planes[sources[r] + taps[j]]` for j < taps.len(), zero after.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gather_taps(
        planes: &[f32],
        taps: &[i32],
        sources: &[i32],
        operand: *mut f32,
    ) {
        let groups: [(__m512i, __mmask16); NR / 16] = std::array::from_fn(|group| {
            let first = group * 16;
            let group_taps = &taps[first.min(taps.len())..];
            let count = group_taps.len().min(16);
            let mut lanes = [0i32; 16];
            lanes[..count].copy_from_slice(&group_taps[..count]);
            let mask: __mmask16 = if count == 16 {
                !0
            } else {
                ((1u32 << count) - 1) as u16
            };
            // SAFETY: reading 16 i32 from a local array.
            (unsafe { _mm512_loadu_si512(lanes.as_ptr().cast()) }, mask)
        });
        let base = planes.as_ptr();
        for (r, &source) in sources.iter().enumerate() {
            let source = _mm512_set1_epi32(source);
            for (group, &(offsets, mask)) in groups.iter().enumerate() {
                let indices = _mm512_add_epi32(offsets, source);
                // SAFETY: the caller guarantees every unmasked index is inside `planes`; masked
                // lanes are not read and come back as 0; row r of the operand holds NR floats.
                unsafe {
                    let values = _mm512_mask_i32gather_ps::<4>(
                        _mm512_setzero_ps(),
                        mask,
                        indices,
                        base.cast(),
                    );
                    _mm512_storeu_ps(operand.add(r * NR + group * 16), values);
                }
            }
        }
    }

    /// [`super::gather_operand`] with masked 16-float run copies.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gather_operand(
        planes: &[f32],
        taps: &[usize],
        runs: &[Run],
        count: usize,
        operand: *mut f32,
    ) {
        // SAFETY: forwarded; AVX-512F is enabled in this function.
        unsafe {
            super::gather_operand_with(
                |from, to, len| copy_short(from, to, len),
                planes,
                taps,
                runs,
                count,
                operand,
            )
        }
    }

    /// Copies `len` floats (a run: at most a few dozen) with 16-float moves, the last one
    /// masked: no call, no per-element loop.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(super) unsafe fn copy_short(from: *const f32, to: *mut f32, len: usize) {
        let (mut from, mut to, mut left) = (from, to, len);
        // SAFETY (whole body): the caller guarantees `len` readable and writable floats; masked
        // lanes are neither read nor written.
        unsafe {
            while left >= 16 {
                _mm512_storeu_ps(to, _mm512_loadu_ps(from));
                from = from.add(16);
                to = to.add(16);
                left -= 16;
            }
            if left > 0 {
                let mask: __mmask16 = (1u16 << left) - 1;
                _mm512_mask_storeu_ps(to, mask, _mm512_maskz_loadu_ps(mask, from));
            }
        }
    }
}

/// The AVX2 data movement: masked 8-float copies and gathers (the same floats as
/// [`avx512`]'s, half as many at a time).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{NR, Run};

    /// A lane mask with the first `count` (at most 8) of 8 lanes set.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn first_lanes(count: usize) -> __m256i {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(count as i32), lanes)
    }

    /// Fills the operand (positions x NR) with the given taps of every position: row `r` holds
    /// `planes[sources[r] + taps[j]]` for j < taps.len(), zero after.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn gather_taps(
        planes: &[f32],
        taps: &[i32],
        sources: &[i32],
        operand: *mut f32,
    ) {
        let groups: [(__m256i, __m256i); NR / 8] = std::array::from_fn(|group| {
            let first = group * 8;
            let group_taps = &taps[first.min(taps.len())..];
            let count = group_taps.len().min(8);
            let mut lanes = [0i32; 8];
            lanes[..count].copy_from_slice(&group_taps[..count]);
            // SAFETY: reading 8 i32 from a local array.
            let offsets = unsafe { _mm256_loadu_si256(lanes.as_ptr().cast()) };
            (offsets, first_lanes(count))
        });
        let base = planes.as_ptr();
        for (r, &source) in sources.iter().enumerate() {
            let source = _mm256_set1_epi32(source);
            for (group, &(offsets, mask)) in groups.iter().enumerate() {
                let indices = _mm256_add_epi32(offsets, source);
                // SAFETY: the caller guarantees every unmasked index is inside `planes`; masked
                // lanes are not read and come back as 0; row r of the operand holds NR floats.
                unsafe {
                    let values = _mm256_mask_i32gather_ps::<4>(
                        _mm256_setzero_ps(),
                        base,
                        indices,
                        _mm256_castsi256_ps(mask),
                    );
                    _mm256_storeu_ps(operand.add(r * NR + group * 8), values);
                }
            }
        }
    }

    /// [`super::gather_operand`] with masked 8-float run copies.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn gather_operand(
        planes: &[f32],
        taps: &[usize],
        runs: &[Run],
        count: usize,
        operand: *mut f32,
    ) {
        // SAFETY: forwarded; AVX2 is enabled in this function.
        unsafe {
            super::gather_operand_with(
                |from, to, len| copy_short(from, to, len),
                planes,
                taps,
                runs,
                count,
                operand,
            )
        }
    }

    /// Copies `len` floats (a run: at most a few dozen) with 8-float moves, the last one
    /// masked: no call, no per-element loop.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn copy_short(from: *const f32, to: *mut f32, len: usize) {
        let (mut from, mut to, mut left) = (from, to, len);
        // SAFETY (whole body): the caller guarantees `len` readable and writable floats; masked
        // lanes are neither read nor written.
        unsafe {
            while left >= 8 {
                _mm256_storeu_ps(to, _mm256_loadu_ps(from));
                from = from.add(8);
                to = to.add(8);
                left -= 8;
            }
            if left > 0 {
                let mask = first_lanes(left);
                _mm256_maskstore_ps(to, mask, _mm256_maskload_ps(from, mask));
            }
        }
    }
}
