//! Tables 2 and 3 (§4.1, §5.1): the architecture sweep, its runs grouped by architecture beside the paper's numbers, and the claims about removing layers and widening them.

use super::*;

/// How close to chance (in points of top-1 error) a run's final validation error must be for
/// the run to count as one that did not train.
pub const DID_NOT_TRAIN_MARGIN: f64 = 0.05;

/// One trained model of the sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub architecture: String,
    pub stage: String,
    /// Last epoch's training top-1 error (dropout active, as in training).
    pub train_top1: f64,
    /// Validation errors of the final model, 10-crop average (§3).
    pub val_top1: f64,
    pub val_top5: f64,
    /// Output classes (from the model), for the chance level; `None` when unknown.
    pub classes: Option<usize>,
}

impl Run {
    /// Chance-level top-1 error, 1 − 1/classes.
    pub fn chance(&self) -> Option<f64> {
        self.classes
            .filter(|&c| c >= 2)
            .map(|c| 1.0 - 1.0 / c as f64)
    }

    /// A run whose final validation top-1 error is within [`DID_NOT_TRAIN_MARGIN`] of chance
    /// (or is not a number) is an optimisation failure, not a measurement of its architecture.
    pub fn did_not_train(&self) -> bool {
        !self.val_top1.is_finite()
            || self
                .chance()
                .is_some_and(|chance| self.val_top1 >= chance - DID_NOT_TRAIN_MARGIN)
    }
}

/// The runs of one architecture (one per seed).
#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    pub architecture: String,
    pub runs: Vec<Run>,
}

impl Variant {
    pub fn trained(&self) -> Vec<&Run> {
        self.runs.iter().filter(|r| !r.did_not_train()).collect()
    }

    pub fn failed(&self) -> usize {
        self.runs.len() - self.trained().len()
    }

    /// A statistic over the runs that trained, in percent.
    fn summary(&self, f: fn(&Run) -> f64) -> Option<Summary> {
        Summary::of(
            &self
                .trained()
                .iter()
                .map(|r| 100.0 * f(r))
                .collect::<Vec<_>>(),
        )
    }

    pub fn val_top1(&self) -> Option<Summary> {
        self.summary(|r| r.val_top1)
    }

    /// "2 of 3 runs of `x` did not train (...)", or `None` when all trained.
    fn failure_text(&self) -> Option<String> {
        let failed = self.failed();
        (failed > 0).then(|| {
            format!(
                "{failed} of {} runs of `{}` did not train (val top-1 error {}; chance {})",
                self.runs.len(),
                self.architecture,
                self.runs
                    .iter()
                    .filter(|r| r.did_not_train())
                    .map(|r| format!("{:.1}%", 100.0 * r.val_top1))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.runs[0]
                    .chance()
                    .map_or("unknown".to_owned(), |c| format!("{:.1}%", 100.0 * c))
            )
        })
    }
}

/// Groups runs by architecture, in the order architectures first appear.
pub fn group_by_architecture(runs: &[Run]) -> Vec<Variant> {
    let mut variants: Vec<Variant> = Vec::new();
    for run in runs {
        match variants
            .iter_mut()
            .find(|v| v.architecture == run.architecture)
        {
            Some(v) => v.runs.push(run.clone()),
            None => variants.push(Variant {
                architecture: run.architecture.clone(),
                runs: vec![run.clone()],
            }),
        }
    }
    variants
}

/// The architecture a swept train instance ran: `name@arch=X[,...]` gives X, else the name.
pub fn architecture_of_stage(stage: &str) -> String {
    stage
        .split_once('@')
        .and_then(|(_, labels)| {
            labels
                .split(',')
                .find_map(|label| label.strip_prefix("arch=").map(str::to_owned))
        })
        .unwrap_or_else(|| stage.to_owned())
}

/// The paper's Table 3 row for an architecture name: the removal rows are on Krizhevsky's
/// net in the paper, the widening rows on both.
pub fn paper_table3_row(architecture: &str) -> Option<&'static Table3Row> {
    // Scaled bases first: `zf_56` must not read as `zf` with a suffix `_56`.
    let (zf, scaled, rest) = [
        ("zf_small", true, true),
        ("zf_56", true, true),
        ("zf", true, false),
        ("krizhevsky_small", false, true),
        ("krizhevsky_56", false, true),
        ("krizhevsky", false, false),
    ]
    .into_iter()
    .find_map(|(base, zf, scaled)| Some((zf, scaled, architecture.strip_prefix(base)?)))?;
    let base_fc = if scaled { 512 } else { 4096 };
    let fc_width: Option<usize> = rest.rsplit_once("_fc").and_then(|(_, w)| w.parse().ok());
    let wider_conv = rest.contains("_conv");
    Some(match (rest, zf) {
        ("", false) => &paper::KRIZHEVSKY,
        ("", true) => &paper::ZF,
        ("_no_conv34", _) => &paper::NO_CONV34,
        ("_no_fc7", _) => &paper::NO_FC7,
        ("_no_fc67", _) => &paper::NO_FC67,
        ("_no_conv34_fc67", _) => &paper::NO_CONV34_FC67,
        _ if wider_conv && fc_width.is_some_and(|w| w > base_fc) => &paper::ZF_CONV_WIDE_FC8192,
        _ if wider_conv && fc_width.is_none() => &paper::ZF_CONV_WIDE,
        _ => match (fc_width.map(|w| w.cmp(&base_fc)), zf) {
            (Some(std::cmp::Ordering::Less), false) => &paper::KRIZHEVSKY_FC2048,
            (Some(std::cmp::Ordering::Greater), false) => &paper::KRIZHEVSKY_FC8192,
            (Some(std::cmp::Ordering::Less), true) => &paper::ZF_FC2048,
            (Some(std::cmp::Ordering::Greater), true) => &paper::ZF_FC8192,
            _ => return None,
        },
    })
}

/// The 10-crop validation (top-1, top-5) errors of a `train.evaluation` table; NaN without a
/// 10-crop row.
pub fn ten_crop_errors(path: &Path) -> Result<(f64, f64)> {
    let evaluation = EvaluationRow::read(path)?;
    Ok(evaluation
        .iter()
        .find(|row| row.crops == "ten")
        .map_or((f64::NAN, f64::NAN), |row| (row.top1_error, row.top5_error)))
}

/// Reads the sweep's (metrics, evaluation) pairs; each run's architecture comes from the
/// model at the same position of `models` (with its class count), else from the stage name.
pub fn read_runs(pairs: &[(PathBuf, Option<PathBuf>)], models: &[PathBuf]) -> Result<Vec<Run>> {
    let mut runs = Vec::new();
    for (i, (metrics_path, evaluation_path)) in pairs.iter().enumerate() {
        let metrics = TrainMetricsRow::read(metrics_path)?;
        let train_top1 = metrics.last().map_or(f64::NAN, |m| m.train_top1_error);
        let (val_top1, val_top5) = match evaluation_path {
            Some(path) => ten_crop_errors(path)?,
            None => (f64::NAN, f64::NAN),
        };
        let stage = stage_of(metrics_path);
        let (architecture, classes) = match models.get(i) {
            Some(model) => {
                let a = ModelArchitecture::read(model)?;
                (a.name, Some(a.classes))
            }
            None => (architecture_of_stage(&stage), None),
        };
        runs.push(Run {
            architecture,
            stage,
            train_top1,
            val_top1,
            val_top5,
            classes,
        });
    }
    Ok(runs)
}

/// The Welch difference `a − b` of two variants' validation top-1 errors over the runs that
/// trained (missing when either has none).
pub(super) fn variant_difference(label: String, a: &Variant, b: &Variant) -> Comparison {
    match (a.val_top1(), b.val_top1()) {
        (Some(a), Some(b)) => Comparison::new(label, Estimate::difference(&a, &b)),
        _ => Comparison::missing(label, "no run trained"),
    }
}

pub(super) fn cell(s: Option<Summary>) -> String {
    s.map_or("–".to_owned(), |s| s.format(1.0, 1))
}

/// Tables 2 and 3 from an architecture sweep, with their claims. `architectures` gives each
/// model's layers (by name) for the first-layer checks.
pub fn ablation_section(
    runs: &[Run],
    architectures: &BTreeMap<String, ModelArchitecture>,
    paper_scale: bool,
) -> Section {
    let variants = group_by_architecture(runs);
    let seeds = variants.iter().map(|v| v.runs.len()).max().unwrap_or(1);
    let mut section = Section::new("Architecture ablations", "§4.1, §5.1, Tables 2-3", None);
    section.text(format!(
        "Each architecture trained with the same data and epochs, {} with \
         different seeds (initial weights, shuffles, crops, dropout); errors in %, the \
         validation errors from the 10-crop average, mean ± std over the runs that trained \
         (n in the *runs* column). A run whose final validation top-1 error is within {} points \
         of chance did not train: it is counted in *runs* and left out of the means. The \
         paper's rows (ImageNet 2012, 70 epochs) are quoted beside the matching variant{}.",
        if seeds == 1 {
            "once".to_owned()
        } else {
            format!("{seeds} times")
        },
        100.0 * DID_NOT_TRAIN_MARGIN,
        if paper_scale {
            ""
        } else {
            " for the pattern across rows: different data, not comparable in value. The paper \
             removes layers from Krizhevsky's net; here they are removed from the base of the \
             sweep"
        }
    ));
    let mut table = MdTable::new(&[
        "architecture",
        "runs (trained of all)",
        "train top-1",
        "val top-1",
        "val top-5",
        "paper row",
        "paper train top-1",
        "paper val top-1",
        "paper val top-5",
    ]);
    let mut any_dagger = false;
    for v in &variants {
        let (row, paper): (String, [String; 3]) = match paper_table3_row(&v.architecture) {
            Some(p) => {
                any_dagger |= p.errors.iter().any(|e| !e.legible);
                (p.label.to_owned(), p.errors.map(|e| e.to_string()))
            }
            None => (
                "–".to_owned(),
                ["–".to_owned(), "–".to_owned(), "–".to_owned()],
            ),
        };
        let [a, b, c] = paper;
        table.row(vec![
            format!("`{}`", v.architecture),
            format!("{} of {}", v.trained().len(), v.runs.len()),
            cell(v.summary(|r| r.train_top1)),
            cell(v.val_top1()),
            cell(v.summary(|r| r.val_top5)),
            row,
            a,
            b,
            c,
        ]);
    }
    section.table(table);
    if any_dagger {
        section.text(paper::DAGGER_NOTE);
    }

    // Table 2: the two base networks, and whether they differ the way the paper's do.
    let base = |krizhevsky: bool| {
        variants.iter().find(|v| {
            v.architecture.starts_with("krizhevsky") == krizhevsky
                && paper_table3_row(&v.architecture).is_some_and(|row| row.label.starts_with("our"))
        })
    };
    let first_layers = |v: &Variant, krizhevsky: bool| match architectures.get(&v.architecture) {
        Some(a) => a.paper_first_layers(krizhevsky),
        None => Err(format!(
            "the layers of `{}` are unknown (no model wired)",
            v.architecture
        )),
    };
    if let (Some(k), Some(z)) = (base(true), base(false)) {
        let mut t2 = MdTable::new(&[
            "",
            "val top-1",
            "val top-5",
            "paper val top-1",
            "paper val top-5",
        ]);
        t2.row(vec![
            format!("`{}` (Krizhevsky's first layers)", k.architecture),
            cell(k.val_top1()),
            cell(k.summary(|r| r.val_top5)),
            paper::KRIZHEVSKY.errors[1].to_string(),
            paper::KRIZHEVSKY.errors[2].to_string(),
        ]);
        t2.row(vec![
            format!("`{}` (Fig. 3)", z.architecture),
            cell(z.val_top1()),
            cell(z.summary(|r| r.val_top5)),
            paper::ZF.errors[1].to_string(),
            paper::ZF.errors[2].to_string(),
        ]);
        section.text("**Table 2** (one convnet each; mean ± std over the runs that trained):");
        section.table(t2);
        let mut claim = Claim::new(
            "Table 2",
            "the ZF net (Fig. 3: conv1 7x7/2, conv2 stride 2) has lower error than Krizhevsky's \
             (conv1 11x11/4): 38.4 vs 40.5% val top-1",
            &format!(
                "val top-1 error of `{}` minus `{}`, points (Welch over seeds)",
                k.architecture, z.architecture
            ),
        )
        .unit("points", 1)
        .paper_effect(format!(
            "{:+.1} points",
            paper::KRIZHEVSKY.errors[1]
                .minus(&paper::ZF.errors[1])
                .value
        ));
        let blockers: Vec<String> = [first_layers(k, true).err(), first_layers(z, false).err()]
            .into_iter()
            .flatten()
            .chain([k.failure_text(), z.failure_text()].into_iter().flatten())
            .collect();
        claim = claim
            .compare(variant_difference(
                format!("`{}` − `{}`", k.architecture, z.architecture),
                k,
                z,
            ))
            .blocked_if("not the paper's comparison", blockers);
        section.claim(claim);
    }

    // Table 3's finding: depth matters. The base is the sweep's net that has the removal
    // variants.
    let named = |name: String| variants.iter().find(|v| v.architecture == name);
    let trio = variants.iter().find_map(|base| {
        Some((
            base,
            named(format!("{}_no_fc67", base.architecture))?,
            named(format!("{}_no_conv34_fc67", base.architecture))?,
            named(format!("{}_no_conv34", base.architecture)),
        ))
    });
    match trio {
        Some((base, no_fc, no_both, no_conv)) => {
            let mut claim = Claim::new(
                "Table 3 (depth)",
                "removing both fc6, fc7 and conv3, conv4 leaves a 4-layer model much worse than \
                 removing either alone: \"overall depth matters\"",
                &format!(
                    "val top-1 error of `{}` minus each single removal, points (Welch over seeds)",
                    no_both.architecture
                ),
            )
            .unit("points", 1)
            .paper_effect({
                let both = paper::NO_CONV34_FC67.errors[1];
                let (a, b) = (
                    both.minus(&paper::NO_FC67.errors[1]),
                    both.minus(&paper::NO_CONV34.errors[1]),
                );
                format!(
                    "{:+.1}{} vs removed layers 6,7; {:+.1}{} vs removed layers 3,4 \
                     (Krizhevsky's net)",
                    a.value,
                    a.mark(),
                    b.value,
                    b.mark()
                )
            });
            for single in [Some(no_fc), no_conv].into_iter().flatten() {
                claim = claim.compare(variant_difference(
                    format!("vs `{}`", single.architecture),
                    no_both,
                    single,
                ));
            }
            let failures: Vec<String> = [Some(base), Some(no_fc), Some(no_both), no_conv]
                .into_iter()
                .flatten()
                .filter_map(Variant::failure_text)
                .collect();
            section.claim(claim.blocked_if("optimisation failures, not evidence", failures));
            // Bigger middle conv layers help (Table 3, the conv3-5 widening row).
            if let Some(wide) = variants.iter().find(|v| {
                v.architecture
                    .starts_with(&format!("{}_conv", base.architecture))
                    && !v.architecture.contains("_fc")
            }) {
                let mut claim = Claim::new(
                    "Table 3 (width)",
                    "\"bigger middle conv layers help\": conv3,4,5 at 512,1024,512 maps lower \
                     the error of the Fig. 3 model",
                    &format!(
                        "val top-1 error of `{}` minus `{}`, points (Welch over seeds)",
                        base.architecture, wide.architecture
                    ),
                )
                .unit("points", 1)
                .paper_effect(format!(
                    "{:+.1} points",
                    paper::ZF.errors[1]
                        .minus(&paper::ZF_CONV_WIDE.errors[1])
                        .value
                ));
                claim = claim.compare(variant_difference(
                    format!("`{}` − `{}`", base.architecture, wide.architecture),
                    base,
                    wide,
                ));
                let failures: Vec<String> = [base, wide]
                    .into_iter()
                    .filter_map(Variant::failure_text)
                    .collect();
                section.claim(claim.blocked_if("", failures));
            }
        }
        None => {
            section.text(
                "Table 3's depth claim is not checked: the sweep needs a base, its `_no_fc67` \
                 and its `_no_conv34_fc67` variants.",
            );
        }
    }
    section
}
