//! Kind `image_folder`: the generic `<root>/<class>/<image>` layout.

use artifacts::image_files::write_image_files;
use stage_api::{InputSpec, OutputSpec, ParamSpec, Result, RunSummary, StageContext, StageKind};

use crate::folders::{label_files, scan_class_folders, stray_line};

pub struct ImageFolder;

impl StageKind for ImageFolder {
    fn name(&self) -> &'static str {
        "image_folder"
    }

    fn version(&self) -> u32 {
        1
    }

    fn summary(&self) -> &'static str {
        "Lists <root>/<class>/<image> files; labels follow the sorted class folder names."
    }

    fn peak_memory(&self) -> &'static str {
        "The file listing only (no image is opened), held about three times over (walk, labelled rows, the Arrow batch written): about 3 N (path + class + 50) bytes. Grows with N files; exclude_classes and limit_per_class trim only after the walk."
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::str_list("exclude_classes", &[], "Class folders to leave out."),
            crate::limit_param(),
        ]
    }

    fn inputs(&self) -> Vec<InputSpec> {
        vec![crate::root_input("folder holding one sub-folder per class")]
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![crate::files_output()]
    }

    fn run(&self, ctx: &StageContext) -> Result<RunSummary> {
        let listing = scan_class_folders(ctx.input("root"))?;
        let exclude = ctx.params.str_list("exclude_classes");
        let groups: Vec<_> = listing
            .classes
            .into_iter()
            .filter(|class| !exclude.contains(&class.name))
            .map(|class| (class.name, class.files))
            .collect();
        let (files, mut lines) = label_files(&groups, ctx.params.optional_int("limit_per_class"));
        lines.extend(stray_line(&listing.stray_files));
        write_image_files(ctx.output("files"), &ctx.provenance, &files)?;
        Ok(RunSummary { lines })
    }
}
