//! Table 6 (§5.2): multi-label transfer to PASCAL VOC 2012, average precision per class.

use super::*;

/// Table 6: per-class average precision of a softmax on the pretrained features.
pub fn table6_section(path: &Path) -> Result<Section> {
    let table = TransferApRow::read(path)?;
    let names = &field!(table, class_name);
    let ap = &field!(table, average_precision);
    let positives = &field!(table, positives);
    let mut section = Section::new(
        "Multi-label transfer",
        "§5.2, Table 6",
        Some(stage_of(path)),
    );
    section.text(
        "A softmax on the frozen layer-7 features, average precision per class (VOC 2010+ \
         protocol: all-points interpolation, difficult-only images ignored). The paper trained \
         on VOC 2012 train+val and scored test on the evaluation server, 3.2 points of mean AP \
         below the leading method (Yan et al. 2012) and ahead of it on 5 classes; the test \
         labels are not public, so a local run tests on `val`.",
    );
    let mut md = MdTable::new(&["class", "AP (%)", "test positives"]);
    for i in 0..table.len() {
        md.row(vec![
            names[i].clone(),
            if ap[i].is_finite() {
                format!("{:.1}", 100.0 * ap[i])
            } else {
                "– (no positive)".to_owned()
            },
            positives[i].to_string(),
        ]);
    }
    let measured: Vec<f64> = ap.iter().copied().filter(|v| v.is_finite()).collect();
    md.row(vec![
        "**mean**".to_owned(),
        format!(
            "**{:.1}**",
            100.0 * measured.iter().sum::<f64>() / measured.len().max(1) as f64
        ),
        String::new(),
    ]);
    section.table(md);
    Ok(section)
}
