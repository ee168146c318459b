//! The training loop of §3 and the image sets it reads (in memory, or streamed when too
//! large), shared by the `train` stage (the pre-training run) and the `transfer` stage
//! (training from scratch on N images per class, §5.2).
//!
//! - [`epochs`]: the loop over epochs ([`train`]): batches, the learning-rate schedule,
//!   validation, resumption.
//! - [`fixed_steps`]: a fixed number of steps (the transfer stage's scratch arm).
//! - [`step`]: one SGD step, queued.
//! - [`checkpoint`]: what a resumed run reads.
//! - [`evaluation`]: probabilities and errors of a set.

mod checkpoint;
mod data;
pub mod epochs;
pub mod evaluation;
pub mod fixed_steps;
pub mod step;
mod streamed;

pub use checkpoint::epoch_file;
pub use data::{Holding, ImageSet, ImageStore};
pub use epochs::{EpochMetrics, LrSchedule, Progress, TrainConfig, Trained, TrainingCrops, train};
pub use evaluation::{
    Crops, Evaluation, evaluate, evaluate_set, predict_probabilities, top_k_wrong,
};
pub use fixed_steps::{FixedSteps, train_fixed_steps};
pub use step::{QueuedStep, StepOutcome, queue_sgd_step, sgd_step, step_input};
pub use streamed::{EpochBatches, StreamedImages};
