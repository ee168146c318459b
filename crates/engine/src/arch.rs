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
//! - `zf_56` and `krizhevsky_56`, the paper's first layers at a quarter of its input size, for
//!   56x56 crops of 64x64 images (the paper's 224 of 256; Fashion-MNIST upsampled): ZF's
//!   conv1 48@7x7/2 (pad 1) -> 26, pool -> 13, LRN; conv2 128@5x5/2 (pad 1) -> 6, pool -> 3,
//!   LRN; and Krizhevsky's conv1 48@11x11/4 (pad 2) -> 13, pool -> 6, LRN; conv2 128@5x5/1
//!   (pad 2) -> 6, pool -> 3, LRN. Both then have conv3 192, conv4 192, conv5 128 @3x3 (pad 1)
//!   -> 3, pool -> 1, fc6 512, fc7 512: half the paper's conv widths, an eighth of its fc
//!   width, and, as at full scale, both nets reach conv3-5 at the same size. Their conv1
//!   and conv2 keep exactly the kernels and strides §4.1 compares (Table 2, Fig. 6).
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
    "unknown architecture `{name}`: {why}. Bases: zf, krizhevsky, zf_56, krizhevsky_56, zf_small, krizhevsky_small; suffixes (in order): _no_conv34 | _no_fc7 | _no_fc67 | _no_conv34_fc67, _conv<a>_<b>_<c>, _fc<N>; or declare the layers (`layers:` in pipeline.yaml)"
)]
pub struct UnknownArchitecture {
    pub name: String,
    pub why: String,
}

/// Sizes that differ between the bases.
#[derive(Clone)]
struct Base {
    input_size: usize,
    conv1: (usize, usize, usize, usize),
    conv2: (usize, usize, usize, usize),
    conv345: [usize; 3],
    fc: usize,
}

/// The bases by name prefix, longer names before their prefixes.
const BASES: [(&str, Base); 6] = [
    (
        "zf_small",
        Base {
            input_size: 28,
            conv1: (48, 5, 1, 2),
            conv2: (64, 5, 1, 2),
            conv345: [96, 96, 64],
            fc: 512,
        },
    ),
    (
        "zf_56",
        Base {
            input_size: 56,
            conv1: (48, 7, 2, 1),
            conv2: (128, 5, 2, 1),
            conv345: [192, 192, 128],
            fc: 512,
        },
    ),
    (
        "zf",
        Base {
            input_size: 224,
            conv1: (96, 7, 2, 1),
            conv2: (256, 5, 2, 0),
            conv345: [384, 384, 256],
            fc: 4096,
        },
    ),
    (
        "krizhevsky_small",
        Base {
            input_size: 28,
            conv1: (48, 9, 2, 4),
            conv2: (64, 5, 1, 2),
            conv345: [96, 96, 64],
            fc: 512,
        },
    ),
    (
        "krizhevsky_56",
        Base {
            input_size: 56,
            conv1: (48, 11, 4, 2),
            conv2: (128, 5, 1, 2),
            conv345: [192, 192, 128],
            fc: 512,
        },
    ),
    (
        "krizhevsky",
        Base {
            input_size: 224,
            conv1: (96, 11, 4, 2),
            conv2: (256, 5, 1, 2),
            conv345: [384, 384, 256],
            fc: 4096,
        },
    ),
];

impl Architecture {
    /// Builds the named architecture with a `classes`-way output.
    pub fn from_name(name: &str, classes: usize) -> Result<Self, UnknownArchitecture> {
        let unknown = |why: &str| UnknownArchitecture {
            name: name.to_owned(),
            why: why.to_owned(),
        };
        // Longer names first: `zf_56` must not read as `zf` with a suffix `_56`.
        let Some((mut base, mut rest)) = BASES
            .iter()
            .find_map(|(prefix, base)| Some((base.clone(), name.strip_prefix(prefix)?)))
        else {
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

    /// The named built-in architecture, or, when `layers` is not empty, the architecture they
    /// declare under that name (see [`Architecture::from_layers`]).
    pub fn resolve(
        name: &str,
        layers: &[String],
        classes: usize,
    ) -> Result<Self, UnknownArchitecture> {
        if layers.is_empty() {
            Architecture::from_name(name, classes)
        } else {
            Architecture::from_layers(name, layers, classes)
        }
    }

    /// The same network with a `classes`-way classifier (its last linear layer resized).
    pub fn with_classes(mut self, classes: usize) -> Self {
        if let Some(LayerSpec::Linear { units, .. }) = self
            .layers
            .iter_mut()
            .rev()
            .find(|l| matches!(l, LayerSpec::Linear { .. }))
        {
            *units = classes;
        }
        self.classes = classes;
        self
    }

    /// An architecture declared as a list of layers, one per entry, so a pipeline can define
    /// a variant without editing Rust:
    ///
    /// - `input 56` (first: the square crop's side)
    /// - `conv <name> <filters> <k>x<k>/<stride> [pad <p>]` (the analyses take "layer n" as
    ///   the n-th conv followed by a ReLU, and fc6/fc7 by name, so keep the paper's shape to use
    ///   them all)
    /// - `relu`, `lrn` (contrast normalisation across maps), `pool <k>x<k>/<stride>` (max),
    ///   `dropout <p>`, `fc <name> <units>`
    ///
    /// The `classes`-way classifier (`fc8`) is appended. Every entry is checked, and the maps
    /// must not shrink below 1x1.
    pub fn from_layers(
        name: &str,
        entries: &[String],
        classes: usize,
    ) -> Result<Self, UnknownArchitecture> {
        let bad = |i: usize, why: String| UnknownArchitecture {
            name: name.to_owned(),
            why: format!("layer {} (`{}`): {why}", i + 1, entries[i]),
        };
        let number = |i: usize, text: &str, what: &str| -> Result<usize, UnknownArchitecture> {
            text.parse::<usize>()
                .ok()
                .filter(|&v| v > 0 && v <= 1 << 16)
                .ok_or_else(|| {
                    bad(
                        i,
                        format!("{what} must be a whole number from 1 to 65536, not `{text}`"),
                    )
                })
        };
        let window = |i: usize, text: &str| -> Result<(usize, usize), UnknownArchitecture> {
            let (k, stride) = text
                .split_once('/')
                .ok_or_else(|| bad(i, format!("`{text}` is not <k>x<k>/<stride>")))?;
            let (a, b) = k
                .split_once('x')
                .ok_or_else(|| bad(i, format!("`{k}` is not <k>x<k>")))?;
            if a != b {
                return Err(bad(i, format!("only square windows: `{k}`")));
            }
            Ok((
                number(i, a, "the window")?,
                number(i, stride, "the stride")?,
            ))
        };
        if classes < 2 {
            return Err(UnknownArchitecture {
                name: name.to_owned(),
                why: "a classifier needs at least 2 classes".to_owned(),
            });
        }
        let mut input_size = None;
        let mut layers = Vec::new();
        // Spatial side and channels as the layers are read, to refuse maps that vanish.
        let (mut side, mut flat) = (0usize, false);
        for (i, entry) in entries.iter().enumerate() {
            let words: Vec<&str> = entry.split_whitespace().collect();
            if i == 0 && words.first() != Some(&"input") {
                return Err(bad(i, "the first entry must be `input <side>`".to_owned()));
            }
            match words.as_slice() {
                ["input", n] if i == 0 => {
                    let n = number(i, n, "the input side")?;
                    input_size = Some(n);
                    side = n;
                }
                ["conv", layer, filters, k, rest @ ..] => {
                    if flat {
                        return Err(bad(i, "a conv after a fully connected layer".to_owned()));
                    }
                    let filters = number(i, filters, "filters")?;
                    let (kernel, stride) = window(i, k)?;
                    let pad = match rest {
                        [] => 0,
                        ["pad", p] => p
                            .parse::<usize>()
                            .ok()
                            .filter(|&p| p <= 1 << 16)
                            .ok_or_else(|| {
                                bad(
                                    i,
                                    format!("pad must be a whole number up to 65536, not `{p}`"),
                                )
                            })?,
                        _ => {
                            return Err(bad(
                                i,
                                "expected `conv <name> <filters> <k>x<k>/<s> [pad <p>]`".to_owned(),
                            ));
                        }
                    };
                    if side + 2 * pad < kernel {
                        return Err(bad(
                            i,
                            format!(
                                "a {kernel}x{kernel} kernel does not fit {side}x{side} maps with pad {pad}"
                            ),
                        ));
                    }
                    side = (side + 2 * pad - kernel) / stride + 1;
                    layers.push(LayerSpec::Conv {
                        name: (*layer).to_owned(),
                        filters,
                        kernel,
                        stride,
                        pad,
                    });
                }
                ["relu"] => layers.push(LayerSpec::Relu),
                ["lrn"] => layers.push(LayerSpec::Lrn),
                ["pool", k] => {
                    let (size, stride) = window(i, k)?;
                    side = if side <= size {
                        1
                    } else {
                        (side - size).div_ceil(stride) + 1
                    };
                    layers.push(LayerSpec::MaxPool { size, stride });
                }
                ["dropout", p] => {
                    let p: f64 = p
                        .parse()
                        .ok()
                        .filter(|p: &f64| (0.0..1.0).contains(p))
                        .ok_or_else(|| bad(i, format!("dropout must be in [0, 1), not `{p}`")))?;
                    layers.push(LayerSpec::Dropout { p });
                }
                ["fc", layer, units] => {
                    flat = true;
                    layers.push(LayerSpec::Linear {
                        name: (*layer).to_owned(),
                        units: number(i, units, "units")?,
                    });
                }
                _ => {
                    return Err(bad(
                        i,
                        "expected one of: input <side>, conv <name> <filters> <k>x<k>/<s> [pad <p>], relu, lrn, pool <k>x<k>/<s>, dropout <p>, fc <name> <units>".to_owned(),
                    ));
                }
            }
        }
        let Some(input_size) = input_size else {
            return Err(UnknownArchitecture {
                name: name.to_owned(),
                why: "no layers: the first entry must be `input <side>`".to_owned(),
            });
        };
        layers.push(LayerSpec::Linear {
            name: "fc8".to_owned(),
            units: classes,
        });
        Ok(Architecture {
            name: name.to_owned(),
            input_size,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(text: &str) -> Vec<String> {
        text.split(';').map(|s| s.trim().to_owned()).collect()
    }

    #[test]
    fn a_declared_layer_list_builds_the_same_network_as_the_built_in_name() {
        let declared = Architecture::from_layers(
            "zf_56",
            &entries(
                "input 56; conv conv1 48 7x7/2 pad 1; relu; pool 3x3/2; lrn; \
                 conv conv2 128 5x5/2 pad 1; relu; pool 3x3/2; lrn; \
                 conv conv3 192 3x3/1 pad 1; relu; conv conv4 192 3x3/1 pad 1; relu; \
                 conv conv5 128 3x3/1 pad 1; relu; pool 3x3/2; \
                 fc fc6 512; relu; dropout 0.5; fc fc7 512; relu; dropout 0.5",
            ),
            6,
        )
        .unwrap();
        assert_eq!(declared, Architecture::from_name("zf_56", 6).unwrap());
        assert_eq!(
            Architecture::resolve("zf_56", &[], 6).unwrap(),
            declared,
            "no layers: the built-in name"
        );
    }

    #[test]
    fn a_bad_layer_list_says_which_entry_and_why() {
        let error = |text: &str| {
            Architecture::from_layers("mine", &entries(text), 4)
                .unwrap_err()
                .to_string()
        };
        assert!(error("conv conv1 8 3x3/1").contains("the first entry must be `input <side>`"));
        assert!(
            error("input 8; conv conv1 8 9x9/1")
                .contains("layer 2 (`conv conv1 8 9x9/1`): a 9x9 kernel does not fit 8x8 maps")
        );
        assert!(error("input 8; pool 3x2/2").contains("only square windows"));
        assert!(error("input 8; dropout 1.5").contains("dropout must be in [0, 1)"));
        assert!(
            error("input 8; fc fc6 4; conv conv1 4 1x1/1")
                .contains("a conv after a fully connected layer")
        );
        assert!(error("input 8; softmax").contains("expected one of"));
    }

    #[test]
    fn the_56_pixel_nets_keep_the_papers_first_layers_and_meet_at_conv3() {
        for (name, conv1, conv2) in [
            ("zf_56", (7, 2), (5, 2)),
            ("krizhevsky_56", (11, 4), (5, 1)),
        ] {
            let a = Architecture::from_name(name, 6).unwrap();
            let convs: Vec<(usize, usize)> = a
                .layers
                .iter()
                .filter_map(|l| match l {
                    LayerSpec::Conv { kernel, stride, .. } => Some((*kernel, *stride)),
                    _ => None,
                })
                .collect();
            assert_eq!(&convs[..2], &[conv1, conv2], "{name}");
            assert_eq!(a.input_size, 56);
        }
        assert_eq!(
            Architecture::from_name("zf_56_no_fc67", 6)
                .unwrap()
                .with_classes(4)
                .classes,
            4
        );
    }
}
