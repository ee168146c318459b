//! The ILSVRC 2012 miniature: train/ and val/ class folders, the flat validation set with
//! the devkit's ground truth, and Table 1's aligned T-shirts with their part file.

use std::fmt::Write as _;
use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::draw::{Canvas, Format, Object, class_colour, single_object, usual_format};
use crate::source::Source;
use crate::{CLASS_NAMES, Error, IMAGENET_OFFSET, Scale, Writer};

/// A synthetic WordNet id per class (`n9` + the class number: never a real synset).
pub fn wnid(class: usize) -> String {
    format!("n9{:07}", class + 1)
}

/// Where the miniature's Table 1 part file is written (relative to its root).
pub const PARTS_FILE: &str = "imagenet-parts.csv";

/// Writes ImageNet; returns the training files' (path, bytes) in class order.
pub(crate) fn write_imagenet(
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
pub(crate) const ALIGNED_IMAGES: usize = 5;
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
pub(crate) const TSHIRTS_FROM: usize = 5500;

/// Whether a class-0 picture is a T-shirt with both sleeves where [`TSHIRT_PARTS`] puts them
/// (ink in both sleeve rectangles, none at the bottom corners beside the body): the class
/// also holds tank tops, which have no sleeves to mask.
pub(crate) fn has_sleeves(picture: &[u8; 784]) -> bool {
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
