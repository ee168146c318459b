//! The names zfnet owns inside its cache folder: the marker and tag files, the top-level
//! layout, cache keys and temporary names, and the file names of state records. Only what
//! these recognise is ever deleted.

use std::fs;
use std::path::{Component, Path};

/// The marker file that makes a folder a zfnet cache.
pub const MARKER_FILE: &str = "zfnet-cache.json";
/// The Cache Directory Tagging spec's file name and the signature its first line must carry.
pub const CACHEDIR_TAG_FILE: &str = "CACHEDIR.TAG";
pub(super) const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
    # This file is a cache directory tag created by zfnet (its run cache).\n\
    # For information about cache directory tags see https://bford.info/cachedir/\n";
/// Every name zfnet itself puts at the top of its cache. A non-empty folder without the
/// marker whose names are all from this list (and that has `runs/`) is a cache written before
/// the marker existed, and is adopted.
pub(super) const CACHE_LAYOUT: &[&str] = &[
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
pub(super) fn is_plain_relative(file_name: &str) -> bool {
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

/// Longest pipeline or stage name used as a file name as it is; longer names (or names that
/// are not file-name-safe) become a readable prefix plus a hash of the whole name.
const MAX_PLAIN_FILE_NAME: usize = 120;

/// File-name-safe form of a pipeline or stage name: the name itself when it is short and has
/// no separator, else its first characters and a hash of the whole name (file names are
/// limited to 255 bytes; stage instance names of a matrix can be longer).
pub(super) fn file_name_for(name: &str) -> String {
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
