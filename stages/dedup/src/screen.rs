//! The pairs of unit vectors whose dot product reaches a threshold, found fast and exactly.
//!
//! Screening: every (query, reference) dot product is computed in bfloat16 with f32
//! accumulation (AVX-512 BF16's `vdpbf16ps`, twice the f32 FMA rate) where the CPU has it and
//! it is faster, else by an f32 GEMM on the engine's panel microkernel (the selected CPU path:
//! AVX-512, AVX2+FMA or portable). Rounding a unit vector's values to bf16 moves each by at most u = 2^-8
//! relative, so a bf16 dot product of unit vectors is within (2u + u^2) sum |x_i y_i| <= 0.0079
//! of the exact one (Cauchy-Schwarz), plus the f32 accumulation's error, at most
//! n 2^-24 sum |x_i y_i| for a chain of n fused multiply-adds: the bf16 kernel's 16 lanes each
//! add dim / 16 products (<= 2.5e-4 at the largest size, 256 x 256 = 65,536 values), the f32
//! screen's microkernel one chain of dim (<= 3.9e-3 there, its products exact). Both stay
//! under [`MARGIN`]: every pair with a screened dot >= threshold - MARGIN is a candidate, and
//! no true pair is missed. Each
//! candidate's dot product is then recomputed in f64 and compared with the threshold — so the
//! pairs and their values do not depend on which screening path the machine took.

use engine::Backend;
use engine::cpu::microkernel::{MR, NR, gemm, pack_panels};
use rayon::prelude::*;

/// The screening margin: larger than the worst bf16 (or f32) error for unit vectors.
pub const MARGIN: f32 = 0.01;

/// Query rows per parallel task of the bf16 screen.
const QUERY_ROWS: usize = 256;
/// Query panels (of [`NR`]) per parallel task of the f32 screen, and references per step of
/// its walk (a multiple of [`MR`]): 4 x 48 queries of 1,024 values are 786 KB, 128
/// references 524 KB.
const F32_QUERY_PANELS: usize = 4;
const F32_REFERENCE_ROWS: usize = 16 * MR;

/// One pair found: (query row, reference row, exact dot product).
pub type Pair = (usize, usize, f64);

/// Unit vectors (rows of `dim` values) prepared for screening: bf16 copies padded to a
/// multiple of 32 values, when the CPU can use them.
pub struct Prepared<'a> {
    rows: &'a [f32],
    dim: usize,
    bf16: Option<Vec<u16>>,
    padded: usize,
}

/// The queries as the f32 screen's GEMM reads them: panels of [`NR`] queries (the
/// microkernel's width), each panel transposed into `dim` contiguous rows of `NR` values
/// (zero past the last query), so that a panel is read as one contiguous block.
pub struct QueryPanels {
    values: Vec<f32>,
    rows: usize,
    dim: usize,
}

impl QueryPanels {
    fn new(queries: &[f32], dim: usize) -> Self {
        let rows = queries.len() / dim.max(1);
        let mut values = vec![0.0f32; rows.div_ceil(NR) * NR * dim];
        values
            .par_chunks_mut(NR * dim)
            .zip(queries.par_chunks(NR * dim))
            .for_each(|(panel, queries)| {
                for (q, query) in queries.chunks(dim).enumerate() {
                    for (k, &value) in query.iter().enumerate() {
                        panel[k * NR + q] = value;
                    }
                }
            });
        QueryPanels { values, rows, dim }
    }

    fn panels(&self) -> usize {
        self.rows.div_ceil(NR)
    }

    /// Panel `p`: its `dim x NR` values and how many of its columns are queries.
    fn panel(&self, p: usize) -> (&[f32], usize) {
        (
            &self.values[p * NR * self.dim..][..NR * self.dim],
            NR.min(self.rows - p * NR),
        )
    }
}

/// Whether this CPU screens in bf16: AVX-512 BF16 present and the AVX-512 path selected
/// (`ZFNET_CPU=avx2` or `portable` tests the f32 screen; the pairs are the same either way,
/// since every candidate is decided in f64).
pub fn bf16_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        engine::cpu::selected() == engine::cpu::CpuPath::Avx512
            && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the bf16 screen beats the f32 one on this CPU, timed on the queries themselves
/// (up to 1,024 of them against up to 2,048, best of two each). Which one runs never changes
/// the pairs found (every candidate is decided in f64), only the time: on `zfnet-bench
/// dedup`'s workload the bf16 screen took 0.84-0.89 s against the f32 GEMM's 1.82-1.97 s on an
/// AMD EPYC, and 1.59-1.64 s against 1.11-1.20 s on an Intel Xeon, both with AVX-512 BF16
/// (BENCHMARKS.md), so the CPU decides.
pub fn bf16_is_faster(queries: &[f32], dim: usize, threshold: f32) -> bool {
    let rows = queries.len() / dim.max(1);
    if rows == 0 {
        return false;
    }
    let sample = &queries[..rows.min(1024) * dim];
    let references = &queries[..rows.min(2048) * dim];
    let time = |use_bf16: bool| {
        let screen = CpuScreen::new(sample, dim, use_bf16);
        (0..2)
            .map(|_| {
                let started = std::time::Instant::now();
                std::hint::black_box(pairs_at_least(&screen, sample, references, dim, threshold));
                started.elapsed()
            })
            .min()
            .unwrap_or_default()
    };
    let (bf16, f32) = (time(true), time(false));
    let faster = bf16 < f32;
    tracing::info!(
        bf16_ms = bf16.as_secs_f64() * 1e3,
        f32_ms = f32.as_secs_f64() * 1e3,
        "dedup screens timed on this CPU: {} chosen",
        if faster { "bf16" } else { "f32" }
    );
    faster
}

/// f32 -> bf16, rounding to nearest, ties to even (no NaNs here: the vectors are finite).
fn to_bf16(value: f32) -> u16 {
    let bits = value.to_bits();
    ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) as u16
}

impl<'a> Prepared<'a> {
    pub fn new(rows: &'a [f32], dim: usize, use_bf16: bool) -> Self {
        let padded = dim.div_ceil(32) * 32;
        let bf16 = use_bf16.then(|| {
            let mut out = vec![0u16; rows.len() / dim.max(1) * padded];
            out.par_chunks_mut(padded)
                .zip(rows.par_chunks(dim))
                .for_each(|(out, row)| {
                    for (o, &v) in out.iter_mut().zip(row) {
                        *o = to_bf16(v);
                    }
                });
            out
        });
        Prepared {
            rows,
            dim,
            bf16,
            padded,
        }
    }

    fn len(&self) -> usize {
        self.rows.len() / self.dim.max(1)
    }
}

fn exact_dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// A way to find candidate pairs: a superset of the (query, reference) pairs whose dot
/// product reaches `threshold - MARGIN`'s neighbourhood — every pair that reaches `threshold`
/// must be among them.
pub trait Screen: Sync {
    /// Candidates between the screen's queries and one block of references (rows of the
    /// same length), in (query, reference) order.
    fn candidates(&self, references: &[f32], screen: f32) -> Vec<(usize, usize)>;
}

/// The CPU screens: bf16 where the CPU has AVX-512 BF16 (and the caller chose it), else an
/// f32 GEMM on the selected CPU path.
pub enum CpuScreen<'a> {
    /// The queries with their bf16 copies (AVX-512 BF16 dot products).
    Bf16(Prepared<'a>),
    /// The queries packed for the engine's panel microkernel.
    F32(QueryPanels),
}

impl<'a> CpuScreen<'a> {
    /// The bf16 screen only where asked and the CPU has it (else the f32 one: a caller that
    /// asks for bf16 elsewhere gets the same pairs, never an unsupported instruction).
    pub fn new(queries: &'a [f32], dim: usize, use_bf16: bool) -> Self {
        if use_bf16 && bf16_available() {
            CpuScreen::Bf16(Prepared::new(queries, dim, true))
        } else {
            CpuScreen::F32(QueryPanels::new(queries, dim))
        }
    }
}

impl Screen for CpuScreen<'_> {
    fn candidates(&self, references: &[f32], screen: f32) -> Vec<(usize, usize)> {
        let queries = match self {
            CpuScreen::F32(panels) => return screen_f32(panels, references, screen),
            CpuScreen::Bf16(queries) => queries,
        };
        let references = Prepared::new(references, queries.dim, queries.bf16.is_some());
        let n_queries = queries.len();
        let chunks: Vec<usize> = (0..n_queries).step_by(QUERY_ROWS).collect();
        let found: Vec<Vec<(usize, usize)>> = chunks
            .into_par_iter()
            .map(|first| {
                let rows = QUERY_ROWS.min(n_queries - first);
                let mut candidates = Vec::new();
                match (&queries.bf16, &references.bf16) {
                    #[cfg(target_arch = "x86_64")]
                    (Some(q), Some(r)) => {
                        // SAFETY: both copies exist only when `bf16_available()` said the CPU
                        // has AVX-512F and AVX-512 BF16.
                        unsafe {
                            screen_bf16(
                                &q[first * queries.padded..(first + rows) * queries.padded],
                                r,
                                queries.padded,
                                screen,
                                first,
                                &mut candidates,
                            )
                        }
                    }
                    _ => unreachable!("bf16 copies exist for both sides or neither"),
                }
                // The bf16 screen visits pairs tile by tile: restore (query, reference) order.
                candidates.sort_unstable();
                candidates
            })
            .collect();
        found.into_iter().flatten().collect()
    }
}

/// The screen on an engine backend (cuBLAS on the GPU): the scores of a block are one fully
/// connected layer, `queries` x `references`^T, in fp32 or TF32 — both well inside
/// [`MARGIN`].
pub struct BackendScreen<B: Backend> {
    backend: B,
    queries: B::Buffer,
    n_queries: usize,
    dim: usize,
}

impl<B: Backend> BackendScreen<B> {
    pub fn new(backend: B, queries: &[f32], dim: usize) -> Self {
        let buffer = backend.upload(queries);
        BackendScreen {
            queries: buffer,
            n_queries: queries.len() / dim.max(1),
            dim,
            backend,
        }
    }
}

impl<B: Backend> Screen for BackendScreen<B> {
    fn candidates(&self, references: &[f32], screen: f32) -> Vec<(usize, usize)> {
        let b = &self.backend;
        let n = references.len() / self.dim;
        let weights = b.upload(references);
        let bias = b.zeros(n);
        let mut scores = b.zeros(self.n_queries * n);
        let shape = engine::geometry::LinearGeometry {
            n_in: self.dim,
            n_out: n,
        };
        b.linear_forward(&self.queries, &weights, &bias, &shape, &mut scores);
        let scores = b.download(&scores);
        let mut out = Vec::new();
        for (i, row) in scores.chunks(n).enumerate() {
            for (j, &s) in row.iter().enumerate() {
                if s >= screen {
                    out.push((i, j));
                }
            }
        }
        out
    }
}

/// Every (query, reference) pair with dot product >= `threshold`, in (query, reference)
/// order: `screen`'s candidates, each recomputed in f64.
pub fn pairs_at_least(
    screen: &dyn Screen,
    queries: &[f32],
    references: &[f32],
    dim: usize,
    threshold: f32,
) -> Vec<Pair> {
    screen
        .candidates(references, threshold - MARGIN)
        .into_par_iter()
        .filter_map(|(i, j)| {
            let value = exact_dot(
                &queries[i * dim..(i + 1) * dim],
                &references[j * dim..(j + 1) * dim],
            );
            (value >= threshold as f64).then_some((i, j, value))
        })
        .collect()
}

/// The f32 screen: `references x queries^T` on the engine's panel GEMM (the selected CPU
/// path). The references are packed into the microkernel's row panels once per block; each
/// parallel task takes [`F32_QUERY_PANELS`] query panels and walks the references by
/// [`F32_REFERENCE_ROWS`], so that both operands of its products stay in L2. Returns
/// candidates in (query, reference) order.
fn screen_f32(queries: &QueryPanels, references: &[f32], screen: f32) -> Vec<(usize, usize)> {
    let dim = queries.dim;
    let n = references.len() / dim.max(1);
    if n == 0 || queries.rows == 0 {
        return Vec::new();
    }
    let path = engine::cpu::selected();
    let packed = pack_panels(references, n, dim, dim, 1);
    let tasks: Vec<usize> = (0..queries.panels()).step_by(F32_QUERY_PANELS).collect();
    let found: Vec<Vec<(usize, usize)>> = tasks
        .into_par_iter()
        .map(|first_panel| {
            let last_panel = (first_panel + F32_QUERY_PANELS).min(queries.panels());
            let mut scores = vec![0.0f32; F32_REFERENCE_ROWS * NR];
            let mut candidates = Vec::new();
            for first_reference in (0..n).step_by(F32_REFERENCE_ROWS) {
                let rows = F32_REFERENCE_ROWS.min(n - first_reference);
                let references = &packed[first_reference * dim..][..rows.div_ceil(MR) * MR * dim];
                for p in first_panel..last_panel {
                    let (panel, count) = queries.panel(p);
                    // Row r: reference first_reference + r against the panel's NR columns.
                    gemm(
                        path,
                        false,
                        (rows, dim, NR),
                        references,
                        panel,
                        NR,
                        &mut scores,
                        NR,
                    );
                    for (r, row) in scores[..rows * NR].chunks(NR).enumerate() {
                        for (q, &score) in row[..count].iter().enumerate() {
                            if score >= screen {
                                candidates.push((p * NR + q, first_reference + r));
                            }
                        }
                    }
                }
            }
            candidates.sort_unstable();
            candidates
        })
        .collect();
    found.into_iter().flatten().collect()
}

/// The bf16 screen: 4 x 4 tiles of dot products, 32 values per `vdpbf16ps`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn screen_bf16(
    queries: &[u16],
    references: &[u16],
    padded: usize,
    screen: f32,
    first: usize,
    out: &mut Vec<(usize, usize)>,
) {
    use std::arch::x86_64::*;
    let rows = queries.len() / padded;
    let n = references.len() / padded;
    // A macro, not a closure: closures do not inherit `target_feature`, and the loads must
    // inline into the loop.
    macro_rules! load {
        ($data:expr, $row:expr, $k:expr) => {
            // SAFETY: the row is within `$data` and k + 32 <= padded (the loops' bounds).
            unsafe {
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                    $data.as_ptr().add($row * padded + $k) as *const __m512i,
                ))
            }
        };
    }
    let mut check = |i: usize, j: usize, value: f32| {
        if value >= screen {
            out.push((first + i, j));
        }
    };
    let full_j = n / 4 * 4;
    let full_i = rows / 4 * 4;
    for j0 in (0..full_j).step_by(4) {
        for i0 in (0..full_i).step_by(4) {
            let mut acc = [[_mm512_setzero_ps(); 4]; 4];
            for k in (0..padded).step_by(32) {
                let q = [
                    load!(queries, i0, k),
                    load!(queries, i0 + 1, k),
                    load!(queries, i0 + 2, k),
                    load!(queries, i0 + 3, k),
                ];
                let r = [
                    load!(references, j0, k),
                    load!(references, j0 + 1, k),
                    load!(references, j0 + 2, k),
                    load!(references, j0 + 3, k),
                ];
                for a in 0..4 {
                    for b in 0..4 {
                        acc[a][b] = _mm512_dpbf16_ps(acc[a][b], q[a], r[b]);
                    }
                }
            }
            for (a, row) in acc.iter().enumerate() {
                for (b, &sums) in row.iter().enumerate() {
                    check(i0 + a, j0 + b, _mm512_reduce_add_ps(sums));
                }
            }
        }
    }
    // Edges: the rows and columns outside full tiles, one dot product at a time.
    for i in 0..rows {
        let columns = if i < full_i { full_j..n } else { 0..n };
        for j in columns {
            let mut acc = _mm512_setzero_ps();
            for k in (0..padded).step_by(32) {
                acc = _mm512_dpbf16_ps(acc, load!(queries, i, k), load!(references, j, k));
            }
            check(i, j, _mm512_reduce_add_ps(acc));
        }
    }
}

#[cfg(test)]
mod tests {
    use linear_models::synthetic::unit_rows;

    use super::*;

    /// Brute force in f64: the definition.
    fn brute(q: &[f32], r: &[f32], dim: usize, threshold: f64) -> Vec<Pair> {
        let mut out = Vec::new();
        for (i, a) in q.chunks(dim).enumerate() {
            for (j, b) in r.chunks(dim).enumerate() {
                let v = exact_dot(a, b);
                if v >= threshold {
                    out.push((i, j, v));
                }
            }
        }
        out
    }

    #[test]
    fn both_screens_find_exactly_the_brute_force_pairs() {
        // Odd sizes exercise the edge tiles; near-copies and a threshold between the values
        // exercise the margin. The second size spans several of the f32 screen's tasks
        // (4 panels of 48 queries) and reference steps (128), with partial last ones.
        let dim = 70;
        type Planted = &'static [(usize, usize)];
        let sizes: [(usize, usize, Planted); 2] = [
            (9, 23, &[(0, 4), (5, 22), (8, 13)]),
            (
                391,
                300,
                &[(0, 4), (47, 128), (48, 127), (200, 299), (390, 255)],
            ),
        ];
        for (n_queries, n_references, planted) in sizes {
            let references = unit_rows(n_references, dim, 3);
            let mut queries = unit_rows(n_queries, dim, 5);
            for &(q, r) in planted {
                for d in 0..dim {
                    queries[q * dim + d] = references[r * dim + d] + 0.01 * queries[q * dim + d];
                }
                let norm = queries[q * dim..(q + 1) * dim]
                    .iter()
                    .map(|v| v * v)
                    .sum::<f32>()
                    .sqrt();
                queries[q * dim..(q + 1) * dim]
                    .iter_mut()
                    .for_each(|v| *v /= norm);
            }
            for threshold in [0.999f32, 0.9, 0.0, -1.0] {
                let expected = brute(&queries, &references, dim, threshold as f64);
                for use_bf16 in [false, bf16_available()] {
                    let screen = CpuScreen::new(&queries, dim, use_bf16);
                    let found = pairs_at_least(&screen, &queries, &references, dim, threshold);
                    assert_eq!(found, expected, "threshold {threshold}, bf16 {use_bf16}");
                }
                // The engine-backend screen (the GPU's path), here on the CPU backend.
                let screen = BackendScreen::new(engine::CpuBackend, &queries, dim);
                let found = pairs_at_least(&screen, &queries, &references, dim, threshold);
                assert_eq!(found, expected, "threshold {threshold}, backend screen");
            }
            assert_eq!(
                brute(&queries, &references, dim, 0.9)
                    .iter()
                    .map(|p| (p.0, p.1))
                    .collect::<Vec<_>>(),
                planted.to_vec(),
                "{n_queries} x {n_references}"
            );
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3F80);
        assert_eq!(to_bf16(f32::from_bits(0x3F80_8000)), 0x3F80); // tie -> even
        assert_eq!(to_bf16(f32::from_bits(0x3F81_8000)), 0x3F82); // tie -> even
        assert_eq!(to_bf16(f32::from_bits(0x3F80_8001)), 0x3F81);
        assert_eq!(to_bf16(-0.5), 0xBF00);
    }
}
