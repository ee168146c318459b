//! The data half of the paper (§3) through the real binary: read Fashion-MNIST IDX files (made
//! here), preprocess to SxS, the per-pixel mean, and per-class folds.

use std::fs;
use std::io::Write;

use tests::Project;

fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, dims.len() as u8];
    for dim in dims {
        bytes.extend_from_slice(&dim.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
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

/// 40 training and 20 test images of 28x28; image i of class c is a flat grey of 6 * c + i % 5.
fn write_fashion(dir: &std::path::Path) {
    fs::create_dir_all(dir).unwrap();
    for (prefix, n) in [("train", 40u32), ("t10k", 20)] {
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let pixels: Vec<u8> = (0..n)
            .flat_map(|i| [((i % 10) * 6 + i % 5) as u8; 784])
            .collect();
        let images = idx(&[n, 28, 28], &pixels);
        let mut file =
            fs::File::create(dir.join(format!("{prefix}-images-idx3-ubyte.gz"))).unwrap();
        file.write_all(&gzip(&images)).unwrap();
        fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            idx(&[n], &labels),
        )
        .unwrap();
    }
}

const PIPELINE: &str = r#"name: data
stages:
  - name: train_files
    kind: fashion_mnist
    inputs: { dir: fashion }
    params: { split: train, classes: [0, 1, 2, 3] }
  - name: train
    kind: preprocess
    inputs: { images: train_files.images }
    params: { size: 32 }
  - name: mean
    kind: mean_image
    inputs: { images: train.images }
  - name: folds
    kind: sample_per_class
    inputs: { images: train.images }
    matrix: { fold: [0, 1] }
    params: { n_train_per_class: 2, max_test_per_class: 1 }
"#;

#[test]
fn fashion_mnist_is_read_preprocessed_averaged_and_split() {
    let project = Project::new(PIPELINE);
    write_fashion(&project.path("fashion"));
    let run = project.zfnet(&["run", "--jobs", "2"]);
    let stdout = run.ok();
    assert!(
        stdout.contains("16 images of 40 in train-images-idx3-ubyte.gz"),
        "{stdout}"
    );
    assert!(
        stdout.contains("accepted 16, rejected 0 of 16 files (32x32"),
        "{stdout}"
    );
    assert!(stdout.contains("mean of 16 images of 32x32x3"), "{stdout}");
    assert!(
        stdout.contains("fold 1: 8 train and 4 test images over 4 classes"),
        "{stdout}"
    );

    let csv = project.zfnet(&["show", "train.images", "--format", "csv", "--limit", "3"]);
    assert_eq!(
        csv.ok(),
        "image_id,label,class_name,source,height,width,channels,pixels\n\
         0,0,tshirt_top,train-images-idx3-ubyte.gz#0,32,32,3,<3072 bytes>\n\
         1,1,trouser,train-images-idx3-ubyte.gz#1,32,32,3,<3072 bytes>\n\
         2,2,pullover,train-images-idx3-ubyte.gz#2,32,32,3,<3072 bytes>\n"
    );
    let again = project.zfnet(&["run"]);
    assert!(again.ok().contains("0 ran, 5 fresh"), "{}", again.stdout);
}

#[test]
fn a_missing_dataset_folder_is_a_config_error_naming_the_yaml_key() {
    let project = Project::new(PIPELINE);
    let outcome = project.zfnet(&["run"]);
    assert_eq!(outcome.code, Some(2));
    assert!(
        outcome
            .stderr
            .contains("pipeline.yaml:5: stage `train_files`, input `dir`: path")
            && outcome
                .stderr
                .contains("point `stages.train_files.inputs.dir` at it"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn a_class_too_small_for_the_fold_size_fails_the_stage_with_a_clear_message() {
    let project = Project::new(&PIPELINE.replace("n_train_per_class: 2", "n_train_per_class: 4"));
    write_fashion(&project.path("fashion"));
    let outcome = project.zfnet(&["run"]);
    assert_eq!(outcome.code, Some(1));
    assert!(
        outcome
            .stdout
            .contains("n_train_per_class = 4 leaves no test image for: class 0 has 4 images"),
        "{}",
        outcome.stdout
    );
}
