//! What the deconvnet and the filters show (§4, §4.1): the top-9 projections per layer (Fig. 2),
//! the conv1 filter statistics (Fig. 6) and the feature evolution during training (Fig. 4).

use super::*;

/// Fig. 2: the top-9 projections per layer.
pub fn deconv_projections(folder: &Path, figures: &Path) -> Result<Section> {
    let stage = folder
        .parent()
        .map(|outputs| outputs.join("top9.parquet"))
        .filter(|p| p.exists())
        .map_or_else(|| "deconv".to_owned(), |p| stage_of(&p));
    let mut section = Section::new("Deconvnet projections", "§4, Fig. 2", Some(stage.clone()));
    section.text(
        "For each layer, a random subset of feature maps, each block labelled with its map's \
         index; for each map, its 9 strongest activations over the scanned images, projected \
         to pixels by the deconvnet (left, grey = 0) beside the image patch under the unit's \
         receptive field (right, `patches`). The conv1 filters are numbered in the model's \
         order.",
    );
    for (name, target) in copy_figures(folder, &stage, figures)? {
        let caption = name
            .trim_end_matches(".png")
            .replace("layer", "Layer ")
            .replace("conv1_filters", "conv1 filters (Fig. 6)");
        section.figure(&caption, &target, true);
    }
    Ok(section)
}

/// The trained model's conv1 filter statistics.
pub fn filter_stats(path: &Path) -> Result<Section> {
    let stats = FilterStatsRow::read(path)?;
    let dead: i64 = stats.iter().map(|row| row.dead).sum();
    let dominating: i64 = stats.iter().map(|row| row.dominating).sum();
    let rms = &field!(stats, rms);
    let (lo, hi) = rms
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let mut section = Section::new("First-layer filters", "§4.1, Fig. 6", Some(stage_of(path)));
    let mut table = MdTable::new(&["filters", "dead", "dominating", "RMS min", "RMS max"]);
    table.row(vec![
        stats.len().to_string(),
        dead.to_string(),
        dominating.to_string(),
        format!("{lo:.4}"),
        format!("{hi:.4}"),
    ]);
    section.table(table);
    Ok(section)
}

/// Fig. 4: the evolution figure.
pub fn evolution(folder: &Path, figures: &Path) -> Result<Section> {
    let mut section = Section::new("Feature evolution during training", "§4.1, Fig. 4", None);
    section.text(
        "Rows: a fixed random subset of feature maps of layers 1-5 (top to bottom); columns: \
         the kept epochs. Each cell is the strongest activation of that map over the scanned \
         training images at that epoch, projected to pixels.",
    );
    for (_, target) in copy_figures(folder, "evolution", figures)? {
        section.figure("feature evolution", &target, false);
    }
    Ok(section)
}
