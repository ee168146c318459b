//! The probe's memory is bounded by what one fold needs, not by the size of the layer: it
//! reads only the rows its folds use, once when they fit the budget, else streamed per fold
//! (issue #16). One test per
//! binary, since it reads this process's peak RSS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use artifacts::Provenance;
use artifacts::features::FeaturesWriter;
use stage_api::{Params, StageContext, StageKind};

/// Peak and current resident set of this process, in bytes, from /proc/self/status.
fn resident_bytes() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .expect("a kB field")
            * 1024
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Writes `rows` rows of `dim` pseudo-random features (labels cycling over 10 classes) a few
/// rows at a time, so that writing holds little memory itself.
fn write_layer(path: &Path, rows: usize, dim: usize) {
    let mut writer = FeaturesWriter::create(path, &Provenance::ad_hoc("t"), "layer1", dim).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for start in (0..rows).step_by(16) {
        let n = 16.min(rows - start);
        let ids: Vec<i64> = (start..start + n).map(|i| i as i64).collect();
        let labels: Vec<i32> = (start..start + n).map(|i| (i % 10) as i32).collect();
        let values: Vec<f32> = (0..n * dim)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                (state >> 40) as f32 / (1u64 << 24) as f32
            })
            .collect();
        writer.push(&ids, &labels, &values).unwrap();
    }
    writer.finish().unwrap();
}

fn context(
    folder: &Path,
    output: PathBuf,
    overrides: &[(&str, stage_api::ParamValue)],
) -> StageContext {
    let params = Params::defaults_with(&probe::Probe.params(), overrides);
    StageContext::for_tests(
        params,
        BTreeMap::from([("features".to_owned(), vec![folder.to_path_buf()])]),
        BTreeMap::from([("table7".to_owned(), output)]),
        folder.join("scratch"),
    )
}

#[test]
fn probing_a_layer_larger_than_the_budget_stays_under_it_and_an_impossible_fold_is_refused() {
    use stage_api::ParamValue::Int;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("features");
    std::fs::create_dir_all(folder.join("scratch")).unwrap();
    // 2,000 rows of 32,768 features: 262 MB of f32 (the layer), where one fold of 2 training
    // and 2 test images per class needs 40 rows (10.5 MB in f64), the classifiers' weights
    // for 10 classes (SVM and softmax, 5.3 MB) and a row group (4.3 MB).
    let (rows, dim) = (2_000, 32_768);
    write_layer(&folder.join("layer1.parquet"), rows, dim);
    let layer_bytes = (rows * dim * 4) as u64;

    let budget_mb: u64 = 64;
    const MB: u64 = 1_000_000;
    let overrides = [
        ("n_train_per_class", Int(2)),
        ("max_test_per_class", Int(2)),
        ("folds", Int(1)),
        ("softmax_steps", Int(5)),
        ("memory_limit_mb", Int(budget_mb as i64)),
    ];
    let ctx = context(&folder, dir.path().join("table7.parquet"), &overrides);
    // Peak RSS from here on (Linux: writing 5 to clear_refs resets VmHWM to VmRSS).
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS");
    let (_, before) = resident_bytes();
    probe::Probe.run(&ctx).expect("the probe runs");
    let (peak, _) = resident_bytes();
    let grown = peak.saturating_sub(before);
    assert!(
        grown < budget_mb * MB,
        "peak RSS grew by {} MB while probing a {} MB layer (budget {budget_mb} MB)",
        grown / MB,
        layer_bytes / MB
    );

    // A budget below one fold's need is refused up front, with the numbers.
    let mut tight = overrides.to_vec();
    tight[4] = ("memory_limit_mb", Int(4));
    let ctx = context(&folder, dir.path().join("tight.parquet"), &tight);
    let error = probe::Probe.run(&ctx).unwrap_err().to_string();
    assert!(
        error.contains("MB for fold 0: 40 train and test rows of 32769 normalised features"),
        "{error}"
    );
    assert!(error.contains("memory_limit_mb is 4"), "{error}");

    // Three folds: with room for every fold's rows they are read once; with 30 MB (one fold
    // and a row group, not all three folds' ~100 rows besides) each fold streams its rows.
    // The same table either way.
    let mut folds3 = overrides.to_vec();
    folds3[2] = ("folds", Int(3));
    let results = [(30, "streamed per fold"), (1024, "read once")].map(|(budget, mode)| {
        folds3[4] = ("memory_limit_mb", Int(budget));
        let output = dir.path().join(format!("folds3_{budget}.parquet"));
        let summary = probe::Probe
            .run(&context(&folder, output.clone(), &folds3))
            .expect("the probe runs");
        assert!(
            summary.lines.iter().any(|line| line.contains(mode)),
            "{budget} MB: {:?}",
            summary.lines
        );
        std::fs::read(output).unwrap()
    });
    assert!(
        results[0] == results[1],
        "streamed and read-once folds give the same table"
    );
}
