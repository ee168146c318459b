//! [`CudaBackend`]: the engine's [`Backend`] on one NVIDIA GPU.
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

const KERNELS: &str = include_str!("kernels.cu");
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

/// The cuDNN descriptors of one convolution call over elements `T`.
struct ConvDescriptors<T> {
    x: TensorDescriptor<T>,
    w: FilterDescriptor<T>,
    conv: ConvDescriptor<f32>,
    y: TensorDescriptor<T>,
}

/// cuDNN's choices for one convolution shape.
#[derive(Clone, Copy, Debug)]
struct ConvPlan {
    forward: cudnnConvolutionFwdAlgo_t,
    backward_data: cudnnConvolutionBwdDataAlgo_t,
    backward_filter: cudnnConvolutionBwdFilterAlgo_t,
    workspace_bytes: usize,
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

fn launch_1d(len: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((len as u32).div_ceil(256).max(1), 1, 1),
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
        let ptx = cudarc::nvrtc::compile_ptx(KERNELS)
            .map_err(|e| fail("compiling the kernels with NVRTC", format!("{e:?}")))?;
        let module = context
            .load_module(ptx)
            .map_err(|e| fail("loading the kernels", format!("{e:?}")))?;
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

    /// y = relu(conv(x, w) + b) in one cuDNN call; an error if cuDNN refuses the call.
    fn convolve_bias_relu(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        g: &ConvGeometry,
        y: &mut CudaSlice<f32>,
    ) -> Result<(), String> {
        let n = x.len() / g.in_len();
        let bias = self.tensor::<f32>([1, g.out_channels, 1, 1]);
        self.with_conv::<f32, _>(g, n, |plan, d, workspace| {
            let op = ConvBiasActivationForward {
                conv: &d.conv,
                act: &self.relu,
                x: &d.x,
                w: &d.w,
                z: &d.y,
                bias: &bias,
                y: &d.y,
            };
            // cuDNN computes act(alpha1 conv(x) + alpha2 z + bias); with alpha2 = 0 the side
            // input z is y itself (cuDNN allows z to alias y), borrowed here through a second
            // handle on y's memory that is leaked, not freed, afterwards.
            // z = y is read (times 0) before it is written: it must hold numbers, not
            // whatever an uninitialised output buffer held (0 * NaN is NaN).
            check(self.stream.memset_zeros(y), "clearing the output");
            let (y_ptr, record) = cudarc::driver::DevicePtr::device_ptr(&*y, &self.stream);
            drop(record);
            // SAFETY: y_ptr is y's live allocation of y.len() f32s; `z` is leaked below, so
            // the memory is freed once, by y.
            let z = unsafe { self.stream.upgrade_device_ptr::<f32>(y_ptr, y.len()) };
            // SAFETY: x, w, z, y have the descriptors' shapes (NCHW f32), b is K floats.
            let launched = unsafe {
                op.launch(
                    plan.forward,
                    Some(workspace),
                    (1.0f32, 0.0f32),
                    x,
                    w,
                    &z,
                    b,
                    y,
                )
            };
            z.leak();
            launched.map_err(|error| format!("{error:?}"))
        })
    }

    fn kernel(&self, name: &str) -> &CudaFunction {
        self.kernels
            .get(name)
            .unwrap_or_else(|| panic!("CUDA backend: no kernel `{name}`"))
    }

    fn tensor<T: Element>(&self, dims: [usize; 4]) -> TensorDescriptor<T> {
        check(
            self.cudnn.create_4d_tensor::<T>(
                cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                dims.map(|d| d as i32),
            ),
            "creating a tensor descriptor",
        )
    }

    /// Descriptors of a convolution over `n` images.
    fn conv_descriptors<T: Element>(&self, g: &ConvGeometry, n: usize) -> ConvDescriptors<T> {
        let x = self.tensor([n, g.in_channels, g.in_h, g.in_w]);
        let y = self.tensor([n, g.out_channels, g.out_h(), g.out_w()]);
        let w = check(
            self.cudnn.create_4d_filter::<T>(
                cudnnTensorFormat_t::CUDNN_TENSOR_NCHW,
                [g.out_channels, g.in_channels, g.kernel, g.kernel].map(|d| d as i32),
            ),
            "creating a filter descriptor",
        );
        let mut conv = check(
            self.cudnn.create_conv2d::<f32>(
                [g.pad as i32; 2],
                [g.stride as i32; 2],
                [1, 1],
                cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
            ),
            "creating a convolution descriptor",
        );
        let math = match self.precision {
            Precision::Fp32 => cudnnMathType_t::CUDNN_FMA_MATH,
            Precision::Tf32 | Precision::Bf16 => cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
        };
        check(conv.set_math_type(math), "setting the cuDNN math type");
        ConvDescriptors { x, w, conv, y }
    }

    /// The cached plan for a shape, choosing it on first use.
    fn plan<T: Element>(&self, g: &ConvGeometry, n: usize) -> ConvPlan {
        let key = (*g, n, T::NAME);
        let mut plans = self.plans.lock().expect("plans lock");
        if let Some(plan) = plans.get(&key) {
            return *plan;
        }
        let d = self.conv_descriptors::<T>(g, n);
        let forward_op = ConvForward {
            conv: &d.conv,
            x: &d.x,
            w: &d.w,
            y: &d.y,
        };
        let forward = check(forward_op.pick_algorithm(), "choosing a forward algorithm");
        let data_op = ConvBackwardData {
            conv: &d.conv,
            dx: &d.x,
            w: &d.w,
            dy: &d.y,
        };
        let backward_data = check(
            data_op.pick_algorithm(),
            "choosing a backward-data algorithm",
        );
        let filter_op = ConvBackwardFilter {
            conv: &d.conv,
            x: &d.x,
            dw: &d.w,
            dy: &d.y,
        };
        let backward_filter = check(
            filter_op.pick_algorithm(),
            "choosing a backward-filter algorithm",
        );
        let workspace_bytes = [
            check(
                forward_op.get_workspace_size(forward),
                "forward workspace size",
            ),
            check(
                data_op.get_workspace_size(backward_data),
                "backward-data workspace size",
            ),
            check(
                filter_op.get_workspace_size(backward_filter),
                "backward-filter workspace size",
            ),
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        let plan = ConvPlan {
            forward,
            backward_data,
            backward_filter,
            workspace_bytes,
        };
        tracing::debug!(?g, n, ?plan, "cuDNN plan");
        plans.insert(key, plan);
        plan
    }

    /// Runs one cuDNN convolution call of shape `g` over `n` images: `f` gets the cached plan,
    /// fresh descriptors and a workspace big enough for the plan.
    fn with_conv<T: Element, R>(
        &self,
        g: &ConvGeometry,
        n: usize,
        f: impl FnOnce(&ConvPlan, &ConvDescriptors<T>, &mut CudaSlice<u8>) -> R,
    ) -> R {
        let plan = self.plan::<T>(g, n);
        let descriptors = self.conv_descriptors::<T>(g, n);
        self.with_workspace(plan.workspace_bytes, |workspace| {
            f(&plan, &descriptors, workspace)
        })
    }

    /// Runs `f` with a workspace of at least `bytes` (grown, never shrunk).
    fn with_workspace<R>(&self, bytes: usize, f: impl FnOnce(&mut CudaSlice<u8>) -> R) -> R {
        let mut workspace = self.workspace.lock().expect("workspace lock");
        let big_enough = workspace.as_ref().is_some_and(|w| w.len() >= bytes.max(1));
        if !big_enough {
            *workspace = Some(check(
                self.stream.alloc_zeros::<u8>(bytes.max(1)),
                "allocating the cuDNN workspace",
            ));
        }
        f(workspace.as_mut().expect("allocated above"))
    }

    /// y = conv(x, w) (no bias) over elements `T`.
    fn conv_forward_of<T: Element>(
        &self,
        x: &CudaSlice<T>,
        w: &CudaSlice<T>,
        g: &ConvGeometry,
        y: &mut CudaSlice<T>,
    ) {
        let n = x.len() / g.in_len();
        self.with_conv::<T, _>(g, n, |plan, d, workspace| {
            let op = ConvForward {
                conv: &d.conv,
                x: &d.x,
                w: &d.w,
                y: &d.y,
            };
            // SAFETY: x, w, y have the descriptors' shapes (NCHW).
            let launched =
                unsafe { op.launch(plan.forward, Some(workspace), (T::ONE, T::ZERO), x, w, y) };
            check(launched, "cuDNN convolution forward");
        });
    }

    /// dx = the input gradient of a convolution, given dy (also the deconvnet's filtering).
    fn conv_data_backward_of<T: Element>(
        &self,
        dy: &CudaSlice<T>,
        w: &CudaSlice<T>,
        g: &ConvGeometry,
        dx: &mut CudaSlice<T>,
    ) {
        let n = dy.len() / g.out_len();
        self.with_conv::<T, _>(g, n, |plan, d, workspace| {
            let op = ConvBackwardData {
                conv: &d.conv,
                dx: &d.x,
                w: &d.w,
                dy: &d.y,
            };
            // SAFETY: dy, w, dx have the descriptors' shapes (NCHW): the engine allocates
            // them from the same geometry.
            let launched = unsafe {
                op.launch(
                    plan.backward_data,
                    Some(workspace),
                    (T::ONE, T::ZERO),
                    dx,
                    w,
                    dy,
                )
            };
            check(launched, "cuDNN convolution backward-data");
        });
    }

    /// dw = the filter gradient of a convolution.
    fn conv_filter_backward_of<T: Element>(
        &self,
        x: &CudaSlice<T>,
        dy: &CudaSlice<T>,
        g: &ConvGeometry,
        dw: &mut CudaSlice<T>,
    ) {
        let n = x.len() / g.in_len();
        self.with_conv::<T, _>(g, n, |plan, d, workspace| {
            let op = ConvBackwardFilter {
                conv: &d.conv,
                x: &d.x,
                dw: &d.w,
                dy: &d.y,
            };
            // SAFETY: x, dw, dy have the descriptors' shapes (NCHW).
            let launched = unsafe {
                op.launch(
                    plan.backward_filter,
                    Some(workspace),
                    (T::ONE, T::ZERO),
                    x,
                    dw,
                    dy,
                )
            };
            check(launched, "cuDNN convolution backward-filter");
        });
    }

    fn is_bf16(&self) -> bool {
        self.precision == Precision::Bf16
    }

    /// An uninitialised device buffer, for outputs that a kernel or library call overwrites.
    fn scratch<T: DeviceRepr>(&self, len: usize) -> CudaSlice<T> {
        // SAFETY: every caller writes the whole buffer before reading it.
        check(unsafe { self.stream.alloc::<T>(len.max(1)) }, "allocating")
    }

    /// `x` rounded to bf16 (nearest even).
    fn to_bf16(&self, x: &CudaSlice<f32>) -> CudaSlice<bf16> {
        let mut y = self.scratch::<bf16>(x.len());
        let len = x.len() as i64;
        launch!(self, "to_bf16", launch_1d(x.len()), x, &mut y, &len);
        y
    }

    /// `x` widened to f32, into `y`.
    fn widen_bf16(&self, x: &CudaSlice<bf16>, y: &mut CudaSlice<f32>) {
        let len = y.len() as i64;
        launch!(self, "from_bf16", launch_1d(y.len()), x, y, &len);
    }

    /// y = conv(x, w) + b, rectified when `relu`: in f32 (or TF32), or in bf16 with the bias
    /// (and ReLU) applied as the result is widened back to f32.
    fn conv_bias(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        g: &ConvGeometry,
        y: &mut CudaSlice<f32>,
        relu: bool,
    ) {
        let total = y.len() as i32;
        let (channels, plane) = (g.out_channels as i32, (g.out_h() * g.out_w()) as i32);
        if self.is_bf16() {
            let (x16, w16) = (self.to_bf16(x), self.to_bf16(w));
            let mut y16 = self.scratch::<bf16>(y.len());
            self.conv_forward_of(&x16, &w16, g, &mut y16);
            let relu = i32::from(relu);
            launch!(
                self,
                "from_bf16_bias",
                launch_1d(y.len()),
                &y16,
                b,
                y,
                &total,
                &channels,
                &plane,
                &relu
            );
            return;
        }
        self.conv_forward_of(x, w, g, y);
        if relu {
            launch!(
                self,
                "add_channel_bias_relu",
                launch_1d(y.len()),
                y,
                b,
                &total,
                &channels,
                &plane
            );
        } else {
            launch!(
                self,
                "add_channel_bias",
                launch_1d(y.len()),
                y,
                b,
                &total,
                &channels,
                &plane
            );
        }
    }

    /// The input gradient (or deconvnet filtering) in the backend's precision.
    fn conv_data_backward(
        &self,
        dy: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        g: &ConvGeometry,
        dx: &mut CudaSlice<f32>,
    ) {
        if self.is_bf16() {
            let (dy16, w16) = (self.to_bf16(dy), self.to_bf16(w));
            self.conv_data_backward_bf16(&dy16, &w16, g, dx);
        } else {
            self.conv_data_backward_of(dy, w, g, dx);
        }
    }

    fn conv_data_backward_bf16(
        &self,
        dy16: &CudaSlice<bf16>,
        w16: &CudaSlice<bf16>,
        g: &ConvGeometry,
        dx: &mut CudaSlice<f32>,
    ) {
        let mut dx16 = self.scratch::<bf16>(dx.len());
        self.conv_data_backward_of(dy16, w16, g, &mut dx16);
        self.widen_bf16(&dx16, dx);
    }

    /// Column-major C (f32) = op(A) op(B): SGEMM on f32 operands (TF32 where allowed), or
    /// GemmEx on bf16 operands with f32 accumulation and output.
    fn gemm<T: Element>(
        &self,
        (transa, transb): (bool, bool),
        (m, n, k): (usize, usize, usize),
        (a, lda): (&CudaSlice<T>, usize),
        (b, ldb): (&CudaSlice<T>, usize),
        (c, ldc): (&mut CudaSlice<f32>, usize),
    ) {
        use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t};
        use cudarc::driver::{DevicePtr, DevicePtrMut};
        let op = |t: bool| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        let element = T::CUBLAS_TYPE;
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (a_ptr, _a_guard) = a.device_ptr(&self.stream);
        let (b_ptr, _b_guard) = b.device_ptr(&self.stream);
        let (c_ptr, _c_guard) = c.device_ptr_mut(&self.stream);
        // SAFETY: the dimensions and leading dimensions describe buffers of the lengths the
        // engine allocated (checked by the callers' shapes); alpha and beta are f32 as the
        // 32F compute type requires; the handle is on this backend's stream.
        let result = unsafe {
            cudarc::cublas::result::gemm_ex(
                *self.blas.handle(),
                op(transa),
                op(transb),
                m as i32,
                n as i32,
                k as i32,
                (&alpha) as *const f32 as *const _,
                a_ptr as *const _,
                element,
                lda as i32,
                b_ptr as *const _,
                element,
                ldb as i32,
                (&beta) as *const f32 as *const _,
                c_ptr as *mut _,
                cudaDataType::CUDA_R_32F,
                ldc as i32,
                match self.precision {
                    Precision::Fp32 => cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    Precision::Tf32 => cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
                    Precision::Bf16 => cublasComputeType_t::CUBLAS_COMPUTE_32F,
                },
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        };
        check(result, "cuBLAS GEMM");
    }
}

impl Backend for CudaBackend {
    type Buffer = CudaSlice<f32>;
    type Switches = CudaSlice<u32>;
    type Counter = CudaSlice<u32>;
    /// Each row's loss, on the device until read.
    type Loss = CudaSlice<f32>;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn zeros(&self, len: usize) -> CudaSlice<f32> {
        if len == 0 {
            return check(self.stream.null::<f32>(), "allocating an empty buffer");
        }
        check(self.stream.alloc_zeros::<f32>(len), "allocating")
    }

    fn output(&self, len: usize) -> CudaSlice<f32> {
        // Every kernel and library call of this backend writes all of its output.
        if len == 0 {
            return self.zeros(0);
        }
        self.scratch(len)
    }

    fn upload(&self, data: &[f32]) -> CudaSlice<f32> {
        check(self.stream.clone_htod(data), "uploading")
    }

    fn download(&self, buffer: &CudaSlice<f32>) -> Vec<f32> {
        check(self.stream.clone_dtoh(buffer), "downloading")
    }

    fn copy(&self, buffer: &CudaSlice<f32>) -> CudaSlice<f32> {
        check(self.stream.clone_dtod(buffer), "copying on the device")
    }

    fn len(&self, buffer: &CudaSlice<f32>) -> usize {
        buffer.len()
    }

    fn switches(&self, len: usize) -> CudaSlice<u32> {
        // Written in full by max_pool.
        self.scratch(len)
    }

    fn download_switches(&self, switches: &CudaSlice<u32>) -> Vec<u32> {
        check(self.stream.clone_dtoh(switches), "downloading switches")
    }

    fn counter(&self) -> CudaSlice<u32> {
        check(self.stream.alloc_zeros::<u32>(1), "allocating a counter")
    }

    fn take_count(&self, counter: &mut CudaSlice<u32>) -> u64 {
        let value = check(self.stream.clone_dtoh(counter), "downloading a counter")[0];
        check(self.stream.memset_zeros(counter), "resetting a counter");
        value as u64
    }

    fn crop_batch(
        &self,
        images: &[&[u8]],
        image_size: usize,
        crops: &[Crop],
        crop_size: usize,
        mean: &[f32],
    ) -> CudaSlice<f32> {
        assert_eq!(images.len(), crops.len(), "one crop per image");
        let image_len = image_size * image_size * 3;
        let total = images.len() * image_len;
        let mut staging = self.staging.lock().expect("staging lock");
        let staging = &mut *staging;
        // The host buffer is free once the previous copy out of it is done.
        if let Some(copied) = &staging.copied {
            check(copied.synchronize(), "waiting for the previous input copy");
        }
        if staging.host.as_ref().is_none_or(|h| h.len() < total) {
            // SAFETY: the buffer is written below before it is read.
            let host = unsafe { self.context.alloc_pinned::<u8>(total.max(1)) };
            staging.host = Some(check(host, "allocating page-locked input memory"));
            staging.device = Some(check(
                self.stream.alloc_zeros::<u8>(total.max(1)),
                "allocating the input bytes",
            ));
            staging.cropped = Some(check(
                self.stream.record_event(None),
                "recording the input allocation",
            ));
        }
        let host = staging.host.as_mut().expect("allocated above");
        let device = staging.device.as_mut().expect("allocated above");
        let host_bytes = check(host.as_mut_slice(), "opening the input buffer");
        host_bytes[..total]
            .par_chunks_mut(image_len)
            .zip(images)
            .for_each(|(out, image)| out.copy_from_slice(image));
        // The device buffer is free once the previous batch's crops were cut from it.
        if let Some(cropped) = &staging.cropped {
            check(self.copy_stream.wait(cropped), "ordering the input copy");
        }
        check(
            self.copy_stream.memcpy_htod(&*host, device),
            "uploading images",
        );
        let copied = check(
            self.copy_stream.record_event(None),
            "recording the input copy",
        );
        check(self.stream.wait(&copied), "waiting for the input copy");
        staging.copied = Some(copied);
        if staging
            .mean
            .as_ref()
            .is_none_or(|(cached, _)| cached != mean)
        {
            let on_device = check(self.stream.clone_htod(mean), "uploading the mean image");
            staging.mean = Some((mean.to_vec(), on_device));
        }
        let (_, mean_device) = staging.mean.as_ref().expect("uploaded above");
        let table: Vec<i32> = crops
            .iter()
            .flat_map(|c| [c.top as i32, c.left as i32, i32::from(c.flip)])
            .collect();
        let table = check(self.stream.clone_htod(&table), "uploading the crops");
        let mut out = self.output(images.len() * 3 * crop_size * crop_size);
        let (n, size, crop) = (images.len() as i32, image_size as i32, crop_size as i32);
        launch!(
            self,
            "crop_batch",
            launch_1d(out.len()),
            &*device,
            &table,
            mean_device,
            &mut out,
            &n,
            &size,
            &crop
        );
        staging.cropped = Some(check(self.stream.record_event(None), "recording the crops"));
        out
    }

    fn conv_forward(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        g: &ConvGeometry,
        y: &mut CudaSlice<f32>,
    ) {
        self.conv_bias(x, w, b, g, y, false);
    }

    fn conv_forward_relu(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        g: &ConvGeometry,
        y: &mut CudaSlice<f32>,
    ) {
        // cuDNN's fused call (f32 and TF32); under bf16 the epilogue that widens the result
        // adds the bias and rectifies anyway.
        if self.cudnn_fusion() && !self.is_bf16() {
            match self.convolve_bias_relu(x, w, b, g, y) {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(
                        error,
                        "cuDNN refused the fused convolution-bias-ReLU call; using a \
                         convolution and a bias+ReLU kernel from now on"
                    );
                    self.set_cudnn_fusion(false);
                }
            }
        }
        self.conv_bias(x, w, b, g, y, true);
    }

    fn conv_backward(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        dy: &CudaSlice<f32>,
        g: &ConvGeometry,
        grads: Gradients<'_, CudaSlice<f32>>,
    ) {
        let Gradients {
            input: dx,
            weight: dw,
            bias: db,
        } = grads;
        let n = x.len() / g.in_len();
        if self.is_bf16() {
            let (x16, dy16) = (self.to_bf16(x), self.to_bf16(dy));
            let mut dw16 = self.scratch::<bf16>(dw.len());
            self.conv_filter_backward_of(&x16, &dy16, g, &mut dw16);
            self.widen_bf16(&dw16, dw);
            if let Some(dx) = dx {
                let w16 = self.to_bf16(w);
                self.conv_data_backward_bf16(&dy16, &w16, g, dx);
            }
        } else {
            self.conv_filter_backward_of(x, dy, g, dw);
            if let Some(dx) = dx {
                self.conv_data_backward_of(dy, w, g, dx);
            }
        }
        // The bias gradient from the f32 dy in every precision.
        let (n_images, channels, plane) = (
            n as i32,
            g.out_channels as i32,
            (g.out_h() * g.out_w()) as i32,
        );
        let config = LaunchConfig {
            grid_dim: (g.out_channels as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(
            self,
            "channel_sums",
            config,
            db,
            dy,
            &n_images,
            &channels,
            &plane
        );
    }

    fn conv_transpose(
        &self,
        y: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        g: &ConvGeometry,
        x: &mut CudaSlice<f32>,
    ) {
        self.conv_data_backward(y, w, g, x);
    }

    fn max_pool(
        &self,
        x: &CudaSlice<f32>,
        g: &PoolGeometry,
        y: &mut CudaSlice<f32>,
        switches: &mut CudaSlice<u32>,
    ) {
        let planes = (x.len() / (g.in_h * g.in_w)) as i32;
        let dims = [g.in_h, g.in_w, g.out_h(), g.out_w(), g.size, g.stride].map(|d| d as i32);
        launch!(
            self,
            "max_pool",
            launch_1d(y.len()),
            x,
            y,
            switches,
            &planes,
            &dims[0],
            &dims[1],
            &dims[2],
            &dims[3],
            &dims[4],
            &dims[5]
        );
    }

    fn unpool(
        &self,
        y: &CudaSlice<f32>,
        switches: &CudaSlice<u32>,
        g: &PoolGeometry,
        x: &mut CudaSlice<f32>,
    ) {
        let planes = (x.len() / (g.in_h * g.in_w)) as i32;
        let dims = [g.in_h, g.in_w, g.out_h(), g.out_w(), g.size, g.stride].map(|d| d as i32);
        launch!(
            self,
            "unpool",
            launch_1d(x.len()),
            y,
            switches,
            x,
            &planes,
            &dims[0],
            &dims[1],
            &dims[2],
            &dims[3],
            &dims[4],
            &dims[5]
        );
    }

    fn lrn_forward(
        &self,
        x: &CudaSlice<f32>,
        g: &LrnGeometry,
        y: &mut CudaSlice<f32>,
        scale: &mut CudaSlice<f32>,
    ) {
        let (channels, plane, config) = (g.channels, g.plane, &g.config);
        let n = (x.len() / (channels * plane)) as i32;
        let (c, p, size) = (channels as i32, plane as i32, config.size as i32);
        let (k, alpha, beta) = (config.k as f32, config.alpha as f32, config.beta as f32);
        launch!(
            self,
            "lrn_forward",
            launch_1d(x.len()),
            x,
            y,
            scale,
            &n,
            &c,
            &p,
            &size,
            &k,
            &alpha,
            &beta
        );
    }

    fn lrn_backward(
        &self,
        x: &CudaSlice<f32>,
        y: &CudaSlice<f32>,
        scale: &CudaSlice<f32>,
        dy: &CudaSlice<f32>,
        g: &LrnGeometry,
        dx: &mut CudaSlice<f32>,
    ) {
        let (channels, plane, config) = (g.channels, g.plane, &g.config);
        let n = (x.len() / (channels * plane)) as i32;
        let (c, p, size) = (channels as i32, plane as i32, config.size as i32);
        let (alpha, beta) = (config.alpha as f32, config.beta as f32);
        launch!(
            self,
            "lrn_backward",
            launch_1d(x.len()),
            x,
            y,
            scale,
            dy,
            dx,
            &n,
            &c,
            &p,
            &size,
            &alpha,
            &beta
        );
    }

    fn relu(&self, x: &mut CudaSlice<f32>) {
        let len = x.len() as i32;
        launch!(self, "relu", launch_1d(x.len()), x, &len);
    }

    fn relu_backward(&self, y: &CudaSlice<f32>, dy: &mut CudaSlice<f32>) {
        let len = y.len() as i32;
        launch!(self, "relu_backward", launch_1d(y.len()), y, dy, &len);
    }

    fn dropout(&self, x: &mut CudaSlice<f32>, p: f64, seed: u64, mask: &mut CudaSlice<f32>) {
        // The CPU backend's mask, drawn on the device from the same ChaCha stream: one thread
        // per 16-word block, i.e. per 8 units (see kernels.cu).
        let scale = (1.0 / (1.0 - p)) as f32;
        let key = ChaChaKey(engine::rng::chacha8_key(seed));
        let len = x.len() as i64;
        launch!(
            self,
            "dropout_chacha",
            launch_1d(x.len().div_ceil(8)),
            x,
            mask,
            &len,
            &key,
            &p,
            &scale
        );
    }

    fn apply_mask(&self, dy: &mut CudaSlice<f32>, mask: &CudaSlice<f32>) {
        let len = dy.len() as i32;
        launch!(self, "multiply", launch_1d(dy.len()), dy, mask, &len);
    }

    fn linear_forward(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        g: &LinearGeometry,
        y: &mut CudaSlice<f32>,
    ) {
        let (n_in, n_out) = (g.n_in, g.n_out);
        let n = x.len() / n_in;
        // Row-major y (N x OUT) = x (N x IN) w^T; column-major: y^T = w x^T with w^T stored.
        let shape = ((true, false), (n_out, n, n_in));
        if self.is_bf16() {
            let (w16, x16) = (self.to_bf16(w), self.to_bf16(x));
            self.gemm(shape.0, shape.1, (&w16, n_in), (&x16, n_in), (y, n_out));
        } else {
            self.gemm(shape.0, shape.1, (w, n_in), (x, n_in), (y, n_out));
        }
        let (total, outputs) = (y.len() as i32, n_out as i32);
        launch!(
            self,
            "add_row_bias",
            launch_1d(y.len()),
            y,
            b,
            &total,
            &outputs
        );
    }

    fn linear_backward(
        &self,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        dy: &CudaSlice<f32>,
        g: &LinearGeometry,
        grads: Gradients<'_, CudaSlice<f32>>,
    ) {
        let (n_in, n_out) = (g.n_in, g.n_out);
        let Gradients {
            input: dx,
            weight: dw,
            bias: db,
        } = grads;
        let n = x.len() / n_in;
        // dw (OUT x IN, row-major) = dy^T x; column-major: dw^T (IN x OUT) = x^T dy.
        let dw_shape = ((false, true), (n_in, n_out, n));
        // dx (N x IN) = dy w; column-major: dx^T (IN x N) = w^T dy^T.
        let dx_shape = ((false, false), (n_in, n, n_out));
        if self.is_bf16() {
            let (x16, dy16) = (self.to_bf16(x), self.to_bf16(dy));
            self.gemm(
                dw_shape.0,
                dw_shape.1,
                (&x16, n_in),
                (&dy16, n_out),
                (dw, n_in),
            );
            if let Some(dx) = dx {
                let w16 = self.to_bf16(w);
                self.gemm(
                    dx_shape.0,
                    dx_shape.1,
                    (&w16, n_in),
                    (&dy16, n_out),
                    (dx, n_in),
                );
            }
        } else {
            self.gemm(dw_shape.0, dw_shape.1, (x, n_in), (dy, n_out), (dw, n_in));
            if let Some(dx) = dx {
                self.gemm(dx_shape.0, dx_shape.1, (w, n_in), (dy, n_out), (dx, n_in));
            }
        }
        let (rows, outputs) = (n as i32, n_out as i32);
        launch!(
            self,
            "column_sums",
            launch_1d(n_out),
            db,
            dy,
            &rows,
            &outputs
        );
    }

    fn softmax_cross_entropy(
        &self,
        logits: &CudaSlice<f32>,
        labels: &[usize],
        classes: usize,
        dlogits: &mut CudaSlice<f32>,
    ) -> CudaSlice<f32> {
        let rows = labels.len();
        let labels_i32: Vec<i32> = labels.iter().map(|&l| l as i32).collect();
        let labels_device = check(self.stream.clone_htod(&labels_i32), "uploading labels");
        let mut row_loss = self.scratch::<f32>(rows);
        let (rows_i, classes_i) = (rows as i32, classes as i32);
        launch!(
            self,
            "softmax_xent",
            launch_1d(rows),
            logits,
            &labels_device,
            dlogits,
            &mut row_loss,
            &rows_i,
            &classes_i
        );
        row_loss
    }

    fn read_loss(&self, row_loss: CudaSlice<f32>) -> f32 {
        // Summed in row order on the host, like the CPU backend.
        let losses = check(self.stream.clone_dtoh(&row_loss), "downloading losses");
        let total = losses.iter().fold(0.0f32, |sum, &l| sum + l);
        total * (1.0 / losses.len() as f32)
    }

    fn softmax(&self, logits: &CudaSlice<f32>, classes: usize) -> Vec<f32> {
        let rows = logits.len() / classes;
        let mut probs = check(self.stream.alloc_zeros::<f32>(logits.len()), "allocating");
        let (rows_i, classes_i) = (rows as i32, classes as i32);
        launch!(
            self,
            "softmax_rows",
            launch_1d(rows),
            logits,
            &mut probs,
            &rows_i,
            &classes_i
        );
        check(self.stream.clone_dtoh(&probs), "downloading probabilities")
    }

    fn sgd_momentum(
        &self,
        w: &mut CudaSlice<f32>,
        g: &CudaSlice<f32>,
        v: &mut CudaSlice<f32>,
        settings: &Momentum,
    ) {
        let Momentum {
            learning_rate: lr,
            momentum,
            weight_decay,
        } = *settings;
        let len = w.len() as i32;
        let (lr, momentum, weight_decay) = (lr as f32, momentum as f32, weight_decay as f32);
        launch!(
            self,
            "sgd_momentum",
            launch_1d(w.len()),
            w,
            g,
            v,
            &len,
            &lr,
            &momentum,
            &weight_decay
        );
    }

    fn map_maxima(
        &self,
        x: &CudaSlice<f32>,
        channels: usize,
        plane: usize,
        maps: &[usize],
    ) -> Vec<(f32, u32)> {
        let pairs = x.len() / (channels * plane).max(1) * maps.len();
        if pairs == 0 {
            return Vec::new();
        }
        let maps_i32: Vec<i32> = maps.iter().map(|&m| m as i32).collect();
        let maps_device = check(self.stream.clone_htod(&maps_i32), "uploading map indices");
        let mut values = self.scratch::<f32>(pairs);
        let mut positions = self.scratch::<u32>(pairs);
        let (channels, plane, n_maps) = (channels as i32, plane as i32, maps.len() as i32);
        let config = LaunchConfig {
            grid_dim: (pairs as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(
            self,
            "map_maxima",
            config,
            x,
            &maps_device,
            &mut values,
            &mut positions,
            &channels,
            &plane,
            &n_maps
        );
        let values = check(self.stream.clone_dtoh(&values), "downloading maxima");
        let positions = check(self.stream.clone_dtoh(&positions), "downloading positions");
        values.into_iter().zip(positions).collect()
    }

    fn renormalise_filters(
        &self,
        w: &mut CudaSlice<f32>,
        filter_len: usize,
        radius: f64,
        rescaled: &mut CudaSlice<u32>,
    ) {
        let filters = w.len() / filter_len;
        let len = filter_len as i32;
        let config = LaunchConfig {
            grid_dim: (filters as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(
            self,
            "renormalise_filters",
            config,
            w,
            &len,
            &radius,
            rescaled
        );
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
