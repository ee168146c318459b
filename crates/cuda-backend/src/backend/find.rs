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

/// A cuDNN handle for Find, on the backend's stream (held, so that the stream and its
/// context outlive the handle; the context is bound to the calling thread before each use).
pub(super) struct Finder {
    handle: sys::cudnnHandle_t,
    stream: Arc<CudaStream>,
}

impl Drop for Finder {
    fn drop(&mut self) {
        let _ = self.stream.context().bind_to_thread();
        // SAFETY: created in `new`, destroyed once, with its context current.
        let _ = unsafe { sys::cudnnDestroy(self.handle) };
    }
}

/// cuDNN's `cudnnConvolution*AlgoPerf_t`, read as plain integers: cudarc's structs hold Rust
/// enums, and a newer cuDNN (a pip wheel) may write a value that cudarc's enum lacks, which
/// would be undefined behaviour to read. The three structs share this layout.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RawPerf {
    algorithm: u32,
    status: u32,
    time: f32,
    memory: usize,
    determinism: u32,
    math_type: u32,
    reserved: [c_int; 3],
}

const _: () = {
    assert!(
        std::mem::size_of::<RawPerf>() == std::mem::size_of::<sys::cudnnConvolutionFwdAlgoPerf_t>()
    );
    assert!(
        std::mem::size_of::<RawPerf>()
            == std::mem::size_of::<sys::cudnnConvolutionBwdDataAlgoPerf_t>()
    );
    assert!(
        std::mem::size_of::<RawPerf>()
            == std::mem::size_of::<sys::cudnnConvolutionBwdFilterAlgoPerf_t>()
    );
};

/// The math type cuDNN reported, if it is one cudarc knows.
fn math_type(value: u32) -> Option<cudnnMathType_t> {
    [
        cudnnMathType_t::CUDNN_DEFAULT_MATH,
        cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
        cudnnMathType_t::CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION,
        cudnnMathType_t::CUDNN_FMA_MATH,
    ]
    .into_iter()
    .find(|&math| math as u32 == value)
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
        // SAFETY: each non-null one was created and is destroyed once.
        unsafe {
            if !self.x.is_null() {
                let _ = sys::cudnnDestroyTensorDescriptor(self.x);
            }
            if !self.y.is_null() {
                let _ = sys::cudnnDestroyTensorDescriptor(self.y);
            }
            if !self.w.is_null() {
                let _ = sys::cudnnDestroyFilterDescriptor(self.w);
            }
            if !self.conv.is_null() {
                let _ = sys::cudnnDestroyConvolutionDescriptor(self.conv);
            }
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
    pub(super) fn new(stream: &Arc<CudaStream>) -> Result<Finder, String> {
        stream
            .context()
            .bind_to_thread()
            .map_err(|e| format!("binding the context: {e:?}"))?;
        let mut handle = null_mut();
        // SAFETY: one out-parameter.
        status(unsafe { sys::cudnnCreate(&mut handle) }, "cudnnCreate")?;
        let finder = Finder {
            handle,
            stream: stream.clone(),
        };
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
        // the ones created on every path out.
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
        self.stream
            .context()
            .bind_to_thread()
            .map_err(|e| format!("binding the context: {e:?}"))?;
        let d = Self::descriptors(g, n, data_type, math)?;
        let fma_only = math == cudnnMathType_t::CUDNN_FMA_MATH;
        macro_rules! fastest {
            ($find:ident, $perf:ty, $algorithms:expr, $what:expr, ($($desc:expr),+)) => {{
                let mut results = [RawPerf::default(); 16];
                let mut returned: c_int = 0;
                // SAFETY: live handle and descriptors; `results` holds 16 entries of the
                // layout cuDNN writes (asserted above).
                status(
                    unsafe {
                        sys::$find(
                            self.handle,
                            $($desc),+,
                            16,
                            &mut returned,
                            results.as_mut_ptr().cast::<$perf>(),
                        )
                    },
                    $what,
                )?;
                let returned = usize::try_from(returned).unwrap_or(0).min(16);
                for r in &results[..returned] {
                    tracing::debug!(
                        pass = $what,
                        algorithm = r.algorithm,
                        status = r.status,
                        ms = r.time,
                        bytes = r.memory,
                        math = r.math_type,
                        determinism = r.determinism,
                        "cuDNN Find"
                    );
                }
                results[..returned]
                    .iter()
                    .filter(|r| r.status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS as u32)
                    .filter(|r| r.memory <= WORKSPACE_LIMIT)
                    .find_map(|r| {
                        let algorithm = $algorithms
                            .into_iter()
                            .find(|&known| known as u32 == r.algorithm)?;
                        let reported = math_type(r.math_type)?;
                        if fma_only && uses_tensor_cores(reported) {
                            return None;
                        }
                        Some(Choice {
                            algorithm,
                            // True fp32 launches in FMA math whatever cuDNN reports for it.
                            math: if fma_only { math } else { reported },
                            workspace_bytes: r.memory,
                        })
                    })
                    .ok_or_else(|| format!("{}: no usable algorithm among {returned}", $what))?
            }};
        }
        use cudnnConvolutionBwdDataAlgo_t as Data;
        use cudnnConvolutionBwdFilterAlgo_t as Filter;
        use cudnnConvolutionFwdAlgo_t as Forward;
        let forward = fastest!(
            cudnnFindConvolutionForwardAlgorithm,
            sys::cudnnConvolutionFwdAlgoPerf_t,
            [
                Forward::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
                Forward::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
                Forward::CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
                Forward::CUDNN_CONVOLUTION_FWD_ALGO_DIRECT,
                Forward::CUDNN_CONVOLUTION_FWD_ALGO_FFT,
                Forward::CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING,
                Forward::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD,
                Forward::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED,
            ],
            "forward",
            (d.x, d.w, d.conv, d.y)
        );
        let backward_data = fastest!(
            cudnnFindConvolutionBackwardDataAlgorithm,
            sys::cudnnConvolutionBwdDataAlgoPerf_t,
            [
                Data::CUDNN_CONVOLUTION_BWD_DATA_ALGO_0,
                Data::CUDNN_CONVOLUTION_BWD_DATA_ALGO_1,
                Data::CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT,
                Data::CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING,
                Data::CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD,
                Data::CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED,
            ],
            "backward-data",
            (d.w, d.y, d.conv, d.x)
        );
        let backward_filter = fastest!(
            cudnnFindConvolutionBackwardFilterAlgorithm,
            sys::cudnnConvolutionBwdFilterAlgoPerf_t,
            [
                Filter::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0,
                Filter::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1,
                Filter::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT,
                Filter::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3,
                Filter::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD,
                Filter::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED,
                Filter::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING,
            ],
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
