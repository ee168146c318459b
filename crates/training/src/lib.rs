//! The training loop of §3 and the in-memory image store it reads, shared by the `train`
//! stage (the pre-training run) and the `transfer` stage (training from scratch on N images
//! per class, §5.2).

mod data;
mod training;

pub use data::ImageStore;
pub use training::{
    Crops, EpochMetrics, Evaluation, LrSchedule, StepOutcome, TrainConfig, Trained, epoch_file,
    evaluate, predict_probabilities, sgd_step, top_k_wrong, train,
};
