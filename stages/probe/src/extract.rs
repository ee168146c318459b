//! Kind `extract`: features of layers 1-7 for every image of a set, streamed to Parquet.
//!
//! Definition (documented because the paper does not give one): layer n = 1..5 is the
//! output of conv n's block at its coarsest point — after its max pooling where the block has
//! one (layers 1, 2, 5 of the ZF net), else its rectified output (layers 3, 4); layers 6 and 7
//! are the rectified fc6 and fc7 outputs; all from the centre crop, without dropout. Each
//! layer's vector is flattened CHW.

use std::collections::BTreeMap;
use std::path::PathBuf;

use artifacts::features::{FeatureRows, FeaturesWriter};
use artifacts::images::{ImagesRangeReader, ImagesReader};
use engine::weights::load_model;
use engine::{Backend, Mode, Network, Op};
use stage_api::{
    Error, InputSpec, OutputSpec, ParamSpec, Params, Resources, Result, RunSummary, Shard,
    StageContext, StageKind,
};

pub struct Extract;

/// The op whose output is layer `n`'s feature vector (see the module docs).
pub fn layer_op<B: Backend>(network: &Network<B>, n: usize) -> Option<usize> {
    let convs: Vec<usize> = network
        .ops
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(op, Op::Conv { .. }))
        .map(|(i, _)| i)
        .collect();
    let linears: Vec<usize> = network
        .ops
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(op, Op::Linear { .. }))
        .map(|(i, _)| i)
        .collect();
    if (1..=5).contains(&n) {
        let conv = *convs.get(n - 1)?;
        let end = convs
            .get(n)
            .copied()
            .or_else(|| linears.first().copied())
            .unwrap_or(network.ops.len());
        // The block's last pool, if any, else its ReLU.
        (conv..end)
            .rev()
            .find(|&i| matches!(network.ops[i], Op::MaxPool { .. }))
            .or_else(|| matches!(network.ops.get(conv + 1), Some(Op::Relu)).then_some(conv + 1))
    } else {
        let name = format!("fc{n}");
        let linear = linears.into_iter().find(|&i| match &network.ops[i] {
            Op::Linear { param, .. } => network.params[*param].name == name,
            _ => false,
        })?;
        matches!(network.ops.get(linear + 1), Some(Op::Relu)).then_some(linear + 1)
    }
}

impl StageKind for Extract {
    fn name(&self) -> &'static str {
        "extract"
    }

    fn version(&self) -> u32 {
        // 2: the CPU backend's fixed arithmetic (the same bits on every CPU path).
        2
    }

    fn summary(&self) -> &'static str {
        "Features of layers 1-7 of a trained model for an image set, one Parquet per layer."
    }

    fn peak_memory(&self) -> &'static str {
        "The model (12 P bytes; ~20 P while loading), one batch of batch_size images, their crops (B 3 C^2 4 bytes) and forward activations (~12 MB an image for zf at 224), and per layer the batch's features (B F 4 bytes) and a ~4 MiB row group being written. Does not grow with N."
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::int_list("layers", &[1, 2, 3, 4, 5, 6, 7], 1, 7, "Layers to extract."),
            ParamSpec::int("batch_size", 128, 1, 4096, "Images per forward pass."),
            stage_api::device::device_param(),
        ]
    }

    fn inputs(&self) -> Vec<InputSpec> {
        vec![
            InputSpec::model(),
            InputSpec::artifact("images", "images preprocessed like the training set"),
        ]
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec::new(
            "features",
            "features",
            "layer<N>.parquet: features artifacts",
        )]
    }

    fn resources(&self, params: &Params) -> Resources {
        stage_api::device::device_resources(params)
    }

    fn run(&self, ctx: &StageContext) -> Result<RunSummary> {
        cuda_backend::run_stage(&ExtractRows(None), ctx)
    }

    fn shardable(&self) -> bool {
        true
    }

    fn run_shard(&self, ctx: &StageContext, shard: Shard) -> Result<RunSummary> {
        cuda_backend::run_stage(&ExtractRows(Some(shard)), ctx)
    }

    /// Each layer's rows from the shards, in order, pushed through one writer in the chunks
    /// one run pushes (`batch_size` rows, breaking at each part of the images artifact): the
    /// bytes of one run, as each image's features do not depend on its batch on the CPU.
    fn merge_shards(
        &self,
        ctx: &StageContext,
        parts: &[BTreeMap<String, PathBuf>],
    ) -> Result<RunSummary> {
        let batch = ctx.params.usize("batch_size");
        // The chunk sizes of one run: `ImagesReader` breaks at every `batch` rows of a part.
        let mut schedule = Vec::new();
        for rows in ImagesRangeReader::part_rows(ctx.input("images"))? {
            let mut left = rows;
            while left > 0 {
                schedule.push(left.min(batch));
                left -= left.min(batch);
            }
        }
        let folders: Vec<&PathBuf> = parts
            .iter()
            .map(|part| {
                part.get("features").ok_or_else(|| {
                    Error::Config(format!(
                        "a shard of `{}` lacks its features",
                        ctx.stage_name
                    ))
                })
            })
            .collect::<Result<_>>()?;
        let Some(first) = folders.first() else {
            return Err(Error::Config("no shards to merge".to_owned()));
        };
        let mut layers: Vec<String> = std::fs::read_dir(first)
            .map_err(|e| Error::io(first, e))?
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("layer") && name.ends_with(".parquet"))
            .collect();
        layers.sort();
        let folder = ctx.output("features");
        std::fs::create_dir_all(folder).map_err(|e| Error::io(folder, e))?;
        let mut count = 0;
        let mut dims = Vec::new();
        for layer in &layers {
            let stem = layer.trim_end_matches(".parquet");
            let mut writer = None;
            let mut dim = 0;
            let (mut ids, mut labels, mut values) = (Vec::new(), Vec::new(), Vec::new());
            let mut chunks = schedule.iter();
            let mut due = chunks.next().copied().unwrap_or(usize::MAX);
            let mut rows = 0;
            for folder in &folders {
                let part = FeatureRows::open(&folder.join(layer))?;
                if writer.is_none() {
                    dim = part.dim;
                    writer = Some(FeaturesWriter::create(
                        &ctx.output("features").join(layer),
                        &ctx.provenance,
                        stem,
                        dim,
                    )?);
                }
                let writer = writer.as_mut().expect("created above");
                if part.dim != dim {
                    return Err(Error::Config(format!(
                        "the shards of `{}` disagree on {stem}'s dimension",
                        ctx.stage_name
                    )));
                }
                let mut failure = None;
                part.for_each_row(
                    |_| true,
                    |row, row_values| {
                        if failure.is_some() {
                            return;
                        }
                        ids.push(part.image_ids[row]);
                        labels.push(part.labels[row]);
                        values.extend_from_slice(row_values);
                        if ids.len() == due {
                            if let Err(error) = writer.push(&ids, &labels, &values) {
                                failure = Some(error);
                            }
                            rows += ids.len();
                            ids.clear();
                            labels.clear();
                            values.clear();
                            due = chunks.next().copied().unwrap_or(usize::MAX);
                        }
                    },
                )?;
                if let Some(error) = failure {
                    return Err(error.into());
                }
            }
            if !ids.is_empty() {
                rows += ids.len();
                writer
                    .as_mut()
                    .expect("a shard was read")
                    .push(&ids, &labels, &values)?;
            }
            if let Some(writer) = writer {
                writer.finish()?;
            }
            count = rows;
            dims.push(format!("{}: {dim}", stem.trim_start_matches("layer")));
        }
        Ok(RunSummary::default().line(format!(
            "{count} images; feature dims by layer {} (merged from {} shards)",
            dims.join(", "),
            parts.len()
        )))
    }
}

/// The extraction of every image, or of one shard's slice.
struct ExtractRows(Option<Shard>);

/// The extraction, on the backend the `device` param picked.
impl cuda_backend::StageBody for ExtractRows {
    fn run_on_backend<B: Backend>(&self, ctx: &StageContext, backend: B) -> Result<RunSummary> {
        let (network, info) = load_model(ctx.input("model"), backend)?;
        let layers: Vec<usize> = ctx
            .params
            .int_list("layers")
            .iter()
            .map(|&l| l as usize)
            .collect();
        let ops: Vec<(usize, usize)> = layers
            .iter()
            .map(|&n| {
                layer_op(&network, n).map(|op| (n, op)).ok_or_else(|| {
                    Error::Config(format!(
                        "architecture `{}` has no layer {n}",
                        network.architecture.name
                    ))
                })
            })
            .collect::<Result<_>>()?;
        let folder = ctx.output("features");
        std::fs::create_dir_all(folder).map_err(|e| Error::io(folder, e))?;
        let mut writers = Vec::new();
        for &(n, op) in &ops {
            let (c, h, w) = network.shapes[op];
            writers.push(FeaturesWriter::create(
                &folder.join(format!("layer{n}.parquet")),
                &ctx.provenance,
                &format!("layer{n}"),
                c * h * w,
            )?);
        }
        let crop = network.architecture.input_size;
        let batch_size = ctx.params.usize("batch_size");
        let reader = ImagesReader::open(ctx.input("images"), batch_size)?;
        let (total, chunks): (u64, Box<dyn Iterator<Item = artifacts::Result<_>>>) = match self.0 {
            None => (reader.num_images, Box::new(reader)),
            Some(shard) => {
                let rows = shard.range(reader.num_images as usize);
                (
                    rows.len() as u64,
                    Box::new(ImagesRangeReader::open(
                        ctx.input("images"),
                        rows,
                        batch_size,
                    )?),
                )
            }
        };
        let bar = ctx.progress_bar(total, "extracting features");
        let mut count = 0;
        for chunk in chunks {
            let chunk = chunk?;
            let mut input = vec![0.0f32; chunk.len() * network.input_len()];
            for (image, out) in chunk.iter().zip(input.chunks_mut(network.input_len())) {
                if image.width as usize != info.image_size {
                    return Err(Error::input(
                        ctx.input("images"),
                        format!(
                            "image {} is {} px; the model expects {}",
                            image.image_id, image.width, info.image_size
                        ),
                    ));
                }
                info.centre_input(&image.pixels, image.width, crop, out);
            }
            let acts = network.forward(network.backend.upload_owned(input), Mode::Eval);
            let ids: Vec<i64> = chunk.iter().map(|i| i.image_id).collect();
            let labels: Vec<i32> = chunk.iter().map(|i| i.label).collect();
            for (writer, &(_, op)) in writers.iter_mut().zip(&ops) {
                writer.push(&ids, &labels, &network.backend.read(&acts.outputs[op]))?;
            }
            count += chunk.len();
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        for writer in writers {
            writer.finish()?;
        }
        let dims: Vec<String> = ops
            .iter()
            .map(|&(n, op)| {
                let (c, h, w) = network.shapes[op];
                format!("{n}: {}", c * h * w)
            })
            .collect();
        Ok(RunSummary::default().line(format!(
            "{count} images; feature dims by layer {}",
            dims.join(", ")
        )))
    }
}
