//! The multiply-add kernel under every f32 convolution and fully connected gradient, on each
//! [`CpuPath`], and the panel GEMM built on it.
//!
//! [`microkernel`] computes an `MR x NR` tile `bias + A B` in which every output is one chain
//! of fused multiply-adds over the depth in order, starting from its bias: lanes hold
//! different outputs, never partial sums of one output. The AVX-512 version keeps the whole
//! tile in registers (24 accumulators of 16 floats); AVX2 has 16 registers of 8 floats and
//! walks the tile in 4 x 24 blocks (12 accumulators; the depth loop in assembly); the portable version does the same with `f32::mul_add`.
//! Tile shape and vector width decide which outputs are computed together, not how any one
//! is computed, so the three give identical bits (`tests` checks it).

use super::path::CpuPath;

/// Rows (filters, output units) per tile.
pub const MR: usize = 8;
/// Columns (output positions, taps, inputs) per tile.
pub const NR: usize = 48;

/// `tile = bias + A B`, then `max(0, .)` when `relu` (which keeps NaN and -0, as `vmaxps`
/// with 0 first does): `a` is `depth x MR` (row `k` holds the MR rows' `k`-th entries), `b`
/// is `depth` rows of NR floats, row `k` at `b + k b_stride`; `tile` is MR x NR, row-major.
///
/// # Safety
/// `path` must be supported by this CPU; the pointers must hold the sizes above.
#[allow(clippy::too_many_arguments)]
#[inline]
pub unsafe fn microkernel(
    path: CpuPath,
    depth: usize,
    a: *const f32,
    b: *const f32,
    b_stride: usize,
    bias: *const f32,
    relu: bool,
    tile: *mut f32,
) {
    // SAFETY: forwarded; each arm runs only where its instructions exist (the caller's
    // contract on `path`).
    unsafe {
        match path {
            #[cfg(target_arch = "x86_64")]
            CpuPath::Avx512 => x86::avx512(depth, a, b, b_stride, bias, relu, tile),
            #[cfg(target_arch = "x86_64")]
            CpuPath::Avx2 => x86::avx2(depth, a, b, b_stride, bias, relu, tile),
            _ => portable(depth, a, b, b_stride, bias, relu, tile),
        }
    }
}

/// `max(0, value)` as `vmaxps(0, value)` computes it: NaN and -0 come back unchanged.
#[inline(always)]
fn relu_like_vmaxps(value: f32) -> f32 {
    if 0.0 > value { 0.0 } else { value }
}

/// Rows of the blocks the AVX2 and portable kernels walk the tile in, and the portable
/// kernel's columns.
const BLOCK_ROWS: usize = 4;
const BLOCK_COLS: usize = 16;
/// Columns of the AVX2 kernel's blocks: 3 vectors of 8.
const AVX2_VECTORS: usize = 3;
const AVX2_BLOCK_COLS: usize = AVX2_VECTORS * 8;
const _: () = assert!(NR.is_multiple_of(AVX2_BLOCK_COLS) && MR.is_multiple_of(BLOCK_ROWS));

/// The portable kernel: the tile in 4 x 16 blocks, each output `acc = mul_add(a, b, acc)`.
///
/// # Safety
/// As [`microkernel`].
unsafe fn portable(
    depth: usize,
    a: *const f32,
    b: *const f32,
    b_stride: usize,
    bias: *const f32,
    relu: bool,
    tile: *mut f32,
) {
    // SAFETY (whole body): the caller guarantees the operand sizes.
    unsafe {
        for first_row in (0..MR).step_by(BLOCK_ROWS) {
            for first_col in (0..NR).step_by(BLOCK_COLS) {
                let mut acc = [[0.0f32; BLOCK_COLS]; BLOCK_ROWS];
                for (m, row) in acc.iter_mut().enumerate() {
                    *row = [*bias.add(first_row + m); BLOCK_COLS];
                }
                for k in 0..depth {
                    let b_row =
                        std::slice::from_raw_parts(b.add(k * b_stride + first_col), BLOCK_COLS);
                    let a_row = std::slice::from_raw_parts(a.add(k * MR + first_row), BLOCK_ROWS);
                    for (row, &a_value) in acc.iter_mut().zip(a_row) {
                        for (sum, &b_value) in row.iter_mut().zip(b_row) {
                            *sum = a_value.mul_add(b_value, *sum);
                        }
                    }
                }
                for (m, row) in acc.iter().enumerate() {
                    let out = tile.add((first_row + m) * NR + first_col);
                    for (n, &value) in row.iter().enumerate() {
                        *out.add(n) = if relu { relu_like_vmaxps(value) } else { value };
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{AVX2_BLOCK_COLS, AVX2_VECTORS, BLOCK_ROWS, MR, NR};

    /// The whole tile in registers: 8 rows x 3 vectors of 16.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512(
        depth: usize,
        a: *const f32,
        b: *const f32,
        b_stride: usize,
        bias: *const f32,
        relu: bool,
        tile: *mut f32,
    ) {
        // SAFETY (whole body): the caller guarantees the operand sizes.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 3]; MR];
            for (m, row) in acc.iter_mut().enumerate() {
                *row = [_mm512_set1_ps(*bias.add(m)); 3];
            }
            let (mut a, mut b) = (a, b);
            for _ in 0..depth {
                let b0 = _mm512_loadu_ps(b);
                let b1 = _mm512_loadu_ps(b.add(16));
                let b2 = _mm512_loadu_ps(b.add(32));
                for (m, row) in acc.iter_mut().enumerate() {
                    let am = _mm512_set1_ps(*a.add(m));
                    row[0] = _mm512_fmadd_ps(am, b0, row[0]);
                    row[1] = _mm512_fmadd_ps(am, b1, row[1]);
                    row[2] = _mm512_fmadd_ps(am, b2, row[2]);
                }
                a = a.add(MR);
                b = b.add(b_stride);
            }
            let zero = _mm512_setzero_ps();
            for (m, row) in acc.iter().enumerate() {
                for (v, &value) in row.iter().enumerate() {
                    // vmaxps returns its second operand when either is NaN (a diverged
                    // network still shows as NaN) and when both are zeros.
                    let value = if relu {
                        _mm512_max_ps(zero, value)
                    } else {
                        value
                    };
                    _mm512_storeu_ps(tile.add(m * NR + v * 16), value);
                }
            }
        }
    }

    /// The tile in 4 x 24 blocks: 12 accumulators of 8 floats, 3 loads of B and 4
    /// broadcasts of A per 12 fused multiply-adds — all 16 vector registers, so the depth
    /// loop is written in assembly ([`avx2_block`]): compiled from intrinsics, LLVM kept one
    /// accumulator on the stack (a store-to-load round trip on every step of its chain).
    /// (4 x 16 blocks left the two FMA units waiting on 8 chains of 4-cycle latency, and
    /// walked A and B 6 times a tile instead of 4.)
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2(
        depth: usize,
        a: *const f32,
        b: *const f32,
        b_stride: usize,
        bias: *const f32,
        relu: bool,
        tile: *mut f32,
    ) {
        // SAFETY (whole body): the caller guarantees the operand sizes.
        unsafe {
            let zero = _mm256_setzero_ps();
            for first_row in (0..MR).step_by(BLOCK_ROWS) {
                for first_col in (0..NR).step_by(AVX2_BLOCK_COLS) {
                    let mut acc = [[zero; AVX2_VECTORS]; BLOCK_ROWS];
                    for (m, row) in acc.iter_mut().enumerate() {
                        *row = [_mm256_set1_ps(*bias.add(first_row + m)); AVX2_VECTORS];
                    }
                    avx2_block(
                        depth,
                        a.add(first_row),
                        b.add(first_col),
                        b_stride,
                        &mut acc,
                    );
                    for (m, row) in acc.iter().enumerate() {
                        for (v, &value) in row.iter().enumerate() {
                            let value = if relu {
                                _mm256_max_ps(zero, value)
                            } else {
                                value
                            };
                            _mm256_storeu_ps(
                                tile.add((first_row + m) * NR + first_col + v * 8),
                                value,
                            );
                        }
                    }
                }
            }
        }
    }

    /// `acc[m][v] += a[k MR + m] * b[k b_stride + 8 v ..][..8]` for k = 0 .. depth, in that
    /// order, each a fused multiply-add (`vfmadd231ps`, one rounding: the same operation as
    /// `_mm256_fmadd_ps`), with the 12 accumulators, 3 B vectors and the broadcast of A in
    /// the 16 registers.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `a` must be readable at `k MR + m` and `b` at
    /// `k b_stride .. + 24` for every k < depth, m < 4.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn avx2_block(
        depth: usize,
        a: *const f32,
        b: *const f32,
        b_stride: usize,
        acc: &mut [[__m256; AVX2_VECTORS]; BLOCK_ROWS],
    ) {
        const _: () = assert!(AVX2_VECTORS == 3 && BLOCK_ROWS == 4 && MR == 8);
        let [
            [mut c00, mut c01, mut c02],
            [mut c10, mut c11, mut c12],
            [mut c20, mut c21, mut c22],
            [mut c30, mut c31, mut c32],
        ] = *acc;
        if depth > 0 {
            // SAFETY: the caller guarantees the reads; the block only reads memory and
            // writes the named registers.
            unsafe {
                std::arch::asm!(
                    "2:",
                    "vmovups {b0}, ymmword ptr [{b}]",
                    "vmovups {b1}, ymmword ptr [{b} + 32]",
                    "vmovups {b2}, ymmword ptr [{b} + 64]",
                    "vbroadcastss {am}, dword ptr [{a}]",
                    "vfmadd231ps {c00}, {am}, {b0}",
                    "vfmadd231ps {c01}, {am}, {b1}",
                    "vfmadd231ps {c02}, {am}, {b2}",
                    "vbroadcastss {am}, dword ptr [{a} + 4]",
                    "vfmadd231ps {c10}, {am}, {b0}",
                    "vfmadd231ps {c11}, {am}, {b1}",
                    "vfmadd231ps {c12}, {am}, {b2}",
                    "vbroadcastss {am}, dword ptr [{a} + 8]",
                    "vfmadd231ps {c20}, {am}, {b0}",
                    "vfmadd231ps {c21}, {am}, {b1}",
                    "vfmadd231ps {c22}, {am}, {b2}",
                    "vbroadcastss {am}, dword ptr [{a} + 12]",
                    "vfmadd231ps {c30}, {am}, {b0}",
                    "vfmadd231ps {c31}, {am}, {b1}",
                    "vfmadd231ps {c32}, {am}, {b2}",
                    "add {a}, 32",
                    "add {b}, {stride}",
                    "dec {k}",
                    "jnz 2b",
                    k = inout(reg) depth => _,
                    a = inout(reg) a => _,
                    b = inout(reg) b => _,
                    stride = in(reg) b_stride * 4,
                    b0 = out(ymm_reg) _,
                    b1 = out(ymm_reg) _,
                    b2 = out(ymm_reg) _,
                    am = out(ymm_reg) _,
                    c00 = inout(ymm_reg) c00,
                    c01 = inout(ymm_reg) c01,
                    c02 = inout(ymm_reg) c02,
                    c10 = inout(ymm_reg) c10,
                    c11 = inout(ymm_reg) c11,
                    c12 = inout(ymm_reg) c12,
                    c20 = inout(ymm_reg) c20,
                    c21 = inout(ymm_reg) c21,
                    c22 = inout(ymm_reg) c22,
                    c30 = inout(ymm_reg) c30,
                    c31 = inout(ymm_reg) c31,
                    c32 = inout(ymm_reg) c32,
                    options(nostack, readonly),
                );
            }
        }
        *acc = [
            [c00, c01, c02],
            [c10, c11, c12],
            [c20, c21, c22],
            [c30, c31, c32],
        ];
    }
}

/// Rows of a matrix packed as panels of [`MR`]: panel `p`, depth `k`, lane `m` holds
/// `a[(p MR + m) row_stride + k col_stride]` (0 past the last row), for [`gemm`].
pub fn pack_panels(
    a: &[f32],
    rows: usize,
    depth: usize,
    row_stride: usize,
    col_stride: usize,
) -> Vec<f32> {
    let panels = rows.div_ceil(MR);
    let mut packed = vec![0.0f32; panels * MR * depth];
    for row in 0..rows {
        let panel = &mut packed[(row / MR) * MR * depth..][..MR * depth];
        for k in 0..depth {
            panel[k * MR + row % MR] = a[row * row_stride + k * col_stride];
        }
    }
    packed
}

/// Row panels per parallel task of [`gemm`] and column panels per task.
const TASK_ROW_PANELS: usize = 8;
const TASK_COL_PANELS: usize = 4;

/// `*mut f32` that rayon tasks may share, each writing a disjoint set of outputs (its own
/// block of C here, its own output columns in `implicit_gemm`).
#[derive(Clone, Copy)]
pub(super) struct SharedOut(pub(super) *mut f32);
// SAFETY: every user has its tasks write disjoint elements.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The output element at `offset` (a method, so that closures capture the whole wrapper
    /// rather than its raw pointer).
    ///
    /// # Safety
    /// `offset` must lie inside the output.
    pub(super) unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: forwarded to the caller.
        unsafe { self.0.add(offset) }
    }
}

/// `C = A B` with `A` (`rows x depth`) packed by [`pack_panels`], `B` `depth x cols` with row
/// `k` at `b[k b_stride..]`, and row `r` of C at `c[r c_stride..]` (overwritten). Every
/// element of C is one [`microkernel`] chain over the depth in order from +0, so C does not
/// depend on the path, the thread count or the blocking. Parallel over blocks of C when
/// `parallel`.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    path: CpuPath,
    parallel: bool,
    (rows, depth, cols): (usize, usize, usize),
    a_packed: &[f32],
    b: &[f32],
    b_stride: usize,
    c: &mut [f32],
    c_stride: usize,
) {
    use rayon::prelude::*;
    assert!(path.supported(), "{path} is not supported by this CPU");
    assert_eq!(a_packed.len(), rows.div_ceil(MR) * MR * depth);
    assert!(cols <= b_stride || depth <= 1);
    assert!(depth == 0 || b.len() >= (depth - 1) * b_stride + cols);
    assert!(cols <= c_stride || rows <= 1);
    assert!(rows == 0 || c.len() >= (rows - 1) * c_stride + cols);
    if rows == 0 || cols == 0 {
        return;
    }
    if depth == 0 {
        // An empty sum: C = 0 (B has no rows to read).
        for row in 0..rows {
            c[row * c_stride..][..cols].fill(0.0);
        }
        return;
    }
    let (row_panels, col_panels) = (rows.div_ceil(MR), cols.div_ceil(NR));
    let row_tasks = row_panels.div_ceil(TASK_ROW_PANELS);
    let col_tasks = col_panels.div_ceil(TASK_COL_PANELS);
    // The last column panel, when partial, copied once and zero-padded to NR.
    let tail_count = cols % NR;
    let mut tail = Vec::new();
    if tail_count > 0 {
        tail = vec![0.0f32; depth * NR];
        let first_col = cols - tail_count;
        for k in 0..depth {
            tail[k * NR..][..tail_count]
                .copy_from_slice(&b[k * b_stride + first_col..][..tail_count]);
        }
    }
    let out = SharedOut(c.as_mut_ptr());
    let task = |index: usize| {
        let (row_task, col_task) = (index / col_tasks, index % col_tasks);
        let mut tile = [0.0f32; MR * NR];
        let zero_bias = [0.0f32; MR];
        let panels = row_task * TASK_ROW_PANELS..((row_task + 1) * TASK_ROW_PANELS).min(row_panels);
        for col_panel in
            col_task * TASK_COL_PANELS..((col_task + 1) * TASK_COL_PANELS).min(col_panels)
        {
            let first_col = col_panel * NR;
            let count = NR.min(cols - first_col);
            let (b_panel, stride) = if count == NR {
                (&b[first_col..], b_stride)
            } else {
                (&tail[..], NR)
            };
            for panel in panels.clone() {
                // SAFETY: `path` is supported (asserted); the packed panel holds depth x MR
                // floats, B's panel depth rows of NR at `stride` (checked above, or padded).
                unsafe {
                    microkernel(
                        path,
                        depth,
                        a_packed[panel * MR * depth..].as_ptr(),
                        b_panel.as_ptr(),
                        stride,
                        zero_bias.as_ptr(),
                        false,
                        tile.as_mut_ptr(),
                    );
                }
                for m in 0..MR.min(rows - panel * MR) {
                    let row = panel * MR + m;
                    // SAFETY: row < rows and first_col + count <= cols: inside C; this
                    // block of C belongs to this task alone.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            tile.as_ptr().add(m * NR),
                            out.at(row * c_stride + first_col),
                            count,
                        );
                    }
                }
            }
        }
    };
    if parallel {
        (0..row_tasks * col_tasks).into_par_iter().for_each(task);
    } else {
        (0..row_tasks * col_tasks).for_each(task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(len: usize, state: &mut u64) -> Vec<f32> {
        (0..len)
            .map(|_| {
                *state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((*state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    /// Every path gives the portable chain's bits, with and without ReLU, NaN and -0 kept.
    #[test]
    fn every_path_computes_the_same_tile() {
        let mut state = 7;
        for depth in [0, 1, 3, 75, 1200] {
            let a = random(depth * MR, &mut state);
            let mut b = random(depth * 50, &mut state);
            if depth > 2 {
                b[3] = f32::NAN;
            }
            let bias = [-0.0, 0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0];
            for relu in [false, true] {
                let mut want = [0.0f32; MR * NR];
                // SAFETY: the portable path runs everywhere; sizes as documented.
                unsafe {
                    microkernel(
                        CpuPath::Portable,
                        depth,
                        a.as_ptr(),
                        b.as_ptr(),
                        50,
                        bias.as_ptr(),
                        relu,
                        want.as_mut_ptr(),
                    );
                }
                for path in CpuPath::supported_paths() {
                    let mut got = [1.0f32; MR * NR];
                    // SAFETY: a supported path; sizes as documented.
                    unsafe {
                        microkernel(
                            path,
                            depth,
                            a.as_ptr(),
                            b.as_ptr(),
                            50,
                            bias.as_ptr(),
                            relu,
                            got.as_mut_ptr(),
                        );
                    }
                    let bits = |t: &[f32]| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "{path} depth {depth} relu {relu}");
                }
            }
        }
    }

    /// The panel GEMM equals a plain f64 product to f32 rounding, and is the same bits on
    /// every path, in parallel or not.
    #[test]
    fn panel_gemm_is_a_product_and_the_same_on_every_path() {
        let mut state = 3;
        for (rows, depth, cols) in [
            (1, 1, 1),
            (9, 5, 49),
            (17, 130, 100),
            (8, 0, 48),
            (30, 64, 200),
        ] {
            let a = random(rows * depth, &mut state);
            let b = random(depth * (cols + 3), &mut state);
            let packed = pack_panels(&a, rows, depth, depth, 1);
            let mut reference = None;
            for path in CpuPath::supported_paths() {
                for parallel in [false, true] {
                    let mut c = vec![f32::NAN; rows * (cols + 1)];
                    gemm(
                        path,
                        parallel,
                        (rows, depth, cols),
                        &packed,
                        &b,
                        cols + 3,
                        &mut c,
                        cols + 1,
                    );
                    for r in 0..rows {
                        for j in 0..cols {
                            let want: f64 = (0..depth)
                                .map(|k| a[r * depth + k] as f64 * b[k * (cols + 3) + j] as f64)
                                .sum();
                            let got = c[r * (cols + 1) + j] as f64;
                            assert!(
                                (got - want).abs() <= 1e-5 * (1.0 + depth as f64),
                                "{path} ({r}, {j}): {got} vs {want}"
                            );
                        }
                    }
                    let bits: Vec<u32> = c.iter().map(|v| v.to_bits()).collect();
                    match &reference {
                        None => reference = Some(bits),
                        Some(first) => assert_eq!(first, &bits, "{path} parallel {parallel}"),
                    }
                }
            }
        }
    }
}
