//! Stage kind `report`: the markdown report people read, regenerated from artifacts alone
//! (rerunning it is instant). It renders what the pipeline produced — training curves as a
//! table, the final validation errors (centre crop and the paper's 10-crop average), the
//! deconvnet figures and the conv1 filter statistics — with the paper's numbers beside ours
//! where the data are comparable, and says plainly which of the paper's results this pipeline
//! does not measure yet. The report is data: each section is a [`document::Section`] value,
//! each claim a [`claims::Claim`] whose verdict is computed from its own comparisons; the
//! claims summary opens the report, the deviations from the paper are generated from the
//! runs' params ([`deviations`]), and the provenance is folded at the end.

pub mod claims;
pub mod deviations;
pub mod document;
pub mod models;
pub mod paper;
pub mod paper_tables;
pub mod sections;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use artifacts::parquet_io::read_header;
use document::{MdTable, Section};
use models::ModelArchitecture;
use stage_api::{
    Error, InputSpec, OutputSpec, ParamSpec, Result, RunSummary, StageContext, StageKind,
};

pub fn kinds() -> Vec<Arc<dyn StageKind>> {
    vec![Arc::new(Report)]
}

pub struct Report;

impl StageKind for Report {
    fn name(&self) -> &'static str {
        "report"
    }

    fn version(&self) -> u32 {
        // 2: claims as data (PASS / FAIL / INCONCLUSIVE from effects with 95% intervals), the
        // claims summary first, generated deviations, model layer tables, provenance folded.
        // 3: zero spreads give no interval, Newcombe intervals for filter shares, claims on a
        // model that did not train are INCONCLUSIVE, caption wording.
        // 4: Fig. 6 (d)-(e)'s aliasing claim from the filters' aliased energy.
        // 5: its white-noise reference; no seconds in the provenance summary line.
        // 6: `caveat`; "Not measured" names every missing analysis (Table 1 among them);
        // Caltech and VOC beside ImageNet are the paper's own §5 sets, not a data deviation.
        // 7: the training curves' epoch axis ticks at whole epochs only.
        7
    }

    fn summary(&self) -> &'static str {
        "Renders README.md and figures/ from the pipeline's artifacts."
    }

    fn peak_memory(&self) -> &'static str {
        "Each input table read whole, one at a time (the default pipeline's are under 10 KB of Parquet each), and the report's sections until README.md is written; model files by their header only (capped at 100 MB); figures copied by streaming. Grows with its input tables."
    }

    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::string("title", "zfnet report", "The report's title."),
            ParamSpec::string(
                "caveat",
                "",
                "A warning printed at the top of the report, before anything else (e.g. that its data are a miniature's).",
            ),
            ParamSpec::string(
                "dataset",
                "",
                "One paragraph on the data (what was trained on, what was held out).",
            ),
            ParamSpec::bool(
                "paper_scale",
                false,
                "True when the data are the paper's (ImageNet 2012): the paper's numbers are then compared, not just shown.",
            ),
            ParamSpec::str_list(
                "deviation_reasons",
                &[],
                "Why the pipeline departs from the paper's settings, one `setting: reason` per entry (settings as the deviations table names them: data, preprocess.size, arch, crops, epochs, weight_decay, ...). A difference without a reason is flagged in the report.",
            ),
            ParamSpec::str_list(
                "transfer_paper_tables",
                &[],
                "For each `transfer` input in order, the paper's table to compare it with: caltech101 (Table 4), caltech256 (Table 5) or none.",
            ),
        ]
    }

    fn inputs(&self) -> Vec<InputSpec> {
        vec![
            InputSpec::artifact_list("training", "train.metrics artifacts"),
            InputSpec::artifact_list("evaluation", "train.evaluation artifacts"),
            InputSpec::artifact_list("deconv_figures", "deconv_top9.figures folders"),
            InputSpec::artifact_list("filters", "deconv_top9.filters artifacts"),
            InputSpec::artifact_list("occlusion_checks", "occlusion.checks artifacts"),
            InputSpec::artifact_list("occlusion_figures", "occlusion.figures folders"),
            InputSpec::artifact_list("evolution_figures", "feature_evolution.figures folders"),
            InputSpec::artifact_list("invariance_curves", "invariance.curves artifacts"),
            InputSpec::artifact_list("invariance_figures", "invariance.figures folders"),
            InputSpec::artifact_list("correspondence", "correspondence.table1 artifacts"),
            InputSpec::artifact_list("correspondence_figures", "correspondence.figures folders"),
            InputSpec::artifact_list("probe", "probe.table7 artifacts"),
            InputSpec::artifact_list("dedup", "dedup.matches artifacts"),
            InputSpec::artifact_list(
                "ablation_metrics",
                "train.metrics of an architecture sweep (Tables 2-3)",
            ),
            InputSpec::artifact_list(
                "ablation_evaluation",
                "train.evaluation of the same sweep, in the same order",
            ),
            InputSpec::artifact_list(
                "ablation_models",
                "train.model of the same sweep, in the same order: names each row's architecture",
            ),
            InputSpec::artifact_list("filter_comparison", "conv1_filters.table artifacts"),
            InputSpec::artifact_list("filter_figures", "conv1_filters.figures folders"),
            InputSpec::artifact_list("transfer", "transfer.table artifacts"),
            InputSpec::artifact_list("transfer_figures", "transfer.figures folders"),
            InputSpec::artifact_list("table6", "transfer_multilabel.table6 artifacts"),
            InputSpec::artifact_list(
                "models",
                "train.model artifacts whose layer tables the report prints (the sweep's models are printed too)",
            ),
        ]
    }

    fn outputs(&self) -> Vec<OutputSpec> {
        vec![OutputSpec::new(
            "report",
            "report",
            "README.md and figures/",
        )]
    }

    fn run(&self, ctx: &StageContext) -> Result<RunSummary> {
        let out = ctx.output("report");
        let figures = out.join("figures");
        std::fs::create_dir_all(&figures).map_err(|e| Error::io(&figures, e))?;
        let paper_scale = ctx.params.bool("paper_scale");
        let architectures = architectures(ctx)?;
        let sections = result_sections(ctx, &figures, paper_scale, &architectures)?;

        let mut md = String::new();
        let _ = writeln!(md, "# {}\n", ctx.params.str("title"));
        let caveat = ctx.params.str("caveat");
        if !caveat.trim().is_empty() {
            let _ = writeln!(md, "> **Read this first.** {}\n", caveat.trim());
        }
        let _ = writeln!(
            md,
            "Reproduction of Zeiler & Fergus, *Visualizing and Understanding Convolutional \
             Networks* (2013), generated by `zfnet` from the pipeline's artifacts. Every number \
             below was computed by this run; the paper's numbers are quoted from `PAPER.md`.\n"
        );
        let claims: Vec<(&claims::Claim, String)> = sections
            .iter()
            .flat_map(|s| s.claims().map(move |c| (c, s.anchor())))
            .collect();
        if !claims.is_empty() {
            let _ = writeln!(md, "## Claims\n");
            let counts = |word: &str| {
                claims
                    .iter()
                    .filter(|(c, _)| c.verdict().word() == word)
                    .count()
            };
            let _ = writeln!(
                md,
                "{} claims of the paper tested on this run: {} PASS, {} FAIL, {} INCONCLUSIVE. \
                 Each links to its section, where its table and the reason for its verdict are.\n",
                claims.len(),
                counts("PASS"),
                counts("FAIL"),
                counts("INCONCLUSIVE")
            );
            let _ = writeln!(
                md,
                "{}",
                claims::summary_table(claims.iter().map(|(c, a)| (*c, a.clone()))).render()
            );
            let _ = writeln!(md, "**How verdicts are decided.** {}\n", claims::RULES);
        }
        let dataset = ctx.params.str("dataset");
        if !dataset.is_empty() {
            let _ = writeln!(md, "## Data\n\n{dataset}\n");
        }
        let _ = writeln!(md, "## Deviations from the paper\n");
        match deviations::deviations(
            &ctx.upstream_runs,
            &ctx.params.str_list("deviation_reasons"),
        ) {
            Some(table) => {
                let _ = writeln!(
                    md,
                    "Generated by comparing the paper's training settings (§3, held in \
                     `stages/report/src/paper.rs` from `PAPER.md`) with the params of the runs \
                     behind this report; the reasons are the pipeline's (`deviation_reasons`).\n"
                );
                let _ = writeln!(md, "{}", table.render());
            }
            None => {
                let _ = writeln!(md, "None: every run used the paper's settings.\n");
            }
        }
        let models = models_section(&architectures);
        for section in sections.iter().chain(&models) {
            md.push_str(&section.render());
        }

        let _ = writeln!(md, "## Not measured by this pipeline\n");
        let _ = writeln!(
            md,
            "This run has no stage for these results of the paper, so the report makes no \
             claim about them: {}.\n",
            not_measured(ctx).join("; ")
        );
        md.push_str(&provenance(ctx));
        let readme = out.join("README.md");
        std::fs::write(&readme, md).map_err(|e| Error::io(&readme, e))?;
        let verdicts: Vec<String> = claims
            .iter()
            .map(|(c, _)| format!("{} {}", c.source, c.verdict().word()))
            .collect();
        Ok(RunSummary::default()
            .line(format!(
                "README.md with {} section(s)",
                sections.len() + usize::from(models.is_some())
            ))
            .line(format!("claims: {}", verdicts.join(", "))))
    }
}

/// The result sections, in reading order.
fn result_sections(
    ctx: &StageContext,
    figures: &Path,
    paper_scale: bool,
    architectures: &BTreeMap<String, ModelArchitecture>,
) -> Result<Vec<Section>> {
    let mut out = Vec::new();
    for (path, eval_path) in paired(ctx, "training", "evaluation") {
        out.push(sections::training(
            path,
            eval_path.map(|p| p.as_path()),
            paper_scale,
            figures,
        )?);
    }
    for folder in ctx.input_list("deconv_figures") {
        out.push(sections::deconv_projections(folder, figures)?);
    }
    for path in ctx.input_list("filters") {
        out.push(sections::filter_stats(path)?);
    }
    for (path, folder) in paired(ctx, "occlusion_checks", "occlusion_figures") {
        out.push(sections::occlusion(
            path,
            folder.map(|f| f.as_path()),
            figures,
        )?);
    }
    for folder in ctx.input_list("evolution_figures") {
        out.push(sections::evolution(folder, figures)?);
    }
    for (path, folder) in paired(ctx, "invariance_curves", "invariance_figures") {
        out.push(sections::invariance(
            path,
            folder.map(|f| f.as_path()),
            figures,
        )?);
    }
    for (path, folder) in paired(ctx, "correspondence", "correspondence_figures") {
        out.push(sections::correspondence(
            path,
            folder.map(|f| f.as_path()),
            figures,
        )?);
    }
    for path in ctx.input_list("probe") {
        out.push(sections::probe(path)?);
    }
    for path in ctx.input_list("dedup") {
        out.push(sections::dedup(path)?);
    }
    // The analyses above (and transfer below) read the trained model: if it did not train,
    // none of their claims is evidence.
    let main_model = main_model_failure(ctx)?;
    let ablation: Vec<(PathBuf, Option<PathBuf>)> =
        paired(ctx, "ablation_metrics", "ablation_evaluation")
            .map(|(m, e)| (m.clone(), e.cloned()))
            .collect();
    if !ablation.is_empty() {
        let runs = paper_tables::read_runs(&ablation, ctx.input_list("ablation_models"))?;
        out.push(paper_tables::ablation_section(
            &runs,
            architectures,
            paper_scale,
        ));
    }
    for (path, folder) in paired(ctx, "filter_comparison", "filter_figures") {
        out.push(paper_tables::filters_section(
            path,
            folder.map(|f| f.as_path()),
            figures,
            architectures,
        )?);
    }
    let paper_transfer = ctx.params.str_list("transfer_paper_tables");
    for (i, (path, folder)) in paired(ctx, "transfer", "transfer_figures").enumerate() {
        let paper = match paper_transfer.get(i).map(String::as_str) {
            Some("caltech101") => paper_tables::PaperTransferTable::Caltech101,
            Some("caltech256") => paper_tables::PaperTransferTable::Caltech256,
            _ => paper_tables::PaperTransferTable::None,
        };
        out.push(paper_tables::transfer_section(
            path,
            folder.map(|f| f.as_path()),
            figures,
            paper,
        )?);
    }
    for path in ctx.input_list("table6") {
        out.push(paper_tables::table6_section(path)?);
    }
    if let Some(why) = main_model {
        for section in out.iter_mut().filter(|s| {
            !s.title.starts_with("Architecture ablations")
                && !s.title.starts_with("First-layer filters compared")
        }) {
            section.block_claims(&why);
        }
    }
    Ok(out)
}

/// Why the trained model (`models`' first, evaluated by `evaluation`'s first) is no evidence:
/// its 10-crop validation error is within 5 points of chance. `None` when it trained, or when
/// the report is not wired to tell.
fn main_model_failure(ctx: &StageContext) -> Result<Option<String>> {
    let (Some(model), Some(evaluation)) = (
        ctx.input_list("models").first(),
        ctx.input_list("evaluation").first(),
    ) else {
        return Ok(None);
    };
    let architecture = ModelArchitecture::read(model)?;
    let (ten, _) = paper_tables::ten_crop_errors(evaluation)?;
    let run = paper_tables::Run {
        architecture: architecture.name.clone(),
        stage: stage_of(evaluation),
        train_top1: f64::NAN,
        val_top1: ten,
        val_top5: f64::NAN,
        classes: Some(architecture.classes),
    };
    Ok(run.did_not_train().then(|| {
        format!(
            "the model `{}` did not train (10-crop val top-1 error {:.1}%, chance {:.1}%): its \
             analyses are no evidence",
            architecture.name,
            100.0 * run.val_top1,
            100.0 * run.chance().unwrap_or(f64::NAN)
        )
    }))
}

/// Every model wired into the report (`models` and the sweep's), by architecture name.
fn architectures(ctx: &StageContext) -> Result<BTreeMap<String, ModelArchitecture>> {
    let mut out = BTreeMap::new();
    for path in ctx
        .input_list("models")
        .iter()
        .chain(ctx.input_list("ablation_models"))
    {
        let a = ModelArchitecture::read(path)?;
        out.entry(a.name.clone()).or_insert(a);
    }
    Ok(out)
}

/// One layer table per distinct architecture.
fn models_section(architectures: &BTreeMap<String, ModelArchitecture>) -> Option<Section> {
    if architectures.is_empty() {
        return None;
    }
    let mut section = Section::new("Models", "Fig. 3", None);
    section.text(
        "Every architecture behind this report, from its model's metadata: each conv, pool and \
         fully connected layer with its kernel / stride (padding), maps or units, output size \
         (height x width x maps) and parameters (weights and biases). The paper's ZF net (Fig. \
         3) takes 224x224 crops: conv1 96@7x7/2 -> 110, pool -> 55, conv2 256@5x5/2 -> 26, pool \
         -> 13, conv3-5 384, 384, 256 @3x3 -> 13, pool -> 6, fc6, fc7 4096.",
    );
    for a in architectures.values() {
        section.text(format!(
            "**`{}`** ({} classes, input {}x{}):",
            a.name, a.classes, a.input_size, a.input_size
        ));
        section.table(a.layer_table());
    }
    Some(section)
}

/// What the paper has that this run does not measure.
fn not_measured(ctx: &StageContext) -> Vec<&'static str> {
    [
        (
            ctx.input_list("deconv_figures").is_empty(),
            "deconvnet projections of the top-9 activations (Fig. 2)",
        ),
        (
            ctx.input_list("correspondence").is_empty(),
            "correspondence of object parts across images (Table 1, Fig. 8: the paper's dog \
             images with annotated eyes and nose were not published)",
        ),
        (
            ctx.input_list("evolution_figures").is_empty(),
            "feature evolution during training (Fig. 4)",
        ),
        (
            ctx.input_list("invariance_curves").is_empty(),
            "invariance to translation and scale (Fig. 5)",
        ),
        (
            ctx.input_list("occlusion_checks").is_empty(),
            "occlusion sensitivity (Fig. 7)",
        ),
        (
            ctx.input_list("probe").is_empty(),
            "per-layer linear probes (Table 7)",
        ),
        (
            ctx.input_list("ablation_metrics").is_empty(),
            "architecture ablations (Tables 2-3)",
        ),
        (
            ctx.input_list("transfer").is_empty(),
            "transfer with N images per class vs training from scratch (Tables 4-5, Fig. 9)",
        ),
        (
            ctx.input_list("filter_comparison").is_empty(),
            "conv1 filters of ZF vs Krizhevsky vs no renormalisation (Fig. 6 (a)-(c))",
        ),
        (
            ctx.input_list("table6").is_empty(),
            "PASCAL VOC 2012 per-class AP (Table 6)",
        ),
        (
            !ctx.input_list("filter_comparison").is_empty()
                && !filter_panels(ctx.input_list("filter_comparison")).contains("no_renorm"),
            "conv1 trained without filter renormalisation (Fig. 6(a))",
        ),
        (
            !ctx.input_list("filter_figures")
                .iter()
                .any(|folder| folder.join("e_zf_layer2.png").exists()),
            "layer-2 projections of ZF vs Krizhevsky side by side (Fig. 6 (d)-(e))",
        ),
        (
            true,
            "rotation invariance (Fig. 5's third row is shown, not tested: the paper's claim \
             depends on the object's symmetry)",
        ),
    ]
    .into_iter()
    .filter_map(|(missing, what)| missing.then_some(what))
    .collect()
}

/// The provenance, below the results in a collapsed block.
fn provenance(ctx: &StageContext) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## Provenance\n");
    let _ = writeln!(
        md,
        "Generated by `{}` on {}. Every number a stage computed on the CPU is the same, bit for \
         bit, on any CPU (x86-64 with AVX-512 or AVX2 + FMA, aarch64, or any other through the \
         portable path) and for any thread count: each output of the network is one fixed chain \
         of IEEE operations whatever the vector width (`crates/engine/src/cpu/path.rs`; \
         `ZFNET_CPU` forces a path). A stage run on a GPU (`device: cuda`) is not: its \
         libraries choose their algorithms per GPU.\n",
        ctx.build,
        machine()
    );
    let total: f64 = ctx.upstream_runs.iter().map(|r| r.duration_s).sum();
    let _ = writeln!(
        md,
        "<details>\n<summary>The {} runs behind this report and the artifacts it \
         read</summary>\n",
        ctx.upstream_runs.len()
    );
    let _ = writeln!(
        md,
        "In pipeline order (a stage reused from the cache shows the run that made its outputs):\n"
    );
    // Runs made by Slurm jobs name the job and node (a column only when there are any).
    let any_elsewhere = ctx.upstream_runs.iter().any(|run| run.ran_on.is_some());
    let mut header = vec!["stage", "kind", "seconds", "cache key"];
    if any_elsewhere {
        header.push("ran on");
    }
    let mut runs = MdTable::new(&header);
    for run in &ctx.upstream_runs {
        let mut row = vec![
            format!("`{}`", run.stage),
            format!("{} v{}", run.kind, run.kind_version),
            format!("{:.1}", run.duration_s),
            format!("`{}`", &run.cache_key[..run.cache_key.len().min(12)]),
        ];
        if any_elsewhere {
            row.push(
                run.ran_on
                    .clone()
                    .unwrap_or_else(|| "the `zfnet run` process".to_owned()),
            );
        }
        runs.row(row);
    }
    let mut total_row = vec![
        "**all stages**".to_owned(),
        String::new(),
        format!("**{total:.1}**"),
        String::new(),
    ];
    if any_elsewhere {
        total_row.push(String::new());
    }
    runs.row(total_row);
    let _ = writeln!(md, "{}", runs.render());
    let _ = writeln!(md, "The artifacts this report read:\n");
    let mut read = MdTable::new(&[
        "input",
        "stage",
        "kind",
        "params hash",
        "cache key",
        "content hash",
    ]);
    let short = |text: &str| text[..text.len().min(12)].to_owned();
    for (name, paths) in &ctx.inputs {
        for (i, path) in paths.iter().enumerate() {
            let content = ctx
                .provenance
                .input_hashes
                .get(name)
                .and_then(|hashes| hashes.get(i))
                .map_or_else(|| "–".to_owned(), |hash| format!("`{}`", short(hash)));
            let parquet = if path.is_dir() {
                path.parent()
                    .map(|p| p.join("top9.parquet"))
                    .filter(|p| p.exists())
            } else {
                Some(path.clone())
            };
            if let Some(provenance) = parquet
                .and_then(|p| read_header(&p).ok())
                .and_then(|h| h.provenance)
            {
                read.row(vec![
                    name.clone(),
                    format!("`{}`", provenance.stage),
                    format!("{} v{}", provenance.kind, provenance.kind_version),
                    format!("`{}`", short(&provenance.params_hash)),
                    format!("`{}`", short(&provenance.cache_key)),
                    content,
                ]);
            }
        }
    }
    let _ = writeln!(md, "{}", read.render());
    let _ = writeln!(md, "</details>");
    md
}

/// The machine, for the provenance line: CPU model, logical cores, memory (Linux; "an
/// unidentified machine" elsewhere).
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        });
    let memory_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .map(|kb| kb / 1024.0 / 1024.0)
        });
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    match (cpu, memory_gb) {
        (Some(cpu), Some(gb)) => format!("{cpu}, {cores} cores, {gb:.0} GiB"),
        (Some(cpu), None) => format!("{cpu}, {cores} cores"),
        _ => format!("an unidentified machine with {cores} cores"),
    }
}

/// The panels (`zf`, `krizhevsky`, `no_renorm`) present in conv1_filters tables.
fn filter_panels(paths: &[std::path::PathBuf]) -> String {
    paths
        .iter()
        .filter_map(|path| {
            use artifacts::table::TableRow;
            artifacts::table::rows::FilterComparisonRow::read(path).ok()
        })
        .flat_map(|rows| rows.into_iter().map(|row| row.panel))
        .collect::<Vec<_>>()
        .join(",")
}

/// Copies a figures folder's PNGs into the report as `<stage>_<name>`, in name order;
/// returns (name, copied name) pairs.
pub(crate) fn copy_figures(
    folder: &Path,
    stage: &str,
    figures: &Path,
) -> Result<Vec<(String, String)>> {
    let mut names: Vec<String> = std::fs::read_dir(folder)
        .map_err(|e| Error::io(folder, e))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".png"))
        .collect();
    names.sort();
    let mut copied = Vec::new();
    for name in names {
        let target_name = format!("{stage}_{name}");
        std::fs::copy(folder.join(&name), figures.join(&target_name))
            .map_err(|e| Error::io(folder.join(&name), e))?;
        copied.push((name, target_name));
    }
    Ok(copied)
}

/// Each path of list input `main` with the path at the same position of list input
/// `companion` (a table and its figures folder), `None` where the companion list is shorter.
fn paired<'a>(
    ctx: &'a StageContext,
    main: &str,
    companion: &str,
) -> impl Iterator<Item = (&'a std::path::PathBuf, Option<&'a std::path::PathBuf>)> {
    let companions = ctx.input_list(companion);
    ctx.input_list(main)
        .iter()
        .enumerate()
        .map(move |(i, path)| (path, companions.get(i)))
}

/// The stage that wrote an artifact, from its provenance.
pub(crate) fn stage_of(path: &Path) -> String {
    read_header(path)
        .ok()
        .and_then(|h| h.provenance)
        .map(|p| p.stage)
        .unwrap_or_else(|| "?".to_owned())
}
