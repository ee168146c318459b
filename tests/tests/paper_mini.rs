//! The paper's own graph can never silently break: `pipelines/paper.yaml`, unchanged, runs end
//! to end — the full `zf` and `krizhevsky` nets at 224x224 crops of 256x256 images — on
//! miniatures of ImageNet, Caltech-101/256 and VOC 2012 in their real layouts, through
//! `pipelines/paper-mini.yaml` and a smaller CI overlay on top of it (what `make paper-mini`
//! runs, with fewer images, steps and folds).

use std::fs;

use miniatures::{Scale, write_miniatures};
use tests::Project;

/// Smaller still than paper-mini, for the CI scale (4 classes, 8 Caltech images a class).
const CI_OVERLAY: &str = r#"overlays: paper.yaml
stages:
  train: { params: { epochs: 1, checkpoint_epochs: [1] } }
  occlusion: { params: { n_images: 2, stride: 58 } }
  invariance: { params: { n_images: 2, translations: [-40, 0, 40], scales: [0.75, 1] } }
  deconv: { params: { maps_per_layer: 2 } }
  evolution: { params: { maps_per_layer: 2 } }
  filters: { params: { layer2_maps: 2 } }
  probe: { params: { n_train_per_class: 3, max_test_per_class: 2 } }
  probe256: { params: { n_train_per_class: 3, max_test_per_class: 2 } }
  transfer101: { params: { n_per_class: [2, 3], max_test_per_class: 2, scratch_steps: 2, scratch_batch_size: 4 } }
  transfer256: { params: { n_per_class: [1, 3], max_test_per_class: 2, scratch_steps: 2, scratch_batch_size: 4 } }
"#;

#[test]
fn the_paper_pipeline_runs_end_to_end_at_224_pixels_on_dataset_miniatures() {
    let project = Project::new("");
    let pipelines = concat!(env!("CARGO_MANIFEST_DIR"), "/../pipelines");
    for file in ["paper.yaml", "paper-mini.yaml"] {
        let text = fs::read_to_string(format!("{pipelines}/{file}")).unwrap();
        project.write(&format!("pipelines/{file}"), &text);
    }
    project.write("pipelines/paper-ci.yaml", CI_OVERLAY);
    let fashion = std::path::Path::new("/usr/share/datasets/fashion-mnist");
    assert!(
        fashion.join("train-images-idx3-ubyte.gz").is_file(),
        "Fashion-MNIST is not installed: run `make data` (make test does)"
    );
    let written = write_miniatures(fashion, &project.path("data/paper-mini"), &Scale::CI).unwrap();

    let args = [
        "-f",
        "pipelines/paper.yaml",
        "--overlay",
        "pipelines/paper-mini.yaml",
        "--overlay",
        "pipelines/paper-ci.yaml",
    ];
    let dag = project.zfnet(&[&args[..], &["dag"]].concat());
    assert!(
        dag.ok().starts_with("pipeline `paper-mini`: 44 stages"),
        "{}",
        dag.stdout
    );

    let run = project.zfnet(&[&args[..], &["run", "--jobs", "2"]].concat());
    let stdout = run.ok();
    assert_eq!(Project::executed(stdout).len(), 44, "{stdout}");

    // The truncated JPEG is rejected, not fatal; the planted duplicates are found.
    let rejects = project.zfnet(
        &[
            &args[..],
            &["show", "caltech256.rejects", "--format", "csv"],
        ]
        .concat(),
    );
    assert!(
        rejects
            .ok()
            .contains("256_ObjectCategories/002.trouser/002_0004.jpg"),
        "{}",
        rejects.stdout
    );
    for (stage, planted) in [("dedup_caltech101", 2), ("dedup_caltech256", 3)] {
        let matches = project.zfnet(
            &[
                &args[..],
                &["show", &format!("{stage}.matches"), "--format", "csv"],
            ]
            .concat(),
        );
        let rows = matches
            .ok()
            .lines()
            .skip(1)
            .filter(|line| !line.trim().is_empty())
            .count();
        assert!(
            rows == planted,
            "{stage}: {rows} matches, {planted} planted:\n{}",
            matches.stdout
        );
    }
    assert_eq!(
        written
            .planted_duplicates
            .iter()
            .filter(|(_, caltech)| caltech.to_string_lossy().contains("caltech101"))
            .count(),
        2
    );

    let export = project.zfnet(&[&args[..], &["export", "report.report", "out"]].concat());
    export.ok();
    let report = fs::read_to_string(project.path("out/README.md")).unwrap();
    assert!(report.contains("Read this first."), "{report}");
    // Table 1 on the miniature's aligned T-shirts: parts and random masks, a verdict.
    let table1 = project.zfnet(
        &[
            &args[..],
            &["show", "correspondence.table1", "--format", "csv"],
        ]
        .concat(),
    );
    let table1 = table1.ok();
    for mask in ["collar", "left_sleeve", "right_sleeve", "random"] {
        assert!(table1.contains(mask), "{table1}");
    }
    assert!(
        report.contains("## Correspondence (§4.3, Table 1, Fig. 8)"),
        "{report}"
    );
    assert!(
        !report.contains("correspondence of object parts across images (Table 1"),
        "Table 1 is measured, not listed as missing:\n{report}"
    );
    // Caltech and VOC beside ImageNet are the paper's own sets, not a deviation.
    assert!(!report.contains("training data (`data`)"), "{report}");
    for section in [
        "Table 1", "Table 2", "Table 3", "Table 4", "Table 5", "Table 6", "Table 7", "Fig. 2",
        "Fig. 4", "Fig. 5", "Fig. 6", "Fig. 7", "Fig. 8", "Fig. 9",
    ] {
        assert!(
            report.contains(section),
            "the report has no {section}:\n{report}"
        );
    }
}
