//! The cache's lock: `flock` on `lock` on one host, and between hosts the owner and reader
//! files of [`super::owner_file`]; exclusive for `run`, `gc`, `verify`, shared for `export` and
//! `show`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Cache;
use super::owner_file::{
    OwnerFile, READER_PREFIX, create_owner_file, current_inode, file_safe, files_named, host_name,
    remove_owner_file_if, start_heartbeat, unix_now,
};
use crate::{Error, Result};

/// What an exclusive or shared hold on the cache's lock file is for, as a waiting process
/// reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// `run`, `gc`, `verify`: they write and delete.
    Exclusive,
    /// `export`, `show`: they read outputs and need them to stay put.
    Shared,
}

/// A held cache lock; released when dropped.
pub struct CacheLock {
    file: fs::File,
    mode: LockMode,
    /// The exclusive holder's `lock.owner`, kept fresh by a heartbeat thread.
    owner: Option<OwnerFile>,
}

impl Drop for CacheLock {
    fn drop(&mut self) {
        if let Some(owner) = self.owner.take() {
            owner.release();
        }
        if self.mode == LockMode::Exclusive {
            // Nobody holds the cache after us: leave no stale holder line behind.
            let _ = self.file.set_len(0);
        }
    }
}

/// How often an exclusive holder refreshes `lock.owner`, and how old a heartbeat from another
/// host must be before the file is taken for a dead holder's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockTiming {
    pub heartbeat: Duration,
    pub stale_after: Duration,
}

impl Default for LockTiming {
    fn default() -> Self {
        LockTiming {
            heartbeat: Duration::from_secs(10),
            stale_after: Duration::from_secs(90),
        }
    }
}

/// What `lock.owner` says: who holds the cache exclusively, and when it last said so.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockOwner {
    pub host: String,
    pub pid: u32,
    pub command: String,
    pub heartbeat_unix_s: u64,
}

impl LockOwner {
    pub(super) fn describe(&self) -> String {
        format!(
            "`zfnet {}` (pid {} on host {})",
            self.command, self.pid, self.host
        )
    }
}

impl Cache {
    /// Takes the cache's lock for `command` (e.g. `run`), waiting, and saying whom it waits
    /// for, while another zfnet process holds it in a conflicting mode. An exclusive holder
    /// writes `pid <n> zfnet <command>` into the lock file for waiters to read.
    pub fn lock(&self, mode: LockMode, command: &str) -> Result<CacheLock> {
        self.lock_with(mode, command, LockTiming::default())
    }

    /// [`Cache::lock`] with the heartbeat timing given (tests shorten it).
    ///
    /// Two layers: `flock` on `lock` excludes processes on this host (and wherever the file
    /// system honours it), and the exclusive holder also creates `lock.owner` with `O_EXCL`
    /// (which NFS honours between hosts, unlike flock), naming its host and pid and refreshed
    /// every `timing.heartbeat`. A `lock.owner` left by this host is stale once we hold the
    /// flock; one from another host is stale when its heartbeat is older than
    /// `timing.stale_after`. Shared holders wait while another host's live owner is there.
    pub fn lock_with(
        &self,
        mode: LockMode,
        command: &str,
        timing: LockTiming,
    ) -> Result<CacheLock> {
        let path = self.root.join("lock");
        let mut file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let attempt = match mode {
            LockMode::Exclusive => file.try_lock(),
            LockMode::Shared => file.try_lock_shared(),
        };
        if attempt.is_err() {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = match holder.split_whitespace().nth(1) {
                Some(pid) if Path::new("/proc").join(pid).exists() => {
                    format!(
                        "`{}` (pid {pid})",
                        holder
                            .split_whitespace()
                            .skip(2)
                            .collect::<Vec<_>>()
                            .join(" ")
                    )
                }
                _ => "another zfnet process (reading outputs)".to_owned(),
            };
            eprintln!(
                "zfnet {command}: waiting for {who} to release the cache lock {}",
                path.display()
            );
            match mode {
                LockMode::Exclusive => file.lock(),
                LockMode::Shared => file.lock_shared(),
            }
            .map_err(|e| Error::io(&path, e))?;
        }
        if mode == LockMode::Exclusive {
            let line = format!("pid {} zfnet {command}\n", std::process::id());
            file.set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| file.write_all(line.as_bytes()))
                .map_err(|e| Error::io(&path, e))?;
        }
        let owner = self.claim_owner_file(mode, command, timing)?;
        Ok(CacheLock { file, mode, owner })
    }

    /// The cross-host layer of [`Cache::lock_with`].
    fn claim_owner_file(
        &self,
        mode: LockMode,
        command: &str,
        timing: LockTiming,
    ) -> Result<Option<OwnerFile>> {
        let path = self.root.join("lock.owner");
        let me = LockOwner {
            host: host_name(),
            pid: std::process::id(),
            command: command.to_owned(),
            heartbeat_unix_s: unix_now(),
        };
        let mut told = false;
        // The holder's file as last read, and when (by this machine's clock) it last changed:
        // a holder is judged by whether its heartbeat moves, never by its clock against ours.
        let mut seen: Option<(Vec<u8>, std::time::Instant)> = None;
        // A reader announces itself in its own file before it looks for a writer (and
        // withdraws while one is live); a writer creates `lock.owner` before it looks for
        // readers. Of a reader and a writer on two hosts starting together, at least one sees
        // the other.
        let reader_path =
            self.root
                .join(format!("{READER_PREFIX}{}.{}", file_safe(&me.host), me.pid));
        let mut reader: Option<fs::File> = None;
        loop {
            if mode == LockMode::Exclusive {
                if let Some(created) = create_owner_file(&path, &me)? {
                    self.lock_lost.store(false, Ordering::SeqCst);
                    let mut owner = start_heartbeat(
                        path,
                        created,
                        me.clone(),
                        timing,
                        std::sync::Arc::clone(&self.lock_lost),
                    )?;
                    self.owner_inode.store(owner.inode, Ordering::SeqCst);
                    owner.held_by_cache = Some(std::sync::Arc::clone(&self.owner_inode));
                    self.wait_for_other_hosts_readers(&me, command, timing);
                    return Ok(Some(owner));
                }
            } else if reader.is_none() {
                // A file of this host and pid is a dead process's: ours now.
                let _ = fs::remove_file(&reader_path);
                reader = create_owner_file(&reader_path, &me)?;
            }
            let shared_go = |reader: Option<fs::File>| -> Result<Option<OwnerFile>> {
                match reader {
                    Some(file) => start_heartbeat(
                        reader_path.clone(),
                        file,
                        me.clone(),
                        timing,
                        std::sync::Arc::new(AtomicBool::new(false)),
                    )
                    .map(Some),
                    None => Ok(None),
                }
            };
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    if mode == LockMode::Shared {
                        return shared_go(reader.take());
                    }
                    continue;
                }
                Err(error) => return Err(Error::io(&path, error)),
            };
            if seen.as_ref().is_none_or(|(before, _)| *before != bytes) {
                seen = Some((bytes.clone(), std::time::Instant::now()));
            }
            let unchanged_for = seen.as_ref().map_or(Duration::ZERO, |(_, at)| at.elapsed());
            let holder: Option<LockOwner> = serde_json::from_slice(&bytes).ok();
            let stale = match &holder {
                // This host's holders are excluded by the flock we hold: one whose process is
                // gone is stale at once (a host name can be shared by containers, so the pid
                // must be gone too).
                Some(owner) if owner.host == me.host => {
                    owner.pid == me.pid
                        || !Path::new("/proc").join(owner.pid.to_string()).exists()
                        || unchanged_for > timing.stale_after
                }
                // Another host's, or a garbled file: stale once it has not changed for
                // `stale_after`.
                _ => unchanged_for > timing.stale_after,
            };
            if stale {
                if mode == LockMode::Shared {
                    return shared_go(reader.take());
                }
                let who = holder
                    .as_ref()
                    .map(LockOwner::describe)
                    .unwrap_or_else(|| "an unreadable holder".to_owned());
                // Only the very file judged stale is removed: a holder that refreshed it or
                // took it meanwhile keeps it (read again just before, then checked aside).
                if fs::read(&path).ok() == Some(bytes.clone())
                    && remove_owner_file_if(&path, |aside| {
                        fs::read(aside).ok() == Some(bytes.clone())
                    })
                {
                    eprintln!(
                        "zfnet {command}: taking over the cache lock of {who}, which is gone \
                         (its heartbeat has not moved for {} s)",
                        unchanged_for.as_secs()
                    );
                }
                seen = None;
                continue;
            }
            if reader.take().is_some() {
                // A live writer: withdraw, so that it does not wait for this reader.
                let _ = fs::remove_file(&reader_path);
            }
            if !told {
                let who = holder
                    .as_ref()
                    .map(LockOwner::describe)
                    .unwrap_or_else(|| "another zfnet process".to_owned());
                eprintln!(
                    "zfnet {command}: waiting for {who} to release the cache {}",
                    self.root.display()
                );
                told = true;
            }
            std::thread::sleep(timing.heartbeat.min(Duration::from_secs(1)));
        }
    }

    /// Waits while a reader on another host (`export`, `show`: flock may not reach it) is
    /// live; a reader file that has not changed for `stale_after` (by this host's clock) is a
    /// dead reader's and is removed. This host's readers are excluded by the flock held.
    fn wait_for_other_hosts_readers(&self, me: &LockOwner, command: &str, timing: LockTiming) {
        let mut seen: BTreeMap<PathBuf, (Vec<u8>, std::time::Instant)> = BTreeMap::new();
        let mut told = false;
        loop {
            let mut live = Vec::new();
            for path in files_named(&self.root, |name| name.starts_with(READER_PREFIX)) {
                let Ok(bytes) = fs::read(&path) else {
                    continue;
                };
                let holder: Option<LockOwner> = serde_json::from_slice(&bytes).ok();
                // This host's reader whose process is gone (killed before it could tidy up):
                // the exclusive flock we hold says no reader of this host is live.
                if let Some(reader) = holder.as_ref().filter(|h| h.host == me.host)
                    && !Path::new("/proc").join(reader.pid.to_string()).exists()
                {
                    let _ = fs::remove_file(&path);
                    continue;
                }
                let entry = seen
                    .entry(path.clone())
                    .or_insert_with(|| (bytes.clone(), std::time::Instant::now()));
                if entry.0 != bytes {
                    *entry = (bytes.clone(), std::time::Instant::now());
                }
                if entry.1.elapsed() > timing.stale_after {
                    remove_owner_file_if(&path, |aside| {
                        fs::read(aside).ok() == Some(bytes.clone())
                    });
                    continue;
                }
                live.push(
                    holder
                        .map(|h| h.describe())
                        .unwrap_or_else(|| path.display().to_string()),
                );
            }
            if live.is_empty() {
                return;
            }
            if !told {
                eprintln!(
                    "zfnet {command}: waiting for {} reading the cache {} on another host",
                    live.join(", "),
                    self.root.display()
                );
                told = true;
            }
            std::thread::sleep(timing.heartbeat.min(Duration::from_secs(1)));
        }
    }

    /// Whether this process's exclusive lock was taken over by another (its heartbeat
    /// stalled past `stale_after`, e.g. a suspended process): it must then neither commit nor
    /// submit, since another run may be writing the same cache.
    pub fn lock_lost(&self) -> bool {
        if self.lock_lost.load(Ordering::SeqCst) {
            return true;
        }
        // Asked of the file itself too, not only of the heartbeat's last look: a holder
        // resumed after a suspension must not commit in the seconds before its next beat.
        let held = self.owner_inode.load(Ordering::SeqCst);
        if held != 0
            && let Ok(current) = current_inode(&self.root.join("lock.owner"))
            && current != Some(held)
        {
            self.lock_lost.store(true, Ordering::SeqCst);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::super::owner_file::read_owner;
    use super::super::{MANIFEST_FORMAT, Manifest};
    use super::*;

    /// Writes an owner file in place (a holder's heartbeat does so; a new inode would be a
    /// takeover).
    fn write_owner(path: &Path, owner: &LockOwner) -> std::io::Result<()> {
        fs::write(path, serde_json::to_vec(owner).expect("owner serialises"))
    }

    /// A holder on another host: `login2.cluster`, pid 4242.
    fn elsewhere(command: &str, heartbeat_unix_s: u64) -> LockOwner {
        LockOwner {
            host: "login2.cluster".to_owned(),
            pid: 4242,
            command: command.to_owned(),
            heartbeat_unix_s,
        }
    }

    /// Another host's live holder of `path`: `beats` heartbeats 100 ms apart (from
    /// `first_unix_s`, a second a beat), written in place; then silence.
    fn beat_elsewhere(
        path: PathBuf,
        command: &'static str,
        first_unix_s: u64,
        beats: u64,
    ) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            for beat in 0..beats {
                write_owner(&path, &elsewhere(command, first_unix_s + beat)).unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    }

    fn quick() -> LockTiming {
        LockTiming {
            heartbeat: Duration::from_millis(100),
            stale_after: Duration::from_secs(2),
        }
    }

    /// The exclusive holder names itself in `lock.owner` (host, pid, command), keeps its
    /// heartbeat fresh while it holds the lock, and removes the file when it lets go.
    #[test]
    fn the_exclusive_holder_names_itself_refreshes_its_heartbeat_and_leaves_no_owner_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("cache")).unwrap();
        let owner_path = cache.root().join("lock.owner");
        let lock = cache
            .lock_with(LockMode::Exclusive, "run", quick())
            .unwrap();
        let first = read_owner(&owner_path).unwrap();
        assert_eq!(first.pid, std::process::id());
        assert_eq!(first.host, host_name());
        assert_eq!(first.command, "run");
        // Backdate it; the heartbeat must bring it forward.
        write_owner(
            &owner_path,
            &LockOwner {
                heartbeat_unix_s: 1,
                ..first.clone()
            },
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(400));
        assert!(read_owner(&owner_path).unwrap().heartbeat_unix_s >= first.heartbeat_unix_s);
        drop(lock);
        assert!(!owner_path.exists());
        // A shared holder writes no owner file, but a reader file of its own, gone with it.
        let reader_path = cache.root().join(format!(
            "lock.reader.{}.{}",
            file_safe(&host_name()),
            std::process::id()
        ));
        let shared = cache.lock_with(LockMode::Shared, "show", quick()).unwrap();
        assert!(!owner_path.exists());
        assert_eq!(read_owner(&reader_path).unwrap().command, "show");
        drop(shared);
        assert!(!reader_path.exists());
    }

    /// A holder on another host (a shared cache on NFS, where flock may not exclude) is waited
    /// for while its heartbeat is fresh, and its file taken over once the heartbeat is older
    /// than `stale_after` (the holder died with its node). One left by this host — a killed
    /// process — is taken over at once: the flock we hold says it is gone.
    #[test]
    fn another_hosts_live_holder_is_waited_for_and_a_dead_ones_file_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("cache")).unwrap();
        let owner_path = cache.root().join("lock.owner");
        let elsewhere = elsewhere("run", unix_now());
        write_owner(&owner_path, &elsewhere).unwrap();
        let started = std::time::Instant::now();
        let lock = cache.lock_with(LockMode::Exclusive, "gc", quick()).unwrap();
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(2),
            "took the lock of a live holder on another host after {waited:?}"
        );
        assert_eq!(read_owner(&owner_path).unwrap().pid, std::process::id());
        drop(lock);

        let killed_here = LockOwner {
            host: host_name(),
            pid: 999_999,
            command: "run".to_owned(),
            heartbeat_unix_s: unix_now(),
        };
        write_owner(&owner_path, &killed_here).unwrap();
        let started = std::time::Instant::now();
        let lock = cache
            .lock_with(LockMode::Exclusive, "run", quick())
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        drop(lock);

        // A reader waits for another host's live writer too.
        write_owner(
            &owner_path,
            &LockOwner {
                heartbeat_unix_s: unix_now(),
                ..elsewhere
            },
        )
        .unwrap();
        let started = std::time::Instant::now();
        let shared = cache
            .lock_with(LockMode::Shared, "export", quick())
            .unwrap();
        assert!(started.elapsed() >= Duration::from_secs(2));
        drop(shared);
    }

    /// A holder whose owner file was taken over (its heartbeat stalled past `stale_after`,
    /// and another host removed and replaced the file) learns it from its next heartbeat:
    /// it commits nothing more, and on release leaves the new holder's file alone.
    #[test]
    fn a_holder_whose_lock_was_taken_over_commits_nothing_and_leaves_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("cache")).unwrap();
        let owner_path = cache.root().join("lock.owner");
        let lock = cache
            .lock_with(LockMode::Exclusive, "run", quick())
            .unwrap();
        assert!(!cache.lock_lost());
        // The other host's takeover: the file moved aside and removed, its own created.
        fs::rename(&owner_path, dir.path().join("moved")).unwrap();
        let usurper = elsewhere("run", unix_now());
        write_owner(&owner_path, &usurper).unwrap();
        std::thread::sleep(Duration::from_millis(400));
        assert!(cache.lock_lost());
        // Our heartbeat wrote into the moved file, never into the new holder's.
        assert_eq!(read_owner(&owner_path).unwrap(), usurper);
        let temp = cache.new_temp_dir("x").unwrap();
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            key: "x".to_owned(),
            stage: "s".to_owned(),
            kind: "k".to_owned(),
            kind_version: 1,
            params: serde_json::Value::Null,
            inputs: BTreeMap::new(),
            outputs: BTreeMap::new(),
            started_unix_s: 0.0,
            duration_s: 0.0,
            peak_rss_bytes: None,
            start_rss_bytes: None,
            slurm_job: None,
            tool_version: String::new(),
            summary: Vec::new(),
        };
        let error = cache.commit(&temp, &manifest).unwrap_err();
        assert!(matches!(error, Error::LockLost { .. }), "{error}");
        drop(lock);
        assert_eq!(read_owner(&owner_path).unwrap(), usurper);
    }

    /// Another host's holder is judged by whether its file changes, by this host's clock:
    /// one whose clock is far behind (an ancient `heartbeat_unix_s`) but whose heartbeat moves
    /// is waited for; once it stops, its file is taken over after `stale_after`.
    #[test]
    fn a_live_holder_with_a_skewed_clock_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("cache")).unwrap();
        let owner_path = cache.root().join("lock.owner");
        // Its clock is far behind (heartbeats from 1 s after the epoch), but it beats.
        let beating = beat_elsewhere(owner_path.clone(), "run", 1, 30);
        std::thread::sleep(Duration::from_millis(50));
        let started = std::time::Instant::now();
        let lock = cache
            .lock_with(LockMode::Exclusive, "run", quick())
            .unwrap();
        let waited = started.elapsed();
        beating.join().unwrap();
        // 3 s of heartbeats, then 2 s of silence.
        assert!(
            waited >= Duration::from_millis(4500),
            "took a live holder's lock after {waited:?}"
        );
        assert_eq!(read_owner(&owner_path).unwrap().pid, std::process::id());
        drop(lock);
    }

    /// A reader on another host (`export` beside a `gc` there, on a shared cache where flock
    /// does not reach) is waited for while its heartbeat moves; its file is removed once it
    /// has stopped for `stale_after`.
    #[test]
    fn a_writer_waits_for_another_hosts_live_reader() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("cache")).unwrap();
        let reader_path = cache.root().join("lock.reader.login2_cluster.4242");
        let reading = beat_elsewhere(reader_path.clone(), "export", unix_now(), 20);
        std::thread::sleep(Duration::from_millis(50));
        let started = std::time::Instant::now();
        let lock = cache.lock_with(LockMode::Exclusive, "gc", quick()).unwrap();
        let waited = started.elapsed();
        reading.join().unwrap();
        // 2 s of heartbeats, then 2 s of silence.
        assert!(
            waited >= Duration::from_millis(3500),
            "wrote beside a live reader after {waited:?}"
        );
        assert!(!reader_path.exists(), "the dead reader's file is removed");
        drop(lock);
    }

    /// A moment without the owner file (a taker that misjudged this holder moves it aside and
    /// puts it back) is not a lost lock; a reader file of this host whose process is gone is
    /// removed by the next writer at once.
    #[test]
    fn a_moment_without_the_owner_file_is_not_a_takeover_and_dead_local_readers_are_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(&dir.path().join("cache")).unwrap();
        let owner_path = cache.root().join("lock.owner");
        let lock = cache
            .lock_with(LockMode::Exclusive, "run", quick())
            .unwrap();
        let aside = dir.path().join("aside");
        fs::rename(&owner_path, &aside).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        fs::rename(&aside, &owner_path).unwrap();
        std::thread::sleep(Duration::from_millis(400));
        assert!(!cache.lock_lost());
        drop(lock);
        assert!(!owner_path.exists());

        let dead_reader = cache
            .root()
            .join(format!("lock.reader.{}.999999", file_safe(&host_name())));
        write_owner(
            &dead_reader,
            &LockOwner {
                host: host_name(),
                pid: 999_999,
                command: "export".to_owned(),
                heartbeat_unix_s: unix_now(),
            },
        )
        .unwrap();
        let started = std::time::Instant::now();
        let lock = cache.lock_with(LockMode::Exclusive, "gc", quick()).unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(!dead_reader.exists());
        drop(lock);
    }
}
