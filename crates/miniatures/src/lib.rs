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

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use fashion_mnist::CLASS_NAMES;

/// The PASCAL VOC classes, in the devkit's order (the `voc2012` reader's list).
pub use artifacts::multilabels::VOC_CLASSES;

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

/// Fashion-MNIST's training pictures grouped by class.
pub struct Source {
    by_class: Vec<Vec<[u8; 784]>>,
}

impl Source {
    /// Reads `train-images-idx3-ubyte[.gz]` and `train-labels-idx1-ubyte[.gz]` from `dir`.
    pub fn read(dir: &Path) -> Result<Source, Error> {
        let find = |stem: &str| {
            fashion_mnist::find_idx(dir, stem).map_err(|error| Error::Source(error.to_string()))
        };
        let images_path = find("train-images-idx3-ubyte")?;
        let labels_path = find("train-labels-idx1-ubyte")?;
        let read = |path: &Path| {
            fashion_mnist::read_idx(path)
                .map_err(|error| Error::Source(format!("{}: {error}", path.display())))
        };
        let images = read(&images_path)?;
        let labels = read(&labels_path)?;
        if images.dims.len() != 3 || images.dims[1] != 28 || images.dims[2] != 28 {
            return Err(Error::Source(format!(
                "{}: expected N x 28 x 28 images, found dims {:?}",
                images_path.display(),
                images.dims
            )));
        }
        if labels.dims != [images.dims[0]] {
            return Err(Error::Source(format!(
                "{} has {:?} labels for {} images",
                labels_path.display(),
                labels.dims,
                images.dims[0]
            )));
        }
        let mut by_class = vec![Vec::new(); 10];
        for (label, pixels) in labels.data.iter().zip(images.data.chunks_exact(784)) {
            let Some(class) = by_class.get_mut(usize::from(*label)) else {
                return Err(Error::Source(format!(
                    "{}: label {label} is not a Fashion-MNIST class (0-9)",
                    labels_path.display()
                )));
            };
            class.push(pixels.try_into().expect("chunks of 784"));
        }
        Ok(Source { by_class })
    }

    /// The first `n` T-shirts with sleeves ([`has_sleeves`]) from picture [`TSHIRTS_FROM`]
    /// of class 0 on.
    fn tshirts_with_sleeves(&self, n: usize) -> Result<Vec<&[u8; 784]>, Error> {
        let found: Vec<&[u8; 784]> = self.by_class[0]
            .iter()
            .skip(TSHIRTS_FROM)
            .filter(|picture| has_sleeves(picture))
            .take(n)
            .collect();
        if found.len() < n {
            return Err(Error::Source(format!(
                "Fashion-MNIST has fewer than {n} T-shirts with sleeves past picture \
                 {TSHIRTS_FROM} of class 0"
            )));
        }
        Ok(found)
    }

    /// The `n`th picture of `class` (wrapping around).
    fn picture(&self, class: usize, n: usize) -> Result<&[u8; 784], Error> {
        let pictures = &self.by_class[class % 10];
        if pictures.is_empty() {
            return Err(Error::Source(format!(
                "Fashion-MNIST holds no picture of class {class}"
            )));
        }
        Ok(&pictures[n % pictures.len()])
    }
}

/// How an image is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Rgb,
    Gray,
    Cmyk,
    Png,
    Truncated,
}

impl Format {
    fn describe(self) -> Option<&'static str> {
        match self {
            Format::Rgb => None,
            Format::Gray => Some("grayscale JPEG"),
            Format::Cmyk => Some("CMYK JPEG (Adobe)"),
            Format::Png => Some("PNG"),
            Format::Truncated => Some("truncated JPEG (preprocess rejects it)"),
        }
    }
}

/// One object on a canvas: a picture, its colour, size and place.
struct Object<'a> {
    picture: &'a [u8; 784],
    colour: [f32; 3],
    mirrored: bool,
    size: u32,
    x: u32,
    y: u32,
}

/// A canvas of `width` x `height` with a two-colour gradient and a little noise.
struct Canvas {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Canvas {
    fn new(width: u32, height: u32, rng: &mut ChaCha8Rng) -> Canvas {
        // A gradient in a random direction and three waves of random frequency, orientation
        // and phase, per channel, plus noise: unrelated canvases must not correlate (the
        // overlap removal of §5.2 compares images by normalised correlation; vertical
        // gradients alone made most pairs of miniature images look like duplicates).
        let base: [f32; 3] = std::array::from_fn(|_| rng.random_range(70.0..170.0));
        let angle = rng.random_range(0.0..std::f32::consts::TAU);
        let slope: [f32; 3] = std::array::from_fn(|_| rng.random_range(-50.0..50.0));
        let waves: Vec<([f32; 2], f32, [f32; 3])> = (0..3)
            .map(|_| {
                let cycles = rng.random_range(1.0..7.0_f32);
                let direction = rng.random_range(0.0..std::f32::consts::TAU);
                let frequency = [
                    cycles * libm::cosf(direction) * std::f32::consts::TAU,
                    cycles * libm::sinf(direction) * std::f32::consts::TAU,
                ];
                let phase = rng.random_range(0.0..std::f32::consts::TAU);
                let amplitude = std::array::from_fn(|_| rng.random_range(-30.0..30.0));
                (frequency, phase, amplitude)
            })
            .collect();
        // libm, not the platform's: the same bytes on every machine.
        let (cos, sin) = (libm::cosf(angle), libm::sinf(angle));
        let mut pixels = Vec::with_capacity(width as usize * height as usize * 3);
        for y in 0..height {
            let v = y as f32 / height as f32;
            for x in 0..width {
                let u = x as f32 / width as f32;
                let along = (u - 0.5) * cos + (v - 0.5) * sin;
                let noise: f32 = rng.random_range(-8.0..8.0);
                let mut value = [0.0f32; 3];
                for (channel, slot) in value.iter_mut().enumerate() {
                    *slot = base[channel] + slope[channel] * along + noise;
                }
                for (frequency, phase, amplitude) in &waves {
                    let wave = libm::sinf(frequency[0] * u + frequency[1] * v + phase);
                    for (channel, slot) in value.iter_mut().enumerate() {
                        *slot += amplitude[channel] * wave;
                    }
                }
                pixels.extend(value.map(|value| value.clamp(0.0, 255.0) as u8));
            }
        }
        Canvas {
            width,
            height,
            pixels,
        }
    }

    /// Draws the picture upscaled bilinearly to `size` x `size`, its ink in `colour`.
    fn draw(&mut self, object: &Object) {
        let scale = 28.0 / object.size as f32;
        for dy in 0..object.size {
            let y = object.y + dy;
            if y >= self.height {
                break;
            }
            let sy = ((dy as f32 + 0.5) * scale - 0.5).clamp(0.0, 27.0);
            for dx in 0..object.size {
                let x = object.x + dx;
                if x >= self.width {
                    break;
                }
                let mut sx = ((dx as f32 + 0.5) * scale - 0.5).clamp(0.0, 27.0);
                if object.mirrored {
                    sx = 27.0 - sx;
                }
                let ink = bilinear(object.picture, sx, sy) / 255.0;
                let at = (y as usize * self.width as usize + x as usize) * 3;
                for channel in 0..3 {
                    let old = f32::from(self.pixels[at + channel]);
                    let new = old * (1.0 - ink) + object.colour[channel] * ink;
                    self.pixels[at + channel] = new.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
    }

    fn encode(&self, format: Format) -> Result<Vec<u8>, Error> {
        let encode_error = |error: &dyn std::fmt::Display| Error::Encode(error.to_string());
        let mut bytes = Vec::new();
        match format {
            Format::Rgb | Format::Truncated => {
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
                    .encode(
                        &self.pixels,
                        self.width,
                        self.height,
                        image::ExtendedColorType::Rgb8,
                    )
                    .map_err(|e| encode_error(&e))?;
                if format == Format::Truncated {
                    bytes.truncate(bytes.len() * 2 / 5);
                }
            }
            Format::Gray => {
                let gray: Vec<u8> = self
                    .pixels
                    .chunks_exact(3)
                    .map(|p| {
                        (0.299 * f32::from(p[0])
                            + 0.587 * f32::from(p[1])
                            + 0.114 * f32::from(p[2]))
                        .round() as u8
                    })
                    .collect();
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
                    .encode(&gray, self.width, self.height, image::ExtendedColorType::L8)
                    .map_err(|e| encode_error(&e))?;
            }
            Format::Cmyk => {
                // Plain CMYK (not inverted): jpeg-encoder stores it the Adobe way.
                let cmyk: Vec<u8> = self
                    .pixels
                    .chunks_exact(3)
                    .flat_map(|p| {
                        let k = 255 - p[0].max(p[1]).max(p[2]);
                        let scale = 255 - k;
                        let channel = |v: u8| {
                            if scale == 0 {
                                0
                            } else {
                                ((u32::from(scale - (v.min(scale))) * 255 + u32::from(scale) / 2)
                                    / u32::from(scale)) as u8
                            }
                        };
                        [channel(p[0]), channel(p[1]), channel(p[2]), k]
                    })
                    .collect();
                let width = u16::try_from(self.width).map_err(|e| encode_error(&e))?;
                let height = u16::try_from(self.height).map_err(|e| encode_error(&e))?;
                jpeg_encoder::Encoder::new(&mut bytes, 90)
                    .encode(&cmyk, width, height, jpeg_encoder::ColorType::Cmyk)
                    .map_err(|e| encode_error(&e))?;
            }
            Format::Png => {
                use image::ImageEncoder;
                image::codecs::png::PngEncoder::new(&mut bytes)
                    .write_image(
                        &self.pixels,
                        self.width,
                        self.height,
                        image::ExtendedColorType::Rgb8,
                    )
                    .map_err(|e| encode_error(&e))?;
            }
        }
        Ok(bytes)
    }
}

fn bilinear(picture: &[u8; 784], x: f32, y: f32) -> f32 {
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(27), (y0 + 1).min(27));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let at = |x: usize, y: usize| f32::from(picture[y * 28 + x]);
    let top = at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx;
    let bottom = at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// The ink colour of a class: one hue per class, its brightness varied per image.
fn class_colour(class: usize, rng: &mut ChaCha8Rng) -> [f32; 3] {
    let hue = (class as f32 * 36.0 + if class >= 10 { 18.0 } else { 0.0 }) % 360.0;
    let value = rng.random_range(0.75..1.0_f32);
    hsv(hue, 0.75, value)
}

fn hsv(hue: f32, saturation: f32, value: f32) -> [f32; 3] {
    let c = value * saturation;
    let h = hue / 60.0;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = value - c;
    [(r + m) * 255.0, (g + m) * 255.0, (b + m) * 255.0]
}

/// Draws a one-object picture of Fashion class `class` (its `n`th picture); `None` draws an
/// empty canvas (clutter).
fn single_object(
    source: &Source,
    class: Option<usize>,
    n: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Canvas, Error> {
    // Canvases from 3:1 landscape to 1:2 portrait, the short side 120-360 pixels.
    let short = rng.random_range(120..=360_u32);
    let aspect = rng.random_range(0.5..3.0_f32);
    let (width, height) = if aspect >= 1.0 {
        ((short as f32 * aspect) as u32, short)
    } else {
        (short, (short as f32 / aspect) as u32)
    };
    let mut canvas = Canvas::new(width, height, rng);
    if let Some(class) = class {
        let size = (short as f32 * rng.random_range(0.6..0.95_f32)) as u32;
        let object = Object {
            picture: source.picture(class, n)?,
            colour: class_colour(class, rng),
            mirrored: rng.random_bool(0.5),
            size,
            x: rng.random_range(0..=width - size),
            y: rng.random_range(0..=height - size),
        };
        canvas.draw(&object);
    }
    Ok(canvas)
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

/// The format of the `index`th image of a set: mostly RGB, some grayscale and CMYK.
fn usual_format(index: usize) -> Format {
    if index % 9 == 4 {
        Format::Gray
    } else if index % 13 == 7 {
        Format::Cmyk
    } else {
        Format::Rgb
    }
}

/// A synthetic WordNet id per class (`n9` + the class number: never a real synset).
pub fn wnid(class: usize) -> String {
    format!("n9{:07}", class + 1)
}

/// Where the miniature's Table 1 part file is written (relative to its root).
pub const PARTS_FILE: &str = "imagenet-parts.csv";

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

/// Writes ImageNet; returns the training files' (path, bytes) in class order.
fn write_imagenet(
    source: &Source,
    scale: &Scale,
    writer: &mut Writer,
) -> Result<Vec<(PathBuf, Vec<u8>)>, Error> {
    let mut rng = ChaCha8Rng::seed_from_u64(2012);
    let mut mapping = String::new();
    for (class, name) in CLASS_NAMES.iter().enumerate().take(scale.imagenet_classes) {
        writeln!(mapping, "{} {name}", wnid(class)).expect("string");
    }
    writer.write("imagenet/LOC_synset_mapping.txt", mapping.as_bytes())?;
    writer.write("imagenet_flat_val/synsets.txt", mapping.as_bytes())?;
    let mut train = Vec::new();
    let mut index = 0;
    for class in 0..scale.imagenet_classes {
        let wnid = wnid(class);
        for n in 0..scale.imagenet_train_per_class {
            let canvas = single_object(source, Some(class), IMAGENET_OFFSET + n, &mut rng)?;
            // As in the real set: a few CMYK JPEGs, and one PNG named .JPEG.
            let format = match (class, n) {
                (0, 1) => Format::Png,
                _ => usual_format(index),
            };
            let relative = format!("imagenet/train/{wnid}/{wnid}_{}.JPEG", 1000 + n);
            let bytes = writer.image(&relative, &canvas, format)?;
            train.push((writer.root.join(&relative), bytes));
            index += 1;
        }
    }
    // Validation: numbered in a shuffled order, so the flat form interleaves the classes.
    let n_val = scale.imagenet_classes * scale.imagenet_val_per_class;
    let mut numbers: Vec<usize> = (1..=n_val).collect();
    for i in (1..numbers.len()).rev() {
        numbers.swap(i, rng.random_range(0..=i));
    }
    // Class 0's first files in sorted order (listing ids 0.., class 0's folder sorting first)
    // are Table 1's aligned images.
    let mut first_class: Vec<usize> = numbers[..scale.imagenet_val_per_class].to_vec();
    first_class.sort_unstable();
    let aligned: Vec<usize> = first_class[..scale.aligned_images()].to_vec();
    let tshirts = source.tshirts_with_sleeves(aligned.len())?;
    let mut truth = vec![0usize; n_val];
    let mut numbers = numbers.into_iter();
    for class in 0..scale.imagenet_classes {
        let wnid = wnid(class);
        for n in 0..scale.imagenet_val_per_class {
            let number = numbers.next().expect("one number per image");
            let picture = IMAGENET_OFFSET + scale.imagenet_train_per_class + n;
            let aligned_at = aligned.iter().position(|&a| a == number);
            let (canvas, format) = if let (0, Some(k)) = (class, aligned_at) {
                (aligned_object(tshirts[k], &mut rng), Format::Rgb)
            } else {
                (
                    single_object(source, Some(class), picture, &mut rng)?,
                    usual_format(index),
                )
            };
            index += 1;
            let file = format!("ILSVRC2012_val_{number:08}.JPEG");
            let bytes = writer.image(&format!("imagenet/val/{wnid}/{file}"), &canvas, format)?;
            writer.write(&format!("imagenet_flat_val/val/{file}"), &bytes)?;
            truth[number - 1] = class + 1;
        }
    }
    let truth: String = truth.iter().map(|id| format!("{id}\n")).collect();
    writer.write(
        "imagenet_flat_val/ILSVRC2012_validation_ground_truth.txt",
        truth.as_bytes(),
    )?;
    writer.write(PARTS_FILE, parts_file(aligned.len()).as_bytes())?;
    Ok(train)
}

/// Table 1's aligned images: at most five (the paper's count), and where the object lies on
/// their 256 x 256 canvas (224 x 224 at (16, 16): exactly the centre crop the network sees).
const ALIGNED_IMAGES: usize = 5;
const ALIGNED_CANVAS: u32 = 256;
const ALIGNED_SIZE: u32 = 224;
const ALIGNED_AT: u32 = 16;

/// The parts of a Fashion-MNIST T-shirt (frontal, centred: every one has its sleeves and
/// collar in the same place, as the paper's frontal dogs have their eyes and nose), as
/// (name, top, left, height, width) in the 28 x 28 picture's pixels.
const TSHIRT_PARTS: [(&str, u32, u32, u32, u32); 3] = [
    ("left_sleeve", 3, 3, 8, 5),
    ("right_sleeve", 3, 20, 8, 5),
    ("collar", 0, 9, 4, 10),
];

/// The part file of Table 1's aligned images, in the preprocessed images' pixels (the canvas
/// is already 256 x 256, so preprocessing keeps it as it is); their listing ids are 0..
fn parts_file(images: usize) -> String {
    let mut text = String::from(
        "# Table 1's part masks for the miniature (written by zfnet-miniatures): the first \
         class's first\n# validation images are T-shirts with sleeves drawn at the same \
         place, their sleeves and collar\n# on the same pixels. ids: positions in the val \
         listing.\n\
         image_id,part,top,left,height,width\n",
    );
    let scale = ALIGNED_SIZE / 28;
    for id in 0..images {
        for (part, top, left, height, width) in TSHIRT_PARTS {
            writeln!(
                text,
                "{id},{part},{},{},{},{}",
                ALIGNED_AT + top * scale,
                ALIGNED_AT + left * scale,
                height * scale,
                width * scale
            )
            .expect("string");
        }
    }
    text
}

/// An aligned image of Table 1: a T-shirt filling the centre crop of a 256 x 256 canvas,
/// unmirrored.
fn aligned_object(picture: &[u8; 784], rng: &mut ChaCha8Rng) -> Canvas {
    let mut canvas = Canvas::new(ALIGNED_CANVAS, ALIGNED_CANVAS, rng);
    canvas.draw(&Object {
        picture,
        colour: class_colour(0, rng),
        mirrored: false,
        size: ALIGNED_SIZE,
        x: ALIGNED_AT,
        y: ALIGNED_AT,
    });
    canvas
}

/// Where Table 1's T-shirts are looked for among the class's pictures (past the ones the
/// other sets draw).
const TSHIRTS_FROM: usize = 5500;

/// Whether a class-0 picture is a T-shirt with both sleeves where [`TSHIRT_PARTS`] puts them
/// (ink in both sleeve rectangles, none at the bottom corners beside the body): the class
/// also holds tank tops, which have no sleeves to mask.
fn has_sleeves(picture: &[u8; 784]) -> bool {
    let mean = |rows: std::ops::Range<usize>, cols: std::ops::Range<usize>| {
        let n = (rows.len() * cols.len()) as f64;
        rows.flat_map(|y| cols.clone().map(move |x| f64::from(picture[y * 28 + x])))
            .sum::<f64>()
            / n
    };
    mean(3..11, 3..8) > 120.0
        && mean(3..11, 20..25) > 120.0
        && mean(20..28, 0..5) < 20.0
        && mean(20..28, 23..28) < 20.0
}

/// Writes Caltech-101 (`caltech256 == false`) or Caltech-256, planting duplicates of ImageNet
/// training images.
fn write_caltech(
    source: &Source,
    scale: &Scale,
    writer: &mut Writer,
    caltech256: bool,
    imagenet_train: &[(PathBuf, Vec<u8>)],
) -> Result<(), Error> {
    let (seed, offset, per_class) = if caltech256 {
        (256, CALTECH256_OFFSET, scale.caltech256_per_class)
    } else {
        (101, CALTECH101_OFFSET, scale.caltech101_per_class)
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let folder = |class: Option<usize>| match (caltech256, class) {
        (false, Some(class)) => format!("caltech101/101_ObjectCategories/{}", CLASS_NAMES[class]),
        (false, None) => "caltech101/101_ObjectCategories/BACKGROUND_Google".to_owned(),
        (true, Some(class)) => format!(
            "caltech256/256_ObjectCategories/{:03}.{}",
            class + 1,
            CLASS_NAMES[class].replace('_', "-")
        ),
        (true, None) => "caltech256/256_ObjectCategories/257.clutter".to_owned(),
    };
    let file = |class: Option<usize>, n: usize, extension: &str| {
        if caltech256 {
            let number = class.map_or(257, |class| class + 1);
            format!("{number:03}_{:04}.{extension}", n + 1)
        } else {
            format!("image_{:04}.{extension}", n + 1)
        }
    };
    let mut index = 0;
    for class in 0..scale.caltech_classes {
        for n in 0..per_class {
            // Planted duplicates: the last image of the first classes (two in Caltech-101,
            // three in Caltech-256) is an ImageNet training image, byte for byte.
            let planted = if caltech256 { 3 } else { 2 };
            if n == per_class - 1 && class < planted {
                let (imagenet_path, bytes) =
                    &imagenet_train[(class * 7 + n) % imagenet_train.len()];
                let path = writer.write(
                    &format!("{}/{}", folder(Some(class)), file(Some(class), n, "jpg")),
                    bytes,
                )?;
                writer
                    .written
                    .planted_duplicates
                    .push((imagenet_path.clone(), path));
                continue;
            }
            let canvas = single_object(source, Some(class), offset + n, &mut rng)?;
            let format = match (caltech256, class, n) {
                (false, 0, 2) => Format::Png,
                (true, 1, 3) => Format::Truncated,
                _ => usual_format(index),
            };
            let extension = if format == Format::Png { "png" } else { "jpg" };
            writer.image(
                &format!(
                    "{}/{}",
                    folder(Some(class)),
                    file(Some(class), n, extension)
                ),
                &canvas,
                format,
            )?;
            index += 1;
        }
    }
    for n in 0..scale.clutter_images {
        let canvas = single_object(source, None, 0, &mut rng)?;
        writer.image(
            &format!("{}/{}", folder(None), file(None, n, "jpg")),
            &canvas,
            Format::Rgb,
        )?;
    }
    Ok(())
}

/// Writes PASCAL VOC 2012's classification part: images with 1-3 objects each.
fn write_voc(source: &Source, scale: &Scale, writer: &mut Writer) -> Result<(), Error> {
    let mut rng = ChaCha8Rng::seed_from_u64(2007);
    let root = "VOCdevkit/VOC2012";
    let mut image_number = 0;
    let mut picture = VOC_OFFSET;
    for (split, count) in [("train", scale.voc_train), ("val", scale.voc_val)] {
        let mut ids = String::new();
        // Per class: (id, flag) with flag 1 present, 0 difficult only, -1 absent.
        let mut flags: Vec<String> = vec![String::new(); VOC_CLASSES.len()];
        for i in 0..count {
            image_number += 1;
            let id = format!("2008_{image_number:06}");
            let width = rng.random_range(240..=500_u32);
            let height = rng.random_range(200..=375_u32);
            let mut canvas = Canvas::new(width, height, &mut rng);
            let n_objects = rng.random_range(1..=3_usize);
            // The first object cycles through the classes so every class is in every split.
            let mut classes = vec![i % VOC_CLASSES.len()];
            while classes.len() < n_objects {
                let class = rng.random_range(0..VOC_CLASSES.len());
                if !classes.contains(&class) {
                    classes.push(class);
                }
            }
            let mut xml = format!(
                "<annotation>\n\t<folder>VOC2012</folder>\n\t<filename>{id}.jpg</filename>\n\t\
                 <source>\n\t\t<database>zfnet miniature of The VOC2008 Database</database>\n\t\
                 </source>\n\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\
                 \n\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n"
            );
            let mut state = [-1_i8; 20];
            // Objects side by side in equal columns.
            let column = width / n_objects as u32;
            for (k, &class) in classes.iter().enumerate() {
                let limit = column.min(height);
                // The first object (the one cycling through the classes) is never small, so
                // every class is present, not only difficult, in each split.
                let smallest = if k == 0 { 64 } else { limit / 3 };
                let size = rng.random_range(smallest..=limit * 9 / 10);
                let object = Object {
                    picture: source.picture(class % 10, picture)?,
                    colour: class_colour(class, &mut rng),
                    mirrored: class >= 10,
                    size,
                    x: k as u32 * column + rng.random_range(0..=column - size.min(column)),
                    y: rng.random_range(0..=height - size.min(height)),
                };
                picture += 1;
                canvas.draw(&object);
                // Small objects are `difficult`, as VOC's annotators mark them.
                let difficult = size < 64;
                state[class] = state[class].max(if difficult { 0 } else { 1 });
                write!(
                    xml,
                    "\t<object>\n\t\t<name>{}</name>\n\t\t<pose>Unspecified</pose>\n\t\t\
                     <truncated>0</truncated>\n\t\t<difficult>{}</difficult>\n\t\t<bndbox>\n\
                     \t\t\t<xmin>{}</xmin>\n\t\t\t<ymin>{}</ymin>\n\t\t\t<xmax>{}</xmax>\n\
                     \t\t\t<ymax>{}</ymax>\n\t\t</bndbox>\n\t</object>\n",
                    VOC_CLASSES[class],
                    u8::from(difficult),
                    object.x + 1,
                    object.y + 1,
                    (object.x + size).min(width),
                    (object.y + size).min(height),
                )
                .expect("string");
            }
            xml.push_str("</annotation>\n");
            writer.image(
                &format!("{root}/JPEGImages/{id}.jpg"),
                &canvas,
                usual_format(image_number),
            )?;
            writer.write(&format!("{root}/Annotations/{id}.xml"), xml.as_bytes())?;
            writeln!(ids, "{id}").expect("string");
            for (class, flag) in state.iter().enumerate() {
                writeln!(flags[class], "{id} {flag:>2}").expect("string");
            }
        }
        writer.write(
            &format!("{root}/ImageSets/Main/{split}.txt"),
            ids.as_bytes(),
        )?;
        for (class, text) in flags.iter().enumerate() {
            writer.write(
                &format!("{root}/ImageSets/Main/{}_{split}.txt", VOC_CLASSES[class]),
                text.as_bytes(),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use imaging::{DecodeLimits, decode_rgb};

    fn canvas(seed: u64) -> Canvas {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let picture = [200u8; 784];
        let mut canvas = Canvas::new(96, 64, &mut rng);
        canvas.draw(&Object {
            picture: &picture,
            colour: class_colour(3, &mut rng),
            mirrored: false,
            size: 40,
            x: 10,
            y: 12,
        });
        canvas
    }

    fn mean_abs_difference(a: &[u8], b: &[u8]) -> f64 {
        assert_eq!(a.len(), b.len());
        let total: u64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| u64::from(x.abs_diff(*y)))
            .sum();
        total as f64 / a.len() as f64
    }

    #[test]
    fn every_format_but_the_truncated_one_decodes_to_the_picture_that_was_drawn() {
        let canvas = canvas(1);
        for format in [Format::Rgb, Format::Cmyk, Format::Png] {
            let bytes = canvas.encode(format).unwrap();
            let decoded = decode_rgb(&bytes, DecodeLimits::default()).unwrap();
            assert_eq!((decoded.width, decoded.height), (96, 64), "{format:?}");
            let difference = mean_abs_difference(&decoded.pixels, &canvas.pixels);
            // JPEG at quality 90 on a noisy canvas: a few levels; a CMYK file read with the
            // wrong inversion would be ~100 levels off.
            assert!(
                difference < 6.0,
                "{format:?}: mean |difference| {difference}"
            );
        }
        let gray = canvas.encode(Format::Gray).unwrap();
        let decoded = decode_rgb(&gray, DecodeLimits::default()).unwrap();
        assert!(
            decoded
                .pixels
                .chunks_exact(3)
                .all(|p| p[0] == p[1] && p[1] == p[2])
        );
        let truncated = canvas.encode(Format::Truncated).unwrap();
        assert!(decode_rgb(&truncated, DecodeLimits::default()).is_err());
    }

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
