//! The CPU backend's promise (`engine::cpu::path`): every instruction-set path — AVX-512,
//! AVX2 + FMA, portable — and every thread count computes the same bits, and so does every
//! machine: a fixed workload (training steps of two nets with dropout, LRN and weight decay,
//! evaluation, deconvnet projections through stride-1 and stride-2 layers) is run in a child
//! process per path (`ZFNET_CPU` is read once per process) and its digest compared with the
//! others and with the digest this workload gave when it was written (on x86-64 with
//! AVX-512; `make test-aarch64` runs the same test on aarch64 under qemu).

use engine::cpu::path::{CpuPath, ENV};
use engine::{Architecture, CpuBackend, Mode, Network, UpdateConfig, deconv};

/// Set in the child processes that run the workload.
const CHILD: &str = "ZFNET_PATHS_CHILD";

/// The workload's digest, as every supported machine computes it. Change it only with a
/// change of the arithmetic (say so in the commit; the committed reports change with it).
const REFERENCE_DIGEST: &str = "31029c08a1e89797";

/// FNV-1a over the bits of every value, in order.
fn digest(values: impl IntoIterator<Item = f32>, hash: &mut u64) {
    for value in values {
        for byte in value.to_bits().to_le_bytes() {
            *hash ^= byte as u64;
            *hash = hash.wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// A batch of 10 (not a multiple of any block) 28 x 28 images with 4 learnable classes.
fn batch() -> (Vec<f32>, Vec<usize>) {
    let n = 10;
    let mut x = vec![0.0f32; n * 3 * 28 * 28];
    let mut labels = Vec::new();
    let mut state = 99u64;
    for i in 0..n {
        labels.push(i % 4);
        for (at, value) in x[i * 3 * 28 * 28..][..3 * 28 * 28].iter_mut().enumerate() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            let (y, xx) = ((at / 28) % 28, at % 28);
            let inside = (y / 14) * 2 + xx / 14 == i % 4;
            *value = ((state >> 33) % 40) as f32 * 0.05 - 1.0 + if inside { 2.0 } else { 0.0 };
        }
    }
    (x, labels)
}

/// Three training steps, an evaluation pass and a projection of every conv layer's output
/// for `zf_small` (stride-1 convolutions) and `krizhevsky_small` (9 x 9 stride-2 conv1).
fn workload() -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let (x, labels) = batch();
    for name in ["zf_small", "krizhevsky_small"] {
        let arch = Architecture::from_name(name, 4).unwrap();
        let mut net = Network::new(CpuBackend, arch, 0.03, 11);
        let update = UpdateConfig {
            learning_rate: 0.01,
            momentum: 0.9,
            weight_decay: 5e-4,
            filter_rms_radius: 0.1,
        };
        for step in 0..3 {
            let acts = net.forward(
                x.clone(),
                Mode::Train {
                    dropout_stream: step,
                },
            );
            let loss = net.backward(&acts, &labels);
            digest([loss], &mut hash);
            net.update(&update);
        }
        for param in &net.params {
            digest(param.weight.iter().chain(&param.bias).copied(), &mut hash);
        }
        let acts = net.forward(x.clone(), Mode::Eval);
        digest(acts.logits().iter().copied(), &mut hash);
        for layer in 1..=5 {
            let feature = deconv::feature_op(&net, layer).expect("five conv layers");
            let signal = acts.outputs[feature].clone();
            let pixels = deconv::project(&net, &acts, feature, signal);
            digest(pixels, &mut hash);
        }
    }
    hash
}

/// The workload, run only as a child of the tests below (`--ignored`), which set `CHILD`.
#[test]
#[ignore = "a child process of the tests below"]
fn child_workload() {
    assert!(
        std::env::var_os(CHILD).is_some(),
        "started by the other tests only"
    );
    println!("DIGEST {:016x}", workload());
}

/// A command that runs this test binary again: through `ZFNET_TEST_RUNNER` (e.g.
/// `qemu-aarch64-static -L /usr/aarch64-linux-gnu`, as `make test-aarch64` sets) when the
/// binary was built for another CPU.
fn this_test_binary() -> std::process::Command {
    let exe = std::env::current_exe().unwrap();
    let runner = std::env::var("ZFNET_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut command = std::process::Command::new(program);
            command.args(words).arg(exe);
            command
        }
        None => std::process::Command::new(exe),
    }
}

/// The workload's digest in a child process on `path` with `threads` threads.
fn digest_on(path: CpuPath, threads: usize) -> String {
    let output = this_test_binary()
        .args([
            "child_workload",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env(ENV, path.name())
        .env("RAYON_NUM_THREADS", threads.to_string())
        .output()
        .expect("the test binary starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the workload on {path} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|line| line.split("DIGEST ").nth(1))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no digest from the child on {path}:\n{stdout}"))
        .to_string()
}

#[test]
fn every_path_and_thread_count_trains_and_projects_to_the_same_bits_as_every_machine() {
    let paths = CpuPath::supported_paths();
    eprintln!(
        "paths on this CPU: {}",
        paths
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut digests = Vec::new();
    for &path in &paths {
        for threads in [1, 2] {
            digests.push((path, threads, digest_on(path, threads)));
        }
    }
    let (first_path, first_threads, first) = &digests[0];
    for (path, threads, digest) in &digests {
        assert_eq!(
            digest, first,
            "{path} with {threads} threads differs from {first_path} with {first_threads}"
        );
    }
    assert_eq!(
        first,
        REFERENCE_DIGEST,
        "this machine ({}) computes the workload as {first}; every machine so far computed \
         {REFERENCE_DIGEST}: the CPU backend's arithmetic is not the same here — please \
         report it with `uname -m` and /proc/cpuinfo's flags",
        std::env::consts::ARCH
    );
}

/// A path this CPU lacks is refused with the paths it has (skipped, and said, where the CPU
/// has every path).
#[test]
fn a_path_this_cpu_lacks_is_refused_with_the_paths_it_has() {
    let Some(missing) = CpuPath::ALL.into_iter().find(|path| !path.supported()) else {
        eprintln!("skipped: this CPU runs every path");
        return;
    };
    let outcome = this_test_binary()
        .args(["child_workload", "--exact", "--ignored", "--nocapture"])
        .env(CHILD, "1")
        .env(ENV, missing.name())
        .output()
        .unwrap();
    assert!(!outcome.status.success());
    let stderr = String::from_utf8_lossy(&outcome.stderr);
    assert!(
        stderr.contains(&format!(
            "ZFNET_CPU={missing} asks for instructions this CPU does not have"
        )),
        "{stderr}"
    );
}

#[test]
fn an_unknown_path_is_refused_with_the_paths_to_use() {
    let unknown = this_test_binary()
        .args(["child_workload", "--exact", "--ignored", "--nocapture"])
        .env(CHILD, "1")
        .env(ENV, "sse9")
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("ZFNET_CPU=\"sse9\" is not a CPU path"),
        "{stderr}"
    );
}
