//! One SGD step (§3): its input (a training crop of each image, mean subtracted, cut by the
//! backend), the forward and backward passes and the update, queued so that the next step's
//! input can be prepared before this step's loss is read.

use engine::rng::{purpose, rng_for, stream_key};
use engine::{Backend, Mode, Network, UpdateConfig};
use imaging::Crop;
use rand::Rng;

use crate::data::ImageStore;

use crate::epochs::TrainingCrops;
use crate::evaluation::top_k_wrong;

/// What one SGD step saw.
#[derive(Clone, Copy, Debug)]
pub struct StepOutcome {
    /// Mean cross-entropy of the batch (before the update).
    pub loss: f32,
    /// Batch images whose top-1 prediction was wrong.
    pub wrong: usize,
    /// Images in the batch.
    pub images: usize,
}

/// The input of one SGD step on the images `indices` of `store` (§3): a training crop of
/// each (one of its ten sub-crops, or a random crop and flip), drawn from the stream keyed by
/// `key` = (seed, epoch, step), mean subtracted, cut by the backend (on a GPU: bytes uploaded,
/// crops cut there); and the images' labels.
pub fn step_input<B: Backend>(
    backend: &B,
    store: &ImageStore,
    indices: &[usize],
    mean: &[f32],
    crop_size: usize,
    crops: TrainingCrops,
    key: [u64; 3],
) -> (B::Buffer, Vec<usize>) {
    let [seed, epoch, step] = key;
    let mut crop_rng = rng_for(&[seed, purpose::CROP, epoch, step]);
    let crops: Vec<Crop> = indices
        .iter()
        .map(|_| crops.draw(store.image_size as u32, crop_size as u32, crop_rng.random()))
        .collect();
    let input = store.batch(backend, indices, &crops, crop_size, mean);
    let labels = indices.iter().map(|&i| store.labels[i]).collect();
    (input, labels)
}

/// An SGD step queued on the backend whose loss and errors have not been read yet.
pub struct QueuedStep<B: Backend> {
    loss: B::Loss,
    logits: B::Buffer,
    labels: Vec<usize>,
}

/// Queues one SGD step (§3): forward with dropout (its stream keyed by `key`), backward, and
/// the update. The update is queued before the loss is known, so after a non-finite loss
/// (see [`QueuedStep::finish`]) the weights are not to be trusted: callers stop there.
pub fn queue_sgd_step<B: Backend>(
    network: &mut Network<B>,
    input: B::Buffer,
    labels: Vec<usize>,
    key: [u64; 3],
    update: &UpdateConfig,
) -> QueuedStep<B> {
    let [seed, epoch, step] = key;
    let dropout_stream = stream_key(&[seed, epoch, step]);
    let acts = network.forward(input, Mode::Train { dropout_stream });
    let loss = network.backward_queued(&acts, &labels);
    // Only the logits outlive the step's activations.
    let logits = network.backend.copy(acts.logits());
    drop(acts);
    network.update(update);
    QueuedStep {
        loss,
        logits,
        labels,
    }
}

impl<B: Backend> QueuedStep<B> {
    /// Waits for the step and reads its loss and top-1 errors.
    pub fn finish(self, network: &Network<B>) -> StepOutcome {
        let images = self.labels.len();
        let loss = network.backend.read_loss(self.loss);
        if !loss.is_finite() {
            return StepOutcome {
                loss,
                wrong: images,
                images,
            };
        }
        let logits = network.backend.download(&self.logits);
        let wrong = top_k_wrong(&logits, &self.labels, network.classes(), 1);
        StepOutcome {
            loss,
            wrong,
            images,
        }
    }
}

/// One SGD step on the images `indices` of `store` (§3), start to finish: [`step_input`],
/// [`queue_sgd_step`], [`QueuedStep::finish`]. Every random choice comes from streams keyed by
/// `key` = (seed, epoch, step), so a step is reproducible on its own.
pub fn sgd_step<B: Backend>(
    network: &mut Network<B>,
    store: &ImageStore,
    indices: &[usize],
    mean: &[f32],
    crops: TrainingCrops,
    key: [u64; 3],
    update: &UpdateConfig,
) -> StepOutcome {
    let crop_size = network.architecture.input_size;
    let (input, labels) = step_input(
        &network.backend,
        store,
        indices,
        mean,
        crop_size,
        crops,
        key,
    );
    queue_sgd_step(network, input, labels, key, update).finish(network)
}
