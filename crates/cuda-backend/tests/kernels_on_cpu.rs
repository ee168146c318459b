//! The CUDA backend's NVRTC kernels (src/kernels.cu), run on the CPU and checked against the
//! CPU backend: on a machine without a GPU (CI, and every session so far) this is how their
//! logic is tested. g++ compiles kernels.cu with tests/cuda_on_cpu.h in front, which runs a
//! launch's blocks in turn and each block's threads as real threads (barriers for
//! `__syncthreads`, statics for `__shared__`). Floats are compared with tolerances where
//! the GPU's FMA contraction and math library may differ in the last bits; integer results
//! (switches, counts, the dropout stream) must match exactly. Without g++ the tests skip and
//! say so. The GPU itself is checked by `zfnet-device-check` (scripts/device-check.sh).

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use engine::geometry::PoolGeometry;
use engine::lrn::LrnConfig;
use rand::{Rng, SeedableRng};

const THREADS: u32 = 256;

/// kernels.cu compiled for the CPU and loaded.
struct Kernels {
    library: libloading::Library,
    /// One launch at a time: the emulated grid and block sizes are globals.
    launching: Mutex<()>,
}

type Launch = unsafe extern "C" fn(u32, u32, extern "C" fn(*const c_void), *const c_void);

/// A raw pointer that the kernel's threads share, as a GPU kernel shares device memory.
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
// SAFETY: the kernels write disjoint elements (or use atomics), as they do on the GPU.
unsafe impl<T> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    fn of(data: &mut [T]) -> Self {
        Shared(data.as_mut_ptr())
    }

    fn of_const(data: &[T]) -> Self {
        Shared(data.as_ptr() as *mut T)
    }
}

extern "C" fn call_closure<F: Fn()>(closure: *const c_void) {
    // SAFETY: `launch` passes a pointer to an `F` that outlives the launch.
    let closure = unsafe { &*(closure as *const F) };
    closure();
}

impl Kernels {
    /// Compiles `src/kernels.cu` as C++ once per content of the sources, into a file named
    /// by their hash: each test process (nextest runs one per test) loads that file, and the
    /// first to need it builds it under a private name and renames it into place, so that no
    /// process ever loads a library another one is still writing.
    fn compile(dir: &Path) -> Result<Self, String> {
        let source = Path::new(env!("CARGO_MANIFEST_DIR"));
        let (header, kernels) = (
            source.join("tests/cuda_on_cpu.h"),
            source.join("src/kernels.cu"),
        );
        let mut hasher = std::hash::DefaultHasher::new();
        for path in [&header, &kernels] {
            let bytes = std::fs::read(path)
                .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
            std::hash::Hash::hash(&bytes, &mut hasher);
        }
        let library = dir.join(format!(
            "libkernels_on_cpu-{:016x}.so",
            std::hash::Hasher::finish(&hasher)
        ));
        if !library.is_file() {
            let partial = dir.join(format!("libkernels_on_cpu.{}.partial", std::process::id()));
            let output = std::process::Command::new("g++")
                .args([
                    "-std=c++20",
                    "-O1",
                    "-shared",
                    "-fPIC",
                    "-pthread",
                    "-include",
                ])
                .arg(&header)
                .args(["-x", "c++"])
                .arg(&kernels)
                .arg("-o")
                .arg(&partial)
                .output()
                .map_err(|error| format!("g++ could not be run ({error})"))?;
            if !output.status.success() {
                // g++ is there but kernels.cu does not compile as C++: a real failure.
                panic!(
                    "kernels.cu does not compile for the CPU:\n{}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            // Atomic: a process racing us renames the same bytes.
            std::fs::rename(&partial, &library)
                .unwrap_or_else(|error| panic!("renaming {}: {error}", partial.display()));
        }
        // SAFETY: the library was built from our sources; loading runs no constructors
        // beyond the C++ runtime's. A library that g++ built but that does not load is a
        // real failure, never a skip.
        let library = unsafe { libloading::Library::new(&library) }.unwrap_or_else(|error| {
            panic!(
                "loading the compiled kernels {} failed: {error}",
                library.display()
            )
        });
        Ok(Kernels {
            library,
            launching: Mutex::new(()),
        })
    }

    /// The kernels, or None (with the reason printed) where g++ is missing.
    fn get() -> Option<&'static Kernels> {
        static KERNELS: OnceLock<Result<Kernels, String>> = OnceLock::new();
        let kernels = KERNELS.get_or_init(|| {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
            Kernels::compile(&dir)
        });
        match kernels {
            Ok(kernels) => Some(kernels),
            Err(reason) => {
                eprintln!(
                    "skipped: {reason}; the kernels are checked on a GPU by zfnet-device-check"
                );
                None
            }
        }
    }

    /// The kernel `name` as a function pointer of type `F`.
    ///
    /// # Safety
    /// `F` must be the kernel's C signature.
    unsafe fn kernel<F: Copy>(&self, name: &str) -> F {
        // SAFETY: the caller names the right signature.
        unsafe { *self.library.get::<F>(name.as_bytes()).expect(name) }
    }

    /// Runs `body` (one kernel call) on `grid` blocks of `block` threads.
    fn launch<F: Fn()>(&self, grid: u32, block: u32, body: F) {
        let _one_at_a_time = self.launching.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: zf_launch's signature is `Launch`; `body` outlives the call.
        unsafe {
            let launch: Launch = self.kernel("zf_launch");
            launch(
                grid,
                block,
                call_closure::<F>,
                &body as *const F as *const c_void,
            );
        }
    }

    /// One thread per element, as the backend's `launch_1d`.
    fn launch_1d<F: Fn()>(&self, len: usize, body: F) {
        self.launch((len as u32).div_ceil(THREADS).max(1), THREADS, body);
    }
}

fn uniform(len: usize, seed: u64) -> Vec<f32> {
    engine::rng::uniform_stream(seed, len)
        .into_iter()
        .map(|u| (2.0 * u - 1.0) as f32)
        .collect()
}

fn assert_close(what: &str, expected: &[f32], actual: &[f32], tolerance: f32) {
    assert_eq!(expected.len(), actual.len(), "{what}: lengths");
    for (i, (&e, &a)) in expected.iter().zip(actual).enumerate() {
        let ok = (e.is_nan() && a.is_nan()) || (e - a).abs() <= tolerance * e.abs().max(1.0);
        assert!(ok, "{what}[{i}]: CPU {e}, kernel {a}");
    }
}

#[test]
fn max_pool_keeps_the_cpu_switches_with_ties_nans_and_partial_windows() {
    let Some(k) = Kernels::get() else { return };
    type MaxPool =
        unsafe extern "C" fn(*const f32, *mut f32, *mut u32, i32, i32, i32, i32, i32, i32, i32);
    type Unpool =
        unsafe extern "C" fn(*const f32, *const u32, *mut f32, i32, i32, i32, i32, i32, i32, i32);
    // 13 -> 6 with 3x3/2 (a partial last window), and the paper's 3x3/2 on an odd 27.
    for (size, stride, h, w) in [(3, 2, 13, 13), (3, 2, 27, 27), (2, 2, 7, 9), (3, 1, 5, 6)] {
        let g = PoolGeometry {
            channels: 3,
            in_h: h,
            in_w: w,
            size,
            stride,
        };
        let n = 2;
        // Values on a coarse grid, so that windows hold ties; two NaNs.
        let mut x: Vec<f32> = uniform(n * g.in_len(), 5)
            .iter()
            .map(|v| (v * 4.0).round())
            .collect();
        x[7] = f32::NAN;
        x[n * g.in_len() - 3] = f32::NAN;
        let (mut y_cpu, mut s_cpu) = (vec![0.0; n * g.out_len()], vec![0u32; n * g.out_len()]);
        engine::cpu::pool::max_pool(&x, &g, &mut y_cpu, &mut s_cpu);
        let (mut y, mut s) = (vec![0.0; y_cpu.len()], vec![0u32; s_cpu.len()]);
        let dims = [g.in_h, g.in_w, g.out_h(), g.out_w(), size, stride].map(|d| d as i32);
        let planes = (n * g.channels) as i32;
        // SAFETY: the signatures of kernels.cu.
        let (pool, unpool): (MaxPool, Unpool) =
            unsafe { (k.kernel("max_pool"), k.kernel("unpool")) };
        let (xp, yp, sp) = (Shared::of_const(&x), Shared::of(&mut y), Shared::of(&mut s));
        k.launch_1d(y_cpu.len(), || unsafe {
            pool(
                xp.0, yp.0, sp.0, planes, dims[0], dims[1], dims[2], dims[3], dims[4], dims[5],
            )
        });
        assert_eq!(s, s_cpu, "switches, {size}x{size}/{stride} on {h}x{w}");
        assert_close("pooled", &y_cpu, &y, 0.0);

        let dy = uniform(y.len(), 6);
        let mut dx_cpu = vec![0.0; x.len()];
        engine::cpu::pool::unpool(&dy, &s_cpu, &g, &mut dx_cpu);
        let mut dx = vec![f32::NAN; x.len()];
        let (dyp, dxp) = (Shared::of_const(&dy), Shared::of(&mut dx));
        k.launch_1d(dx.len(), || unsafe {
            unpool(
                dyp.0, sp.0, dxp.0, planes, dims[0], dims[1], dims[2], dims[3], dims[4], dims[5],
            )
        });
        assert_close("unpooled", &dx_cpu, &dx, 1e-6);
    }
}

#[test]
fn contrast_normalisation_forward_and_backward_match_the_cpu() {
    let Some(k) = Kernels::get() else { return };
    type Forward =
        unsafe extern "C" fn(*const f32, *mut f32, *mut f32, i32, i32, i32, i32, f32, f32, f32);
    type Backward = unsafe extern "C" fn(
        *const f32,
        *const f32,
        *const f32,
        *const f32,
        *mut f32,
        i32,
        i32,
        i32,
        i32,
        f32,
        f32,
    );
    let config = LrnConfig::default();
    let (n, channels, plane) = (2, 11, 5 * 7);
    let len = n * channels * plane;
    let x: Vec<f32> = uniform(len, 8).iter().map(|v| v * 30.0).collect();
    let (mut y_cpu, mut s_cpu) = (vec![0.0; len], vec![0.0; len]);
    engine::cpu::lrn::lrn_forward(&x, channels, plane, &config, &mut y_cpu, &mut s_cpu);
    let (mut y, mut s) = (vec![0.0; len], vec![0.0; len]);
    // SAFETY: the signatures of kernels.cu.
    let (forward, backward): (Forward, Backward) =
        unsafe { (k.kernel("lrn_forward"), k.kernel("lrn_backward")) };
    let (xp, yp, sp) = (Shared::of_const(&x), Shared::of(&mut y), Shared::of(&mut s));
    let (ni, ci, pi, size) = (n as i32, channels as i32, plane as i32, config.size as i32);
    let (kk, alpha, beta) = (config.k as f32, config.alpha as f32, config.beta as f32);
    k.launch_1d(len, || unsafe {
        forward(xp.0, yp.0, sp.0, ni, ci, pi, size, kk, alpha, beta)
    });
    assert_close("lrn scale", &s_cpu, &s, 1e-5);
    assert_close("lrn output", &y_cpu, &y, 1e-5);

    let dy = uniform(len, 9);
    let mut dx_cpu = vec![0.0; len];
    engine::cpu::lrn::lrn_backward(
        &x,
        &y_cpu,
        &s_cpu,
        &dy,
        channels,
        plane,
        &config,
        &mut dx_cpu,
    );
    let mut dx = vec![0.0; len];
    let (dyp, dxp) = (Shared::of_const(&dy), Shared::of(&mut dx));
    k.launch_1d(len, || unsafe {
        backward(
            xp.0, yp.0, sp.0, dyp.0, dxp.0, ni, ci, pi, size, alpha, beta,
        )
    });
    assert_close("lrn input gradient", &dx_cpu, &dx, 1e-4);
}

#[test]
fn bias_sums_are_the_sums_over_images_and_positions() {
    let Some(k) = Kernels::get() else { return };
    type ChannelSums = unsafe extern "C" fn(*mut f32, *const f32, i32, i32, i32);
    type ColumnSums = unsafe extern "C" fn(*mut f32, *const f32, i32, i32);
    type AddChannelBias = unsafe extern "C" fn(*mut f32, *const f32, i32, i32, i32);
    type AddRowBias = unsafe extern "C" fn(*mut f32, *const f32, i32, i32);
    let (n, channels, plane) = (3, 5, 37);
    let dy = uniform(n * channels * plane, 10);
    let mut expected = vec![0.0f64; channels];
    for (i, &v) in dy.iter().enumerate() {
        expected[(i / plane) % channels] += v as f64;
    }
    let mut db = vec![0.0f32; channels];
    // SAFETY: the signatures of kernels.cu.
    let (channel_sums, column_sums, add_channel_bias, add_row_bias): (
        ChannelSums,
        ColumnSums,
        AddChannelBias,
        AddRowBias,
    ) = unsafe {
        (
            k.kernel("channel_sums"),
            k.kernel("column_sums"),
            k.kernel("add_channel_bias"),
            k.kernel("add_row_bias"),
        )
    };
    let (dyp, dbp) = (Shared::of_const(&dy), Shared::of(&mut db));
    let (ni, ci, pi) = (n as i32, channels as i32, plane as i32);
    k.launch(channels as u32, THREADS, || unsafe {
        channel_sums(dbp.0, dyp.0, ni, ci, pi)
    });
    let expected: Vec<f32> = expected.iter().map(|&v| v as f32).collect();
    assert_close("conv bias gradient", &expected, &db, 1e-5);

    // The fc layers' bias gradient: column sums of an N x OUT matrix, rows in order.
    let (rows, outputs) = (7, 300);
    let m = uniform(rows * outputs, 11);
    let mut sums = vec![0.0f32; outputs];
    let (mp, sp) = (Shared::of_const(&m), Shared::of(&mut sums));
    k.launch_1d(outputs, || unsafe {
        column_sums(sp.0, mp.0, rows as i32, outputs as i32)
    });
    let expected: Vec<f32> = (0..outputs)
        .map(|o| (0..rows).map(|r| m[r * outputs + o]).sum())
        .collect();
    assert_close("fc bias gradient", &expected, &sums, 1e-6);

    let bias = uniform(channels, 12);
    let mut y = dy.clone();
    let (yp, bp) = (Shared::of(&mut y), Shared::of_const(&bias));
    let total = y.len() as i32;
    k.launch_1d(y.len(), || unsafe {
        add_channel_bias(yp.0, bp.0, total, ci, pi)
    });
    let expected: Vec<f32> = dy
        .iter()
        .enumerate()
        .map(|(i, &v)| v + bias[(i / plane) % channels])
        .collect();
    assert_close("conv bias", &expected, &y, 0.0);

    type AddChannelBiasRelu = unsafe extern "C" fn(*mut f32, *const f32, i32, i32, i32);
    // SAFETY: the signature of kernels.cu.
    let add_channel_bias_relu: AddChannelBiasRelu = unsafe { k.kernel("add_channel_bias_relu") };
    let mut y = dy.clone();
    y[4] = f32::NAN;
    let mut expected = y.clone();
    for (i, v) in expected.iter_mut().enumerate() {
        *v += bias[(i / plane) % channels];
    }
    engine::cpu::activation::relu(&mut expected);
    let (yp, bp) = (Shared::of(&mut y), Shared::of_const(&bias));
    k.launch_1d(y.len(), || unsafe {
        add_channel_bias_relu(yp.0, bp.0, total, ci, pi)
    });
    assert_close("conv bias then ReLU", &expected, &y, 0.0);
    assert!(expected.contains(&0.0) && expected.iter().any(|&v| v > 0.0));

    let row_bias = uniform(outputs, 13);
    let mut y = m.clone();
    let (yp, bp) = (Shared::of(&mut y), Shared::of_const(&row_bias));
    let total = y.len() as i32;
    k.launch_1d(y.len(), || unsafe {
        add_row_bias(yp.0, bp.0, total, outputs as i32)
    });
    let expected: Vec<f32> = m
        .iter()
        .enumerate()
        .map(|(i, &v)| v + row_bias[i % outputs])
        .collect();
    assert_close("fc bias", &expected, &y, 0.0);
}

#[test]
fn softmax_cross_entropy_matches_the_cpu_and_passes_nan_on() {
    let Some(k) = Kernels::get() else { return };
    type Xent = unsafe extern "C" fn(*const f32, *const i32, *mut f32, *mut f32, i32, i32);
    type Softmax = unsafe extern "C" fn(*const f32, *mut f32, i32, i32);
    let (rows, classes) = (9, 10);
    let mut logits: Vec<f32> = uniform(rows * classes, 14)
        .iter()
        .map(|v| v * 20.0)
        .collect();
    let labels: Vec<usize> = (0..rows).map(|r| (r * 7) % classes).collect();
    let mut d_cpu = vec![0.0; logits.len()];
    let loss_cpu =
        engine::cpu::softmax::softmax_cross_entropy(&logits, &labels, classes, &mut d_cpu);
    // SAFETY: the signatures of kernels.cu.
    let (xent, softmax): (Xent, Softmax) =
        unsafe { (k.kernel("softmax_xent"), k.kernel("softmax_rows")) };
    let run = |logits: &[f32]| {
        let labels_i32: Vec<i32> = labels.iter().map(|&l| l as i32).collect();
        let (mut d, mut row_loss) = (vec![0.0f32; logits.len()], vec![0.0f32; rows]);
        let (lp, lbp, dp, rp) = (
            Shared::of_const(logits),
            Shared::of_const(&labels_i32),
            Shared::of(&mut d),
            Shared::of(&mut row_loss),
        );
        k.launch_1d(rows, || unsafe {
            xent(lp.0, lbp.0, dp.0, rp.0, rows as i32, classes as i32)
        });
        (d, row_loss.iter().sum::<f32>() / rows as f32)
    };
    let (d, loss) = run(&logits);
    assert_close("dlogits", &d_cpu, &d, 1e-5);
    assert!(
        (loss - loss_cpu).abs() <= 1e-5 * loss_cpu.abs(),
        "loss {loss} vs CPU {loss_cpu}"
    );

    let mut probs_cpu = vec![0.0; logits.len()];
    engine::cpu::softmax::softmax(&logits, classes, &mut probs_cpu);
    let mut probs = vec![0.0; logits.len()];
    let (lp, pp) = (Shared::of_const(&logits), Shared::of(&mut probs));
    k.launch_1d(rows, || unsafe {
        softmax(lp.0, pp.0, rows as i32, classes as i32)
    });
    assert_close("softmax", &probs_cpu, &probs, 1e-5);

    logits[3 * classes + 2] = f32::NAN;
    assert!(run(&logits).1.is_nan(), "a NaN logit makes the loss NaN");
}

#[test]
fn the_update_and_filter_renormalisation_match_the_cpu_and_count_across_calls() {
    let Some(k) = Kernels::get() else { return };
    type Sgd = unsafe extern "C" fn(*mut f32, *const f32, *mut f32, i32, f32, f32, f32);
    type Renormalise = unsafe extern "C" fn(*mut f32, i32, f64, *mut u32);
    // SAFETY: the signatures of kernels.cu.
    let (sgd, renormalise): (Sgd, Renormalise) =
        unsafe { (k.kernel("sgd_momentum"), k.kernel("renormalise_filters")) };
    let len = 1000;
    let (w0, g, v0) = (uniform(len, 15), uniform(len, 16), uniform(len, 17));
    let (mut w_cpu, mut v_cpu) = (w0.clone(), v0.clone());
    engine::cpu::sgd::sgd_momentum(&mut w_cpu, &g, &mut v_cpu, 0.01, 0.9, 5e-4);
    let (mut w, mut v) = (w0.clone(), v0.clone());
    let (wp, gp, vp) = (Shared::of(&mut w), Shared::of_const(&g), Shared::of(&mut v));
    k.launch_1d(len, || unsafe {
        sgd(wp.0, gp.0, vp.0, len as i32, 0.01, 0.9, 5e-4)
    });
    assert_close("velocity", &v_cpu, &v, 1e-6);
    assert_close("weights", &w_cpu, &w, 1e-6);

    // 12 filters of 300 weights, RMS from 0.02 to 0.24: those above 0.1 are rescaled.
    let filter_len = 300;
    let mut filters: Vec<f32> = (0..12)
        .flat_map(|f| {
            uniform(filter_len, 20 + f)
                .into_iter()
                .map(move |v| v * 0.02 * (f + 1) as f32 * 1.732)
        })
        .collect();
    let mut expected = filters.clone();
    let expected_count = engine::cpu::sgd::renormalise_filters(&mut expected, filter_len, 0.1);
    assert!(
        expected_count > 2 && expected_count < 12,
        "some filters, not all: {expected_count}"
    );
    let mut count = [5u32];
    let (fp, cp) = (Shared::of(&mut filters), Shared::of(&mut count));
    k.launch(12, THREADS, || unsafe {
        renormalise(fp.0, filter_len as i32, 0.1, cp.0)
    });
    assert_close("renormalised filters", &expected, &filters, 1e-6);
    assert_eq!(
        count[0] as usize,
        5 + expected_count,
        "the counter accumulates"
    );
}

#[test]
fn device_dropout_draws_the_cpu_backends_stream_bit_for_bit() {
    let Some(k) = Kernels::get() else { return };
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct ChaChaKey([u32; 8]);
    type Dropout = unsafe extern "C" fn(*mut f32, *mut f32, i64, ChaChaKey, f64, f32);
    // SAFETY: the signature of kernels.cu.
    let dropout: Dropout = unsafe { k.kernel("dropout_chacha") };
    // Lengths that end mid-block and mid-launch; the paper's p = 0.5 and another.
    for (len, p, seed) in [
        (1, 0.5, 1u64),
        (4096 * 3 + 5, 0.5, 2024),
        (777, 0.3, u64::MAX),
    ] {
        let x = uniform(len, seed ^ 3);
        let (mut x_cpu, mut mask_cpu) = (x.clone(), vec![0.0; len]);
        let draws = engine::rng::uniform_stream(seed, len);
        engine::cpu::activation::dropout(&mut x_cpu, p, &draws, &mut mask_cpu);
        let key = ChaChaKey(engine::rng::chacha8_key(seed));
        let (mut x_gpu, mut mask) = (x.clone(), vec![f32::NAN; len]);
        let (xp, mp) = (Shared::of(&mut x_gpu), Shared::of(&mut mask));
        let scale = (1.0 / (1.0 - p)) as f32;
        k.launch_1d(len.div_ceil(8), || unsafe {
            dropout(xp.0, mp.0, len as i64, key, p, scale)
        });
        assert_eq!(
            mask.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            mask_cpu.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "mask of {len} units, p = {p}, seed {seed}"
        );
        assert_close("dropped activations", &x_cpu, &x_gpu, 0.0);
        let kept = mask.iter().filter(|&&m| m > 0.0).count() as f64 / len as f64;
        if len > 1000 {
            assert!(
                (kept - (1.0 - p)).abs() < 0.03,
                "kept {kept} of units at p = {p}"
            );
        }
    }
}

#[test]
fn device_crops_equal_the_host_crops_with_flips_and_mean_subtracted() {
    let Some(k) = Kernels::get() else { return };
    type CropBatch =
        unsafe extern "C" fn(*const u8, *const i32, *const f32, *mut f32, i32, i32, i32);
    // SAFETY: the signature of kernels.cu.
    let crop_batch: CropBatch = unsafe { k.kernel("crop_batch") };
    let (n, size, crop_size) = (3usize, 12usize, 9usize);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    let images: Vec<u8> = (0..n * size * size * 3).map(|_| rng.random()).collect();
    let mean: Vec<f32> = (0..size * size * 3)
        .map(|_| rng.random::<f32>() * 255.0)
        .collect();
    let crops = [
        imaging::crops::Crop {
            top: 0,
            left: 3,
            flip: false,
        },
        imaging::crops::Crop {
            top: 3,
            left: 0,
            flip: true,
        },
        imaging::crops::Crop {
            top: 2,
            left: 1,
            flip: true,
        },
    ];
    let per_image = 3 * crop_size * crop_size;
    let mut expected = vec![0.0f32; n * per_image];
    for (i, crop) in crops.iter().enumerate() {
        imaging::crops::write_crop_chw(
            &images[i * size * size * 3..(i + 1) * size * size * 3],
            size as u32,
            Some(&mean),
            *crop,
            crop_size as u32,
            &mut expected[i * per_image..(i + 1) * per_image],
        );
    }
    let crop_table: Vec<i32> = crops
        .iter()
        .flat_map(|c| [c.top as i32, c.left as i32, c.flip as i32])
        .collect();
    let mut out = vec![f32::NAN; expected.len()];
    let (ip, cp, mp, op) = (
        Shared::of_const(&images),
        Shared::of_const(&crop_table),
        Shared::of_const(&mean),
        Shared::of(&mut out),
    );
    k.launch_1d(out.len(), || unsafe {
        crop_batch(
            ip.0,
            cp.0,
            mp.0,
            op.0,
            n as i32,
            size as i32,
            crop_size as i32,
        )
    });
    assert_close("crops", &expected, &out, 0.0);
}

#[test]
fn relu_and_masks_act_elementwise() {
    let Some(k) = Kernels::get() else { return };
    type Relu = unsafe extern "C" fn(*mut f32, i32);
    type ReluBackward = unsafe extern "C" fn(*const f32, *mut f32, i32);
    type Multiply = unsafe extern "C" fn(*mut f32, *const f32, i32);
    // SAFETY: the signatures of kernels.cu.
    let (relu, relu_backward, multiply): (Relu, ReluBackward, Multiply) = unsafe {
        (
            k.kernel("relu"),
            k.kernel("relu_backward"),
            k.kernel("multiply"),
        )
    };
    let mut x = uniform(1000, 30);
    x[5] = f32::NAN;
    let mut expected = x.clone();
    engine::cpu::activation::relu(&mut expected);
    let len = x.len() as i32;
    let xp = Shared::of(&mut x);
    k.launch_1d(1000, || unsafe { relu(xp.0, len) });
    assert_close("relu", &expected, &x, 0.0);

    let dy = uniform(1000, 31);
    let mut expected_dy = dy.clone();
    engine::cpu::activation::relu_backward(&x, &mut expected_dy);
    let mut got = dy.clone();
    let gp = Shared::of(&mut got);
    k.launch_1d(1000, || unsafe { relu_backward(xp.0, gp.0, len) });
    assert_close("relu backward", &expected_dy, &got, 0.0);

    let mask = uniform(1000, 32);
    let mut expected = dy.clone();
    engine::cpu::activation::apply_mask(&mut expected, &mask);
    let mut got = dy.clone();
    let (gp, mp) = (Shared::of(&mut got), Shared::of_const(&mask));
    k.launch_1d(1000, || unsafe { multiply(gp.0, mp.0, len) });
    assert_close("mask", &expected, &got, 0.0);
}

#[test]
fn bf16_casts_round_to_nearest_even_like_the_half_crate_and_come_back_exactly() {
    let Some(k) = Kernels::get() else { return };
    type ToBf16 = unsafe extern "C" fn(*const f32, *mut u16, i64);
    type FromBf16 = unsafe extern "C" fn(*const u16, *mut f32, i64);
    type FromBf16Bias = unsafe extern "C" fn(*const u16, *const f32, *mut f32, i32, i32, i32, i32);
    // SAFETY: the signatures of kernels.cu.
    let (to_bf16, from_bf16, from_bf16_bias): (ToBf16, FromBf16, FromBf16Bias) = unsafe {
        (
            k.kernel("to_bf16"),
            k.kernel("from_bf16"),
            k.kernel("from_bf16_bias"),
        )
    };
    // Ordinary values, exact ties both ways, the edges of the range, subnormals, NaN, inf.
    let mut x: Vec<f32> = uniform(2000, 40).iter().map(|v| v * 1e3).collect();
    x.extend([
        f32::from_bits(0x3f80_8000), // 1 + 2^-8: a tie, rounds to even (down)
        f32::from_bits(0x3f81_8000), // a tie that rounds up
        f32::MAX,
        f32::MIN_POSITIVE,
        f32::from_bits(1),
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::from_bits(0x7f80_0001), // a signalling NaN whose payload would round away
    ]);
    let len = x.len();
    let mut bits = vec![0u16; len];
    let (xp, bp) = (Shared::of_const(&x), Shared::of(&mut bits));
    k.launch_1d(len, || unsafe { to_bf16(xp.0, bp.0, len as i64) });
    let expected: Vec<u16> = x
        .iter()
        .map(|&v| half::bf16::from_f32(v).to_bits())
        .collect();
    assert_eq!(bits, expected, "f32 -> bf16 bits");

    let mut back = vec![0.0f32; len];
    let backp = Shared::of(&mut back);
    k.launch_1d(len, || unsafe { from_bf16(bp.0, backp.0, len as i64) });
    let expected: Vec<u32> = bits
        .iter()
        .map(|&b| half::bf16::from_bits(b).to_f32().to_bits())
        .collect();
    assert_eq!(
        back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        expected
    );

    let (channels, plane) = (4usize, 5usize);
    let total = channels * plane * 3;
    let bias = uniform(channels, 41);
    for relu in [0, 1] {
        let mut y = vec![0.0f32; total];
        let (bias_p, yp) = (Shared::of_const(&bias), Shared::of(&mut y));
        k.launch_1d(total, || unsafe {
            from_bf16_bias(
                bp.0,
                bias_p.0,
                yp.0,
                total as i32,
                channels as i32,
                plane as i32,
                relu,
            )
        });
        let mut expected: Vec<f32> = (0..total)
            .map(|i| half::bf16::from_bits(bits[i]).to_f32() + bias[(i / plane) % channels])
            .collect();
        if relu == 1 {
            engine::cpu::activation::relu(&mut expected);
        }
        assert_close("bf16 output with bias", &expected, &y, 0.0);
    }
}

#[test]
fn map_maxima_find_each_maps_first_maximum_like_the_host_scan() {
    let Some(k) = Kernels::get() else { return };
    type MapMaxima =
        unsafe extern "C" fn(*const f32, *const i32, *mut f32, *mut u32, i32, i32, i32);
    // SAFETY: the signature of kernels.cu.
    let map_maxima: MapMaxima = unsafe { k.kernel("map_maxima") };
    // Planes larger and smaller than a block; values on a coarse grid so that maxima tie
    // (the first position must win), NaNs (never win), and a plane of -inf and NaN only.
    for (n, channels, plane) in [(3usize, 7usize, 1000usize), (2, 5, 13)] {
        let mut x: Vec<f32> = uniform(n * channels * plane, 50)
            .iter()
            .map(|v| (v * 3.0).round())
            .collect();
        x[5] = f32::NAN;
        x[plane + 1] = f32::NAN;
        for v in &mut x[2 * plane..3 * plane] {
            *v = f32::NEG_INFINITY;
        }
        x[2 * plane + 3] = f32::NAN;
        let maps = [0usize, 2, 6 % channels, 1];
        let expected = engine::backend::map_maxima_on_host(&x, channels, plane, &maps);
        let pairs = n * maps.len();
        let maps_i32: Vec<i32> = maps.iter().map(|&m| m as i32).collect();
        let (mut values, mut positions) = (vec![0.0f32; pairs], vec![7u32; pairs]);
        let (xp, mp, vp, pp) = (
            Shared::of_const(&x),
            Shared::of_const(&maps_i32),
            Shared::of(&mut values),
            Shared::of(&mut positions),
        );
        k.launch(pairs as u32, THREADS, || unsafe {
            map_maxima(
                xp.0,
                mp.0,
                vp.0,
                pp.0,
                channels as i32,
                plane as i32,
                maps.len() as i32,
            )
        });
        let got: Vec<(f32, u32)> = values.into_iter().zip(positions).collect();
        assert_eq!(got, expected, "{n} images, {channels} maps of {plane}");
        assert_eq!(
            expected[1],
            (f32::NEG_INFINITY, 0),
            "image 0, map 2: nothing above -inf"
        );
        // The case that matters: maxima that tie, resolved to the first position.
        let ties = (0..pairs)
            .filter(|&pair| {
                let (image, map) = (pair / maps.len(), maps[pair % maps.len()]);
                let values = &x[(image * channels + map) * plane..][..plane];
                values.iter().filter(|&&v| v == expected[pair].0).count() > 1
            })
            .count();
        assert!(ties > 0, "some maxima tie");
    }
}
