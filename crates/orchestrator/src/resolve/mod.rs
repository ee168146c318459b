//! Resolution: raw pipeline + stage registry -> a typed, acyclic, topologically ordered DAG.
//!
//! A pure function of its arguments (the only outside fact it needs, whether a dataset path
//! exists, is passed in), so every rule here is unit-tested without a file system. All problems
//! are collected and returned together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stage_api::{ParamValue, Params, Resources, StageKind};

use crate::pipeline::{RawPipeline, RawStage};
use crate::suggest::did_you_mean;
use crate::{ConfigProblem, Registry};

mod expand;
mod inputs;

pub use expand::{MAX_MATRIX_INSTANCES, MAX_STAGE_INSTANCES, MAX_STAGE_NAME_BYTES};
use expand::{expand_matrix, param_names, stage_name_problem};
use inputs::resolve_inputs;

/// What one input of a resolved stage points at.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum InputRef {
    /// Output `output` of stage instance `stage`.
    Artifact { stage: String, output: String },
    /// A file or folder on disk (absolute).
    Path(PathBuf),
}

impl std::fmt::Display for InputRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputRef::Artifact { stage, output } => write!(f, "{stage}.{output}"),
            InputRef::Path(path) => write!(f, "{}", path.display()),
        }
    }
}

/// One stage instance, validated.
#[derive(Clone)]
pub struct ResolvedStage {
    /// Instance name: the YAML name, or `name@k=v,...` for a matrix instance.
    pub name: String,
    /// The YAML name (shared by all instances of a matrix).
    pub base_name: String,
    pub kind: Arc<dyn StageKind>,
    pub params: Params,
    pub inputs: BTreeMap<String, Vec<InputRef>>,
    pub resources: Resources,
    /// Line of the stage's `name:` in the pipeline file.
    pub line: u64,
}

impl ResolvedStage {
    /// Names of the stages this one reads from.
    pub fn upstream(&self) -> BTreeSet<&str> {
        self.inputs
            .values()
            .flatten()
            .filter_map(|input| match input {
                InputRef::Artifact { stage, .. } => Some(stage.as_str()),
                InputRef::Path(_) => None,
            })
            .collect()
    }
}

/// A resolved pipeline: stages in a topological order (ties broken by file order).
#[derive(Clone)]
pub struct Dag {
    pub name: String,
    pub file: PathBuf,
    /// The cache folder (absolute), from the file's `cache_dir` or the default.
    pub cache_dir: PathBuf,
    pub stages: Vec<ResolvedStage>,
    /// Where stages run, from the `executor:` section (`crate::slurm`).
    pub executor: crate::slurm::ExecutorConfig,
}

impl Dag {
    pub fn stage(&self, name: &str) -> Option<&ResolvedStage> {
        self.stages.iter().find(|stage| stage.name == name)
    }

    /// The named stages and everything upstream of them, in topological order. A base name of
    /// a swept stage selects all its instances.
    pub fn closure(&self, targets: &[String]) -> Result<Vec<&ResolvedStage>, String> {
        let mut wanted: BTreeSet<&str> = BTreeSet::new();
        let mut stack: Vec<&str> = Vec::new();
        for target in targets {
            let matches: Vec<&str> = self
                .stages
                .iter()
                .filter(|stage| &stage.name == target || &stage.base_name == target)
                .map(|stage| stage.name.as_str())
                .collect();
            if matches.is_empty() {
                return Err(format!(
                    "no stage named `{target}` in {}{}; stages are: {}",
                    self.file.display(),
                    did_you_mean(
                        target,
                        self.stages
                            .iter()
                            .flat_map(|stage| [stage.name.as_str(), stage.base_name.as_str()])
                    ),
                    self.stages
                        .iter()
                        .map(|stage| stage.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            stack.extend(matches);
        }
        while let Some(name) = stack.pop() {
            if wanted.insert(name) {
                let stage = self.stage(name).expect("names come from the dag");
                stack.extend(stage.upstream());
            }
        }
        Ok(self
            .stages
            .iter()
            .filter(|stage| wanted.contains(stage.name.as_str()))
            .collect())
    }
}

/// A `--set stage.param=value` override from the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    pub stage: String,
    pub param: String,
    pub value: serde_json::Value,
}

impl Override {
    /// Parses `stage.param=value`, where `stage` may be a matrix instance's name, which holds
    /// `=` and `.` itself (`train@lr=0.5.epochs=3`): the stage ends at the first `.` that is
    /// followed by a param name and `=`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let is_param_char = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let split = text.match_indices('.').find_map(|(dot, _)| {
            let rest = &text[dot + 1..];
            let name_len = rest.find(|c: char| !is_param_char(c))?;
            (name_len > 0 && rest[name_len..].starts_with('=') && dot > 0)
                .then(|| (&text[..dot], &rest[..name_len], &rest[name_len + 1..]))
        });
        let (stage, param, value) =
            split.ok_or_else(|| format!("--set `{text}`: expected stage.param=value"))?;
        Ok(Override {
            stage: stage.to_owned(),
            param: param.to_owned(),
            value: crate::pipeline::parse_scalar(value),
        })
    }
}

/// Everything `resolve` needs besides the raw pipeline.
pub struct ResolveConfig<'a> {
    pub registry: &'a Registry,
    /// The pipeline file (for messages) and its folder (relative paths resolve against it).
    pub file: &'a Path,
    pub overrides: &'a [Override],
    /// Cache folder given on the command line; beats the file's `cache_dir`.
    pub cache_dir_override: Option<PathBuf>,
    /// Whether a dataset path exists (the file system, in production).
    pub path_exists: &'a dyn Fn(&Path) -> bool,
}

/// Resolves a raw pipeline into a DAG, or returns every problem found.
pub fn resolve(raw: &RawPipeline, config: &ResolveConfig) -> Result<Dag, Vec<ConfigProblem>> {
    let mut problems = Problems {
        file: config.file.to_path_buf(),
        list: Vec::new(),
    };
    let base_dir = config
        .file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();

    // 1. Expand matrices into instances; check kinds and params.
    let mut instances: Vec<(Instance, &RawStage)> = Vec::new();
    let mut seen_names: BTreeMap<&str, u64> = BTreeMap::new();
    for raw_stage in &raw.stages {
        let line = raw_stage.name.referenced.line();
        if let Some(problem) = stage_name_problem(&raw_stage.name.value) {
            problems.at(line, problem);
            continue;
        }
        if let Some(first) = seen_names.insert(&raw_stage.name.value, line) {
            problems.at(
                line,
                format!(
                    "duplicate stage name `{}` (first defined at line {first}); stage names \
                     must be unique",
                    raw_stage.name.value
                ),
            );
            continue;
        }
        let Some(kind) = config.registry.get(&raw_stage.kind.value) else {
            problems.at(
                raw_stage.kind.referenced.line(),
                format!(
                    "stage `{}` has unknown kind `{}`{}; known kinds: {} (`zfnet kinds` \
                     describes them)",
                    raw_stage.name.value,
                    raw_stage.kind.value,
                    did_you_mean(&raw_stage.kind.value, config.registry.names()),
                    config.registry.names().collect::<Vec<_>>().join(", ")
                ),
            );
            continue;
        };
        for instance in expand_matrix(raw_stage, kind, &mut problems) {
            instances.push((instance, raw_stage));
        }
        if instances.len() > MAX_STAGE_INSTANCES {
            problems.at(
                line,
                format!(
                    "the pipeline has more than {MAX_STAGE_INSTANCES} stage instances by stage \
                     `{}` (matrices expanded); split it into several pipelines",
                    raw_stage.name.value
                ),
            );
            break;
        }
    }

    // 2. Apply --set overrides (to every instance of a base name, or one instance).
    for override_ in config.overrides {
        let targets: Vec<usize> = instances
            .iter()
            .enumerate()
            .filter(|(_, (instance, _))| {
                instance.name == override_.stage || instance.base_name == override_.stage
            })
            .map(|(index, _)| index)
            .collect();
        if targets.is_empty() {
            problems.nowhere(format!(
                "--set {}.{}: there is no stage `{}`{}",
                override_.stage,
                override_.param,
                override_.stage,
                did_you_mean(
                    &override_.stage,
                    instances.iter().flat_map(|(instance, _)| {
                        [instance.name.as_str(), instance.base_name.as_str()]
                    })
                )
            ));
        }
        for index in targets {
            let (instance, _) = &mut instances[index];
            let kind = Arc::clone(&instance.kind);
            match kind
                .params()
                .iter()
                .find(|spec| spec.name == override_.param)
            {
                None => problems.nowhere(format!(
                    "--set {}.{}: kind `{}` has no param `{}`{}; its params: {}",
                    override_.stage,
                    override_.param,
                    kind.name(),
                    override_.param,
                    did_you_mean(&override_.param, kind.params().iter().map(|spec| spec.name)),
                    param_names(kind.as_ref())
                )),
                Some(spec) => match spec.check(&override_.value) {
                    Ok(value) => {
                        instance.params.insert(spec.name.to_owned(), value);
                    }
                    Err(message) => problems.nowhere(format!(
                        "--set {}.{}: {message}",
                        override_.stage, override_.param
                    )),
                },
            }
        }
    }

    // 3. Stage-level validation, then inputs.
    let instance_names: BTreeSet<String> = instances
        .iter()
        .map(|(instance, _)| instance.name.clone())
        .collect();
    let mut stages: Vec<ResolvedStage> = Vec::new();
    for (instance, raw_stage) in &instances {
        let params = Params::new(instance.params.clone());
        for message in instance.kind.validate(&params) {
            problems.at(
                instance.line,
                format!("stage `{}`: {message}", instance.name),
            );
        }
        let inputs = resolve_inputs(
            raw_stage,
            instance,
            &instances,
            &instance_names,
            &base_dir,
            config,
            &mut problems,
        );
        stages.push(ResolvedStage {
            name: instance.name.clone(),
            base_name: instance.base_name.clone(),
            resources: instance.kind.resources(&params),
            kind: Arc::clone(&instance.kind),
            params,
            inputs,
            line: instance.line,
        });
    }

    // 4. Cycles and order.
    let order = match topological_order(&stages) {
        Ok(order) => order,
        Err(cycle) => {
            let line = stages
                .iter()
                .find(|stage| stage.name == cycle[0])
                .map(|stage| stage.line);
            problems.list.push(ConfigProblem {
                file: config.file.to_path_buf(),
                line,
                message: format!(
                    "the stages form a cycle: {}; one of these inputs must go",
                    cycle.join(" -> ")
                ),
            });
            Vec::new()
        }
    };

    if !problems.list.is_empty() {
        problems.list.sort_by_key(|problem| problem.line);
        return Err(problems.list);
    }
    let mut slots: Vec<Option<ResolvedStage>> = stages.into_iter().map(Some).collect();
    let stages = order
        .into_iter()
        .map(|index| slots[index].take().expect("each index once"))
        .collect();
    let cache_dir = match (&config.cache_dir_override, &raw.cache_dir) {
        (Some(dir), _) => dir.clone(),
        (None, Some(dir)) => base_dir.join(&dir.value),
        (None, None) => base_dir.join(".zfnet/cache"),
    };
    let stages: Vec<ResolvedStage> = stages;
    let executor = crate::slurm::resolve_config(
        raw.executor.as_ref(),
        &stages,
        raw.executor_file.as_deref().unwrap_or(config.file),
    )?;
    Ok(Dag {
        name: raw.name.value.clone(),
        file: config.file.to_path_buf(),
        cache_dir,
        stages,
        executor,
    })
}

struct Problems {
    file: PathBuf,
    list: Vec<ConfigProblem>,
}

impl Problems {
    fn at(&mut self, line: u64, message: String) {
        self.list.push(ConfigProblem {
            file: self.file.clone(),
            line: Some(line),
            message,
        });
    }

    fn nowhere(&mut self, message: String) {
        self.list.push(ConfigProblem {
            file: self.file.clone(),
            line: None,
            message,
        });
    }
}

/// A stage instance before its inputs are resolved.
struct Instance {
    name: String,
    base_name: String,
    kind: Arc<dyn StageKind>,
    params: BTreeMap<String, ParamValue>,
    line: u64,
}

/// Kahn's algorithm, taking the earliest-declared ready stage first (a min-heap of indices, so
/// O((stages + edges) log stages)); on a cycle, returns one cycle as a list of names ending
/// where it started.
fn topological_order(stages: &[ResolvedStage]) -> Result<Vec<usize>, Vec<String>> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    let index: BTreeMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, stage)| (stage.name.as_str(), i))
        .collect();
    let upstream: Vec<Vec<usize>> = stages
        .iter()
        .map(|stage| {
            stage
                .upstream()
                .into_iter()
                .filter_map(|name| index.get(name).copied())
                .collect()
        })
        .collect();
    let mut downstream: Vec<Vec<usize>> = vec![Vec::new(); stages.len()];
    for (i, ups) in upstream.iter().enumerate() {
        for &u in ups {
            downstream[u].push(i);
        }
    }
    let mut remaining: Vec<usize> = upstream.iter().map(Vec::len).collect();
    let mut done = vec![false; stages.len()];
    let mut ready: BinaryHeap<Reverse<usize>> = (0..stages.len())
        .filter(|&i| remaining[i] == 0)
        .map(Reverse)
        .collect();
    let mut order = Vec::with_capacity(stages.len());
    while let Some(Reverse(next)) = ready.pop() {
        done[next] = true;
        order.push(next);
        for &d in &downstream[next] {
            remaining[d] -= 1;
            if remaining[d] == 0 {
                ready.push(Reverse(d));
            }
        }
    }
    if order.len() == stages.len() {
        return Ok(order);
    }
    // Every stage left waits on another: walk upstream links until one repeats.
    let start = (0..stages.len()).find(|&i| !done[i]).expect("some remain");
    let mut path = vec![start];
    loop {
        let current = *path.last().expect("non-empty");
        let next = *upstream[current]
            .iter()
            .find(|&&u| !done[u])
            .expect("a blocked stage has an unfinished upstream");
        if let Some(position) = path.iter().position(|&p| p == next) {
            let mut cycle: Vec<String> = path[position..]
                .iter()
                .rev()
                .map(|&i| stages[i].name.clone())
                .collect();
            cycle.push(cycle[0].clone());
            return Err(cycle);
        }
        path.push(next);
    }
}

#[cfg(test)]
mod tests {
    //! Each rule of `resolve` on a pipeline written here, with two small kinds made for the
    //! tests and no file system (paths exist when the test says so).

    use stage_api::{InputSpec, OutputSpec, ParamSpec, RunSummary, StageContext};

    use super::*;

    /// `source` (a dataset path in, a table out) and `step` (a table in, a table out).
    struct Fake {
        name: &'static str,
        reads_path: bool,
    }

    impl StageKind for Fake {
        fn name(&self) -> &'static str {
            self.name
        }
        fn version(&self) -> u32 {
            1
        }
        fn summary(&self) -> &'static str {
            "a kind for resolve's tests"
        }
        fn peak_memory(&self) -> &'static str {
            "nothing"
        }
        fn params(&self) -> Vec<ParamSpec> {
            vec![
                ParamSpec::int("rows", 3, 1, 100, "rows"),
                ParamSpec::string("text", "hi", "text"),
            ]
        }
        fn inputs(&self) -> Vec<InputSpec> {
            if self.reads_path {
                vec![InputSpec::path("root", "a folder")]
            } else {
                vec![InputSpec::artifact("table", "a table")]
            }
        }
        fn outputs(&self) -> Vec<OutputSpec> {
            vec![OutputSpec::new("table", "table.parquet", "rows")]
        }
        fn run(&self, _: &StageContext) -> stage_api::Result<RunSummary> {
            unreachable!("resolve never runs a stage")
        }
    }

    fn registry() -> Registry {
        let mut registry = Registry::new();
        registry.register(Arc::new(Fake {
            name: "source",
            reads_path: true,
        }));
        registry.register(Arc::new(Fake {
            name: "step",
            reads_path: false,
        }));
        registry
    }

    /// Resolves `yaml` as `/project/pipeline.yaml`, where only `/project/data` exists.
    pub(super) fn resolve_text(yaml: &str, overrides: &[&str]) -> Result<Dag, Vec<ConfigProblem>> {
        let file = Path::new("/project/pipeline.yaml");
        let raw = crate::pipeline::parse(yaml, file).map_err(|problem| vec![problem])?;
        let overrides: Vec<Override> = overrides
            .iter()
            .map(|text| Override::parse(text).unwrap())
            .collect();
        let registry = registry();
        resolve(
            &raw,
            &ResolveConfig {
                registry: &registry,
                file,
                overrides: &overrides,
                cache_dir_override: None,
                path_exists: &|path: &Path| path == Path::new("/project/data"),
            },
        )
    }

    pub(super) fn problems(yaml: &str) -> Vec<(Option<u64>, String)> {
        match resolve_text(yaml, &[]) {
            Ok(_) => panic!("resolved a pipeline with mistakes"),
            Err(list) => list.into_iter().map(|p| (p.line, p.message)).collect(),
        }
    }

    #[test]
    fn stages_come_out_in_dependency_order_with_their_inputs_resolved() {
        let dag = resolve_text(
            "name: p\nstages:\n  - name: b\n    kind: step\n    inputs: { table: a.table }\n  - name: a\n    kind: source\n    inputs: { root: data }\n",
            &[],
        )
        .unwrap();
        let names: Vec<&str> = dag.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(
            dag.stages[1].inputs["table"],
            vec![InputRef::Artifact {
                stage: "a".to_owned(),
                output: "table".to_owned()
            }]
        );
        assert_eq!(
            dag.stages[0].inputs["root"],
            vec![InputRef::Path(PathBuf::from("/project/data"))]
        );
        assert_eq!(dag.cache_dir, PathBuf::from("/project/.zfnet/cache"));
        assert_eq!(dag.stages[0].params.int("rows"), 3, "defaults filled in");
    }

    #[test]
    fn every_mistake_is_reported_at_once_each_at_its_line() {
        let found = problems(
            "name: p\nstages:\n  - name: a\n    kind: sorce\n  - name: b\n    kind: step\n    params: { rows: 1000, colour: red }\n    inputs: { table: a.tabel }\n  - name: b\n    kind: step\n    inputs: { table: nowhere.table }\n  - name: c\n    kind: source\n    inputs: { root: missing }\n  - name: d\n    kind: step\n",
        );
        let at = |line: u64, text: &str| {
            assert!(
                found
                    .iter()
                    .any(|(l, message)| *l == Some(line) && message.contains(text)),
                "no problem at line {line} saying `{text}` in {found:#?}"
            )
        };
        // Each at the line of what is wrong: the kind, the param, the input, the name.
        at(4, "unknown kind `sorce` (did you mean `source`?)");
        at(7, "param `rows`: 1000 is outside the allowed range 1..=100");
        at(7, "no param `colour`");
        at(8, "`a.tabel` names stage `a`, which does not exist");
        at(9, "duplicate stage name `b` (first defined at line 5)");
        at(14, "path `/project/missing` does not exist");
        at(15, "required input `table` is missing");
        assert_eq!(found.len(), 7, "{found:#?}");
        let lines: Vec<Option<u64>> = found.iter().map(|(line, _)| *line).collect();
        let mut sorted = lines.clone();
        sorted.sort();
        assert_eq!(lines, sorted, "in line order");
    }

    #[test]
    fn a_cycle_is_named_stage_by_stage() {
        let found = problems(
            "name: p\nstages:\n  - name: a\n    kind: step\n    inputs: { table: b.table }\n  - name: b\n    kind: step\n    inputs: { table: a.table }\n",
        );
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].1.starts_with("the stages form a cycle: "),
            "{found:?}"
        );
        assert!(
            found[0].1.contains("a -> b") || found[0].1.contains("b -> a"),
            "{found:?}"
        );
    }

    #[test]
    fn set_overrides_reach_every_instance_or_one_and_mistakes_are_named() {
        let yaml = "name: p\nstages:\n  - name: a\n    kind: source\n    inputs: { root: data }\n    matrix: { text: [p, q] }\n";
        let dag = resolve_text(yaml, &["a.rows=7"]).unwrap();
        assert!(dag.stages.iter().all(|s| s.params.int("rows") == 7));
        let dag = resolve_text(yaml, &["a@text=q.rows=9"]).unwrap();
        let rows: Vec<i64> = dag.stages.iter().map(|s| s.params.int("rows")).collect();
        assert_eq!(rows, [3, 9]);
        let Err(found) = resolve_text(yaml, &["b.rows=1", "a.row=1", "a.rows=0"]) else {
            panic!("resolved with wrong overrides");
        };
        let messages: Vec<&str> = found.iter().map(|p| p.message.as_str()).collect();
        assert!(
            messages
                .iter()
                .any(|m| m.contains("--set b.rows: there is no stage `b`")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m
                .contains("--set a.row: kind `source` has no param `row` (did you mean `rows`?)")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.starts_with("--set a.rows: ")),
            "{messages:?}"
        );
        assert!(
            found.iter().all(|p| p.line.is_none()),
            "a --set has no line"
        );
    }

    #[test]
    fn a_set_names_a_stage_or_a_matrix_instance_whose_name_holds_dots_and_equals() {
        let parse = |text: &str| {
            let o = Override::parse(text).unwrap();
            (o.stage, o.param, o.value)
        };
        assert_eq!(
            parse("train.epochs=3"),
            ("train".into(), "epochs".into(), serde_json::json!(3))
        );
        assert_eq!(
            parse("train@lr=0.5.epochs=3"),
            ("train@lr=0.5".into(), "epochs".into(), serde_json::json!(3))
        );
        assert_eq!(
            parse("a.text=x.y=z"),
            ("a".into(), "text".into(), serde_json::json!("x.y=z"))
        );
        for wrong in ["train", "train=3", ".epochs=3", "train.=3"] {
            assert!(Override::parse(wrong).is_err(), "{wrong}");
        }
    }
}
