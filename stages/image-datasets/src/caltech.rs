//! Kinds `caltech101` and `caltech256` (§5.2, Tables 4, 5, 7).
//!
//! Caltech-101: `101_ObjectCategories/<class>/image_NNNN.jpg`; `BACKGROUND_Google` is not an
//! object class and is dropped by default. Caltech-256: `256_ObjectCategories/NNN.name/*.jpg`;
//! class names lose their `NNN.` prefix, and `257.clutter` is dropped by default (Griffin et
//! al.'s protocol trains on the 256 object classes). `root` may be the categories folder or
//! the folder that holds it.

use std::path::{Path, PathBuf};

use artifacts::image_files::write_image_files;
use stage_api::{InputSpec, OutputSpec, ParamSpec, Result, RunSummary, StageContext, StageKind};

use crate::folders::{label_files, scan_class_folders, stray_line};

fn categories_folder(root: &Path, name: &str) -> PathBuf {
    let inner = root.join(name);
    if inner.is_dir() {
        inner
    } else {
        root.to_path_buf()
    }
}

pub struct Caltech101;

impl StageKind for Caltech101 {
    fn name(&self) -> &'static str {
        "caltech101"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "Lists Caltech-101 (101_ObjectCategories/<class>/*.jpg)."
    }

    fn peak_memory(&self) -> &'static str {
        "The file listing only (no image is opened), held about three times over (walk, labelled rows, the Arrow batch written): about 3 N (path + class + 50) bytes. Grows with N files; limit_per_class trims only after the walk."
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::bool(
                "drop_background",
                true,
                "Leave out BACKGROUND_Google (not an object class).",
            ),
            crate::limit_param(),
        ]
    }

    fn inputs(&self) -> Vec<InputSpec> {
        vec![crate::root_input(
            "101_ObjectCategories, or the folder holding it",
        )]
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![crate::files_output()]
    }

    fn run(&self, ctx: &StageContext) -> Result<RunSummary> {
        let root = categories_folder(ctx.input("root"), "101_ObjectCategories");
        let listing = scan_class_folders(&root)?;
        let drop = ctx.params.bool("drop_background");
        let groups: Vec<_> = listing
            .classes
            .into_iter()
            .filter(|class| !(drop && class.name == "BACKGROUND_Google"))
            .map(|class| (class.name, class.files))
            .collect();
        let (files, mut lines) = label_files(&groups, ctx.params.optional_int("limit_per_class"));
        lines.extend(stray_line(&listing.stray_files));
        write_image_files(ctx.output("files"), &ctx.provenance, &files)?;
        Ok(RunSummary { lines })
    }
}

pub struct Caltech256;

impl StageKind for Caltech256 {
    fn name(&self) -> &'static str {
        "caltech256"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "Lists Caltech-256 (256_ObjectCategories/NNN.name/*.jpg)."
    }

    fn peak_memory(&self) -> &'static str {
        "The file listing only (no image is opened), held about three times over (walk, labelled rows, the Arrow batch written): about 3 N (path + class + 50) bytes. Grows with N files."
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::bool("drop_clutter", true, "Leave out 257.clutter."),
            crate::limit_param(),
        ]
    }

    fn inputs(&self) -> Vec<InputSpec> {
        vec![crate::root_input(
            "256_ObjectCategories, or the folder holding it",
        )]
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![crate::files_output()]
    }

    fn run(&self, ctx: &StageContext) -> Result<RunSummary> {
        let root = categories_folder(ctx.input("root"), "256_ObjectCategories");
        let listing = scan_class_folders(&root)?;
        let drop = ctx.params.bool("drop_clutter");
        let groups: Vec<_> = listing
            .classes
            .into_iter()
            .filter(|class| !(drop && class.name == "257.clutter"))
            .map(|class| {
                let name = match class.name.split_once('.') {
                    Some((number, name)) if number.chars().all(|c| c.is_ascii_digit()) => {
                        name.to_owned()
                    }
                    _ => class.name.clone(),
                };
                (name, class.files)
            })
            .collect();
        let (files, mut lines) = label_files(&groups, ctx.params.optional_int("limit_per_class"));
        lines.extend(stray_line(&listing.stray_files));
        write_image_files(ctx.output("files"), &ctx.provenance, &files)?;
        Ok(RunSummary { lines })
    }
}
