//! The `device` param every stage that runs the network takes (issue #5): one declaration,
//! one resource rule (a `cuda` run holds the GPU token), one check.

use crate::{ParamSpec, Params, Resources};

/// `device: cpu | cuda | cuda-tf32 | cuda-bf16` (`cuda` is true fp32; `cuda-tf32` lets cuDNN
/// and cuBLAS use TF32 tensor cores; `cuda-bf16` multiplies in bf16 with f32 master weights).
pub fn device_param() -> ParamSpec {
    ParamSpec::choice(
        "device",
        "cpu",
        &["cpu", "cuda", "cuda-tf32", "cuda-bf16"],
        "Where the network runs: the CPU, or GPU 0 in fp32 (`cuda`), TF32 (`cuda-tf32`) or bf16 mixed precision (`cuda-bf16`); the GPU needs a build with `--features cuda`.",
    )
}

/// Whether the params ask for the GPU.
pub fn wants_gpu(params: &Params) -> bool {
    params.str("device") != "cpu"
}

/// A GPU run holds the GPU token.
pub fn device_resources(params: &Params) -> Resources {
    Resources {
        gpu: wants_gpu(params),
    }
}
