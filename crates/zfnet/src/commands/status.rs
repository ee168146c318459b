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
    let mut statuses = assess(dag, &cache, &stages);
    // Stages that Slurm jobs of a run in progress are running.
    for job in orchestrator::slurm::in_flight(cache.root()) {
        if job.pipeline != dag.name {
            continue;
        }
        if let Some(status) = statuses.iter_mut().find(|s| s.stage == job.stage) {
            let state = match orchestrator::slurm::job_state(&job.job_id) {
                Ok(orchestrator::slurm::JobState::Active {
                    state,
                    node,
                    reason,
                }) => match node {
                    Some(node) => format!("{state} on {node}"),
                    None if reason != "None" => format!("{state} ({reason})"),
                    None => state,
                },
                Ok(finished) => format!("{finished:?} (its run has not collected it)"),
                Err(error) => format!("state unknown: {error}"),
            };
            status.slurm_job = Some(format!(
                "Slurm job {}: {state}; submitted by {}",
                job.job_id, job.submitter
            ));
        }
    }
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
            let mut reason = if status.reason.is_empty() {
                String::new()
            } else {
                format!("  ({})", status.reason)
            };
            if let Some(job) = &status.slurm_job {
                reason.push_str(&format!("  [{job}]"));
            }
            println!(
                "{:<width$}  {:<7}{reason}",
                status.stage,
                status.state.to_string()
            );
        }
    }
    Ok(0)
}
