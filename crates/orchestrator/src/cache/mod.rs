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

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use artifacts::HashMemo;

use crate::{Error, Result};

mod layout;
mod lock;
mod manifest;
mod owner_file;

use layout::{CACHE_LAYOUT, CACHEDIR_TAG, file_name_for, is_plain_relative};
pub use layout::{CACHEDIR_TAG_FILE, MARKER_FILE, is_cache_key, is_temp_name, remove_owned};
pub use lock::{CacheLock, LockMode, LockOwner, LockTiming};
pub use manifest::{
    EntryProblem, InputRecord, MANIFEST_FORMAT, Manifest, OutputRecord, StateRecord,
};
pub(crate) use owner_file::files_named;
pub use owner_file::{host_name, release_owner_files};

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
