//! `ZFNET_CPU` forces the CPU kernels' path (results are the same on every path: see
//! `crates/engine/src/cpu/path.rs`); a value zfnet cannot use is refused before anything
//! runs, with exit code 2 and what to use instead.

use tests::{Outcome, Project};

#[test]
fn an_unknown_cpu_path_is_refused_before_anything_runs() {
    let project = Project::new("name: p\nstages: []\n");
    let outcome = Outcome::from(
        project
            .command(&["run"])
            .env("ZFNET_CPU", "sse9")
            .output()
            .expect("zfnet runs"),
    );
    assert_eq!(outcome.code, Some(2), "{}", outcome.stderr);
    assert!(
        outcome
            .stderr
            .contains("ZFNET_CPU=\"sse9\" is not a CPU path: use one of avx512, avx2, portable"),
        "{}",
        outcome.stderr
    );
    assert!(!project.path(".zfnet").exists(), "nothing was written");
}

#[test]
fn the_portable_path_is_accepted_everywhere() {
    let project = Project::new("name: p\nstages: []\n");
    let outcome = Outcome::from(
        project
            .command(&["dag"])
            .env("ZFNET_CPU", "portable")
            .output()
            .expect("zfnet runs"),
    );
    assert_eq!(outcome.code, Some(0), "{}", outcome.stderr);
}
