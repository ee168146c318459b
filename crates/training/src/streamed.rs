//! Training sets too large for memory (ImageNet's 1.28 million images are 252 GB at
//! 256x256): read from the `images` artifact while training, never held whole.
//!
//! §3 trains on shuffled mini-batches. An artifact can only be read efficiently in row
//! groups (256 images), so an epoch shuffles at two levels: the row groups are visited in a
//! random order (seeded by the run's seed and the epoch), and their images pass through a
//! shuffle buffer of `shuffle_buffer` images from which each batch is drawn uniformly. A
//! batch therefore mixes images from about `shuffle_buffer / 256` row groups — a sample of
//! the whole set, not the full permutation the in-memory store gives (which is why the
//! in-memory store is used whenever the set fits under the memory limit). A reader thread
//! fetches the next row groups while the network trains. The order depends only on (seed,
//! epoch): a run resumed after any epoch sees the same batches as an uninterrupted one.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::mpsc::{Receiver, sync_channel};

use artifacts::images::{ImageGroups, ImageRecord};
use engine::rng::{purpose, rng_for};
use rand::Rng;
use rand::seq::SliceRandom;
use stage_api::{Error, Result};

use crate::data::ImageStore;

/// Row groups read ahead of the one being consumed.
const READ_AHEAD: usize = 2;

/// An `images` artifact read group by group.
pub struct StreamedImages {
    groups: ImageGroups,
    pub image_size: usize,
    /// Labels and ids of the images kept (file order).
    pub labels: Vec<usize>,
    pub image_ids: Vec<i64>,
    pub class_names: Vec<String>,
    excluded: BTreeSet<i64>,
    /// Images held for drawing batches (the shuffle buffer).
    pub shuffle_buffer: usize,
}

impl StreamedImages {
    /// Indexes the artifact (reading labels and sizes, not pixels) and checks it as
    /// [`ImageStore::load`] does.
    pub fn open(path: &Path, shuffle_buffer: usize) -> Result<Self> {
        let groups = ImageGroups::open(path)?;
        let mut set = StreamedImages {
            groups,
            image_size: 0,
            labels: Vec::new(),
            image_ids: Vec::new(),
            class_names: Vec::new(),
            excluded: BTreeSet::new(),
            shuffle_buffer: shuffle_buffer.max(1),
        };
        for image in set.groups.metadata()?.into_iter().flatten() {
            let size = check_image(
                path,
                image.image_id,
                image.height,
                image.width,
                image.channels,
                image.label,
                (!set.labels.is_empty()).then_some(set.image_size),
            )?;
            set.image_size = size;
            let label = image.label as usize;
            if set.class_names.len() <= label {
                set.class_names.resize(label + 1, String::new());
            }
            set.class_names[label] = image.class_name;
            set.labels.push(label);
            set.image_ids.push(image.image_id);
        }
        if set.labels.is_empty() {
            return Err(Error::input(path, "no images"));
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Leaves out the images whose id is in `excluded` from now on; returns how many.
    pub fn exclude(&mut self, excluded: &BTreeSet<i64>) -> usize {
        let before = self.labels.len();
        let keep: Vec<bool> = self
            .image_ids
            .iter()
            .map(|id| !excluded.contains(id))
            .collect();
        let mut k = keep.iter();
        self.labels.retain(|_| *k.next().expect("same length"));
        let mut k = keep.iter();
        self.image_ids.retain(|_| *k.next().expect("same length"));
        self.excluded.extend(excluded.iter().copied());
        before - self.labels.len()
    }

    /// The batches of epoch `epoch` (0-based): row groups in a seeded order through the
    /// shuffle buffer; every kept image once; the last batch may be smaller.
    pub fn epoch_batches(&self, seed: u64, epoch: u64, batch_size: usize) -> EpochBatches {
        let mut order: Vec<usize> = (0..self.groups.groups.len()).collect();
        order.shuffle(&mut rng_for(&[seed, purpose::SHUFFLE, epoch]));
        EpochBatches {
            incoming: self.stream(order),
            buffer: Vec::with_capacity(self.shuffle_buffer),
            capacity: self.shuffle_buffer,
            draws: rng_for(&[seed, purpose::SHUFFLE, epoch, 1]),
            batch_size: batch_size.max(1),
            image_size: self.image_size,
            class_names: self.class_names.clone(),
            exhausted: false,
        }
    }

    /// The kept images in file order, `chunk` at a time (evaluation).
    pub fn in_order(&self, chunk: usize) -> impl Iterator<Item = Result<ImageStore>> + '_ {
        let mut incoming = self.stream((0..self.groups.groups.len()).collect());
        let chunk = chunk.max(1);
        let mut pending: Vec<ImageRecord> = Vec::new();
        let mut finished = false;
        std::iter::from_fn(move || {
            while !finished && pending.len() < chunk {
                match incoming.next_group() {
                    Some(Ok(images)) => pending.extend(images),
                    Some(Err(error)) => return Some(Err(error)),
                    None => finished = true,
                }
            }
            if pending.is_empty() {
                return None;
            }
            let rest = pending.split_off(chunk.min(pending.len()));
            let images = std::mem::replace(&mut pending, rest);
            Some(Ok(store_of(&images, self.image_size, &self.class_names)))
        })
    }

    /// The kept images of the groups `order`, group by group, read ahead on a thread.
    fn stream(&self, order: Vec<usize>) -> GroupStream {
        GroupStream {
            incoming: read_ahead(self.groups.clone(), order, self.excluded.clone()),
            expected: self.len(),
            received: 0,
            path: self.groups.path.clone(),
        }
    }
}

/// Row groups arriving from the reader thread, checked for completeness: a reader that stops
/// before every kept image arrived (it panicked) is an error, not a short epoch.
struct GroupStream {
    incoming: Receiver<Result<Vec<ImageRecord>>>,
    expected: usize,
    received: usize,
    path: std::path::PathBuf,
}

impl GroupStream {
    /// The next group's kept images; None once all arrived.
    fn next_group(&mut self) -> Option<Result<Vec<ImageRecord>>> {
        match self.incoming.recv() {
            Ok(Ok(images)) => {
                self.received += images.len();
                Some(Ok(images))
            }
            Ok(Err(error)) => Some(Err(error)),
            Err(_) if self.received == self.expected => None,
            Err(_) => Some(Err(Error::input(
                &self.path,
                format!(
                    "the reader stopped after {} of {} images; rerun the stage",
                    self.received, self.expected
                ),
            ))),
        }
    }
}

/// Checks one image as the training set needs it (square, RGB, labelled, the same size as
/// the first: `first_size`); returns its size.
pub(crate) fn check_image(
    path: &Path,
    image_id: i64,
    height: u32,
    width: u32,
    channels: u32,
    label: i32,
    first_size: Option<usize>,
) -> Result<usize> {
    if width != height || channels != 3 {
        return Err(Error::input(
            path,
            format!(
                "image {image_id} is {height}x{width}x{channels}: train needs square RGB images; \
                 wire a `preprocess` output into this input"
            ),
        ));
    }
    if let Some(first) = first_size
        && width as usize != first
    {
        return Err(Error::input(
            path,
            format!("image {image_id} is {width} pixels wide, the first was {first}"),
        ));
    }
    if label < 0 {
        return Err(Error::input(path, format!("image {image_id} has no label")));
    }
    Ok(width as usize)
}

/// A thread reading the groups `order` of `groups` one after the other (dropping the
/// `excluded` images), at most [`READ_AHEAD`] groups ahead of the consumer. It stops when
/// the receiver is dropped.
fn read_ahead(
    groups: ImageGroups,
    order: Vec<usize>,
    excluded: BTreeSet<i64>,
) -> Receiver<Result<Vec<ImageRecord>>> {
    let (sender, receiver) = sync_channel(READ_AHEAD);
    std::thread::spawn(move || {
        for group in order {
            let images = groups.read(group).map(|mut images| {
                images.retain(|image| !excluded.contains(&image.image_id));
                images
            });
            let failed = images.is_err();
            if sender.send(images.map_err(Error::from)).is_err() || failed {
                return;
            }
        }
    });
    receiver
}

fn store_of(images: &[ImageRecord], image_size: usize, class_names: &[String]) -> ImageStore {
    // One copy per image (a batch of 128 at 256x256 is 25 MB), not an iterator per byte.
    let mut pixels = Vec::with_capacity(images.iter().map(|i| i.pixels.len()).sum());
    for image in images {
        pixels.extend_from_slice(&image.pixels);
    }
    ImageStore {
        image_size,
        pixels,
        labels: images.iter().map(|i| i.label as usize).collect(),
        image_ids: images.iter().map(|i| i.image_id).collect(),
        class_names: class_names.to_vec(),
    }
}

/// The batches of one streamed epoch, each a small [`ImageStore`].
pub struct EpochBatches {
    incoming: GroupStream,
    buffer: Vec<ImageRecord>,
    capacity: usize,
    draws: rand_chacha::ChaCha8Rng,
    batch_size: usize,
    image_size: usize,
    class_names: Vec<String>,
    exhausted: bool,
}

impl Iterator for EpochBatches {
    type Item = Result<ImageStore>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.exhausted && self.buffer.len() < self.capacity {
            match self.incoming.next_group() {
                Some(Ok(images)) => self.buffer.extend(images),
                Some(Err(error)) => return Some(Err(error)),
                None => self.exhausted = true,
            }
        }
        if self.buffer.is_empty() {
            return None;
        }
        let take = self.batch_size.min(self.buffer.len());
        let batch: Vec<ImageRecord> = (0..take)
            .map(|_| {
                let at = self.draws.random_range(0..self.buffer.len());
                self.buffer.swap_remove(at)
            })
            .collect();
        Some(Ok(store_of(&batch, self.image_size, &self.class_names)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: i64) -> ImageRecord {
        ImageRecord {
            image_id: id,
            label: 0,
            class_name: String::new(),
            source: String::new(),
            height: 1,
            width: 1,
            channels: 3,
            pixels: vec![0; 3],
        }
    }

    /// A reader that stops before every kept image arrived is an error, not a short epoch;
    /// one that delivers them all ends cleanly.
    #[test]
    fn a_reader_that_stops_early_is_an_error() {
        for (sent, expected, fails) in [(2, 2, false), (2, 5, true)] {
            let (sender, receiver) = sync_channel(4);
            sender.send(Ok((0..sent).map(image).collect())).unwrap();
            drop(sender);
            let mut stream = GroupStream {
                incoming: receiver,
                expected,
                received: 0,
                path: "images".into(),
            };
            assert_eq!(stream.next_group().unwrap().unwrap().len(), sent as usize);
            match stream.next_group() {
                None => assert!(!fails),
                Some(Err(error)) => {
                    assert!(fails);
                    assert!(
                        error.to_string().contains("stopped after 2 of 5 images"),
                        "{error}"
                    );
                }
                Some(Ok(_)) => panic!("no more groups were sent"),
            }
        }
    }
}
