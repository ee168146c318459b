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
//! lock                            held exclusively by `run` and `gc`
//! ```
//! A run is committed by writing its manifest into the temporary folder, fsyncing every file
//! and folder, and renaming the folder to `runs/<key>`: a stage killed at any point leaves only
//! a `tmp/` folder, which the next `run` deletes.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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
}

/// The cache folder and its hash memo.
pub struct Cache {
    root: PathBuf,
    memo: HashMemo,
    temp_counter: AtomicU64,
}

impl Cache {
    /// Opens (creating if needed) the cache at `root`.
    pub fn open(root: &Path) -> Result<Self> {
        for sub in ["runs", "tmp", "state", "resume"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        let root = fs::canonicalize(root).map_err(|e| Error::io(root, e))?;
        Ok(Cache {
            memo: HashMemo::load(&root.join("hash-memo.json")),
            root,
            temp_counter: AtomicU64::new(0),
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

    /// Takes the cache's exclusive lock, waiting for another `zfnet run` if one holds it.
    pub fn lock(&self) -> Result<fs::File> {
        let path = self.root.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        if file.try_lock().is_err() {
            tracing::warn!(
                "another zfnet process holds {}; waiting for it to finish",
                path.display()
            );
            file.lock().map_err(|e| Error::io(&path, e))?;
        }
        Ok(file)
    }

    pub fn entry_dir(&self, key: &str) -> PathBuf {
        self.root.join("runs").join(key)
    }

    pub fn output_path(&self, key: &str, record: &OutputRecord) -> PathBuf {
        self.entry_dir(key).join("outputs").join(&record.file_name)
    }

    /// Reads the manifest of entry `key` and checks every output's content hash.
    pub fn verified_manifest(&self, key: &str) -> Result<Manifest, EntryProblem> {
        let manifest = self.read_manifest(key)?;
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

    /// Reads the manifest of entry `key` without checking outputs.
    pub fn read_manifest(&self, key: &str) -> Result<Manifest, EntryProblem> {
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

    /// Deletes entry `key` (a corrupted one, before rerunning).
    pub fn remove_entry(&self, key: &str) -> Result<()> {
        let dir = self.entry_dir(key);
        if dir.exists() {
            // Move aside first so that a crash mid-delete never leaves a half entry in runs/.
            let aside = self.new_temp_dir(&format!("{key}.removed"))?;
            fs::remove_dir(&aside).map_err(|e| Error::io(&aside, e))?;
            fs::rename(&dir, &aside).map_err(|e| Error::io(&dir, e))?;
            fs::remove_dir_all(&aside).map_err(|e| Error::io(&aside, e))?;
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

    /// Deletes every temporary folder (left by killed runs). Call only under the lock.
    pub fn clean_temp(&self) -> Result<u64> {
        let tmp = self.root.join("tmp");
        let mut removed = 0;
        for entry in fs::read_dir(&tmp).map_err(|e| Error::io(&tmp, e))? {
            let path = entry.map_err(|e| Error::io(&tmp, e))?.path();
            removed += HashMemo::size_of(&path).unwrap_or(0);
            let result = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            result.map_err(|e| Error::io(&path, e))?;
        }
        Ok(removed)
    }

    /// Commits a finished run: writes its manifest into `temp_dir`, fsyncs everything and
    /// renames the folder to `runs/<key>`, replacing an older entry (a `--force` rerun).
    pub fn commit(&self, temp_dir: &Path, manifest: &Manifest) -> Result<()> {
        let manifest_path = temp_dir.join("manifest.json");
        let bytes = serde_json::to_vec_pretty(manifest).expect("manifest serialises");
        fs::write(&manifest_path, bytes).map_err(|e| Error::io(&manifest_path, e))?;
        fsync_tree(temp_dir)?;
        let target = self.entry_dir(&manifest.key);
        if target.exists() {
            self.remove_entry(&manifest.key)?;
        }
        fs::rename(temp_dir, &target).map_err(|e| Error::io(&target, e))?;
        fsync_dir(&self.root.join("runs"))?;
        Ok(())
    }

    fn state_path(&self, pipeline: &str, stage: &str) -> PathBuf {
        self.root
            .join("state")
            .join(sanitize(pipeline))
            .join(format!("{}.json", sanitize(stage)))
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
                    states.push((
                        pipeline.file_name().to_string_lossy().into_owned(),
                        path.file_stem()
                            .unwrap_or_default()
                            .to_string_lossy()
                            .into_owned(),
                        record,
                    ));
                }
            }
        }
        states
    }

    /// Keys of every entry in `runs/`.
    pub fn entry_keys(&self) -> Result<Vec<String>> {
        let runs = self.root.join("runs");
        let mut keys = Vec::new();
        for entry in fs::read_dir(&runs).map_err(|e| Error::io(&runs, e))? {
            let entry = entry.map_err(|e| Error::io(&runs, e))?;
            keys.push(entry.file_name().to_string_lossy().into_owned());
        }
        keys.sort();
        Ok(keys)
    }
}

/// File-name-safe form of a pipeline or stage name.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '/' | '\\' | '\0' => '_',
            c => c,
        })
        .collect()
}

/// fsyncs every file and folder below `root` (and `root` itself).
fn fsync_tree(root: &Path) -> Result<()> {
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
