//! The input perturbed, the features watched (§4, §4.2, §4.3): occlusion sensitivity (Fig. 7),
//! invariance to translation, scale and rotation (Fig. 5) and part correspondence (Table 1).

use super::*;

/// Minimum effects of Fig. 7's two claims.
pub const OCCLUSION_MIN_PROBABILITY_DROP: f64 = 1.0;
pub const OCCLUSION_MIN_ACTIVATION_DROP: f64 = 5.0;

/// Fig. 7: the occlusion table and both of its claims, (b) and (d).
pub fn occlusion(path: &Path, folder: Option<&Path>, figures: &Path) -> Result<Section> {
    let checks = OcclusionCheckRow::read(path)?;
    let stage = stage_of(path);
    let mut section = Section::new("Occlusion sensitivity", "§4.2, Fig. 7", Some(stage.clone()));
    section.text(
        "Panels: (a) input crop (the occluder's size drawn in its corner), (b) total activation \
         of the layer-5 map strongest on the unoccluded image, per occluder position (blue low, \
         red high), (c) that map's deconvnet projection in this image (top-left) and in up to \
         three of the other images, (d) probability of the true class per position, (e) most \
         probable label per position. *Covering*: the occluder positions that cover the peak of \
         the map's projection; *elsewhere*: all other positions (means over positions).",
    );
    let ids = &field!(checks, image_id);
    let labels = &field!(checks, label);
    let maps = &field!(checks, map);
    let (p0, pc, pe) = (
        &field!(checks, prob_unoccluded),
        &field!(checks, prob_covering),
        &field!(checks, prob_elsewhere),
    );
    let (a0, ac, ae) = (
        &field!(checks, activation_unoccluded),
        &field!(checks, activation_covering),
        &field!(checks, activation_elsewhere),
    );
    let mut table = MdTable::new(&[
        "image",
        "label",
        "layer-5 map",
        "p(true) unoccluded",
        "p(true) covering",
        "p(true) elsewhere",
        "(d) drop, points",
        "map activation unoccluded",
        "covering",
        "elsewhere",
        "(b) drop, % of unoccluded",
    ]);
    let mut probability_drops = Vec::new();
    let mut activation_drops = Vec::new();
    for i in 0..checks.len() {
        // NaN when no occluder position covers the peak (or the map is silent): that image
        // cannot show the effect and is left out, with a count.
        let p_drop = 100.0 * (pe[i] - pc[i]);
        let a_drop = if a0[i] > 0.0 {
            100.0 * (ae[i] - ac[i]) / a0[i]
        } else {
            f64::NAN
        };
        probability_drops.push(p_drop);
        activation_drops.push(a_drop);
        table.row(vec![
            ids[i].to_string(),
            labels[i].to_string(),
            maps[i].to_string(),
            format!("{:.4}", p0[i]),
            format!("{:.4}", pc[i]),
            format!("{:.4}", pe[i]),
            format!("{p_drop:+.2}"),
            format!("{:.1}", a0[i]),
            format!("{:.1}", ac[i]),
            format!("{:.1}", ae[i]),
            format!("{a_drop:+.1}"),
        ]);
    }
    section.table(table);
    let per_images = |drops: &[f64]| {
        let finite: Vec<f64> = drops.iter().copied().filter(|d| d.is_finite()).collect();
        let left_out = drops.len() - finite.len();
        let label = if left_out == 0 {
            format!("{} images", finite.len())
        } else {
            format!(
                "{} images ({left_out} left out: no occluder position covers the projection \
                 peak, or the map is silent)",
                finite.len()
            )
        };
        match Estimate::mean(&finite) {
            Some(e) => Comparison::new(label, e),
            None => Comparison::missing(label, "no image could show the effect"),
        }
    };
    section.claim(
        Claim::new(
            "Fig. 7 (b)",
            "the activity of the strongest layer-5 feature map drops when the occluder covers \
             the image region it projects to",
            "mean over images of the map's activation elsewhere minus covering, in % of its \
             unoccluded activation",
        )
        .unit("%", 1)
        .minimum(
            OCCLUSION_MIN_ACTIVATION_DROP,
            "a drop under 5% of the map's unoccluded activation would not show as a colour \
             change in panel (b)",
        )
        .compare(per_images(&activation_drops)),
    );
    section.claim(
        Claim::new(
            "Fig. 7 (d)",
            "occluding the region the strongest layer-5 feature projects to lowers the \
             probability of the correct class",
            "mean over images of p(true) elsewhere minus covering, in percentage points",
        )
        .unit("points", 2)
        .minimum(
            OCCLUSION_MIN_PROBABILITY_DROP,
            "a change under 1 point of probability would not show in panel (d)",
        )
        .compare(per_images(&probability_drops)),
    );
    if let Some(folder) = folder {
        for (name, target) in copy_figures(folder, &stage, figures)? {
            section.figure(&name, &target, false);
        }
    }
    Ok(section)
}

/// Whether a transform counts as "small" for Fig. 5's claim: the smallest non-zero shift
/// of the table (`smallest_shift`, in pixels), scales within 20%.
fn small_transform(transform: &str, amount: f64, smallest_shift: f64) -> bool {
    (transform == "translation" && amount != 0.0 && amount.abs() <= smallest_shift + 1e-9)
        || (transform == "scale" && amount != 1.0 && (amount - 1.0).abs() <= 0.2 + 1e-9)
}

/// Fig. 5: distances per transform (means ± std over images) and the claim, per image.
pub fn invariance(path: &Path, folder: Option<&Path>, figures: &Path) -> Result<Section> {
    let curves = InvarianceRow::read(path)?;
    let mut section = Section::new("Invariance", "§4, Fig. 5", Some(stage_of(path)));
    let transforms = &field!(curves, transform);
    let amounts = &field!(curves, amount);
    let images = &field!(curves, image_id);
    let (d1, d7, p) = (
        &field!(curves, layer1_distance),
        &field!(curves, layer7_distance),
        &field!(curves, true_probability),
    );
    let n_images = images
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    section.text(format!(
        "Relative Euclidean distance ||f(x) - f(T x)|| / ||f(x)|| of the layer-1 and layer-7 \
         feature vectors, and P(true class): mean ± std over the {n_images} images (the figure \
         has one line per image; rows translation, scale, rotation; columns layer 1, layer 7, \
         P(true class))."
    ));
    let mut keys: Vec<(String, f64)> = Vec::new();
    for i in 0..curves.len() {
        if !keys
            .iter()
            .any(|(t, a)| *t == transforms[i] && *a == amounts[i])
        {
            keys.push((transforms[i].clone(), amounts[i]));
        }
    }
    let mut table = MdTable::new(&[
        "transform",
        "amount",
        "layer 1 distance",
        "layer 7 distance",
        "P(true class)",
    ]);
    for (t, a) in &keys {
        let rows: Vec<usize> = (0..curves.len())
            .filter(|&i| transforms[i] == *t && amounts[i] == *a)
            .collect();
        let cell = |v: &[f64]| {
            Summary::of(&rows.iter().map(|&i| v[i]).collect::<Vec<_>>())
                .map_or("–".to_owned(), |s| s.format(1.0, 3))
        };
        table.row(vec![t.clone(), format!("{a}"), cell(d1), cell(d7), cell(p)]);
    }
    section.table(table);
    // Per image: mean distance over the small transforms at layer 1 minus at layer 7.
    let smallest_shift = (0..curves.len())
        .filter(|&i| transforms[i] == "translation" && amounts[i] != 0.0)
        .map(|i| amounts[i].abs())
        .fold(f64::INFINITY, f64::min);
    let mut per_image: BTreeMap<i64, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for i in 0..curves.len() {
        if small_transform(&transforms[i], amounts[i], smallest_shift) {
            let entry = per_image.entry(images[i]).or_default();
            entry.0.push(d1[i]);
            entry.1.push(d7[i]);
        }
    }
    let effects: Vec<f64> = per_image
        .values()
        .map(|(l1, l7)| mean(l1) - mean(l7))
        .collect();
    section.claim(
        Claim::new(
            "Fig. 5",
            "small transformations change layer 1 a lot and layer 7 much less (PAPER.md, §4)",
            &if smallest_shift.is_finite() {
                format!(
                    "per image, the mean relative change under the smallest shifts \
                     (±{smallest_shift} px) and scales within 20% at layer 1 minus at layer 7"
                )
            } else {
                "per image, the mean relative change under scales within 20% at layer 1 minus \
                 at layer 7 (the curves have no translation)"
                    .to_owned()
            },
        )
        .compare(match Estimate::mean(&effects) {
            Some(e) => Comparison::new(format!("{} images", effects.len()), e),
            None => Comparison::missing("images", "no small translation or scaling in the curves"),
        }),
    );
    if let Some(folder) = folder {
        for (_, target) in copy_figures(folder, "invariance", figures)? {
            section.figure("invariance", &target, false);
        }
    }
    Ok(section)
}

/// Table 1: sign-change consistency per mask, and each part against random masks.
/// What Table 1 shows, in the paper's words.
const TABLE1_CLAIM: &str = "masking the same part in every image gives a lower layer-5 sign \
     change than random masks: the model implicitly establishes correspondence of parts";

pub fn correspondence(path: &Path, folder: Option<&Path>, figures: &Path) -> Result<Section> {
    let table = CorrespondenceRow::read(path)?;
    let mut section = Section::new(
        "Correspondence",
        "§4.3, Table 1, Fig. 8",
        Some(stage_of(path)),
    );
    section.text(
        "Mean feature sign change (normalised Hamming distance between sign(x_i - x~_i) over \
         pairs of images; lower = tighter correspondence) when the same part is masked in every \
         image, and for random masks of the same sizes; mean ± std over the pairs (n pairs per \
         cell: see the claim). The paper's Table 1 (dogs' eyes and nose, ImageNet) is quoted for \
         shape only: the data differ.",
    );
    if table.is_empty() {
        section.text(
            "**Not computed**: the `correspondence` stage's part file (its `parts` input) names \
             no rectangle. The paper masks the left eye, the right eye and the nose of 5 frontal \
             dog images from the ImageNet validation set; those annotations were not \
             published. To compute this table, list rectangles in that file (`image_id,part,\
             top,left,height,width`, in the preprocessed images' pixels; the ids are the \
             images' positions in the listing) and run `zfnet run report` again.",
        );
        section.claim(
            Claim::new(
                "Table 1",
                TABLE1_CLAIM,
                "layer-5 sign change of random masks minus that of each part",
            )
            .blocked("no part annotations: nothing was measured"),
        );
        return Ok(section);
    }
    let layers = &field!(table, layer);
    let names = &field!(table, mask);
    let (means, stds, pairs) = (
        &field!(table, mean),
        &field!(table, std),
        &field!(table, pairs),
    );
    let mut masks: Vec<String> = names.to_vec();
    masks.sort();
    masks.dedup();
    masks.sort_by_key(|m| m == "random");
    let cell = |mask: &str, layer: i64| {
        (0..table.len())
            .find(|&i| names[i] == mask && layers[i] == layer)
            .map(|i| Summary::from_parts(means[i], stds[i], pairs[i].max(0) as usize))
    };
    let mut md = MdTable::new(&["mask", "layer 5", "layer 7"]);
    for mask in &masks {
        let text = |s: Option<Summary>| s.map_or("–".to_owned(), |s| s.format(1.0, 3));
        md.row(vec![mask.clone(), text(cell(mask, 5)), text(cell(mask, 7))]);
    }
    section.table(md);
    section.text(
        "Paper (Table 1, layer 5): right eye 0.067 ± 0.007, left eye 0.069 ± 0.007, nose \
         0.079 ± 0.017, random 0.107 ± 0.017.",
    );
    let mut claim = Claim::new(
        "Table 1",
        TABLE1_CLAIM,
        "layer-5 sign change of random masks minus that of each part (Welch, with n the \
         number of images: the pairs of images behind each mean share images, so counting \
         pairs would overstate the evidence; the random masks pool all three part sizes)",
    )
    .paper_effect(
        "random − parts at layer 5: +0.040 (right eye), +0.038 (left eye), +0.028 (nose)",
    );
    // Each part's row is over the pairs of its n images, n (n - 1) / 2 of them: the images,
    // not the pairs, are the independent units.
    let images_of =
        |pairs: usize| ((1.0 + (1.0 + 8.0 * pairs as f64).sqrt()) / 2.0).round() as usize;
    match cell("random", 5) {
        Some(random) => {
            for mask in masks.iter().filter(|m| *m != "random") {
                if let Some(part) = cell(mask, 5) {
                    let n = images_of(part.n);
                    let per_image =
                        |s: Summary| Summary::from_parts(s.mean, s.std.unwrap_or(0.0), n);
                    claim = claim.compare(Comparison::new(
                        mask.clone(),
                        Estimate::difference(&per_image(random), &per_image(part)),
                    ));
                }
            }
        }
        None => claim = claim.blocked("no random masks in the table"),
    }
    section.claim(claim);
    if let Some(folder) = folder {
        for (_, target) in copy_figures(folder, "correspondence", figures)? {
            section.figure("masked parts", &target, false);
        }
    }
    Ok(section)
}
