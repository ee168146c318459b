//! The content-addressed run cache: the only part of the orchestrator that writes files.
//!
//! Layout under the cache folder:
//! ```text
//! runs/<key>/manifest.json        what ran, from what, producing which hashes
//! runs/<key>/outputs/<file_name>  the outputs (files or folders)
//! tmp/<key>.<pid>.<n>/            a run in progress; never read as a result
//! state/<pipeline>/<stage>.json   the last successful run of each stage (for `status` reasons)
//! resume/<key>/                   checkpoints of an unfinished run, for the next attempt
//! hash-memo.json                  stat-keyed file hashes (see `artifacts::hash`)
//! lock                            exclusive for `run`, `gc`, `verify`; shared for `export`, `show`
//! lock.owner                      the exclusive holder's host, pid and heartbeat (O_EXCL: works
//!                                 between hosts on NFS, where flock may not)
//! lock.reader.<host>.<pid>        each shared holder's, the same way: writers wait for another
//!                                 host's live readers
//! jobs/in-flight/<id>.json        Slurm jobs of a run in progress (`zfnet status` lists them)
//! jobs/logs/<key>.<id>.{out,err}  each Slurm job's stdout and stderr
//! zfnet-cache.json                the marker: this folder is a zfnet cache (written first)
//! CACHEDIR.TAG                    the Cache Directory Tagging spec's tag (backup tools skip it)
//! ```
//! A run is committed by writing its manifest into the temporary folder, fsyncing every file
//! and folder, and renaming the folder to `runs/<key>`: a stage killed at any point leaves only
//! a `tmp/` folder, which the next `run` deletes.
//!
//! **Nothing outside is touched.** The cache deletes things, so it first makes sure the folder
//! is its own: a new or empty folder gets the marker; a non-empty folder without it is refused
//! ([`Error::NotACache`]). Inside, only names it can parse as its own (a 64-hex-digit key, a
//! `tmp/` name that starts with one) are ever deleted, and never through a symbolic link.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use artifacts::{ContentHash, HashMemo};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One output as recorded in a manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// Path relative to the entry's `outputs/` folder.
    pub file_name: String,
    pub hash: ContentHash,
    pub bytes: u64,
}

/// The manifest of one cached run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub key: String,
    /// The stage instance that produced the entry first (another with identical kind, params
    /// and inputs shares it).
    pub stage: String,
    pub kind: String,
    pub kind_version: u32,
    pub params: serde_json::Value,
    pub inputs: BTreeMap<String, Vec<InputRecord>>,
    pub outputs: BTreeMap<String, OutputRecord>,
    pub started_unix_s: f64,
    pub duration_s: f64,
    /// The process's peak RSS during the run, when the stage ran alone (`--jobs 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    /// The process's RSS when that stage started (what it held from earlier work).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_rss_bytes: Option<u64>,
    /// The Slurm job that ran the stage (`zfnet run --executor slurm`), with its node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_job: Option<crate::slurm::SlurmJob>,
    pub tool_version: String,
    pub summary: Vec<String>,
}

/// One input as recorded in a manifest or state file: what it named and its content hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputRecord {
    pub source: String,
    pub hash: ContentHash,
}

/// The last successful run of a stage instance in a pipeline: what `status` compares against
/// to say why a stage is stale.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateRecord {
    /// The pipeline and stage instance this record belongs to (its file name may be a hash of
    /// them, when they are too long for a file name). Empty in records written before zfnet
    /// 0.1 recorded them; the file name says then.
    #[serde(default)]
    pub pipeline: String,
    #[serde(default)]
    pub stage: String,
    pub key: String,
    pub kind: String,
    pub kind_version: u32,
    pub params: serde_json::Value,
    pub inputs: BTreeMap<String, Vec<InputRecord>>,
}

pub const MANIFEST_FORMAT: u32 = 1;

/// Why a cached entry cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryProblem {
    /// No entry for this key.
    Absent,
    /// The entry's manifest is unreadable.
    BadManifest(String),
    /// An output is gone or its content hash changed.
    Corrupted { output: String, path: PathBuf },
    /// The manifest lacks an output the stage kind declares (written by an older or broken
    /// run): the entry is stale.
    MissingOutput { output: String },
}

/// The marker file that makes a folder a zfnet cache.
pub const MARKER_FILE: &str = "zfnet-cache.json";
/// The Cache Directory Tagging spec's file name and the signature its first line must carry.
pub const CACHEDIR_TAG_FILE: &str = "CACHEDIR.TAG";
const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
    # This file is a cache directory tag created by zfnet (its run cache).\n\
    # For information about cache directory tags see https://bford.info/cachedir/\n";
/// Every name zfnet itself puts at the top of its cache. A non-empty folder without the
/// marker whose names are all from this list (and that has `runs/`) is a cache written before
/// the marker existed, and is adopted.
const CACHE_LAYOUT: &[&str] = &[
    "runs",
    "tmp",
    "state",
    "resume",
    "hash-memo.json",
    "hash-memo.json.tmp",
    "lock",
    "lock.owner",
    "jobs",
    MARKER_FILE,
    CACHEDIR_TAG_FILE,
];

/// Whether `name` is a cache key as [`crate::plan::cache_key`] makes them (64 lowercase hex
/// digits): the only names under `runs/` and `resume/` that zfnet ever deletes.
pub fn is_cache_key(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `name` (a file name in `tmp/`) is one of zfnet's temporary folders:
/// `<key>.<pid>.<n>` or `<key>.removed.<pid>.<n>`.
pub fn is_temp_name(name: &str) -> bool {
    let Some((key, rest)) = name.split_once('.') else {
        return false;
    };
    let rest = rest.strip_prefix("removed.").unwrap_or(rest);
    let mut numbers = rest.split('.');
    is_cache_key(key)
        && numbers.next().is_some_and(is_decimal)
        && numbers.next().is_some_and(is_decimal)
        && numbers.next().is_none()
}

fn is_decimal(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// Whether a manifest's output file name stays inside its entry: relative, no `..`, no root.
fn is_plain_relative(file_name: &str) -> bool {
    let path = Path::new(file_name);
    !file_name.is_empty()
        && path
            .components()
            .all(|component| matches!(component, Component::Normal(_)))
}

/// Removes `path`, a file or folder zfnet made inside its cache. A symbolic link is removed
/// as a link: what it points at is never touched (`remove_dir_all` does not follow links
/// below it either).
pub fn remove_owned(path: &Path) -> std::io::Result<()> {
    let metadata = fs::symlink_metadata(path)?;
    if metadata.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

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
    fn describe(&self) -> String {
        format!(
            "`zfnet {}` (pid {} on host {})",
            self.command, self.pid, self.host
        )
    }
}

/// The `lock.owner` file this process created (identified by its inode: a file put in its
/// place by a takeover is not ours), with its heartbeat thread.
struct OwnerFile {
    path: PathBuf,
    inode: u64,
    stop: std::sync::Arc<(Mutex<bool>, Condvar)>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
    /// The cache's record of the owner file it holds (for [`Cache::commit`]'s check), cleared
    /// on release; `None` for a reader's file.
    held_by_cache: Option<std::sync::Arc<AtomicU64>>,
}

impl OwnerFile {
    /// Stops the heartbeat and removes the file, if it is still ours.
    fn release(mut self) {
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
const READER_PREFIX: &str = "lock.reader.";

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
fn file_safe(text: &str) -> String {
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
fn create_owner_file(path: &Path, me: &LockOwner) -> Result<Option<fs::File>> {
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
fn current_inode(path: &Path) -> std::io::Result<Option<u64>> {
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
fn remove_owner_file_if(path: &Path, is_it: impl Fn(&Path) -> bool) -> bool {
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

fn read_owner(path: &Path) -> Option<LockOwner> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

fn unix_now() -> u64 {
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
fn start_heartbeat(
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

/// The cache folder and its hash memo.
pub struct Cache {
    root: PathBuf,
    memo: HashMemo,
    temp_counter: AtomicU64,
    /// Set when the exclusive lock this process held was taken over (see [`Cache::lock_lost`]).
    lock_lost: std::sync::Arc<AtomicBool>,
    /// The inode of the `lock.owner` this process holds (0: none), checked at each commit.
    owner_inode: std::sync::Arc<AtomicU64>,
}

impl Cache {
    /// Opens the cache at `root`, creating it if needed. A folder that exists, is not empty
    /// and carries no marker is refused ([`Error::NotACache`]): zfnet deletes inside its
    /// cache, so it never adopts a folder of someone else's.
    pub fn open(root: &Path) -> Result<Self> {
        claim_cache_folder(root)?;
        for sub in ["runs", "tmp", "state", "resume"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        let root = fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
        Ok(Cache {
            memo: HashMemo::load(&root.join("hash-memo.json")),
            root,
            temp_counter: AtomicU64::new(0),
            lock_lost: std::sync::Arc::new(AtomicBool::new(false)),
            owner_inode: std::sync::Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn memo(&self) -> &HashMemo {
        &self.memo
    }

    /// Saves the hash memo (call once per command, under the lock when there is one).
    pub fn save_memo(&self) -> Result<()> {
        Ok(self.memo.save(&self.root.join("hash-memo.json"))?)
    }

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

    pub fn entry_dir(&self, key: &str) -> PathBuf {
        self.root.join("runs").join(key)
    }

    pub fn output_path(&self, key: &str, record: &OutputRecord) -> PathBuf {
        self.entry_dir(key).join("outputs").join(&record.file_name)
    }

    /// Reads the manifest of entry `key`, checks that it records every output the stage kind
    /// declares (`declared_outputs`), and checks every output's content hash (through the
    /// stat memo).
    pub fn verified_manifest(
        &self,
        key: &str,
        declared_outputs: &[&str],
    ) -> Result<Manifest, EntryProblem> {
        let manifest = self.read_manifest(key)?;
        if let Some(missing) = declared_outputs
            .iter()
            .find(|name| !manifest.outputs.contains_key(**name))
        {
            return Err(EntryProblem::MissingOutput {
                output: (*missing).to_owned(),
            });
        }
        for (name, record) in &manifest.outputs {
            let path = self.output_path(key, record);
            match self.memo.hash_path(&path) {
                Ok(hash) if hash == record.hash => {}
                _ => {
                    return Err(EntryProblem::Corrupted {
                        output: name.clone(),
                        path,
                    });
                }
            }
        }
        Ok(manifest)
    }

    /// Reads the manifest of entry `key` without checking outputs' contents. A manifest is
    /// data from disk: one whose key is not its folder's or whose output names leave the
    /// entry (absolute, `..`) is refused as unreadable.
    pub fn read_manifest(&self, key: &str) -> Result<Manifest, EntryProblem> {
        let manifest = self.parse_manifest(key)?;
        if manifest.key != key {
            return Err(EntryProblem::BadManifest(format!(
                "it records key {} but lies in runs/{key}",
                manifest.key
            )));
        }
        if let Some((name, record)) = manifest
            .outputs
            .iter()
            .find(|(_, record)| !is_plain_relative(&record.file_name))
        {
            return Err(EntryProblem::BadManifest(format!(
                "output `{name}` names the file `{}`, outside its entry",
                record.file_name
            )));
        }
        Ok(manifest)
    }

    fn parse_manifest(&self, key: &str) -> Result<Manifest, EntryProblem> {
        if !is_cache_key(key) {
            return Err(EntryProblem::BadManifest(format!(
                "`{key}` is not a cache key"
            )));
        }
        let path = self.entry_dir(key).join("manifest.json");
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(EntryProblem::Absent);
            }
            Err(error) => return Err(EntryProblem::BadManifest(error.to_string())),
        };
        serde_json::from_slice(&bytes).map_err(|e| EntryProblem::BadManifest(e.to_string()))
    }

    /// Deletes entry `key` (a corrupted one, before rerunning). Only a cache key names an
    /// entry; a link in its place is removed as a link.
    pub fn remove_entry(&self, key: &str) -> Result<()> {
        if !is_cache_key(key) {
            return Err(Error::Cache {
                path: self.entry_dir(key),
                message: "not a cache key; zfnet removes only its own entries".to_owned(),
            });
        }
        let dir = self.entry_dir(key);
        if fs::symlink_metadata(&dir).is_ok() {
            // Move aside first so that a crash mid-delete never leaves a half entry in runs/.
            let aside = self.new_temp_dir(&format!("{key}.removed"))?;
            fs::remove_dir(&aside).map_err(|e| Error::io(&aside, e))?;
            fs::rename(&dir, &aside).map_err(|e| Error::io(&dir, e))?;
            remove_owned(&aside).map_err(|e| Error::io(&aside, e))?;
        }
        Ok(())
    }

    /// Deletes the resume checkpoints of `key` (a link in their place as a link).
    pub fn remove_resume(&self, key: &str) -> Result<()> {
        let dir = self.resume_dir(key);
        if is_cache_key(key) && fs::symlink_metadata(&dir).is_ok() {
            remove_owned(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        Ok(())
    }

    /// A fresh temporary folder for a run of `key`.
    pub fn new_temp_dir(&self, key: &str) -> Result<PathBuf> {
        let n = self.temp_counter.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .root
            .join("tmp")
            .join(format!("{key}.{}.{n}", std::process::id()));
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(dir)
    }

    /// The resume folder of runs of `key` (kept across failed and killed attempts).
    pub fn resume_dir(&self, key: &str) -> PathBuf {
        self.root.join("resume").join(key)
    }

    /// Deletes every temporary folder (left by killed runs). Call only under the exclusive
    /// lock. Names that are not zfnet's temporary names are left alone, with a warning.
    pub fn clean_temp(&self) -> Result<u64> {
        let tmp = self.root.join("tmp");
        let mut removed = 0;
        for entry in fs::read_dir(&tmp).map_err(|e| Error::io(&tmp, e))? {
            let entry = entry.map_err(|e| Error::io(&tmp, e))?;
            let path = entry.path();
            if !is_temp_name(&entry.file_name().to_string_lossy()) {
                tracing::warn!(
                    "{} is not a zfnet temporary folder; leaving it alone",
                    path.display()
                );
                continue;
            }
            let is_link = fs::symlink_metadata(&path).is_ok_and(|m| m.is_symlink());
            if !is_link {
                removed += HashMemo::size_of(&path).unwrap_or(0);
            }
            remove_owned(&path).map_err(|e| Error::io(&path, e))?;
        }
        Ok(removed)
    }

    /// Re-reads every byte of every cached output, ignoring the stat memo, and evicts each
    /// entry whose manifest is unreadable or whose outputs do not hash to what it records
    /// (bit rot, an edit that kept size and times). Call under the exclusive lock.
    pub fn verify(&self, mut on_entry: impl FnMut(&str, &VerifyOutcome)) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        for key in self.entry_keys()? {
            let outcome = match self.read_manifest(&key) {
                Err(problem) => VerifyOutcome::Evicted(format!("manifest: {problem:?}")),
                Ok(manifest) => {
                    let fresh_read = HashMemo::in_memory();
                    let mut failure = None;
                    for (name, record) in &manifest.outputs {
                        let path = self.output_path(&key, record);
                        match fresh_read.hash_path(&path) {
                            Ok(hash) if hash == record.hash => report.bytes += record.bytes,
                            Ok(hash) => {
                                failure = Some(format!(
                                    "output `{name}` ({}) hashes to {} but the manifest \
                                     records {}",
                                    path.display(),
                                    hash.short(),
                                    record.hash.short()
                                ));
                                break;
                            }
                            Err(error) => {
                                failure = Some(format!("output `{name}`: {error}"));
                                break;
                            }
                        }
                    }
                    match failure {
                        None => VerifyOutcome::Intact,
                        Some(message) => VerifyOutcome::Evicted(message),
                    }
                }
            };
            if let VerifyOutcome::Evicted(_) = outcome {
                self.remove_entry(&key)?;
                report.evicted.push(key.clone());
            } else {
                report.intact += 1;
            }
            on_entry(&key, &outcome);
        }
        Ok(report)
    }

    /// Commits a finished run: writes its manifest into `temp_dir`, fsyncs everything and
    /// renames the folder to `runs/<key>`, replacing an older entry (a `--force` rerun).
    pub fn commit(&self, temp_dir: &Path, manifest: &Manifest) -> Result<()> {
        if self.lock_lost() {
            return Err(Error::LockLost {
                path: self.root.join("lock.owner"),
            });
        }
        let manifest_path = temp_dir.join("manifest.json");
        let bytes = serde_json::to_vec_pretty(manifest).expect("manifest serialises");
        fs::write(&manifest_path, bytes).map_err(|e| Error::io(&manifest_path, e))?;
        fsync_tree(temp_dir)?;
        let target = self.entry_dir(&manifest.key);
        if fs::symlink_metadata(&target).is_ok() {
            self.remove_entry(&manifest.key)?;
        }
        fs::rename(temp_dir, &target).map_err(|e| Error::io(&target, e))?;
        fsync_dir(&self.root.join("runs"))?;
        Ok(())
    }

    fn state_path(&self, pipeline: &str, stage: &str) -> PathBuf {
        self.root
            .join("state")
            .join(file_name_for(pipeline))
            .join(format!("{}.json", file_name_for(stage)))
    }

    /// The last successful run of `stage` in `pipeline`, if any.
    pub fn read_state(&self, pipeline: &str, stage: &str) -> Option<StateRecord> {
        let bytes = fs::read(self.state_path(pipeline, stage)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Records the last successful run of `stage` (atomically).
    pub fn write_state(&self, pipeline: &str, stage: &str, record: &StateRecord) -> Result<()> {
        let path = self.state_path(pipeline, stage);
        let parent = path.parent().expect("state path has a parent");
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let temporary = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(record).expect("state serialises");
        fs::write(&temporary, bytes).map_err(|e| Error::io(&temporary, e))?;
        fs::rename(&temporary, &path).map_err(|e| Error::io(&path, e))?;
        Ok(())
    }

    /// Every state record of every pipeline: (pipeline, stage file stem, record).
    pub fn all_states(&self) -> Vec<(String, String, StateRecord)> {
        let mut states = Vec::new();
        let Ok(pipelines) = fs::read_dir(self.root.join("state")) else {
            return states;
        };
        for pipeline in pipelines.flatten() {
            let Ok(files) = fs::read_dir(pipeline.path()) else {
                continue;
            };
            for file in files.flatten() {
                let path = file.path();
                if path.extension().is_some_and(|ext| ext == "json")
                    && let Some(record) = fs::read(&path)
                        .ok()
                        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                {
                    let record: StateRecord = record;
                    let pipeline_name = if record.pipeline.is_empty() {
                        pipeline.file_name().to_string_lossy().into_owned()
                    } else {
                        record.pipeline.clone()
                    };
                    let stage_name = if record.stage.is_empty() {
                        path.file_stem()
                            .unwrap_or_default()
                            .to_string_lossy()
                            .into_owned()
                    } else {
                        record.stage.clone()
                    };
                    states.push((pipeline_name, stage_name, record));
                }
            }
        }
        states
    }

    /// Keys of every entry in `runs/`: folders named by a cache key. Anything else there is
    /// not zfnet's and is left alone (with a warning).
    pub fn entry_keys(&self) -> Result<Vec<String>> {
        self.keyed_folders("runs")
    }

    /// Keys of every resume folder in `resume/` (same rule as [`Cache::entry_keys`]).
    pub fn resume_keys(&self) -> Result<Vec<String>> {
        self.keyed_folders("resume")
    }

    fn keyed_folders(&self, sub: &str) -> Result<Vec<String>> {
        let folder = self.root.join(sub);
        let mut keys = Vec::new();
        for entry in fs::read_dir(&folder).map_err(|e| Error::io(&folder, e))? {
            let entry = entry.map_err(|e| Error::io(&folder, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_cache_key(&name) && is_dir {
                keys.push(name);
            } else {
                tracing::warn!(
                    "{} is not a zfnet cache entry; leaving it alone",
                    entry.path().display()
                );
            }
        }
        keys.sort();
        Ok(keys)
    }
}

/// What `verify` found for one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VerifyOutcome {
    Intact,
    /// Removed, with the reason.
    Evicted(String),
}

/// What `verify` did, in all.
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    pub intact: usize,
    pub evicted: Vec<String>,
    /// Bytes re-read and found intact.
    pub bytes: u64,
}

/// Longest pipeline or stage name used as a file name as it is; longer names (or names that
/// are not file-name-safe) become a readable prefix plus a hash of the whole name.
const MAX_PLAIN_FILE_NAME: usize = 120;

/// File-name-safe form of a pipeline or stage name: the name itself when it is short and has
/// no separator, else its first characters and a hash of the whole name (file names are
/// limited to 255 bytes; stage instance names of a matrix can be longer).
fn file_name_for(name: &str) -> String {
    let safe = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']);
    if safe && name.len() <= MAX_PLAIN_FILE_NAME {
        return name.to_owned();
    }
    let prefix: String = name
        .chars()
        .map(|c| {
            if matches!(c, '/' | '\\' | '\0') {
                '_'
            } else {
                c
            }
        })
        .scan(0usize, |bytes, c| {
            *bytes += c.len_utf8();
            (*bytes <= 60).then_some(c)
        })
        .collect();
    let hash = blake3::hash(name.as_bytes()).to_hex();
    format!("{prefix}~{}", &hash[..32])
}

/// Makes sure `root` is a zfnet cache: creates it (with the marker and the tag) when it does
/// not exist or is empty, adopts a cache from before the marker, and refuses anything else.
fn claim_cache_folder(root: &Path) -> Result<()> {
    let marker = root.join(MARKER_FILE);
    if marker.is_file() {
        return Ok(());
    }
    match fs::metadata(root) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        }
        Err(error) => return Err(Error::io(root, error)),
        Ok(metadata) if !metadata.is_dir() => {
            return Err(Error::NotACache {
                path: root.to_path_buf(),
                found: "it is a file, not a folder".to_owned(),
            });
        }
        Ok(_) => {
            let names: Vec<String> = fs::read_dir(root)
                .map_err(|e| Error::io(root, e))?
                .map(|entry| {
                    entry
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .map_err(|e| Error::io(root, e))
                })
                .collect::<Result<_>>()?;
            // A concurrent first `open` may have its marker's temporary file here already.
            let names: Vec<String> = names
                .into_iter()
                .filter(|name| !name.starts_with(MARKER_FILE))
                .collect();
            let legacy = names.iter().any(|name| name == "runs")
                && names
                    .iter()
                    .all(|name| CACHE_LAYOUT.contains(&name.as_str()));
            if !names.is_empty() && !legacy {
                let mut shown: Vec<&str> = names.iter().map(String::as_str).take(5).collect();
                shown.sort();
                let more = if names.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                };
                return Err(Error::NotACache {
                    path: root.to_path_buf(),
                    found: format!(
                        "it holds {} entr{} ({}{more}) and no {MARKER_FILE}",
                        names.len(),
                        if names.len() == 1 { "y" } else { "ies" },
                        shown.join(", ")
                    ),
                });
            }
            if legacy {
                tracing::info!(
                    "{}: a zfnet cache from before the marker file; adopting it",
                    root.display()
                );
            }
        }
    }
    let tag = root.join(CACHEDIR_TAG_FILE);
    if !tag.exists() {
        fs::write(&tag, CACHEDIR_TAG).map_err(|e| Error::io(&tag, e))?;
    }
    let contents = serde_json::json!({
        "what": "the run cache of zfnet; zfnet deletes and replaces files in this folder",
        "format": 1,
        "created_by": format!("zfnet {}", crate::TOOL_VERSION),
    });
    let temporary = root.join(format!("{MARKER_FILE}.{}.tmp", std::process::id()));
    fs::write(
        &temporary,
        serde_json::to_vec_pretty(&contents).expect("marker serialises"),
    )
    .map_err(|e| Error::io(&temporary, e))?;
    fs::rename(&temporary, &marker).map_err(|e| Error::io(&marker, e))?;
    Ok(())
}

/// fsyncs every file and folder below `root` (and `root` itself).
pub(crate) fn fsync_tree(root: &Path) -> Result<()> {
    let metadata = fs::metadata(root).map_err(|e| Error::io(root, e))?;
    if metadata.is_file() {
        let file = fs::File::open(root).map_err(|e| Error::io(root, e))?;
        return file.sync_all().map_err(|e| Error::io(root, e));
    }
    for entry in fs::read_dir(root).map_err(|e| Error::io(root, e))? {
        let entry = entry.map_err(|e| Error::io(root, e))?;
        fsync_tree(&entry.path())?;
    }
    fsync_dir(root)
}

fn fsync_dir(dir: &Path) -> Result<()> {
    let handle = fs::File::open(dir).map_err(|e| Error::io(dir, e))?;
    handle.sync_all().map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
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
