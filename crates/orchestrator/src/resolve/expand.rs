//! Step 1 of `resolve`: the bounds on what a pipeline may declare (stage-name length, matrix size,
//! stage instances), stage names checked, and each stage's params checked against its kind's
//! `ParamSpec`s and its matrix expanded into instances.

use std::collections::BTreeMap;
use std::sync::Arc;

use stage_api::{ParamValue, StageKind};

use super::{Instance, Problems};
use crate::pipeline::RawStage;
use crate::suggest::did_you_mean;

/// The longest stage name a pipeline may declare, in bytes (names become file names and
/// appear in every message; matrix instance names add their labels to it).
pub const MAX_STAGE_NAME_BYTES: usize = 64;
/// The most instances one stage's `matrix:` may expand to (the product of its value counts).
pub const MAX_MATRIX_INSTANCES: usize = 256;
/// The most stage instances a pipeline may have in all, matrices expanded.
pub const MAX_STAGE_INSTANCES: usize = 4096;

/// Why `name` cannot be a stage name, if it cannot.
pub(super) fn stage_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("a stage name must not be empty".to_owned())
    } else if name.len() > MAX_STAGE_NAME_BYTES {
        Some(format!(
            "stage name `{}...` is {} bytes long; at most {MAX_STAGE_NAME_BYTES} are allowed",
            name.chars().take(24).collect::<String>(),
            name.len()
        ))
    } else {
        name.chars()
            .find(|c| c.is_control() || c.is_whitespace() || matches!(c, '/' | '\\' | '@'))
            .map(|bad| {
                format!(
                    "stage name `{}` contains {bad:?}; use letters, digits, `_`, `-` and `.` \
                     (`@` separates a matrix instance's values)",
                    name.escape_debug()
                )
            })
    }
}

pub(super) fn param_names(kind: &dyn StageKind) -> String {
    kind.params()
        .iter()
        .map(|spec| spec.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks the stage's params and expands its matrix into instances.
pub(super) fn expand_matrix(
    raw_stage: &RawStage,
    kind: &Arc<dyn StageKind>,
    problems: &mut Problems,
) -> Vec<Instance> {
    let specs = kind.params();
    let name = &raw_stage.name.value;
    let mut params: BTreeMap<String, ParamValue> = specs
        .iter()
        .map(|spec| (spec.name.to_owned(), spec.default.clone()))
        .collect();
    let unknown = |param: &str| {
        format!(
            "stage `{name}`: kind `{}` has no param `{param}`{}; its params: {}",
            kind.name(),
            did_you_mean(param, specs.iter().map(|spec| spec.name)),
            param_names(kind.as_ref())
        )
    };
    for (param, value) in &raw_stage.params {
        let line = value.referenced.line();
        match specs.iter().find(|spec| spec.name == param) {
            None => problems.at(line, unknown(param)),
            Some(spec) => match spec.check(&value.value) {
                Ok(value) => {
                    params.insert(param.clone(), value);
                }
                Err(message) => {
                    problems.at(line, format!("stage `{name}`, param `{param}`: {message}"))
                }
            },
        }
    }
    let line = raw_stage.name.referenced.line();
    // Bound the expansion before doing it: the product of the value counts.
    let product = raw_stage.matrix.values().fold(1usize, |product, values| {
        product.saturating_mul(values.value.len())
    });
    if product > MAX_MATRIX_INSTANCES {
        let counts: Vec<String> = raw_stage
            .matrix
            .iter()
            .map(|(param, values)| format!("{} `{param}`", values.value.len()))
            .collect();
        let first_line = raw_stage
            .matrix
            .values()
            .map(|values| values.referenced.line())
            .min()
            .unwrap_or(line);
        problems.at(
            first_line,
            format!(
                "stage `{name}`: its matrix expands to {product} instances ({}); at most \
                 {MAX_MATRIX_INSTANCES} are allowed per stage",
                counts.join(" x ")
            ),
        );
        return Vec::new();
    }
    let mut combinations: Vec<(String, BTreeMap<String, ParamValue>)> =
        vec![(String::new(), params)];
    for (param, values) in &raw_stage.matrix {
        let value_line = values.referenced.line();
        let Some(spec) = specs.iter().find(|spec| spec.name == param) else {
            problems.at(value_line, unknown(param));
            continue;
        };
        if values.value.is_empty() {
            problems.at(
                value_line,
                format!("stage `{name}`: matrix `{param}` lists no values"),
            );
            continue;
        }
        let mut next = Vec::new();
        for (suffix, params) in &combinations {
            for raw_value in &values.value {
                match spec.check(raw_value) {
                    Ok(value) => {
                        let label = match &value {
                            ParamValue::Str(text) => text.clone(),
                            other => other.to_string(),
                        };
                        let separator = if suffix.is_empty() { "" } else { "," };
                        let mut params = params.clone();
                        params.insert(param.clone(), value);
                        next.push((format!("{suffix}{separator}{param}={label}"), params));
                    }
                    Err(message) => problems.at(
                        value_line,
                        format!("stage `{name}`, matrix `{param}`: {message}"),
                    ),
                }
            }
        }
        combinations = next;
    }
    combinations
        .into_iter()
        .map(|(suffix, params)| Instance {
            name: if suffix.is_empty() {
                name.clone()
            } else {
                format!("{name}@{suffix}")
            },
            base_name: name.clone(),
            kind: Arc::clone(kind),
            params,
            line,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::tests::{problems, resolve_text};
    use super::*;

    #[test]
    fn a_matrix_makes_one_instance_per_combination_and_its_bounds_hold() {
        let dag = resolve_text(
            "name: p\nstages:\n  - name: a\n    kind: source\n    inputs: { root: data }\n    matrix: { rows: [1, 2], text: [p, q] }\n",
            &[],
        )
        .unwrap();
        let names: Vec<&str> = dag.stages.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "a@rows=1,text=p",
                "a@rows=1,text=q",
                "a@rows=2,text=p",
                "a@rows=2,text=q"
            ]
        );
        assert!(dag.stages.iter().all(|s| s.base_name == "a"));

        let values: Vec<String> = (1..=20).map(|v| v.to_string()).collect();
        let big = format!(
            "name: p\nstages:\n  - name: a\n    kind: source\n    inputs: {{ root: data }}\n    matrix: {{ rows: [{0}], text: [{0}] }}\n",
            values.join(", ")
        );
        let found = problems(&big);
        assert!(
            found[0].1.contains("its matrix expands to 400 instances")
                && found[0].1.contains(&MAX_MATRIX_INSTANCES.to_string()),
            "{found:?}"
        );
        let found = problems(
            "name: p\nstages:\n  - name: a\n    kind: source\n    inputs: { root: data }\n    matrix: { rows: [] }\n",
        );
        assert!(
            found[0].1.contains("matrix `rows` lists no values"),
            "{found:?}"
        );
    }

    #[test]
    fn a_stage_name_that_cannot_be_a_file_name_is_refused() {
        let long = "x".repeat(MAX_STAGE_NAME_BYTES + 1);
        for name in [long.as_str(), "a/b", "a b"] {
            let found = problems(&format!(
                "name: p\nstages:\n  - name: \"{name}\"\n    kind: source\n    inputs: {{ root: data }}\n"
            ));
            assert_eq!(found[0].0, Some(3), "{name}: {found:?}");
        }
    }
}
