//! Stage kinds that list image datasets in their standard folder layouts. Each writes an
//! `image_files` artifact (path, label, class name); `preprocess` decodes the files.
//!
//! Files are listed by walking folders, never filtered by extension: a `.DS_Store` or a
//! truncated JPEG is listed and then rejected, with its reason, by `preprocess` — so that
//! `accepted + rejected == files seen` holds and nothing vanishes silently. Empty class folders
//! and files outside class folders are reported in the stage summary.

mod caltech;
mod folders;
mod image_folder;
mod imagenet;
mod voc;

use std::sync::Arc;

use stage_api::StageKind;

pub use folders::{ClassFolder, Listing, scan_class_folders};
pub use voc::VOC_CLASSES;

pub fn kinds() -> Vec<Arc<dyn StageKind>> {
    vec![
        Arc::new(image_folder::ImageFolder),
        Arc::new(imagenet::ImageNet),
        Arc::new(caltech::Caltech101),
        Arc::new(caltech::Caltech256),
        Arc::new(voc::Voc2012),
    ]
}

/// The output every reader declares.
fn files_output() -> stage_api::OutputSpec {
    stage_api::OutputSpec::new(
        "files",
        "files.parquet",
        "image_files artifact: path, label, class name",
    )
}

fn limit_param() -> stage_api::ParamSpec {
    stage_api::ParamSpec::optional_int(
        "limit_per_class",
        1,
        i64::MAX,
        "Keep at most this many files per class (the first in sorted order).",
    )
}

fn root_input(doc: &'static str) -> stage_api::InputSpec {
    stage_api::InputSpec::path("root", doc)
}
