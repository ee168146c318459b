//! What a transfer run holds at its peak, computed before anything large is read: from the
//! features' header (rows, dimensions), the folds (which follow from ids and labels alone),
//! the target images' header and the network's layer plan. Checked against the stage's
//! `memory_limit_mb` ([`MemoryNeed::check`]); a run over it is refused with every part named.

use std::collections::BTreeMap;
use std::path::Path;

use artifacts::images::ImageGroups;
use engine::{Architecture, Plan};
use linear_models::softmax_memory_bytes;
use stage_api::memory::MemoryNeed;
use stage_api::sampling::split_per_class;
use stage_api::{Error, Params, Result};

/// How many images an `images` artifact holds and the bytes of one (all are S x S x 3).
#[derive(Clone, Copy, Debug)]
pub struct ImagesShape {
    pub images: u64,
    pub image_bytes: u64,
}

impl ImagesShape {
    /// From the artifact's footer and its rows' dims (a few bytes a row; no pixel is read).
    pub fn of(path: &Path) -> Result<ImagesShape> {
        let groups = ImageGroups::open(path)?;
        let metadata = groups.metadata()?;
        let image_bytes = metadata
            .iter()
            .flatten()
            .map(|m| m.height as u64 * m.width as u64 * m.channels as u64)
            .max()
            .unwrap_or(0);
        Ok(ImagesShape {
            images: metadata.iter().map(|g| g.len() as u64).sum(),
            image_bytes,
        })
    }
}

/// A `transfer` run's need: the feature matrix, the largest (fold, N)'s rows, softmax and
/// predictions and, with the scratch arm (`images`), the target images, a fold's copies of
/// them, a fresh network and a batch's activations on the CPU.
pub fn transfer_need(
    params: &Params,
    ids_by_label: &BTreeMap<i32, Vec<i64>>,
    rows: usize,
    dim: usize,
    classes: usize,
    images: Option<ImagesShape>,
    architecture: &Architecture,
) -> Result<MemoryNeed> {
    let (dim_u, classes_u) = (dim as u64, classes as u64);
    let mut need = MemoryNeed::default();
    need.parts.push((
        format!("{rows} rows of {dim} features (f32)"),
        (rows as u64).saturating_mul(dim_u) * 4,
    ));
    let max_test = params
        .optional_int("max_test_per_class")
        .map(|m| m as usize);
    // The largest fold's rows: the folds differ only in which ids, so fold 0 gives the
    // counts of every fold.
    let mut fold_rows = 0u64;
    let mut fold_images = 0u64;
    for n in params.int_list("n_per_class") {
        let split =
            split_per_class(ids_by_label, n as usize, max_test, 0, 0).map_err(Error::Config)?;
        let (train, test) = (split.train.len() as u64, split.test.len() as u64);
        let rows_bytes = (train + test) * (dim_u + 1) * 8
            + train.max(test) * dim_u * 4
            + softmax_memory_bytes(train as usize, dim + 1, classes)
            + test * classes_u * 8;
        fold_rows = fold_rows.max(rows_bytes);
        fold_images = fold_images.max(train + test);
    }
    need.parts.push((
        "the largest fold's rows, softmax and predictions".into(),
        fold_rows,
    ));
    if let Some(shape) = images {
        need.parts.push((
            format!("{} target images", shape.images),
            shape.images.saturating_mul(shape.image_bytes),
        ));
        need.parts.push((
            "the largest fold's image copies".into(),
            fold_images.saturating_mul(shape.image_bytes),
        ));
        if !stage_api::device::wants_gpu(params) {
            let plan = Plan::of(&architecture.clone().with_classes(classes));
            // The training batch, or the evaluation's 128 images, whichever is larger.
            let batch = params.int("scratch_batch_size").max(128) as u64;
            need.parts.push((
                format!("the scratch network and a batch of {batch}"),
                plan.model_bytes() + batch * plan.training_bytes_per_image(),
            ));
        }
    }
    Ok(need)
}
