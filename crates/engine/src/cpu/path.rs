//! Which instruction set the f32 kernels run on — and why it does not change a single bit.
//!
//! Every f32 kernel of the CPU backend computes each output as one *fixed* sequence of IEEE
//! operations: a convolution or fully connected output is a chain of fused multiply-adds
//! over its inputs in a fixed order, starting from its bias (or +0); a dot product is 16
//! such chains (lanes) added in a fixed tree ([`reduce16`]); everything else is scalar Rust,
//! which the compiler never reorders. Vector lanes hold *different outputs*, never partial
//! sums of one, so a kernel of any vector width — AVX-512 (16 lanes), AVX2 + FMA (8), the
//! portable code with `f32::mul_add` (auto-vectorised to NEON on aarch64) — computes the same
//! bits. The transcendental functions go through the pure-Rust `libm` crate, not the
//! platform's C library. So the CPU backend's results depend neither on the thread count nor
//! on the CPU: `tests/paths.rs` checks every path against the others, bit for bit, and a
//! golden digest of a few training steps that every machine must reproduce.
//!
//! One residue is not ours: the initial weights are drawn by `rand_distr`'s ziggurat, whose
//! rare tail and wedge tests call the platform's `exp`/`ln`; a last-bit difference there
//! would have to land exactly on a rejection boundary to change a draw. The aarch64 digest
//! (glibc's aarch64 maths) matched the x86-64 one.
//!
//! The path is the best this CPU has, unless `ZFNET_CPU` (`avx512`, `avx2`, `portable`)
//! forces one — so that one machine can test and time every path.

use std::sync::OnceLock;

/// The environment variable that forces a path.
pub const ENV: &str = "ZFNET_CPU";

/// An instruction set the f32 kernels are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CpuPath {
    /// x86-64 with AVX-512F: 16-float vectors.
    Avx512,
    /// x86-64 with AVX2 and FMA: 8-float vectors.
    Avx2,
    /// Plain Rust with `f32::mul_add`: any CPU (on aarch64 the compiler vectorises it to
    /// NEON; on an x86-64 CPU without FMA each `mul_add` is a call to the C library's `fmaf`,
    /// correct but slow).
    Portable,
}

/// Why `ZFNET_CPU` cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("{ENV}={0:?} is not a CPU path: use one of avx512, avx2, portable (or unset it)")]
    Unknown(String),
    #[error(
        "{ENV}={0} asks for instructions this CPU does not have; this CPU runs: {1} \
         (results are identical on every path)"
    )]
    Unsupported(&'static str, String),
}

impl CpuPath {
    /// Every path, fastest first.
    pub const ALL: [CpuPath; 3] = [CpuPath::Avx512, CpuPath::Avx2, CpuPath::Portable];

    /// The name `ZFNET_CPU` takes and provenance records.
    pub fn name(self) -> &'static str {
        match self {
            CpuPath::Avx512 => "avx512",
            CpuPath::Avx2 => "avx2",
            CpuPath::Portable => "portable",
        }
    }

    pub fn parse(name: &str) -> Option<CpuPath> {
        CpuPath::ALL
            .into_iter()
            .find(|path| path.name() == name.trim().to_ascii_lowercase())
    }

    /// Whether this CPU can run the path.
    pub fn supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            CpuPath::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            CpuPath::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            CpuPath::Avx512 | CpuPath::Avx2 => false,
            CpuPath::Portable => true,
        }
    }

    /// The paths this CPU can run, fastest first.
    pub fn supported_paths() -> Vec<CpuPath> {
        CpuPath::ALL
            .into_iter()
            .filter(|path| path.supported())
            .collect()
    }

    /// The fastest path this CPU has.
    pub fn best() -> CpuPath {
        CpuPath::supported_paths()[0]
    }
}

impl std::fmt::Display for CpuPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The path `ZFNET_CPU` asks for, or the best one when it is unset or empty.
pub fn from_env() -> Result<CpuPath, PathError> {
    match std::env::var(ENV) {
        Ok(value) if !value.trim().is_empty() => {
            let path = CpuPath::parse(&value).ok_or(PathError::Unknown(value))?;
            if !path.supported() {
                let names: Vec<&str> = CpuPath::supported_paths()
                    .into_iter()
                    .map(CpuPath::name)
                    .collect();
                return Err(PathError::Unsupported(path.name(), names.join(", ")));
            }
            Ok(path)
        }
        _ => Ok(CpuPath::best()),
    }
}

/// The path the kernels use in this process, chosen once. The CLI checks [`from_env`] at
/// start-up, so an unusable `ZFNET_CPU` is reported there; a library user gets the message
/// as a panic.
pub fn selected() -> CpuPath {
    static SELECTED: OnceLock<CpuPath> = OnceLock::new();
    *SELECTED.get_or_init(|| from_env().unwrap_or_else(|error| panic!("{error}")))
}

/// The sum of 16 lanes in the fixed tree every path uses: halves, quarters, eighths, then the
/// last pair (`(l0 + l8) + (l4 + l12)` ... ), whatever the vector width that produced them.
#[inline]
pub fn reduce16(lanes: [f32; 16]) -> f32 {
    let h8: [f32; 8] = std::array::from_fn(|i| lanes[i] + lanes[i + 8]);
    let h4: [f32; 4] = std::array::from_fn(|i| h8[i] + h8[i + 4]);
    let h2: [f32; 2] = std::array::from_fn(|i| h4[i] + h4[i + 2]);
    h2[0] + h2[1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_the_portable_path_runs_everywhere() {
        for path in CpuPath::ALL {
            assert_eq!(CpuPath::parse(path.name()), Some(path));
        }
        assert_eq!(CpuPath::parse(" AVX2 "), Some(CpuPath::Avx2));
        assert_eq!(CpuPath::parse("sse"), None);
        assert!(CpuPath::Portable.supported());
        assert!(CpuPath::supported_paths().contains(&CpuPath::best()));
    }
}
