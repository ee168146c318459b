//! The models behind the report, read from their metadata alone: each architecture's layer
//! table (kernel/stride, maps, output size, parameters) and the first-layer facts the paper's
//! §4.1 claims are about (conv1 7x7/2 and conv2 stride 2 for ZF, 11x11/4 for Krizhevsky).

use std::path::Path;

use artifacts::tensors::read_tensor_metadata;
use serde_json::Value;
use stage_api::{Error, Result};

use crate::document::MdTable;

/// An architecture as stored in a model's `zfnet.architecture` metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelArchitecture {
    pub name: String,
    pub input_size: usize,
    pub classes: usize,
    pub layers: Vec<Value>,
}

/// A conv layer's (filters, kernel, stride, pad).
pub type ConvShape = (usize, usize, usize, usize);

impl ModelArchitecture {
    pub fn read(path: &Path) -> Result<Self> {
        let metadata = read_tensor_metadata(path)?;
        let json: Value = metadata
            .get("zfnet.architecture")
            .and_then(|json| serde_json::from_str(json).ok())
            .ok_or_else(|| {
                Error::input(path, "no architecture in the metadata: not a zfnet model")
            })?;
        let field = |name: &str| json.get(name).and_then(Value::as_u64).map(|v| v as usize);
        Ok(ModelArchitecture {
            name: json
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned(),
            input_size: field("input_size").unwrap_or(0),
            classes: field("classes").unwrap_or(0),
            layers: json
                .get("layers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        })
    }

    /// The named conv layer's shape.
    pub fn conv(&self, name: &str) -> Option<ConvShape> {
        self.layers.iter().find_map(|layer| {
            let conv = layer.get("Conv")?;
            (conv.get("name")?.as_str()? == name).then(|| {
                let f = |k: &str| conv.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
                (f("filters"), f("kernel"), f("stride"), f("pad"))
            })
        })
    }

    /// Whether conv1 and conv2 are the paper's for this family: ZF 7x7/2 then stride 2,
    /// Krizhevsky 11x11/4 then stride 1. `Err` says what they are instead.
    pub fn paper_first_layers(&self, krizhevsky: bool) -> std::result::Result<(), String> {
        let (c1, c2) = (self.conv("conv1"), self.conv("conv2"));
        let ok = match (c1, c2) {
            (Some((_, k1, s1, _)), Some((_, _, s2, _))) if krizhevsky => {
                k1 == 11 && s1 == 4 && s2 == 1
            }
            (Some((_, k1, s1, _)), Some((_, _, s2, _))) => k1 == 7 && s1 == 2 && s2 == 2,
            _ => false,
        };
        if ok {
            return Ok(());
        }
        let shape = |c: Option<ConvShape>| {
            c.map_or("none".to_owned(), |(_, k, s, _)| format!("{k}x{k}/{s}"))
        };
        Err(format!(
            "`{}` has conv1 {} and conv2 {} where the paper's {} has {}",
            self.name,
            shape(c1),
            shape(c2),
            if krizhevsky {
                "Krizhevsky net"
            } else {
                "ZF net"
            },
            if krizhevsky {
                "conv1 11x11/4 and conv2 5x5/1"
            } else {
                "conv1 7x7/2 and conv2 5x5/2"
            }
        ))
    }

    /// The layer table: one row per conv, pool and fully connected layer.
    pub fn layer_table(&self) -> MdTable {
        let mut table = MdTable::new(&[
            "layer",
            "kernel / stride (pad)",
            "maps or units",
            "output",
            "parameters",
            "followed by",
        ]);
        let (mut c, mut h, mut w) = (3usize, self.input_size, self.input_size);
        let mut pools = 0;
        let mut total = 0usize;
        let mut rows: Vec<Vec<String>> = Vec::new();
        let n_linear = self
            .layers
            .iter()
            .filter(|l| l.get("Linear").is_some())
            .count();
        let mut linear_seen = 0;
        for layer in &self.layers {
            let get =
                |obj: &Value, k: &str| obj.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
            if let Some(conv) = layer.get("Conv") {
                let (f, k, s, p) = (
                    get(conv, "filters"),
                    get(conv, "kernel"),
                    get(conv, "stride"),
                    get(conv, "pad"),
                );
                let params = f * (c * k * k + 1);
                total += params;
                h = (h + 2 * p).saturating_sub(k) / s.max(1) + 1;
                w = (w + 2 * p).saturating_sub(k) / s.max(1) + 1;
                c = f;
                rows.push(vec![
                    conv.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("conv")
                        .to_owned(),
                    format!("{k}x{k} / {s} ({p})"),
                    f.to_string(),
                    format!("{h}x{w}x{c}"),
                    params.to_string(),
                    String::new(),
                ]);
            } else if let Some(pool) = layer.get("MaxPool") {
                let (size, s) = (get(pool, "size"), get(pool, "stride"));
                let out = |len: usize| {
                    if len <= size {
                        1
                    } else {
                        (len - size).div_ceil(s.max(1)) + 1
                    }
                };
                (h, w) = (out(h), out(w));
                pools += 1;
                rows.push(vec![
                    format!("pool{pools}"),
                    format!("{size}x{size} / {s} (max)"),
                    c.to_string(),
                    format!("{h}x{w}x{c}"),
                    "0".to_owned(),
                    String::new(),
                ]);
            } else if let Some(linear) = layer.get("Linear") {
                linear_seen += 1;
                let units = get(linear, "units");
                let params = units * (c * h * w + 1);
                total += params;
                (c, h, w) = (units, 1, 1);
                let name = linear
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("fc")
                    .to_owned();
                rows.push(vec![
                    if linear_seen == n_linear {
                        format!("{name} (softmax)")
                    } else {
                        name
                    },
                    "–".to_owned(),
                    units.to_string(),
                    units.to_string(),
                    params.to_string(),
                    String::new(),
                ]);
            } else if let Some(last) = rows.last_mut() {
                let what = match layer {
                    Value::String(s) if s == "Relu" => "ReLU".to_owned(),
                    Value::String(s) if s == "Lrn" => "contrast norm.".to_owned(),
                    other => other
                        .get("Dropout")
                        .and_then(|d| d.get("p"))
                        .and_then(Value::as_f64)
                        .map_or("?".to_owned(), |p| format!("dropout {p}")),
                };
                if !last[5].is_empty() {
                    last[5].push_str(", ");
                }
                last[5].push_str(&what);
            }
        }
        for row in rows {
            table.row(row);
        }
        table.row(vec![
            "**all**".to_owned(),
            String::new(),
            String::new(),
            format!("input {0}x{0}x3", self.input_size),
            total.to_string(),
            String::new(),
        ]);
        table
    }
}
