//! §5.2 Table 6 end to end on a generated PASCAL VOC 2012 folder: the `voc2012` reader's
//! multi-labels, preprocessing, a small network, layer-7 features and `transfer_multilabel`'s
//! per-class average precision, into the report.

use std::fs;
use std::path::Path;

use image::{Rgb, RgbImage};
use tests::Project;

/// Classes by VOC index: 7 cat (blue), 11 dog (red), 14 person (green).
const COLOURS: [(usize, &str, [u8; 3]); 3] = [
    (7, "cat", [40, 60, 220]),
    (11, "dog", [220, 50, 40]),
    (14, "person", [40, 200, 60]),
];

/// Image i shows class i % 3; every fourth image also shows a person in its lower half.
fn write_voc(root: &Path, split: &str, first: usize, count: usize) -> Vec<String> {
    let jpegs = root.join("VOC2012/JPEGImages");
    let sets = root.join("VOC2012/ImageSets/Main");
    fs::create_dir_all(&jpegs).unwrap();
    fs::create_dir_all(&sets).unwrap();
    let mut names = Vec::new();
    let mut present: Vec<Vec<usize>> = Vec::new();
    for i in first..first + count {
        let name = format!("2008_{i:06}");
        let (_, _, colour) = COLOURS[i % 3];
        let with_person = i % 4 == 0 && i % 3 != 2;
        let mut image = RgbImage::from_pixel(48, 40, Rgb([128, 128, 128]));
        let shade = (i * 7 % 30) as u8;
        for y in 6..34 {
            for x in 10..38 {
                let c = if with_person && y >= 20 {
                    COLOURS[2].2
                } else {
                    colour
                };
                image.put_pixel(x, y, Rgb(c.map(|v| v.saturating_sub(shade))));
            }
        }
        image.save(jpegs.join(format!("{name}.jpg"))).unwrap();
        let mut classes = vec![COLOURS[i % 3].0];
        if with_person {
            classes.push(14);
        }
        present.push(classes);
        names.push(name);
    }
    fs::write(sets.join(format!("{split}.txt")), names.join("\n") + "\n").unwrap();
    for (class, class_name) in artifacts::multilabels::VOC_CLASSES.iter().enumerate() {
        let lines: String = names
            .iter()
            .zip(&present)
            .map(|(name, classes)| {
                format!(
                    "{name} {}\n",
                    if classes.contains(&class) { " 1" } else { "-1" }
                )
            })
            .collect();
        fs::write(sets.join(format!("{class_name}_{split}.txt")), lines).unwrap();
    }
    names
}

const PIPELINE: &str = r#"name: voc
stages:
  - name: voc_train_files
    kind: voc2012
    inputs: { root: voc }
    params: { split: train }
  - name: voc_val_files
    kind: voc2012
    inputs: { root: voc }
    params: { split: val }
  - name: voc_train
    kind: preprocess
    inputs: { images: voc_train_files.files }
    params: { size: 32 }
  - name: voc_val
    kind: preprocess
    inputs: { images: voc_val_files.files }
    params: { size: 32 }
  - name: mean
    kind: mean_image
    inputs: { images: voc_train.images }
  - name: train
    kind: train
    inputs: { train: voc_train.images, val: voc_val.images, mean: mean.mean }
    params: { arch: zf_small, epochs: 2, batch_size: 16, init_std: 0.03, checkpoint_epochs: [] }
  - name: voc_train_features
    kind: extract
    inputs: { model: train.model, images: voc_train.images }
    params: { layers: [7] }
  - name: voc_val_features
    kind: extract
    inputs: { model: train.model, images: voc_val.images }
    params: { layers: [7] }
  - name: voc
    kind: transfer_multilabel
    inputs:
      train_features: voc_train_features.features
      train_labels: voc_train_files.multilabels
      test_features: voc_val_features.features
      test_labels: voc_val_files.multilabels
  - name: report
    kind: report
    inputs: { table6: [voc.table6] }
    params: { title: voc }
"#;

#[test]
fn voc_multi_labels_give_per_class_average_precision_in_table6() {
    let project = Project::new(PIPELINE);
    let root = project.path("voc");
    write_voc(&root, "train", 1, 36);
    write_voc(&root, "val", 101, 24);
    let run = project.zfnet(&["run"]);
    let stdout = run.ok();
    assert!(stdout.contains("10 ran, 0 fresh, 0 failed"), "{stdout}");
    assert!(stdout.contains("over 3 classes"), "{stdout}");

    let table = project.zfnet(&["show", "voc.table6", "--format", "json"]);
    let rows: Vec<serde_json::Value> = table
        .ok()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(rows.len(), 20, "one row per VOC class");
    let ap = |name: &str| {
        rows.iter()
            .find(|r| r["class_name"] == name)
            .and_then(|r| r["average_precision"].as_f64())
            .unwrap()
    };
    // Colours separate the classes: every present class ranks far above chance (its share
    // of the test images: a third for cat and dog).
    for (_, name, _) in COLOURS {
        assert!(ap(name) > 0.8, "AP of {name}: {}", ap(name));
    }
    assert!(
        rows.iter()
            .find(|r| r["class_name"] == "aeroplane")
            .is_some_and(|r| r["positives"] == 0 && r["average_precision"].as_f64().is_none()),
        "a class without positives has no AP: {rows:?}"
    );

    let export = project.zfnet(&["export", "report.report", "out"]);
    export.ok();
    let readme = fs::read_to_string(project.path("out/README.md")).unwrap();
    assert!(
        readme.contains("## Multi-label transfer (§5.2, Table 6): `voc`"),
        "{readme}"
    );
    assert!(readme.contains("| person |"), "{readme}");
}
