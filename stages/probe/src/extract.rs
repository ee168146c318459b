//! Kind `extract`: features of layers 1-7 for every image of a set, streamed to Parquet.
//!
//! Definition (documented because the paper does not give one): layer n = 1..5 is the
//! output of conv n's block at its coarsest point — after its max pooling where the block has
//! one (layers 1, 2, 5 of the ZF net), else its rectified output (layers 3, 4); layers 6 and 7
//! are the rectified fc6 and fc7 outputs; all from the centre crop, without dropout. Each
//! layer's vector is flattened CHW.

use artifacts::features::FeaturesWriter;
use artifacts::images::ImagesReader;
use engine::weights::load_model;
use engine::{Backend, Mode, Network, Op};
use stage_api::{
    Error, InputSpec, OutputSpec, ParamSpec, Params, Resources, Result, RunSummary, StageContext,
    StageKind,
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
        cuda_backend::run_stage(self, ctx)
    }
}

/// The extraction, on the backend the `device` param picked.
impl cuda_backend::StageBody for Extract {
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
        let reader = ImagesReader::open(ctx.input("images"), ctx.params.usize("batch_size"))?;
        let bar = ctx.progress_bar(reader.num_images, "extracting features");
        let mut count = 0;
        for chunk in reader {
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
