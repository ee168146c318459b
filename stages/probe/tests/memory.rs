//! The probe's memory is bounded by its budget, not by the size of the layer (issue #16): a
//! layer with more dimensions than used rows is probed in the kernel form, from blocks of rows
//! as large as the budget allows (the same table for any block size); otherwise it reads only
//! the rows its folds use, once when they fit the budget, else streamed per fold. One test
//! per binary, since it reads this process's peak RSS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use stage_api::{Params, StageContext, StageKind};

/// `rows` rows of `dim` pseudo-random features, labels cycling over 10 classes.
fn write_layer(path: &Path, rows: usize, dim: usize) {
    artifacts::features::write_pseudo_random_features(
        path,
        "layer1",
        (rows, dim),
        10,
        0x2545_f491_4f6c_dd1d,
    )
    .unwrap();
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

/// Runs the probe with peak-RSS tracking; returns the bytes the peak grew by and the summary.
fn run_measured(ctx: &StageContext) -> (u64, Vec<String>) {
    let peak = stage_api::memory::PeakRss::start(true);
    let summary = probe::Probe.run(ctx).expect("the probe runs");
    let grown = peak
        .grown()
        .expect("the peak RSS is measurable here (Linux)");
    (grown, summary.lines)
}

#[test]
fn probing_a_layer_larger_than_the_budget_stays_under_it_and_an_impossible_one_is_refused() {
    use stage_api::ParamValue::Int;
    const MB: u64 = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("features");
    std::fs::create_dir_all(folder.join("scratch")).unwrap();
    // 2,000 rows of 32,768 features: 262 MB of f32 (the layer), where one fold of 2 training
    // and 2 test images per class uses 40 rows: fewer than the dimensions, so the kernel
    // form (the Gram matrix of the used rows, from blocks of at most 40 rows: 21 MB in f64).
    let (rows, dim) = (2_000, 32_768);
    write_layer(&folder.join("layer1.parquet"), rows, dim);
    let layer_bytes = (rows * dim * 4) as u64;

    let budget_mb: u64 = 64;
    let overrides = [
        ("n_train_per_class", Int(2)),
        ("max_test_per_class", Int(2)),
        ("folds", Int(1)),
        ("softmax_steps", Int(5)),
        ("memory_limit_mb", Int(budget_mb as i64)),
    ];
    let ctx = context(&folder, dir.path().join("table7.parquet"), &overrides);
    let (grown, lines) = run_measured(&ctx);
    assert!(
        grown < budget_mb * MB,
        "peak RSS grew by {} MB while probing a {} MB layer (budget {budget_mb} MB)",
        grown / MB,
        layer_bytes / MB
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("kernel form (Gram matrix of 40 rows, 1 block")),
        "{lines:?}"
    );

    // A budget below the smallest blocks is refused up front, with the numbers.
    let mut tight = overrides.to_vec();
    tight[4] = ("memory_limit_mb", Int(4));
    let ctx = context(&folder, dir.path().join("tight.parquet"), &tight);
    let error = probe::Probe.run(&ctx).unwrap_err().to_string();
    assert!(
        error.contains("MB in the kernel form: the Gram matrix of the 40 rows its folds use"),
        "{error}"
    );
    assert!(error.contains("16-row blocks of 32769 features"), "{error}");
    assert!(error.contains("memory_limit_mb is 4"), "{error}");

    // Three folds (~120 used rows): with 1,024 MB the Gram matrix comes from one block; with
    // 32 MB from blocks of ~28 rows, and the peak stays under those 32 MB. The same table.
    let mut folds3 = overrides.to_vec();
    folds3[2] = ("folds", Int(3));
    let results = [(32, "blocks of up to"), (1024, "1 block of")].map(|(budget, mode)| {
        folds3[4] = ("memory_limit_mb", Int(budget));
        let output = dir.path().join(format!("folds3_{budget}.parquet"));
        let (grown, lines) = run_measured(&context(&folder, output.clone(), &folds3));
        assert!(
            lines.iter().any(|line| line.contains(mode)),
            "{budget} MB: {lines:?}"
        );
        assert!(
            grown < budget as u64 * MB,
            "{budget} MB: peak RSS grew by {} MB",
            grown / MB
        );
        std::fs::read(output).unwrap()
    });
    assert!(
        results[0] == results[1],
        "the kernel form's table does not depend on the block size"
    );

    // A layer with more used rows than dimensions is probed on the rows themselves: read
    // once when every fold's rows fit beside one fold (1,024 MB), else streamed per fold
    // (20 MB: one fold of 600 rows, 1.5 MB, and a row group's reading, 16.8 MB, not the
    // ~1,400 used rows besides). The same table.
    let narrow = dir.path().join("narrow");
    std::fs::create_dir_all(narrow.join("scratch")).unwrap();
    write_layer(&narrow.join("layer6.parquet"), 4_000, 300);
    let primal = [
        ("n_train_per_class", Int(30)),
        ("max_test_per_class", Int(30)),
        ("folds", Int(3)),
        ("softmax_steps", Int(5)),
        ("memory_limit_mb", Int(0)),
    ];
    let results = [(20, "streamed per fold"), (1024, "read once")].map(|(budget, mode)| {
        let mut params = primal.to_vec();
        params[4] = ("memory_limit_mb", Int(budget));
        let output = dir.path().join(format!("primal_{budget}.parquet"));
        let summary = probe::Probe
            .run(&context(&narrow, output.clone(), &params))
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
    let mut params = primal.to_vec();
    params[4] = ("memory_limit_mb", Int(1));
    let error = probe::Probe
        .run(&context(
            &narrow,
            dir.path().join("primal_1.parquet"),
            &params,
        ))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("MB for fold 0: 600 train and test rows of 301 normalised features"),
        "{error}"
    );
}
