//! Seeded random streams. Every random choice of a run (initial weights, shuffles, crops,
//! dropout masks) comes from a ChaCha stream keyed by (seed, purpose, epoch, step, ...), so a
//! run resumed from a checkpoint draws exactly what an uninterrupted run would have drawn —
//! no RNG state needs saving.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A 64-bit key for a stream, mixing its parts (splitmix64 finaliser per part).
pub fn stream_key(parts: &[u64]) -> u64 {
    let mut key = 0x243F_6A88_85A3_08D3u64;
    for &part in parts {
        let mut z = key ^ part.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        key = z ^ (z >> 31);
    }
    key
}

/// A ChaCha RNG for the stream `parts`.
pub fn rng_for(parts: &[u64]) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(stream_key(parts))
}

/// `len` uniform draws in [0, 1) from the stream `seed`.
pub fn uniform_stream(seed: u64, len: usize) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random::<f64>()).collect()
}

/// The 256-bit ChaCha key (8 little-endian words) that [`uniform_stream`]`(seed, ..)` runs
/// under. ChaCha is counter-based — block b of a stream is a function of (key, b) alone — so a
/// GPU can draw any part of the same stream in parallel: the CUDA backend's dropout does, and
/// matches the CPU's masks bit for bit.
pub fn chacha8_key(seed: u64) -> [u32; 8] {
    let bytes = ChaCha8Rng::seed_from_u64(seed).get_seed();
    std::array::from_fn(|i| {
        u32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4 bytes"))
    })
}

/// Purposes, so that streams for different things never coincide.
pub mod purpose {
    pub const INIT: u64 = 1;
    pub const SHUFFLE: u64 = 2;
    pub const CROP: u64 = 3;
    pub const DROPOUT: u64 = 4;
}
