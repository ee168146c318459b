//! Typed stage params: declarations with defaults, validation of YAML values, canonical form.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// The type of a param, as declared by its stage kind.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamType {
    Bool,
    /// An integer within `[min, max]`.
    Int {
        min: i64,
        max: i64,
    },
    /// A float within `[min, max]`; integers in YAML are accepted.
    Float {
        min: f64,
        max: f64,
    },
    /// A string; when `choices` is not empty it must be one of them.
    Str {
        choices: Vec<&'static str>,
    },
    /// A list of distinct integers, each within `[min, max]`, at most [`MAX_LIST_LEN`] long.
    IntList {
        min: i64,
        max: i64,
    },
    /// A list of distinct numbers, each within `[min, max]`, at most [`MAX_LIST_LEN`] long.
    FloatList {
        min: f64,
        max: f64,
    },
    /// A list of distinct strings, at most [`MAX_LIST_LEN`] long.
    StrList,
}

/// The longest list any list param takes: every size read from a config is bounded before it
/// is used.
pub const MAX_LIST_LEN: usize = 1024;
/// The longest string any string param (or list item) takes, in bytes.
pub const MAX_STRING_BYTES: usize = 4096;

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamType::Bool => f.write_str("a boolean"),
            ParamType::Int { .. } => f.write_str("an integer"),
            ParamType::Float { .. } => f.write_str("a number"),
            ParamType::Str { choices } if choices.is_empty() => f.write_str("a string"),
            ParamType::Str { choices } => write!(f, "one of {}", choices.join(", ")),
            ParamType::IntList { min, max } => {
                write!(f, "a list of distinct integers in {min}..={max}")
            }
            ParamType::FloatList { min, max } => {
                write!(f, "a list of distinct numbers in {min}..={max}")
            }
            ParamType::StrList => f.write_str("a list of strings"),
        }
    }
}

/// A validated param value. `Null` is the value of an optional param left unset.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ParamValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<ParamValue>),
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&serde_json::to_string(self).expect("param values serialise"))
    }
}

/// One declared param: name, type, default and what it means.
#[derive(Clone, Debug)]
pub struct ParamSpec {
    pub name: &'static str,
    pub ty: ParamType,
    pub default: ParamValue,
    pub doc: &'static str,
}

impl ParamSpec {
    pub fn bool(name: &'static str, default: bool, doc: &'static str) -> Self {
        Self::new(name, ParamType::Bool, ParamValue::Bool(default), doc)
    }

    /// An integer param with a range.
    pub fn int(name: &'static str, default: i64, min: i64, max: i64, doc: &'static str) -> Self {
        Self::new(
            name,
            ParamType::Int { min, max },
            ParamValue::Int(default),
            doc,
        )
    }

    /// An integer param that may be left unset (`null`).
    pub fn optional_int(name: &'static str, min: i64, max: i64, doc: &'static str) -> Self {
        Self::new(name, ParamType::Int { min, max }, ParamValue::Null, doc)
    }

    pub fn float(name: &'static str, default: f64, min: f64, max: f64, doc: &'static str) -> Self {
        Self::new(
            name,
            ParamType::Float { min, max },
            ParamValue::Float(default),
            doc,
        )
    }

    pub fn string(name: &'static str, default: &str, doc: &'static str) -> Self {
        Self::new(
            name,
            ParamType::Str { choices: vec![] },
            ParamValue::Str(default.to_owned()),
            doc,
        )
    }

    pub fn choice(
        name: &'static str,
        default: &'static str,
        choices: &[&'static str],
        doc: &'static str,
    ) -> Self {
        debug_assert!(choices.contains(&default));
        Self::new(
            name,
            ParamType::Str {
                choices: choices.to_vec(),
            },
            ParamValue::Str(default.to_owned()),
            doc,
        )
    }

    /// A list of distinct integers, each in `min..=max`.
    pub fn int_list(
        name: &'static str,
        default: &[i64],
        min: i64,
        max: i64,
        doc: &'static str,
    ) -> Self {
        let default = ParamValue::List(default.iter().map(|&v| ParamValue::Int(v)).collect());
        Self::new(name, ParamType::IntList { min, max }, default, doc)
    }

    /// A list of distinct numbers, each in `min..=max`.
    pub fn float_list(
        name: &'static str,
        default: &[f64],
        min: f64,
        max: f64,
        doc: &'static str,
    ) -> Self {
        let default = ParamValue::List(default.iter().map(|&v| ParamValue::Float(v)).collect());
        Self::new(name, ParamType::FloatList { min, max }, default, doc)
    }

    pub fn str_list(name: &'static str, default: &[&str], doc: &'static str) -> Self {
        let default = ParamValue::List(
            default
                .iter()
                .map(|v| ParamValue::Str((*v).to_owned()))
                .collect(),
        );
        Self::new(name, ParamType::StrList, default, doc)
    }

    fn new(name: &'static str, ty: ParamType, default: ParamValue, doc: &'static str) -> Self {
        ParamSpec {
            name,
            ty,
            default,
            doc,
        }
    }

    /// Converts a value from YAML (or `--set`) into this param's type, or says what is wrong.
    pub fn check(&self, value: &serde_json::Value) -> Result<ParamValue, String> {
        use serde_json::Value;
        let mismatch = || format!("expected {}, found {}", self.ty, value);
        if value.is_null() {
            return if self.default == ParamValue::Null {
                Ok(ParamValue::Null)
            } else {
                Err(format!("expected {}, found null", self.ty))
            };
        }
        match &self.ty {
            ParamType::Bool => value.as_bool().map(ParamValue::Bool).ok_or_else(mismatch),
            ParamType::Int { min, max } => {
                let v = value.as_i64().ok_or_else(mismatch)?;
                if v < *min || v > *max {
                    return Err(format!("{v} is outside the allowed range {min}..={max}"));
                }
                Ok(ParamValue::Int(v))
            }
            ParamType::Float { min, max } => {
                let v = value.as_f64().ok_or_else(mismatch)?;
                if !v.is_finite() || v < *min || v > *max {
                    return Err(format!("{v} is outside the allowed range {min}..={max}"));
                }
                Ok(ParamValue::Float(v))
            }
            ParamType::Str { choices } => {
                let v = value.as_str().ok_or_else(mismatch)?;
                if !choices.is_empty() && !choices.contains(&v) {
                    return Err(format!("`{v}` is not {}", self.ty));
                }
                check_string_length(v)?;
                Ok(ParamValue::Str(v.to_owned()))
            }
            ParamType::IntList { .. } | ParamType::FloatList { .. } | ParamType::StrList => {
                let items = match value {
                    Value::Array(items) => items,
                    _ => return Err(mismatch()),
                };
                if items.len() > MAX_LIST_LEN {
                    return Err(format!(
                        "a list of {} values; at most {MAX_LIST_LEN} are allowed",
                        items.len()
                    ));
                }
                let mut converted = Vec::with_capacity(items.len());
                for item in items {
                    let value = match &self.ty {
                        ParamType::IntList { min, max } => {
                            let v = item.as_i64().ok_or_else(mismatch)?;
                            if v < *min || v > *max {
                                return Err(format!(
                                    "list value {v} is outside the allowed range {min}..={max}"
                                ));
                            }
                            ParamValue::Int(v)
                        }
                        ParamType::FloatList { min, max } => {
                            let v = item.as_f64().ok_or_else(mismatch)?;
                            if !v.is_finite() || v < *min || v > *max {
                                return Err(format!(
                                    "list value {v} is outside the allowed range {min}..={max}"
                                ));
                            }
                            ParamValue::Float(v)
                        }
                        _ => {
                            let v = item.as_str().ok_or_else(mismatch)?;
                            check_string_length(v)?;
                            ParamValue::Str(v.to_owned())
                        }
                    };
                    if converted.contains(&value) {
                        return Err(format!("{value} is listed twice; list each value once"));
                    }
                    converted.push(value);
                }
                Ok(ParamValue::List(converted))
            }
        }
    }
}

fn check_string_length(text: &str) -> Result<(), String> {
    if text.len() > MAX_STRING_BYTES {
        return Err(format!(
            "a string of {} bytes; at most {MAX_STRING_BYTES} are allowed",
            text.len()
        ));
    }
    Ok(())
}

/// The validated params of one stage instance, every declared param present (defaults filled).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Params(BTreeMap<String, ParamValue>);

impl Params {
    pub fn new(values: BTreeMap<String, ParamValue>) -> Self {
        Params(values)
    }

    /// Params with every default of `specs`, then `overrides` (unchecked: for tests and tools
    /// that build params in code).
    pub fn defaults_with(specs: &[ParamSpec], overrides: &[(&str, ParamValue)]) -> Self {
        let mut values: BTreeMap<String, ParamValue> = specs
            .iter()
            .map(|spec| (spec.name.to_owned(), spec.default.clone()))
            .collect();
        for (name, value) in overrides {
            values.insert((*name).to_owned(), value.clone());
        }
        Params(values)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &ParamValue)> {
        self.0.iter()
    }

    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.0.get(name)
    }

    /// The canonical JSON form hashed into cache keys: sorted keys, no whitespace.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(&self.0).expect("params serialise")
    }

    fn value(&self, name: &str) -> &ParamValue {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("param `{name}` is not declared by this stage kind"))
    }

    pub fn bool(&self, name: &str) -> bool {
        match self.value(name) {
            ParamValue::Bool(v) => *v,
            other => panic!("param `{name}` is {other}, not a boolean"),
        }
    }

    pub fn int(&self, name: &str) -> i64 {
        match self.value(name) {
            ParamValue::Int(v) => *v,
            other => panic!("param `{name}` is {other}, not an integer"),
        }
    }

    /// A non-negative integer param as `usize` (declare its range with `min >= 0`).
    pub fn usize(&self, name: &str) -> usize {
        usize::try_from(self.int(name)).expect("declared range is non-negative")
    }

    pub fn optional_int(&self, name: &str) -> Option<i64> {
        match self.value(name) {
            ParamValue::Null => None,
            ParamValue::Int(v) => Some(*v),
            other => panic!("param `{name}` is {other}, not an integer"),
        }
    }

    pub fn float(&self, name: &str) -> f64 {
        match self.value(name) {
            ParamValue::Float(v) => *v,
            ParamValue::Int(v) => *v as f64,
            other => panic!("param `{name}` is {other}, not a number"),
        }
    }

    pub fn str(&self, name: &str) -> &str {
        match self.value(name) {
            ParamValue::Str(v) => v,
            other => panic!("param `{name}` is {other}, not a string"),
        }
    }

    pub fn int_list(&self, name: &str) -> Vec<i64> {
        self.list(name)
            .iter()
            .map(|v| match v {
                ParamValue::Int(v) => *v,
                other => panic!("param `{name}` holds {other}, not an integer"),
            })
            .collect()
    }

    pub fn float_list(&self, name: &str) -> Vec<f64> {
        self.list(name)
            .iter()
            .map(|v| match v {
                ParamValue::Float(v) => *v,
                ParamValue::Int(v) => *v as f64,
                other => panic!("param `{name}` holds {other}, not a number"),
            })
            .collect()
    }

    pub fn str_list(&self, name: &str) -> Vec<String> {
        self.list(name)
            .iter()
            .map(|v| match v {
                ParamValue::Str(v) => v.clone(),
                other => panic!("param `{name}` holds {other}, not a string"),
            })
            .collect()
    }

    fn list(&self, name: &str) -> &[ParamValue] {
        match self.value(name) {
            ParamValue::List(items) => items,
            other => panic!("param `{name}` is {other}, not a list"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ints_are_accepted_where_floats_are_declared_and_canonicalised() {
        let spec = ParamSpec::float("lr", 0.01, 0.0, 10.0, "learning rate");
        assert_eq!(spec.check(&json!(1)).unwrap(), ParamValue::Float(1.0));
        let a = Params::new([("lr".to_owned(), spec.check(&json!(1)).unwrap())].into());
        let b = Params::new([("lr".to_owned(), spec.check(&json!(1.0)).unwrap())].into());
        assert_eq!(a.canonical_json(), b.canonical_json());
    }

    #[test]
    fn mistyped_and_out_of_range_values_say_what_was_expected() {
        let spec = ParamSpec::int("batch_size", 128, 1, 4096, "");
        assert_eq!(
            spec.check(&json!("big")).unwrap_err(),
            "expected an integer, found \"big\""
        );
        assert!(spec.check(&json!(0)).unwrap_err().contains("outside"));
        let device = ParamSpec::choice("device", "cpu", &["cpu", "cuda"], "");
        assert_eq!(
            device.check(&json!("tpu")).unwrap_err(),
            "`tpu` is not one of cpu, cuda"
        );
    }
}
