//! Renders a resolved DAG as indented text, Mermaid or Graphviz dot.

use std::fmt::Write;

use crate::{Dag, InputRef};

/// Output formats of `zfnet dag`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DagFormat {
    Text,
    Mermaid,
    Dot,
}

pub fn render(dag: &Dag, format: DagFormat) -> String {
    match format {
        DagFormat::Text => text(dag),
        DagFormat::Mermaid => mermaid(dag),
        DagFormat::Dot => dot(dag),
    }
}

/// One stage a block, in run order: kind and version, params that differ from the kind's
/// defaults, and where each input comes from.
fn text(dag: &Dag) -> String {
    let mut out = format!("pipeline `{}`: {} stages\n", dag.name, dag.stages.len());
    for stage in &dag.stages {
        let gpu = if stage.resources.gpu { ", gpu" } else { "" };
        let _ = writeln!(
            out,
            "{} [{} v{}{gpu}]",
            stage.name,
            stage.kind.name(),
            stage.kind.version()
        );
        let specs = stage.kind.params();
        for (name, value) in stage.params.iter() {
            let is_default = specs
                .iter()
                .any(|spec| spec.name == name && spec.default == *value);
            if !is_default {
                let _ = writeln!(out, "  {name} = {value}");
            }
        }
        for (name, refs) in &stage.inputs {
            let sources: Vec<String> = refs.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "  {name} <- {}", sources.join(", "));
        }
    }
    out
}

fn node_id(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn edges(dag: &Dag) -> Vec<(String, String, String)> {
    let mut edges = Vec::new();
    for stage in &dag.stages {
        for (input, refs) in &stage.inputs {
            for input_ref in refs {
                if let InputRef::Artifact {
                    stage: from,
                    output,
                } = input_ref
                {
                    edges.push((
                        from.clone(),
                        stage.name.clone(),
                        format!("{output}→{input}"),
                    ));
                }
            }
        }
    }
    edges
}

fn mermaid(dag: &Dag) -> String {
    let mut out = String::from("flowchart TD\n");
    for stage in &dag.stages {
        let _ = writeln!(
            out,
            "  {}[\"{}<br/><small>{}</small>\"]",
            node_id(&stage.name),
            stage.name,
            stage.kind.name()
        );
    }
    for (from, to, label) in edges(dag) {
        let _ = writeln!(out, "  {} -->|{label}| {}", node_id(&from), node_id(&to));
    }
    out
}

fn dot(dag: &Dag) -> String {
    let mut out = format!("digraph \"{}\" {{\n  rankdir=TB;\n", dag.name);
    for stage in &dag.stages {
        let _ = writeln!(
            out,
            "  \"{}\" [shape=box, label=\"{}\\n({})\"];",
            stage.name,
            stage.name,
            stage.kind.name()
        );
    }
    for (from, to, label) in edges(dag) {
        let _ = writeln!(out, "  \"{from}\" -> \"{to}\" [label=\"{label}\"];");
    }
    out.push_str("}\n");
    out
}
