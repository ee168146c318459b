//! The contract between the orchestrator and the stage crates.
//!
//! A stage kind declares its params (typed, with defaults and docs), its inputs (artifacts made
//! by other stages, or dataset paths), its outputs, and a `run` function. The orchestrator
//! validates `pipeline.yaml` against these declarations and hands `run` a [`StageContext`] with
//! resolved paths. Stages do no argv/env parsing and never depend on each other.

mod context;
pub mod device;
mod error;
pub mod memory;
mod params;
pub mod sampling;

pub use context::{StageContext, UpstreamRun, human_duration, human_rate, progress_bar};
pub use error::{Error, GpuFailure, Result};
pub use params::{ParamSpec, ParamType, ParamValue, Params};

/// What kind of thing an input names in `pipeline.yaml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// One output of another stage: `stage.output`.
    Artifact,
    /// A list of outputs (`[a.metrics, b.metrics]`; a swept stage's base name expands to
    /// all its instances).
    ArtifactList,
    /// A file or folder on disk (a dataset). Relative paths are resolved against the
    /// pipeline file's folder; its content hash is part of the cache key.
    Path,
}

/// One declared input.
#[derive(Clone, Debug)]
pub struct InputSpec {
    pub name: &'static str,
    pub kind: InputKind,
    pub required: bool,
    pub doc: &'static str,
}

impl InputSpec {
    /// A required input naming another stage's output.
    pub fn artifact(name: &'static str, doc: &'static str) -> Self {
        InputSpec {
            name,
            kind: InputKind::Artifact,
            required: true,
            doc,
        }
    }

    /// An input of another stage's output that the pipeline may leave out.
    pub fn optional_artifact(name: &'static str, doc: &'static str) -> Self {
        InputSpec {
            required: false,
            ..Self::artifact(name, doc)
        }
    }

    /// A list of other stages' outputs, possibly empty.
    pub fn artifact_list(name: &'static str, doc: &'static str) -> Self {
        InputSpec {
            name,
            kind: InputKind::ArtifactList,
            required: false,
            doc,
        }
    }

    /// A required file or folder on disk.
    pub fn path(name: &'static str, doc: &'static str) -> Self {
        InputSpec {
            name,
            kind: InputKind::Path,
            required: true,
            doc,
        }
    }

    /// The trained model every analysis stage reads.
    pub fn model() -> Self {
        Self::artifact("model", "a trained model (train.model)")
    }
}

/// One declared output: a file or a folder inside the run's output directory.
#[derive(Clone, Debug)]
pub struct OutputSpec {
    pub name: &'static str,
    /// The file name the output gets on disk (`images`, `metrics.parquet`, `model.safetensors`).
    pub file_name: &'static str,
    pub doc: &'static str,
}

impl OutputSpec {
    pub fn new(name: &'static str, file_name: &'static str, doc: &'static str) -> Self {
        OutputSpec {
            name,
            file_name,
            doc,
        }
    }
}

/// Exclusive resources a run needs; the scheduler never gives one to two runs at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub gpu: bool,
}

/// One slice of a sharded run: shard `index` of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The rows of `n` this shard does: `index * n / count .. (index + 1) * n / count` (every
    /// row in exactly one shard, in order; sizes differ by at most one).
    pub fn range(&self, n: usize) -> std::ops::Range<usize> {
        let at = |i: usize| (i as u128 * n as u128 / self.count.max(1) as u128) as usize;
        at(self.index)..at(self.index + 1)
    }
}

/// What a finished run reports: lines for the user, shown after the run and kept in the
/// cache manifest.
#[derive(Clone, Debug, Default)]
pub struct RunSummary {
    pub lines: Vec<String>,
}

impl RunSummary {
    pub fn line(mut self, line: impl Into<String>) -> Self {
        self.lines.push(line.into());
        self
    }
}

/// A kind of stage (`fashion_mnist`, `preprocess`, `train`, ...).
/// The symbols of [`StageKind::peak_memory`], printed once by `zfnet kinds`.
pub const PEAK_MEMORY_LEGEND: &str = "Peak memory symbols: N input rows (images, files); S \
    stored image side (an image is S^2 3 bytes); C the network's crop side; B a batch size; K \
    classes; F a layer's feature dimension; P the model's parameters (a network holds 12 P \
    bytes: weights, gradients, momentum); A one forward pass's activations per image (~12 MB \
    for zf at 224, computed from the layer shapes, not measured). Stages run as threads of one process, so stages running at once (--jobs) \
    add up; on a GPU (device: cuda) the model and activations are in GPU memory instead.";

pub trait StageKind: Send + Sync {
    /// The name used as `kind:` in pipeline.yaml.
    fn name(&self) -> &'static str;
    /// The implementation version. Bump it when the stage's output changes for the same
    /// params and inputs: every cached run of this kind becomes stale.
    fn version(&self) -> u32;
    /// One sentence for `zfnet kinds`.
    fn summary(&self) -> &'static str;
    /// The run's peak memory as a function of its inputs and params, in the symbols of
    /// [`PEAK_MEMORY_LEGEND`], saying what bounds it and what grows with the input (`zfnet
    /// kinds` prints it). Every kind states it: the method has no default.
    fn peak_memory(&self) -> &'static str;
    fn params(&self) -> Vec<ParamSpec>;
    fn inputs(&self) -> Vec<InputSpec>;
    fn outputs(&self) -> Vec<OutputSpec>;
    /// Exclusive resources a run with these params needs.
    fn resources(&self, _params: &Params) -> Resources {
        Resources::default()
    }
    /// Checks that need several params at once; each string is one problem, reported with
    /// the stage's pipeline.yaml line.
    fn validate(&self, _params: &Params) -> Vec<String> {
        Vec::new()
    }
    /// Does the work, writing every declared output under `ctx.output(...)`.
    fn run(&self, ctx: &StageContext) -> Result<RunSummary>;
    /// Whether a run can be split into shards, each over a slice of the input's rows, whose
    /// partial outputs [`StageKind::merge_shards`] joins into exactly the bytes one `run`
    /// writes (`zfnet run --executor slurm` runs them as a Slurm array).
    fn shardable(&self) -> bool {
        false
    }
    /// Does shard `shard` of the work: the same as `run` on the rows of `shard.range(n)`,
    /// writing partial outputs under `ctx.output(...)`.
    fn run_shard(&self, _ctx: &StageContext, _shard: Shard) -> Result<RunSummary> {
        Err(Error::Config(format!(
            "stage kind `{}` cannot run in shards",
            self.name()
        )))
    }
    /// Joins the shards' partial outputs (`parts[i]`: output name -> path, shard i's) into
    /// `ctx.output(...)`: byte for byte what `run` writes.
    fn merge_shards(
        &self,
        _ctx: &StageContext,
        _parts: &[std::collections::BTreeMap<String, std::path::PathBuf>],
    ) -> Result<RunSummary> {
        Err(Error::Config(format!(
            "stage kind `{}` cannot merge shards",
            self.name()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::Shard;

    /// Every row falls in exactly one shard, in order, and the shards' sizes differ by at most
    /// one — for any row count, including fewer rows than shards.
    #[test]
    fn shards_cover_every_row_once_in_order() {
        for n in [0usize, 1, 2, 7, 100, 1_281_167] {
            for count in [1usize, 2, 3, 8, 64] {
                let ranges: Vec<_> = (0..count)
                    .map(|index| Shard { index, count }.range(n))
                    .collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[count - 1].end, n);
                for pair in ranges.windows(2) {
                    assert_eq!(pair[0].end, pair[1].start, "n {n}, count {count}");
                }
                let sizes: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
                let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(max - min <= 1, "n {n}, count {count}: {sizes:?}");
            }
        }
    }
}
