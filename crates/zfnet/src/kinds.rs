//! The registry of every stage kind this binary can run.

use orchestrator::Registry;

/// Environment variable that adds the test-only stage kinds (for the end-to-end tests).
pub const ENABLE_TEST_STAGES: &str = "ZFNET_ENABLE_TEST_STAGES";

// `STAGE_CRATES` and `stage_crate_kinds()`: one entry per stage dependency in Cargo.toml.
include!(concat!(env!("OUT_DIR"), "/stage_crates.rs"));

pub fn registry() -> Registry {
    let mut registry = Registry::new();
    for (stage_crate, kinds) in STAGE_CRATES.iter().zip(stage_crate_kinds()) {
        tracing::trace!(stage_crate, kinds = kinds.len(), "registering");
        for kind in kinds {
            registry.register(kind);
        }
    }
    if std::env::var(ENABLE_TEST_STAGES).is_ok_and(|v| v == "1") {
        for kind in testkit::kinds() {
            registry.register(kind);
        }
    }
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_crate_contributes_a_kind() {
        for (name, kinds) in STAGE_CRATES.iter().zip(stage_crate_kinds()) {
            assert!(!kinds.is_empty(), "{name}::kinds() is empty");
        }
        let registry = registry();
        assert!(registry.get("train").is_some() && registry.get("report").is_some());
    }
}
