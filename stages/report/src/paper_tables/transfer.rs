//! Tables 4 and 5, Fig. 9 (§5.2): transfer with N training images per class, pretrained against trained from scratch.

use super::*;

/// Which of the paper's transfer tables the report compares against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaperTransferTable {
    None,
    Caltech101,
    Caltech256,
}

/// The paper's (scratch, pretrained) accuracy per N, Tables 4 and 5 (all legible).
pub(super) fn paper_transfer_rows(
    paper: PaperTransferTable,
) -> BTreeMap<i64, (PaperValue, PaperValue)> {
    use crate::paper::v;
    match paper {
        PaperTransferTable::None => BTreeMap::new(),
        PaperTransferTable::Caltech101 => {
            BTreeMap::from([(15, (v(22.8), v(83.8))), (30, (v(46.5), v(86.5)))])
        }
        PaperTransferTable::Caltech256 => BTreeMap::from([
            (15, (v(9.0), v(65.7))),
            (30, (v(22.5), v(70.6))),
            (45, (v(31.2), v(72.7))),
            (60, (v(38.8), v(74.2))),
        ]),
    }
}

/// Tables 4-5 shaped rows (method x N, mean ± std over folds), Fig. 9 and the claim at
/// every N.
pub fn transfer_section(
    table_path: &Path,
    figures_folder: Option<&Path>,
    figures: &Path,
    paper: PaperTransferTable,
) -> Result<Section> {
    let table = TransferRow::read(table_path)?;
    let p = table_path;
    let stage = stage_of(p);
    let methods = &field!(table, method);
    let ns = &field!(table, n_per_class);
    let folds_col = &field!(table, fold);
    let accuracy = &field!(table, accuracy);
    let folds: std::collections::BTreeSet<i64> = folds_col.iter().copied().collect();
    let mut columns: Vec<i64> = ns.to_vec();
    columns.sort_unstable();
    columns.dedup();
    // method, N -> fold -> accuracy (%).
    let by_fold = |method: &str, n: i64| -> BTreeMap<i64, f64> {
        (0..table.len())
            .filter(|&i| methods[i] == method && ns[i] == n)
            .map(|i| (folds_col[i], 100.0 * accuracy[i]))
            .collect()
    };
    let summary =
        |method: &str, n: i64| Summary::of(&by_fold(method, n).into_values().collect::<Vec<_>>());
    let mut section = Section::new(
        "Transfer with N images per class",
        "§5.2, Tables 4-5, Fig. 9",
        Some(stage.clone()),
    );
    section.text(format!(
        "Mean per-class accuracy (%) on the held-out classes, mean ± std over n = {} folds \
         (both arms see the same images in each fold). *Pretrained*: layers 1-7 frozen, a new \
         softmax on layer-7 features; *non-pretrained*: the same architecture trained from \
         scratch on the same N images per class.",
        folds.len()
    ));
    let paper_rows = paper_transfer_rows(paper);
    let mut header = vec![String::new()];
    header.extend(columns.iter().map(|n| format!("{n}/class")));
    let mut md = MdTable::new(&header);
    for (method, label, pick) in [
        ("scratch", "non-pretrained convnet", 0),
        ("pretrained", "pretrained convnet", 1),
    ] {
        let mut cells = vec![label.to_owned()];
        for &n in &columns {
            cells.push(match summary(method, n) {
                Some(s) => match paper_rows.get(&n) {
                    Some(pair) => {
                        let pv = if pick == 0 { pair.0 } else { pair.1 };
                        format!(
                            "{} (paper {pv}, {:+.1})",
                            s.format(1.0, 1),
                            s.mean - pv.value
                        )
                    }
                    None => s.format(1.0, 1),
                },
                None => "–".to_owned(),
            });
        }
        md.row(cells);
    }
    section.table(md);
    section.text(
        "The paper (ImageNet-pretrained; not comparable in value unless the target set is \
         Caltech): Table 4, Caltech-101 — non-pretrained 22.8 ± 1.5 (15/class), 46.5 ± 1.7 \
         (30/class); pretrained 83.8 ± 0.5, 86.5 ± 0.5. Table 5, Caltech-256 — non-pretrained \
         9.0 / 22.5 / 31.2 / 38.8, pretrained 65.7 / 70.6 / 72.7 / 74.2 (15/30/45/60 per class).",
    );
    if let Some(folder) = figures_folder {
        for (_, target) in copy_figures(folder, &stage, figures)? {
            section.text(format!(
                "**Fig. 9**: mean per-class accuracy against training images per class, one \
                 line per method (the legend names them), bars ±1 std over the folds; x from 0 \
                 to {} images per class, y from 0 to 100%.",
                columns.last().copied().unwrap_or(0)
            ));
            section.figure("Fig. 9", &target, false);
        }
    }
    let mut claim = Claim::new(
        "Tables 4-5, Fig. 9",
        "the ImageNet-pretrained convnet beats the same network trained from scratch at every \
         number of training images per class (by 35 to 61 points in Tables 4-5)",
        "pretrained minus scratch accuracy at each N, points (paired over folds)",
    )
    .unit("points", 1)
    .paper_effect(
        "+61.0 (15/class) and +40.0 (30/class) on Caltech-101; +56.7, +48.1, +41.5, +35.4 \
         (15-60/class) on Caltech-256",
    );
    let mut any = false;
    for &n in &columns {
        let (pre, scratch) = (by_fold("pretrained", n), by_fold("scratch", n));
        let shared: Vec<i64> = pre
            .keys()
            .filter(|f| scratch.contains_key(f))
            .copied()
            .collect();
        any |= !scratch.is_empty();
        if shared.is_empty() {
            // An N the table has for one arm only: the claim cannot pass over it.
            if !scratch.is_empty() || !pre.is_empty() {
                claim = claim.compare(Comparison::missing(
                    format!("N = {n}"),
                    "the two arms share no fold at this N",
                ));
            }
            continue;
        }
        let a: Vec<f64> = shared.iter().map(|f| pre[f]).collect();
        let b: Vec<f64> = shared.iter().map(|f| scratch[f]).collect();
        match Estimate::paired(&a, &b) {
            Some(e) => claim = claim.compare(Comparison::new(format!("N = {n}"), e)),
            None => claim = claim.compare(Comparison::missing(format!("N = {n}"), "no fold")),
        }
    }
    if !any {
        claim = claim.blocked("the run has no scratch arm (`scratch: false`)");
    }
    section.claim(claim);
    Ok(section)
}
