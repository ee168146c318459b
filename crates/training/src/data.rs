//! Training data in memory and batch assembly: random crops and flips for training, the
//! centre crop for validation, the 10 crops for the final evaluation (§3), all with the
//! per-pixel mean subtracted.
//!
//! The whole preprocessed set is held as u8 (Fashion-MNIST's 36,000 source images at 32x32
//! are 110 MB); sets larger than the `train` stage's memory limit are streamed instead
//! ([`crate::streamed`], chosen by [`ImageSet::open`]).

use std::path::Path;

use artifacts::images::ImagesReader;
use engine::Backend;
use imaging::Crop;
use stage_api::{Error, Result};

use crate::streamed::StreamedImages;

/// Preprocessed SxS RGB images with labels.
pub struct ImageStore {
    pub image_size: usize,
    pub pixels: Vec<u8>,
    pub labels: Vec<usize>,
    pub image_ids: Vec<i64>,
    /// Class names by label (from the artifact's `class_name` column).
    pub class_names: Vec<String>,
}

impl ImageStore {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn image_len(&self) -> usize {
        self.image_size * self.image_size * 3
    }

    pub fn image(&self, index: usize) -> &[u8] {
        &self.pixels[index * self.image_len()..][..self.image_len()]
    }

    /// Loads an `images` artifact whose images are all SxS, its pixels in one allocation of
    /// N S^2 3 bytes.
    pub fn load(path: &Path) -> Result<Self> {
        let mut store = ImageStore {
            image_size: 0,
            pixels: Vec::new(),
            labels: Vec::new(),
            image_ids: Vec::new(),
            class_names: Vec::new(),
        };
        let reader = ImagesReader::open(path, 1024)?;
        let num_images = usize::try_from(reader.num_images).unwrap_or(usize::MAX);
        for chunk in reader {
            for image in chunk? {
                if store.labels.is_empty() {
                    // Every image has the first one's size (checked below): the pixels are
                    // allocated once, not grown (growing briefly holds old and new buffers).
                    // A row count the file states but cannot back is not trusted with an
                    // abort: a failed reservation falls back to growing.
                    let _ = store
                        .pixels
                        .try_reserve_exact(num_images.saturating_mul(image.pixels.len()));
                }
                store.image_size = crate::streamed::check_image(
                    path,
                    image.image_id,
                    image.height,
                    image.width,
                    image.channels,
                    image.label,
                    (!store.labels.is_empty()).then_some(store.image_size),
                )?;
                let label = image.label as usize;
                if store.class_names.len() <= label {
                    store.class_names.resize(label + 1, String::new());
                }
                store.class_names[label] = image.class_name.clone();
                store.labels.push(label);
                store.image_ids.push(image.image_id);
                store.pixels.extend_from_slice(&image.pixels);
            }
        }
        if store.is_empty() {
            return Err(Error::input(path, "no images"));
        }
        Ok(store)
    }

    /// Drops the images whose id is in `excluded`; returns how many were dropped.
    pub fn exclude(&mut self, excluded: &std::collections::BTreeSet<i64>) -> usize {
        let image_len = self.image_len();
        let keep: Vec<bool> = self
            .image_ids
            .iter()
            .map(|id| !excluded.contains(id))
            .collect();
        let dropped = keep.iter().filter(|k| !**k).count();
        if dropped == 0 {
            return 0;
        }
        let mut pixels = Vec::with_capacity(self.pixels.len() - dropped * image_len);
        for (i, &k) in keep.iter().enumerate() {
            if k {
                pixels.extend_from_slice(&self.pixels[i * image_len..(i + 1) * image_len]);
            }
        }
        self.pixels = pixels;
        let mut k = keep.iter();
        self.labels.retain(|_| *k.next().expect("same length"));
        let mut k = keep.iter();
        self.image_ids.retain(|_| *k.next().expect("same length"));
        dropped
    }

    /// A new store holding the images at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> ImageStore {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        ImageStore {
            image_size: self.image_size,
            pixels,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            image_ids: indices.iter().map(|&i| self.image_ids[i]).collect(),
            class_names: self.class_names.clone(),
        }
    }

    /// The per-pixel mean (HWC) of the images, as `mean_image` computes it (§3).
    pub fn mean_image(&self) -> Vec<f32> {
        let image_len = self.image_len();
        let mut sums = vec![0u64; image_len];
        for image in self.pixels.chunks(image_len) {
            for (sum, &value) in sums.iter_mut().zip(image) {
                *sum += value as u64;
            }
        }
        let n = self.len().max(1) as f64;
        sums.into_iter().map(|s| (s as f64 / n) as f32).collect()
    }

    /// The network's input for the images `indices`, one crop each (§3), made by the
    /// backend: on a GPU the bytes go up and the crops are cut there.
    pub fn batch<B: Backend>(
        &self,
        backend: &B,
        indices: &[usize],
        crops: &[Crop],
        crop_size: usize,
        mean: &[f32],
    ) -> B::Buffer {
        let images: Vec<&[u8]> = indices.iter().map(|&i| self.image(i)).collect();
        backend.crop_batch(&images, self.image_size, crops, crop_size, mean)
    }
}

/// A training or evaluation set: in memory when its pixels fit under a limit, else streamed
/// from the artifact.
pub enum ImageSet {
    InMemory(ImageStore),
    Streamed(StreamedImages),
}

/// How a set is held: whole in memory, or streamed from its artifact through a shuffle buffer
/// of `shuffle_buffer` images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holding {
    Whole,
    Streamed { shuffle_buffer: usize },
}

impl ImageSet {
    /// Opens the `images` artifact at `path`, held as `holding` says. The caller decides, once,
    /// from the artifact's rows and its memory budget (the `train` stage's
    /// `open_under_budget`: the training and validation sets under one budget with the
    /// network).
    pub fn open(path: &Path, holding: Holding) -> Result<Self> {
        match holding {
            Holding::Whole => Ok(ImageSet::InMemory(ImageStore::load(path)?)),
            Holding::Streamed { shuffle_buffer } => {
                tracing::info!(
                    path = %path.display(),
                    shuffle_buffer,
                    "streaming the images: holding them would pass the memory limit"
                );
                Ok(ImageSet::Streamed(StreamedImages::open(
                    path,
                    shuffle_buffer,
                )?))
            }
        }
    }

    pub fn len(&self) -> usize {
        match self {
            ImageSet::InMemory(store) => store.len(),
            ImageSet::Streamed(set) => set.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn image_size(&self) -> usize {
        match self {
            ImageSet::InMemory(store) => store.image_size,
            ImageSet::Streamed(set) => set.image_size,
        }
    }

    pub fn class_names(&self) -> &[String] {
        match self {
            ImageSet::InMemory(store) => &store.class_names,
            ImageSet::Streamed(set) => &set.class_names,
        }
    }

    /// Drops (in memory) or skips (streamed) the images whose id is in `excluded`.
    pub fn exclude(&mut self, excluded: &std::collections::BTreeSet<i64>) -> usize {
        match self {
            ImageSet::InMemory(store) => store.exclude(excluded),
            ImageSet::Streamed(set) => set.exclude(excluded),
        }
    }

    pub fn is_streamed(&self) -> bool {
        matches!(self, ImageSet::Streamed(_))
    }
}

impl From<ImageStore> for ImageSet {
    fn from(store: ImageStore) -> Self {
        ImageSet::InMemory(store)
    }
}
