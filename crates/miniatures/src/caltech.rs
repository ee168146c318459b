//! The Caltech-101 and Caltech-256 miniatures: class folders, the background/clutter class,
//! one PNG or truncated file each, and planted duplicates of ImageNet training images.

use std::path::PathBuf;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::draw::{Format, single_object, usual_format};
use crate::source::Source;
use crate::{CALTECH101_OFFSET, CALTECH256_OFFSET, CLASS_NAMES, Error, Scale, Writer};

/// Writes Caltech-101 (`caltech256 == false`) or Caltech-256, planting duplicates of ImageNet
/// training images.
pub(crate) fn write_caltech(
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
