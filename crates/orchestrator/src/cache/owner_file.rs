//! The files that carry the cache's lock between hosts, where flock may not reach:
//! `lock.owner` and `lock.reader.<host>.<pid>`, created with `O_EXCL`, kept fresh by a
//! heartbeat thread, and removed only when they are the very file meant.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use super::lock::{LockOwner, LockTiming};
use crate::{Error, Result};

/// The `lock.owner` file this process created (identified by its inode: a file put in its
/// place by a takeover is not ours), with its heartbeat thread.
pub(super) struct OwnerFile {
    path: PathBuf,
    pub(super) inode: u64,
    stop: std::sync::Arc<(Mutex<bool>, Condvar)>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
    /// The cache's record of the owner file it holds (for
    /// [`Cache::commit`](super::Cache::commit)'s check), cleared on release; `None` for a
    /// reader's file.
    pub(super) held_by_cache: Option<std::sync::Arc<AtomicU64>>,
}

impl OwnerFile {
    /// Stops the heartbeat and removes the file, if it is still ours.
    pub(super) fn release(mut self) {
        {
            let (stopped, wake) = &*self.stop;
            *stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
            wake.notify_all();
        }
        if let Some(thread) = self.heartbeat.take() {
            let _ = thread.join();
        }
        if let Some(held) = &self.held_by_cache {
            held.store(0, Ordering::SeqCst);
        }
        HELD_OWNER_FILES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(path, inode)| (path, *inode) != (&self.path, self.inode));
        // Only a file that is still ours is removed (a lost lock's path is another's).
        if current_inode(&self.path).ok().flatten() == Some(self.inode) {
            remove_owner_file_if(&self.path, |aside| inode_of(aside) == Some(self.inode));
        }
    }
}

/// The owner files this process holds, for an exit that runs no destructors (the Slurm
/// interrupt handler's): see [`release_owner_files`].
static HELD_OWNER_FILES: Mutex<Vec<(PathBuf, u64)>> = Mutex::new(Vec::new());

/// Removes every `lock.owner` this process still holds, so that another host does not wait
/// for a heartbeat that stopped. For a process about to exit without unwinding.
pub fn release_owner_files() {
    let held = std::mem::take(&mut *HELD_OWNER_FILES.lock().unwrap_or_else(|e| e.into_inner()));
    for (path, inode) in held {
        remove_owner_file_if(&path, |aside| inode_of(aside) == Some(inode));
    }
}

/// The files in which readers on any host announce themselves: `lock.reader.<host>.<pid>`.
pub(super) const READER_PREFIX: &str = "lock.reader.";

/// The entries of `dir` whose (UTF-8) names `keep` accepts, in name order; none when `dir`
/// cannot be read.
pub(crate) fn files_named(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.file_name().and_then(|n| n.to_str()).is_some_and(&keep))
        .collect();
    files.sort();
    files
}

/// A host name as a file name's part.
pub(super) fn file_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Creates the owner (or reader) file `path` with `O_EXCL` and writes `me` into it; `None`
/// when it exists.
pub(super) fn create_owner_file(path: &Path, me: &LockOwner) -> Result<Option<fs::File>> {
    match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(mut created) => {
            created
                .write_all(&serde_json::to_vec(me).expect("owner serialises"))
                .and_then(|()| created.sync_all())
                .map_err(|e| Error::io(path, e))?;
            Ok(Some(created))
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
        Err(error) => Err(Error::io(path, error)),
    }
}

fn inode_of(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).ok().map(|m| m.ino())
}

/// The inode of the file at `path` now: opened and then stat'ed through the descriptor, as an
/// open revalidates the name on NFS where a stat of the path may answer from a cache (for up
/// to a minute). `Ok(None)`: no file there; `Err`: the question could not be answered (an I/O
/// error, a timeout), which says nothing about who holds the lock.
pub(super) fn current_inode(path: &Path) -> std::io::Result<Option<u64>> {
    use std::os::unix::fs::MetadataExt;
    match fs::File::open(path) {
        Ok(file) => Ok(Some(file.metadata()?.ino())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Removes the owner file at `path` only if it is the one `is_it` recognises: renamed aside
/// first (a rename is atomic, so of two processes removing the same stale file only one gets
/// it), checked there, and put back with a hard link (which never replaces a file) when it
/// was another. Says whether it removed it.
pub(super) fn remove_owner_file_if(path: &Path, is_it: impl Fn(&Path) -> bool) -> bool {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let unique = format!(
        "lock.owner.aside.{}.{}.{}",
        file_safe(&host_name()),
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    );
    let aside = path.with_file_name(unique);
    if fs::rename(path, &aside).is_err() {
        return false;
    }
    if is_it(&aside) {
        let _ = fs::remove_file(&aside);
        return true;
    }
    if let Err(error) = fs::hard_link(&aside, path) {
        // Someone created a new owner file meanwhile: the one we moved is its holder's loss,
        // which its heartbeat notices (the holder then stops).
        tracing::warn!("cannot put {} back: {error}", path.display());
    }
    let _ = fs::remove_file(&aside);
    false
}

pub(super) fn read_owner(path: &Path) -> Option<LockOwner> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// This machine's host name, as lock owners and Slurm job records name it.
pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".to_owned())
}

/// What a heartbeat concludes from one look at its owner file's path.
#[derive(Debug, PartialEq)]
enum Holding {
    Yes,
    /// Not sure yet: the path is missing for the first time (a taker that misjudged this
    /// holder moves the file aside for a moment before it puts it back), or the look failed.
    Unsure(Option<String>),
    /// Another file holds the path, or none did twice in a row.
    Lost,
}

/// One heartbeat's judgement: `current` is the inode at the path now, `inode` ours, `missing`
/// how many looks in a row found no file (updated).
fn judge_owner_file(
    current: std::io::Result<Option<u64>>,
    inode: u64,
    missing: &mut u32,
) -> Holding {
    match current {
        Ok(Some(current)) if current == inode => {
            *missing = 0;
            Holding::Yes
        }
        Ok(None) if *missing == 0 => {
            *missing += 1;
            Holding::Unsure(None)
        }
        Ok(_) => Holding::Lost,
        Err(error) => Holding::Unsure(Some(error.to_string())),
    }
}

/// Keeps `me` fresh in `file` (the owner file just created at `path`) until released. The
/// heartbeat writes through the open file, in place: if a takeover has moved the file away,
/// the write lands in the moved file, never in the new holder's. When `path` is no longer
/// this file, the heartbeat sets `lost` (checked before each commit and submission) and
/// stops.
pub(super) fn start_heartbeat(
    path: PathBuf,
    file: fs::File,
    me: LockOwner,
    timing: LockTiming,
    lost: std::sync::Arc<AtomicBool>,
) -> Result<OwnerFile> {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let inode = file.metadata().map_err(|e| Error::io(&path, e))?.ino();
    HELD_OWNER_FILES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((path.clone(), inode));
    let stop = std::sync::Arc::new((Mutex::new(false), Condvar::new()));
    let thread = {
        let (path, mut me, stop) = (path.clone(), me, std::sync::Arc::clone(&stop));
        std::thread::spawn(move || {
            let (stopped, wake) = &*stop;
            let mut missing = 0;
            loop {
                {
                    // The file I/O below runs without the mutex: releasing never waits on it.
                    let guard = stopped.lock().unwrap_or_else(|e| e.into_inner());
                    let (guard, _) = wake
                        .wait_timeout_while(guard, timing.heartbeat, |stopped| !*stopped)
                        .unwrap_or_else(|e| e.into_inner());
                    if *guard {
                        return;
                    }
                }
                match judge_owner_file(current_inode(&path), inode, &mut missing) {
                    Holding::Yes => {}
                    Holding::Unsure(why) => {
                        if let Some(error) = why {
                            tracing::warn!("cannot check {}: {error}; retrying", path.display());
                        }
                        continue;
                    }
                    Holding::Lost => {
                        lost.store(true, Ordering::SeqCst);
                        tracing::warn!(
                            "{} was taken over by {:?}; this process no longer holds the cache \
                             lock (was its heartbeat stalled?) and will not commit or submit",
                            path.display(),
                            read_owner(&path).map(|o| o.describe())
                        );
                        return;
                    }
                }
                me.heartbeat_unix_s = unix_now();
                let bytes = serde_json::to_vec(&me).expect("owner serialises");
                // Written over the old content, then cut to length: never an empty file.
                let written = file
                    .write_all_at(&bytes, 0)
                    .and_then(|()| file.set_len(bytes.len() as u64))
                    .and_then(|()| file.sync_data());
                if let Err(error) = written {
                    tracing::warn!("cannot refresh {}: {error}", path.display());
                }
            }
        })
    };
    Ok(OwnerFile {
        path,
        inode,
        stop,
        heartbeat: Some(thread),
        held_by_cache: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The removal used for takeovers and releases removes only the file it was meant for.
    #[test]
    fn an_owner_file_is_removed_only_when_it_is_the_one_meant() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock.owner");
        fs::write(&path, b"theirs").unwrap();
        assert!(!remove_owner_file_if(&path, |aside| fs::read(aside)
            .unwrap()
            == b"stale"));
        assert_eq!(fs::read(&path).unwrap(), b"theirs");
        assert!(remove_owner_file_if(&path, |aside| fs::read(aside)
            .unwrap()
            == b"theirs"));
        assert!(!path.exists());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing left aside"
        );
        assert!(
            !remove_owner_file_if(&path, |_| true),
            "no file, nothing removed"
        );
    }

    /// The heartbeat's judgement, look by look: one miss is forgiven, two in a row or another
    /// file are a takeover, a look that fails decides nothing.
    #[test]
    fn a_heartbeat_forgives_one_missing_look_but_not_two_or_another_file() {
        let mut missing = 0;
        assert_eq!(judge_owner_file(Ok(Some(7)), 7, &mut missing), Holding::Yes);
        assert_eq!(
            judge_owner_file(Ok(None), 7, &mut missing),
            Holding::Unsure(None)
        );
        assert_eq!(judge_owner_file(Ok(Some(7)), 7, &mut missing), Holding::Yes);
        assert_eq!(
            missing, 0,
            "a look that finds the file starts the count again"
        );
        assert_eq!(
            judge_owner_file(Ok(None), 7, &mut missing),
            Holding::Unsure(None)
        );
        assert_eq!(judge_owner_file(Ok(None), 7, &mut missing), Holding::Lost);
        let mut missing = 0;
        assert_eq!(
            judge_owner_file(Ok(Some(8)), 7, &mut missing),
            Holding::Lost
        );
        let stale = std::io::Error::other("stale file handle");
        assert!(matches!(
            judge_owner_file(Err(stale), 7, &mut missing),
            Holding::Unsure(Some(_))
        ));
    }
}
