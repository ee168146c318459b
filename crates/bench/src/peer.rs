//! How the benchmarks start their Python peers (numpy/OpenBLAS, onnxruntime), so that a peer
//! runs kernels of the same vector width as the CPU path being timed.
//!
//! On the forced AVX2 path of a CPU with AVX-512, the peer is started with
//! `libcpuid_mask.so` preloaded (crates/cpuid-mask): its CPUID reports no AVX-512, so MLAS
//! and OpenBLAS pick the kernels an AVX2-only machine would run. Where the CPU cannot fault on
//! CPUID, numpy falls back to `OPENBLAS_CORETYPE=Haswell` and onnxruntime keeps its AVX-512
//! kernels; the table's header says so.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};
use engine::cpu::CpuPath;

/// What the peers see of the CPU, and how they are started.
pub enum PeerCpu {
    /// The whole CPU: the path timed uses its widest vectors (or is portable).
    Whole,
    /// AVX-512 hidden by the preloaded library.
    Masked(PathBuf),
    /// AVX-512 could not be hidden (no CPUID faulting): OpenBLAS is forced to its Haswell
    /// kernels, onnxruntime is not.
    Unmasked,
}

impl PeerCpu {
    /// The peers' view for the path being timed.
    pub fn for_path(path: CpuPath) -> Result<PeerCpu> {
        if path != CpuPath::Avx2 || !CpuPath::Avx512.supported() {
            return Ok(PeerCpu::Whole);
        }
        let faulting = std::fs::read_to_string("/proc/cpuinfo")
            .is_ok_and(|info| info.split_whitespace().any(|flag| flag == "cpuid_fault"));
        if !faulting {
            return Ok(PeerCpu::Unmasked);
        }
        let library = std::env::current_exe()?
            .parent()
            .map(|dir| dir.join("libcpuid_mask.so"))
            .filter(|library| library.is_file());
        match library {
            Some(library) => Ok(PeerCpu::Masked(library)),
            None => bail!(
                "the AVX2 path is timed on a CPU with AVX-512, and its peers need \
                 libcpuid_mask.so beside zfnet-bench to run AVX2 kernels too: \
                 `cargo build --release -p cpuid-mask` (make bench does)"
            ),
        }
    }

    /// `python3`, started so that it sees the CPU as described.
    pub fn python(&self) -> Command {
        let mut command = Command::new("python3");
        match self {
            PeerCpu::Whole => {}
            PeerCpu::Masked(library) => {
                command.env("LD_PRELOAD", library);
            }
            PeerCpu::Unmasked => {
                command.env("OPENBLAS_CORETYPE", "Haswell");
            }
        }
        command
    }

    /// Fails when a peer that should not see AVX-512 saw it (`sees_avx512` in its JSON).
    pub fn check(&self, peer: &str, report: &serde_json::Value) -> Result<()> {
        if matches!(self, PeerCpu::Masked(_)) && report["sees_avx512"].as_bool() != Some(false) {
            bail!(
                "{peer} still saw AVX-512 with libcpuid_mask.so preloaded (sees_avx512: {}): \
                 its timing would not be at the AVX2 path's width",
                report["sees_avx512"]
            );
        }
        Ok(())
    }

    /// For the table's header.
    pub fn describe(&self) -> &'static str {
        match self {
            PeerCpu::Whole => "the whole CPU",
            PeerCpu::Masked(_) => {
                "AVX-512 hidden from their CPUID (libcpuid_mask.so): AVX2+FMA kernels, as on an AVX2-only machine"
            }
            PeerCpu::Unmasked => {
                "no CPUID faulting here: OpenBLAS forced to its Haswell kernels, onnxruntime on AVX-512 (not the same width)"
            }
        }
    }
}
