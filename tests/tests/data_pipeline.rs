//! The data half of the paper (§3) through the real binary: read Fashion-MNIST IDX files (made
//! here), preprocess to SxS, the per-pixel mean, and per-class folds.

use tests::{Project, write_fashion};

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
