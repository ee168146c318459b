//! Every stage kind of the default pipeline, end to end through the binary on a few hundred
//! generated images: read, preprocess, mean, train, deconvnet top-9, per-class folds, the
//! analyses, an architecture sweep, the filter comparison, transfer and the report.

use std::fs;

use tests::Project;
use tests::smoke::{PIPELINE, without_timings, write_smoke_inputs};

#[test]
fn the_smoke_pipeline_runs_every_stage_and_a_second_run_reuses_everything() {
    let project = Project::new(PIPELINE);
    write_smoke_inputs(&project);
    let run = project.zfnet(&["run", "--jobs", "2"]);
    let stdout = run.ok();
    assert!(stdout.contains("26 ran, 0 fresh, 0 failed"), "{stdout}");
    assert!(
        stdout.contains("1 epochs of `zf_small` on 180 images (6 classes)"),
        "{stdout}"
    );
    assert!(stdout.contains("scanned 60 images"), "{stdout}");

    let top9 = project.zfnet(&["show", "deconv.top9", "--format", "csv", "--limit", "1000"]);
    let rows: Vec<String> = top9.ok().lines().skip(1).map(str::to_owned).collect();
    assert_eq!(rows.len(), 5 * 2 * 9, "5 layers x 2 maps x top 9");
    let figures = top9
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("# deconv.top9: "))
        .and_then(|rest| rest.split(" (").next())
        .map(|p| std::path::Path::new(p).parent().unwrap().join("figures"))
        .unwrap();
    let mut names: Vec<String> = fs::read_dir(&figures)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "conv1_filters.png",
            "layer1.png",
            "layer2.png",
            "layer3.png",
            "layer4.png",
            "layer5.png"
        ]
    );

    let metrics = project.zfnet(&["show", "train.metrics", "--format", "json"]);
    assert!(metrics.ok().contains("\"epoch\":1"), "{}", metrics.stdout);

    let export = project.zfnet(&["export", "report.report", "reports/smoke"]);
    assert!(
        export
            .ok()
            .contains("exported report.report to reports/smoke"),
        "{}",
        export.stdout
    );
    let readme = fs::read_to_string(project.path("reports/smoke/README.md")).unwrap();
    for expected in [
        "# smoke",
        "## Claims",
        "**How verdicts are decided.**",
        "## Deviations from the paper",
        "## Models (Fig. 3)",
        "<details>",
        "## Training (§3): `train`",
        "| ten | 60 |",
        "38.4 / 16.5 — not comparable: different data",
        "![Layer 5](figures/deconv_layer5.png)",
        "## First-layer filters (§4.1, Fig. 6): `deconv`",
        "## Occlusion sensitivity (§4.2, Fig. 7): `occlusion`",
        "**Claim (Fig. 7 (b))**",
        "**Claim (Fig. 7 (d))**",
        "## Feature evolution during training (§4.1, Fig. 4)",
        "![feature evolution](figures/evolution_evolution.png)",
        "## Invariance (§4, Fig. 5): `invariance`",
        "**Claim (Fig. 5)**",
        "## Correspondence (§4.3, Table 1, Fig. 8): `correspondence`",
        "| random |",
        "## Per-layer probes (§5.3, Table 7): `probe`",
        "| SVM (7) |",
        "**Claim (Table 7)**",
        "## Overlap removal (§5.2): `dedup`",
        "## Architecture ablations (§4.1, §5.1, Tables 2-3)",
        "| `zf_small_no_conv34_fc67` |",
        "**Claim (Table 2)**",
        "**Claim (Table 3 (depth))**",
        "## First-layer filters compared (§4.1, Fig. 6 (a)-(c)): `filters`",
        "| (b) Krizhevsky | `ablation@arch=krizhevsky_small` | `krizhevsky_small` | 48 |",
        "**Claim (Fig. 6 (b)-(c))**",
        "**Claim (Fig. 6 (a))**",
        "![(e) ZF, layer 2: top-9 projections (left) beside their patches](figures/filters_e_zf_layer2.png)",
        "## Transfer with N images per class (§5.2, Tables 4-5, Fig. 9): `transfer`",
        "|  | 1/class | 3/class |",
        "![Fig. 9](figures/transfer_fig9.png)",
        "**Claim (Tables 4-5, Fig. 9)**",
        "## Not measured by this pipeline",
    ] {
        assert!(
            readme.contains(expected),
            "missing `{expected}` in the report:\n{readme}"
        );
    }
    assert!(
        project
            .path("reports/smoke/figures/deconv_conv1_filters.png")
            .exists()
    );
    check_snapshot(&readme);

    let again = project.zfnet(&["run"]);
    assert!(again.ok().contains("0 ran, 26 fresh"), "{}", again.stdout);
}

/// `abcdef012345`-style hashes (12 hex digits in backticks) as `hash`.
/// The committed smoke report (`tests/snapshots/smoke-report.md`) must match a fresh run's,
/// wall-clock seconds aside: a change that moves any number in the report shows up in review.
/// `UPDATE_SNAPSHOTS=1 cargo test -p tests --test smoke_pipeline` rewrites it.
fn check_snapshot(readme: &str) {
    let normalised = without_timings(readme);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/snapshots/smoke-report.md");
    if std::env::var("UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") {
        fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
        fs::write(path, &normalised).unwrap();
        return;
    }
    let committed = fs::read_to_string(path).unwrap_or_default();
    if committed != normalised {
        let first = committed
            .lines()
            .zip(normalised.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(normalised.lines().count()));
        panic!(
            "the smoke report differs from tests/snapshots/smoke-report.md from line {}:\n  committed: {:?}\n  fresh:     {:?}\nrerun with UPDATE_SNAPSHOTS=1 if the change is intended",
            first + 1,
            committed.lines().nth(first),
            normalised.lines().nth(first)
        );
    }
}
