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
/// Pixel bytes per row group, at most (an image larger than that alone makes a group of its
/// own): larger images make smaller groups, so
/// that a reader's memory stays bounded and a batch's binary offsets (32-bit) never overflow.
/// At the largest `preprocess` size, 4096x4096x3 (50 MB an image), a group holds 5 images.
pub const MAX_GROUP_PIXEL_BYTES: usize = 256 << 20;
/// Images per part file (about 3 GB at 256x256x3).
const IMAGES_PER_PART: usize = 16384;

/// Buffers images and writes them as a folder of Parquet parts.
pub struct ImagesWriter {
    inner: TableWriter,
    pending: Vec<ImageRecord>,
    pending_bytes: usize,
    group_bytes: usize,
}

impl ImagesWriter {
    pub fn create(folder: &Path, provenance: &Provenance) -> Result<Self> {
        Self::with_group_bytes(folder, provenance, MAX_GROUP_PIXEL_BYTES)
    }

    /// [`ImagesWriter::create`] with another bound on a row group's pixel bytes (tests).
    pub fn with_group_bytes(
        folder: &Path,
        provenance: &Provenance,
        group_bytes: usize,
    ) -> Result<Self> {
        let layout = LayoutConfig {
            rows_per_group: IMAGES_PER_GROUP,
            rows_per_part: Some(IMAGES_PER_PART),
            bytes_per_group: Some(group_bytes),
        };
        Ok(ImagesWriter {
            inner: TableWriter::create(folder, images_schema(), IMAGES, provenance, layout)?,
            pending: Vec::with_capacity(IMAGES_PER_GROUP),
            pending_bytes: 0,
            group_bytes,
        })
    }

    pub fn push(&mut self, image: ImageRecord) -> Result<()> {
        debug_assert_eq!(
            Some(image.pixels.len()),
            pixel_bytes(image.height, image.width, image.channels)
        );
        // A group ends before an image that would take it past `group_bytes` of pixels (one
        // image larger than that makes a group of its own).
        if !self.pending.is_empty() && self.pending_bytes + image.pixels.len() > self.group_bytes {
            self.flush()?;
        }
        self.pending_bytes += image.pixels.len();
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
        self.pending_bytes = 0;
        self.inner.write(&batch)?;
        // One flush, one row group: Parquet's writer would otherwise keep adding batches to
        // its group until its own limits, which count compressed bytes (a group of smooth
        // 4096x4096 images compresses far below 256 MiB, and a reader would hold all of it).
        self.inner.end_group()
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

/// The number of pixel bytes of an image (`height * width * channels`), or `None` when that
/// does not fit in memory's address space: dims read from a file are checked before use.
pub fn pixel_bytes(height: u32, width: u32, channels: u32) -> Option<usize> {
    (height as usize)
        .checked_mul(width as usize)?
        .checked_mul(channels as usize)
}

/// An image's dims as stored (Int32 columns), or a contract error for a negative one.
fn stored_dims(path: &Path, image_id: i64, dims: [i32; 3]) -> Result<[u32; 3]> {
    let [height, width, channels] = dims;
    match (
        u32::try_from(height),
        u32::try_from(width),
        u32::try_from(channels),
    ) {
        (Ok(height), Ok(width), Ok(channels)) => Ok([height, width, channels]),
        _ => Err(Error::contract(
            path,
            format!("image {image_id} has the impossible dims {height}x{width}x{channels}"),
        )),
    }
}

/// Turns a record batch of the `images` schema back into images.
pub fn batch_to_images(batch: &RecordBatch, path: &Path) -> Result<Vec<ImageRecord>> {
    use crate::parquet_io::typed_column as column;
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
        let [image_height, image_width, image_channels] = stored_dims(
            path,
            image_id.value(row),
            [height.value(row), width.value(row), channels.value(row)],
        )?;
        let image = ImageRecord {
            image_id: image_id.value(row),
            label: label.value(row),
            class_name: class_name.value(row).to_owned(),
            source: source.value(row).to_owned(),
            height: image_height,
            width: image_width,
            channels: image_channels,
            pixels: pixels.value(row).to_vec(),
        };
        if Some(image.pixels.len()) != pixel_bytes(image.height, image.width, image.channels) {
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

/// Streams the images of rows `range` of an `images` artifact, in order, in chunks of at most
/// `chunk`, reading only the row groups that hold them (a shard of a sharded stage reads its
/// slice, not everything before it).
pub struct ImagesRangeReader {
    groups: ImageGroups,
    range: std::ops::Range<usize>,
    next_group: usize,
    first_row_of_next: usize,
    pending: std::collections::VecDeque<ImageRecord>,
    chunk: usize,
}

impl ImagesRangeReader {
    pub fn open(path: &Path, range: std::ops::Range<usize>, chunk: usize) -> Result<Self> {
        Ok(ImagesRangeReader {
            groups: ImageGroups::open(path)?,
            range,
            next_group: 0,
            first_row_of_next: 0,
            pending: std::collections::VecDeque::new(),
            chunk: chunk.max(1),
        })
    }

    /// Rows per part file of the artifact, in order: where a whole-artifact
    /// [`ImagesReader`]'s chunks break (at every `chunk` rows within a part, and at each
    /// part's end).
    pub fn part_rows(path: &Path) -> Result<Vec<usize>> {
        let groups = ImageGroups::open(path)?;
        let mut parts: Vec<(std::path::PathBuf, usize)> = Vec::new();
        for group in &groups.groups {
            match parts.last_mut() {
                Some((part, rows)) if *part == group.part => *rows += group.rows,
                _ => parts.push((group.part.clone(), group.rows)),
            }
        }
        Ok(parts.into_iter().map(|(_, rows)| rows).collect())
    }
}

impl Iterator for ImagesRangeReader {
    type Item = Result<Vec<ImageRecord>>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.pending.len() < self.chunk && self.next_group < self.groups.groups.len() {
            let group = self.next_group;
            let rows =
                self.first_row_of_next..self.first_row_of_next + self.groups.groups[group].rows;
            self.next_group += 1;
            self.first_row_of_next = rows.end;
            if rows.end <= self.range.start {
                continue;
            }
            if rows.start >= self.range.end {
                self.next_group = self.groups.groups.len();
                break;
            }
            let images = match self.groups.read(group) {
                Ok(images) => images,
                Err(error) => return Some(Err(error)),
            };
            self.pending.extend(
                images
                    .into_iter()
                    .zip(rows)
                    .filter(|(_, row)| self.range.contains(row))
                    .map(|(image, _)| image),
            );
        }
        if self.pending.is_empty() {
            return None;
        }
        let take = self.chunk.min(self.pending.len());
        Some(Ok(self.pending.drain(..take).collect()))
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
                    let [height, width, channels] = stored_dims(
                        &group.part,
                        image_id.value(row),
                        [height.value(row), width.value(row), channels.value(row)],
                    )?;
                    if pixel_bytes(height, width, channels).is_none() {
                        return Err(Error::contract(
                            &group.part,
                            format!(
                                "image {} has dims {height}x{width}x{channels}, too large to \
                                 hold in memory",
                                image_id.value(row)
                            ),
                        ));
                    }
                    rows.push(ImageMeta {
                        image_id: image_id.value(row),
                        label: label.value(row),
                        class_name: class_name.value(row).to_owned(),
                        height,
                        width,
                        channels,
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

    /// Row groups are sized by bytes as well as by count: with a 100-byte bound, 18-byte
    /// images make groups of 6 (before, a group always held 256 images whatever their size:
    /// 12.8 GB at 4096x4096, past the 32-bit binary offsets of one batch).
    #[test]
    fn a_range_of_rows_reads_exactly_those_images_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images");
        write_noise_images(&path, 700, 100, 10, 3).unwrap();
        let all: Vec<i64> = read_images(&path)
            .unwrap()
            .iter()
            .map(|i| i.image_id)
            .collect();
        for range in [0..700, 0..1, 255..257, 300..650, 699..700, 700..700] {
            let chunks: Vec<Vec<ImageRecord>> = ImagesRangeReader::open(&path, range.clone(), 64)
                .unwrap()
                .collect::<Result<_>>()
                .unwrap();
            assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= 64));
            let ids: Vec<i64> = chunks.iter().flatten().map(|i| i.image_id).collect();
            assert_eq!(ids, all[range.clone()], "{range:?}");
        }
        assert_eq!(
            ImagesRangeReader::part_rows(&path)
                .unwrap()
                .iter()
                .sum::<usize>(),
            700
        );
    }

    #[test]
    fn large_images_make_smaller_row_groups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images");
        let mut writer =
            ImagesWriter::with_group_bytes(&path, &Provenance::ad_hoc("t"), 100).unwrap();
        let originals: Vec<_> = (0..20).map(image).collect();
        for record in &originals {
            writer.push(record.clone()).unwrap();
        }
        writer.finish().unwrap();
        let groups = ImageGroups::open(&path).unwrap();
        // 18 bytes of pixels an image: 5 make 90, a sixth would pass the 100.
        assert_eq!(
            groups.groups.iter().map(|g| g.rows).collect::<Vec<_>>(),
            vec![5, 5, 5, 5]
        );
        assert_eq!(read_images(&path).unwrap(), originals);
    }

    /// Dims read from a file are checked: a negative or overflowing size is a contract error
    /// naming the image, never a wrapped multiplication.
    #[test]
    fn impossible_stored_dims_are_refused() {
        let path = Path::new("x.parquet");
        assert!(stored_dims(path, 3, [-1, 2, 3]).is_err());
        assert_eq!(stored_dims(path, 3, [2, 3, 1]).unwrap(), [2, 3, 1]);
        assert_eq!(pixel_bytes(u32::MAX, u32::MAX, 3), None);
        assert_eq!(pixel_bytes(4096, 4096, 3), Some(50_331_648));
    }
}
