//! `zfnet status`: every stage's state, and why.

use anyhow::Result;
use orchestrator::plan::assess;
use orchestrator::{Dag, Error};

use super::open_cache;

pub fn status(dag: &Dag, targets: &[String], json: bool) -> Result<u8> {
    let cache = open_cache(dag)?;
    let all: Vec<String> = dag.stages.iter().map(|s| s.name.clone()).collect();
    let wanted = if targets.is_empty() { &all } else { targets };
    let stages = dag.closure(wanted).map_err(Error::Usage)?;
    let statuses = assess(dag, &cache, &stages);
    for status in &statuses {
        if let Some(warning) = &status.corrupted {
            tracing::warn!("stage `{}`: {warning}", status.stage);
        }
    }
    // The memo only speeds up later commands; skip saving it while a `run` holds the cache.
    if let Ok(lock) = std::fs::File::open(cache.root().join("lock"))
        && lock.try_lock().is_ok()
    {
        cache.save_memo()?;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&statuses)?);
    } else {
        let width = statuses.iter().map(|s| s.stage.len()).max().unwrap_or(0);
        for status in &statuses {
            let reason = if status.reason.is_empty() {
                String::new()
            } else {
                format!("  ({})", status.reason)
            };
            println!(
                "{:<width$}  {:<7}{reason}",
                status.stage,
                status.state.to_string()
            );
        }
    }
    Ok(0)
}
