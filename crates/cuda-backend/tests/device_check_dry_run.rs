//! A dry run of `scripts/device-check.sh run` on a machine without a GPU (issue #19, item 7):
//! the check a GPU session gets one chance at must reach its end here, with every part failing
//! fast and saying why — the driver that is missing, PyTorch that is missing, a binary that was
//! not prepared — so that on the GPU machine the only failures left are the GPU's own.
#![cfg(feature = "cuda")]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn without_a_gpu_every_part_of_the_device_check_fails_fast_and_says_why() {
    if let Ok(info) = cuda_backend::probe() {
        eprintln!(
            "skipped: a GPU is here ({}); the dry run is for machines without one",
            info.name
        );
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let binaries = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (binaries, out) = (binaries.path(), out.path());
    // The check binary of this build; zfnet and zfnet-bench are left out, as when `prepare`
    // was not run.
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_zfnet-device-check"),
        binaries.join("zfnet-device-check"),
    )
    .unwrap();
    let started = Instant::now();
    let output = Command::new("bash")
        .arg(root.join("scripts/device-check.sh"))
        .arg("run")
        .env("DEVICE_CHECK_BINARIES", binaries)
        .env("OUT", out)
        .output()
        .expect("bash runs");
    let took = started.elapsed();
    assert!(output.status.success(), "{output:?}");
    let report = std::fs::read_to_string(out.join("device-check.md")).expect("the report");
    eprintln!("{report}");
    assert!(took < Duration::from_secs(60), "the dry run took {took:?}");
    assert!(report.contains("## CUDA libraries") && report.contains("not seen by the loader"));
    let parts = [
        ("parity", "zfnet-device-check: the CUDA library"),
        ("speed", "zfnet-device-check: the CUDA library"),
        ("PyTorch eager", "torch_zf.py: "),
        ("learning run", "zfnet-device-check: the CUDA library"),
        (
            "top-9 scan, cuda-tf32",
            "zfnet-bench is missing; run `scripts/device-check.sh prepare`",
        ),
        ("top-9 scan, cuda-bf16", "zfnet-bench is missing"),
        ("pipeline with device: cuda", "zfnet is missing"),
        ("PyTorch torch.compile", "torch_zf.py: "),
    ];
    for (part, why) in parts {
        let section = report
            .split("\n### ")
            .find(|section| section.starts_with(&format!("{part} (limit")))
            .unwrap_or_else(|| panic!("the report has a section for `{part}`"));
        assert!(
            section.contains(&format!("{part}: FAILED")),
            "{part} fails: {section}"
        );
        assert!(section.contains(why), "{part} says why ({why}): {section}");
        assert!(
            !section.contains("TIMED OUT"),
            "{part} fails fast: {section}"
        );
    }
    assert!(
        report.contains("device check finished"),
        "the script reached its end"
    );
}
