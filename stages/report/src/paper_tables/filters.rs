//! Fig. 6 (§4.1): the first-layer filters of ZF, Krizhevsky and the run without renormalisation side by side, dead and dominating filters, and aliasing.

use super::*;

/// `k1/n1 − k2/n2` in percent, with Newcombe's interval.
pub(super) fn proportion_comparison(
    label: String,
    (k1, n1): (i64, usize),
    (k2, n2): (i64, usize),
) -> Comparison {
    match Estimate::proportion_difference(k1.max(0) as usize, n1, k2.max(0) as usize, n2) {
        Some(e) => Comparison::new(label, e.scaled(100.0)),
        None => Comparison::missing(label, "no filters"),
    }
}

/// Fig. 6 (a)-(c): conv1 filters of the models side by side, with the dead-filter claim.
pub fn filters_section(
    table_path: &Path,
    figures_folder: Option<&Path>,
    figures: &Path,
    architectures: &BTreeMap<String, ModelArchitecture>,
) -> Result<Section> {
    let table = FilterComparisonRow::read(table_path)?;
    let p = table_path;
    let stage = stage_of(p);
    let panels = &field!(table, panel);
    let names = &field!(table, architecture);
    let stages = &field!(table, stage);
    let dead = &field!(table, dead);
    let dominating = &field!(table, dominating);
    let rms = &field!(table, rms);
    let aliased = &field!(table, aliased_energy);
    let mut section = Section::new(
        "First-layer filters compared",
        "§4.1, Fig. 6 (a)-(c)",
        Some(stage.clone()),
    );
    section.text(
        "(a) trained without filter RMS renormalisation — \"a few filters dominate\"; (b) \
         Krizhevsky's larger, strided conv1 — dead filters and aliasing; (c) the ZF conv1. \
         Dead: RMS under the threshold; dominating: RMS over 3x the median filter's. \
         *Aliased energy*: the share of a filter's frequency-response energy beyond its \
         stride's Nyquist frequency, 1/(2 stride) cycles per pixel, which the stride folds back \
         onto lower frequencies (mean ± std over the filters, %).",
    );
    let mut md = MdTable::new(&[
        "panel",
        "model",
        "architecture",
        "filters",
        "dead",
        "dominating",
        "RMS min",
        "RMS max",
        "aliased energy (%)",
    ]);
    let mut counts: BTreeMap<String, (i64, i64, usize, String)> = BTreeMap::new();
    let mut aliasing: BTreeMap<String, Summary> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for panel in panels {
        if !order.contains(panel) {
            order.push(panel.clone());
        }
    }
    for panel in &order {
        let rows: Vec<usize> = (0..table.len()).filter(|&i| &panels[i] == panel).collect();
        let (n_dead, n_dominating) = (
            rows.iter().map(|&i| dead[i]).sum::<i64>(),
            rows.iter().map(|&i| dominating[i]).sum::<i64>(),
        );
        let (lo, hi) = rows.iter().fold((f64::MAX, f64::MIN), |(a, b), &i| {
            (a.min(rms[i]), b.max(rms[i]))
        });
        counts.insert(
            panel.clone(),
            (n_dead, n_dominating, rows.len(), names[rows[0]].clone()),
        );
        let share = Summary::of(&rows.iter().map(|&i| 100.0 * aliased[i]).collect::<Vec<_>>());
        if let Some(share) = share {
            aliasing.insert(panel.clone(), share);
        }
        let label = match panel.as_str() {
            "no_renorm" => "(a) no renormalisation",
            "krizhevsky" => "(b) Krizhevsky",
            _ => "(c) ZF",
        };
        md.row(vec![
            label.to_owned(),
            format!("`{}`", stages[rows[0]]),
            format!("`{}`", names[rows[0]]),
            rows.len().to_string(),
            n_dead.to_string(),
            n_dominating.to_string(),
            format!("{lo:.4}"),
            format!("{hi:.4}"),
            share.map_or("–".to_owned(), |s| s.format(1.0, 1)),
        ]);
    }
    section.table(md);
    if let Some(folder) = figures_folder {
        for (name, target) in copy_figures(folder, &stage, figures)? {
            let caption = match name.as_str() {
                "a_no_renorm.png" => "(a) no renormalisation",
                "b_krizhevsky.png" => "(b) Krizhevsky",
                "c_zf.png" => "(c) ZF",
                "d_krizhevsky_layer2.png" => {
                    "(d) Krizhevsky, layer 2: top-9 projections (left) beside their patches"
                }
                "e_zf_layer2.png" => {
                    "(e) ZF, layer 2: top-9 projections (left) beside their patches"
                }
                _ => continue,
            };
            section.figure(caption, &target, true);
        }
    }
    let layers_of = |name: &str, krizhevsky: bool| match architectures.get(name) {
        Some(a) => a.paper_first_layers(krizhevsky).err(),
        None => Some(format!(
            "the layers of `{name}` are unknown (no model wired)"
        )),
    };
    match (counts.get("zf"), counts.get("krizhevsky")) {
        (Some((zf_dead, _, zf_n, zf_name)), Some((k_dead, _, k_n, k_name))) => {
            let claim = Claim::new(
                "Fig. 6 (b)-(c)",
                "the 7x7 stride-2 conv1 has fewer dead filters than the 11x11 stride-4 one \
                 (and its layer 2 shows less aliasing)",
                "share of dead conv1 filters in Krizhevsky's net minus the ZF net's, % of \
                 filters (Newcombe's interval over the filters of one model each, so the \
                 seed-to-seed spread is not in it)",
            )
            .unit("% of filters", 1)
            .compare(proportion_comparison(
                format!("{k_dead} of {k_n} vs {zf_dead} of {zf_n} dead"),
                (*k_dead, *k_n),
                (*zf_dead, *zf_n),
            ));
            // Both Fig. 6 claims are about the first layers: without them, neither is measured.
            let lacking: Vec<String> = [layers_of(k_name, true), layers_of(zf_name, false)]
                .into_iter()
                .flatten()
                .collect();
            let first_layers = "the models lack the first layers the claim is about";
            section.claim(claim.blocked_if(first_layers, lacking.clone()));
            if let (Some(k), Some(z)) = (aliasing.get("krizhevsky"), aliasing.get("zf")) {
                let claim = Claim::new(
                    "Fig. 6 (d)-(e)",
                    "the 11x11 stride-4 conv1 causes aliasing artifacts (visible in its layer-2 \
                     projections); the 7x7 stride-2 conv1 avoids them",
                    "aliased energy of Krizhevsky's conv1 filters minus the ZF net's, points of \
                     the filters' energy (Welch over the filters of one model each; the \
                     projections in (d)-(e) are shown, not scored). For reference, filters of \
                     white noise would give 1 − 1/stride², 93.8% at stride 4 and 75.0% at \
                     stride 2: most of the gap is the stride itself, which is the paper's point",
                )
                .unit("points", 1)
                .compare(Comparison::new(
                    format!("{k_name} vs {zf_name}"),
                    Estimate::difference(k, z),
                ));
                section.claim(claim.blocked_if(first_layers, lacking));
            }
        }
        _ => {
            section.text(
                "Fig. 6's dead-filter claim is not checked: wire both a ZF and a Krizhevsky model.",
            );
        }
    }
    if let (Some((_, renorm, n, _)), Some((_, free, n_free, _))) =
        (counts.get("zf"), counts.get("no_renorm"))
    {
        section.claim(
            Claim::new(
                "Fig. 6 (a)",
                "without filter renormalisation a few conv1 filters dominate",
                "share of dominating conv1 filters without renormalisation minus with, % of \
                 filters (Newcombe's interval, one model each)",
            )
            .unit("% of filters", 1)
            .compare(proportion_comparison(
                format!("{free} of {n_free} vs {renorm} of {n} dominating"),
                (*free, *n_free),
                (*renorm, *n),
            )),
        );
    }
    Ok(section)
}
