//! `scripts/cuda-libraries.sh`, which `scripts/device-check.sh run` sources on the GPU machine
//! (issue #19): where the CUDA libraries come as pip wheels inside a Python environment and
//! the loader does not see them, their folders go on `LD_LIBRARY_PATH`, and the script says
//! which file each library now resolves to. Tested on a fake environment with a fake `python3`
//! and a fake `ldconfig` that knows nothing, so the machine's own libraries do not matter.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const LIBRARIES: [&str; 4] = [
    "libnvrtc.so.13",
    "libcublas.so.13",
    "libcublasLt.so.13",
    "libcudnn.so.9",
];

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository")
}

fn touch(path: &Path) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, b"").expect("write");
}

fn executable(path: &Path, script: &str) {
    std::fs::write(path, script).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A folder with a fake `ldconfig` (an empty cache) and a fake `python3` whose sysconfig
/// purelib is `purelib` (or that fails, when `None`).
fn fake_tools(root: &Path, purelib: Option<&Path>) -> PathBuf {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    executable(&bin.join("ldconfig"), "#!/bin/sh\nexit 0\n");
    let python = match purelib {
        Some(purelib) => format!("#!/bin/sh\necho '{}'\n", purelib.display()),
        None => "#!/bin/sh\nexit 1\n".to_owned(),
    };
    executable(&bin.join("python3"), &python);
    bin
}

/// Runs `use_cuda_wheels` with the fake tools first on PATH and `LD_LIBRARY_PATH` as given;
/// returns its output and the `LD_LIBRARY_PATH` it leaves.
fn use_cuda_wheels(bin: &Path, ld_library_path: &str) -> (String, String) {
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("bash")
        .arg("-c")
        .arg("source scripts/cuda-libraries.sh && use_cuda_wheels python3 && echo \"LD=${LD_LIBRARY_PATH:-}\"")
        .current_dir(repository())
        .env("PATH", path)
        .env("LD_LIBRARY_PATH", ld_library_path)
        .output()
        .expect("bash runs");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    let ld = stdout
        .lines()
        .find_map(|line| line.strip_prefix("LD="))
        .expect("the LD= line")
        .to_owned();
    (stdout, ld)
}

#[test]
fn the_cuda_wheels_of_the_python_environment_go_on_the_loader_path() {
    let dir = tempfile::tempdir().unwrap();
    let purelib = dir.path().join("site-packages");
    let nvidia = purelib.join("nvidia");
    touch(&nvidia.join("cudnn/lib/libcudnn.so.9"));
    touch(&nvidia.join("cublas/lib/libcublas.so.13"));
    touch(&nvidia.join("cublas/lib/libcublasLt.so.13"));
    touch(&nvidia.join("cuda_nvrtc/lib/libnvrtc.so.13"));
    // Not library folders: headers, and a `lib` without a shared library in it.
    touch(&nvidia.join("cudnn/include/cudnn.h"));
    touch(&nvidia.join("nccl/lib/README"));
    let bin = fake_tools(dir.path(), Some(&purelib));

    let (output, ld) = use_cuda_wheels(&bin, "/opt/other");

    let expected: Vec<String> = ["cublas", "cuda_nvrtc", "cudnn"]
        .iter()
        .map(|package| nvidia.join(package).join("lib").display().to_string())
        .chain(["/opt/other".to_owned()])
        .collect();
    assert_eq!(ld, expected.join(":"), "{output}");
    assert!(
        output.contains("not seen by the loader: libnvrtc.so.13"),
        "{output}"
    );
    for name in LIBRARIES {
        assert!(
            output
                .lines()
                .any(|line| line.contains(&format!("{name}: "))
                    && line.contains("site-packages/nvidia/")),
            "{name} is not reported where it was found:\n{output}"
        );
    }
    assert!(!output.contains("still missing"), "{output}");
}

#[test]
fn libraries_the_loader_already_sees_leave_the_path_alone() {
    let dir = tempfile::tempdir().unwrap();
    let cuda = dir.path().join("cuda/lib64");
    for name in LIBRARIES {
        touch(&cuda.join(name));
    }
    // python3 fails: it must not even be asked.
    let bin = fake_tools(dir.path(), None);

    let (output, ld) = use_cuda_wheels(&bin, &cuda.display().to_string());

    assert_eq!(ld, cuda.display().to_string(), "{output}");
    assert!(!output.contains("not seen"), "{output}");
    assert!(output.contains("libcudnn.so.9: "), "{output}");
}

#[test]
fn without_wheels_it_says_what_is_missing_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let purelib = dir.path().join("site-packages");
    std::fs::create_dir_all(&purelib).unwrap();
    let bin = fake_tools(dir.path(), Some(&purelib));

    let (output, ld) = use_cuda_wheels(&bin, "");

    assert_eq!(ld, "", "{output}");
    assert!(
        output.contains(
            "not seen by the loader: libnvrtc.so.13 libcublas.so.13 libcublasLt.so.13 libcudnn.so.9"
        ),
        "{output}"
    );
    assert!(output.contains("no nvidia/*/lib under"), "{output}");
}
