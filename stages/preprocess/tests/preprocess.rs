//! §3 preprocessing on files the test generates, including every kind of bad input.

use std::collections::BTreeMap;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use artifacts::image_files::{ImageFile, write_image_files};
use artifacts::images::read_images;
use artifacts::parquet_io::read_all;
use artifacts::{HashMemo, Provenance};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use preprocess::Preprocess;
use stage_api::{ParamValue, Params, StageContext, StageKind};

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), format)
        .unwrap();
    bytes
}

fn gradient(width: u32, height: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 60])
    }))
}

/// A listing of good and bad files; returns the listing path.
fn dataset(dir: &Path) -> PathBuf {
    let files: Vec<(&str, Vec<u8>)> = vec![
        (
            "landscape.jpg",
            encode(&gradient(500, 375), ImageFormat::Jpeg),
        ),
        (
            "portrait.png",
            encode(&gradient(120, 200), ImageFormat::Png),
        ),
        ("small.gif", encode(&gradient(20, 30), ImageFormat::Gif)),
        ("truncated.jpg", {
            let bytes = encode(&gradient(300, 200), ImageFormat::Jpeg);
            bytes[..bytes.len() * 6 / 10].to_vec()
        }),
        ("empty.jpg", Vec::new()),
        (".DS_Store", b"\0\0\0\x01Bud1\0\0\x10\0".to_vec()),
        ("notes.jpg", b"this is not a picture".to_vec()),
        ("bomb.bmp", {
            let mut bytes = encode(&gradient(4, 4), ImageFormat::Bmp);
            bytes[18..22].copy_from_slice(&40_000i32.to_le_bytes());
            bytes[22..26].copy_from_slice(&40_000i32.to_le_bytes());
            bytes
        }),
        ("no-extension", encode(&gradient(64, 64), ImageFormat::Png)),
    ];
    let mut listing = Vec::new();
    for (i, (name, bytes)) in files.iter().enumerate() {
        let path = dir.join(name);
        fs::write(&path, bytes).unwrap();
        listing.push(ImageFile {
            image_id: i as i64,
            path: path.display().to_string(),
            label: (i % 2) as i32,
            class_name: format!("c{}", i % 2),
        });
    }
    listing.push(ImageFile {
        image_id: 99,
        path: dir.join("vanished.jpg").display().to_string(),
        label: 0,
        class_name: "c0".into(),
    });
    let path = dir.join("files.parquet");
    write_image_files(&path, &Provenance::ad_hoc("t"), &listing).unwrap();
    path
}

fn run(input: &Path, out: &Path, size: i64, threads: usize) -> Vec<String> {
    let kind = Preprocess;
    let ctx = StageContext::for_tests(
        Params::defaults_with(&kind.params(), &[("size", ParamValue::Int(size))]),
        BTreeMap::from([("images".to_owned(), vec![input.to_path_buf()])]),
        BTreeMap::from([
            ("images".to_owned(), out.join("images")),
            ("rejects".to_owned(), out.join("rejects.parquet")),
        ]),
        out.to_path_buf(),
    );
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| kind.run(&ctx)).unwrap().lines
}

fn rejects(out: &Path) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for batch in read_all(&out.join("rejects.parquet")).unwrap() {
        let source = batch
            .column(1)
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap();
        let reason = batch
            .column(2)
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap();
        for row in 0..batch.num_rows() {
            let name = Path::new(source.value(row))
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            rows.push((name, reason.value(row).to_owned()));
        }
    }
    rows
}

#[test]
fn good_files_become_s_by_s_and_every_bad_file_is_rejected_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let listing = dataset(dir.path());
    let out = dir.path().join("out");
    let lines = run(&listing, &out, 64, 2);
    assert!(
        lines[0].starts_with("accepted 4, rejected 6 of 10 files (64x64"),
        "{lines:?}"
    );

    let images = read_images(&out.join("images")).unwrap();
    let ids: Vec<i64> = images.iter().map(|i| i.image_id).collect();
    assert_eq!(
        ids,
        vec![0, 1, 2, 8],
        "input order kept; a PNG without extension is fine"
    );
    assert!(
        images
            .iter()
            .all(|i| (i.width, i.height, i.pixels.len()) == (64, 64, 64 * 64 * 3))
    );

    let rejects = rejects(&out);
    let reason_of = |name: &str| {
        rejects
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| r.clone())
            .unwrap_or_default()
    };
    assert!(
        reason_of("truncated.jpg").starts_with("corrupt or truncated JPEG"),
        "{rejects:?}"
    );
    assert_eq!(reason_of("empty.jpg"), "empty file");
    assert!(reason_of(".DS_Store").starts_with("not an image"));
    assert!(reason_of("notes.jpg").starts_with("not an image"));
    assert!(reason_of("bomb.bmp").contains("40000x40000"), "{rejects:?}");
    assert!(
        reason_of("vanished.jpg").starts_with("unreadable"),
        "{rejects:?}"
    );
}

#[test]
fn the_output_is_byte_identical_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let listing = dataset(dir.path());
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    run(&listing, &one, 48, 1);
    run(&listing, &two, 48, 2);
    let memo = HashMemo::in_memory();
    for name in ["images", "rejects.parquet"] {
        assert_eq!(
            memo.hash_path(&one.join(name)).unwrap(),
            memo.hash_path(&two.join(name)).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn the_centre_square_survives_a_landscape_image() {
    // 90x30: a red / green / blue third each; the centre crop is the green third.
    let image = DynamicImage::ImageRgb8(RgbImage::from_fn(90, 30, |x, _| match x / 30 {
        0 => Rgb([255, 0, 0]),
        1 => Rgb([0, 255, 0]),
        _ => Rgb([0, 0, 255]),
    }));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("thirds.png");
    fs::write(&path, encode(&image, ImageFormat::Png)).unwrap();
    let listing = dir.path().join("files.parquet");
    let file = ImageFile {
        image_id: 0,
        path: path.display().to_string(),
        label: 0,
        class_name: "c".into(),
    };
    write_image_files(&listing, &Provenance::ad_hoc("t"), &[file]).unwrap();
    let out = dir.path().join("out");
    run(&listing, &out, 16, 1);
    let pixels = &read_images(&out.join("images")).unwrap()[0].pixels;
    let centre = &pixels[(8 * 16 + 8) * 3..][..3];
    assert_eq!(centre, &[0, 255, 0]);
}

/// Runs `kind` in `count` shards into `out/shard-<i>`, then merges them into `out`.
fn run_sharded(input: &Path, out: &Path, size: i64, count: usize) -> Vec<String> {
    let kind = Preprocess;
    let context = |dir: &Path| {
        fs::create_dir_all(dir).unwrap();
        StageContext::for_tests(
            Params::defaults_with(&kind.params(), &[("size", ParamValue::Int(size))]),
            BTreeMap::from([("images".to_owned(), vec![input.to_path_buf()])]),
            BTreeMap::from([
                ("images".to_owned(), dir.join("images")),
                ("rejects".to_owned(), dir.join("rejects.parquet")),
            ]),
            dir.to_path_buf(),
        )
    };
    let mut parts = Vec::new();
    for index in 0..count {
        let ctx = context(&out.join(format!("shard-{index}")));
        kind.run_shard(&ctx, stage_api::Shard { index, count })
            .unwrap();
        parts.push(ctx.outputs.clone());
    }
    kind.merge_shards(&context(out), &parts).unwrap().lines
}

/// The bytes of a run's two outputs, hashed.
fn output_hashes(out: &Path) -> (String, String) {
    let memo = HashMemo::in_memory();
    (
        memo.hash_path(&out.join("images")).unwrap().to_string(),
        memo.hash_path(&out.join("rejects.parquet"))
            .unwrap()
            .to_string(),
    )
}

/// A preprocess split into shards (what a Slurm array runs) and merged writes the bytes of
/// one run, for a listing with bad files and for a decoded artifact spanning several
/// chunks, whatever the number of shards (more shards than files included).
#[test]
fn shards_merged_give_the_bytes_of_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let listing = dataset(dir.path());
    let whole = dir.path().join("whole");
    run(&listing, &whole, 48, 2);
    for count in [1, 2, 3, 16] {
        let out = dir.path().join(format!("listing-{count}"));
        let lines = run_sharded(&listing, &out, 48, count);
        assert!(
            lines[0].starts_with(&format!(
                "accepted 4, rejected 6 of 10 files (48x48, merged from {count} shards)"
            )),
            "{lines:?}"
        );
        assert_eq!(output_hashes(&out), output_hashes(&whole), "{count} shards");
    }

    let decoded = dir.path().join("decoded");
    artifacts::images::write_noise_images(&decoded, 700, 0, 10, 7).unwrap();
    let whole = dir.path().join("decoded-whole");
    run(&decoded, &whole, 24, 2);
    for count in [2, 3, 5] {
        let out = dir.path().join(format!("decoded-{count}"));
        run_sharded(&decoded, &out, 24, count);
        assert_eq!(output_hashes(&out), output_hashes(&whole), "{count} shards");
    }
}
