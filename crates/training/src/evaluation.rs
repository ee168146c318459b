//! Evaluation (§3, Table 2): class probabilities averaged over the centre crop or the ten
//! sub-crops, without dropout, and the top-1 / top-5 errors and loss of a set.

use engine::{Backend, Mode, Network};
use imaging::{Crop, centre_crop, ten_crops};
use stage_api::Result;

use crate::data::{ImageSet, ImageStore};

/// Which crops an evaluation averages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crops {
    /// The centre crop alone (validation during training).
    Centre,
    /// The 10 crops of §3, softmax outputs averaged.
    Ten,
}

/// Errors and loss of a network on a store.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub n_images: usize,
    pub loss: f64,
    pub top1_error: f64,
    pub top5_error: f64,
}

/// Class probabilities (N x classes, row per image of `store`) without dropout, the softmax
/// averaged over the chosen crops.
pub fn predict_probabilities<B: Backend>(
    network: &Network<B>,
    store: &ImageStore,
    mean: &[f32],
    crops: Crops,
    batch_size: usize,
) -> Vec<f32> {
    let crop_size = network.architecture.input_size;
    let classes = network.classes();
    let positions: Vec<Crop> = match crops {
        Crops::Centre => vec![centre_crop(store.image_size as u32, crop_size as u32)],
        Crops::Ten => ten_crops(store.image_size as u32, crop_size as u32).to_vec(),
    };
    let mut probs = vec![0.0f32; store.len() * classes];
    let indices: Vec<usize> = (0..store.len()).collect();
    for (chunk, out) in indices
        .chunks(batch_size)
        .zip(probs.chunks_mut(batch_size * classes))
    {
        for &crop in &positions {
            let crops = vec![crop; chunk.len()];
            let input = store.batch(&network.backend, chunk, &crops, crop_size, mean);
            let acts = network.forward(input, Mode::Eval);
            let p = network.backend.softmax(acts.logits(), classes);
            for (total, value) in out.iter_mut().zip(p) {
                *total += value / positions.len() as f32;
            }
        }
    }
    probs
}

/// Evaluates without dropout, averaging the softmax over the chosen crops.
pub fn evaluate<B: Backend>(
    network: &Network<B>,
    store: &ImageStore,
    mean: &[f32],
    crops: Crops,
    batch_size: usize,
) -> Evaluation {
    EvaluationSums::of(network, store, mean, crops, batch_size).evaluation()
}

/// [`evaluate`] on an image set; a streamed set is evaluated chunk by chunk in file order
/// (the same numbers, up to the order of the loss sum).
pub fn evaluate_set<B: Backend>(
    network: &Network<B>,
    set: &ImageSet,
    mean: &[f32],
    crops: Crops,
    batch_size: usize,
) -> Result<Evaluation> {
    match set {
        ImageSet::InMemory(store) => Ok(evaluate(network, store, mean, crops, batch_size)),
        ImageSet::Streamed(streamed) => {
            let mut total = EvaluationSums::default();
            // Chunks of whole batches, a few thousand images: bounded memory.
            let chunk = batch_size.max(1) * (4096 / batch_size.max(1)).max(1);
            for store in streamed.in_order(chunk) {
                total.add(&EvaluationSums::of(
                    network, &store?, mean, crops, batch_size,
                ));
            }
            Ok(total.evaluation())
        }
    }
}

/// What an evaluation adds up: images, loss sum, top-1 and top-5 mistakes.
#[derive(Clone, Copy, Debug, Default)]
struct EvaluationSums {
    images: usize,
    loss: f64,
    top1_wrong: usize,
    top5_wrong: usize,
}

impl EvaluationSums {
    fn of<B: Backend>(
        network: &Network<B>,
        store: &ImageStore,
        mean: &[f32],
        crops: Crops,
        batch_size: usize,
    ) -> Self {
        let classes = network.classes();
        let probs = predict_probabilities(network, store, mean, crops, batch_size);
        let mut loss = 0.0f64;
        for (row, &label) in probs.chunks(classes).zip(&store.labels) {
            loss -= engine::scalar::Scalar::ln_everywhere(row[label].max(1e-30) as f64);
        }
        EvaluationSums {
            images: store.len(),
            loss,
            top1_wrong: top_k_wrong(&probs, &store.labels, classes, 1),
            top5_wrong: top_k_wrong(&probs, &store.labels, classes, 5),
        }
    }

    fn add(&mut self, other: &Self) {
        self.images += other.images;
        self.loss += other.loss;
        self.top1_wrong += other.top1_wrong;
        self.top5_wrong += other.top5_wrong;
    }

    fn evaluation(&self) -> Evaluation {
        let n = self.images as f64;
        Evaluation {
            n_images: self.images,
            loss: self.loss / n,
            top1_error: self.top1_wrong as f64 / n,
            top5_error: self.top5_wrong as f64 / n,
        }
    }
}

/// How many rows of `scores` (N x classes) do not have their label among the top `k`.
pub fn top_k_wrong(scores: &[f32], labels: &[usize], classes: usize, k: usize) -> usize {
    scores
        .chunks(classes)
        .zip(labels)
        .filter(|(row, label)| {
            let target = row[**label];
            // Rank = number of classes scoring strictly higher (ties favour the label).
            row.iter().filter(|&&s| s > target).count() >= k
        })
        .count()
}
