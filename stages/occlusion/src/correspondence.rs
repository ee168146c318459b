//! Stage kind `correspondence` (§4.3, Table 1, Fig. 8): does the network implicitly relate the
//! same object part across images?
//!
//! For a set of aligned images of one class, the same part is masked in each (a rectangle
//! from the annotation file, filled with the mean pixel: 0 after mean subtraction), and, as a
//! control, random rectangles of the same size. For image i at layer l, eps_i = x_i - x~_i
//! (original minus masked feature vector); the consistency of a mask is
//! Delta_l = sum over pairs i != j of H(sign(eps_i), sign(eps_j)), H the Hamming distance.
//! Reported as the paper does, as the mean feature sign change: H divided by the vector length,
//! averaged over the pairs (± its std over pairs; for random masks over pairs and draws).
//! Lower means tighter correspondence. Layer 5 is the rectified conv5 output, layer 7 the
//! rectified fc7 output.

use std::collections::BTreeMap;
use std::path::Path;

use artifacts::images::{ImageRecord, ImagesReader};
use artifacts::table::TableRow;
use artifacts::table::rows::CorrespondenceRow;
use engine::deconv::feature_op;
use engine::weights::{ModelInfo, load_model};
use engine::{Backend, Mode, Network, Op};
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stage_api::memory::MemoryNeed;
use stage_api::{
    Error, InputSpec, OutputSpec, ParamSpec, Params, Resources, Result, RunSummary, StageContext,
    StageKind,
};

pub struct Correspondence;

/// A rectangle in input-crop pixels: (top, left, height, width).
type Rect = (usize, usize, usize, usize);
/// A named set of rectangles, one per image.
type MaskSet = (String, Vec<Rect>);

/// One annotated rectangle, in the images' (preprocessed) pixel coordinates.
#[derive(Clone, Debug, PartialEq)]
pub struct PartMask {
    pub image_id: i64,
    pub part: String,
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

/// Reads `image_id,part,top,left,height,width` lines (`#` comments and a header allowed),
/// naming the line of any problem. A file with no rows is valid: a template the user has not
/// filled in yet (the stage then says Table 1 was not computed).
pub fn read_part_masks(path: &Path) -> Result<Vec<PartMask>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut masks = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("image_id") {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad = || {
            Error::input(
                path,
                format!(
                    "line {}: expected image_id,part,top,left,height,width (`{line}`)",
                    number + 1
                ),
            )
        };
        if fields.len() != 6 {
            return Err(bad());
        }
        let n = |i: usize| fields[i].parse::<usize>().map_err(|_| bad());
        masks.push(PartMask {
            image_id: fields[0].parse().map_err(|_| bad())?,
            part: fields[1].to_owned(),
            top: n(2)?,
            left: n(3)?,
            height: n(4)?,
            width: n(5)?,
        });
    }
    Ok(masks)
}

impl StageKind for Correspondence {
    fn name(&self) -> &'static str {
        "correspondence"
    }

    fn version(&self) -> u32 {
        // 2: the CPU backend's fixed arithmetic (the same bits on every CPU path).
        // 3: `std` is the sample standard deviation over pairs (the report's one `±`).
        // 4: `parts_image_size` scales the rectangles to the images.
        // 5: Fig. 8's columns are named; tiles at least 168 px (224-px crops no longer 3x).
        5
    }

    fn summary(&self) -> &'static str {
        "Mean feature sign change at layers 5 and 7 for masked object parts vs random masks (Table 1, Fig. 8)."
    }

    fn peak_memory(&self) -> &'static str {
        "The model (12 P bytes); the n annotated images (n S^2 3 bytes), their inputs and one masked copy (2 n 3 C^2 4 bytes), their layer-5 and fc7 features original and masked (2 n (F5 + F7) 4 bytes), one forward of batch_size images (B A bytes) and 2 parts (1 + random_draws) n (n - 1) / 2 f64 distances. Computed from the annotation file and the model before any image is read, and checked against memory_limit_mb (a run over it is refused, with its parts); grows with n, the images in the annotation file, not with the image artifact."
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::int(
                "random_draws",
                10,
                1,
                1000,
                "Random-mask draws per part size.",
            ),
            ParamSpec::int("seed", 0, 0, i64::MAX, "Seed of the random masks."),
            ParamSpec::int(
                "parts_image_size",
                0,
                0,
                1 << 16,
                "Side of the images the part rectangles were drawn on (0: the images' own size); the rectangles are scaled to the images' size.",
            ),
            ParamSpec::int(
                "batch_size",
                64,
                1,
                4096,
                "Images per forward pass (the same features for any batch).",
            ),
            ParamSpec::int(
                "memory_limit_mb",
                16_384,
                1,
                i64::MAX,
                "The most the run may hold: its need (the n annotated images and their inputs, \
                 their layer-5 and fc7 features, one batch's activations, the distances over \
                 pairs) is computed from the annotation file and the model before any image is \
                 read; a run over it is refused with its parts.",
            ),
            stage_api::device::device_param(),
        ]
    }

    fn inputs(&self) -> Vec<InputSpec> {
        vec![
            InputSpec::model(),
            InputSpec::artifact(
                "images",
                "images holding the annotated ids, preprocessed like the training set",
            ),
            InputSpec::path(
                "parts",
                "CSV of part rectangles: image_id,part,top,left,height,width",
            ),
        ]
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![
            OutputSpec::new("table1", "table1.parquet", "layer, mask, mean, std, pairs"),
            OutputSpec::new(
                "figures",
                "figures",
                "masked.png: each image with each part masked (Fig. 8)",
            ),
        ]
    }

    fn resources(&self, params: &Params) -> Resources {
        stage_api::device::device_resources(params)
    }

    fn run(&self, ctx: &StageContext) -> Result<RunSummary> {
        cuda_backend::run_stage(self, ctx)
    }
}

/// The correspondence analysis, on the backend the `device` param picked.
impl cuda_backend::StageBody for Correspondence {
    fn run_on_backend<B: Backend>(&self, ctx: &StageContext, backend: B) -> Result<RunSummary> {
        let (network, info) = load_model(ctx.input("model"), backend)?;
        let masks = read_part_masks(ctx.input("parts"))?;
        if masks.is_empty() {
            // Nothing annotated (the paper's own annotations were not published): an empty
            // table and no figure, which the report shows as not computed.
            return not_annotated(ctx);
        }
        // The annotated images in the order the file first names them.
        let mut seen = std::collections::BTreeSet::new();
        let ids: Vec<i64> = masks
            .iter()
            .map(|m| m.image_id)
            .filter(|id| seen.insert(*id))
            .collect();
        correspondence_need(ctx, &network, &info, &masks, ids.len())?.check(
            (ctx.params.int("memory_limit_mb") as u64).saturating_mul(1_000_000),
            "annotate fewer images or lower random_draws or batch_size",
        )?;
        let images = find_images(ctx.input("images"), &ids)?;
        let crop = network.architecture.input_size;
        let offset = (info.image_size - crop) / 2;
        let drawn_on = match ctx.params.usize("parts_image_size") {
            0 => info.image_size,
            n => n,
        };
        // Rectangles drawn on `drawn_on`-pixel images, in the images' pixels.
        let scale = |v: usize| (v * info.image_size + drawn_on / 2) / drawn_on;
        let layers = [
            (
                5usize,
                feature_op(&network, 5).ok_or_else(|| {
                    Error::Config(format!(
                        "architecture `{}` has no fifth conv layer followed by a ReLU: layer 5 \
                         needs it",
                        network.architecture.name
                    ))
                })?,
            ),
            (
                7,
                fc7(&network).ok_or_else(|| Error::Config("the architecture has no fc7".into()))?,
            ),
        ];
        let mut parts: Vec<String> = masks.iter().map(|m| m.part.clone()).collect();
        parts.sort();
        parts.dedup();
        // Mask sets: each part (one rectangle per image), then random draws.
        let mut sets: Vec<MaskSet> = Vec::new();
        for part in &parts {
            let mut rects = Vec::new();
            for id in &ids {
                let mask = masks
                    .iter()
                    .find(|m| &m.image_id == id && &m.part == part)
                    .ok_or_else(|| {
                        Error::input(
                            ctx.input("parts"),
                            format!(
                                "image {id} has no `{part}` rectangle; every image needs every part"
                            ),
                        )
                    })?;
                let top = scale(mask.top).saturating_sub(offset);
                let left = scale(mask.left).saturating_sub(offset);
                rects.push((
                    top.min(crop - 1),
                    left.min(crop - 1),
                    scale(mask.height).max(1),
                    scale(mask.width).max(1),
                ));
            }
            sets.push((part.clone(), rects));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(ctx.params.int("seed") as u64);
        for (_, rects) in sets.clone().iter() {
            for _ in 0..ctx.params.usize("random_draws") {
                let random = rects
                    .iter()
                    .map(|&(_, _, h, w)| {
                        let (h, w) = (h.min(crop), w.min(crop));
                        (
                            rng.random_range(0..=crop - h),
                            rng.random_range(0..=crop - w),
                            h,
                            w,
                        )
                    })
                    .collect();
                sets.push(("random".to_owned(), random));
            }
        }
        let inputs: Vec<Vec<f32>> = images
            .iter()
            .map(|image| {
                let mut out = vec![0.0; 3 * crop * crop];
                info.centre_input(&image.pixels, image.width, crop, &mut out);
                out
            })
            .collect();
        let batch_size = ctx.params.usize("batch_size");
        let originals = features(&network, &inputs, &layers, batch_size);
        // (layer, mask) -> normalised Hamming distances over pairs (and draws).
        let mut distances: BTreeMap<(usize, String), Vec<f64>> = BTreeMap::new();
        for (name, rects) in &sets {
            let masked: Vec<Vec<f32>> = inputs
                .iter()
                .zip(rects)
                .map(|(x, &r)| masked(x, crop, r))
                .collect();
            let after = features(&network, &masked, &layers, batch_size);
            for (k, (layer, _)) in layers.iter().enumerate() {
                let signs: Vec<Vec<i8>> = (0..images.len())
                    .map(|i| {
                        originals[k][i]
                            .iter()
                            .zip(&after[k][i])
                            .map(|(a, b)| sign(a - b))
                            .collect()
                    })
                    .collect();
                let list = distances.entry((*layer, name.clone())).or_default();
                for i in 0..signs.len() {
                    for j in i + 1..signs.len() {
                        let differ = signs[i]
                            .iter()
                            .zip(&signs[j])
                            .filter(|(a, b)| a != b)
                            .count();
                        list.push(differ as f64 / signs[i].len() as f64);
                    }
                }
            }
        }
        let mut table = Vec::new();
        let mut lines = Vec::new();
        for ((layer, name), values) in &distances {
            let summary = stats::Summary::of(values).expect("at least one pair");
            let (mean, std) = (summary.mean, summary.std.unwrap_or(0.0));
            table.push(CorrespondenceRow {
                layer: *layer as i64,
                mask: name.clone(),
                mean,
                std,
                pairs: values.len() as i64,
            });
            lines.push(format!("layer {layer} {name}: {mean:.3} ± {std:.3}"));
        }
        CorrespondenceRow::write(&table, ctx.output("table1"), &ctx.provenance)?;
        let figures = ctx.output("figures");
        std::fs::create_dir_all(figures).map_err(|e| Error::io(figures, e))?;
        figure(
            &images,
            &sets[..parts.len()],
            crop,
            &figures.join("masked.png"),
        )?;
        Ok(RunSummary { lines })
    }
}

/// What a run holds at its peak, from the annotation file and the model: the images, their
/// inputs and a masked copy, the features original and masked, a batch's activations (on the
/// CPU), the model (on the CPU) and every distance.
fn correspondence_need<B: Backend>(
    ctx: &StageContext,
    network: &Network<B>,
    info: &ModelInfo,
    masks: &[PartMask],
    n: usize,
) -> Result<MemoryNeed> {
    let n64 = n as u64;
    let mut part_names: Vec<&str> = masks.iter().map(|m| m.part.as_str()).collect();
    part_names.sort_unstable();
    part_names.dedup();
    let sets = part_names.len() as u64 * (1 + ctx.params.int("random_draws") as u64);
    let plan = engine::Plan::of(&network.architecture);
    let size = |op: Option<usize>| {
        op.map_or(0, |op| {
            let (c, h, w) = network.shapes[op];
            (c * h * w) as u64
        })
    };
    let feature_values = size(feature_op(network, 5)) + size(fc7(network));
    let image_bytes = (info.image_size * info.image_size * 3) as u64;
    let batch = (ctx.params.usize("batch_size").min(n.max(1))) as u64;
    let mut need = MemoryNeed::default()
        .part(format!("{n} images"), n64 * image_bytes)
        .part(
            "their inputs and a masked copy",
            2 * n64 * network.input_len() as u64 * 4,
        )
        .part(
            "their layer-5 and fc7 features, original and masked",
            2 * n64 * feature_values * 4,
        )
        .part(
            format!("{} (layer, mask) distances", 2 * sets),
            2 * sets * (n64 * n64.saturating_sub(1) / 2) * 8,
        );
    if !stage_api::device::wants_gpu(&ctx.params) {
        need = need.part("the model", plan.model_bytes()).part(
            format!("a forward pass of {batch} images"),
            batch * plan.training_bytes_per_image(),
        );
    }
    Ok(need)
}

/// The outputs of a run whose part file names no rectangle: an empty `table1` and an empty
/// figures folder.
fn not_annotated(ctx: &StageContext) -> Result<RunSummary> {
    CorrespondenceRow::write(&[], ctx.output("table1"), &ctx.provenance)?;
    let figures = ctx.output("figures");
    std::fs::create_dir_all(figures).map_err(|e| Error::io(figures, e))?;
    Ok(RunSummary::default().line(format!(
        "{} names no part rectangle: Table 1 and Fig. 8 not computed (annotate images there: \
         image_id,part,top,left,height,width)",
        ctx.input("parts").display()
    )))
}

fn sign(v: f32) -> i8 {
    if v > 0.0 {
        1
    } else if v < 0.0 {
        -1
    } else {
        0
    }
}

fn fc7<B: Backend>(network: &Network<B>) -> Option<usize> {
    let linear = network.ops.iter().position(
        |op| matches!(op, Op::Linear { param, .. } if network.params[*param].name == "fc7"),
    )?;
    matches!(network.ops.get(linear + 1), Some(Op::Relu)).then_some(linear + 1)
}

fn masked(input: &[f32], crop: usize, (top, left, h, w): Rect) -> Vec<f32> {
    let mut out = input.to_vec();
    for c in 0..3 {
        for y in top..(top + h).min(crop) {
            for x in left..(left + w).min(crop) {
                out[c * crop * crop + y * crop + x] = 0.0;
            }
        }
    }
    out
}

/// Per layer, per image: the feature vector. The images go through the network `batch_size`
/// at a time (an image's features do not depend on its batch).
fn features<B: Backend>(
    network: &Network<B>,
    inputs: &[Vec<f32>],
    layers: &[(usize, usize)],
    batch_size: usize,
) -> Vec<Vec<Vec<f32>>> {
    let mut per_layer: Vec<Vec<Vec<f32>>> = vec![Vec::with_capacity(inputs.len()); layers.len()];
    for batch in inputs.chunks(batch_size.max(1)) {
        let acts = network.forward(network.backend.upload_owned(batch.concat()), Mode::Eval);
        for (&(_, op), out) in layers.iter().zip(&mut per_layer) {
            let all = network.backend.read(&acts.outputs[op]);
            let len = all.len() / batch.len();
            out.extend(all.chunks(len).map(<[f32]>::to_vec));
        }
    }
    per_layer
}

fn find_images(path: &Path, ids: &[i64]) -> Result<Vec<ImageRecord>> {
    let wanted: std::collections::BTreeSet<i64> = ids.iter().copied().collect();
    let mut found: BTreeMap<i64, ImageRecord> = BTreeMap::new();
    for chunk in ImagesReader::open(path, 1024)? {
        for image in chunk? {
            if wanted.contains(&image.image_id) {
                found.insert(image.image_id, image);
            }
        }
    }
    ids.iter()
        .map(|id| {
            found.remove(id).ok_or_else(|| {
                Error::input(
                    path,
                    format!("no image with id {id}: the annotations name images of another set"),
                )
            })
        })
        .collect()
}

/// Fig. 8: one row per image, its original then each part masked, under a line naming the
/// columns. Tiles are at least 168 pixels wide (3x at the default pipeline's 56-pixel crops).
fn figure(images: &[ImageRecord], parts: &[MaskSet], crop: usize, path: &Path) -> Result<()> {
    const LABEL_H: u32 = 20;
    let scale = 168u32.div_ceil(crop as u32);
    let side = crop as u32 * scale;
    let mut canvas = RgbImage::from_pixel(
        (parts.len() as u32 + 1) * (side + 4) + 4,
        LABEL_H + images.len() as u32 * (side + 4) + 4,
        Rgb([255, 255, 255]),
    );
    let names = std::iter::once("original").chain(parts.iter().map(|(name, _)| name.as_str()));
    for (column, name) in names.enumerate() {
        let x = 4 + column as u32 * (side + 4);
        let label = if column == 0 {
            name.to_owned()
        } else {
            format!("{name} masked")
        };
        plots::draw_text(&mut canvas, &label, (x as i32, 3), 14, [30, 30, 30])
            .map_err(|e| Error::io(path, std::io::Error::other(e)))?;
    }
    for (i, image) in images.iter().enumerate() {
        let offset = (image.width as usize - crop) / 2;
        for column in 0..=parts.len() {
            let rect = (column > 0).then(|| parts[column - 1].1[i]);
            let tile = RgbImage::from_fn(side, side, |x, y| {
                let (sy, sx) = ((y / scale) as usize, (x / scale) as usize);
                if let Some((top, left, h, w)) = rect
                    && (top..top + h).contains(&sy)
                    && (left..left + w).contains(&sx)
                {
                    return Rgb([128, 128, 128]);
                }
                let at = ((offset + sy) * image.width as usize + offset + sx) * 3;
                Rgb([image.pixels[at], image.pixels[at + 1], image.pixels[at + 2]])
            });
            image::imageops::replace(
                &mut canvas,
                &tile,
                (4 + column as u32 * (side + 4)) as i64,
                (LABEL_H + 4 + i as u32 * (side + 4)) as i64,
            );
        }
    }
    canvas
        .save(path)
        .map_err(|e| Error::io(path, std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_masks_read_with_comments_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parts.csv");
        std::fs::write(
            &path,
            "# why these correspond\nimage_id,part,top,left,height,width\n9,toe,13,1,9,9\n",
        )
        .unwrap();
        let masks = read_part_masks(&path).unwrap();
        assert_eq!(
            masks,
            vec![PartMask {
                image_id: 9,
                part: "toe".into(),
                top: 13,
                left: 1,
                height: 9,
                width: 9
            }]
        );
        std::fs::write(
            &path,
            "image_id,part,top,left,height,width\n9,toe,13,1,9,9\n9,heel,nine,1,2,2\n",
        )
        .unwrap();
        let error = read_part_masks(&path).unwrap_err().to_string();
        assert!(error.contains("line 3"), "{error}");
    }

    #[test]
    fn masking_greys_exactly_the_rectangle() {
        let input = vec![1.0f32; 3 * 4 * 4];
        let out = masked(&input, 4, (1, 2, 2, 5));
        let zeros = out.iter().filter(|&&v| v == 0.0).count();
        assert_eq!(zeros, 3 * 2 * 2, "clipped at the right edge");
        assert_eq!(out[4 + 2], 0.0);
        assert_eq!(out[4 + 1], 1.0);
    }

    /// The analysis on 6 annotated 32x32 images through a zf_small net: the table for any
    /// batch (the features do not depend on it), an image named again after another is the
    /// same image, and a budget below the computed need is refused before any image is read.
    #[test]
    fn features_go_through_in_batches_and_the_need_is_checked_first() {
        use engine::weights::save_model;
        use stage_api::ParamValue::Int;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        artifacts::images::write_noise_images(&root.join("images"), 12, 0, 3, 5).unwrap();
        let network = Network::new(
            engine::CpuBackend,
            engine::Architecture::from_name("zf_small", 3).unwrap(),
            0.05,
            2,
        );
        let info = ModelInfo {
            architecture: network.architecture.clone(),
            image_size: 32,
            class_names: Vec::new(),
            mean: vec![110.0; 32 * 32 * 3],
        };
        let provenance = artifacts::Provenance::ad_hoc("t");
        save_model(
            &root.join("model.safetensors"),
            &network,
            &info,
            &provenance,
        )
        .unwrap();
        // Two parts on images 0-5; image 0's second part comes after the others' first.
        let mut csv = String::from("image_id,part,top,left,height,width\n");
        for id in 0..6 {
            csv += &format!("{id},eye,{},{},6,6\n", 4 + id, 8);
        }
        for id in 0..6 {
            csv += &format!("{id},nose,14,{},5,7\n", 10 + id);
        }
        std::fs::write(root.join("parts.csv"), csv).unwrap();
        let run = |overrides: &[(&str, stage_api::ParamValue)], name: &str| {
            let params = Params::defaults_with(&Correspondence.params(), overrides);
            let ctx = StageContext::for_tests(
                params,
                BTreeMap::from([
                    ("model".into(), vec![root.join("model.safetensors")]),
                    ("images".into(), vec![root.join("images")]),
                    ("parts".into(), vec![root.join("parts.csv")]),
                ]),
                BTreeMap::from([
                    ("table1".into(), root.join(format!("{name}.parquet"))),
                    ("figures".into(), root.join(format!("{name}_figures"))),
                ]),
                root.join("scratch"),
            );
            Correspondence.run(&ctx).map(|_| {
                let rows = CorrespondenceRow::read(&root.join(format!("{name}.parquet"))).unwrap();
                (
                    rows.iter().map(|r| r.mean).collect::<Vec<_>>(),
                    rows.iter().map(|r| r.pairs).collect::<Vec<_>>(),
                )
            })
        };
        let draws = ("random_draws", Int(3));
        let whole = run(std::slice::from_ref(&draws), "whole").unwrap();
        // 6 images: 15 pairs per part; the random masks, 2 parts x 3 draws of 15 pairs.
        assert_eq!(
            whole.1,
            [15, 15, 90, 15, 15, 90],
            "per layer: eye, nose, random"
        );
        for batch in [1, 4] {
            let batched = run(&[draws.clone(), ("batch_size", Int(batch))], "batched").unwrap();
            assert!(batched == whole, "batch_size {batch}");
        }
        let error = run(&[draws, ("memory_limit_mb", Int(1))], "tight")
            .unwrap_err()
            .to_string();
        for part in [
            "memory_limit_mb is 1",
            "6 images: 0 MB",
            "a forward pass of 6 images",
        ] {
            assert!(error.contains(part), "{part:?} not in: {error}");
        }
        // A template with no rows (the user has not annotated yet): an empty table.
        std::fs::write(
            root.join("parts.csv"),
            "# fill me in\nimage_id,part,top,left,height,width\n",
        )
        .unwrap();
        let (means, _) = run(&[], "template").unwrap();
        assert!(means.is_empty());
        assert!(root.join("template_figures").is_dir());
    }
}
