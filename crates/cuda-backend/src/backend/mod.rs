//! [`CudaBackend`]: the engine's [`Backend`] on one NVIDIA GPU. This module holds the device,
//! its stream, the page-locked input staging and the NVRTC kernels; `cudnn` the
//! convolutions, `cublas` the matrix products, `ops` the [`Backend`] implementation.
//!
//! - Convolutions (forward, backward-data, backward-filter, and the deconvnet's transposed
//!   filtering, which is backward-data) by cuDNN, NCHW, the algorithm chosen once per shape by
//!   cuDNN's heuristics and cached with its workspace size; one workspace buffer, grown on
//!   demand, serves every call.
//! - Fully connected layers by cuBLAS GemmEx (row-major products expressed column-major), f32
//!   or bf16 operands, f32 accumulation and output.
//! - Everything else by the NVRTC kernels of `kernels.cu`, compiled once at start-up.
//!
//! Precision: [`Precision::Fp32`] is true fp32 — cuDNN restricted to FMA kernels and cuBLAS
//! to its default (non-TF32) math, because both would otherwise use TF32 tensor cores on
//! Ampere and later; [`Precision::Tf32`] allows TF32 in both. Buffers stay fp32 either way;
//! [`Precision::Bf16`] casts each product's operands to bf16 as it goes (autocast-style
//! mixed precision; see `conv_bias`).
//!
//! Dropout draws its mask on the device from the same ChaCha stream as the CPU backend (a
//! counter-mode generator, so every thread computes its own block), so a training step matches
//! the CPU's bit for bit in its random choices. Input batches go up as bytes through a
//! page-locked buffer, copied on their own stream (overlapping the compute stream) and
//! cropped on the device. The update keeps its count of
//! renormalised filters on the device: a training step's only host syncs are the loss and the
//! logits its metrics need.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::cublas::CudaBlas;
use cudarc::cublas::sys::{cublasMath_t, cublasOperation_t, cudaDataType};
use cudarc::cudnn::sys::{
    cudnnActivationMode_t, cudnnConvolutionBwdDataAlgo_t, cudnnConvolutionBwdFilterAlgo_t,
    cudnnConvolutionFwdAlgo_t, cudnnConvolutionMode_t, cudnnMathType_t, cudnnNanPropagation_t,
    cudnnTensorFormat_t,
};
use cudarc::cudnn::{
    ActivationDescriptor, ConvBackwardData, ConvBackwardFilter, ConvBiasActivationForward,
    ConvDescriptor, ConvForward, Cudnn, CudnnDataType, FilterDescriptor, TensorDescriptor,
};
use cudarc::driver::{
    CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream, DeviceRepr,
    LaunchConfig, PinnedHostSlice, PushKernelArg,
};
use engine::geometry::{ConvGeometry, LinearGeometry, LrnGeometry, PoolGeometry};
use engine::{Backend, Gradients, Momentum};
use half::bf16;
use imaging::crops::Crop;
use rayon::prelude::*;

use crate::{CudaUnavailable, Precision};

use cudnn::ConvPlan;

const KERNELS: &str = include_str!("../kernels.cu");
const KERNEL_NAMES: [&str; 22] = [
    "map_maxima",
    "to_bf16",
    "from_bf16",
    "from_bf16_bias",
    "add_channel_bias_relu",
    "dropout_chacha",
    "crop_batch",
    "add_channel_bias",
    "channel_sums",
    "max_pool",
    "unpool",
    "lrn_forward",
    "lrn_backward",
    "relu",
    "relu_backward",
    "multiply",
    "add_row_bias",
    "column_sums",
    "softmax_rows",
    "softmax_xent",
    "sgd_momentum",
    "renormalise_filters",
];

/// kernels.cu's `ChaChaKey`: the key of a dropout stream, passed by value.
#[repr(C)]
#[derive(Clone, Copy)]
struct ChaChaKey([u32; 8]);

// SAFETY: a plain array of u32, laid out as the kernel's struct.
unsafe impl DeviceRepr for ChaChaKey {}

/// Where input batches go up: a page-locked host buffer (so the copy is a DMA that does not
/// stage through pageable memory) and the device buffer it is copied to, both grown on demand
/// and reused; and the mean image, uploaded once. The copy runs on its own stream, so that it
/// overlaps whatever the compute stream is still doing; two events order it:
struct InputStaging {
    host: Option<PinnedHostSlice<u8>>,
    device: Option<CudaSlice<u8>>,
    mean: Option<(Vec<f32>, CudaSlice<f32>)>,
    /// Recorded on the copy stream after the last copy: the host buffer is free after it.
    copied: Option<CudaEvent>,
    /// Recorded on the compute stream after the last crop kernel (or the device buffer's
    /// allocation): the device buffer is free after it.
    cropped: Option<CudaEvent>,
}

/// What cuDNN and cuBLAS multiply: f32, or bf16 under [`Precision::Bf16`] (always
/// accumulating in f32).
trait Element: CudnnDataType + DeviceRepr + Copy {
    const ONE: Self;
    const ZERO: Self;
    /// The type as cuBLAS names it.
    const CUBLAS_TYPE: cudaDataType;
    /// A name, to key cuDNN plans.
    const NAME: &'static str;
}

impl Element for f32 {
    const ONE: Self = 1.0;
    const ZERO: Self = 0.0;
    const CUBLAS_TYPE: cudaDataType = cudaDataType::CUDA_R_32F;
    const NAME: &'static str = "f32";
}

impl Element for bf16 {
    const ONE: Self = bf16::ONE;
    const ZERO: Self = bf16::ZERO;
    const CUBLAS_TYPE: cudaDataType = cudaDataType::CUDA_R_16BF;
    const NAME: &'static str = "bf16";
}

/// The GPU backend: a handle on one GPU's context, stream, libraries and kernels. Cloning is
/// cheap and shares them (several networks on one GPU); not meant to be driven from several
/// threads at once (every op is queued on one stream).
#[derive(Clone)]
pub struct CudaBackend {
    inner: Arc<CudaInner>,
}

impl std::ops::Deref for CudaBackend {
    type Target = CudaInner;

    fn deref(&self) -> &CudaInner {
        &self.inner
    }
}

/// What a [`CudaBackend`] shares between its clones.
pub struct CudaInner {
    context: Arc<CudaContext>,
    /// Every kernel and library call runs here, in order.
    stream: Arc<CudaStream>,
    /// Input uploads only (see [`InputStaging`]).
    copy_stream: Arc<CudaStream>,
    blas: CudaBlas,
    cudnn: Arc<Cudnn>,
    precision: Precision,
    _module: Arc<CudaModule>,
    kernels: HashMap<&'static str, CudaFunction>,
    /// Keyed by shape, batch size and element type.
    plans: Mutex<HashMap<(ConvGeometry, usize, &'static str), ConvPlan>>,
    workspace: Mutex<Option<CudaSlice<u8>>>,
    staging: Mutex<InputStaging>,
    /// ReLU for cuDNN's fused convolution-bias-activation call (NaN propagated, as on the CPU).
    relu: ActivationDescriptor<f32>,
    /// Whether `conv_forward_relu` uses cuDNN's fused call; switched off for good the first
    /// time cuDNN refuses it (then: convolution, and one bias+ReLU kernel).
    cudnn_fusion: AtomicBool,
    /// Whether new uninitialised buffers are filled with NaN bytes (the parity check: an
    /// element that no kernel writes then shows).
    poison: AtomicBool,
    /// cuDNN's Find, which chooses convolution algorithms by timing them (`find`); `None`
    /// under `ZFNET_CUDNN_FIND=0` or where it could not start: cuDNN's heuristics choose.
    finder: Option<find::Finder>,
}

// SAFETY: cudarc's `Cudnn` handle is not marked Send/Sync, but the backend only ever issues
// work on its single stream, and the engine drives a network from one thread at a time; the
// cuDNN handle is never used concurrently.
unsafe impl Send for CudaInner {}
// SAFETY: see above; the interior caches are behind mutexes.
unsafe impl Sync for CudaInner {}

fn check<T, E: std::fmt::Debug>(result: Result<T, E>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(error) => stage_api::GpuFailure::raise(format!("{what} failed: {error:?}")),
    }
}

/// `value` as the 32-bit `int` the kernels (and cuDNN and cuBLAS) take; a larger count is a
/// [`stage_api::GpuFailure`] naming `what` (see [`crate::limits::kernel_int`]).
fn int(value: usize, what: &str) -> i32 {
    crate::limits::kernel_int(value, what)
        .unwrap_or_else(|error| stage_api::GpuFailure::raise(error))
}

/// One thread per element, 256 to a block. Every element count is checked against the
/// kernels' 32-bit indexing.
fn launch_1d(len: usize) -> LaunchConfig {
    let blocks = (int(len, "a kernel's element count") as u32)
        .div_ceil(256)
        .max(1);
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A grid of one block per item (`what`: channels, filters, image-map pairs), checked.
fn launch_per_item(items: usize, what: &str) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (int(items, what).max(1) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

macro_rules! launch {
    ($backend:expr, $name:expr, $config:expr, $($arg:expr),+ $(,)?) => {{
        let config = $config;
        let mut builder = $backend.stream.launch_builder($backend.kernel($name));
        $(builder.arg($arg);)+
        // SAFETY: each kernel's argument list in kernels.cu matches these, in order and type.
        check(unsafe { builder.launch(config) }, concat!("kernel ", $name));
    }};
}

// After `launch!`, which they use (a macro is in scope from its definition on).
mod cublas;
mod cudnn;
mod find;
mod nvrtc;
mod ops;

impl CudaBackend {
    /// Opens GPU `ordinal`: a context, one stream, cuBLAS and cuDNN on it, and the kernels.
    pub fn new(ordinal: usize, precision: Precision) -> Result<Self, CudaUnavailable> {
        crate::check_libraries()?;
        let fail = |what: &str, error: String| CudaUnavailable::Init {
            what: what.to_owned(),
            error,
        };
        let context =
            CudaContext::new(ordinal).map_err(|e| fail("opening the GPU", format!("{e:?}")))?;
        // One compute stream orders everything; only the input upload runs on a second stream,
        // ordered by explicit events. cudarc would otherwise, once a second stream exists,
        // record an event at every use of every buffer (host work on each launch), which this
        // backend does not need.
        // SAFETY: called before any buffer of this context exists.
        unsafe { context.disable_event_tracking() };
        let stream = context.default_stream();
        let copy_stream = context
            .new_stream()
            .map_err(|e| fail("creating the upload stream", format!("{e:?}")))?;
        let blas =
            CudaBlas::new(stream.clone()).map_err(|e| fail("starting cuBLAS", format!("{e:?}")))?;
        let math = match precision {
            Precision::Fp32 => cublasMath_t::CUBLAS_DEFAULT_MATH,
            Precision::Tf32 => cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH,
            // bf16 products use the tensor cores under the default math mode.
            Precision::Bf16 => cublasMath_t::CUBLAS_DEFAULT_MATH,
        };
        // SAFETY: a valid handle from CudaBlas::new; the mode is a valid enum value.
        unsafe { cudarc::cublas::sys::cublasSetMathMode(*blas.handle(), math) }
            .result()
            .map_err(|e| fail("setting the cuBLAS math mode", format!("{e:?}")))?;
        let cudnn =
            Cudnn::new(stream.clone()).map_err(|e| fail("starting cuDNN", format!("{e:?}")))?;
        let relu = cudnn
            .create_activation::<f32>(
                cudnnActivationMode_t::CUDNN_ACTIVATION_RELU,
                cudnnNanPropagation_t::CUDNN_PROPAGATE_NAN,
                0.0,
            )
            .map_err(|e| fail("creating the ReLU descriptor", format!("{e:?}")))?;
        let capability = context
            .compute_capability()
            .map_err(|e| fail("reading the compute capability", format!("{e:?}")))?;
        tracing::info!(
            nvrtc = ?nvrtc::nvrtc_version(),
            ?capability,
            "compiling the kernels with NVRTC"
        );
        let ptx = nvrtc::compile_for(KERNELS, capability)
            .map_err(|e| fail("compiling the kernels with NVRTC", e))?;
        let module = context
            .load_module(ptx)
            .map_err(|e| fail("loading the kernels", format!("{e:?}")))?;
        let finder = if std::env::var("ZFNET_CUDNN_FIND").is_ok_and(|v| v == "0") {
            None
        } else {
            find::Finder::new(&stream)
                .inspect_err(|error| {
                    tracing::warn!(%error, "cuDNN's Find is unavailable; cuDNN's heuristics choose")
                })
                .ok()
        };
        let mut kernels = HashMap::new();
        for name in KERNEL_NAMES {
            let function = module
                .load_function(name)
                .map_err(|e| fail(&format!("loading kernel `{name}`"), format!("{e:?}")))?;
            kernels.insert(name, function);
        }
        tracing::info!(
            device = context.name().unwrap_or_default(),
            ?precision,
            "CUDA backend ready"
        );
        Ok(CudaBackend {
            inner: Arc::new(CudaInner {
                context,
                stream,
                copy_stream,
                blas,
                cudnn,
                precision,
                _module: module,
                kernels,
                plans: Mutex::new(HashMap::new()),
                workspace: Mutex::new(None),
                staging: Mutex::new(InputStaging {
                    host: None,
                    device: None,
                    mean: None,
                    copied: None,
                    cropped: None,
                }),
                relu,
                cudnn_fusion: AtomicBool::new(true),
                poison: AtomicBool::new(false),
                finder,
            }),
        })
    }
}

impl CudaInner {
    /// The GPU's name.
    pub fn device_name(&self) -> String {
        self.context.name().unwrap_or_else(|_| "?".to_owned())
    }

    /// Waits for all queued work (for timing).
    pub fn synchronize(&self) {
        check(self.stream.synchronize(), "synchronising the stream");
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Whether convolution, bias and ReLU run as one cuDNN call (see `conv_forward_relu`).
    pub fn cudnn_fusion(&self) -> bool {
        self.cudnn_fusion.load(Ordering::Relaxed)
    }

    /// Turns cuDNN's fused convolution-bias-ReLU call on or off (for comparisons).
    pub fn set_cudnn_fusion(&self, on: bool) {
        self.cudnn_fusion.store(on, Ordering::Relaxed);
    }

    pub(super) fn kernel(&self, name: &str) -> &CudaFunction {
        self.kernels
            .get(name)
            .unwrap_or_else(|| panic!("CUDA backend: no kernel `{name}`"))
    }

    pub(super) fn is_bf16(&self) -> bool {
        self.precision == Precision::Bf16
    }

    /// Fills every buffer allocated from now on without initialising it ([`Self::scratch`],
    /// the ops' outputs, switches) with NaN bytes (0xFF), when `on`: for the parity check, so
    /// that an element a kernel fails to write is a NaN, which fails its row, rather than a
    /// plausible leftover.
    pub fn poison_outputs(&self, on: bool) {
        self.poison.store(on, Ordering::Relaxed);
    }

    /// An uninitialised device buffer of `len` elements, for outputs that a kernel or library
    /// call overwrites (NaN bytes under [`Self::poison_outputs`]). Never a zero-byte
    /// allocation (`cuMemAllocAsync` of 0 bytes fails on some drivers and leaves a null
    /// pointer on others): an empty buffer owns one element and has length 0.
    pub(super) fn scratch<T: DeviceRepr>(&self, len: usize) -> CudaSlice<T> {
        // SAFETY: every caller writes the whole buffer before reading it (or poisons it).
        let mut slice = check(unsafe { self.stream.alloc::<T>(len.max(1)) }, "allocating");
        if self.poison.load(Ordering::Relaxed) {
            let bytes = len.max(1) * std::mem::size_of::<T>();
            let (pointer, _record) =
                cudarc::driver::DevicePtrMut::device_ptr_mut(&mut slice, &self.stream);
            // SAFETY: `bytes` is the allocation's size; queued on the buffer's stream.
            let filled = unsafe {
                cudarc::driver::result::memset_d8_async(
                    pointer,
                    0xFF,
                    bytes,
                    self.stream.cu_stream(),
                )
            };
            check(filled, "poisoning a new buffer");
        }
        if len > 0 {
            return slice;
        }
        let pointer = slice.leak();
        // SAFETY: the pointer is the one-element allocation just leaked; the new slice owns it
        // (and frees it once) and claims none of it.
        unsafe { self.stream.upgrade_device_ptr::<T>(pointer, 0) }
    }

    /// `data` on the device (an empty slice without a zero-byte allocation or copy).
    pub(super) fn to_device<T: DeviceRepr>(&self, data: &[T], what: &str) -> CudaSlice<T> {
        if data.is_empty() {
            return self.scratch(0);
        }
        check(self.stream.clone_htod(data), what)
    }

    /// `buffer` on the host (no copy for an empty buffer).
    pub(super) fn to_host<T: DeviceRepr + Default + Clone>(
        &self,
        buffer: &CudaSlice<T>,
        what: &str,
    ) -> Vec<T> {
        if buffer.is_empty() {
            return Vec::new();
        }
        check(self.stream.clone_dtoh(buffer), what)
    }

    /// `x` rounded to bf16 (nearest even).
    pub(super) fn to_bf16(&self, x: &CudaSlice<f32>) -> CudaSlice<bf16> {
        let mut y = self.scratch::<bf16>(x.len());
        let len = i64::from(int(x.len(), "a bf16 conversion"));
        launch!(self, "to_bf16", launch_1d(x.len()), x, &mut y, &len);
        y
    }

    /// `x` widened to f32, into `y`.
    pub(super) fn widen_bf16(&self, x: &CudaSlice<bf16>, y: &mut CudaSlice<f32>) {
        let len = i64::from(int(y.len(), "a bf16 conversion"));
        launch!(self, "from_bf16", launch_1d(y.len()), x, y, &len);
    }
}

#[cfg(test)]
mod tests {
    /// NVRTC needs no GPU: where its library is installed, the kernels are compiled for real
    /// (CI without CUDA skips, saying so).
    #[test]
    fn the_kernels_compile_with_nvrtc() {
        // SAFETY: only tries to load the library.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            eprintln!("skipped: NVRTC (libnvrtc) is not installed here");
            return;
        }
        let ptx = cudarc::nvrtc::compile_ptx(super::KERNELS).expect("kernels.cu compiles");
        let text = ptx.to_src();
        for name in super::KERNEL_NAMES {
            assert!(text.contains(name), "kernel `{name}` is in the PTX");
        }
    }
}
