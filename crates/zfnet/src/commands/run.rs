//! `zfnet run`: bring stages up to date, or say what would run (`--dry-run`).

use anyhow::Result;
use indicatif::{MultiProgress, ProgressDrawTarget};
use orchestrator::execute::{Executor, RunEvent, RunOptions};
use orchestrator::plan::{State, assess};
use orchestrator::slurm::JobRequest;
use orchestrator::{Dag, Error};

use super::open_cache;

pub fn run(
    dag: &Dag,
    targets: Vec<String>,
    force: bool,
    dry_run: bool,
    jobs: usize,
    executor: Executor,
) -> Result<u8> {
    let cache = open_cache(dag)?;
    if dry_run {
        let all: Vec<String> = dag.stages.iter().map(|s| s.name.clone()).collect();
        let wanted = if targets.is_empty() { &all } else { &targets };
        let stages = dag.closure(wanted).map_err(Error::Usage)?;
        let statuses = assess(dag, &cache, &stages);
        let mut would_run = 0;
        for (stage, status) in stages.iter().zip(&statuses) {
            let forced = force
                && (targets.is_empty()
                    || targets
                        .iter()
                        .any(|t| *t == stage.name || *t == stage.base_name));
            // Under Slurm, what each job would ask for.
            let job = match &executor {
                Executor::Slurm(_) => format!(
                    " [as a Slurm job: {}]",
                    JobRequest::for_stage(stage, &dag.executor.slurm).describe()
                ),
                Executor::Local => String::new(),
            };
            if forced {
                println!("would run  {}: forced with --force{job}", stage.name);
                would_run += 1;
            } else if status.state == State::Fresh {
                println!("fresh      {}", stage.name);
            } else {
                println!("would run  {}: {}{job}", stage.name, status.reason);
                would_run += 1;
            }
        }
        println!(
            "dry run: {would_run} of {} stage(s) would run",
            stages.len()
        );
        return Ok(0);
    }

    if let Executor::Slurm(_) = &executor {
        // Ctrl-C (or a SIGTERM) cancels the jobs this run submitted.
        orchestrator::slurm::cancel_jobs_on_interrupt(cache.root().to_path_buf());
    }
    let options = RunOptions {
        targets,
        force,
        jobs,
        build: crate::BUILD.to_owned(),
        executor,
    };
    let progress = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    let print = |event: &RunEvent| {
        match event {
            RunEvent::Started { stage, .. } => crate::out_of_memory::stage_running(stage, true),
            RunEvent::Finished { stage, .. } | RunEvent::Failed { stage, .. } => {
                crate::out_of_memory::stage_running(stage, false)
            }
            _ => {}
        }
        let line = match event {
            RunEvent::Reused { stage, key } => {
                format!("fresh      {stage} (cached {})", &key[..12])
            }
            RunEvent::Started { stage, reason } => format!("running    {stage}: {reason}"),
            RunEvent::Submitted {
                stage,
                job_id,
                resources,
            } => format!("submitted  {stage} as Slurm job {job_id} ({resources})"),
            RunEvent::Finished {
                stage,
                seconds,
                peak_rss_bytes,
                start_rss_bytes,
                summary,
                slurm_job,
            } => {
                let mut line = format!("done       {stage} in {seconds:.1}s");
                if let Some(job) = slurm_job {
                    line.push_str(&format!(" (Slurm job {} on {})", job.id, job.node));
                }
                if let (Some(peak), Some(start)) = (peak_rss_bytes, start_rss_bytes) {
                    line.push_str(&format!(
                        ", peak RSS {:.2} GB (+{:.2} GB over its start)",
                        *peak as f64 / 1e9,
                        peak.saturating_sub(*start) as f64 / 1e9
                    ));
                }
                for summary_line in summary {
                    line.push_str(&format!("\n             {summary_line}"));
                }
                line
            }
            RunEvent::Failed { stage, error } => format!("FAILED     {stage}: {error}"),
            RunEvent::Skipped { stage, because } => format!("skipped    {stage}: {because}"),
        };
        // Printing through the progress bars keeps them from overwriting the line.
        progress.suspend(|| println!("{line}"));
    };
    let report = orchestrator::execute::run(dag, &cache, &options, &progress, &print)?;
    println!(
        "{} ran, {} fresh, {} failed, {} skipped",
        report.executed.len(),
        report.reused.len(),
        report.failed.len(),
        report.skipped.len()
    );
    if report.failed.is_empty() {
        Ok(0)
    } else {
        Err(Error::StagesFailed(report.failed).into())
    }
}

/// `zfnet exec-stage`: one stage, run and committed, as a Slurm job of `run --executor slurm`.
pub fn exec_stage(
    dag: &Dag,
    stage: &str,
    key: &str,
    force: bool,
    work: orchestrator::execute::SubmittedWork,
) -> Result<u8> {
    let cache = open_cache(dag)?;
    // A job's stderr is a log file: no bars, but the tracing lines and the outcome.
    let progress = MultiProgress::with_draw_target(ProgressDrawTarget::hidden());
    crate::out_of_memory::stage_running(stage, true);
    let outcome = orchestrator::execute::execute_submitted(
        dag,
        &cache,
        stage,
        key,
        force,
        work,
        crate::BUILD,
        &progress,
    )
    .map_err(|error| anyhow::anyhow!("stage `{stage}` failed: {error}"))?;
    crate::out_of_memory::stage_running(stage, false);
    let (what, seconds, summary) = match outcome {
        orchestrator::execute::SubmittedOutcome::Committed(manifest) => (
            format!("{stage} (cache entry {})", &manifest.key[..12]),
            manifest.duration_s,
            manifest.summary,
        ),
        orchestrator::execute::SubmittedOutcome::ShardDone {
            key,
            seconds,
            summary,
        } => {
            let orchestrator::execute::SubmittedWork::Shard { shard, .. } = work else {
                unreachable!("only a shard task ends with a shard done")
            };
            (
                format!(
                    "shard {} of {} of {stage} (for cache entry {})",
                    shard.index + 1,
                    shard.count,
                    &key[..12]
                ),
                seconds,
                summary,
            )
        }
    };
    eprintln!("done {what} in {seconds:.1}s");
    for line in &summary {
        eprintln!("  {line}");
    }
    Ok(0)
}
