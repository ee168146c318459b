//! Walking `<root>/<class>/<files>` layouts, shared by every folder-based reader.

use std::fs;
use std::path::{Path, PathBuf};

use artifacts::image_files::ImageFile;
use stage_api::{Error, Result};

/// One class folder and its files (sorted, recursive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassFolder {
    pub name: String,
    pub files: Vec<PathBuf>,
}

/// What a scan of a root folder found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Class folders in sorted name order.
    pub classes: Vec<ClassFolder>,
    /// Files directly under the root, outside any class folder.
    pub stray_files: Vec<PathBuf>,
}

/// Lists the class folders of `root` and every file below each.
pub fn scan_class_folders(root: &Path) -> Result<Listing> {
    let mut listing = Listing::default();
    for entry in sorted_entries(root)? {
        if entry.is_dir() {
            let name = entry
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut files = Vec::new();
            collect_files(&entry, &mut files)?;
            listing.classes.push(ClassFolder { name, files });
        } else {
            listing.stray_files.push(entry);
        }
    }
    Ok(listing)
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        entries.push(entry.map_err(|e| Error::io(dir, e))?.path());
    }
    entries.sort();
    Ok(entries)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in sorted_entries(dir)? {
        if entry.is_dir() {
            collect_files(&entry, out)?;
        } else {
            out.push(entry);
        }
    }
    Ok(())
}

/// Turns (class name, files) groups into a listing with labels in group order, applying the
/// per-class limit; returns the files and summary lines.
pub(crate) fn label_files(
    groups: &[(String, Vec<PathBuf>)],
    limit_per_class: Option<i64>,
) -> (Vec<ImageFile>, Vec<String>) {
    let mut files = Vec::new();
    let mut empty = Vec::new();
    for (label, (class_name, paths)) in groups.iter().enumerate() {
        if paths.is_empty() {
            empty.push(class_name.clone());
        }
        let keep = limit_per_class.map_or(paths.len(), |l| paths.len().min(l as usize));
        for path in &paths[..keep] {
            files.push(ImageFile {
                image_id: files.len() as i64,
                path: path.display().to_string(),
                label: label as i32,
                class_name: class_name.clone(),
            });
        }
    }
    let mut lines = vec![format!("{} files in {} classes", files.len(), groups.len())];
    if !empty.is_empty() {
        tracing::warn!(classes = ?empty, "empty class folders");
        lines.push(format!(
            "{} empty class folder(s), kept as classes with no images: {}",
            empty.len(),
            empty.join(", ")
        ));
    }
    (files, lines)
}

/// A summary line for files found outside class folders (they are not part of the dataset).
pub(crate) fn stray_line(stray: &[PathBuf]) -> Option<String> {
    if stray.is_empty() {
        return None;
    }
    let names: Vec<String> = stray
        .iter()
        .take(5)
        .map(|p| {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    tracing::warn!(
        count = stray.len(),
        "files outside class folders are ignored"
    );
    Some(format!(
        "ignored {} file(s) outside class folders: {}{}",
        stray.len(),
        names.join(", "),
        if stray.len() > 5 { ", ..." } else { "" }
    ))
}
