//! The GPU side of the engine (issue #5): [`CudaBackend`] implements the engine's `Backend`
//! trait with cuDNN, cuBLAS and NVRTC kernels (see `backend/`: device and staging, `cudnn`, `cublas`, `ops`), behind the cargo feature
//! `cuda`. The feature needs no CUDA toolkit to *build*: cudarc loads the driver, NVRTC,
//! cuBLAS and cuDNN at run time. Without the feature, or on a machine without a GPU,
//! [`probe`] says why the backend is unavailable instead of failing obscurely.

#[cfg(feature = "cuda")]
mod backend;
pub mod limits;
pub mod parity;

#[cfg(feature = "cuda")]
pub use backend::CudaBackend;

pub use stage_api::device::Device;

/// Work that runs on whichever backend the `device` param names: implement `run` once,
/// generically, and [`run_on`] picks the backend.
pub trait BackendTask {
    type Output;
    fn run<B: engine::Backend>(self, backend: B) -> Self::Output;
}

/// Runs `task` on the backend for `device` (a stage's `device` param, parsed once by
/// [`Device::of`]): the CPU, or GPU 0 in true fp32, TF32 or bf16 mixed precision. A GPU
/// device in a build without the `cuda` feature, or on a machine without a usable GPU, is an
/// error that says so.
pub fn run_on<T: BackendTask>(device: Device, task: T) -> Result<T::Output, CudaUnavailable> {
    let precision = match device {
        Device::Cpu => return Ok(task.run(engine::CpuBackend)),
        Device::Cuda => Precision::Fp32,
        Device::CudaTf32 => Precision::Tf32,
        Device::CudaBf16 => Precision::Bf16,
    };
    #[cfg(feature = "cuda")]
    {
        Ok(task.run(CudaBackend::new(0, precision)?))
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (precision, task);
        Err(CudaUnavailable::NotBuilt)
    }
}

/// A stage's body written once, generically over the backend; [`run_stage`] runs it on the
/// backend the stage's `device` param names.
pub trait StageBody {
    fn run_on_backend<B: engine::Backend>(
        &self,
        ctx: &stage_api::StageContext,
        backend: B,
    ) -> stage_api::Result<stage_api::RunSummary>;
}

/// Runs `body` on the backend of `ctx`'s `device` param; an unavailable GPU is a config error.
pub fn run_stage<S: StageBody>(
    body: &S,
    ctx: &stage_api::StageContext,
) -> stage_api::Result<stage_api::RunSummary> {
    struct Task<'a, S> {
        body: &'a S,
        ctx: &'a stage_api::StageContext,
    }
    impl<S: StageBody> BackendTask for Task<'_, S> {
        type Output = stage_api::Result<stage_api::RunSummary>;
        fn run<B: engine::Backend>(self, backend: B) -> Self::Output {
            self.body.run_on_backend(self.ctx, backend)
        }
    }
    run_on(Device::of(&ctx.params)?, Task { body, ctx })
        .map_err(|e| stage_api::Error::Config(e.to_string()))?
}

/// Arithmetic of the GPU backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// True fp32: no TF32 tensor-core math in cuDNN or cuBLAS.
    Fp32,
    /// fp32 storage, TF32 tensor-core products (Ampere and later).
    Tf32,
    /// bf16 mixed precision: f32 buffers and master weights; every convolution and fully
    /// connected product casts its operands to bf16 (as PyTorch's autocast does) and
    /// multiplies on the tensor cores, accumulating in f32; element-wise ops, the loss and
    /// the update stay f32.
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "fp32" => Ok(Precision::Fp32),
            "tf32" => Ok(Precision::Tf32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!("unknown precision `{other}`: fp32, tf32 or bf16")),
        }
    }
}

/// Why the GPU backend cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum CudaUnavailable {
    #[error(
        "this build has no `cuda` feature: rebuild with `--features cuda` (e.g. `cargo build --release -p zfnet --features cuda`; no CUDA toolkit is needed to build), or use `device: cpu`"
    )]
    NotBuilt,
    #[error(
        "the CUDA library {library} was not found: install the NVIDIA driver (libcuda) and CUDA 13 with cuDNN 9 so that ldconfig finds them, or use `device: cpu`"
    )]
    MissingLibrary { library: &'static str },
    #[error("the GPU could not be used: {what} failed ({error}); use `device: cpu`")]
    Init { what: String, error: String },
}

/// Checks that the driver, NVRTC, cuBLAS and cuDNN libraries load. (cudarc panics on the
/// first call into a missing library; this turns absence into an error.)
#[cfg(feature = "cuda")]
pub fn check_libraries() -> Result<(), CudaUnavailable> {
    // SAFETY: these only try to load the shared libraries.
    let present = unsafe {
        [
            (
                "libcuda (the NVIDIA driver)",
                cudarc::driver::sys::is_culib_present(),
            ),
            ("NVRTC", cudarc::nvrtc::sys::is_culib_present()),
            ("cuBLAS", cudarc::cublas::sys::is_culib_present()),
            ("cuDNN", cudarc::cudnn::sys::is_culib_present()),
        ]
    };
    match present.iter().find(|(_, found)| !found) {
        Some((library, _)) => Err(CudaUnavailable::MissingLibrary { library }),
        None => Ok(()),
    }
}

/// What [`probe`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceInfo {
    pub name: String,
    pub memory_bytes: usize,
    pub compute_capability: (i32, i32),
}

/// Whether GPU 0 can be used, and what it is.
pub fn probe() -> Result<DeviceInfo, CudaUnavailable> {
    #[cfg(feature = "cuda")]
    {
        check_libraries()?;
        let fail = |what: &str, error: String| CudaUnavailable::Init {
            what: what.to_owned(),
            error,
        };
        let context = cudarc::driver::CudaContext::new(0)
            .map_err(|e| fail("opening GPU 0", format!("{e:?}")))?;
        Ok(DeviceInfo {
            name: context.name().unwrap_or_else(|_| "?".to_owned()),
            memory_bytes: context.total_mem().unwrap_or(0),
            compute_capability: context.compute_capability().unwrap_or((0, 0)),
        })
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(CudaUnavailable::NotBuilt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_names_parse_and_unknown_ones_are_named() {
        assert_eq!("fp32".parse::<Precision>(), Ok(Precision::Fp32));
        assert_eq!("tf32".parse::<Precision>(), Ok(Precision::Tf32));
        assert_eq!("bf16".parse::<Precision>(), Ok(Precision::Bf16));
        assert!("fp16".parse::<Precision>().unwrap_err().contains("fp16"));
    }

    struct Name;

    impl BackendTask for Name {
        type Output = &'static str;
        fn run<B: engine::Backend>(self, backend: B) -> &'static str {
            backend.name()
        }
    }

    #[test]
    fn the_device_param_picks_the_backend() {
        assert_eq!(run_on(Device::Cpu, Name).unwrap(), "cpu");
        match run_on(Device::Cuda, Name) {
            Ok(name) => assert_eq!(name, "cuda"),
            Err(error) => assert!(error.to_string().contains("device: cpu"), "{error}"),
        }
    }

    #[test]
    fn without_a_usable_gpu_the_probe_explains_itself() {
        match probe() {
            // A GPU machine with the feature: the probe names the device.
            Ok(info) => assert!(!info.name.is_empty()),
            Err(error) => {
                let message = error.to_string();
                eprintln!("GPU backend skipped: {message}");
                assert!(message.contains("device: cpu"), "{message}");
            }
        }
    }
}
