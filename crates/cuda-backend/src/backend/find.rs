//! cuDNN's Find: the convolution algorithms chosen by running each candidate once on the
//! shape at hand and keeping the fastest, as PyTorch's `cudnn.benchmark = True` does, with
//! the math type each was timed in. cuDNN's heuristics (what `pick_algorithm` asks) guess from
//! the shape alone and are sometimes far off; Find costs a few hundred milliseconds per shape,
//! once (the plan is cached). On by default; `ZFNET_CUDNN_FIND=0` uses the heuristics.
//!
//! cudarc's safe wrappers keep their raw descriptors private, so Find runs on a handle and
//! descriptors of its own (same stream, same shapes); the choice it makes is then used with
//! the safe descriptors. Any failure here falls back to the heuristics, with a warning.

use std::ffi::c_int;
use std::ptr::null_mut;

use cudarc::cudnn::sys;

use super::*;

/// The most workspace a chosen algorithm may take: faster algorithms that need more are
/// passed over (the full ZF net at batch 128 needs far less).
const WORKSPACE_LIMIT: usize = 2 << 30;

/// A cuDNN handle for Find, on the backend's stream.
pub(super) struct Finder {
    handle: sys::cudnnHandle_t,
}

impl Drop for Finder {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        let _ = unsafe { sys::cudnnDestroy(self.handle) };
    }
}

/// One pass's choice: the algorithm, the math type it was timed with, its workspace.
#[derive(Clone, Copy, Debug)]
pub(super) struct Choice<A> {
    pub algorithm: A,
    pub math: cudnnMathType_t,
    pub workspace_bytes: usize,
}

/// Find's choices for the three passes of one shape.
#[derive(Clone, Copy, Debug)]
pub(super) struct Found {
    pub forward: Choice<cudnnConvolutionFwdAlgo_t>,
    pub backward_data: Choice<cudnnConvolutionBwdDataAlgo_t>,
    pub backward_filter: Choice<cudnnConvolutionBwdFilterAlgo_t>,
}

/// Raw descriptors of one convolution, destroyed on drop.
struct Descriptors {
    x: sys::cudnnTensorDescriptor_t,
    y: sys::cudnnTensorDescriptor_t,
    w: sys::cudnnFilterDescriptor_t,
    conv: sys::cudnnConvolutionDescriptor_t,
}

impl Drop for Descriptors {
    fn drop(&mut self) {
        // SAFETY: each was created (or is null, which cuDNN's destroy functions accept) and
        // is destroyed once.
        unsafe {
            let _ = sys::cudnnDestroyTensorDescriptor(self.x);
            let _ = sys::cudnnDestroyTensorDescriptor(self.y);
            let _ = sys::cudnnDestroyFilterDescriptor(self.w);
            let _ = sys::cudnnDestroyConvolutionDescriptor(self.conv);
        }
    }
}

fn uses_tensor_cores(math: cudnnMathType_t) -> bool {
    matches!(
        math,
        cudnnMathType_t::CUDNN_TENSOR_OP_MATH
            | cudnnMathType_t::CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION
    )
}

fn status(result: sys::cudnnStatus_t, what: &str) -> Result<(), String> {
    result.result().map_err(|e| format!("{what}: {e:?}"))
}

impl Finder {
    /// A handle on `stream`.
    pub(super) fn new(stream: &CudaStream) -> Result<Finder, String> {
        let mut handle = null_mut();
        // SAFETY: one out-parameter.
        status(unsafe { sys::cudnnCreate(&mut handle) }, "cudnnCreate")?;
        let finder = Finder { handle };
        // SAFETY: a live handle and the backend's live stream (cuDNN's and the driver's stream
        // types are the same CUstream_st pointer).
        status(
            unsafe { sys::cudnnSetStream(handle, stream.cu_stream() as sys::cudaStream_t) },
            "cudnnSetStream",
        )?;
        Ok(finder)
    }

    fn descriptors(
        g: &ConvGeometry,
        n: usize,
        data_type: sys::cudnnDataType_t,
        math: cudnnMathType_t,
    ) -> Result<Descriptors, String> {
        let mut d = Descriptors {
            x: null_mut(),
            y: null_mut(),
            w: null_mut(),
            conv: null_mut(),
        };
        let i = |value: usize| int(value, "a convolution's dimension") as c_int;
        let nchw = cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
        // SAFETY: out-parameters, then setters on the descriptors just created; `d` destroys
        // them on every path out.
        unsafe {
            status(sys::cudnnCreateTensorDescriptor(&mut d.x), "creating x")?;
            status(sys::cudnnCreateTensorDescriptor(&mut d.y), "creating y")?;
            status(sys::cudnnCreateFilterDescriptor(&mut d.w), "creating w")?;
            status(
                sys::cudnnCreateConvolutionDescriptor(&mut d.conv),
                "creating the convolution",
            )?;
            status(
                sys::cudnnSetTensor4dDescriptor(
                    d.x,
                    nchw,
                    data_type,
                    i(n),
                    i(g.in_channels),
                    i(g.in_h),
                    i(g.in_w),
                ),
                "describing x",
            )?;
            status(
                sys::cudnnSetTensor4dDescriptor(
                    d.y,
                    nchw,
                    data_type,
                    i(n),
                    i(g.out_channels),
                    i(g.out_h()),
                    i(g.out_w()),
                ),
                "describing y",
            )?;
            status(
                sys::cudnnSetFilter4dDescriptor(
                    d.w,
                    data_type,
                    nchw,
                    i(g.out_channels),
                    i(g.in_channels),
                    i(g.kernel),
                    i(g.kernel),
                ),
                "describing w",
            )?;
            status(
                sys::cudnnSetConvolution2dDescriptor(
                    d.conv,
                    i(g.pad),
                    i(g.pad),
                    i(g.stride),
                    i(g.stride),
                    1,
                    1,
                    cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                    sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
                ),
                "describing the convolution",
            )?;
            status(
                sys::cudnnSetConvolutionMathType(d.conv, math),
                "setting the math type",
            )?;
        }
        Ok(d)
    }

    /// Times every algorithm of the three passes of shape `g` over `n` images of
    /// `data_type`, allowed `math` (under `CUDNN_FMA_MATH`, true fp32, no result timed on the
    /// tensor cores is taken), and keeps each pass's fastest within [`WORKSPACE_LIMIT`].
    pub(super) fn find(
        &self,
        g: &ConvGeometry,
        n: usize,
        data_type: sys::cudnnDataType_t,
        math: cudnnMathType_t,
    ) -> Result<Found, String> {
        let d = Self::descriptors(g, n, data_type, math)?;
        let fma_only = math == cudnnMathType_t::CUDNN_FMA_MATH;
        macro_rules! fastest {
            ($find:ident, $perf:ty, $what:expr, ($($desc:expr),+)) => {{
                // SAFETY: plain-old-data structs that cuDNN fills.
                let mut results: [$perf; 16] = unsafe { std::mem::zeroed() };
                let mut returned: c_int = 0;
                // SAFETY: live handle and descriptors; `results` holds 16 entries.
                status(
                    unsafe {
                        sys::$find(self.handle, $($desc),+, 16, &mut returned, results.as_mut_ptr())
                    },
                    $what,
                )?;
                let returned = usize::try_from(returned).unwrap_or(0).min(16);
                for r in &results[..returned] {
                    tracing::debug!(
                        pass = $what,
                        algorithm = ?r.algo,
                        status = ?r.status,
                        ms = r.time,
                        bytes = r.memory,
                        math = ?r.mathType,
                        determinism = ?r.determinism,
                        "cuDNN Find"
                    );
                }
                results[..returned]
                    .iter()
                    .find(|r| {
                        r.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS
                            && r.memory <= WORKSPACE_LIMIT
                            && (!fma_only || !uses_tensor_cores(r.mathType))
                    })
                    .map(|r| Choice {
                        algorithm: r.algo,
                        // True fp32 launches in FMA math whatever cuDNN reports for it.
                        math: if fma_only { math } else { r.mathType },
                        workspace_bytes: r.memory,
                    })
                    .ok_or_else(|| format!("{}: no usable algorithm among {returned}", $what))?
            }};
        }
        let forward = fastest!(
            cudnnFindConvolutionForwardAlgorithm,
            sys::cudnnConvolutionFwdAlgoPerf_t,
            "forward",
            (d.x, d.w, d.conv, d.y)
        );
        let backward_data = fastest!(
            cudnnFindConvolutionBackwardDataAlgorithm,
            sys::cudnnConvolutionBwdDataAlgoPerf_t,
            "backward-data",
            (d.w, d.y, d.conv, d.x)
        );
        let backward_filter = fastest!(
            cudnnFindConvolutionBackwardFilterAlgorithm,
            sys::cudnnConvolutionBwdFilterAlgoPerf_t,
            "backward-filter",
            (d.x, d.y, d.conv, d.w)
        );
        Ok(Found {
            forward,
            backward_data,
            backward_filter,
        })
    }
}
