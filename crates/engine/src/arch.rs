//! Architectures as data (Fig. 3, Tables 2 and 3), selected by name in pipeline.yaml.
//!
//! Base networks:
//! - `zf` (Fig. 3), for 224x224 crops: conv1 96@7x7/2 (pad 1) -> 110, pool 3/2 -> 55, LRN;
//!   conv2 256@5x5/2 -> 26, pool -> 13, LRN; conv3 384, conv4 384, conv5 256 @3x3 (pad 1)
//!   -> 13; pool -> 6; fc6 4096, fc7 4096 (dropout 0.5), C-way softmax.
//! - `krizhevsky` (Krizhevsky et al. 2012 with dense connections, "our replication" of Tables
//!   2, 3): conv1 96@11x11/4 (pad 2) -> 55, pool -> 27, LRN; conv2 256@5x5/1 (pad 2) -> 27,
//!   pool -> 13, LRN; conv3-5 as zf; pool -> 6; fc6, fc7 4096.
//! - `zf_small`, the ZF structure scaled for 28x28 crops (Fashion-MNIST): the same 5 conv,
//!   3 pool, 2 LRN, fc6, fc7 and softmax, with the strides moved into the pools:
//!   conv1 48@5x5/1 (pad 2) -> 28, pool -> 14, LRN; conv2 64@5x5/1 (pad 2) -> 14, pool -> 7,
//!   LRN; conv3 96, conv4 96, conv5 64 @3x3 (pad 1) -> 7; pool -> 3; fc6 512, fc7 512.
//! - `krizhevsky_small`, Krizhevsky's first layers at zf_small's scale (Fig. 6 and Table 2
//!   comparisons on small inputs): a larger kernel with a stride, as 11x11/4 is to 7x7/2:
//!   conv1 48@9x9/2 (pad 4) -> 14, pool -> 7, LRN; conv2 64@5x5/1 (pad 2) -> 7, pool -> 3,
//!   LRN; conv3-5 as zf_small -> 3; pool -> 1; fc6 512, fc7 512. (At full scale conv2's
//!   stride 1 brings Krizhevsky's net back to zf's 13x13 at conv3-5; at 28x28 there is no
//!   stride left to give back, so conv3-5 see 3x3 maps instead of 7x7.)
//!
//! Table 3's variants are suffixes on a base name, in this order:
//! `_no_conv34` | `_no_fc7` | `_no_fc67` | `_no_conv34_fc67` (layers removed), then
//! `_conv<a>_<b>_<c>` (conv3-5 widths), then `_fc<N>` (fc6/fc7 width). For example
//! `krizhevsky_no_fc67`, `zf_fc8192`, `zf_conv512_1024_512_fc8192`, `zf_small_no_conv34`.

use serde::{Deserialize, Serialize};

/// One layer of an architecture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LayerSpec {
    Conv {
        name: String,
        filters: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
    },
    Relu,
    MaxPool {
        size: usize,
        stride: usize,
    },
    /// Contrast normalisation across feature maps.
    Lrn,
    Dropout {
        p: f64,
    },
    Linear {
        name: String,
        units: usize,
    },
}

/// A whole network: input size and layers; the last layer is the C-way classifier.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Architecture {
    pub name: String,
    /// Side of the square input crop.
    pub input_size: usize,
    pub classes: usize,
    pub layers: Vec<LayerSpec>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "unknown architecture `{name}`: {why}. Bases: zf, krizhevsky, zf_small, krizhevsky_small; suffixes (in order): _no_conv34 | _no_fc7 | _no_fc67 | _no_conv34_fc67, _conv<a>_<b>_<c>, _fc<N>"
)]
pub struct UnknownArchitecture {
    pub name: String,
    pub why: String,
}

/// Sizes that differ between the bases.
struct Base {
    input_size: usize,
    conv1: (usize, usize, usize, usize),
    conv2: (usize, usize, usize, usize),
    conv345: [usize; 3],
    fc: usize,
}

impl Architecture {
    /// Builds the named architecture with a `classes`-way output.
    pub fn from_name(name: &str, classes: usize) -> Result<Self, UnknownArchitecture> {
        let unknown = |why: &str| UnknownArchitecture {
            name: name.to_owned(),
            why: why.to_owned(),
        };
        let (mut base, mut rest) = if let Some(rest) = name.strip_prefix("zf_small") {
            (
                Base {
                    input_size: 28,
                    conv1: (48, 5, 1, 2),
                    conv2: (64, 5, 1, 2),
                    conv345: [96, 96, 64],
                    fc: 512,
                },
                rest,
            )
        } else if let Some(rest) = name.strip_prefix("zf") {
            (
                Base {
                    input_size: 224,
                    conv1: (96, 7, 2, 1),
                    conv2: (256, 5, 2, 0),
                    conv345: [384, 384, 256],
                    fc: 4096,
                },
                rest,
            )
        } else if let Some(rest) = name.strip_prefix("krizhevsky_small") {
            (
                Base {
                    input_size: 28,
                    conv1: (48, 9, 2, 4),
                    conv2: (64, 5, 1, 2),
                    conv345: [96, 96, 64],
                    fc: 512,
                },
                rest,
            )
        } else if let Some(rest) = name.strip_prefix("krizhevsky") {
            (
                Base {
                    input_size: 224,
                    conv1: (96, 11, 4, 2),
                    conv2: (256, 5, 1, 2),
                    conv345: [384, 384, 256],
                    fc: 4096,
                },
                rest,
            )
        } else {
            return Err(unknown("no known base"));
        };
        let (mut keep_conv34, mut keep_fc6, mut keep_fc7) = (true, true, true);
        for (suffix, conv34, fc6, fc7) in [
            ("_no_conv34_fc67", false, false, false),
            ("_no_conv34", false, true, true),
            ("_no_fc67", true, false, false),
            ("_no_fc7", true, true, false),
        ] {
            if let Some(after) = rest.strip_prefix(suffix) {
                (keep_conv34, keep_fc6, keep_fc7) = (conv34, fc6, fc7);
                rest = after;
                break;
            }
        }
        let mut rest = rest.to_owned();
        if let Some(after) = rest.strip_prefix("_conv").map(str::to_owned) {
            let mut parts = after.splitn(4, '_');
            let widths: Option<Vec<usize>> =
                parts.by_ref().take(3).map(|d| d.parse().ok()).collect();
            match widths {
                Some(w) if w.len() == 3 => base.conv345 = [w[0], w[1], w[2]],
                _ => {
                    return Err(unknown(
                        "`_conv` needs three widths, e.g. _conv512_1024_512",
                    ));
                }
            }
            rest = parts
                .next()
                .map_or(String::new(), |tail| format!("_{tail}"));
        }
        if let Some(after) = rest.strip_prefix("_fc") {
            base.fc = after
                .parse()
                .map_err(|_| unknown("`_fc` needs a width, e.g. _fc2048"))?;
            rest = String::new();
        }
        if !rest.is_empty() {
            return Err(unknown(&format!("cannot read `{rest}`")));
        }
        if classes < 2 {
            return Err(unknown("a classifier needs at least 2 classes"));
        }

        let conv = |name: &str, (filters, kernel, stride, pad): (usize, usize, usize, usize)| {
            LayerSpec::Conv {
                name: name.to_owned(),
                filters,
                kernel,
                stride,
                pad,
            }
        };
        let pool = || LayerSpec::MaxPool { size: 3, stride: 2 };
        let mut layers = vec![
            conv("conv1", base.conv1),
            LayerSpec::Relu,
            pool(),
            LayerSpec::Lrn,
            conv("conv2", base.conv2),
            LayerSpec::Relu,
            pool(),
            LayerSpec::Lrn,
        ];
        if keep_conv34 {
            layers.extend([
                conv("conv3", (base.conv345[0], 3, 1, 1)),
                LayerSpec::Relu,
                conv("conv4", (base.conv345[1], 3, 1, 1)),
                LayerSpec::Relu,
            ]);
        }
        layers.extend([
            conv("conv5", (base.conv345[2], 3, 1, 1)),
            LayerSpec::Relu,
            pool(),
        ]);
        for (keep, name) in [(keep_fc6, "fc6"), (keep_fc7, "fc7")] {
            if keep {
                layers.extend([
                    LayerSpec::Linear {
                        name: name.to_owned(),
                        units: base.fc,
                    },
                    LayerSpec::Relu,
                    LayerSpec::Dropout { p: 0.5 },
                ]);
            }
        }
        layers.push(LayerSpec::Linear {
            name: "fc8".to_owned(),
            units: classes,
        });
        Ok(Architecture {
            name: name.to_owned(),
            input_size: base.input_size,
            classes,
            layers,
        })
    }

    /// Every architecture of Table 3 (and Table 2's two bases), by name.
    pub fn table3_names() -> Vec<&'static str> {
        vec![
            "krizhevsky",
            "krizhevsky_no_conv34",
            "krizhevsky_no_fc7",
            "krizhevsky_no_fc67",
            "krizhevsky_no_conv34_fc67",
            "krizhevsky_fc2048",
            "krizhevsky_fc8192",
            "zf",
            "zf_fc2048",
            "zf_fc8192",
            "zf_conv512_1024_512",
            "zf_conv512_1024_512_fc8192",
        ]
    }
}
