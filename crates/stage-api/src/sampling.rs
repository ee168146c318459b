//! The Caltech protocol of §5.2 as a pure function, shared by the stages that split data
//! (`sample_per_class`, `probe`): "15 or 30 training images per class, testing on up to 50 per
//! class", over seeded folds.

use std::collections::{BTreeMap, BTreeSet};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// The chosen image ids of one fold.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Split {
    pub train: BTreeSet<i64>,
    pub test: BTreeSet<i64>,
}

/// For each class (negative labels ignored), shuffles its ids with a ChaCha RNG keyed by
/// (seed, fold, label) and takes the first `n_train` for training and up to `max_test` of the
/// rest for testing. Errors name the classes too small to leave a test image.
pub fn split_per_class(
    ids_by_label: &BTreeMap<i32, Vec<i64>>,
    n_train: usize,
    max_test: Option<usize>,
    seed: u64,
    fold: u64,
) -> Result<Split, String> {
    let mut split = Split::default();
    let mut short = Vec::new();
    for (&label, ids) in ids_by_label {
        if label < 0 {
            continue;
        }
        if ids.len() <= n_train {
            short.push(format!("class {label} has {} images", ids.len()));
            continue;
        }
        let mut shuffled = ids.clone();
        shuffled.sort_unstable();
        let stream = seed ^ fold.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((label as u64) << 32);
        shuffled.shuffle(&mut ChaCha8Rng::seed_from_u64(stream));
        let test_end = max_test.map_or(shuffled.len(), |m| (n_train + m).min(shuffled.len()));
        split.train.extend(&shuffled[..n_train]);
        split.test.extend(&shuffled[n_train..test_end]);
    }
    if !short.is_empty() {
        return Err(format!(
            "n_train_per_class = {n_train} leaves no test image for: {}; lower it or drop those \
             classes",
            short.join(", ")
        ));
    }
    Ok(split)
}
