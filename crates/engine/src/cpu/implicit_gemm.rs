//! Convolution as an implicit GEMM on the [`microkernel`]: the CPU backend's f32 forward
//! pass, weight gradient and stride-1 input gradient, on every [`CpuPath`].
//!
//! `y = W * cols(x) + b`, computed without ever building the im2col matrix:
//!
//! 1. The input is zero-padded and split into `stride x stride` phases, so that for every
//!    kernel tap `(c, ki, kj)` the inputs seen by consecutive output columns of one output row
//!    are consecutive in memory: tap `(c, ki, kj)` of output `(oy, ox)` reads phase
//!    `(ki % s, kj % s)` of channel `c` at row `oy + ki / s`, column `ox + kj / s`.
//! 2. The output columns `(image, oy, ox)` of the whole batch are cut into panels of [`NR`];
//!    each panel's operand (patch x NR) is gathered from the phase planes by contiguous runs
//!    (one run per output row the panel touches), into a buffer that stays in L2.
//! 3. The filters are packed once per call into panels of [`MR`] filters.
//! 4. An `MR x NR` microkernel accumulates the whole patch in registers, starting from the
//!    bias and optionally rectifying at the end (the ReLU that follows every conv of the ZF
//!    net, fused); the tile goes to NCHW through the same runs.
//!
//! Every output is one microkernel chain over the patch in a fixed order, so results depend
//! neither on the number of threads nor on the path. They differ from the generic im2col +
//! GEMM reference ([`super::conv`]) in the last bits only (another summation order); `tests`
//! compares the two.

use rayon::prelude::*;

use super::gather::{copy_run, gather_operand, gather_taps};
use super::microkernel::{MR, NR, SharedOut, gemm, microkernel, pack_panels};
use super::path::CpuPath;
use crate::geometry::ConvGeometry;

/// A 64-byte aligned block of 16 floats, so that packed operands start on cache lines.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// An aligned, zeroed float buffer.
struct AlignedBuffer {
    lines: Vec<Line>,
}

impl AlignedBuffer {
    fn zeros(len: usize) -> Self {
        AlignedBuffer {
            lines: vec![Line([0.0; 16]); len.div_ceil(16)],
        }
    }

    fn as_mut_ptr(&mut self) -> *mut f32 {
        self.lines.as_mut_ptr().cast()
    }

    fn as_ptr(&self) -> *const f32 {
        self.lines.as_ptr().cast()
    }

    fn as_slice(&self, len: usize) -> &[f32] {
        assert!(len <= self.lines.len() * 16);
        // SAFETY: `lines` holds at least `len` initialised floats (Line is 16 f32, repr(C)).
        unsafe { std::slice::from_raw_parts(self.as_ptr(), len) }
    }

    fn as_mut_slice(&mut self, len: usize) -> &mut [f32] {
        assert!(len <= self.lines.len() * 16);
        // SAFETY: as for `as_slice`, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.as_mut_ptr(), len) }
    }
}

/// The padded, phase-split input of a whole batch: per image, per channel, per phase
/// `(r, t)`, a `rows x cols` plane with `plane[a][b] = x_padded[s a + r][s b + t]`.
struct PhasePlanes {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
    image_len: usize,
}

impl PhasePlanes {
    fn new(x: &[f32], g: &ConvGeometry, images: usize) -> Self {
        let s = g.stride;
        let rows = (g.in_h + 2 * g.pad).div_ceil(s);
        let cols = (g.in_w + 2 * g.pad).div_ceil(s);
        let plane = rows * cols;
        let image_len = g.in_channels * s * s * plane;
        let mut data = vec![0.0f32; images * image_len];
        data.par_chunks_mut(image_len)
            .zip(x.par_chunks(g.in_len()))
            .for_each(|(out, image)| {
                for c in 0..g.in_channels {
                    let source = &image[c * g.in_h * g.in_w..][..g.in_h * g.in_w];
                    for r in 0..s {
                        for t in 0..s {
                            let phase = &mut out[((c * s + r) * s + t) * plane..][..plane];
                            for a in 0..rows {
                                let iy = (s * a + r) as isize - g.pad as isize;
                                if iy < 0 || iy >= g.in_h as isize {
                                    continue;
                                }
                                let row = &source[iy as usize * g.in_w..][..g.in_w];
                                let out_row = &mut phase[a * cols..][..cols];
                                // Columns b with 0 <= s b + t - pad < W.
                                let first = g.pad.saturating_sub(t).div_ceil(s);
                                let end = (g.in_w + g.pad - t).div_ceil(s).min(cols);
                                if s == 1 {
                                    let from = first + t - g.pad;
                                    out_row[first..end]
                                        .copy_from_slice(&row[from..from + end - first]);
                                } else {
                                    for (b, value) in out_row[first..end].iter_mut().enumerate() {
                                        *value = row[s * (first + b) + t - g.pad];
                                    }
                                }
                            }
                        }
                    }
                }
            });
        PhasePlanes {
            data,
            rows,
            cols,
            image_len,
        }
    }

    /// Offset of each kernel tap `(c, ki, kj)` (im2col row order) relative to the input of
    /// output `(0, 0)`.
    fn tap_offsets(&self, g: &ConvGeometry) -> Vec<usize> {
        let s = g.stride;
        let plane = self.rows * self.cols;
        let mut offsets = Vec::with_capacity(g.patch_len());
        for c in 0..g.in_channels {
            for ki in 0..g.kernel {
                for kj in 0..g.kernel {
                    let phase = (c * s + ki % s) * s + kj % s;
                    offsets.push(phase * plane + (ki / s) * self.cols + kj / s);
                }
            }
        }
        offsets
    }
}

/// A stretch of a panel's columns that lies in one output row of one image.
#[derive(Clone, Copy, Debug)]
pub(super) struct Run {
    /// First column of the run within the panel.
    pub(super) first: usize,
    pub(super) len: usize,
    /// Phase-plane offset of output `(oy, ox)`'s tap (0, 0, 0).
    pub(super) source: usize,
    /// Offset of the run's first output in channel 0 of `y`.
    target: usize,
}

/// The runs of columns `first..first + count` of the batch's output columns.
fn runs(g: &ConvGeometry, planes: &PhasePlanes, first: usize, count: usize, out: &mut Vec<Run>) {
    out.clear();
    let (oh, ow) = (g.out_h(), g.out_w());
    let plane = oh * ow;
    let mut column = first;
    while column < first + count {
        let (image, position) = (column / plane, column % plane);
        let (oy, ox) = (position / ow, position % ow);
        let len = (ow - ox).min(first + count - column);
        out.push(Run {
            first: column - first,
            len,
            source: image * planes.image_len + oy * planes.cols + ox,
            target: image * g.out_channels * plane + position,
        });
        column += len;
    }
}

/// `y = W * x + b` (then `max(0, .)` when `relu`), as [`super::conv::conv_forward`], on
/// `path` (which this CPU must support).
pub fn conv_forward(
    path: CpuPath,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    g: &ConvGeometry,
    relu: bool,
    y: &mut [f32],
) {
    assert!(path.supported(), "{path} is not supported by this CPU");
    let images = x.len() / g.in_len();
    assert_eq!(x.len(), images * g.in_len());
    assert_eq!(y.len(), images * g.out_len());
    assert_eq!(w.len(), g.weight_len());
    let patch = g.patch_len();
    let planes = PhasePlanes::new(x, g, images);
    let taps = planes.tap_offsets(g);
    // Filters as panels of MR (zero past the last filter), the bias padded alike.
    let filters = pack_panels(w, g.out_channels, patch, patch, 1);
    let mut bias = b.to_vec();
    bias.resize(g.out_channels.div_ceil(MR) * MR, 0.0);
    let columns = images * g.out_h() * g.out_w();
    let panels = columns.div_ceil(NR);
    let out = SharedOut(y.as_mut_ptr());
    let plane = g.out_h() * g.out_w();
    (0..panels).into_par_iter().for_each_init(
        || {
            (
                AlignedBuffer::zeros(patch * NR),
                Vec::new(),
                AlignedBuffer::zeros(MR * NR),
            )
        },
        |(operand, panel_runs, tile), panel| {
            let first = panel * NR;
            let count = NR.min(columns - first);
            runs(g, &planes, first, count, panel_runs);
            // SAFETY: the path is supported (asserted); the operand holds patch x NR floats;
            // every run reads `len` floats of one phase-plane row inside `planes.data` (the
            // phase planes cover every tap of every valid output).
            unsafe {
                gather_operand(
                    path,
                    &planes.data,
                    &taps,
                    panel_runs,
                    count,
                    operand.as_mut_ptr(),
                );
            }
            for (panel_index, filter_panel) in filters.chunks(MR * patch).enumerate() {
                // SAFETY: as above; the tile holds MR x NR floats.
                unsafe {
                    microkernel(
                        path,
                        patch,
                        filter_panel.as_ptr(),
                        operand.as_ptr(),
                        NR,
                        bias[panel_index * MR..].as_ptr(),
                        relu,
                        tile.as_mut_ptr(),
                    );
                }
                let rows = MR.min(g.out_channels - panel_index * MR);
                for m in 0..rows {
                    let channel = panel_index * MR + m;
                    for run in panel_runs.iter() {
                        // SAFETY: `run.target + channel * plane .. + len` lies inside `y`
                        // (one output row of one image) and belongs to this panel only; the
                        // tile row holds NR >= first + len floats.
                        unsafe {
                            copy_run(
                                path,
                                tile.as_ptr().add(m * NR + run.first),
                                out.at(run.target + channel * plane),
                                run.len,
                            );
                        }
                    }
                }
            }
        },
    );
}

/// The adjoint of a stride-1 convolution (its input gradient, and the deconvnet's filtering
/// with transposed filters, §2.1) as another stride-1 convolution: `dy` (N x K x OH x OW)
/// convolved with the filters transposed (K <-> C) and flipped, padded by `kernel - 1 - pad`,
/// gives `dx` (N x C x H x W), overwritten. Needs stride 1 and `pad < kernel`.
pub fn conv_transpose_stride1(
    path: CpuPath,
    dy: &[f32],
    w: &[f32],
    g: &ConvGeometry,
    dx: &mut [f32],
) {
    assert!(
        g.stride == 1 && g.pad < g.kernel,
        "stride 1 with pad < kernel only"
    );
    let transposed = ConvGeometry {
        in_channels: g.out_channels,
        in_h: g.out_h(),
        in_w: g.out_w(),
        out_channels: g.in_channels,
        kernel: g.kernel,
        stride: 1,
        pad: g.kernel - 1 - g.pad,
    };
    debug_assert_eq!((transposed.out_h(), transposed.out_w()), (g.in_h, g.in_w));
    let k = g.kernel;
    let mut flipped = vec![0.0f32; w.len()];
    for filter in 0..g.out_channels {
        for c in 0..g.in_channels {
            let from = &w[(filter * g.in_channels + c) * k * k..][..k * k];
            let to = &mut flipped[(c * g.out_channels + filter) * k * k..][..k * k];
            for (tap, value) in to.iter_mut().enumerate() {
                *value = from[k * k - 1 - tap];
            }
        }
    }
    conv_forward(
        path,
        dy,
        &flipped,
        &vec![0.0; g.in_channels],
        &transposed,
        false,
        dx,
    );
}

/// The adjoint of any convolution (its input gradient, and the deconvnet's filtering) as
/// columns `W^T dY` on the panel [`gemm`] folded back into the image by
/// [`super::conv::col2im`]: the path for strides above 1 and for padding as wide as the
/// kernel. Each column entry is one chain over the filters in order and `col2im` adds the
/// entries in its fixed order, so the result is the same on every path. `dx` is overwritten.
pub fn conv_transpose_by_columns(
    path: CpuPath,
    dy: &[f32],
    w: &[f32],
    g: &ConvGeometry,
    dx: &mut [f32],
) {
    assert!(path.supported(), "{path} is not supported by this CPU");
    let images = dy.len() / g.out_len();
    assert_eq!(dy.len(), images * g.out_len());
    assert_eq!(dx.len(), images * g.in_len());
    assert_eq!(w.len(), g.weight_len());
    let (patch, plane) = (g.patch_len(), g.out_h() * g.out_w());
    // W^T (patch x filters): row `tap`, depth `filter` is w[filter][tap].
    let w_t = pack_panels(w, patch, g.out_channels, 1, patch);
    // Few images (a deconvnet projection of one): each GEMM in parallel instead.
    let parallel_gemm = images < rayon::current_num_threads();
    super::conv::transpose_by_columns(dy, g, dx, |dy_image, cols| {
        gemm(
            path,
            parallel_gemm,
            (patch, g.out_channels, plane),
            &w_t,
            dy_image,
            plane,
            cols,
            plane,
        );
    });
}

/// Images per weight-gradient partial sum (fixed, so that the sum over the batch does not
/// depend on the thread count).
pub const GRADIENT_CHUNK: usize = 8;

/// Output positions per weight-gradient block (the gathered operand: 96 KB).
const POSITION_BLOCK: usize = 512;

/// The weight and bias gradients of [`conv_forward`] (without ReLU): `dw` (K x C k k) and
/// `db` (K) are overwritten with the batch sums. The same microkernel, with the roles
/// changed: the reduction runs over the output positions of [`GRADIENT_CHUNK`] images, the
/// tile is 8 filters x 48 kernel taps. Its operands are the output gradient, packed 8
/// filters per position, and the taps of each position gathered (AVX-512 gathers, 16 taps
/// per instruction on AVX-512) from the phase planes. Chunk partials are added in chunk order.
pub fn conv_weight_gradient(
    path: CpuPath,
    x: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    dw: &mut [f32],
    db: &mut [f32],
) {
    assert!(path.supported(), "{path} is not supported by this CPU");
    let images = x.len() / g.in_len();
    assert_eq!(x.len(), images * g.in_len());
    assert_eq!(dy.len(), images * g.out_len());
    assert_eq!((dw.len(), db.len()), (g.weight_len(), g.out_channels));
    let (filters, patch, plane) = (g.out_channels, g.patch_len(), g.out_h() * g.out_w());
    let filter_panels = filters.div_ceil(MR);
    let tap_panels = patch.div_ceil(NR);
    let partials: Vec<(Vec<f32>, Vec<f32>)> = x
        .par_chunks(GRADIENT_CHUNK * g.in_len())
        .zip(dy.par_chunks(GRADIENT_CHUNK * g.out_len()))
        .map(|(x_chunk, dy_chunk)| {
            let chunk_images = x_chunk.len() / g.in_len();
            let positions = chunk_images * plane;
            let planes = PhasePlanes::new(x_chunk, g, chunk_images);
            let taps: Vec<i32> = planes
                .tap_offsets(g)
                .into_iter()
                .map(|t| t as i32)
                .collect();
            assert!(
                planes.data.len() < i32::MAX as usize,
                "chunk too large for gathers"
            );
            // Phase-plane offset of tap 0 of every position of the chunk.
            let mut sources = Vec::with_capacity(positions);
            let mut chunk_runs = Vec::new();
            runs(g, &planes, 0, positions, &mut chunk_runs);
            for run in &chunk_runs {
                sources.extend((0..run.len).map(|t| (run.source + t) as i32));
            }
            // The output gradient as filter panels: panel i holds, per position, filters
            // i MR .. i MR + MR (zero past the last filter).
            let mut gradient = AlignedBuffer::zeros(filter_panels * positions * MR);
            let packed = gradient.as_mut_slice(filter_panels * positions * MR);
            let mut db_part = vec![0.0f32; filters];
            for (image, dy_image) in dy_chunk.chunks(g.out_len()).enumerate() {
                for (filter, dy_plane) in dy_image.chunks(plane).enumerate() {
                    let panel = &mut packed[(filter / MR) * positions * MR..][..positions * MR];
                    for (position, &value) in dy_plane.iter().enumerate() {
                        panel[(image * plane + position) * MR + filter % MR] = value;
                    }
                    db_part[filter] += dy_plane.iter().sum::<f32>();
                }
            }
            let mut dw_part = vec![0.0f32; filters * patch];
            let mut operand = AlignedBuffer::zeros(POSITION_BLOCK * NR);
            let mut tile = AlignedBuffer::zeros(MR * NR);
            let zero_bias = [0.0f32; MR];
            // Blocks of positions keep the gathered operand in L2 (a chunk of 224x224
            // images has 96,800 conv1 positions); tiles are added in block order.
            for block_start in (0..positions).step_by(POSITION_BLOCK) {
                let block = POSITION_BLOCK.min(positions - block_start);
                for tap_panel in 0..tap_panels {
                    let first_tap = tap_panel * NR;
                    let tap_count = NR.min(patch - first_tap);
                    // SAFETY: the path is supported (asserted); every index is a tap offset
                    // plus a position's source, inside the phase planes; the operand holds
                    // POSITION_BLOCK x NR floats.
                    unsafe {
                        gather_taps(
                            path,
                            &planes.data,
                            &taps[first_tap..first_tap + tap_count],
                            &sources[block_start..block_start + block],
                            operand.as_mut_ptr(),
                        );
                    }
                    for filter_panel in 0..filter_panels {
                        // SAFETY: the gradient panel holds positions x MR floats (this
                        // block's start at block_start MR), the operand block x NR, the
                        // tile MR x NR.
                        unsafe {
                            microkernel(
                                path,
                                block,
                                gradient
                                    .as_ptr()
                                    .add((filter_panel * positions + block_start) * MR),
                                operand.as_ptr(),
                                NR,
                                zero_bias.as_ptr(),
                                false,
                                tile.as_mut_ptr(),
                            );
                        }
                        let tile = tile.as_slice(MR * NR);
                        for m in 0..MR.min(filters - filter_panel * MR) {
                            let filter = filter_panel * MR + m;
                            let sums = &mut dw_part[filter * patch + first_tap..][..tap_count];
                            for (sum, &value) in sums.iter_mut().zip(&tile[m * NR..]) {
                                *sum += value;
                            }
                        }
                    }
                }
            }
            (dw_part, db_part)
        })
        .collect();
    dw.fill(0.0);
    db.fill(0.0);
    for (dw_part, db_part) in partials {
        for (total, part) in dw.iter_mut().zip(dw_part) {
            *total += part;
        }
        for (total, part) in db.iter_mut().zip(db_part) {
            *total += part;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(len: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
        (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// A test case (C, size, K, kernel, stride, pad, images) as a geometry (one column wider
    /// than tall, to catch swapped sides) and its image count.
    fn geometry(
        (in_channels, size, out_channels, kernel, stride, pad, images): (
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
        ),
    ) -> (ConvGeometry, usize) {
        let g = ConvGeometry {
            in_channels,
            in_h: size,
            in_w: size + 1,
            out_channels,
            kernel,
            stride,
            pad,
        };
        (g, images)
    }

    /// The bits of a result, to compare paths exactly (NaN payloads included).
    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|v| v.to_bits()).collect()
    }

    /// Runs `compute` on every path this CPU has, checks each against the reference with
    /// `check`, and asserts that all paths give the same bits.
    fn on_every_path(what: &str, compute: impl Fn(CpuPath) -> Vec<f32>, check: impl Fn(&[f32])) {
        let mut first: Option<(CpuPath, Vec<u32>)> = None;
        for path in CpuPath::supported_paths() {
            let result = compute(path);
            check(&result);
            match &first {
                None => first = Some((path, bits(&result))),
                Some((first_path, first_bits)) => assert!(
                    first_bits == &bits(&result),
                    "{what}: {path} differs from {first_path}"
                ),
            }
        }
    }

    /// Every `got` within `tolerance` (relative, plus as much absolute) of `want`.
    fn assert_close(got: &[f32], want: &[f32], tolerance: f32, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (i, (&a, &b)) in got.iter().zip(want).enumerate() {
            assert!(
                (a - b).abs() <= tolerance * (1.0 + b.abs()),
                "{what}: element {i} is {a}, the reference gives {b}"
            );
        }
    }

    /// Every geometry of the ZF nets' convolutions (scaled down in channels) and awkward
    /// ones: filters not a multiple of MR, columns not a multiple of NR, strides 1-4, padding
    /// wider than the stride.
    #[test]
    fn implicit_gemm_equals_im2col_gemm_with_and_without_relu_on_every_path() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let cases = [
            (3, 28, 48, 5, 1, 2, 3),  // zf_small conv1
            (48, 14, 64, 5, 1, 2, 2), // zf_small conv2
            (64, 7, 96, 3, 1, 1, 5),  // zf_small conv3
            (3, 28, 13, 9, 2, 4, 2),  // krizhevsky_small conv1, 13 filters
            (3, 35, 16, 7, 2, 1, 2),  // zf conv1 shape, smaller
            (16, 17, 20, 5, 2, 0, 3), // zf conv2 shape: no padding, stride 2
            (3, 39, 8, 11, 4, 2, 1),  // krizhevsky conv1: stride 4
            (5, 6, 9, 3, 1, 3, 1),    // padding wider than the stride
        ];
        for case in cases {
            let (g, images) = geometry(case);
            let out_channels = g.out_channels;
            let x = random(images * g.in_len(), &mut rng);
            let w = random(g.weight_len(), &mut rng);
            let b = random(out_channels, &mut rng);
            let mut expected = vec![0.0f32; images * g.out_len()];
            super::super::conv::conv_forward(&x, &w, &b, &g, &mut expected);
            for relu in [false, true] {
                let want: Vec<f32> = if relu {
                    expected.iter().map(|v| v.max(0.0)).collect()
                } else {
                    expected.clone()
                };
                let what = format!("{g:?} relu {relu}");
                on_every_path(
                    &what,
                    |path| {
                        let mut y = vec![f32::NAN; images * g.out_len()];
                        conv_forward(path, &x, &w, &b, &g, relu, &mut y);
                        y
                    },
                    |y| assert_close(y, &want, 1e-4, &what),
                );
            }
        }
    }

    /// The input gradient through the transposed convolution equals col2im(W^T dY).
    #[test]
    fn stride1_transpose_equals_col2im_of_transposed_filters_on_every_path() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for (in_channels, size, out_channels, kernel, pad, images) in [
            (48, 14, 64, 5, 2, 2),
            (64, 7, 96, 3, 1, 3),
            (5, 6, 11, 3, 0, 2),
            (3, 9, 4, 5, 4, 1),
        ] {
            let g = ConvGeometry {
                in_channels,
                in_h: size,
                in_w: size + 2,
                out_channels,
                kernel,
                stride: 1,
                pad,
            };
            let dy = random(images * g.out_len(), &mut rng);
            let w = random(g.weight_len(), &mut rng);
            let mut expected = vec![0.0f32; images * g.in_len()];
            for (dy_image, dx_image) in dy.chunks(g.out_len()).zip(expected.chunks_mut(g.in_len()))
            {
                super::super::conv::conv_transpose(dy_image, &w, &g, dx_image);
            }
            let what = format!("{g:?} input gradient");
            on_every_path(
                &what,
                |path| {
                    let mut dx = vec![f32::NAN; images * g.in_len()];
                    conv_transpose_stride1(path, &dy, &w, &g, &mut dx);
                    dx
                },
                |dx| assert_close(dx, &expected, 1e-4, &what),
            );
        }
    }

    /// The transpose by columns (every strided input gradient and deconvnet step) equals
    /// the generic reference, on every path, for strides 1-4 and padding as wide as the
    /// kernel, with one image (parallel GEMMs) and several (parallel images).
    #[test]
    fn transpose_by_columns_equals_the_reference_on_every_path() {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let cases = [
            (16, 17, 20, 5, 2, 0, 3), // zf conv2: stride 2, no padding
            (3, 28, 13, 9, 2, 4, 1),  // krizhevsky_small conv1, one image
            (3, 39, 8, 11, 4, 2, 2),  // krizhevsky conv1: stride 4
            (5, 6, 9, 3, 1, 3, 2),    // padding as wide as the kernel
            (4, 10, 7, 3, 3, 1, 1),   // stride 3
        ];
        for case in cases {
            let (g, images) = geometry(case);
            let dy = random(images * g.out_len(), &mut rng);
            let w = random(g.weight_len(), &mut rng);
            let mut expected = vec![0.0f32; images * g.in_len()];
            super::super::conv::conv_transpose(&dy, &w, &g, &mut expected);
            let what = format!("{g:?} transpose by columns");
            on_every_path(
                &what,
                |path| {
                    let mut dx = vec![f32::NAN; images * g.in_len()];
                    conv_transpose_by_columns(path, &dy, &w, &g, &mut dx);
                    dx
                },
                |dx| assert_close(dx, &expected, 1e-4, &what),
            );
        }
    }

    /// A NaN input stays NaN through the fused ReLU (a diverged network must show as NaN).
    #[test]
    fn nan_survives_the_fused_relu_on_every_path() {
        let g = ConvGeometry {
            in_channels: 1,
            in_h: 4,
            in_w: 4,
            out_channels: 1,
            kernel: 1,
            stride: 1,
            pad: 0,
        };
        let mut x = vec![-1.0f32; 16];
        x[5] = f32::NAN;
        for path in CpuPath::supported_paths() {
            let mut y = vec![0.0f32; 16];
            conv_forward(path, &x, &[1.0], &[0.0], &g, true, &mut y);
            assert!(y[5].is_nan(), "{path}");
            assert!(
                y.iter().enumerate().all(|(i, v)| i == 5 || *v == 0.0),
                "{path}"
            );
        }
    }

    /// Weight and bias gradients equal those of the im2col + GEMM path.
    #[test]
    fn weight_gradient_equals_im2col_gemm_on_every_path() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        let cases = [
            (3, 28, 48, 5, 1, 2, 10), // zf_small conv1, a chunk and a part
            (48, 14, 64, 5, 1, 2, 3), // zf_small conv2
            (16, 17, 20, 5, 2, 0, 2), // stride 2, no padding
            (3, 39, 13, 11, 4, 2, 1), // stride 4, 13 filters
            (5, 6, 9, 3, 1, 3, 9),    // padding wider than the stride
        ];
        for case in cases {
            let (g, images) = geometry(case);
            let out_channels = g.out_channels;
            let x = random(images * g.in_len(), &mut rng);
            let dy = random(images * g.out_len(), &mut rng);
            let w = vec![0.0f32; g.weight_len()];
            let (mut dw_want, mut db_want) =
                (vec![0.0f32; g.weight_len()], vec![0.0; out_channels]);
            super::super::conv::conv_backward(&x, &w, &dy, &g, None, &mut dw_want, &mut db_want);
            let what = format!("{g:?} dw and db");
            on_every_path(
                &what,
                |path| {
                    let (mut dw, mut db) =
                        (vec![f32::NAN; g.weight_len()], vec![f32::NAN; out_channels]);
                    conv_weight_gradient(path, &x, &dy, &g, &mut dw, &mut db);
                    dw.extend(db);
                    dw
                },
                |got| {
                    assert_close(&got[..g.weight_len()], &dw_want, 1e-3, &what);
                    assert_close(&got[g.weight_len()..], &db_want, 1e-3, &what);
                },
            );
        }
    }

    /// An image's outputs are the same bits whatever batch it is in and wherever: each output
    /// is one microkernel's fixed-order sum, whichever panel (which may span images) holds it.
    #[test]
    fn outputs_do_not_depend_on_the_batch() {
        let path = CpuPath::best();
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        for case in [(48, 14, 64, 5, 1, 2, 5), (3, 35, 16, 7, 2, 1, 3)] {
            let (g, images) = geometry(case);
            let x = random(images * g.in_len(), &mut rng);
            let w = random(g.weight_len(), &mut rng);
            let b = random(g.out_channels, &mut rng);
            let mut batch = vec![0.0f32; images * g.out_len()];
            conv_forward(path, &x, &w, &b, &g, true, &mut batch);
            for image in 0..images {
                let mut alone = vec![0.0f32; g.out_len()];
                conv_forward(
                    path,
                    &x[image * g.in_len()..][..g.in_len()],
                    &w,
                    &b,
                    &g,
                    true,
                    &mut alone,
                );
                assert_eq!(
                    alone,
                    batch[image * g.out_len()..][..g.out_len()],
                    "image {image}"
                );
            }
        }
    }
}
