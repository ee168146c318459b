//! Step 3 of `resolve`: a stage instance's inputs wired, each to a dataset path (checked to exist)
//! or to the outputs of the stage instances it names (`stage.output`, or `base.output` for every
//! instance of a swept stage).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use stage_api::InputKind;

use super::{InputRef, Instance, Problems, ResolveConfig};
use crate::pipeline::{RawInput, RawStage};
use crate::suggest::did_you_mean;

pub(super) fn resolve_inputs(
    raw_stage: &RawStage,
    instance: &Instance,
    instances: &[(Instance, &RawStage)],
    instance_names: &BTreeSet<String>,
    base_dir: &Path,
    config: &ResolveConfig,
    problems: &mut Problems,
) -> BTreeMap<String, Vec<InputRef>> {
    let name = &instance.name;
    let specs = instance.kind.inputs();
    let mut resolved = BTreeMap::new();
    for (input_name, raw_input) in &raw_stage.inputs {
        let line = raw_input.referenced.line();
        let Some(spec) = specs.iter().find(|spec| spec.name == input_name) else {
            problems.at(
                line,
                format!(
                    "stage `{name}`: kind `{}` has no input `{input_name}`{}; its inputs: {}",
                    instance.kind.name(),
                    did_you_mean(input_name, specs.iter().map(|spec| spec.name)),
                    specs.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                ),
            );
            continue;
        };
        let texts: Vec<&String> = match (&raw_input.value, spec.kind) {
            (RawInput::One(text), _) => vec![text],
            (RawInput::Many(list), InputKind::ArtifactList) => list.iter().collect(),
            (RawInput::Many(_), _) => {
                problems.at(
                    line,
                    format!("stage `{name}`, input `{input_name}`: takes one value, not a list"),
                );
                continue;
            }
        };
        let mut refs = Vec::new();
        for text in texts {
            match spec.kind {
                InputKind::Path => {
                    let path = base_dir.join(text);
                    if !(config.path_exists)(&path) {
                        problems.at(
                            line,
                            format!(
                                "stage `{name}`, input `{input_name}`: path `{}` does not \
                                 exist; install the dataset there or point \
                                 `stages.{}.inputs.{input_name}` at it",
                                path.display(),
                                raw_stage.name.value
                            ),
                        );
                    }
                    refs.push(InputRef::Path(path));
                }
                InputKind::Artifact | InputKind::ArtifactList => {
                    match artifact_refs(text, spec.kind, instances, instance_names) {
                        Ok(found) => refs.extend(found),
                        Err(message) => problems.at(
                            line,
                            format!("stage `{name}`, input `{input_name}`: {message}"),
                        ),
                    }
                }
            }
        }
        resolved.insert(input_name.clone(), refs);
    }
    for spec in &specs {
        if spec.required && !raw_stage.inputs.contains_key(spec.name) {
            problems.at(
                instance.line,
                format!(
                    "stage `{name}`: required input `{}` is missing ({})",
                    spec.name, spec.doc
                ),
            );
        }
    }
    resolved
}

/// Resolves `stage.output` (or `base.output` for every instance of a swept stage).
fn artifact_refs(
    text: &str,
    kind: InputKind,
    instances: &[(Instance, &RawStage)],
    instance_names: &BTreeSet<String>,
) -> Result<Vec<InputRef>, String> {
    let (stage, output) = text
        .rsplit_once('.')
        .ok_or_else(|| format!("`{text}` should name a stage output as `stage.output`"))?;
    let matches: Vec<&Instance> = if instance_names.contains(stage) {
        instances
            .iter()
            .map(|(instance, _)| instance)
            .filter(|instance| instance.name == stage)
            .collect()
    } else {
        instances
            .iter()
            .map(|(instance, _)| instance)
            .filter(|instance| instance.base_name == stage)
            .collect()
    };
    let Some(first) = matches.first() else {
        return Err(format!(
            "`{text}` names stage `{stage}`, which does not exist{}",
            did_you_mean(
                stage,
                instances.iter().flat_map(|(instance, _)| {
                    [instance.name.as_str(), instance.base_name.as_str()]
                })
            )
        ));
    };
    let outputs = first.kind.outputs();
    if !outputs.iter().any(|spec| spec.name == output) {
        return Err(format!(
            "`{text}`: stage `{stage}` (kind `{}`) has no output `{output}`{}; its outputs: {}",
            first.kind.name(),
            did_you_mean(output, outputs.iter().map(|spec| spec.name)),
            outputs
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if matches.len() > 1 && kind == InputKind::Artifact {
        return Err(format!(
            "`{text}`: `{stage}` is swept into {} instances; name one (`{}.{output}`)",
            matches.len(),
            matches[0].name
        ));
    }
    Ok(matches
        .into_iter()
        .map(|instance| InputRef::Artifact {
            stage: instance.name.clone(),
            output: output.to_owned(),
        })
        .collect())
}
