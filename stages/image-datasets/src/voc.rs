//! Kind `voc2012`: PASCAL VOC 2012 classification (§5.2, Table 6).
//!
//! Reads `ImageSets/Main/<split>.txt` for the image list and `<class>_<split>.txt` for each of
//! the 20 classes (`<image id> <1 | -1 | 0>`: present, absent, difficult). Images are
//! multi-label: the `multilabels` output has every image's classes; `files` carries the first
//! present class as `label` so single-label stages can still read it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use artifacts::image_files::{ImageFile, write_image_files};
use artifacts::multilabels::{MultiLabel, write_multilabels};
use stage_api::{
    Error, InputSpec, OutputSpec, ParamSpec, Result, RunSummary, StageContext, StageKind,
};

pub use artifacts::multilabels::VOC_CLASSES;

pub struct Voc2012;

impl StageKind for Voc2012 {
    fn name(&self) -> &'static str {
        "voc2012"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "Lists PASCAL VOC 2012 classification images with their 20-class multi-labels."
    }

    fn peak_memory(&self) -> &'static str {
        "The split's ids, the 20 <class>_<split>.txt files as tokens and the files + labels rows: a few KB per id. No image is opened. Grows with the ids in the split."
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![ParamSpec::choice(
            "split",
            "trainval",
            &["train", "val", "trainval"],
            "Image set of ImageSets/Main.",
        )]
    }

    fn inputs(&self) -> Vec<InputSpec> {
        vec![crate::root_input("VOCdevkit/VOC2012 (or VOCdevkit)")]
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![
            crate::files_output(),
            OutputSpec::new(
                "multilabels",
                "multilabels.parquet",
                "multilabels artifact: classes present / difficult per image",
            ),
        ]
    }

    fn run(&self, ctx: &StageContext) -> Result<RunSummary> {
        let given = ctx.input("root");
        let root: PathBuf = if given.join("VOC2012").is_dir() {
            given.join("VOC2012")
        } else {
            given.to_path_buf()
        };
        let split = ctx.params.str("split");
        let sets = root.join("ImageSets/Main");
        let ids: Vec<String> = read_lines(&sets.join(format!("{split}.txt")))?
            .into_iter()
            .map(|(_, tokens)| tokens[0].clone())
            .collect();
        let mut present: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        let mut difficult: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        let class_lines: Vec<Vec<(usize, Vec<String>)>> = VOC_CLASSES
            .iter()
            .map(|class| read_lines(&sets.join(format!("{class}_{split}.txt"))))
            .collect::<Result<_>>()?;
        for (class_index, lines) in class_lines.iter().enumerate() {
            let file = sets.join(format!("{}_{split}.txt", VOC_CLASSES[class_index]));
            for (line_number, tokens) in lines {
                let flag = tokens
                    .get(1)
                    .and_then(|t| t.parse::<i32>().ok())
                    .ok_or_else(|| {
                        Error::input(
                            &file,
                            format!("line {line_number}: expected `<image id> <1|-1|0>`"),
                        )
                    })?;
                match flag {
                    1 => present
                        .entry(&tokens[0])
                        .or_default()
                        .push(class_index as i32),
                    0 => difficult
                        .entry(&tokens[0])
                        .or_default()
                        .push(class_index as i32),
                    _ => {}
                }
            }
        }
        let mut files = Vec::with_capacity(ids.len());
        let mut labels = Vec::with_capacity(ids.len());
        let mut missing = 0;
        for (image_id, id) in ids.iter().enumerate() {
            let classes = present.get(id.as_str()).cloned().unwrap_or_default();
            let first = classes.first().copied().unwrap_or(-1);
            let path = root.join("JPEGImages").join(format!("{id}.jpg"));
            if !path.exists() {
                missing += 1;
            }
            files.push(ImageFile {
                image_id: image_id as i64,
                path: path.display().to_string(),
                label: first,
                class_name: if first >= 0 {
                    VOC_CLASSES[first as usize].to_owned()
                } else {
                    String::new()
                },
            });
            labels.push(MultiLabel {
                image_id: image_id as i64,
                labels: classes,
                difficult: difficult.get(id.as_str()).cloned().unwrap_or_default(),
            });
        }
        write_image_files(ctx.output("files"), &ctx.provenance, &files)?;
        write_multilabels(ctx.output("multilabels"), &ctx.provenance, &labels)?;
        let mut summary = RunSummary::default().line(format!(
            "{} images of VOC2012 {split}, 20 classes",
            files.len()
        ));
        if missing > 0 {
            summary = summary.line(format!(
                "{missing} listed image(s) are missing from JPEGImages/ (preprocess rejects them)"
            ));
        }
        Ok(summary)
    }
}

/// Non-empty lines as (1-based line number, whitespace tokens).
fn read_lines(path: &Path) -> Result<Vec<(usize, Vec<String>)>> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| (i + 1, line.split_whitespace().map(str::to_owned).collect()))
        .collect())
}
