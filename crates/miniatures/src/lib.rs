//! Miniatures of the paper's datasets, in their real folder layouts, drawn from real pictures.
//!
//! `pipelines/paper.yaml` reads ILSVRC 2012, Caltech-101, Caltech-256 and PASCAL VOC 2012 as
//! their users have them on disk. Nobody here has them, so this crate writes small stand-ins
//! with the same layouts and the same oddities the real files have, from Fashion-MNIST
//! pictures (upscaled, tinted per class and placed on canvases of varied sizes and aspect
//! ratios, as JPEG):
//!
//! - `imagenet/`: `train/<wnid>/<wnid>_<n>.JPEG`, `val/<wnid>/ILSVRC2012_val_<8 digits>.JPEG`
//!   (the class-folder form `valprep.sh` makes) and `LOC_synset_mapping.txt`; one CMYK JPEG
//!   and one PNG named `.JPEG` in train/, as the real set has.
//!   The first class's first five validation files (all of them, if fewer) are aligned
//!   T-shirts for Table 1, and
//!   `imagenet-parts.csv` gives their sleeves and collar (the paper's eyes and nose).
//! - `imagenet_flat_val/`: the same val images flat, with the devkit's
//!   `ILSVRC2012_validation_ground_truth.txt` (1-based IDs in sorted file order) and
//!   `synsets.txt` in ID order.
//! - `caltech101/101_ObjectCategories/<class>/image_<4 digits>.jpg` with `BACKGROUND_Google/`.
//! - `caltech256/256_ObjectCategories/<NNN>.<class>/<NNN>_<4 digits>.jpg` with `257.clutter/`.
//! - `VOCdevkit/VOC2012/`: `JPEGImages/`, `Annotations/*.xml` (boxes, `difficult` flags) and
//!   `ImageSets/Main/{train,val}.txt` with the 20 `<class>_{train,val}.txt` files (1 present,
//!   -1 absent, 0 present only as difficult).
//!
//! Some JPEGs are grayscale, some CMYK; Caltech-101 holds one PNG and Caltech-256 one truncated
//! JPEG (which `preprocess` must reject, not crash on). A few Caltech images are byte-identical
//! copies of ImageNet training images (`Written::planted_duplicates`), so the overlap removal
//! of §5.2 has something to find. Everything is a pure function of the Fashion-MNIST files and
//! the [`Scale`]: the same bytes on every machine.

mod caltech;
mod draw;
mod imagenet;
mod source;
mod voc;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use caltech::write_caltech;
use draw::{Canvas, Format};
use imagenet::{ALIGNED_IMAGES, write_imagenet};
use voc::write_voc;

pub use fashion_mnist::CLASS_NAMES;

/// The PASCAL VOC classes, in the devkit's order (the `voc2012` reader's list).
pub use artifacts::multilabels::VOC_CLASSES;
pub use imagenet::{PARTS_FILE, wnid};
pub use source::Source;

/// The marker file that says a folder was written by this crate (and with which scale).
pub const MARKER: &str = ".zfnet-miniatures";
/// Bumped whenever the bytes written for a given scale change.
pub const FORMAT_VERSION: u32 = 4;

/// How many images each miniature holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scale {
    /// ImageNet classes (at most 10: one per Fashion-MNIST class).
    pub imagenet_classes: usize,
    pub imagenet_train_per_class: usize,
    pub imagenet_val_per_class: usize,
    /// Object classes of each Caltech set (at most 10).
    pub caltech_classes: usize,
    pub caltech101_per_class: usize,
    pub caltech256_per_class: usize,
    /// Images in `BACKGROUND_Google` and `257.clutter`.
    pub clutter_images: usize,
    pub voc_train: usize,
    pub voc_val: usize,
}

impl Scale {
    /// `make paper-mini`'s scale.
    pub const PAPER_MINI: Scale = Scale {
        imagenet_classes: 10,
        imagenet_train_per_class: 16,
        imagenet_val_per_class: 6,
        caltech_classes: 10,
        caltech101_per_class: 14,
        caltech256_per_class: 14,
        clutter_images: 6,
        voc_train: 60,
        voc_val: 60,
    };

    /// The CI subset's scale (`tests/tests/paper_mini.rs`).
    pub const CI: Scale = Scale {
        imagenet_classes: 4,
        imagenet_train_per_class: 6,
        imagenet_val_per_class: 3,
        caltech_classes: 4,
        caltech101_per_class: 8,
        caltech256_per_class: 8,
        clutter_images: 2,
        voc_train: 24,
        voc_val: 24,
    };

    /// Table 1's aligned images: the first class's first five validation files, or all of
    /// them where it has fewer (the CI scale's three).
    pub fn aligned_images(&self) -> usize {
        ALIGNED_IMAGES.min(self.imagenet_val_per_class)
    }

    fn check(&self) -> Result<(), Error> {
        let too_many = |what: &str, n: usize| Error::Scale(format!("{what} is {n}; at most 10"));
        if self.imagenet_classes > 10 || self.imagenet_classes == 0 {
            return Err(too_many("imagenet_classes", self.imagenet_classes));
        }
        if self.caltech_classes > 10 || self.caltech_classes < 2 {
            return Err(Error::Scale(format!(
                "caltech_classes is {}; 2 to 10 are possible",
                self.caltech_classes
            )));
        }
        if self.caltech101_per_class < 5 || self.caltech256_per_class < 5 {
            return Err(Error::Scale(
                "each Caltech class needs at least 5 images (the PNG or truncated file is the \
                 third or fourth, the planted duplicate the last, and images to train and \
                 test on)"
                    .to_owned(),
            ));
        }
        if self.imagenet_val_per_class < 2 {
            return Err(Error::Scale(format!(
                "imagenet_val_per_class is {}; at least 2 (Table 1 compares pairs of the first \
                 class's images)",
                self.imagenet_val_per_class
            )));
        }
        if self.imagenet_train_per_class < 2 || self.voc_train < 20 || self.voc_val < 20 {
            return Err(Error::Scale(
                "imagenet_train_per_class must be at least 2 and each VOC split at least 20 \
                 images (every class present in each)"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Source(String),
    #[error("{0}")]
    Scale(String),
    #[error(
        "{0} exists, is not empty and was not written by zfnet-miniatures (no {MARKER} in it); \
         nothing was changed: choose another --out folder"
    )]
    NotOurs(PathBuf),
    #[error(
        "{0} exists (left by an interrupted zfnet-miniatures, or not ours at all); nothing was \
         changed: look inside and remove it, then run again"
    )]
    Leftover(PathBuf),
    #[error("encoding an image: {0}")]
    Encode(String),
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What was written.
#[derive(Debug, Default)]
pub struct Written {
    pub files: usize,
    pub bytes: u64,
    /// (ImageNet training file, Caltech file) pairs with identical bytes.
    pub planted_duplicates: Vec<(PathBuf, PathBuf)>,
    /// Files that are not RGB JPEGs, with what they are.
    pub odd_files: Vec<(PathBuf, &'static str)>,
    /// The folder was already up to date: nothing was written.
    pub unchanged: bool,
}

/// Writes files below one root, counting them.
struct Writer<'a> {
    root: &'a Path,
    written: Written,
}

impl Writer<'_> {
    fn write(&mut self, relative: &str, bytes: &[u8]) -> Result<PathBuf, Error> {
        let path = self.root.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        fs::write(&path, bytes).map_err(io_error(&path))?;
        self.written.files += 1;
        self.written.bytes += bytes.len() as u64;
        Ok(path)
    }

    fn image(&mut self, relative: &str, canvas: &Canvas, format: Format) -> Result<Vec<u8>, Error> {
        let bytes = canvas.encode(format)?;
        let path = self.write(relative, &bytes)?;
        if let Some(what) = format.describe() {
            self.written.odd_files.push((path, what));
        }
        Ok(bytes)
    }
}

/// Fashion-MNIST picture offsets per set, so that no two sets share a picture by accident.
const IMAGENET_OFFSET: usize = 0;
const CALTECH101_OFFSET: usize = 1500;
const CALTECH256_OFFSET: usize = 3000;
const VOC_OFFSET: usize = 4500;

/// Writes every miniature under `out` (a new or empty folder, or one this function wrote
/// before: it is replaced only once the new one is complete; a folder already holding this
/// scale's miniatures is left as it is).
pub fn write_miniatures(source_dir: &Path, out: &Path, scale: &Scale) -> Result<Written, Error> {
    scale.check()?;
    let marker = format!("zfnet-miniatures format {FORMAT_VERSION}\n{scale:?}\n");
    if out.exists() {
        let is_empty = fs::read_dir(out).map_err(io_error(out))?.next().is_none();
        let ours = fs::read_to_string(out.join(MARKER)).ok();
        if ours.as_deref() == Some(marker.as_str()) {
            return Ok(Written {
                unchanged: true,
                ..Written::default()
            });
        }
        if !is_empty && ours.is_none() {
            return Err(Error::NotOurs(out.to_path_buf()));
        }
    }
    let source = Source::read(source_dir)?;
    let name = out
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "miniatures".to_owned());
    let parent = out.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io_error(parent))?;
    let staging = parent.join(format!(".{name}.new-{}", std::process::id()));
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    // Nothing is deleted that this call did not create: leftovers of a crash are refused.
    for leftover in [&staging, &old] {
        if leftover.exists() {
            return Err(Error::Leftover(leftover.clone()));
        }
    }
    let mut writer = Writer {
        root: &staging,
        written: Written::default(),
    };
    let result = write_all(&source, scale, &mut writer);
    if let Err(error) = result {
        let _ = fs::remove_dir_all(&staging);
        return Err(error);
    }
    writer.write(MARKER, marker.as_bytes())?;
    let mut written = writer.written;
    // Swap in: the old copy (ours, by its marker) is removed only after the new one is in
    // place, and put back if the new one cannot be.
    let moved_aside = out.exists();
    if moved_aside {
        fs::rename(out, &old).map_err(io_error(out))?;
    }
    if let Err(error) = fs::rename(&staging, out) {
        if moved_aside {
            let _ = fs::rename(&old, out);
        }
        return Err(io_error(out)(error));
    }
    if moved_aside {
        fs::remove_dir_all(&old).map_err(io_error(&old))?;
    }
    let relocate = |path: &Path| out.join(path.strip_prefix(&staging).unwrap_or(path));
    for pair in &mut written.planted_duplicates {
        *pair = (relocate(&pair.0), relocate(&pair.1));
    }
    for (path, _) in &mut written.odd_files {
        *path = relocate(path);
    }
    Ok(written)
}

fn write_all(source: &Source, scale: &Scale, writer: &mut Writer) -> Result<(), Error> {
    let imagenet_train = write_imagenet(source, scale, writer)?;
    write_caltech(source, scale, writer, false, &imagenet_train)?;
    write_caltech(source, scale, writer, true, &imagenet_train)?;
    write_voc(source, scale, writer)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fashion_mnist() -> PathBuf {
        let dir = PathBuf::from("/usr/share/datasets/fashion-mnist");
        assert!(
            dir.join("train-images-idx3-ubyte.gz").is_file(),
            "Fashion-MNIST is not installed: run `make data` (make test does)"
        );
        dir
    }

    fn tree(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut files = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let bytes = fs::read(&path).unwrap();
                    files.push((path.strip_prefix(root).unwrap().to_path_buf(), bytes));
                }
            }
        }
        files.sort();
        files
    }

    #[test]
    fn the_miniatures_are_the_same_bytes_every_time_and_hold_the_real_layouts() {
        let temp = tempfile::tempdir().unwrap();
        let (a, b) = (temp.path().join("a"), temp.path().join("b"));
        let written = write_miniatures(&fashion_mnist(), &a, &Scale::CI).unwrap();
        write_miniatures(&fashion_mnist(), &b, &Scale::CI).unwrap();
        assert_eq!(tree(&a), tree(&b));

        for expected in [
            "imagenet/train/n90000001/n90000001_1000.JPEG",
            "imagenet/LOC_synset_mapping.txt",
            "imagenet_flat_val/ILSVRC2012_validation_ground_truth.txt",
            "caltech101/101_ObjectCategories/BACKGROUND_Google/image_0001.jpg",
            "caltech101/101_ObjectCategories/tshirt_top/image_0001.jpg",
            "caltech256/256_ObjectCategories/257.clutter/257_0001.jpg",
            "caltech256/256_ObjectCategories/002.trouser/002_0001.jpg",
            "VOCdevkit/VOC2012/ImageSets/Main/train.txt",
            "VOCdevkit/VOC2012/ImageSets/Main/aeroplane_val.txt",
            "VOCdevkit/VOC2012/Annotations/2008_000001.xml",
            "VOCdevkit/VOC2012/JPEGImages/2008_000001.jpg",
        ] {
            assert!(a.join(expected).is_file(), "{expected} is missing");
        }
        let kinds: Vec<&str> = written.odd_files.iter().map(|(_, what)| *what).collect();
        for kind in ["grayscale JPEG", "CMYK JPEG (Adobe)", "PNG"] {
            assert!(kinds.contains(&kind), "no {kind} among {kinds:?}");
        }
        assert!(kinds.iter().any(|kind| kind.starts_with("truncated")));
        assert_eq!(written.planted_duplicates.len(), 5);
        for (imagenet, caltech) in &written.planted_duplicates {
            assert_eq!(fs::read(imagenet).unwrap(), fs::read(caltech).unwrap());
        }
        // Every VOC class is present (flag 1) in each split, so every class has an AP.
        for class in VOC_CLASSES {
            for split in ["train", "val"] {
                let text = fs::read_to_string(a.join(format!(
                    "VOCdevkit/VOC2012/ImageSets/Main/{class}_{split}.txt"
                )))
                .unwrap();
                assert!(
                    text.lines().any(|line| line.ends_with(" 1")),
                    "{class}_{split}.txt has no positive image"
                );
            }
        }
        // Table 1: the first class's first five val files, in sorted order (listing ids 0-4),
        // are the 256 x 256 aligned images the part file names, three parts each.
        let mut first_class: Vec<PathBuf> = fs::read_dir(a.join("imagenet/val/n90000001"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        first_class.sort();
        for (i, path) in first_class.iter().enumerate() {
            let image = image::open(path).unwrap();
            let aligned = (image.width(), image.height()) == (256, 256);
            assert_eq!(
                aligned,
                i < Scale::CI.aligned_images(),
                "{}",
                path.display()
            );
        }
        let parts = fs::read_to_string(a.join(PARTS_FILE)).unwrap();
        let rows: Vec<&str> = parts
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("image_id"))
            .collect();
        assert_eq!(Scale::CI.aligned_images(), 3);
        assert_eq!(rows.len(), 3 * 3);
        assert!(rows[0].starts_with("0,left_sleeve,") && rows[8].starts_with("2,collar,"));
        // Writing the same scale again changes nothing, not even a file's time.
        let again = write_miniatures(&fashion_mnist(), &a, &Scale::CI).unwrap();
        assert!(again.unchanged);
    }

    #[test]
    fn a_folder_it_did_not_write_is_left_alone() {
        let temp = tempfile::tempdir().unwrap();
        fs::write(temp.path().join("notes.txt"), "mine").unwrap();
        let error = write_miniatures(&fashion_mnist(), temp.path(), &Scale::CI).unwrap_err();
        assert!(matches!(error, Error::NotOurs(_)), "{error}");
        assert_eq!(tree(temp.path()).len(), 1);
        assert_eq!(
            fs::read_to_string(temp.path().join("notes.txt")).unwrap(),
            "mine"
        );
    }
}
