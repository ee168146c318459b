//! Stage kind `train` (§3): trains a named architecture on a preprocessed training set,
//! validates every epoch on the centre crop, evaluates the final model with the 10-crop
//! average, and keeps the per-epoch weights Fig. 4 needs.

use std::sync::Arc;

use stage_api::device::Device;

use artifacts::tensors::read_tensors;
use engine::weights::{ModelInfo, save_model};
use engine::{Architecture, Backend};
use stage_api::{
    Error, InputSpec, OutputSpec, ParamSpec, Params, Resources, Result, RunSummary, StageContext,
    StageKind,
};

use training::{
    Crops, EpochMetrics, Holding, ImageSet, LrSchedule, Progress, TrainConfig, TrainingCrops,
    epoch_file, evaluate_set, train,
};

use artifacts::table::TableRow;
use artifacts::table::rows::{EvaluationRow, RemovalRow, TrainMetricsRow};

pub fn kinds() -> Vec<Arc<dyn StageKind>> {
    vec![Arc::new(Train)]
}

pub struct Train;

impl Train {
    /// The training config a set of validated params describes.
    pub fn config(params: &Params) -> TrainConfig {
        let schedule = match params.str("lr_schedule") {
            "manual" => LrSchedule::Manual {
                epochs: params
                    .int_list("lr_steps")
                    .iter()
                    .map(|&e| e as usize)
                    .collect(),
                factor: params.float("lr_factor"),
            },
            _ => LrSchedule::Plateau {
                patience: params.usize("plateau_patience"),
                factor: params.float("lr_factor"),
            },
        };
        TrainConfig {
            architecture: params.str("arch").to_owned(),
            layers: params.str_list("layers"),
            crops: match params.str("crops") {
                "random" => TrainingCrops::Random,
                _ => TrainingCrops::Ten,
            },
            epochs: params.usize("epochs"),
            batch_size: params.usize("batch_size"),
            learning_rate: params.float("learning_rate"),
            momentum: params.float("momentum"),
            weight_decay: params.float("weight_decay"),
            init_std: params.float("init_std"),
            filter_rms_radius: params.float("filter_rms_radius"),
            schedule,
            seed: params.int("seed") as u64,
            checkpoint_epochs: params
                .int_list("checkpoint_epochs")
                .iter()
                .map(|&e| e as usize)
                .collect(),
        }
    }
}

impl StageKind for Train {
    fn name(&self) -> &'static str {
        "train"
    }

    fn version(&self) -> u32 {
        // 2: the CPU backend's fixed arithmetic (the same bits on every CPU path).
        // 3: `crops` (the paper's ten sub-crops by default), `layers`, weight decay 0 by
        // default (the paper states none).
        // 4: memory_limit_mb covers the model and a batch's activations (a set near the
        // budget may now be streamed); `stream_images`.
        4
    }

    fn summary(&self) -> &'static str {
        "Trains a ZF-family network with SGD + momentum, dropout and filter RMS renormalisation (§3)."
    }

    fn peak_memory(&self) -> &'static str {
        "On the CPU the model (12 P bytes: weights, gradients, momentum) and one batch's activations (B times what the forward pass keeps and two gradients, from the layer shapes: 21 MB an image for zf at 224) come first; the training images are held whole when N S^2 3 bytes fit what memory_limit_mb leaves (validation gets what is left after them), else streamed with shuffle_buffer images and a few row groups. A run whose network and shuffle buffers pass the budget is refused before any image is read. Outside the budget: N_val K 4 bytes of validation probabilities, a growing buffer, the copy `exclude` makes, the next batch being prepared, and per-thread temporaries."
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::string(
                "arch",
                "zf",
                "Architecture: zf, krizhevsky, zf_56, krizhevsky_56, zf_small, krizhevsky_small, or a Table 3 variant (see ARCHITECTURE.md); with `layers`, the name of the declared architecture.",
            ),
            ParamSpec::str_list(
                "layers",
                &[],
                "Declare the architecture instead of naming a built-in one, one layer per entry: `input 56`, `conv conv1 48 7x7/2 pad 1`, `relu`, `lrn`, `pool 3x3/2`, `dropout 0.5`, `fc fc6 512` (the classifier is appended).",
            ),
            ParamSpec::choice(
                "crops",
                "ten",
                &["ten", "random"],
                "Training crops: the paper's ten sub-crops (corners + centre, with and without flips; §3) or uniformly random crops with random flips (Krizhevsky et al.).",
            ),
            ParamSpec::int("epochs", 70, 1, 10_000, "Epochs to train (paper: 70)."),
            ParamSpec::int(
                "batch_size",
                128,
                1,
                65_536,
                "Mini-batch size (paper: 128).",
            ),
            ParamSpec::float(
                "learning_rate",
                0.01,
                0.0,
                10.0,
                "Initial learning rate (paper: 1e-2).",
            ),
            ParamSpec::float("momentum", 0.9, 0.0, 1.0, "Momentum (paper: 0.9)."),
            ParamSpec::float(
                "weight_decay",
                0.0,
                0.0,
                1.0,
                "L2 weight decay (the paper states none; Krizhevsky et al. used 5e-4).",
            ),
            ParamSpec::float(
                "init_std",
                0.01,
                0.0,
                10.0,
                "Std of the initial weights (paper: 1e-2).",
            ),
            ParamSpec::float(
                "filter_rms_radius",
                0.1,
                0.0,
                100.0,
                "Conv filters with a larger RMS are renormalised to it (paper: 0.1); 0 turns it off.",
            ),
            ParamSpec::choice(
                "lr_schedule",
                "plateau",
                &["plateau", "manual"],
                "Anneal when validation error plateaus, or at the listed epochs.",
            ),
            ParamSpec::int(
                "plateau_patience",
                2,
                1,
                1000,
                "Epochs without improvement before annealing.",
            ),
            ParamSpec::int_list(
                "lr_steps",
                &[],
                1,
                10_000,
                "Epochs (1-based) at which a manual schedule anneals.",
            ),
            ParamSpec::float(
                "lr_factor",
                0.1,
                0.0,
                1.0,
                "Annealing multiplies the rate by this.",
            ),
            ParamSpec::int_list(
                "checkpoint_epochs",
                &[1, 2, 5, 10, 20, 30, 40, 64],
                1,
                10_000,
                "Epochs whose weights are kept (Fig. 4's epochs by default).",
            ),
            ParamSpec::int(
                "seed",
                0,
                0,
                i64::MAX,
                "Seed of initialisation, shuffles, crops, dropout.",
            ),
            ParamSpec::int(
                "memory_limit_mb",
                16_384,
                1,
                i64::MAX,
                "One budget for the training and validation sets and, on the CPU, the model and \
                 one batch's activations: the sets get what the network leaves (the validation \
                 set what the training set leaves of that); a set whose pixels exceed its share is \
                 streamed from its artifact (row groups in a seeded random order through a \
                 shuffle buffer) instead of held in memory: ImageNet at 256x256 is 252 GB. A run \
                 whose network and shuffle buffers pass it is refused before reading any image.",
            ),
            ParamSpec::bool(
                "stream_images",
                false,
                "Stream both sets from their artifacts even when they fit memory_limit_mb (the \
                 path ImageNet takes, to try it on small data).",
            ),
            ParamSpec::int(
                "shuffle_buffer",
                16_384,
                1,
                i64::MAX,
                "Images a streamed set draws its batches from (16,384 at 256x256 is 3.2 GB).",
            ),
            stage_api::device::device_param(),
        ]
    }

    fn inputs(&self) -> Vec<InputSpec> {
        vec![
            InputSpec::artifact("train", "preprocessed training images (SxS)"),
            InputSpec::artifact("val", "preprocessed validation images (SxS)"),
            InputSpec::artifact(
                "mean",
                "the per-pixel mean of the training images (mean_image)",
            ),
            InputSpec::artifact_list(
                "exclude",
                "removal manifests (dedup.removal), one per target set: training images to leave out (§5.2)",
            ),
        ]
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![
            OutputSpec::new(
                "model",
                "model.safetensors",
                "final weights, input mean, architecture and class names",
            ),
            OutputSpec::new(
                "checkpoints",
                "checkpoints",
                "epoch_NNN.safetensors for each kept epoch (Fig. 4)",
            ),
            OutputSpec::new(
                "metrics",
                "metrics.parquet",
                "per epoch: losses, errors, learning rate, seconds",
            ),
            OutputSpec::new(
                "evaluation",
                "evaluation.parquet",
                "final validation errors, centre crop and 10-crop average",
            ),
        ]
    }

    fn resources(&self, params: &Params) -> Resources {
        stage_api::device::device_resources(params)
    }

    fn validate(&self, params: &Params) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(error) = Architecture::resolve(params.str("arch"), &params.str_list("layers"), 2)
        {
            problems.push(error.to_string());
        }
        if params.str("lr_schedule") == "manual" && params.int_list("lr_steps").is_empty() {
            problems.push("`lr_schedule: manual` needs `lr_steps`".to_owned());
        }
        problems
    }

    fn run(&self, ctx: &StageContext) -> Result<RunSummary> {
        let config = Train::config(&ctx.params);
        let memory_limit = (ctx.params.int("memory_limit_mb") as u64).saturating_mul(1_000_000);
        let shuffle_buffer = ctx.params.int("shuffle_buffer") as usize;
        let (mut train_store, val_store) = open_under_budget(
            ctx,
            &config,
            memory_limit,
            shuffle_buffer,
            !stage_api::device::wants_gpu(&ctx.params),
        )?;
        let mut ids = std::collections::BTreeSet::new();
        for path in ctx.input_list("exclude") {
            ids.extend(RemovalRow::read(path)?.iter().map(|row| row.image_id));
        }
        let excluded = train_store.exclude(&ids);
        let mean_path = ctx.input("mean");
        let mean_file = read_tensors(mean_path)?;
        let mean = mean_file.get("mean", mean_path)?;
        let image_size = train_store.image_size();
        if mean.values.len() != image_size * image_size * 3 {
            return Err(Error::input(
                mean_path,
                format!(
                    "the mean image has shape {:?} but the training images are {}x{}x3",
                    mean.shape, image_size, image_size
                ),
            ));
        }
        let task = TrainTask {
            ctx,
            config,
            train_store,
            val_store,
            mean: mean.values.clone(),
            excluded,
        };
        cuda_backend::run_on(Device::of(&ctx.params)?, task)
            .map_err(|e| Error::Config(e.to_string()))?
    }
}

/// The model and one batch's activations on the CPU (on a GPU they are in its memory): what
/// `memory_limit_mb` holds besides the images, for a `classes`-way classifier.
fn network_bytes(config: &TrainConfig, classes: usize) -> Result<(u64, u64)> {
    let architecture = Architecture::resolve(&config.architecture, &config.layers, classes)
        .map_err(|e| Error::Config(e.to_string()))?;
    let plan = engine::Plan::of(&architecture);
    Ok((
        plan.model_bytes(),
        (config.batch_size as u64).saturating_mul(plan.training_bytes_per_image()),
    ))
}

/// A set's size as its artifact's rows say (no pixel is read): images, bytes an image, and
/// the classes its labels name.
struct SetShape {
    images: u64,
    image_bytes: u64,
    classes: usize,
}

impl SetShape {
    fn of(path: &std::path::Path) -> Result<SetShape> {
        let metadata = artifacts::images::ImageGroups::open(path)?.metadata()?;
        let rows = metadata.iter().flatten();
        Ok(SetShape {
            images: metadata.iter().map(|group| group.len() as u64).sum(),
            image_bytes: rows
                .clone()
                .map(|m| m.height as u64 * m.width as u64 * m.channels as u64)
                .max()
                .unwrap_or(0),
            classes: rows.map(|m| m.label.max(0) as usize + 1).max().unwrap_or(0),
        })
    }

    fn pixels(&self) -> u64 {
        self.images.saturating_mul(self.image_bytes)
    }

    /// What the set holds streamed: its shuffle buffer, at most the set.
    fn buffer(&self, shuffle_buffer: usize) -> u64 {
        self.images
            .min(shuffle_buffer as u64)
            .saturating_mul(self.image_bytes)
    }
}

/// Opens the training and validation sets under `memory_limit` bytes together with the
/// network (on the CPU). The sizes come from the artifacts' rows first (the classes too, and
/// with them the classifier), then each set is held whole or streamed once: the training set
/// held only where the validation set's least (its buffer, or itself) still fits beside it,
/// the validation set held where it fits in what is left. A run whose network and least
/// holdings pass the budget is refused before any pixel is read.
fn open_under_budget(
    ctx: &StageContext,
    config: &TrainConfig,
    memory_limit: u64,
    shuffle_buffer: usize,
    on_cpu: bool,
) -> Result<(ImageSet, ImageSet)> {
    const MB: f64 = 1e6;
    let (train_shape, val_shape) = (
        SetShape::of(ctx.input("train"))?,
        SetShape::of(ctx.input("val"))?,
    );
    let classes = train_shape.classes.max(val_shape.classes).max(2);
    let (model, batch) = if on_cpu {
        network_bytes(config, classes)?
    } else {
        (0, 0)
    };
    let left = memory_limit.saturating_sub(model + batch);
    let stream = ctx.params.bool("stream_images");
    let least = |shape: &SetShape| shape.buffer(shuffle_buffer).min(shape.pixels());
    let (train_least, val_least) = (least(&train_shape), least(&val_shape));
    if model + batch + train_least + val_least > memory_limit {
        return Err(Error::Config(format!(
            "memory_limit_mb is {:.0}, but the model ({:.0} MB: weights, gradients and \
             momentum) and one batch's activations ({:.0} MB for batch_size {}, computed from \
             the layer shapes) on the CPU, with the least the two sets can hold ({:.0} MB: \
             shuffle buffers of {shuffle_buffer} images, or a smaller set whole), need {:.0} \
             MB: raise memory_limit_mb, or lower batch_size or shuffle_buffer",
            memory_limit as f64 / MB,
            model as f64 / MB,
            batch as f64 / MB,
            config.batch_size,
            (train_least + val_least) as f64 / MB,
            (model + batch + train_least + val_least) as f64 / MB
        )));
    }
    let hold_train = !stream && train_shape.pixels().saturating_add(val_least) <= left;
    let train_holds = if hold_train {
        train_shape.pixels()
    } else {
        train_shape.buffer(shuffle_buffer)
    };
    let hold_val = !stream && val_shape.pixels() <= left.saturating_sub(train_holds);
    let holding = |hold: bool| {
        if hold {
            Holding::Whole
        } else {
            Holding::Streamed { shuffle_buffer }
        }
    };
    Ok((
        ImageSet::open(ctx.input("train"), holding(hold_train))?,
        ImageSet::open(ctx.input("val"), holding(hold_val))?,
    ))
}

/// The training proper, on whichever backend the `device` param picked.
struct TrainTask<'a> {
    ctx: &'a StageContext,
    config: TrainConfig,
    train_store: ImageSet,
    val_store: ImageSet,
    mean: Vec<f32>,
    excluded: usize,
}

impl cuda_backend::BackendTask for TrainTask<'_> {
    type Output = Result<RunSummary>;

    fn run<B: Backend>(self, backend: B) -> Result<RunSummary> {
        let TrainTask {
            ctx,
            config,
            train_store,
            val_store,
            mean,
            excluded,
        } = self;
        // One bar over every training image of every epoch: its rate is images/s, its ETA the
        // stage's; the message gives the epoch, the running loss and the epoch's own ETA.
        let epoch_images = train_store.len() as u64;
        let bar = ctx.progress_bar(config.epochs as u64 * epoch_images, "training");
        let started = std::time::Instant::now();
        let mut rate_started = false;
        let mut report = |progress: Progress| {
            let m = match progress {
                Progress::Step {
                    epoch,
                    images_done,
                    epoch_images,
                    running_loss,
                } => {
                    let done = (epoch as u64 - 1) * epoch_images as u64 + images_done as u64;
                    bar.set_position(done);
                    if !rate_started {
                        // A resumed run starts past 0: that jump is not work done now.
                        bar.reset_eta();
                        rate_started = true;
                    }
                    let rate = bar.per_sec();
                    let epoch_eta = if rate > 0.0 {
                        stage_api::human_duration(
                            (epoch_images - images_done.min(epoch_images)) as f64 / rate,
                        )
                    } else {
                        "?".to_owned()
                    };
                    bar.set_message(format!(
                        "{}: epoch {epoch}/{}, loss {running_loss:.3}, epoch eta {epoch_eta}",
                        ctx.stage_name, config.epochs
                    ));
                    return;
                }
                Progress::Epoch(m) => m,
            };
            tracing::info!(
                epoch = m.epoch,
                train_loss = m.train_loss,
                val_top1_error = m.val_top1_error,
                lr = m.learning_rate,
                seconds = m.seconds,
                "epoch done"
            );
        };
        let trained = train(
            backend,
            &config,
            &train_store,
            &val_store,
            &mean,
            &ctx.resume_dir,
            config.epochs,
            &mut report,
        )?;
        bar.finish_and_clear();

        let centre = evaluate_set(
            &trained.network,
            &val_store,
            &mean,
            Crops::Centre,
            config.batch_size,
        )?;
        let ten = evaluate_set(
            &trained.network,
            &val_store,
            &mean,
            Crops::Ten,
            config.batch_size,
        )?;
        let info = ModelInfo {
            architecture: trained.network.architecture.clone(),
            image_size: train_store.image_size(),
            class_names: train_store.class_names().to_vec(),
            mean: mean.clone(),
        };
        save_model(
            ctx.output("model"),
            &trained.network,
            &info,
            &ctx.provenance,
        )?;
        let checkpoints = ctx.output("checkpoints");
        std::fs::create_dir_all(checkpoints).map_err(|e| Error::io(checkpoints, e))?;
        for (epoch, path) in &trained.epoch_files {
            let target = epoch_file(checkpoints, *epoch);
            std::fs::copy(path, &target).map_err(|e| Error::io(&target, e))?;
        }
        TrainMetricsRow::write(
            &metrics_rows(&trained.metrics),
            ctx.output("metrics"),
            &ctx.provenance,
        )?;
        let evaluation_row = |crops: &str, e: &training::Evaluation| EvaluationRow {
            split: "val".into(),
            crops: crops.into(),
            n_images: e.n_images as i64,
            top1_error: e.top1_error,
            top5_error: e.top5_error,
            loss: e.loss,
        };
        EvaluationRow::write(
            &[
                evaluation_row("centre", &centre),
                evaluation_row("ten", &ten),
            ],
            ctx.output("evaluation"),
            &ctx.provenance,
        )?;
        let last = trained.metrics.last();
        let mut summary = RunSummary::default();
        if excluded > 0 {
            summary = summary.line(format!(
                "left out {excluded} training images listed by the removal manifest (overlap with the target set)"
            ));
        }
        if let ImageSet::Streamed(streamed) = &train_store {
            summary = summary.line(format!(
                "streamed the training images from their artifact (over `memory_limit_mb`'s \
                 share, or `stream_images`), \
                 batches drawn from a shuffle buffer of {} images",
                streamed.shuffle_buffer
            ));
        }
        if let Some(epochs) = trained.resumed_after {
            summary = summary.line(format!(
                "resumed after epoch {epochs} from an interrupted run"
            ));
        }
        Ok(summary
            .line(format!(
                "{} epochs of `{}` on {} images ({} classes) in {:.0}s",
                trained.metrics.len(),
                config.architecture,
                train_store.len(),
                train_store.class_names().len(),
                started.elapsed().as_secs_f64()
            ))
            .line(format!(
                "val top-1 error: centre crop {:.2}%, 10-crop {:.2}% (accuracy {:.2}%); train top-1 error {:.2}%",
                100.0 * centre.top1_error,
                100.0 * ten.top1_error,
                100.0 * (1.0 - ten.top1_error),
                100.0 * last.map_or(f64::NAN, |m| m.train_top1_error)
            )))
    }
}

/// The metrics artifact's rows, one per epoch.
pub fn metrics_rows(metrics: &[EpochMetrics]) -> Vec<TrainMetricsRow> {
    metrics
        .iter()
        .map(|m| TrainMetricsRow {
            epoch: m.epoch as i64,
            train_loss: m.train_loss,
            train_top1_error: m.train_top1_error,
            val_loss: m.val_loss,
            val_top1_error: m.val_top1_error,
            val_top5_error: m.val_top5_error,
            learning_rate: m.learning_rate,
            filters_renormalised: m.filters_renormalised as i64,
            seconds: m.seconds,
        })
        .collect()
}
