//! `zfnet export STAGE.OUTPUT DESTINATION`: copies an artifact out of the cache, writing only
//! what it creates.
//!
//! The destination is checked before anything is written: never `/`, the project folder, the
//! working folder, the home folder or a folder above any of them, never the cache or a path
//! inside it; an existing non-empty destination is replaced only with `--force`. The copy is
//! made in a sibling temporary folder, checked against the manifest's content hash, and only
//! then renamed into place; the old destination is moved aside first and removed last.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use artifacts::HashMemo;
use orchestrator::cache::{Cache, LockMode, remove_owned};
use orchestrator::{Dag, Error};

use super::{fresh_artifact, open_cache};

pub fn export(dag: &Dag, artifact: &str, destination: &Path, force: bool) -> Result<u8> {
    let cache = open_cache(dag)?;
    // Shared: a `run --force` cannot replace the entry while it is copied.
    let _lock = cache.lock(LockMode::Shared, "export")?;
    let (source, record) = fresh_artifact(dag, &cache, artifact)?;
    let target = checked_destination(dag, &cache, destination, force)?;
    let parent = target.parent().expect("checked: not the root");
    let name = target
        .file_name()
        .expect("checked: has a file name")
        .to_string_lossy()
        .into_owned();
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;

    let partial = unused_sibling(parent, &name, "zfnet-export")?;
    let copied = copy_tree(&source, &partial)
        .with_context(|| format!("copying {} to {}", source.display(), partial.display()))
        .and_then(|()| {
            let hash = HashMemo::in_memory().hash_path(&partial)?;
            anyhow::ensure!(
                hash == record.hash,
                "the copy in {} hashes to {}, but the cache records {} for {artifact}; \
                 nothing was replaced (run `zfnet verify`)",
                partial.display(),
                hash.short(),
                record.hash.short()
            );
            Ok(())
        });
    if let Err(error) = copied {
        let _ = remove_owned(&partial);
        return Err(error);
    }

    if std::fs::symlink_metadata(&target).is_ok() {
        let aside = unused_sibling(parent, &name, "zfnet-replaced")?;
        std::fs::remove_dir(&aside)?;
        std::fs::rename(&target, &aside)
            .with_context(|| format!("moving {} aside", target.display()))?;
        if let Err(error) = std::fs::rename(&partial, &target) {
            // Put the old destination back; the new copy goes.
            let _ = std::fs::rename(&aside, &target);
            let _ = remove_owned(&partial);
            return Err(error).with_context(|| format!("moving the copy to {}", target.display()));
        }
        remove_owned(&aside).with_context(|| format!("removing {}", aside.display()))?;
    } else {
        std::fs::rename(&partial, &target)
            .with_context(|| format!("moving {} to {}", partial.display(), target.display()))?;
    }
    println!("exported {artifact} to {}", destination.display());
    Ok(0)
}

/// `destination` as an absolute path with `.`, `..` and links in existing folders resolved,
/// or a usage error saying why zfnet will not write there.
fn checked_destination(
    dag: &Dag,
    cache: &Cache,
    destination: &Path,
    force: bool,
) -> Result<PathBuf> {
    let target = resolved(destination)?;
    let refuse = |why: String| -> anyhow::Error {
        Error::Usage(format!(
            "will not export to `{}` ({}): {why}; name a new folder or file, e.g. \
             `reports/<name>`",
            destination.display(),
            target.display()
        ))
        .into()
    };
    if target.file_name().is_none() {
        return Err(refuse("it is the root folder".to_owned()));
    }
    let project = dag.file.parent().map(resolved).transpose()?;
    let working = std::env::current_dir()
        .ok()
        .map(|dir| resolved(&dir))
        .transpose()?;
    let home = std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(|home| resolved(Path::new(&home)))
        .transpose()?;
    let cache_root = cache.root().to_path_buf();
    for (what, folder) in [
        ("the pipeline's folder", project),
        ("the working folder", working),
        ("the home folder", home),
        ("the cache", Some(cache_root.clone())),
    ] {
        if let Some(folder) = folder
            && folder.starts_with(&target)
        {
            let relation = if folder == target { "is" } else { "holds" };
            return Err(refuse(format!(
                "it {relation} {what}, {}",
                folder.display()
            )));
        }
    }
    if target.starts_with(&cache_root) {
        return Err(refuse(format!(
            "it is inside the cache, {}",
            cache_root.display()
        )));
    }
    if !force && let Some(what) = occupied(&target)? {
        return Err(Error::Usage(format!(
            "`{}` already exists and {what}; zfnet export replaces it only with --force (the \
             old contents are removed once the new copy is complete and checked)",
            destination.display()
        ))
        .into());
    }
    Ok(target)
}

/// What stands at `path` that an export would replace: `None` for nothing or an empty folder.
fn occupied(path: &Path) -> Result<Option<&'static str>> {
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return Ok(None);
    };
    Ok(if metadata.is_symlink() {
        Some("is a symbolic link")
    } else if metadata.is_dir() {
        let mut entries =
            std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))?;
        entries
            .next()
            .is_some()
            .then_some("is a folder with files in it")
    } else {
        Some("is a file")
    })
}

/// An absolute form of `path`: `.` and `..` applied lexically, links resolved in the part of
/// it that exists.
fn resolved(path: &Path) -> Result<PathBuf> {
    let absolute =
        std::path::absolute(path).with_context(|| format!("making {} absolute", path.display()))?;
    let mut lexical = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            other => lexical.push(other),
        }
    }
    // Resolve links in the longest existing prefix; the rest does not exist yet.
    let mut existing = lexical.clone();
    let mut rest = Vec::new();
    while std::fs::symlink_metadata(&existing).is_err() {
        let Some(name) = existing.file_name() else {
            break;
        };
        rest.push(name.to_owned());
        existing.pop();
    }
    // The last component itself stays unresolved: a link there is replaced, not followed.
    let last_is_link =
        rest.is_empty() && std::fs::symlink_metadata(&existing).is_ok_and(|m| m.is_symlink());
    let mut result = if last_is_link {
        let name = existing.file_name().map(ToOwned::to_owned);
        let parent = existing.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut base = std::fs::canonicalize(&parent).unwrap_or(parent);
        base.extend(name);
        base
    } else {
        std::fs::canonicalize(&existing).unwrap_or(existing)
    };
    result.extend(rest.into_iter().rev());
    Ok(result)
}

/// A new, empty folder `.<name>.<purpose>-<pid>-<n>` beside the destination (created here,
/// so that no other process's folder of the same name is ever reused).
fn unused_sibling(parent: &Path, name: &str, purpose: &str) -> Result<PathBuf> {
    for n in 0..1000 {
        let candidate = parent.join(format!(".{name}.{purpose}-{}-{n}", std::process::id()));
        match std::fs::create_dir(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => {
                return Err(error).with_context(|| format!("creating {}", candidate.display()));
            }
        }
    }
    anyhow::bail!(
        "no unused temporary name beside {}",
        parent.join(name).display()
    )
}

/// Copies a cached output (a file or a folder tree) to `to`, an empty folder this command
/// made: a file output replaces that folder with the file.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let metadata = std::fs::symlink_metadata(from)?;
    if metadata.is_dir() {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else if metadata.is_file() {
        if std::fs::symlink_metadata(to).is_ok_and(|m| m.is_dir()) {
            std::fs::remove_dir(to)?;
        }
        std::fs::copy(from, to).map(|_| ())
    } else {
        Err(std::io::Error::other(format!(
            "{} is neither a file nor a folder; cache outputs never are",
            from.display()
        )))
    }
}
