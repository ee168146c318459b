//! The training loop of §3: "stochastic gradient descent with a mini-batch size of 128,
//! learning rate 1e-2, momentum 0.9, learning rate annealed when the validation error
//! plateaus", dropout in fc6/fc7, filter RMS renormalisation, multiple crops and flips.
//!
//! Every random choice comes from a stream keyed by (seed, purpose, epoch, step), and the
//! checkpoint after each epoch holds weights, momentum buffers and the schedule's state: a run
//! killed anywhere and restarted resumes from the last finished epoch and ends with weights
//! bit-identical to an uninterrupted run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use artifacts::Provenance;
use artifacts::tensors::write_tensors;
use engine::rng::{purpose, rng_for};
use engine::{Architecture, Backend, Network, UpdateConfig, weights};
use imaging::{Crop, random_crop, ten_crops};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use stage_api::{Error, Result};

use crate::checkpoint::{CHECKPOINT, ScheduleState, epoch_file, load_checkpoint, save_checkpoint};
use crate::data::{ImageSet, ImageStore};
use crate::evaluation::{Crops, evaluate_set};
use crate::step::{QueuedStep, StepOutcome, queue_sgd_step, step_input};

/// How the learning rate is annealed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LrSchedule {
    /// Multiply by `factor` when the validation top-1 error has not improved for `patience`
    /// epochs (the paper's manual annealing, automated).
    Plateau { patience: usize, factor: f64 },
    /// Multiply by `factor` at the start of each listed epoch (1-based).
    Manual { epochs: Vec<usize>, factor: f64 },
}

/// Which crops SGD trains on (§3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrainingCrops {
    /// The paper's 10 sub-crops: each image, each time it is drawn, as one of its 4 corner and
    /// centre crops, flipped or not, uniformly ([`imaging::ten_crops`]).
    Ten,
    /// A uniformly random crop position and a fair-coin flip (Krizhevsky et al.'s reading of
    /// "multiple different crops and flips").
    Random,
}

impl TrainingCrops {
    /// The crop of one image from 64 random bits.
    pub fn draw(self, image_size: u32, crop_size: u32, random_bits: u64) -> Crop {
        match self {
            TrainingCrops::Ten => ten_crops(image_size, crop_size)[(random_bits % 10) as usize],
            TrainingCrops::Random => random_crop(image_size, crop_size, random_bits),
        }
    }
}

/// Everything that determines a training run.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub architecture: String,
    /// The architecture's layers when the pipeline declares them (empty: the built-in
    /// `architecture`; see [`engine::Architecture::from_layers`]).
    pub layers: Vec<String>,
    /// The training crops (the paper's ten, or random).
    pub crops: TrainingCrops,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub init_std: f64,
    pub filter_rms_radius: f64,
    pub schedule: LrSchedule,
    pub seed: u64,
    /// Epochs (1-based) whose weights are kept for Fig. 4.
    pub checkpoint_epochs: Vec<usize>,
}

/// One row of the metrics artifact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    /// Top-1 error on the training crops seen this epoch (with dropout active).
    pub train_top1_error: f64,
    pub val_loss: f64,
    pub val_top1_error: f64,
    pub val_top5_error: f64,
    pub learning_rate: f64,
    pub filters_renormalised: usize,
    pub seconds: f64,
}

/// The result of a (possibly resumed) run.
pub struct Trained<B: Backend> {
    pub network: Network<B>,
    pub metrics: Vec<EpochMetrics>,
    /// Kept per-epoch weight files (in the resume folder).
    pub epoch_files: Vec<(usize, PathBuf)>,
    /// Epochs already done by an interrupted run this one resumed from.
    pub resumed_after: Option<usize>,
}

/// Trains until `until_epoch` (<= `config.epochs`), resuming from `resume_dir` if a checkpoint
/// is there. `report` is called after each epoch.
#[allow(clippy::too_many_arguments)]
pub fn train<B: Backend>(
    backend: B,
    config: &TrainConfig,
    train: &ImageSet,
    val: &ImageSet,
    mean: &[f32],
    resume_dir: &Path,
    until_epoch: usize,
    report: &mut dyn FnMut(Progress),
) -> Result<Trained<B>> {
    let classes = train.class_names().len().max(val.class_names().len());
    let architecture = Architecture::resolve(&config.architecture, &config.layers, classes)
        .map_err(|e| Error::Config(e.to_string()))?;
    let crop_size = architecture.input_size;
    if crop_size > train.image_size() {
        return Err(Error::Config(format!(
            "architecture `{}` takes {crop_size}x{crop_size} crops but the images are {}x{}: \
             preprocess to a larger `size`",
            config.architecture,
            train.image_size(),
            train.image_size()
        )));
    }
    let mut network = Network::new(backend, architecture, config.init_std, config.seed);
    let mut state = ScheduleState {
        learning_rate: config.learning_rate,
        best_val_error: None,
        ..ScheduleState::default()
    };
    std::fs::create_dir_all(resume_dir).map_err(|e| Error::io(resume_dir, e))?;
    let checkpoint = resume_dir.join(CHECKPOINT);
    let mut resumed_after = None;
    if checkpoint.exists() {
        state = load_checkpoint(&mut network, &checkpoint)?;
        resumed_after = Some(state.epochs_done);
        tracing::info!(epochs_done = state.epochs_done, "resuming from checkpoint");
    }
    let update = |lr: f64| UpdateConfig {
        learning_rate: lr,
        momentum: config.momentum,
        weight_decay: config.weight_decay,
        filter_rms_radius: config.filter_rms_radius,
    };

    for epoch in state.epochs_done..until_epoch.min(config.epochs) {
        let started = Instant::now();
        if let LrSchedule::Manual { epochs, factor } = &config.schedule
            && epochs.contains(&(epoch + 1))
        {
            state.learning_rate *= factor;
        }
        let mut tally = EpochTally::default();
        network.take_renormalised();
        let diverged = |loss: f32, step: usize| {
            Error::Numerical(format!(
                "training diverged: the loss is {loss} at epoch {}, step {step} (learning \
                 rate {}). The last good checkpoint (after epoch {}) is kept in {}; lower \
                 `learning_rate` or `init_std`",
                epoch + 1,
                state.learning_rate,
                state.epochs_done,
                resume_dir.display()
            ))
        };
        // Pipelined: step k+1's input is cut and uploaded while the backend still runs step
        // k, whose loss is read only then (on a GPU the host's batch work overlaps the step).
        let mut in_flight: Option<(usize, QueuedStep<B>)> = None;
        for (step, batch) in
            epoch_batches(train, config.seed, epoch as u64, config.batch_size).enumerate()
        {
            let batch = batch?;
            let (store, indices) = batch.images();
            let key = [config.seed, epoch as u64, step as u64];
            let (input, labels) = step_input(
                &network.backend,
                store,
                indices,
                mean,
                crop_size,
                config.crops,
                key,
            );
            if let Some((done, queued)) = in_flight.take() {
                tally
                    .add(queued.finish(&network))
                    .map_err(|loss| diverged(loss, done))?;
                report(tally.progress(epoch + 1, train.len()));
            }
            let queued = queue_sgd_step(
                &mut network,
                input,
                labels,
                key,
                &update(state.learning_rate),
            );
            in_flight = Some((step, queued));
        }
        if let Some((done, queued)) = in_flight.take() {
            tally
                .add(queued.finish(&network))
                .map_err(|loss| diverged(loss, done))?;
            report(tally.progress(epoch + 1, train.len()));
        }
        let EpochTally {
            loss_sum,
            wrong,
            seen,
        } = tally;
        let val_result = evaluate_set(&network, val, mean, Crops::Centre, config.batch_size)?;
        let metrics = EpochMetrics {
            epoch: epoch + 1,
            train_loss: loss_sum / seen as f64,
            train_top1_error: wrong as f64 / seen as f64,
            val_loss: val_result.loss,
            val_top1_error: val_result.top1_error,
            val_top5_error: val_result.top5_error,
            learning_rate: state.learning_rate,
            filters_renormalised: network.take_renormalised() as usize,
            seconds: started.elapsed().as_secs_f64(),
        };
        report(Progress::Epoch(&metrics));
        if let LrSchedule::Plateau { patience, factor } = &config.schedule {
            if state
                .best_val_error
                .is_none_or(|best| metrics.val_top1_error < best)
            {
                state.best_val_error = Some(metrics.val_top1_error);
                state.epochs_since_best = 0;
            } else {
                state.epochs_since_best += 1;
                if state.epochs_since_best >= *patience {
                    state.learning_rate *= factor;
                    state.epochs_since_best = 0;
                }
            }
        }
        state.metrics.push(metrics);
        state.epochs_done = epoch + 1;
        if config.checkpoint_epochs.contains(&(epoch + 1)) {
            let kept = epoch_file(resume_dir, epoch + 1);
            write_tensors(
                &kept,
                &Provenance::ad_hoc("train"),
                &weights::export(&network),
                &BTreeMap::new(),
            )?;
        }
        save_checkpoint(&network, &state, &checkpoint)?;
    }
    let epoch_files = config
        .checkpoint_epochs
        .iter()
        .map(|&epoch| (epoch, epoch_file(resume_dir, epoch)))
        .filter(|(_, path)| path.exists())
        .collect();
    Ok(Trained {
        network,
        metrics: state.metrics,
        epoch_files,
        resumed_after,
    })
}

/// One SGD batch: images of the in-memory store by index, or a streamed batch of its own.
enum Batch<'a> {
    Indices(&'a ImageStore, Vec<usize>),
    Owned(ImageStore, Vec<usize>),
}

impl Batch<'_> {
    fn images(&self) -> (&ImageStore, &[usize]) {
        match self {
            Batch::Indices(store, indices) => (store, indices),
            Batch::Owned(store, indices) => (store, indices),
        }
    }
}

/// The batches of epoch `epoch`: a seeded permutation of the in-memory store, or the streamed
/// set's row groups through its shuffle buffer ([`crate::streamed`]).
fn epoch_batches<'a>(
    set: &'a ImageSet,
    seed: u64,
    epoch: u64,
    batch_size: usize,
) -> Box<dyn Iterator<Item = Result<Batch<'a>>> + 'a> {
    match set {
        ImageSet::InMemory(store) => {
            let mut order: Vec<usize> = (0..store.len()).collect();
            order.shuffle(&mut rng_for(&[seed, purpose::SHUFFLE, epoch]));
            let chunks: Vec<Vec<usize>> = order.chunks(batch_size).map(<[usize]>::to_vec).collect();
            Box::new(
                chunks
                    .into_iter()
                    .map(move |indices| Ok(Batch::Indices(store, indices))),
            )
        }
        ImageSet::Streamed(streamed) => Box::new(
            streamed
                .epoch_batches(seed, epoch, batch_size)
                .map(|batch| {
                    batch.map(|store| {
                        let indices = (0..store.len()).collect();
                        Batch::Owned(store, indices)
                    })
                }),
        ),
    }
}

/// Loss and errors of an epoch's steps, as they are read.
#[derive(Default)]
struct EpochTally {
    loss_sum: f64,
    wrong: usize,
    seen: usize,
}

/// What [`train`] reports as it goes: after every SGD step, and after every epoch.
#[derive(Clone, Copy, Debug)]
pub enum Progress<'a> {
    Step {
        /// 1-based.
        epoch: usize,
        /// Training images of this epoch stepped over so far, of `epoch_images`.
        images_done: usize,
        epoch_images: usize,
        /// The mean training loss over this epoch's steps so far.
        running_loss: f64,
    },
    Epoch(&'a EpochMetrics),
}

impl EpochTally {
    fn progress(&self, epoch: usize, epoch_images: usize) -> Progress<'static> {
        Progress::Step {
            epoch,
            images_done: self.seen,
            epoch_images,
            running_loss: self.loss_sum / self.seen.max(1) as f64,
        }
    }

    /// Adds one step's outcome; a non-finite loss is returned as the error.
    fn add(&mut self, outcome: StepOutcome) -> std::result::Result<(), f32> {
        if !outcome.loss.is_finite() {
            return Err(outcome.loss);
        }
        self.wrong += outcome.wrong;
        self.loss_sum += outcome.loss as f64 * outcome.images as f64;
        self.seen += outcome.images;
        Ok(())
    }
}
