//! The `fashion_mnist` stage on a small IDX pair the test writes.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use artifacts::images::read_images;
use fashion_mnist::FashionMnist;
use stage_api::{ParamValue, Params, StageContext, StageKind};

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, dims.len() as u8];
    for dim in dims {
        bytes.extend_from_slice(&dim.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    bytes
}

/// Six 2x2 images with labels 0, 9, 0, 3, 9, 0; image i's pixels are all i * 10.
fn write_dataset(dir: &std::path::Path) {
    let labels = [0u8, 9, 0, 3, 9, 0];
    let pixels: Vec<u8> = (0..6).flat_map(|i| [i * 10; 4]).collect();
    fs::write(
        dir.join("train-images-idx3-ubyte"),
        idx_bytes(&[6, 2, 2], &pixels),
    )
    .unwrap();
    fs::write(
        dir.join("train-labels-idx1-ubyte"),
        idx_bytes(&[6], &labels),
    )
    .unwrap();
}

fn run(overrides: &[(&str, ParamValue)]) -> (Vec<artifacts::images::ImageRecord>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path());
    let kind = FashionMnist;
    let out = dir.path().join("images");
    let ctx = StageContext::for_tests(
        Params::defaults_with(&kind.params(), overrides),
        BTreeMap::from([("dir".to_owned(), vec![dir.path().to_path_buf()])]),
        BTreeMap::from([("images".to_owned(), out.clone())]),
        PathBuf::from(dir.path()),
    );
    let summary = kind.run(&ctx).unwrap();
    (read_images(&out).unwrap(), summary.lines)
}

#[test]
fn grayscale_becomes_three_equal_channels_with_ids_and_names() {
    let (images, lines) = run(&[]);
    assert_eq!(images.len(), 6);
    assert_eq!(images[1].pixels, vec![10; 12]);
    assert_eq!(
        (images[1].label, images[1].class_name.as_str()),
        (9, "ankle_boot")
    );
    assert_eq!(images[5].source, "train-images-idx3-ubyte#5");
    assert_eq!(lines[0], "6 images of 6 in train-images-idx3-ubyte");
}

#[test]
fn a_class_subset_relabels_by_position_and_the_limit_keeps_the_first_per_class() {
    let classes = ParamValue::List(vec![ParamValue::Int(9), ParamValue::Int(0)]);
    let (images, _) = run(&[
        ("classes", classes),
        ("limit_per_class", ParamValue::Int(2)),
    ]);
    let got: Vec<(i64, i32)> = images.iter().map(|i| (i.image_id, i.label)).collect();
    assert_eq!(got, vec![(0, 1), (1, 0), (2, 1), (4, 0)]);
}

#[test]
fn mismatched_files_are_an_input_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path());
    fs::write(
        dir.path().join("train-labels-idx1-ubyte"),
        idx_bytes(&[5], &[0; 5]),
    )
    .unwrap();
    let kind = FashionMnist;
    let ctx = StageContext::for_tests(
        Params::defaults_with(&kind.params(), &[]),
        BTreeMap::from([("dir".to_owned(), vec![dir.path().to_path_buf()])]),
        BTreeMap::from([("images".to_owned(), dir.path().join("out"))]),
        PathBuf::from(dir.path()),
    );
    let message = kind.run(&ctx).unwrap_err().to_string();
    assert!(message.contains("train-images-idx3-ubyte"), "{message}");
    assert!(message.contains("matching files of one split"), "{message}");
}
