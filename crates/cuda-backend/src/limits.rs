//! What the GPU backend must check on the host before it hands a number to the device:
//! counts as the 32-bit `int` its kernels, cuDNN's descriptors and cuBLAS take, and the
//! architecture NVRTC compiles for. Plain functions, without the `cuda` feature, so that they
//! are tested here.

/// `value` as the 32-bit signed `int` that the kernels of `kernels.cu` index with (and cuDNN's
/// descriptors and cuBLAS's dimensions take). A larger count would wrap around on the device
/// and read or write out of bounds, so it is refused, naming `what` and what to do.
pub fn kernel_int(value: usize, what: &str) -> Result<i32, String> {
    i32::try_from(value).map_err(|_| {
        format!(
            "{what}: {value} elements, more than the GPU kernels' 32-bit indexing allows \
             ({}); use a smaller batch_size (or, for dedup, a smaller block) for this stage",
            i32::MAX
        )
    })
}

/// NVRTC's `--gpu-architecture` for a device of compute capability `(major, minor)`: the
/// device's own `sm_XY`, so that NVRTC emits machine code (a cubin) for it. Loading a cubin
/// needs no PTX JIT in the driver, so a driver older than the NVRTC library (a CUDA 13.1 pip
/// wheel beside a 13.0 driver) cannot refuse the module for its PTX version.
pub fn nvrtc_architecture((major, minor): (i32, i32)) -> Result<String, String> {
    if !(3..=20).contains(&major) || !(0..=9).contains(&minor) {
        return Err(format!(
            "the driver reported compute capability {major}.{minor}, which is not a GPU \
             architecture NVRTC knows"
        ));
    }
    Ok(format!("sm_{major}{minor}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_past_32_bits_are_refused_with_what_to_do() {
        assert_eq!(kernel_int(0, "x"), Ok(0));
        assert_eq!(kernel_int(i32::MAX as usize, "x"), Ok(i32::MAX));
        let error = kernel_int(1 << 31, "conv1's output").unwrap_err();
        assert!(
            error.contains("conv1's output") && error.contains("2147483648"),
            "{error}"
        );
        assert!(error.contains("smaller batch_size"), "{error}");
    }

    #[test]
    fn nvrtc_compiles_for_the_devices_own_architecture() {
        assert_eq!(nvrtc_architecture((9, 0)).unwrap(), "sm_90");
        assert_eq!(nvrtc_architecture((8, 6)).unwrap(), "sm_86");
        assert_eq!(nvrtc_architecture((12, 0)).unwrap(), "sm_120");
        assert!(nvrtc_architecture((0, 0)).is_err());
    }
}
