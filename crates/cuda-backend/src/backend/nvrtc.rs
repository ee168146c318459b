//! Compiling `kernels.cu` with NVRTC for the device's own architecture.
//!
//! NVRTC is asked for machine code (a cubin for `sm_XY`, from the device's compute
//! capability), not PTX: the driver loads a cubin as it is, whereas PTX goes through the
//! driver's JIT, which refuses PTX of a newer ISA version than it knows — the case of a pip
//! wheel's NVRTC (say 13.1) beside an older driver (580, CUDA 13.0). Should NVRTC not know the
//! device's architecture (a library older than the GPU), the kernels are compiled to PTX as
//! before, and the log says so.

use std::ffi::{CStr, CString, c_char, c_int};

use cudarc::nvrtc::{Ptx, result, sys};

use crate::limits::nvrtc_architecture;

/// NVRTC's version, as (major, minor).
pub(super) fn nvrtc_version() -> Option<(i32, i32)> {
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: two out-parameters.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .ok()
        .map(|()| (major, minor))
}

/// `source` compiled for a device of compute capability `capability`: a cubin for its
/// architecture, else (with a warning) PTX.
pub(super) fn compile_for(source: &str, capability: (i32, i32)) -> Result<Ptx, String> {
    match nvrtc_architecture(capability).and_then(|arch| cubin(source, &arch)) {
        Ok(cubin) => {
            tracing::debug!(
                ?capability,
                bytes = cubin.len(),
                "kernels compiled to a cubin"
            );
            Ok(Ptx::from_binary(cubin))
        }
        Err(error) => {
            tracing::warn!(
                ?capability,
                %error,
                "NVRTC could not emit machine code for this GPU; compiling the kernels to PTX"
            );
            cudarc::nvrtc::compile_ptx(source).map_err(|e| format!("{e:?}"))
        }
    }
}

/// Frees an NVRTC program on every path out of [`cubin`].
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by create_program, destroyed once, here.
        let _ = unsafe { result::destroy_program(self.0) };
    }
}

fn cubin(source: &str, arch: &str) -> Result<Vec<u8>, String> {
    let source = CString::new(source).map_err(|e| e.to_string())?;
    let program = Program(result::create_program(&source, None).map_err(|e| format!("{e:?}"))?);
    let options = [format!("--gpu-architecture={arch}")];
    // SAFETY: a live program; the options are plain strings.
    if let Err(error) = unsafe { result::compile_program(program.0, &options) } {
        // SAFETY: a live program, compiled (unsuccessfully).
        let log = unsafe { result::get_program_log(program.0) }
            .map(|log| {
                // SAFETY: NVRTC's log is NUL-terminated.
                unsafe { CStr::from_ptr(log.as_ptr()) }
                    .to_string_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        return Err(format!("{error:?} compiling for {arch}: {log}"));
    }
    let mut size = 0usize;
    // SAFETY: a live, compiled program; one out-parameter.
    unsafe { sys::nvrtcGetCUBINSize(program.0, &mut size) }
        .result()
        .map_err(|e| format!("{e:?} asking for the cubin's size"))?;
    if size == 0 {
        return Err(format!("NVRTC returned an empty cubin for {arch}"));
    }
    let mut cubin = vec![0u8; size];
    // SAFETY: `cubin` has the size NVRTC reported.
    unsafe { sys::nvrtcGetCUBIN(program.0, cubin.as_mut_ptr() as *mut c_char) }
        .result()
        .map_err(|e| format!("{e:?} copying the cubin"))?;
    Ok(cubin)
}
