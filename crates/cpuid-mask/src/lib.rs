//! `LD_PRELOAD=libcpuid_mask.so program`: the program's CPUID instructions report a CPU
//! without AVX-512 (nor AMX, nor the 256-bit AVX-VNNI family), so libraries that pick their
//! kernels from CPUID — onnxruntime's MLAS, OpenBLAS, numpy — run the kernels they would run
//! on an AVX2+FMA machine. `zfnet-bench` uses it to compare our forced AVX2 path with peers of
//! the same vector width on an AVX-512 machine (issue #21).
//!
//! How: Linux's CPUID faulting (`arch_prctl(ARCH_SET_CPUID, 0)`, on Intel CPUs since Ivy
//! Bridge and in KVM guests) makes every CPUID instruction of the process raise SIGSEGV. The
//! handler installed here recognises the instruction (`0F A2` at the faulting address),
//! executes CPUID itself with faulting briefly lifted for its thread, clears the hidden
//! feature bits, writes the four registers into the interrupted context and resumes after
//! the instruction. Any other SIGSEGV goes to the handler that was there before (or the
//! default action: the process dies as it would have).
//!
//! Limits, stated: only CPUID is masked. `xgetbv` still reports the AVX-512 register state
//! (every library we use requires the CPUID bit too); the C library chose its own string
//! functions before this library was loaded; a program that later replaces the SIGSEGV
//! handler loses the mask (and dies at its next CPUID). Faulting is per thread, inherited by
//! threads created after loading, and reset by `execve`, where `LD_PRELOAD` (inherited with
//! the environment) loads this library again.
//!
//! Where faulting is unavailable, loading the library prints why and aborts: a peer that
//! silently kept its AVX-512 kernels would make a comparison that claims the opposite.

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod mask;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub use mask::hidden;
