//! `preprocess` at its largest size, S = 4,096 (issue #16): every image comes out S x S, the
//! artifact's row groups stay within the writer's 256 MiB of pixels, and the stage's memory
//! stays within what it states — chunks bounded by bytes, not by a count of 256 images (which
//! would be 12.9 GB of results at this size). One test in this binary: it reads the process's
//! peak RSS.

use std::collections::BTreeMap;
use std::io::Cursor;

use artifacts::Provenance;
use artifacts::image_files::{ImageFile, write_image_files};
use artifacts::images::{ImageGroups, MAX_GROUP_PIXEL_BYTES};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use preprocess::Preprocess;
use stage_api::{ParamValue, Params, StageContext, StageKind};

#[test]
fn images_come_out_4096_square_in_bounded_groups_and_bounded_memory() {
    const SIZE: u32 = 4096;
    const FILES: usize = 24;
    let dir = tempfile::tempdir().unwrap();
    let mut listing = Vec::new();
    for i in 0..FILES {
        // 320x240 landscapes, each with its own colour in the centre column.
        let picture = DynamicImage::ImageRgb8(RgbImage::from_fn(320, 240, |x, y| {
            let centre = (150..170).contains(&x);
            Rgb([
                if centre {
                    (i * 10) as u8
                } else {
                    (x % 256) as u8
                },
                (y % 256) as u8,
                90,
            ])
        }));
        let mut bytes = Vec::new();
        picture
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .unwrap();
        let path = dir.path().join(format!("{i}.png"));
        std::fs::write(&path, bytes).unwrap();
        listing.push(ImageFile {
            image_id: i as i64,
            path: path.display().to_string(),
            label: (i % 3) as i32,
            class_name: format!("c{}", i % 3),
        });
    }
    let files = dir.path().join("files.parquet");
    write_image_files(&files, &Provenance::ad_hoc("t"), &listing).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let ctx = StageContext::for_tests(
        Params::defaults_with(
            &Preprocess.params(),
            &[("size", ParamValue::Int(SIZE as i64))],
        ),
        BTreeMap::from([("images".to_owned(), vec![files])]),
        BTreeMap::from([
            ("images".to_owned(), out.join("images")),
            ("rejects".to_owned(), out.join("rejects.parquet")),
        ]),
        out.clone(),
    );
    let peak = stage_api::memory::PeakRss::start(true);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let lines = pool.install(|| Preprocess.run(&ctx)).unwrap().lines;
    let grown = peak
        .grown()
        .expect("the peak RSS is measurable here (Linux)");
    assert!(
        lines[0].starts_with(&format!(
            "accepted {FILES}, rejected 0 of {FILES} files (4096x4096"
        )),
        "{lines:?}"
    );
    // What the kind states: a chunk of at most 256 MiB of results, a writer of up to three
    // 256 MiB groups, and per thread a decoded file with its resize buffers (here ~0.1 GB
    // each). All 24 results at once would be 1.2 GB on their own.
    eprintln!("peak RSS grew by {} MB", grown >> 20);
    let stated = (256 << 20) * 4 + 2 * (200 << 20);
    assert!(
        grown < stated,
        "peak RSS grew by {} MB; the stage states under {} MB",
        grown >> 20,
        stated >> 20
    );

    let image_bytes = (SIZE * SIZE * 3) as usize;
    let groups = ImageGroups::open(&out.join("images")).unwrap();
    assert!(groups.groups.len() >= 4, "{} groups", groups.groups.len());
    let mut seen = 0;
    for (index, group) in groups.groups.iter().enumerate() {
        assert!(
            group.rows * image_bytes <= MAX_GROUP_PIXEL_BYTES + image_bytes,
            "group {index}: {} images of {image_bytes} bytes",
            group.rows
        );
        for image in groups.read(index).unwrap() {
            assert_eq!((image.width, image.height, image.channels), (SIZE, SIZE, 3));
            assert_eq!(image.pixels.len(), image_bytes);
            // The centre column's colour survives the resize and the crop.
            let centre = ((SIZE / 2) as usize * SIZE as usize + (SIZE / 2) as usize) * 3;
            assert_eq!(image.pixels[centre], (image.image_id * 10) as u8);
            seen += 1;
        }
    }
    assert_eq!(seen, FILES);
}
