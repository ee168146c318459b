//! `zfnet gc`: removes cache entries nothing refers to any more.

use std::collections::BTreeSet;

use anyhow::Result;
use artifacts::HashMemo;
use orchestrator::Dag;
use orchestrator::cache::LockMode;
use orchestrator::plan::assess;

use super::open_cache;

/// Keeps every entry that a stage of this pipeline resolves to now, and every entry recorded
/// as the last run of a stage (of this pipeline, if the stage still exists; of any other
/// pipeline sharing the cache, always). Every other entry (a folder under `runs/` or
/// `resume/` named by a cache key), and temporary folders of killed runs, goes; names zfnet
/// did not make are left alone.
pub fn gc(dag: &Dag, dry_run: bool) -> Result<u8> {
    let cache = open_cache(dag)?;
    let _lock = cache.lock(LockMode::Exclusive, "gc")?;
    let stages: Vec<_> = dag.stages.iter().collect();
    let mut keep: BTreeSet<String> = assess(dag, &cache, &stages)
        .into_iter()
        .filter_map(|status| status.key)
        .collect();
    let current: BTreeSet<&str> = dag.stages.iter().map(|s| s.name.as_str()).collect();
    for (pipeline, stage, record) in cache.all_states() {
        if pipeline != dag.name || current.contains(stage.as_str()) {
            keep.insert(record.key);
        }
    }
    let mut removed = 0usize;
    let mut bytes = 0u64;
    for key in cache.entry_keys()? {
        if keep.contains(&key) {
            continue;
        }
        let size = HashMemo::size_of(&cache.entry_dir(&key)).unwrap_or(0);
        let stage = cache
            .read_manifest(&key)
            .map(|m| m.stage)
            .unwrap_or_else(|_| "?".to_owned());
        println!(
            "{} {key} (stage `{stage}`, {size} bytes)",
            if dry_run { "would remove" } else { "removed" }
        );
        if !dry_run {
            cache.remove_entry(&key)?;
        }
        removed += 1;
        bytes += size;
    }
    // Checkpoints of unfinished runs that no current stage would resume.
    for key in cache.resume_keys()? {
        if keep.contains(&key) {
            continue;
        }
        let size = HashMemo::size_of(&cache.resume_dir(&key)).unwrap_or(0);
        println!(
            "{} resume checkpoints {key} ({size} bytes)",
            if dry_run { "would remove" } else { "removed" }
        );
        if !dry_run {
            cache.remove_resume(&key)?;
        }
        bytes += size;
    }
    if !dry_run {
        bytes += cache.clean_temp()?;
        cache.save_memo()?;
    }
    println!(
        "{} {removed} cache entr{} ({bytes} bytes)",
        if dry_run { "would remove" } else { "removed" },
        if removed == 1 { "y" } else { "ies" }
    );
    Ok(0)
}
