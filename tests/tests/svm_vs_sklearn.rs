//! §5.3's linear SVM against the reference implementation of the same solver: scikit-learn's
//! LinearSVC (liblinear's dual coordinate descent, hinge loss) on identical features must
//! reach the same test accuracy within 0.5 points (issue #8). `make test` installs
//! scikit-learn (scripts/requirements-test.txt).

use std::path::Path;
use std::process::Command;

use linear_models::synthetic::clusters;
use linear_models::{SvmConfig, mean_class_accuracy, normalised_with_bias, predict, train_svm};

fn write_f64(path: &Path, values: &[f64]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

fn write_labels(path: &Path, labels: &[usize]) {
    let bytes: Vec<u8> = labels
        .iter()
        .flat_map(|&l| (l as i64).to_le_bytes())
        .collect();
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn our_linear_svm_matches_sklearn_linear_svc_within_half_a_point() {
    let (classes, dim) = (10, 256);
    let (train_values, train_labels) = clusters(classes, 30, dim, 0.6, 1);
    let (test_values, test_labels) = clusters(classes, 50, dim, 0.6, 2);
    let x_train = normalised_with_bias(&train_values, dim);
    let x_test = normalised_with_bias(&test_values, dim);
    let config = SvmConfig::default();
    let weights = train_svm(&x_train, &train_labels, classes, &config);
    let ours = mean_class_accuracy(&predict(&weights, &x_test), &test_labels, classes);

    let folder = tempfile::tempdir().unwrap();
    write_f64(&folder.path().join("x_train.f64"), &x_train);
    write_labels(&folder.path().join("y_train.i64"), &train_labels);
    write_f64(&folder.path().join("x_test.f64"), &x_test);
    write_labels(&folder.path().join("y_test.i64"), &test_labels);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/sklearn_linear_svc.py"
    );
    let output = Command::new("python3")
        .arg(script)
        .arg(folder.path())
        .args([
            (dim + 1).to_string(),
            config.c.to_string(),
            config.tolerance.to_string(),
            "1".to_owned(),
            // liblinear's random sample order moves its accuracy by about a point here
            // (62.8-63.8% over orders 0-3): compare with its mean over 5 orders.
            "5".to_owned(),
        ])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "scikit-learn must be installed (`make test` installs it): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reply: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let sklearn = reply["accuracy"].as_f64().unwrap();
    eprintln!(
        "mean per-class accuracy: ours {:.2}%, scikit-learn {} {:.2}% (mean of {})",
        100.0 * ours,
        reply["version"],
        100.0 * sklearn,
        reply["accuracies"]
    );
    // The task is hard enough that both make mistakes: the comparison means something.
    assert!(
        (0.3..0.97).contains(&ours),
        "accuracy {ours}: the generated task should be neither trivial nor hopeless"
    );
    assert!(
        (ours - sklearn).abs() <= 0.005,
        "ours {:.2}% vs scikit-learn {} {:.2}%",
        100.0 * ours,
        reply["version"],
        100.0 * sklearn
    );
}
