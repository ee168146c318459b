//! `device: cuda` in a build without the GPU backend (CI's): every kind that runs the network
//! says how to get it — and nothing silently runs on the CPU instead.

use tests::{Project, write_fashion_sized};

const PIPELINE: &str = r#"name: devices
stages:
  - name: files
    kind: fashion_mnist
    inputs: { dir: fashion }
    params: { split: train }
  - name: images
    kind: preprocess
    inputs: { images: files.images }
    params: { size: 32 }
  - name: mean
    kind: mean_image
    inputs: { images: images.images }
  - name: train
    kind: train
    inputs: { train: images.images, val: images.images, mean: mean.mean }
    params: { arch: zf_small, epochs: 1, batch_size: 32, checkpoint_epochs: [], device: cuda }
"#;

#[test]
fn a_gpu_device_without_the_cuda_build_fails_with_what_to_do() {
    let project = Project::new(PIPELINE);
    write_fashion_sized(&project.path("fashion"), 60, 10);
    let run = project.zfnet(&["run"]);
    if run.code == Some(0) {
        // A `--features cuda` binary on a machine with a GPU: the stage ran there.
        eprintln!("skipped: this zfnet has a working GPU backend");
        return;
    }
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    let text = format!("{}{}", run.stdout, run.stderr);
    // The usual build: no GPU backend compiled in. (A `--features cuda` build on a machine
    // without the CUDA libraries names the missing library instead.)
    let not_built =
        text.contains("this build has no `cuda` feature") && text.contains("--features cuda");
    let no_library = text.contains("was not found");
    assert!(
        (not_built || no_library) && text.contains("device: cpu"),
        "{text}"
    );

    // The deconvnet's scan too (any kind with a `device` param), here in TF32.
    let deconv = PIPELINE.replace("device: cuda }", "device: cpu }")
        + "  - name: scan\n    kind: deconv_top9\n    inputs: { model: train.model, images: images.images }\n    params: { device: cuda-tf32 }\n";
    let project = Project::new(&deconv);
    write_fashion_sized(&project.path("fashion"), 60, 10);
    let run = project.zfnet(&["run", "scan"]);
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    let text = format!("{}{}", run.stdout, run.stderr);
    assert!(text.contains("FAILED     scan"), "{text}");
    assert!(
        text.contains("--features cuda") || text.contains("was not found"),
        "{text}"
    );
    assert!(!text.contains("done       scan"), "{text}");
}
