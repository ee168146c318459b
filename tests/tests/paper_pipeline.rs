//! The paper-scale pipeline file stays valid: with (empty) dataset folders in place it
//! resolves, and without them it names every missing path.

use std::fs;

use tests::Project;

/// The annotation files the paper pipeline reads from the repository's data/annotations/
/// (Table 1's part template), copied into the test project.
fn copy_annotations(project: &Project) {
    let folder = project.path("data/annotations");
    fs::create_dir_all(&folder).unwrap();
    let file = "imagenet-dog-parts.csv";
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/annotations/");
    fs::copy(format!("{shipped}{file}"), folder.join(file)).unwrap();
}

#[test]
fn the_paper_pipeline_resolves_when_its_datasets_exist_and_names_them_when_not() {
    let project = Project::new("");
    let pipelines = project.path("pipelines");
    fs::create_dir_all(&pipelines).unwrap();
    let paper = concat!(env!("CARGO_MANIFEST_DIR"), "/../pipelines/paper.yaml");
    fs::copy(paper, pipelines.join("paper.yaml")).unwrap();
    copy_annotations(&project);

    let missing = project.zfnet(&["-f", "pipelines/paper.yaml", "dag"]);
    assert_eq!(missing.code, Some(2));
    assert!(
        missing
            .stderr
            .contains("point `stages.imagenet_train_files.inputs.root` at it"),
        "{}",
        missing.stderr
    );
    for stage in [
        "caltech101_files",
        "caltech256_files",
        "voc_train_files",
        "voc_val_files",
    ] {
        assert!(
            missing
                .stderr
                .contains(&format!("point `stages.{stage}.inputs.root` at it")),
            "{}",
            missing.stderr
        );
    }

    for folder in [
        "data/imagenet/train",
        "data/101_ObjectCategories",
        "data/256_ObjectCategories",
        "data/VOCdevkit/VOC2012",
    ] {
        fs::create_dir_all(project.path(folder)).unwrap();
    }
    let dag = project.zfnet(&["-f", "pipelines/paper.yaml", "dag"]);
    let text = dag.ok();
    assert!(text.starts_with("pipeline `paper`: 44 stages"), "{text}");
    // The paper's settings are the train kind's defaults, so only the wiring shows.
    assert!(
        text.contains(
            "train [train v4]\n  exclude <- dedup_caltech101.removal, dedup_caltech256.removal\n  mean <- imagenet_mean.mean\n  train <- imagenet_train.images"
        ),
        "{text}"
    );
}

/// The commented `executor:` block of `pipelines/paper.yaml`, switched on as a cluster user
/// would (the `# ` taken off its lines), resolves: every stage it names exists, every value
/// is one Slurm takes, and each GPU training job would ask for a GPU.
#[test]
fn the_paper_pipelines_commented_slurm_block_is_valid_when_switched_on() {
    let project = Project::new("");
    let paper = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../pipelines/paper.yaml"
    ))
    .unwrap();
    let mut in_block = false;
    let mut switched_on = String::new();
    let mut block_lines = 0;
    for line in paper.lines() {
        in_block = line.starts_with("# executor:") || (in_block && line.starts_with("#   "));
        if in_block {
            switched_on.push_str(&line[2..]);
            block_lines += 1;
        } else {
            switched_on.push_str(line);
        }
        switched_on.push('\n');
    }
    assert!(block_lines >= 5, "the block is in paper.yaml");
    fs::create_dir_all(project.path("pipelines")).unwrap();
    fs::write(project.path("pipelines/paper.yaml"), switched_on).unwrap();
    copy_annotations(&project);
    for folder in [
        "data/imagenet/train",
        "data/101_ObjectCategories",
        "data/256_ObjectCategories",
        "data/VOCdevkit/VOC2012",
    ] {
        fs::create_dir_all(project.path(folder)).unwrap();
    }
    let dry = project.zfnet(&["-f", "pipelines/paper.yaml", "run", "--dry-run"]);
    let stdout = dry.ok();
    let train = stdout
        .lines()
        .find(|line| line.starts_with("would run  train:"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        train.contains("[as a Slurm job: 16 CPUs, ")
            && train.contains("time limit 7-00:00:00, partition gpu]"),
        "{train}"
    );
}
