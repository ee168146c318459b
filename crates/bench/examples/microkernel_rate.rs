//! The microkernel's own rate on one core, against the core's FMA peak at the same width:
//! `[ZFNET_CPU=avx2] microkernel_rate [depth] [seconds]`.
//!
//! The peak is a loop of independent fused multiply-adds on registers only (12 chains of the
//! path's width, more than latency x throughput on any core we know). The kernel runs on
//! operands that fit in L1 (depth x NR of B, depth x MR of A, depth 256 by default) and on an
//! operand the size of zf's conv2 panel (depth 2400: 460 KB of B, in L2), as the forward pass
//! gives it. What the two rates say: how much of the core the kernel's instruction stream can
//! use, and how much the operand's distance takes away.

use std::time::Instant;

use engine::cpu::CpuPath;
use engine::cpu::microkernel::{MR, NR, microkernel};

/// Fused multiply-adds per second of one core at `path`'s width, from registers.
fn peak(path: CpuPath, seconds: f64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        #[target_feature(enable = "avx2,fma")]
        fn chains256(steps: usize) -> f32 {
            let mut acc = [_mm256_set1_ps(0.0); 12];
            let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
            for _ in 0..steps {
                for chain in acc.iter_mut() {
                    *chain = _mm256_fmadd_ps(*chain, a, b);
                }
            }
            acc.iter().map(|v| _mm256_cvtss_f32(*v)).sum()
        }
        #[target_feature(enable = "avx512f")]
        fn chains512(steps: usize) -> f32 {
            let mut acc = [_mm512_set1_ps(0.0); 12];
            let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
            for _ in 0..steps {
                for chain in acc.iter_mut() {
                    *chain = _mm512_fmadd_ps(*chain, a, b);
                }
            }
            acc.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
        }
        let (lanes, run): (f64, &dyn Fn(usize) -> f32) = match path {
            // SAFETY: the path is supported (checked by the caller).
            CpuPath::Avx512 => (16.0, &|steps| unsafe { chains512(steps) }),
            CpuPath::Avx2 => (8.0, &|steps| unsafe { chains256(steps) }),
            CpuPath::Portable => return f64::NAN,
        };
        let steps = 1 << 20;
        let mut best = 0.0f64;
        let started = Instant::now();
        while started.elapsed().as_secs_f64() < seconds {
            let start = Instant::now();
            std::hint::black_box(run(steps));
            best = best.max(12.0 * lanes * steps as f64 / start.elapsed().as_secs_f64());
        }
        best
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (path, seconds);
        f64::NAN
    }
}

/// The microkernel's fused multiply-adds per second on one core (best of repeated calls),
/// walking `filter_panels` panels of A in turn over the same B, as a convolution does.
fn kernel_rate(path: CpuPath, depth: usize, filter_panels: usize, seconds: f64) -> f64 {
    let a: Vec<f32> = (0..depth * MR * filter_panels)
        .map(|i| (i % 7) as f32 * 0.1)
        .collect();
    let b: Vec<f32> = (0..depth * NR).map(|i| (i % 5) as f32 * 0.1).collect();
    let bias = [0.0f32; MR];
    let mut tile = [0.0f32; MR * NR];
    let calls = (1usize << 22) / depth;
    let mut best = 0.0f64;
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < seconds {
        let start = Instant::now();
        for call in 0..calls {
            let a = &a[(call % filter_panels) * depth * MR..];
            // SAFETY: the path is supported; the operands hold depth x MR and depth x NR.
            unsafe {
                microkernel(
                    path,
                    depth,
                    a.as_ptr(),
                    b.as_ptr(),
                    NR,
                    bias.as_ptr(),
                    false,
                    tile.as_mut_ptr(),
                );
            }
            std::hint::black_box(&mut tile);
        }
        let fmas = (calls * depth * MR * NR) as f64;
        best = best.max(fmas / start.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let depth: usize = args.first().map_or(256, |s| s.parse().expect("depth"));
    let seconds: f64 = args.get(1).map_or(1.0, |s| s.parse().expect("seconds"));
    let path = engine::cpu::selected();
    let peak = peak(path, seconds);
    println!(
        "path {path}: FMA peak of one core at this width {:.1} GFLOP/s",
        2.0 * peak / 1e9
    );
    // zf's conv2 (96 x 5 x 5 taps, 256 filters): B 460 KB, all of A 2.4 MB.
    for (depth, filter_panels) in [(depth, 1), (2400, 1), (2400, 32)] {
        let rate = kernel_rate(path, depth, filter_panels, seconds);
        println!(
            "microkernel {MR}x{NR}, depth {depth:5}, {filter_panels:2} panel(s) of A in turn: {:.1} GFLOP/s, {:.0}% of the peak",
            2.0 * rate / 1e9,
            100.0 * rate / peak
        );
    }
}
