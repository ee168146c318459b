//! Kind `imagenet`: ILSVRC 2012 (§3, §5.1).
//!
//! - `train/<wnid>/*.JPEG`.
//! - `val/<wnid>/*.JPEG` (after the usual `valprep.sh`), or `val/` flat with a `val_labels`
//!   file. `val_labels` lines are either `<file name>[,| ]<wnid or class index> ...` (Kaggle's
//!   `LOC_val_solution.csv` shape, header line allowed), or a single integer per line — the
//!   devkit's `ILSVRC2012_validation_ground_truth.txt`, ILSVRC IDs 1-1000 in sorted file order,
//!   which needs `synsets` in the devkit's ID order to mean anything.
//! - Class index: position in `synsets` (one wnid per line, first token) if given, else the
//!   sorted wnids of `train/`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use artifacts::image_files::write_image_files;
use stage_api::{
    Error, InputKind, InputSpec, OutputSpec, ParamSpec, Result, RunSummary, StageContext, StageKind,
};

use crate::folders::{label_files, scan_class_folders, stray_line};

pub struct ImageNet;

impl StageKind for ImageNet {
    fn name(&self) -> &'static str {
        "imagenet"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "Lists ILSVRC 2012 train or val (class folders, or flat val with a label file)."
    }

    fn peak_memory(&self) -> &'static str {
        "The file listing only (no image is opened), held about three times over: about 3 N (path + wnid + 50) bytes (~300 MB for ImageNet's 1.28M training files, from the ~100 MB per copy estimated in image_files.rs, not measured), plus the synset list and a flat val/'s ground-truth text. Grows with N files."
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::choice("split", "train", &["train", "val"], "Which split to list."),
            crate::limit_param(),
        ]
    }

    fn inputs(&self) -> Vec<InputSpec> {
        vec![
            crate::root_input("the ILSVRC2012 folder holding train/ and val/"),
            InputSpec {
                name: "synsets",
                kind: InputKind::Path,
                required: false,
                doc: "one wnid per line: defines the class order (default: sorted train/ wnids)",
            },
            InputSpec {
                name: "val_labels",
                kind: InputKind::Path,
                required: false,
                doc: "labels for a flat val/ folder",
            },
        ]
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![crate::files_output()]
    }

    fn run(&self, ctx: &StageContext) -> Result<RunSummary> {
        let root = ctx.input("root");
        let synsets = match ctx.optional_input("synsets") {
            Some(path) => read_synsets(path)?,
            None => {
                let train = root.join("train");
                scan_class_folders(&train)
                    .map_err(|_| {
                        Error::input(
                            &train,
                            "cannot list train/ to find the class order; give a `synsets` file",
                        )
                    })?
                    .classes
                    .into_iter()
                    .map(|class| class.name)
                    .collect()
            }
        };
        let split = ctx.params.str("split");
        let folder = root.join(split);
        let listing = scan_class_folders(&folder)?;
        let mut lines = Vec::new();
        let groups = if listing.classes.is_empty() && split == "val" {
            let labels_path = ctx.optional_input("val_labels").ok_or_else(|| {
                Error::Config(format!(
                    "{} is flat (no class folders): give the `val_labels` input",
                    folder.display()
                ))
            })?;
            flat_val_groups(&folder, &listing.stray_files, labels_path, &synsets)?
        } else {
            lines.extend(stray_line(&listing.stray_files));
            let mut by_wnid: BTreeMap<String, Vec<PathBuf>> = listing
                .classes
                .into_iter()
                .map(|class| (class.name, class.files))
                .collect();
            let groups: Vec<(String, Vec<PathBuf>)> = synsets
                .iter()
                .map(|wnid| (wnid.clone(), by_wnid.remove(wnid).unwrap_or_default()))
                .collect();
            if !by_wnid.is_empty() {
                let unknown: Vec<&String> = by_wnid.keys().take(5).collect();
                lines.push(format!(
                    "ignored {} folder(s) not in the synset list: {unknown:?}",
                    by_wnid.len()
                ));
            }
            groups
        };
        let (files, summary) = label_files(&groups, ctx.params.optional_int("limit_per_class"));
        lines.splice(0..0, summary);
        write_image_files(ctx.output("files"), &ctx.provenance, &files)?;
        Ok(RunSummary { lines })
    }
}

fn read_synsets(path: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let synsets: Vec<String> = text
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    if synsets.is_empty() {
        return Err(Error::input(path, "the synset list is empty"));
    }
    Ok(synsets)
}

/// Groups a flat val/ folder's files by the labels in `labels_path`.
fn flat_val_groups(
    folder: &Path,
    files: &[PathBuf],
    labels_path: &Path,
    synsets: &[String],
) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let text = fs::read_to_string(labels_path).map_err(|e| Error::io(labels_path, e))?;
    let mut sorted: Vec<&PathBuf> = files.iter().collect();
    sorted.sort();
    let stem = |path: &Path| {
        path.file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    };
    let mut label_of: BTreeMap<String, usize> = BTreeMap::new();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let single_column = lines
        .iter()
        .all(|line| line.trim().parse::<usize>().is_ok());
    for (number, line) in lines.iter().enumerate() {
        let bad = |what: &str| {
            Error::input(
                labels_path,
                format!("line {}: {what} (`{}`)", number + 1, line.trim()),
            )
        };
        if single_column {
            let id: usize = line.trim().parse().expect("checked above");
            if id == 0 || id > synsets.len() {
                return Err(bad("ILSVRC ID outside 1..number of synsets"));
            }
            let Some(file) = sorted.get(number) else {
                return Err(bad("more labels than files in val/"));
            };
            label_of.insert(stem(file), id - 1);
            continue;
        }
        let mut tokens = line.split([',', ' ', '\t']).filter(|t| !t.is_empty());
        let (Some(name), Some(class)) = (tokens.next(), tokens.next()) else {
            return Err(bad("expected `<file name> <wnid or class index>`"));
        };
        if number == 0 && name.eq_ignore_ascii_case("ImageId") {
            continue; // a CSV header
        }
        let label = match synsets.iter().position(|wnid| wnid == class) {
            Some(label) => label,
            None => match class.parse::<usize>() {
                Ok(index) if index < synsets.len() => index,
                _ => return Err(bad("unknown wnid or class index")),
            },
        };
        let name = Path::new(name);
        label_of.insert(stem(name), label);
    }
    let mut groups: Vec<(String, Vec<PathBuf>)> = synsets
        .iter()
        .map(|wnid| (wnid.clone(), Vec::new()))
        .collect();
    let mut unlabelled = Vec::new();
    for file in sorted {
        match label_of.get(&stem(file)) {
            Some(&label) => groups[label].1.push(file.clone()),
            None => unlabelled.push(file.display().to_string()),
        }
    }
    if !unlabelled.is_empty() {
        return Err(Error::input(
            folder,
            format!(
                "{} file(s) have no label in {}: {:?}",
                unlabelled.len(),
                labels_path.display(),
                &unlabelled[..unlabelled.len().min(3)]
            ),
        ));
    }
    Ok(groups)
}
