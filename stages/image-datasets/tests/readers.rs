//! Every dataset reader on a small folder tree the test builds in its standard layout.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use artifacts::image_files::{ImageFile, read_image_files};
use artifacts::multilabels::read_multilabels;
use stage_api::{ParamValue, Params, StageContext, StageKind};

fn kind(name: &str) -> Arc<dyn StageKind> {
    image_datasets::kinds()
        .into_iter()
        .find(|k| k.name() == name)
        .unwrap()
}

fn touch(root: &Path, relative: &str) {
    let path = root.join(relative);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, b"bytes").unwrap();
}

struct Ran {
    files: Vec<ImageFile>,
    lines: Vec<String>,
    out: PathBuf,
}

fn run(
    name: &str,
    inputs: &[(&str, PathBuf)],
    params: &[(&str, ParamValue)],
) -> stage_api::Result<Ran> {
    let kind = kind(name);
    let out = tempfile::tempdir().unwrap().keep();
    let outputs = kind
        .outputs()
        .iter()
        .map(|spec| (spec.name.to_owned(), out.join(spec.file_name)))
        .collect();
    let ctx = StageContext::for_tests(
        Params::defaults_with(&kind.params(), params),
        inputs
            .iter()
            .map(|(name, path)| ((*name).to_owned(), vec![path.clone()]))
            .collect::<BTreeMap<_, _>>(),
        outputs,
        out.clone(),
    );
    let summary = kind.run(&ctx)?;
    Ok(Ran {
        files: read_image_files(&out.join("files.parquet")).unwrap(),
        lines: summary.lines,
        out,
    })
}

fn names(files: &[ImageFile]) -> Vec<(String, i32, String)> {
    files
        .iter()
        .map(|f| {
            let name = Path::new(&f.path)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (name, f.label, f.class_name.clone())
        })
        .collect()
}

#[test]
fn image_folder_labels_sorted_classes_and_reports_empty_folders_and_strays() {
    let root = tempfile::tempdir().unwrap();
    touch(root.path(), "cat/2.jpg");
    touch(root.path(), "cat/1.jpg");
    touch(root.path(), "dog/.DS_Store");
    touch(root.path(), "dog/nested/3.png");
    fs::create_dir_all(root.path().join("emu")).unwrap();
    touch(root.path(), "README.txt");
    let ran = run("image_folder", &[("root", root.path().into())], &[]).unwrap();
    assert_eq!(
        names(&ran.files),
        vec![
            ("1.jpg".into(), 0, "cat".into()),
            ("2.jpg".into(), 0, "cat".into()),
            (".DS_Store".into(), 1, "dog".into()),
            ("3.png".into(), 1, "dog".into()),
        ],
        "junk is listed (preprocess rejects it with a reason), nothing is dropped here"
    );
    assert_eq!(ran.lines[0], "4 files in 3 classes");
    assert!(ran.lines[1].contains("empty class folder(s), kept as classes with no images: emu"));
    assert!(ran.lines[2].contains("ignored 1 file(s) outside class folders: README.txt"));
    let ids: Vec<i64> = ran.files.iter().map(|f| f.image_id).collect();
    assert_eq!(ids, vec![0, 1, 2, 3]);
}

#[test]
fn image_folder_limit_and_exclusions() {
    let root = tempfile::tempdir().unwrap();
    for i in 0..5 {
        touch(root.path(), &format!("a/{i}.jpg"));
        touch(root.path(), &format!("b/{i}.jpg"));
    }
    let ran = run(
        "image_folder",
        &[("root", root.path().into())],
        &[
            ("limit_per_class", ParamValue::Int(2)),
            (
                "exclude_classes",
                ParamValue::List(vec![ParamValue::Str("a".into())]),
            ),
        ],
    )
    .unwrap();
    assert_eq!(
        names(&ran.files),
        vec![
            ("0.jpg".into(), 0, "b".into()),
            ("1.jpg".into(), 0, "b".into())
        ]
    );
}

#[test]
fn caltech101_drops_background_google_and_accepts_the_parent_folder() {
    let root = tempfile::tempdir().unwrap();
    touch(
        root.path(),
        "101_ObjectCategories/BACKGROUND_Google/image_0001.jpg",
    );
    touch(root.path(), "101_ObjectCategories/accordion/image_0001.jpg");
    touch(root.path(), "101_ObjectCategories/airplanes/image_0001.jpg");
    let ran = run("caltech101", &[("root", root.path().into())], &[]).unwrap();
    let classes: Vec<_> = ran
        .files
        .iter()
        .map(|f| (f.class_name.as_str(), f.label))
        .collect();
    assert_eq!(classes, vec![("accordion", 0), ("airplanes", 1)]);
    let kept = run(
        "caltech101",
        &[("root", root.path().join("101_ObjectCategories"))],
        &[("drop_background", ParamValue::Bool(false))],
    )
    .unwrap();
    assert_eq!(kept.files.len(), 3);
}

#[test]
fn caltech256_strips_number_prefixes_and_drops_clutter() {
    let root = tempfile::tempdir().unwrap();
    touch(root.path(), "256_ObjectCategories/001.ak47/001_0001.jpg");
    touch(
        root.path(),
        "256_ObjectCategories/002.american-flag/002_0001.jpg",
    );
    touch(root.path(), "256_ObjectCategories/257.clutter/257_0001.jpg");
    let ran = run("caltech256", &[("root", root.path().into())], &[]).unwrap();
    let classes: Vec<_> = ran
        .files
        .iter()
        .map(|f| (f.class_name.as_str(), f.label))
        .collect();
    assert_eq!(classes, vec![("ak47", 0), ("american-flag", 1)]);
}

#[test]
fn imagenet_train_and_class_folder_val_use_the_sorted_train_wnids() {
    let root = tempfile::tempdir().unwrap();
    touch(root.path(), "train/n02/n02_1.JPEG");
    touch(root.path(), "train/n01/n01_1.JPEG");
    touch(root.path(), "val/n02/v1.JPEG");
    let train = run("imagenet", &[("root", root.path().into())], &[]).unwrap();
    assert_eq!(
        names(&train.files),
        vec![
            ("n01_1.JPEG".into(), 0, "n01".into()),
            ("n02_1.JPEG".into(), 1, "n02".into())
        ]
    );
    let val = run(
        "imagenet",
        &[("root", root.path().into())],
        &[("split", ParamValue::Str("val".into()))],
    )
    .unwrap();
    assert_eq!(names(&val.files), vec![("v1.JPEG".into(), 1, "n02".into())]);
}

#[test]
fn imagenet_flat_val_reads_name_wnid_lines_or_devkit_ids_with_a_synset_list() {
    let root = tempfile::tempdir().unwrap();
    touch(root.path(), "train/n01/a.JPEG");
    touch(root.path(), "train/n02/b.JPEG");
    touch(root.path(), "val/ILSVRC2012_val_00000001.JPEG");
    touch(root.path(), "val/ILSVRC2012_val_00000002.JPEG");
    let csv = root.path().join("LOC_val_solution.csv");
    fs::write(
        &csv,
        "ImageId,PredictionString\nILSVRC2012_val_00000002,n01 1 2 3 4\nILSVRC2012_val_00000001,n02 5 6 7 8\n",
    )
    .unwrap();
    let params = [("split", ParamValue::Str("val".into()))];
    let val = run(
        "imagenet",
        &[("root", root.path().into()), ("val_labels", csv)],
        &params,
    )
    .unwrap();
    let labels: Vec<i32> = val.files.iter().map(|f| f.label).collect();
    assert_eq!(labels, vec![0, 1], "val_2 is n01 (label 0), val_1 is n02");

    // The devkit's ground truth: one ILSVRC ID per line, IDs in the devkit's synset order.
    let synsets = root.path().join("synsets.txt");
    fs::write(&synsets, "n02 bird\nn01 fish\n").unwrap();
    let truth = root.path().join("ground_truth.txt");
    fs::write(&truth, "1\n2\n").unwrap();
    let val = run(
        "imagenet",
        &[
            ("root", root.path().into()),
            ("val_labels", truth),
            ("synsets", synsets),
        ],
        &params,
    )
    .unwrap();
    assert_eq!(
        names(&val.files),
        vec![
            ("ILSVRC2012_val_00000001.JPEG".into(), 0, "n02".into()),
            ("ILSVRC2012_val_00000002.JPEG".into(), 1, "n01".into())
        ]
    );

    let short = root.path().join("short.txt");
    fs::write(&short, "ILSVRC2012_val_00000001 n01\n").unwrap();
    let error = run(
        "imagenet",
        &[("root", root.path().into()), ("val_labels", short)],
        &params,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(error.contains("1 file(s) have no label"), "{error}");
}

#[test]
fn voc2012_reads_multi_labels_and_difficult_flags() {
    let root = tempfile::tempdir().unwrap();
    let main = root.path().join("VOC2012/ImageSets/Main");
    fs::create_dir_all(&main).unwrap();
    fs::write(main.join("trainval.txt"), "2008_000001\n2008_000002\n").unwrap();
    for class in image_datasets::VOC_CLASSES {
        let (a, b) = match class {
            "dog" => (" 1", "-1"),
            "person" => (" 1", " 0"),
            "cat" => ("-1", " 1"),
            _ => ("-1", "-1"),
        };
        fs::write(
            main.join(format!("{class}_trainval.txt")),
            format!("2008_000001 {a}\n2008_000002 {b}\n"),
        )
        .unwrap();
    }
    touch(root.path(), "VOC2012/JPEGImages/2008_000001.jpg");
    let ran = run("voc2012", &[("root", root.path().into())], &[]).unwrap();
    assert_eq!(
        names(&ran.files)[0],
        ("2008_000001.jpg".into(), 11, "dog".into())
    );
    assert_eq!(ran.files[1].label, 7);
    let labels = read_multilabels(&ran.out.join("multilabels.parquet")).unwrap();
    assert_eq!(labels[0].labels, vec![11, 14]);
    assert_eq!(labels[1].labels, vec![7]);
    assert_eq!(labels[1].difficult, vec![14]);
    assert!(
        ran.lines[1].contains("1 listed image(s) are missing"),
        "{:?}",
        ran.lines
    );
}
