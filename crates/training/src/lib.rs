//! The training loop of §3 and the image sets it reads (in memory, or streamed when too
//! large), shared by the `train`
//! stage (the pre-training run) and the `transfer` stage (training from scratch on N images
//! per class, §5.2).

mod data;
mod streamed;
mod training;

pub use data::{ImageSet, ImageStore};
pub use streamed::{EpochBatches, StreamedImages};
pub use training::{
    Crops, EpochMetrics, Evaluation, LrSchedule, Progress, QueuedStep, StepOutcome, TrainConfig,
    Trained, TrainingCrops, epoch_file, evaluate, evaluate_set, predict_probabilities,
    queue_sgd_step, sgd_step, step_input, top_k_wrong, train,
};
