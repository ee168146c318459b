//! The registry of every stage kind this binary can run.

use orchestrator::Registry;

/// Environment variable that adds the test-only stage kinds (for the end-to-end tests).
pub const ENABLE_TEST_STAGES: &str = "ZFNET_ENABLE_TEST_STAGES";

pub fn registry() -> Registry {
    let mut registry = Registry::new();
    let stage_crates = [
        fashion_mnist::kinds(),
        image_datasets::kinds(),
        preprocess::kinds(),
        mean_image::kinds(),
        sample_per_class::kinds(),
        train::kinds(),
        deconv::kinds(),
        report::kinds(),
        occlusion::kinds(),
        probe::kinds(),
        transfer::kinds(),
        dedup::kinds(),
    ];
    for kind in stage_crates.into_iter().flatten() {
        registry.register(kind);
    }
    if std::env::var(ENABLE_TEST_STAGES).is_ok_and(|v| v == "1") {
        for kind in testkit::kinds() {
            registry.register(kind);
        }
    }
    registry
}
