//! Content hashing of artifacts and dataset folders (blake3), with a stat-keyed memo.
//!
//! A file's hash is blake3 of its bytes. A folder's hash is blake3 over its sorted
//! `relative path, file hash` pairs, so renaming, adding or removing a file changes it.
//! Re-reading a 150 GB dataset on every `zfnet status` would be absurd, so [`HashMemo`]
//! remembers each file's hash together with its size, inode, mtime and ctime (as git's index
//! does); any write to the file changes its ctime, which no user tool can set back, so a changed
//! file is always re-read. Files modified less than [`RACY_WINDOW`] before they were hashed are
//! not memoised (git's "racily clean" problem).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Files modified this recently are hashed but not memoised.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// Files larger than this are hashed with memory mapping and several threads.
const MMAP_THRESHOLD: u64 = 16 << 20;

/// A blake3 content hash, as 64 lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContentHash(String);

impl ContentHash {
    /// Hash of an in-memory byte string.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        ContentHash(blake3::hash(bytes).to_hex().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, for messages and folder names people read.
    pub fn short(&self) -> &str {
        &self.0[..12.min(self.0.len())]
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<blake3::Hash> for ContentHash {
    fn from(hash: blake3::Hash) -> Self {
        ContentHash(hash.to_hex().to_string())
    }
}

/// Hashes the bytes of one file, without the memo.
pub fn hash_file(path: &Path) -> Result<ContentHash> {
    let mut hasher = blake3::Hasher::new();
    let len = fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    if len >= MMAP_THRESHOLD {
        hasher
            .update_mmap_rayon(path)
            .map_err(|e| Error::io(path, e))?;
    } else {
        let mut file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let mut buffer = Vec::with_capacity(len as usize);
        file.read_to_end(&mut buffer)
            .map_err(|e| Error::io(path, e))?;
        hasher.update(&buffer);
    }
    Ok(hasher.finalize().into())
}

/// Every regular file below `root` (following links), as sorted relative paths.
pub fn list_files(root: &Path) -> Result<Vec<PathBuf>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let entries = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let path = entry.path();
            let metadata = fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
            if metadata.is_dir() {
                walk(root, &path, out)?;
            } else if metadata.is_file() {
                let relative = path.strip_prefix(root).expect("walk stays below root");
                out.push(relative.to_path_buf());
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(root, root, &mut files)?;
    files.sort();
    Ok(files)
}

/// What the memo knows of one file: its stat fingerprint and its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct MemoEntry {
    size: u64,
    inode: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    hash: ContentHash,
}

impl MemoEntry {
    fn fingerprint_matches(&self, metadata: &fs::Metadata) -> bool {
        let (size, inode, mtime_ns, ctime_ns) = fingerprint(metadata);
        self.size == size
            && self.inode == inode
            && self.mtime_ns == mtime_ns
            && self.ctime_ns == ctime_ns
    }
}

fn fingerprint(metadata: &fs::Metadata) -> (u64, u64, i128, i128) {
    let mtime_ns = metadata.mtime() as i128 * 1_000_000_000 + metadata.mtime_nsec() as i128;
    let ctime_ns = metadata.ctime() as i128 * 1_000_000_000 + metadata.ctime_nsec() as i128;
    (metadata.len(), metadata.ino(), mtime_ns, ctime_ns)
}

/// Remembers file hashes across runs, keyed by absolute path and checked against a stat
/// fingerprint before use. Safe to share between threads.
#[derive(Debug, Default)]
pub struct HashMemo {
    entries: Mutex<BTreeMap<PathBuf, MemoEntry>>,
    dirty: Mutex<bool>,
}

impl HashMemo {
    /// An empty memo that is never saved (every file is read).
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Loads the memo saved at `path`; a missing or unreadable memo starts empty (it is only
    /// a cache of hashes, never a source of truth).
    pub fn load(path: &Path) -> Self {
        let entries = fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        HashMemo {
            entries: Mutex::new(entries),
            dirty: Mutex::new(false),
        }
    }

    /// Writes the memo to `path` atomically (temporary file, then rename), if it changed.
    pub fn save(&self, path: &Path) -> Result<()> {
        if !*self.dirty.lock().expect("memo lock") {
            return Ok(());
        }
        let entries = self.entries.lock().expect("memo lock");
        let bytes = serde_json::to_vec(&*entries).expect("memo serialises");
        let temporary = path.with_extension("json.tmp");
        fs::write(&temporary, bytes).map_err(|e| Error::io(&temporary, e))?;
        fs::rename(&temporary, path).map_err(|e| Error::io(path, e))?;
        *self.dirty.lock().expect("memo lock") = false;
        Ok(())
    }

    /// The content hash of a file or of a folder tree. Files whose stat fingerprint matches
    /// the memo are not re-read.
    pub fn hash_path(&self, path: &Path) -> Result<ContentHash> {
        let metadata = fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if metadata.is_file() {
            return self.hash_one_file(path, &metadata);
        }
        let files = list_files(path)?;
        let hashes: Vec<ContentHash> = files
            .par_iter()
            .map(|relative| {
                let file = path.join(relative);
                let metadata = fs::metadata(&file).map_err(|e| Error::io(&file, e))?;
                self.hash_one_file(&file, &metadata)
            })
            .collect::<Result<_>>()?;
        let mut tree = blake3::Hasher::new();
        tree.update(b"zfnet-tree-v1\n");
        for (relative, hash) in files.iter().zip(&hashes) {
            tree.update(relative.to_string_lossy().as_bytes());
            tree.update(b"\0");
            tree.update(hash.as_str().as_bytes());
            tree.update(b"\n");
        }
        Ok(tree.finalize().into())
    }

    /// Total size in bytes of a file or of every file below a folder.
    pub fn size_of(path: &Path) -> Result<u64> {
        let metadata = fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if metadata.is_file() {
            return Ok(metadata.len());
        }
        let mut total = 0;
        for relative in list_files(path)? {
            let file = path.join(relative);
            total += fs::metadata(&file).map_err(|e| Error::io(&file, e))?.len();
        }
        Ok(total)
    }

    fn hash_one_file(&self, path: &Path, metadata: &fs::Metadata) -> Result<ContentHash> {
        let absolute = fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
        if let Some(entry) = self.entries.lock().expect("memo lock").get(&absolute)
            && entry.fingerprint_matches(metadata)
        {
            return Ok(entry.hash.clone());
        }
        let hashing_started = SystemTime::now();
        let hash = hash_file(path)?;
        // Re-stat after reading: a file written while we read it must not be memoised.
        let after = fs::metadata(path).map_err(|e| Error::io(path, e))?;
        let (size, inode, mtime_ns, ctime_ns) = fingerprint(&after);
        let modified = after.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let racy = hashing_started
            .duration_since(modified)
            .map(|age| age < RACY_WINDOW)
            .unwrap_or(true);
        if !racy && fingerprint(metadata) == (size, inode, mtime_ns, ctime_ns) {
            self.entries.lock().expect("memo lock").insert(
                absolute,
                MemoEntry {
                    size,
                    inode,
                    mtime_ns,
                    ctime_ns,
                    hash: hash.clone(),
                },
            );
            *self.dirty.lock().expect("memo lock") = true;
        }
        Ok(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_hash_changes_when_a_file_is_added_renamed_or_edited() {
        let dir = tempfile::tempdir().unwrap();
        let memo = HashMemo::in_memory();
        fs::write(dir.path().join("a.txt"), b"alpha").unwrap();
        let first = memo.hash_path(dir.path()).unwrap();
        assert_eq!(first, memo.hash_path(dir.path()).unwrap());

        fs::write(dir.path().join("b.txt"), b"beta").unwrap();
        let added = memo.hash_path(dir.path()).unwrap();
        assert_ne!(first, added);

        fs::rename(dir.path().join("b.txt"), dir.path().join("c.txt")).unwrap();
        let renamed = memo.hash_path(dir.path()).unwrap();
        assert_ne!(added, renamed);

        fs::write(dir.path().join("c.txt"), b"betA").unwrap();
        assert_ne!(renamed, memo.hash_path(dir.path()).unwrap());
    }

    #[test]
    fn memo_never_hides_an_edit_even_with_the_same_size_and_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("weights.bin");
        fs::write(&file, b"0123456789").unwrap();
        // Age the file past the racy window so that it is memoised.
        let old = SystemTime::now() - Duration::from_secs(60);
        fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let memo = HashMemo::in_memory();
        let before = memo.hash_path(&file).unwrap();
        assert_eq!(
            memo.entries.lock().unwrap().len(),
            1,
            "old file is memoised"
        );

        fs::write(&file, b"0123456780").unwrap();
        fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert_ne!(before, memo.hash_path(&file).unwrap(), "ctime moved on");
    }

    #[test]
    fn memo_round_trips_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x");
        fs::write(&file, b"x").unwrap();
        let old = SystemTime::now() - Duration::from_secs(60);
        fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let memo = HashMemo::in_memory();
        let hash = memo.hash_path(&file).unwrap();
        let saved = dir.path().join("memo.json");
        memo.save(&saved).unwrap();
        let loaded = HashMemo::load(&saved);
        assert_eq!(loaded.entries.lock().unwrap().len(), 1);
        assert_eq!(loaded.hash_path(&file).unwrap(), hash);
    }
}
