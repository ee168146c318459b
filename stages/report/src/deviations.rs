//! "Deviations from the paper", generated: the paper's training settings (held once, in
//! [`crate::paper::SETTINGS`]) against the params of the runs behind the report. Every
//! difference is listed with the paper's value, ours (with the runs that used it) and the
//! reason the pipeline gives for it (`deviation_reasons` in the report's params); a difference
//! without a reason says so, so a new deviation can never go unlisted.

use std::collections::BTreeMap;

use serde_json::Value;
use stage_api::UpstreamRun;

use crate::document::MdTable;
use crate::paper::{PaperSettingValue, SETTINGS};

/// Kinds that read a dataset, and whether that dataset is the paper's training data.
const DATA_KINDS: [(&str, bool); 6] = [
    ("imagenet", true),
    ("fashion_mnist", false),
    ("caltech101", false),
    ("caltech256", false),
    ("voc2012", false),
    ("image_folder", false),
];

/// The training crops a `train` run used: its `crops` param, or random crops for kinds that
/// predate the param.
fn crops_of(params: &Value) -> String {
    params
        .get("crops")
        .and_then(Value::as_str)
        .unwrap_or("random")
        .to_owned()
}

/// The runs' values of one setting: value as printed -> stage names.
fn values_of(param: &str, runs: &[UpstreamRun]) -> BTreeMap<String, Vec<String>> {
    let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for run in runs {
        let value = match param {
            "data" => DATA_KINDS
                .iter()
                .any(|(kind, _)| *kind == run.kind)
                .then(|| run.kind.clone()),
            "preprocess.size" => (run.kind == "preprocess")
                .then(|| run.params.get("size").map(json_text))
                .flatten(),
            "crops" => (run.kind == "train").then(|| crops_of(&run.params)),
            // A declared layer list is never the paper's architecture, whatever its name.
            "arch" if declares_layers(&run.params) => (run.kind == "train").then(|| {
                let name = run.params.get("arch").map(json_text).unwrap_or_default();
                format!("{name} (declared layers)")
            }),
            _ => (run.kind == "train")
                .then(|| run.params.get(param).map(json_text))
                .flatten(),
        };
        if let Some(value) = value {
            values.entry(value).or_default().push(run.stage.clone());
        }
    }
    // Beside ImageNet (the paper's training data), Caltech-101/256 and VOC 2012 are the
    // paper's own transfer and probe sets (§5), not other training data.
    if param == "data" && values.contains_key("imagenet") {
        values.retain(|kind, _| !PAPER_TRANSFER_KINDS.contains(&kind.as_str()));
    }
    values
}

/// The datasets the paper itself used beside ImageNet, for §5.
const PAPER_TRANSFER_KINDS: [&str; 3] = ["caltech101", "caltech256", "voc2012"];

fn declares_layers(params: &Value) -> bool {
    params
        .get("layers")
        .and_then(Value::as_array)
        .is_some_and(|layers| !layers.is_empty())
}

fn json_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), |f| format!("{f}")),
        other => other.to_string(),
    }
}

/// Whether our value equals the paper's.
fn same(param: &str, ours: &str, paper: &Option<PaperSettingValue>) -> bool {
    match (param, paper) {
        ("data", _) => DATA_KINDS
            .iter()
            .any(|(kind, paper)| *kind == ours && *paper),
        // Table 3's variants of the paper's two bases are the paper's architectures too.
        ("arch", _) if ours.ends_with("(declared layers)") => false,
        ("arch", _) => {
            let base = ours
                .strip_prefix("zf")
                .or_else(|| ours.strip_prefix("krizhevsky"));
            base.is_some_and(|rest| {
                rest.is_empty() || ["_no", "_conv", "_fc"].iter().any(|s| rest.starts_with(s))
            })
        }
        (_, Some(PaperSettingValue::Number(p))) => ours
            .parse::<f64>()
            .is_ok_and(|o| (o - p).abs() <= 1e-12 * p.abs().max(1.0)),
        (_, Some(PaperSettingValue::Text(p))) => ours == *p,
        // A procedure (annealing by hand): ours always differs in kind.
        (_, None) => false,
    }
}

/// `train`, `ablation` (27 runs): swept instances grouped under their base name.
fn stages_text(stages: &[String]) -> String {
    let mut groups: Vec<(String, usize)> = Vec::new();
    for stage in stages {
        let base = stage.split('@').next().unwrap_or(stage).to_owned();
        match groups.iter_mut().find(|(b, _)| *b == base) {
            Some((_, n)) => *n += 1,
            None => groups.push((base, 1)),
        }
    }
    groups
        .into_iter()
        .map(|(base, n)| {
            if n > 1 {
                format!("`{base}` ({n} runs)")
            } else {
                format!("`{base}`")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The deviations table (setting | the paper | ours | reason); `None` when no run differs.
pub fn deviations(runs: &[UpstreamRun], reasons: &[String]) -> Option<MdTable> {
    let reasons: BTreeMap<&str, &str> = reasons
        .iter()
        .filter_map(|r| r.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let mut table = MdTable::new(&["setting", "the paper (§3)", "ours", "why"]);
    for setting in SETTINGS {
        let values = values_of(setting.param, runs);
        let differing: Vec<String> = values
            .iter()
            .filter(|(value, _)| !same(setting.param, value, &setting.value))
            .map(|(value, stages)| format!("`{value}` in {}", stages_text(stages)))
            .collect();
        if differing.is_empty() {
            continue;
        }
        table.row(vec![
            format!("{} (`{}`)", setting.what, setting.param),
            setting.text.to_owned(),
            differing.join("; "),
            reasons.get(setting.param).map_or(
                "**no reason given** (add it to the report's `deviation_reasons`)".to_owned(),
                |r| (*r).to_owned(),
            ),
        ]);
    }
    (!table.rows.is_empty()).then_some(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stage: &str, kind: &str, params: Value) -> UpstreamRun {
        UpstreamRun {
            stage: stage.to_owned(),
            kind: kind.to_owned(),
            kind_version: 1,
            cache_key: "k".to_owned(),
            duration_s: 1.0,
            started_unix_s: 0.0,
            params,
            ran_on: None,
        }
    }

    fn paper_train() -> Value {
        serde_json::json!({
            "arch": "zf", "crops": "ten", "epochs": 70, "batch_size": 128,
            "learning_rate": 0.01, "momentum": 0.9, "weight_decay": 0.0, "init_std": 0.01,
            "filter_rms_radius": 0.1, "lr_schedule": "plateau"
        })
    }

    #[test]
    fn every_setting_that_differs_is_listed_with_its_runs_and_reason() {
        let mut small = paper_train();
        small["epochs"] = 3.into();
        small["weight_decay"] = 5e-4.into();
        small["arch"] = "zf_56".into();
        let runs = [
            run("files", "fashion_mnist", serde_json::json!({})),
            run("prep", "preprocess", serde_json::json!({"size": 32})),
            run("train", "train", small.clone()),
            run(
                "ablation@arch=zf_small_no_fc7,seed=1",
                "train",
                small.clone(),
            ),
            run("ablation@arch=zf_small_no_fc7,seed=2", "train", small),
        ];
        let reasons = vec!["epochs: 70 epochs do not fit 2 cores".to_owned()];
        let md = deviations(&runs, &reasons).unwrap().render();
        assert!(md.contains("| epochs (`epochs`) | 70 | `3` in `train`, `ablation` (2 runs) | 70 epochs do not fit 2 cores |"), "{md}");
        assert!(
            md.contains("| weight decay (`weight_decay`) | none stated (0) | `0.0005` in"),
            "{md}"
        );
        assert!(md.contains("**no reason given**"), "{md}");
        assert!(md.contains("`fashion_mnist` in `files`"), "{md}");
        assert!(md.contains("`32` in `prep`"), "{md}");
        assert!(
            !md.contains("momentum"),
            "equal settings are not deviations: {md}"
        );
        // The annealing procedure always differs: ours is automatic.
        assert!(md.contains("learning-rate annealing"), "{md}");
    }

    #[test]
    fn the_papers_own_settings_leave_only_the_procedures() {
        // The paper's pipeline: ImageNet trains; Caltech-101/256 and VOC 2012 are its own §5
        // sets (the first run of pipelines/paper.yaml listed them as other training data).
        let runs = [
            run("files", "imagenet", serde_json::json!({})),
            run("caltech101_files", "caltech101", serde_json::json!({})),
            run("caltech256_files", "caltech256", serde_json::json!({})),
            run("voc_train_files", "voc2012", serde_json::json!({})),
            run("prep", "preprocess", serde_json::json!({"size": 256})),
            run("train", "train", paper_train()),
            run("ablation@arch=krizhevsky_no_fc67", "train", {
                let mut p = paper_train();
                p["arch"] = "krizhevsky_no_fc67".into();
                p
            }),
        ];
        let md = deviations(&runs, &[]).unwrap().render();
        assert_eq!(md.lines().count(), 3, "{md}");
        assert!(md.contains("learning-rate annealing"), "{md}");
        // The paper's name on a declared layer list is still a deviation.
        let mut declared = paper_train();
        declared["layers"] = serde_json::json!(["input 56", "conv conv1 8 3x3/1"]);
        let runs = [run("train", "train", declared)];
        let md = deviations(&runs, &[]).unwrap().render();
        assert!(md.contains("`zf (declared layers)` in `train`"), "{md}");
        // Without ImageNet, Caltech is the training data: a deviation.
        let runs = [
            run("caltech101_files", "caltech101", serde_json::json!({})),
            run("train", "train", paper_train()),
        ];
        let md = deviations(&runs, &[]).unwrap().render();
        assert!(md.contains("`caltech101` in `caltech101_files`"), "{md}");
    }
}
