//! The PASCAL VOC 2012 miniature: JPEGImages/, Annotations/ and the ImageSets/Main lists.

use std::fmt::Write as _;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::draw::{Canvas, Object, class_colour, usual_format};
use crate::source::Source;
use crate::{Error, Scale, VOC_CLASSES, VOC_OFFSET, Writer};

/// Writes PASCAL VOC 2012's classification part: images with 1-3 objects each.
pub(crate) fn write_voc(source: &Source, scale: &Scale, writer: &mut Writer) -> Result<(), Error> {
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
