//! Stage kind `fashion_mnist`: the default dataset, read from its IDX files.
//!
//! Debian's `dataset-fashion-mnist` installs `{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`
//! under `/usr/share/datasets/fashion-mnist/`; plain (un-gzipped) files are accepted too. The
//! 28x28 grayscale images are expanded to 3 identical channels so every later stage sees RGB.
//! Labels are re-indexed to the position of each class in the `classes` param, so a subset
//! (e.g. the 6 source classes of the transfer experiment) trains a 6-way softmax.

mod idx;

use std::sync::Arc;

use artifacts::images::{ImageRecord, ImagesWriter};
use stage_api::{
    Error, InputSpec, OutputSpec, ParamSpec, Result, RunSummary, StageContext, StageKind,
};

pub use idx::{IdxError, find as find_idx, read_idx};

/// The ten Fashion-MNIST classes, by label (Xiao et al. 2017), as snake_case names.
pub const CLASS_NAMES: [&str; 10] = [
    "tshirt_top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
];

pub fn kinds() -> Vec<Arc<dyn StageKind>> {
    vec![Arc::new(FashionMnist)]
}

pub struct FashionMnist;

impl StageKind for FashionMnist {
    fn name(&self) -> &'static str {
        "fashion_mnist"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "Reads Fashion-MNIST (IDX files, gzipped or not) into an images artifact (28x28 RGB)."
    }

    fn peak_memory(&self) -> &'static str {
        "The whole inflated IDX images file (N H W bytes: 47 MB for the 60,000 training images; the read buffer may reach twice that while growing) and its labels, plus an images writer (up to 3 row groups of 256 images). Grows with the file, capped at 4 GiB of data per file."
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::choice(
                "split",
                "train",
                &["train", "test"],
                "Which IDX pair to read.",
            ),
            ParamSpec::int_list(
                "classes",
                &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
                0,
                9,
                "Original labels to keep; labels become positions in this list.",
            ),
            ParamSpec::optional_int(
                "limit_per_class",
                1,
                i64::MAX,
                "Keep at most this many images of each class (the first ones in file order).",
            ),
        ]
    }

    fn inputs(&self) -> Vec<InputSpec> {
        vec![InputSpec::path(
            "dir",
            "folder with the IDX files (Debian: /usr/share/datasets/fashion-mnist)",
        )]
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec::new(
            "images",
            "images",
            "images artifact: 28x28x3, labels re-indexed to `classes`",
        )]
    }

    fn validate(&self, params: &stage_api::Params) -> Vec<String> {
        let classes = params.int_list("classes");
        let mut problems = Vec::new();
        if classes.is_empty() {
            problems.push("`classes` is empty: list the labels (0-9) to keep".to_owned());
        }
        if let Some(bad) = classes.iter().find(|&&c| !(0..10).contains(&c)) {
            problems.push(format!(
                "`classes` holds {bad}; Fashion-MNIST labels are 0-9"
            ));
        }
        let mut sorted = classes.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != classes.len() {
            problems.push("`classes` lists a label twice".to_owned());
        }
        problems
    }

    fn run(&self, ctx: &StageContext) -> Result<RunSummary> {
        let dir = ctx.input("dir");
        let prefix = match ctx.params.str("split") {
            "train" => "train",
            _ => "t10k",
        };
        let images_file = idx::find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let labels_file = idx::find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        let images =
            read_idx(&images_file).map_err(|e| Error::input(&images_file, e.to_string()))?;
        let labels =
            read_idx(&labels_file).map_err(|e| Error::input(&labels_file, e.to_string()))?;
        if images.dims.len() != 3 || labels.dims.len() != 1 || images.dims[0] != labels.dims[0] {
            return Err(Error::input(
                &images_file,
                format!(
                    "images have dims {:?} and labels {:?}: expected [n, 28, 28] and [n]; are \
                     these the matching files of one split?",
                    images.dims, labels.dims
                ),
            ));
        }
        let (n, height, width) = (images.dims[0], images.dims[1], images.dims[2]);
        let classes = ctx.params.int_list("classes");
        let limit = ctx
            .params
            .optional_int("limit_per_class")
            .map(|l| l as usize);
        let mut taken = [0usize; 10];
        let source_name = images_file
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut writer = ImagesWriter::create(ctx.output("images"), &ctx.provenance)?;
        let bar = ctx.progress_bar(n as u64, "reading Fashion-MNIST");
        let plane = height * width;
        for index in 0..n {
            bar.inc(1);
            let original = labels.data[index] as i64;
            let Some(position) = classes.iter().position(|&c| c == original) else {
                continue;
            };
            let slot = &mut taken[original as usize];
            if limit.is_some_and(|limit| *slot >= limit) {
                continue;
            }
            *slot += 1;
            let gray = &images.data[index * plane..(index + 1) * plane];
            let pixels = gray.iter().flat_map(|&v| [v, v, v]).collect();
            writer.push(ImageRecord {
                image_id: index as i64,
                label: position as i32,
                class_name: CLASS_NAMES[original as usize].to_owned(),
                source: format!("{source_name}#{index}"),
                height: height as u32,
                width: width as u32,
                channels: 3,
                pixels,
            })?;
        }
        bar.finish_and_clear();
        let written = writer.finish()?;
        tracing::info!(images = written, "read Fashion-MNIST");
        let per_class: Vec<String> = classes
            .iter()
            .map(|&c| format!("{}={}", CLASS_NAMES[c as usize], taken[c as usize]))
            .collect();
        Ok(RunSummary::default()
            .line(format!("{written} images of {n} in {}", source_name))
            .line(format!("per class: {}", per_class.join(", "))))
    }
}
