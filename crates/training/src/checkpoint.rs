//! The checkpoint after each epoch: weights, momentum buffers and the schedule's state, so
//! that a run killed anywhere resumes from the last finished epoch and ends bit-identical to
//! an uninterrupted one; and the kept per-epoch weight files (Fig. 4).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use artifacts::Provenance;
use artifacts::tensors::{NamedTensor, read_tensors, write_tensors};
use engine::{Backend, Network, weights};
use serde::{Deserialize, Serialize};
use stage_api::{Error, Result};

use crate::epochs::EpochMetrics;

/// What the checkpoint remembers besides tensors.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct ScheduleState {
    pub(crate) epochs_done: usize,
    pub(crate) learning_rate: f64,
    /// None until the first validation. (An f64 infinity here was written as JSON `null`,
    /// which made checkpoints of runs that never improved on it — every manual-schedule run —
    /// unreadable on resume; `null` now reads back as None.)
    pub(crate) best_val_error: Option<f64>,
    pub(crate) epochs_since_best: usize,
    pub(crate) metrics: Vec<EpochMetrics>,
}

pub(crate) const RESUME_KEY: &str = "zfnet.resume";
pub(crate) const CHECKPOINT: &str = "checkpoint.safetensors";

/// Path of the kept weights of `epoch` inside a folder.
pub fn epoch_file(dir: &Path, epoch: usize) -> PathBuf {
    dir.join(format!("epoch_{epoch:03}.safetensors"))
}

/// Writes the weights, momentum buffers and schedule state (beside, then renamed).
pub(crate) fn save_checkpoint<B: Backend>(
    network: &Network<B>,
    state: &ScheduleState,
    path: &Path,
) -> Result<()> {
    let b = &network.backend;
    let mut tensors = weights::export(network);
    for p in &network.params {
        tensors.push(NamedTensor::new(
            format!("{}.weight.velocity", p.name),
            p.shape.clone(),
            b.download(&p.weight_velocity),
        ));
        tensors.push(NamedTensor::new(
            format!("{}.bias.velocity", p.name),
            vec![p.shape[0]],
            b.download(&p.bias_velocity),
        ));
    }
    let metadata = BTreeMap::from([(
        RESUME_KEY.to_owned(),
        serde_json::to_string(state).expect("state serialises"),
    )]);
    // Write beside, then rename: a kill mid-write leaves the previous checkpoint intact.
    let temporary = path.with_extension("tmp");
    write_tensors(
        &temporary,
        &Provenance::ad_hoc("train"),
        &tensors,
        &metadata,
    )?;
    std::fs::rename(&temporary, path).map_err(|e| Error::io(path, e))
}

/// Reads what [`save_checkpoint`] wrote into `network`; returns the schedule state.
pub(crate) fn load_checkpoint<B: Backend>(
    network: &mut Network<B>,
    path: &Path,
) -> Result<ScheduleState> {
    let file = read_tensors(path)?;
    weights::import(network, &file, path)?;
    for p in &mut network.params {
        let weight = file.get(&format!("{}.weight.velocity", p.name), path)?;
        let bias = file.get(&format!("{}.bias.velocity", p.name), path)?;
        p.weight_velocity = network.backend.upload(&weight.values);
        p.bias_velocity = network.backend.upload(&bias.values);
    }
    let json = file.metadata.get(RESUME_KEY).ok_or_else(|| {
        Error::input(
            path,
            "checkpoint without its schedule state; delete it to start over",
        )
    })?;
    serde_json::from_str(json).map_err(|error| {
        Error::input(
            path,
            format!("unreadable schedule state ({error}); delete the checkpoint to start over"),
        )
    })
}
