//! Stage kind `occlusion` (§4.2, Fig. 7): "systematically occlude different portions of the
//! input image with a grey square, and monitor the output of the classifier".
//!
//! For each chosen image, a grey square (the mean pixel: zero once the mean is subtracted)
//! slides over the network's input crop; all occluded copies go through the network in
//! batches. Per occluder position we record (b) the total activation of the layer-5 feature
//! map that is strongest on the unoccluded image, (d) the probability of the true class and
//! (e) the most probable label; (c) is that map's deconvnet projection for the unoccluded
//! image. The automatic check of Fig. 7's finding: the true-class probability is lower when
//! the occluder covers the peak of the layer-5 projection than elsewhere.

mod correspondence;
mod figure;
mod invariance;

use std::sync::Arc;

use artifacts::images::{ImageGroups, ImageRecord};
use artifacts::table::TableRow;
use artifacts::table::rows::{OcclusionCheckRow, OcclusionMapRow};
use engine::deconv::{feature_op, project};
use engine::weights::{ModelInfo, load_model};
use engine::{Backend, Mode, Network};
use stage_api::{
    Error, InputSpec, OutputSpec, ParamSpec, Params, Resources, Result, RunSummary, StageContext,
    StageKind,
};

pub fn kinds() -> Vec<Arc<dyn StageKind>> {
    vec![
        Arc::new(Occlusion),
        Arc::new(invariance::Invariance),
        Arc::new(correspondence::Correspondence),
    ]
}

pub struct Occlusion;

/// What was measured for one image.
pub struct ImageResult {
    pub image: ImageRecord,
    pub map: usize,
    /// Occluder top-left corners, in row-major grid order.
    pub positions: Vec<(usize, usize)>,
    pub grid: usize,
    pub map_activation: Vec<f32>,
    pub true_probability: Vec<f32>,
    pub predicted: Vec<usize>,
    pub unoccluded_probability: f32,
    /// Total activation of `map` on the unoccluded image (panel (b)'s reference).
    pub unoccluded_activation: f32,
    /// The deconvnet projection (3 x C x C) of the map's strongest unit, unoccluded.
    pub projection: Vec<f32>,
    /// Peak of |projection| (y, x).
    pub peak: (usize, usize),
}

impl StageKind for Occlusion {
    fn name(&self) -> &'static str {
        "occlusion"
    }

    fn version(&self) -> u32 {
        // 2: panel (c) also shows the map in other images.
        // 3: the CPU backend's fixed arithmetic (the same bits on every CPU path).
        // 4: checks also split panel (b)'s map activation (schema occlusion_checks v2); the
        // figure's panels are titled, with colour bars and a class legend.
        // 5: a side with no occluder position is NaN, not 0.
        5
    }

    fn summary(&self) -> &'static str {
        "Occlusion sensitivity (Fig. 7): layer-5 activation, true-class probability and label per occluder position."
    }

    fn peak_memory(&self) -> &'static str {
        "The model (12 P bytes); while choosing, every row's label and id (~60 bytes a row, pixels not read), then one row group (up to 256 images) at a time and the n_images chosen images (n_images S^2 3 bytes); then per image one forward of batch_size occluded copies (B (3 C^2 4 + A) bytes, A a forward pass's activations per image) and ~32 bytes per occluder position."
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::int(
                "n_images",
                5,
                1,
                1000,
                "Images to occlude: the first of each class, then the next ones.",
            ),
            ParamSpec::int(
                "occluder",
                8,
                1,
                1024,
                "Side of the grey square, in input pixels.",
            ),
            ParamSpec::int("stride", 2, 1, 1024, "Step between occluder positions."),
            ParamSpec::int(
                "batch_size",
                128,
                1,
                4096,
                "Occluded copies per forward pass.",
            ),
            stage_api::device::device_param(),
        ]
    }

    fn inputs(&self) -> Vec<InputSpec> {
        vec![
            InputSpec::model(),
            InputSpec::artifact("images", "test images, preprocessed like the training set"),
        ]
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![
            OutputSpec::new(
                "maps",
                "maps.parquet",
                "per image and occluder position: (b), (d), (e)",
            ),
            OutputSpec::new(
                "checks",
                "checks.parquet",
                "true-class probability covering the projection peak vs elsewhere",
            ),
            OutputSpec::new(
                "figures",
                "figures",
                "occlusion_<image_id>.png, panels (a)-(e) like Fig. 7",
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

/// The occlusion experiment, on the backend the `device` param picked.
impl cuda_backend::StageBody for Occlusion {
    fn run_on_backend<B: Backend>(&self, ctx: &StageContext, backend: B) -> Result<RunSummary> {
        let (network, info) = load_model(ctx.input("model"), backend)?;
        let crop = network.architecture.input_size;
        let occluder = ctx.params.usize("occluder");
        if occluder > crop {
            return Err(Error::Config(format!(
                "the occluder ({occluder} px) is larger than the {crop} px input"
            )));
        }
        let images = choose_images(ctx.input("images"), ctx.params.usize("n_images"), &info)?;
        let figures = ctx.output("figures");
        std::fs::create_dir_all(figures).map_err(|e| Error::io(figures, e))?;
        let bar = ctx.progress_bar(images.len() as u64, "occluding");
        let mut results = Vec::new();
        for image in images {
            let result = occlude(
                &network,
                &info,
                image,
                occluder,
                ctx.params.usize("stride"),
                ctx.params.usize("batch_size"),
            );
            results.push(result);
            bar.inc(1);
        }
        bar.finish_and_clear();
        // Panel (c) also shows the same map projected in (up to 3 of) the other images.
        for (i, result) in results.iter().enumerate() {
            let others: Vec<&ImageRecord> = results
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, r)| &r.image)
                .take(3)
                .collect();
            let projections = project_map_on(&network, &info, &others, result.map);
            figure::render(
                result,
                &projections,
                crop,
                occluder,
                &info.class_names,
                &figures.join(format!("occlusion_{}.png", result.image.image_id)),
            )?;
        }

        let mut maps = Vec::new();
        let mut checks = Vec::new();
        let mut passed = 0;
        for r in &results {
            for (i, &(y, x)) in r.positions.iter().enumerate() {
                maps.push(OcclusionMapRow {
                    image_id: r.image.image_id,
                    y: y as i64,
                    x: x as i64,
                    map_activation: r.map_activation[i] as f64,
                    true_probability: r.true_probability[i] as f64,
                    predicted_label: r.predicted[i] as i64,
                });
            }
            let split = covering_split(r, occluder);
            passed += (split.probability.0 < split.probability.1) as usize;
            checks.push(OcclusionCheckRow {
                image_id: r.image.image_id,
                label: r.image.label as i64,
                map: r.map as i64,
                prob_unoccluded: r.unoccluded_probability as f64,
                prob_covering: split.probability.0,
                prob_elsewhere: split.probability.1,
                activation_unoccluded: r.unoccluded_activation as f64,
                activation_covering: split.activation.0,
                activation_elsewhere: split.activation.1,
            });
        }
        OcclusionMapRow::write(&maps, ctx.output("maps"), &ctx.provenance)?;
        OcclusionCheckRow::write(&checks, ctx.output("checks"), &ctx.provenance)?;
        let covering: Vec<f64> = checks.iter().map(|c| c.prob_covering).collect();
        let elsewhere: Vec<f64> = checks.iter().map(|c| c.prob_elsewhere).collect();
        Ok(RunSummary::default().line(format!(
            "{} images, {}x{} occluder every {} px; covering the layer-5 projection peak lowered the true-class probability in {passed} of {} images (mean {:.3} covering vs {:.3} elsewhere)",
            results.len(),
            occluder,
            occluder,
            ctx.params.usize("stride"),
            results.len(),
            mean(&covering),
            mean(&elsewhere)
        )))
    }
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

/// Panels (b) and (d) split by occluder position: means over the positions that cover the
/// projection's peak and over those that do not, as (covering, elsewhere).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CoveringSplit {
    /// True-class probability (panel (d)).
    pub probability: (f64, f64),
    /// Total activation of the chosen layer-5 map (panel (b)).
    pub activation: (f64, f64),
}

pub fn covering_split(result: &ImageResult, occluder: usize) -> CoveringSplit {
    let (py, px) = result.peak;
    let (mut covering, mut elsewhere) = (Vec::new(), Vec::new());
    for (i, &(y, x)) in result.positions.iter().enumerate() {
        let covers = (y..y + occluder).contains(&py) && (x..x + occluder).contains(&px);
        let values = (
            result.true_probability[i] as f64,
            result.map_activation[i] as f64,
        );
        if covers {
            covering.push(values)
        } else {
            elsewhere.push(values)
        }
    }
    // NaN for a side with no position (an occluder grid that never covers the peak): the
    // report leaves such an image out rather than compare with a made-up 0.
    let mean_of = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| {
        if v.is_empty() {
            f64::NAN
        } else {
            mean(&v.iter().map(f).collect::<Vec<_>>())
        }
    };
    CoveringSplit {
        probability: (mean_of(&covering, |v| v.0), mean_of(&elsewhere, |v| v.0)),
        activation: (mean_of(&covering, |v| v.1), mean_of(&elsewhere, |v| v.1)),
    }
}

/// The first image of each class in turn (class 0, 1, ..., then the second of each), `n` in all.
/// Chosen from the rows' labels alone (a few bytes a row); then only the row groups holding a
/// chosen image are read, so memory holds one group and the `n` images, not every class's.
fn choose_images(path: &std::path::Path, n: usize, info: &ModelInfo) -> Result<Vec<ImageRecord>> {
    let groups = ImageGroups::open(path)?;
    let metadata = groups.metadata()?;
    // (group, row in group) of each class's first `n` images, in artifact order.
    let mut by_class: std::collections::BTreeMap<i32, Vec<(usize, usize)>> = Default::default();
    for (group, rows) in metadata.iter().enumerate() {
        for (row, meta) in rows.iter().enumerate() {
            if meta.width as usize != info.image_size {
                return Err(Error::input(
                    path,
                    format!(
                        "image {} is {} px wide; the model expects {}",
                        meta.image_id, meta.width, info.image_size
                    ),
                ));
            }
            let list = by_class.entry(meta.label).or_default();
            if list.len() < n {
                list.push((group, row));
            }
        }
    }
    let mut chosen = Vec::new();
    for round in 0..n {
        for list in by_class.values() {
            if chosen.len() < n
                && let Some(&at) = list.get(round)
            {
                chosen.push(at);
            }
        }
    }
    let mut images: std::collections::BTreeMap<(usize, usize), ImageRecord> = Default::default();
    let wanted_groups: std::collections::BTreeSet<usize> = chosen.iter().map(|&(g, _)| g).collect();
    for group in wanted_groups {
        for (row, image) in groups.read(group)?.into_iter().enumerate() {
            if chosen.contains(&(group, row)) {
                images.insert((group, row), image);
            }
        }
    }
    Ok(chosen
        .iter()
        .map(|at| images.remove(at).expect("every chosen row was read"))
        .collect())
}

fn input_of(image: &ImageRecord, info: &ModelInfo, crop: usize) -> Vec<f32> {
    let mut out = vec![0.0; 3 * crop * crop];
    info.centre_input(&image.pixels, image.width, crop, &mut out);
    out
}

/// The deconvnet projection of `map`'s strongest layer-5 unit in each of `images`.
pub fn project_map_on<B: Backend>(
    network: &Network<B>,
    info: &ModelInfo,
    images: &[&ImageRecord],
    map: usize,
) -> Vec<Vec<f32>> {
    if images.is_empty() {
        return Vec::new();
    }
    let crop = network.architecture.input_size;
    let op5 = feature_op(network, 5).expect("a ZF network has conv5");
    let (maps, h, w) = network.shapes[op5];
    let plane = h * w;
    let input: Vec<f32> = images
        .iter()
        .flat_map(|image| input_of(image, info, crop))
        .collect();
    let acts = network.forward(network.backend.upload_owned(input), Mode::Eval);
    let conv5 = network.backend.read(&acts.outputs[op5]);
    let mut signal = vec![0.0f32; conv5.len()];
    for i in 0..images.len() {
        let start = (i * maps + map) * plane;
        let best =
            (start..start + plane).fold(start, |b, p| if conv5[p] > conv5[b] { p } else { b });
        signal[best] = conv5[best];
    }
    let pixels = network.backend.download(&project(
        network,
        &acts,
        op5,
        network.backend.upload_owned(signal),
    ));
    pixels
        .chunks(3 * crop * crop)
        .map(<[f32]>::to_vec)
        .collect()
}

/// Runs every occluded copy of one image through the network.
pub fn occlude<B: Backend>(
    network: &Network<B>,
    info: &ModelInfo,
    image: ImageRecord,
    occluder: usize,
    stride: usize,
    batch_size: usize,
) -> ImageResult {
    let crop = network.architecture.input_size;
    let classes = network.classes();
    let op5 = feature_op(network, 5).expect("a ZF network has conv5");
    let (maps, h, w) = network.shapes[op5];
    let plane = h * w;
    let clean = input_of(&image, info, crop);
    let acts = network.forward(network.backend.upload_owned(clean.clone()), Mode::Eval);
    let conv5 = network.backend.read(&acts.outputs[op5]);
    let totals: Vec<f32> = (0..maps)
        .map(|m| conv5[m * plane..(m + 1) * plane].iter().sum())
        .collect();
    let map = (0..maps).fold(0, |best, m| if totals[m] > totals[best] { m } else { best });
    let label = image.label.max(0) as usize;
    let unoccluded_probability = network.backend.softmax(acts.logits(), classes)[label];
    // (c): project the map's strongest unit.
    let strongest = (0..plane).fold(0, |best, p| {
        if conv5[map * plane + p] > conv5[map * plane + best] {
            p
        } else {
            best
        }
    });
    let mut signal = vec![0.0; maps * plane];
    signal[map * plane + strongest] = conv5[map * plane + strongest];
    let projection = network.backend.download(&project(
        network,
        &acts,
        op5,
        network.backend.upload_owned(signal),
    ));
    let peak_at = (0..crop * crop).fold(0, |best, p| {
        let magnitude = |q: usize| {
            (0..3)
                .map(|c| projection[c * crop * crop + q].abs())
                .sum::<f32>()
        };
        if magnitude(p) > magnitude(best) {
            p
        } else {
            best
        }
    });
    let positions: Vec<(usize, usize)> = (0..=crop - occluder)
        .step_by(stride)
        .flat_map(|y| (0..=crop - occluder).step_by(stride).map(move |x| (y, x)))
        .collect();
    let grid = (0..=crop - occluder).step_by(stride).count();
    let (mut map_activation, mut true_probability, mut predicted) =
        (Vec::new(), Vec::new(), Vec::new());
    for batch in positions.chunks(batch_size) {
        let mut input = Vec::with_capacity(batch.len() * clean.len());
        for &(y, x) in batch {
            let mut copy = clean.clone();
            // The grey square: the mean pixel, which is zero after mean subtraction.
            for c in 0..3 {
                for row in y..y + occluder {
                    copy[c * crop * crop + row * crop + x..][..occluder].fill(0.0);
                }
            }
            input.extend_from_slice(&copy);
        }
        let acts = network.forward(network.backend.upload_owned(input), Mode::Eval);
        let probs = network.backend.softmax(acts.logits(), classes);
        let conv5 = network.backend.read(&acts.outputs[op5]);
        for j in 0..batch.len() {
            map_activation.push(conv5[(j * maps + map) * plane..][..plane].iter().sum());
            let row = &probs[j * classes..(j + 1) * classes];
            true_probability.push(row[label]);
            predicted
                .push((0..classes).fold(0, |best, c| if row[c] > row[best] { c } else { best }));
        }
    }
    ImageResult {
        image,
        map,
        positions,
        grid,
        map_activation,
        true_probability,
        predicted,
        unoccluded_probability,
        unoccluded_activation: totals[map],
        projection,
        peak: (peak_at / crop, peak_at % crop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The images are chosen from the labels alone and read group by group: the first of each
    /// class in turn, then the second of each, exactly as reading every image would choose,
    /// across row groups (256 images each).
    #[test]
    fn the_first_images_of_each_class_in_turn_are_chosen_across_row_groups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images");
        artifacts::images::write_noise_images(&path, 600, 1000, 7, 3).unwrap();
        assert!(ImageGroups::open(&path).unwrap().groups.len() > 1);
        let info = ModelInfo {
            architecture: engine::Architecture::from_name("zf_small", 7).unwrap(),
            image_size: 32,
            class_names: Vec::new(),
            mean: Vec::new(),
        };
        let all = artifacts::images::read_images(&path).unwrap();
        for n in [1, 9, 200] {
            let mut expected = Vec::new();
            for round in 0..n {
                for class in 0..7 {
                    if let Some(image) = all.iter().filter(|i| i.label == class).nth(round)
                        && expected.len() < n
                    {
                        expected.push(image.clone());
                    }
                }
            }
            let chosen = choose_images(&path, n, &info).unwrap();
            assert_eq!(chosen.len(), n);
            assert!(chosen == expected, "n = {n}");
        }
        let wrong = ModelInfo {
            image_size: 64,
            ..info
        };
        let error = choose_images(&path, 3, &wrong).unwrap_err().to_string();
        assert!(
            error.contains("is 32 px wide; the model expects 64"),
            "{error}"
        );
    }
}
