//! The `images` artifact: decoded 8-bit RGB images with their labels, one row per image.
//!
//! Columns (schema `images` v1):
//! - `image_id` int64: stable id, unique within the artifact (the reader's enumeration order);
//! - `label` int32: class index (`-1` when unlabelled);
//! - `class_name` utf8: the class's name (`ankle_boot`, `n01440764`);
//! - `source` utf8: where the image came from (a file path, or `file#index` for IDX files);
//! - `height`, `width`, `channels` int32;
//! - `pixels` binary: `height * width * channels` bytes, row-major HWC, RGB.

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, Int32Builder, Int64Builder, StringBuilder};
use arrow_array::{Array, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::parquet_io::{
    LayoutConfig, RowGroupRef, SchemaId, TableReader, TableWriter, expect_schema, read_row_group,
    row_groups,
};
use crate::{Error, Provenance, Result};

pub const IMAGES: SchemaId = SchemaId {
    name: "images",
    version: 1,
};

/// One decoded image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRecord {
    pub image_id: i64,
    pub label: i32,
    pub class_name: String,
    pub source: String,
    pub height: u32,
    pub width: u32,
    pub channels: u32,
    pub pixels: Vec<u8>,
}

/// The Arrow schema of the `images` artifact.
pub fn images_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("image_id", DataType::Int64, false),
        Field::new("label", DataType::Int32, false),
        Field::new("class_name", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("height", DataType::Int32, false),
        Field::new("width", DataType::Int32, false),
        Field::new("channels", DataType::Int32, false),
        Field::new("pixels", DataType::Binary, false),
    ]))
}

/// Images per row group: 256 images of 256x256x3 are 50 MB, the most a reader holds at once.
const IMAGES_PER_GROUP: usize = 256;
/// Images per part file (about 3 GB at 256x256x3).
const IMAGES_PER_PART: usize = 16384;

/// Buffers images and writes them as a folder of Parquet parts.
pub struct ImagesWriter {
    inner: TableWriter,
    pending: Vec<ImageRecord>,
}

impl ImagesWriter {
    pub fn create(folder: &Path, provenance: &Provenance) -> Result<Self> {
        let layout = LayoutConfig {
            rows_per_group: IMAGES_PER_GROUP,
            rows_per_part: Some(IMAGES_PER_PART),
        };
        Ok(ImagesWriter {
            inner: TableWriter::create(folder, images_schema(), IMAGES, provenance, layout)?,
            pending: Vec::with_capacity(IMAGES_PER_GROUP),
        })
    }

    pub fn push(&mut self, image: ImageRecord) -> Result<()> {
        debug_assert_eq!(
            image.pixels.len(),
            (image.height * image.width * image.channels) as usize
        );
        self.pending.push(image);
        if self.pending.len() >= IMAGES_PER_GROUP {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes what is buffered and closes the artifact; returns the number of images.
    pub fn finish(mut self) -> Result<u64> {
        self.flush()?;
        self.inner.finish()
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = images_to_batch(&self.pending)?;
        self.pending.clear();
        self.inner.write(&batch)
    }
}

/// Builds one record batch from images.
pub fn images_to_batch(images: &[ImageRecord]) -> Result<RecordBatch> {
    let n = images.len();
    let mut image_id = Int64Builder::with_capacity(n);
    let mut label = Int32Builder::with_capacity(n);
    let mut class_name = StringBuilder::new();
    let mut source = StringBuilder::new();
    let mut height = Int32Builder::with_capacity(n);
    let mut width = Int32Builder::with_capacity(n);
    let mut channels = Int32Builder::with_capacity(n);
    let total_bytes = images.iter().map(|image| image.pixels.len()).sum();
    let mut pixels = BinaryBuilder::with_capacity(n, total_bytes);
    for image in images {
        image_id.append_value(image.image_id);
        label.append_value(image.label);
        class_name.append_value(&image.class_name);
        source.append_value(&image.source);
        height.append_value(image.height as i32);
        width.append_value(image.width as i32);
        channels.append_value(image.channels as i32);
        pixels.append_value(&image.pixels);
    }
    Ok(RecordBatch::try_new(
        images_schema(),
        vec![
            Arc::new(image_id.finish()),
            Arc::new(label.finish()),
            Arc::new(class_name.finish()),
            Arc::new(source.finish()),
            Arc::new(height.finish()),
            Arc::new(width.finish()),
            Arc::new(channels.finish()),
            Arc::new(pixels.finish()),
        ],
    )?)
}

/// Turns a record batch of the `images` schema back into images.
pub fn batch_to_images(batch: &RecordBatch, path: &Path) -> Result<Vec<ImageRecord>> {
    fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str, path: &Path) -> Result<&'a T> {
        batch
            .column_by_name(name)
            .and_then(|column| column.as_any().downcast_ref::<T>())
            .ok_or_else(|| Error::contract(path, format!("column `{name}` missing or mistyped")))
    }
    let image_id = column::<Int64Array>(batch, "image_id", path)?;
    let label = column::<Int32Array>(batch, "label", path)?;
    let class_name = column::<StringArray>(batch, "class_name", path)?;
    let source = column::<StringArray>(batch, "source", path)?;
    let height = column::<Int32Array>(batch, "height", path)?;
    let width = column::<Int32Array>(batch, "width", path)?;
    let channels = column::<Int32Array>(batch, "channels", path)?;
    let pixels = column::<BinaryArray>(batch, "pixels", path)?;
    let mut images = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let image = ImageRecord {
            image_id: image_id.value(row),
            label: label.value(row),
            class_name: class_name.value(row).to_owned(),
            source: source.value(row).to_owned(),
            height: height.value(row) as u32,
            width: width.value(row) as u32,
            channels: channels.value(row) as u32,
            pixels: pixels.value(row).to_vec(),
        };
        if image.pixels.len() != (image.height * image.width * image.channels) as usize {
            return Err(Error::contract(
                path,
                format!(
                    "image {} has {} pixel bytes for {}x{}x{}",
                    image.image_id,
                    image.pixels.len(),
                    image.height,
                    image.width,
                    image.channels
                ),
            ));
        }
        images.push(image);
    }
    debug_assert_eq!(pixels.len(), images.len());
    Ok(images)
}

/// Streams an `images` artifact in chunks of at most `chunk` images.
pub struct ImagesReader {
    path: std::path::PathBuf,
    inner: TableReader,
    pub num_images: u64,
}

impl ImagesReader {
    pub fn open(path: &Path, chunk: usize) -> Result<Self> {
        let header = expect_schema(path, IMAGES)?;
        Ok(ImagesReader {
            path: path.to_path_buf(),
            inner: TableReader::open(path, chunk)?,
            num_images: header.num_rows,
        })
    }
}

impl Iterator for ImagesReader {
    type Item = Result<Vec<ImageRecord>>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = self.inner.next()?;
        Some(batch.and_then(|batch| batch_to_images(&batch, &self.path)))
    }
}

/// An image's row without its pixels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageMeta {
    pub image_id: i64,
    pub label: i32,
    pub class_name: String,
    pub height: u32,
    pub width: u32,
    pub channels: u32,
}

/// The row groups of an `images` artifact (at most 256 images each), readable in any order:
/// what a consumer that cannot hold the set in memory shuffles (streamed training, §3, at
/// ImageNet scale).
#[derive(Clone, Debug)]
pub struct ImageGroups {
    pub path: std::path::PathBuf,
    pub groups: Vec<RowGroupRef>,
}

impl ImageGroups {
    pub fn open(path: &Path) -> Result<Self> {
        expect_schema(path, IMAGES)?;
        Ok(ImageGroups {
            path: path.to_path_buf(),
            groups: row_groups(path)?,
        })
    }

    /// The images of group `group`, pixels included.
    pub fn read(&self, group: usize) -> Result<Vec<ImageRecord>> {
        let group = &self.groups[group];
        let mut images = Vec::with_capacity(group.rows);
        for batch in read_row_group(group, None)? {
            images.extend(batch_to_images(&batch, &group.part)?);
        }
        Ok(images)
    }

    /// Every image's row without pixels, group by group (reads a few bytes per image).
    pub fn metadata(&self) -> Result<Vec<Vec<ImageMeta>>> {
        const COLUMNS: [&str; 6] = [
            "image_id",
            "label",
            "class_name",
            "height",
            "width",
            "channels",
        ];
        let mut all = Vec::with_capacity(self.groups.len());
        for group in &self.groups {
            let mut rows = Vec::with_capacity(group.rows);
            for batch in read_row_group(group, Some(&COLUMNS))? {
                let int32 = |name: &str| -> Result<&Int32Array> {
                    batch
                        .column_by_name(name)
                        .and_then(|c| c.as_any().downcast_ref::<Int32Array>())
                        .ok_or_else(|| {
                            Error::contract(
                                &group.part,
                                format!("column `{name}` missing or mistyped"),
                            )
                        })
                };
                let (label, height, width, channels) = (
                    int32("label")?,
                    int32("height")?,
                    int32("width")?,
                    int32("channels")?,
                );
                let image_id = batch
                    .column_by_name("image_id")
                    .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
                    .ok_or_else(|| {
                        Error::contract(&group.part, "column `image_id` missing or mistyped")
                    })?;
                let class_name = batch
                    .column_by_name("class_name")
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                    .ok_or_else(|| {
                        Error::contract(&group.part, "column `class_name` missing or mistyped")
                    })?;
                for row in 0..batch.num_rows() {
                    rows.push(ImageMeta {
                        image_id: image_id.value(row),
                        label: label.value(row),
                        class_name: class_name.value(row).to_owned(),
                        height: height.value(row) as u32,
                        width: width.value(row) as u32,
                        channels: channels.value(row) as u32,
                    });
                }
            }
            all.push(rows);
        }
        Ok(all)
    }
}

/// Writes `n` random-noise 32x32 RGB images (ids from `first_id`, labels cycling over
/// `classes`, pixels from a 64-bit LCG seeded with `seed`): an `images` artifact for tests and
/// benchmarks of stages that only need something to look at.
pub fn write_noise_images(
    path: &Path,
    n: usize,
    first_id: i64,
    classes: usize,
    seed: u64,
) -> Result<()> {
    write_noise_images_of_size(path, n, 32, first_id, classes, seed)
}

/// [`write_noise_images`] at `size` x `size` (256 for the full ZF net's 224 crops).
pub fn write_noise_images_of_size(
    path: &Path,
    n: usize,
    size: u32,
    first_id: i64,
    classes: usize,
    seed: u64,
) -> Result<()> {
    let mut writer = ImagesWriter::create(path, &Provenance::ad_hoc("noise"))?;
    let mut state = seed;
    for i in 0..n {
        let pixels = (0..size as usize * size as usize * 3)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect();
        writer.push(ImageRecord {
            image_id: first_id + i as i64,
            label: (i % classes.max(1)) as i32,
            class_name: String::new(),
            source: String::new(),
            height: size,
            width: size,
            channels: 3,
            pixels,
        })?;
    }
    writer.finish()?;
    Ok(())
}

/// Reads every image of a (small) artifact.
pub fn read_images(path: &Path) -> Result<Vec<ImageRecord>> {
    let mut images = Vec::new();
    for chunk in ImagesReader::open(path, 1024)? {
        images.extend(chunk?);
    }
    Ok(images)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: i64) -> ImageRecord {
        ImageRecord {
            image_id: id,
            label: (id % 3) as i32,
            class_name: format!("class{}", id % 3),
            source: format!("img{id}.png"),
            height: 2,
            width: 3,
            channels: 3,
            pixels: (0..18).map(|i| (i as i64 * 7 + id) as u8).collect(),
        }
    }

    #[test]
    fn images_round_trip_across_row_groups_and_parts() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("images");
        let mut writer = ImagesWriter::create(&target, &Provenance::ad_hoc("test")).unwrap();
        let originals: Vec<_> = (0..600).map(image).collect();
        for record in &originals {
            writer.push(record.clone()).unwrap();
        }
        assert_eq!(writer.finish().unwrap(), 600);
        assert_eq!(read_images(&target).unwrap(), originals);
        let header = expect_schema(&target, IMAGES).unwrap();
        assert_eq!(header.num_rows, 600);
        assert_eq!(header.provenance.unwrap().stage, "test");
    }

    #[test]
    fn reading_another_artifact_kind_as_images_names_both_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("features.parquet");
        crate::features::write_features(
            &target,
            &Provenance::ad_hoc("t"),
            "conv1",
            &[1],
            &[0],
            &[0.5, 0.25],
            2,
        )
        .unwrap();
        let message = ImagesReader::open(&target, 8).err().unwrap().to_string();
        assert!(message.contains("expected a `images` v1 artifact, found `features` v1"));
    }

    #[test]
    fn row_groups_read_in_any_order_give_the_images_and_their_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("noise");
        // 600 images: three row groups of 256, 256 and 88.
        write_noise_images(&path, 600, 1000, 4, 7).unwrap();
        let groups = ImageGroups::open(&path).unwrap();
        assert_eq!(
            groups.groups.iter().map(|g| g.rows).collect::<Vec<_>>(),
            vec![256, 256, 88]
        );
        let all = read_images(&path).unwrap();
        let last = groups.read(2).unwrap();
        assert_eq!(last, all[512..].to_vec());
        let metadata = groups.metadata().unwrap();
        assert_eq!(metadata.iter().map(Vec::len).sum::<usize>(), 600);
        for (meta, image) in metadata.concat().iter().zip(&all) {
            assert_eq!(
                (meta.image_id, meta.label, meta.width),
                (image.image_id, image.label, image.width)
            );
        }
    }
}
