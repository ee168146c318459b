//! The `device` param every stage that runs the network takes (issue #5): one declaration,
//! one resource rule (a `cuda` run holds the GPU token), one check.

use crate::{Error, ParamSpec, Params, Resources};

/// Where a stage runs the network: the one list of devices (the `device` param's choices and
/// the backend chosen for each, in `cuda_backend::run_on`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// GPU 0 in true fp32.
    Cuda,
    /// GPU 0, cuDNN and cuBLAS allowed TF32 tensor cores.
    CudaTf32,
    /// GPU 0, bf16 multiplies with f32 master weights.
    CudaBf16,
}

impl Device {
    pub const ALL: [Device; 4] = [
        Device::Cpu,
        Device::Cuda,
        Device::CudaTf32,
        Device::CudaBf16,
    ];
    /// The names, in the order of [`Device::ALL`].
    pub const NAMES: [&'static str; 4] = ["cpu", "cuda", "cuda-tf32", "cuda-bf16"];

    /// The name the `device` param uses.
    pub fn name(self) -> &'static str {
        Device::NAMES[Device::ALL.iter().position(|d| *d == self).expect("in ALL")]
    }

    /// The device a `device` param names.
    pub fn parse(name: &str) -> Option<Device> {
        Device::NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| Device::ALL[i])
    }

    /// The device a stage's `device` param names: parsed once, then passed down as this enum.
    /// (Resolve has checked the value against [`Device::NAMES`]; this error is for a caller
    /// that built its params by hand.)
    pub fn of(params: &Params) -> crate::Result<Device> {
        let name = params.str("device");
        name.parse().map_err(Error::Config)
    }

    /// Whether this device is a GPU.
    pub fn is_gpu(self) -> bool {
        self != Device::Cpu
    }
}

impl std::str::FromStr for Device {
    type Err = String;

    fn from_str(name: &str) -> Result<Device, String> {
        Device::parse(name).ok_or_else(|| {
            format!(
                "unknown device `{name}`: one of {}",
                Device::NAMES.join(", ")
            )
        })
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `device: cpu | cuda | cuda-tf32 | cuda-bf16` (`cuda` is true fp32; `cuda-tf32` lets cuDNN
/// and cuBLAS use TF32 tensor cores; `cuda-bf16` multiplies in bf16 with f32 master weights).
pub fn device_param() -> ParamSpec {
    ParamSpec::choice(
        "device",
        Device::Cpu.name(),
        &Device::NAMES,
        "Where the network runs: the CPU, or GPU 0 in fp32 (`cuda`), TF32 (`cuda-tf32`) or bf16 mixed precision (`cuda-bf16`); the GPU needs a build with `--features cuda`.",
    )
}

/// Whether the params ask for the GPU.
pub fn wants_gpu(params: &Params) -> bool {
    Device::parse(params.str("device")).is_none_or(Device::is_gpu)
}

/// A GPU run holds the GPU token.
pub fn device_resources(params: &Params) -> Resources {
    Resources {
        gpu: wants_gpu(params),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_device_name_parses_back_to_its_device() {
        for device in Device::ALL {
            assert_eq!(Device::parse(device.name()), Some(device));
        }
        assert_eq!(Device::parse("gpu"), None);
        let error = "gpu".parse::<Device>().unwrap_err();
        assert!(error.contains("cuda-tf32"), "{error}");
    }
}
