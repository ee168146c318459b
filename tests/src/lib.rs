//! Helpers for the workspace end-to-end tests: a temp project folder and the `zfnet` binary.
//!
//! The tests drive the real binary (so they can kill it mid-write and check exit codes). It is
//! found next to the test executable's `deps/` folder; `make test` builds it first.

pub mod smoke;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `zfnet` binary of the current build profile.
pub fn zfnet_binary() -> PathBuf {
    if let Ok(path) = std::env::var("ZFNET_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let binary = profile_dir.join("zfnet");
    assert!(
        binary.exists(),
        "{} is missing: build it first with `cargo build -p zfnet` (`make test` does), or set \
         ZFNET_BIN",
        binary.display()
    );
    binary
}

/// A temporary project folder with a pipeline file, and a way to run `zfnet` in it.
pub struct Project {
    pub dir: tempfile::TempDir,
}

/// What one `zfnet` invocation did.
#[derive(Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn from(output: Output) -> Self {
        Outcome {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts success and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code,
            Some(0),
            "zfnet failed:\n{}\n{}",
            self.stdout,
            self.stderr
        );
        &self.stdout
    }
}

impl Project {
    pub fn new(pipeline_yaml: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("pipeline.yaml"), pipeline_yaml).expect("write pipeline");
        Project { dir }
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    pub fn write(&self, relative: &str, contents: &str) {
        let path = self.path(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(path, contents).expect("write");
    }

    /// Runs `zfnet ARGS` in the project folder, with the test stage kinds enabled.
    pub fn zfnet(&self, args: &[&str]) -> Outcome {
        Outcome::from(self.command(args).output().expect("zfnet runs"))
    }

    /// The `zfnet ARGS` command of [`Project::zfnet`], to add environment variables to or to
    /// start in the background.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(zfnet_binary());
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("ZFNET_ENABLE_TEST_STAGES", "1")
            .env_remove("ZFNET_CACHE_DIR")
            .env_remove("RUST_LOG");
        command
    }

    /// Starts `zfnet ARGS` in the background, its output captured.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("zfnet starts")
    }

    /// Waits for a background `zfnet` and collects what it printed.
    pub fn finish(child: std::process::Child) -> Outcome {
        Outcome::from(child.wait_with_output().expect("zfnet finishes"))
    }

    /// Waits (at most 60 s) until `relative` exists and contains `text`.
    pub fn wait_for(&self, relative: &str, text: &str) {
        let path = self.path(relative);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !std::fs::read_to_string(&path).is_ok_and(|contents| contents.contains(text)) {
            assert!(
                std::time::Instant::now() < deadline,
                "{} never contained `{text}`",
                path.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// `zfnet status --json` as (stage, state, reason) triples.
    pub fn status(&self) -> Vec<(String, String, String)> {
        let outcome = self.zfnet(&["status", "--json"]);
        let json: serde_json::Value =
            serde_json::from_str(outcome.ok()).expect("status --json prints JSON");
        json.as_array()
            .expect("an array")
            .iter()
            .map(|entry| {
                (
                    entry["stage"].as_str().unwrap().to_owned(),
                    entry["state"].as_str().unwrap().to_owned(),
                    entry["reason"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Stage names that `zfnet run` printed as executed (`done ...`).
    pub fn executed(stdout: &str) -> Vec<String> {
        stdout
            .lines()
            .filter_map(|line| line.strip_prefix("done"))
            .map(|rest| rest.split_whitespace().next().unwrap_or("").to_owned())
            .collect()
    }
}

pub fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, dims.len() as u8];
    for dim in dims {
        bytes.extend_from_slice(&dim.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    bytes
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    // A stored (uncompressed) gzip stream is still gzip: enough to test the gz path without a
    // compression crate here.
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let mut offset = 0;
    loop {
        let block = &bytes[offset..(offset + 65_535).min(bytes.len())];
        offset += block.len();
        let last = offset == bytes.len();
        out.push(last as u8);
        out.extend_from_slice(&(block.len() as u16).to_le_bytes());
        out.extend_from_slice(&(!(block.len() as u16)).to_le_bytes());
        out.extend_from_slice(block);
        if last {
            break;
        }
    }
    out.extend_from_slice(&crc32(bytes).to_le_bytes());
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A small Fashion-MNIST in its IDX layout: `n_train` and `n_test` 28x28 images, labels
/// cycling 0-9; image i is a flat grey of 6 * label + i % 5 (the train images gzipped).
pub fn write_fashion_sized(dir: &std::path::Path, n_train: u32, n_test: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let pixels: Vec<u8> = (0..n)
            .flat_map(|i| [((i % 10) * 6 + i % 5) as u8; 784])
            .collect();
        let images = idx(&[n, 28, 28], &pixels);
        let mut file =
            std::fs::File::create(dir.join(format!("{prefix}-images-idx3-ubyte.gz"))).unwrap();
        file.write_all(&gzip(&images)).unwrap();
        std::fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            idx(&[n], &labels),
        )
        .unwrap();
    }
}

/// The small Fashion-MNIST of the data tests: 40 training and 20 test images.
pub fn write_fashion(dir: &std::path::Path) {
    write_fashion_sized(dir, 40, 20)
}
