//! `zfnet verify`: re-reads every cached output and evicts what no longer matches.

use anyhow::Result;
use orchestrator::Dag;
use orchestrator::cache::{LockMode, VerifyOutcome};

use super::open_cache;

/// The stat memo trusts a file whose size, inode and times are unchanged; bit rot (or an edit
/// that restored the times) keeps all of them. This reads every byte again, against the
/// manifests, and removes each entry that fails, so that the next `run` rebuilds it.
pub fn verify(dag: &Dag) -> Result<u8> {
    let cache = open_cache(dag)?;
    let _lock = cache.lock(LockMode::Exclusive, "verify")?;
    let report = cache.verify(|key, outcome| {
        if let VerifyOutcome::Evicted(why) = outcome {
            println!("evicted {key}: {why}");
        }
    })?;
    cache.save_memo()?;
    println!(
        "{} entr{} intact ({} bytes re-read), {} evicted{}",
        report.intact,
        if report.intact == 1 { "y" } else { "ies" },
        report.bytes,
        report.evicted.len(),
        if report.evicted.is_empty() {
            ""
        } else {
            "; `zfnet run` rebuilds what the pipeline still needs"
        }
    );
    Ok(0)
}
