//! §3 training through the binary: a run killed mid-training resumes from its last epoch
//! checkpoint and ends with the same model, byte for byte, as an uninterrupted run.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::{Project, write_fashion_sized, zfnet_binary};

const PIPELINE: &str = r#"name: resume
stages:
  - name: train_files
    kind: fashion_mnist
    inputs: { dir: fashion }
    params: { split: train }
  - name: test_files
    kind: fashion_mnist
    inputs: { dir: fashion }
    params: { split: test }
  - name: train_images
    kind: preprocess
    inputs: { images: train_files.images }
    params: { size: 32 }
  - name: test_images
    kind: preprocess
    inputs: { images: test_files.images }
    params: { size: 32 }
  - name: mean
    kind: mean_image
    inputs: { images: train_images.images }
  - name: train
    kind: train
    inputs: { train: train_images.images, val: test_images.images, mean: mean.mean }
    params: { arch: zf_small, epochs: 4, batch_size: 8, init_std: 0.03, checkpoint_epochs: [1, 4], seed: 5 }
"#;

fn project() -> Project {
    let project = Project::new(PIPELINE);
    write_fashion_sized(&project.path("fashion"), 480, 20);
    project
}

fn model_path(project: &Project) -> PathBuf {
    let show = project.zfnet(&["show", "train.model"]);
    show.stderr
        .lines()
        .find_map(|line| line.strip_prefix("# train.model: "))
        .and_then(|rest| rest.split(" (").next())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("show prints the model path: {}", show.stderr))
}

fn first_checkpoint(cache: &Path) -> Option<PathBuf> {
    fs::read_dir(cache.join("resume"))
        .ok()?
        .flatten()
        .find_map(|entry| {
            let checkpoint = entry.path().join("checkpoint.safetensors");
            checkpoint.exists().then_some(checkpoint)
        })
}

/// Brings the project's upstream stages up to date, starts `zfnet run train`, and SIGKILLs
/// it (no chance to clean up) as soon as its first epoch checkpoint exists. Returns the cache
/// folder.
fn kill_train_after_its_first_checkpoint(project: &Project) -> PathBuf {
    project.zfnet(&["run", "mean", "test_images"]).ok();
    let mut child = Command::new(zfnet_binary())
        .args(["run", "train"])
        .current_dir(project.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let cache = project.path(".zfnet/cache");
    let started = Instant::now();
    while first_checkpoint(&cache).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "training ended before its first checkpoint"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    cache
}

#[test]
fn a_training_run_killed_after_an_epoch_resumes_and_matches_an_uninterrupted_run() {
    let uninterrupted = project();
    let run = uninterrupted.zfnet(&["run"]);
    assert!(run.ok().contains("done       train"), "{}", run.stdout);
    let expected = fs::read(model_path(&uninterrupted)).unwrap();

    let killed = project();
    let cache = kill_train_after_its_first_checkpoint(&killed);
    assert_eq!(
        killed.status().last().unwrap().1,
        "missing",
        "nothing committed"
    );

    let resumed = killed.zfnet(&["run"]);
    let stdout = resumed.ok();
    assert!(stdout.contains("resumed after epoch"), "{stdout}");
    let got = fs::read(model_path(&killed)).unwrap();
    assert!(
        got == expected,
        "the resumed model differs from the uninterrupted one"
    );
    assert!(
        first_checkpoint(&cache).is_none(),
        "checkpoints are deleted once the run commits"
    );
}

/// A streamed training set (`stream_images`: the path a set over `memory_limit_mb` takes, as
/// ImageNet's does) runs through the binary and says so; a kill and resume still gives the
/// uninterrupted model.
#[test]
fn a_streamed_training_run_resumes_and_matches_an_uninterrupted_run() {
    let streamed = PIPELINE.replace(
        "seed: 5 }",
        "seed: 5, stream_images: true, shuffle_buffer: 64 }",
    );
    let make = || {
        let project = Project::new(&streamed);
        write_fashion_sized(&project.path("fashion"), 480, 20);
        project
    };
    let uninterrupted = make();
    let run = uninterrupted.zfnet(&["run"]);
    let stdout = run.ok();
    assert!(stdout.contains("streamed the training images"), "{stdout}");
    let expected = fs::read(model_path(&uninterrupted)).unwrap();

    let killed = make();
    kill_train_after_its_first_checkpoint(&killed);
    let resumed = killed.zfnet(&["run"]);
    let stdout = resumed.ok();
    assert!(stdout.contains("resumed after epoch"), "{stdout}");
    assert!(
        fs::read(model_path(&killed)).unwrap() == expected,
        "the resumed streamed model differs"
    );
}
