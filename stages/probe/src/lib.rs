//! Stage kinds `extract` and `probe` (§5.3, Table 7): how good are each layer's features?
//!
//! `extract` runs a trained model over an image set and writes one `features` artifact per
//! layer. `probe` trains, per layer, a linear SVM and a softmax classifier on N images per
//! class and reports the mean per-class accuracy on the rest, mean ± std over seeded folds
//! (the Caltech protocol).

mod extract;
mod probe;

pub use extract::Extract;
pub use probe::Probe;

use std::sync::Arc;

use stage_api::StageKind;

pub fn kinds() -> Vec<Arc<dyn StageKind>> {
    vec![Arc::new(extract::Extract), Arc::new(probe::Probe)]
}
