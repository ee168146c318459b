//! Every command of `make test` resolves each dependency with the same features, so that CI
//! compiles each dependency once (see this crate's `Cargo.toml`). The commands are the
//! Makefile's `test` target's; keep the two lists together.

use std::collections::BTreeMap;
use std::process::Command;

/// `cargo tree` arguments that select what each command of `make test` builds.
const COMMANDS: &[(&str, &[&str])] = &[
    (
        "cargo build -p zfnet",
        &["-p", "zfnet", "-e", "normal,build"],
    ),
    (
        "cargo nextest run --workspace",
        &["--workspace", "-e", "normal,build,dev"],
    ),
    (
        "cargo nextest run -p cuda-backend --features cuda",
        &[
            "-p",
            "cuda-backend",
            "--features",
            "cuda",
            "-e",
            "normal,build,dev",
        ],
    ),
    (
        "cargo test -p tests",
        &["-p", "tests", "-e", "normal,build,dev"],
    ),
];

/// `package version` -> its enabled features, for the external packages one command builds.
fn features_of(selection: &[&str]) -> BTreeMap<String, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "--offline",
            "--locked",
            "--prefix",
            "none",
            "--format",
            "{p}|{f}",
        ])
        .args(selection)
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree {selection:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut features = BTreeMap::new();
    for line in String::from_utf8(output.stdout)
        .expect("cargo tree prints UTF-8")
        .lines()
    {
        let Some((package, enabled)) = line.split_once('|') else {
            continue;
        };
        // Our own crates are given by a path; only registry packages are shared builds.
        if package.contains(" (/") {
            continue;
        }
        let package = package.trim_end_matches(" (proc-macro)").to_owned();
        let enabled = enabled.trim_end_matches(" (*)").to_owned();
        features.insert(package, enabled);
    }
    features
}

#[test]
fn every_command_of_make_test_resolves_the_same_dependency_features() {
    let resolved: Vec<(&str, BTreeMap<String, String>)> = COMMANDS
        .iter()
        .map(|(command, selection)| (*command, features_of(selection)))
        .collect();
    for (command, features) in &resolved {
        // Each selection builds arrow and parquet: a parse that found few packages is a bug here.
        assert!(
            features.len() > 50,
            "{command}: only {} packages parsed",
            features.len()
        );
    }
    let mut differences = Vec::new();
    let mut packages: Vec<&String> = resolved.iter().flat_map(|(_, f)| f.keys()).collect();
    packages.sort();
    packages.dedup();
    for package in packages {
        let seen: Vec<(&str, &String)> = resolved
            .iter()
            .filter_map(|(command, features)| features.get(package).map(|f| (*command, f)))
            .collect();
        if seen.iter().any(|(_, f)| *f != seen[0].1) {
            let listed: Vec<String> = seen.iter().map(|(c, f)| format!("  {c}: [{f}]")).collect();
            differences.push(format!("{package}\n{}", listed.join("\n")));
        }
    }
    assert!(
        differences.is_empty(),
        "these dependencies are built with other features by different commands of `make test`, \
         so CI compiles them (and all above them) more than once; add the union of their features \
         to crates/workspace-hack/Cargo.toml:\n{}",
        differences.join("\n")
    );
}
