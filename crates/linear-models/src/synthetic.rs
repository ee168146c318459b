//! Generated classification data for tests and benchmarks: overlapping Gaussian clusters, so
//! a linear classifier gets part of the test set wrong and two solvers can be told apart.

/// `classes x per_class` rows of `dim` values (row i has label i % classes): a class mean
/// (uniform in ±`spread`/2 per value, the same for every `seed`) plus unit Gaussian noise from
/// `seed`. Classes lie about `spread * sqrt(dim / 6)` apart: keep that near 4 for a task a
/// linear classifier gets partly wrong.
pub fn clusters(
    classes: usize,
    per_class: usize,
    dim: usize,
    spread: f64,
    seed: u64,
) -> (Vec<f32>, Vec<usize>) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut normal = move || {
        let (u, v) = (uniform().max(1e-300), uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    };
    // Class means come from a fixed stream (seed 0), samples from `seed`.
    let mut mean_stream = {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        }
    };
    let means: Vec<Vec<f64>> = (0..classes)
        .map(|_| (0..dim).map(|_| mean_stream() * spread).collect())
        .collect();
    let mut values = Vec::with_capacity(classes * per_class * dim);
    let mut labels = Vec::with_capacity(classes * per_class);
    for i in 0..classes * per_class {
        let class = i % classes;
        values.extend(means[class].iter().map(|m| (m + normal()) as f32));
        labels.push(class);
    }
    (values, labels)
}

/// `n` rows of `dim` values, uniform in [-0.5, 0.5) from a xorshift64 stream, each scaled to
/// unit length: the vectors of the normalised-correlation tests and benchmarks.
pub fn unit_rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut state = seed | 1;
    let mut rows: Vec<f32> = (0..n * dim)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 10_000) as f32 / 10_000.0 - 0.5
        })
        .collect();
    for row in rows.chunks_mut(dim) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    }
    rows
}
