//! The ZF network engine.
//!
//! One [`Backend`] trait with only the ops the ZF net and its analyses need; the CPU backend
//! ([`CpuBackend`]: our own implicit-GEMM and dot-product kernels, rayon, the same bits on
//! every CPU — see [`cpu::path`]) is the reference. Architectures are
//! data ([`Architecture::from_name`]); a [`Network`] resolves one into a layer plan with
//! parameters on a backend, and runs forward (keeping switches for the deconvnet), backward
//! and the §3 update. The only files it touches are model files, in `weights` (safetensors,
//! written and read through `artifacts`; the default feature `weights`); everything else
//! reaches it as memory.

pub mod allocator;
pub mod arch;
pub mod backend;
pub mod cpu;
pub mod deconv;
pub mod geometry;
pub mod network;
pub mod reference;
pub mod rng;
pub mod scalar;
#[cfg(feature = "weights")]
pub mod weights;

pub use arch::Architecture;
pub use backend::{Backend, CpuBackend, Gradients, Momentum};
pub use cpu::lrn;
pub use network::{Activations, Mode, Network, Op, Param, Plan, UpdateConfig};
pub use reference::F64Backend;
