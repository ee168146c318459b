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
use artifacts::table::schemas::CORRESPONDENCE;
use artifacts::table::{Column, Table};
use engine::deconv::feature_op;
use engine::weights::load_model;
use engine::{Backend, Mode, Network, Op};
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
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
/// naming the line of any problem.
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
    if masks.is_empty() {
        return Err(Error::input(path, "no part masks"));
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
        4
    }

    fn summary(&self) -> &'static str {
        "Mean feature sign change at layers 5 and 7 for masked object parts vs random masks (Table 1, Fig. 8)."
    }

    fn peak_memory(&self) -> &'static str {
        "The model (12 P bytes) and the n annotated images, each forward running all n together (n A bytes, no batch param), their layer-5 and fc7 features original and masked, and 2 parts (1 + random_draws) n (n - 1) / 2 distances. Grows with n, the images in the annotation file."
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
        let mut ids: Vec<i64> = masks.iter().map(|m| m.image_id).collect();
        ids.dedup();
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
        let originals = features(&network, &inputs, &layers);
        // (layer, mask) -> normalised Hamming distances over pairs (and draws).
        let mut distances: BTreeMap<(usize, String), Vec<f64>> = BTreeMap::new();
        for (name, rects) in &sets {
            let masked: Vec<Vec<f32>> = inputs
                .iter()
                .zip(rects)
                .map(|(x, &r)| masked(x, crop, r))
                .collect();
            let after = features(&network, &masked, &layers);
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
        let mut table = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut lines = Vec::new();
        for ((layer, name), values) in &distances {
            let summary = stats::Summary::of(values).expect("at least one pair");
            let (mean, std) = (summary.mean, summary.std.unwrap_or(0.0));
            table.0.push(*layer as i64);
            table.1.push(name.clone());
            table.2.push(mean);
            table.3.push(std);
            table.4.push(values.len() as i64);
            lines.push(format!("layer {layer} {name}: {mean:.3} ± {std:.3}"));
        }
        Table::default()
            .with("layer", Column::I64(table.0))
            .with("mask", Column::Str(table.1))
            .with("mean", Column::F64(table.2))
            .with("std", Column::F64(table.3))
            .with("pairs", Column::I64(table.4))
            .write(ctx.output("table1"), CORRESPONDENCE, &ctx.provenance)?;
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

/// Per layer, per image: the feature vector.
fn features<B: Backend>(
    network: &Network<B>,
    inputs: &[Vec<f32>],
    layers: &[(usize, usize)],
) -> Vec<Vec<Vec<f32>>> {
    let acts = network.forward(network.backend.upload_owned(inputs.concat()), Mode::Eval);
    layers
        .iter()
        .map(|&(_, op)| {
            let all = network.backend.read(&acts.outputs[op]);
            let len = all.len() / inputs.len();
            all.chunks(len).map(<[f32]>::to_vec).collect()
        })
        .collect()
}

fn find_images(path: &Path, ids: &[i64]) -> Result<Vec<ImageRecord>> {
    let mut found: BTreeMap<i64, ImageRecord> = BTreeMap::new();
    for chunk in ImagesReader::open(path, 1024)? {
        for image in chunk? {
            if ids.contains(&image.image_id) {
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

/// Fig. 8: rows images; columns the original and each part masked (grey).
fn figure(images: &[ImageRecord], parts: &[MaskSet], crop: usize, path: &Path) -> Result<()> {
    const SCALE: u32 = 3;
    let side = crop as u32 * SCALE;
    let mut canvas = RgbImage::from_pixel(
        (parts.len() as u32 + 1) * (side + 4) + 4,
        images.len() as u32 * (side + 4) + 4,
        Rgb([255, 255, 255]),
    );
    for (i, image) in images.iter().enumerate() {
        let offset = (image.width as usize - crop) / 2;
        for column in 0..=parts.len() {
            let rect = (column > 0).then(|| parts[column - 1].1[i]);
            let tile = RgbImage::from_fn(side, side, |x, y| {
                let (sy, sx) = ((y / SCALE) as usize, (x / SCALE) as usize);
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
                (4 + i as u32 * (side + 4)) as i64,
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
}
