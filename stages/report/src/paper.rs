//! The paper's numbers and settings as data, from `PAPER.md`, each number with its
//! legibility: values PAPER.md marks † were not legible in the copy we work from (they come from
//! the published version) and print as `41.8†` with the footnote [`DAGGER_NOTE`]. No verdict
//! reads a paper value: claims compare this run's own conditions.

use std::fmt;

/// A number quoted from the paper.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PaperValue {
    pub value: f64,
    /// False for values PAPER.md marks † (not legible in the paper's text).
    pub legible: bool,
}

/// A legible value.
pub const fn v(value: f64) -> PaperValue {
    PaperValue {
        value,
        legible: true,
    }
}

/// A value PAPER.md marks †.
pub const fn d(value: f64) -> PaperValue {
    PaperValue {
        value,
        legible: false,
    }
}

impl PaperValue {
    pub fn mark(&self) -> &'static str {
        if self.legible { "" } else { "†" }
    }

    /// `a − b`, illegible if either is.
    pub fn minus(&self, other: &PaperValue) -> PaperValue {
        PaperValue {
            value: self.value - other.value,
            legible: self.legible && other.legible,
        }
    }
}

impl fmt::Display for PaperValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match f.precision() {
            Some(p) => write!(f, "{:.*}{}", p, self.value, self.mark()),
            None => write!(f, "{:.1}{}", self.value, self.mark()),
        }
    }
}

pub const DAGGER_NOTE: &str = "† not legible in the paper's text we work from; the value comes \
    from the published version and is to be confirmed (`PAPER.md`). No verdict depends on it.";

/// Table 3's rows (train top-1, val top-1, val top-5 error, %).
pub struct Table3Row {
    pub label: &'static str,
    pub errors: [PaperValue; 3],
}

pub const KRIZHEVSKY: Table3Row = Table3Row {
    label: "our replication of Krizhevsky, 1 convnet",
    errors: [v(35.1), v(40.5), v(18.1)],
};
pub const ZF: Table3Row = Table3Row {
    label: "our model (Fig. 3)",
    errors: [v(33.1), v(38.4), v(16.5)],
};
pub const NO_CONV34: Table3Row = Table3Row {
    label: "removed layers 3,4",
    errors: [d(41.8), d(45.4), d(22.1)],
};
pub const NO_FC7: Table3Row = Table3Row {
    label: "removed layer 7",
    errors: [v(27.4), v(40.0), d(18.4)],
};
pub const NO_FC67: Table3Row = Table3Row {
    label: "removed layers 6,7",
    errors: [v(27.4), v(44.8), v(22.4)],
};
pub const NO_CONV34_FC67: Table3Row = Table3Row {
    label: "removed layers 3,4,6,7",
    errors: [d(71.1), d(71.3), d(50.1)],
};
pub const KRIZHEVSKY_FC2048: Table3Row = Table3Row {
    label: "adjust layers 6,7: 2048 units",
    errors: [v(40.3), d(41.7), v(18.8)],
};
pub const KRIZHEVSKY_FC8192: Table3Row = Table3Row {
    label: "adjust layers 6,7: 8192 units",
    errors: [v(26.8), v(40.0), v(18.1)],
};
pub const ZF_FC2048: Table3Row = Table3Row {
    label: "adjust layers 6,7: 2048 units",
    errors: [v(38.2), d(40.2), v(17.6)],
};
pub const ZF_FC8192: Table3Row = Table3Row {
    label: "adjust layers 6,7: 8192 units",
    errors: [v(22.0), d(38.8), d(17.0)],
};
pub const ZF_CONV_WIDE: Table3Row = Table3Row {
    label: "adjust conv3,4,5: 512,1024,512 maps",
    errors: [v(18.8), v(37.5), v(16.0)],
};
pub const ZF_CONV_WIDE_FC8192: Table3Row = Table3Row {
    label: "6,7: 8192 units and conv3,4,5: 512,1024,512",
    errors: [v(10.0), d(38.3), v(16.9)],
};

/// One row of Table 7: a classifier on one layer's features, mean ± std over folds (%).
pub struct Table7Row {
    pub classifier: &'static str,
    pub layer: i64,
    pub caltech101: (f64, f64),
    pub caltech256: (f64, f64),
}

const fn t7(classifier: &'static str, layer: i64, c101: (f64, f64), c256: (f64, f64)) -> Table7Row {
    Table7Row {
        classifier,
        layer,
        caltech101: c101,
        caltech256: c256,
    }
}

/// Table 7 (all legible).
pub const TABLE7: [Table7Row; 8] = [
    t7("svm", 1, (44.8, 0.7), (24.6, 0.4)),
    t7("svm", 2, (66.2, 0.5), (39.6, 0.3)),
    t7("svm", 3, (72.3, 0.4), (46.0, 0.3)),
    t7("svm", 4, (76.6, 0.4), (51.3, 0.1)),
    t7("svm", 5, (86.2, 0.8), (65.6, 0.3)),
    t7("svm", 7, (85.5, 0.4), (71.7, 0.2)),
    t7("softmax", 5, (82.9, 0.4), (65.7, 0.5)),
    t7("softmax", 7, (85.4, 0.4), (72.6, 0.1)),
];

/// One training setting of the paper (§3), for the generated deviations list.
pub struct PaperSetting {
    /// The `train` param that holds our value (`epochs`), or a pseudo-name for settings read
    /// from elsewhere (`preprocess.size`, `data`).
    pub param: &'static str,
    /// What the setting is, for the reader.
    pub what: &'static str,
    /// The paper's value as it compares with ours (JSON), `None` where the paper gives a
    /// procedure rather than a value.
    pub value: Option<PaperSettingValue>,
    /// The paper's value as the report prints it.
    pub text: &'static str,
}

pub enum PaperSettingValue {
    Number(f64),
    Text(&'static str),
}

/// The paper's training settings (§3, `PAPER.md`).
pub const SETTINGS: &[PaperSetting] = &[
    PaperSetting {
        param: "data",
        what: "training data",
        value: None,
        text: "ImageNet 2012 train, 1.3M images, 1,000 classes",
    },
    PaperSetting {
        param: "preprocess.size",
        what: "images resized and centre-cropped to",
        value: Some(PaperSettingValue::Number(256.0)),
        text: "256x256",
    },
    PaperSetting {
        param: "arch",
        what: "architecture",
        value: Some(PaperSettingValue::Text("zf")),
        text: "`zf` (Fig. 3): conv1 96@7x7/2 on 224x224 crops",
    },
    PaperSetting {
        param: "crops",
        what: "training crops",
        value: Some(PaperSettingValue::Text("ten")),
        text: "the 10 sub-crops (corners + centre, with and without horizontal flips)",
    },
    PaperSetting {
        param: "epochs",
        what: "epochs",
        value: Some(PaperSettingValue::Number(70.0)),
        text: "70",
    },
    PaperSetting {
        param: "batch_size",
        what: "mini-batch",
        value: Some(PaperSettingValue::Number(128.0)),
        text: "128",
    },
    PaperSetting {
        param: "learning_rate",
        what: "learning rate",
        value: Some(PaperSettingValue::Number(1e-2)),
        text: "1e-2",
    },
    PaperSetting {
        param: "momentum",
        what: "momentum",
        value: Some(PaperSettingValue::Number(0.9)),
        text: "0.9",
    },
    PaperSetting {
        param: "weight_decay",
        what: "weight decay",
        value: Some(PaperSettingValue::Number(0.0)),
        text: "none stated (0)",
    },
    PaperSetting {
        param: "init_std",
        what: "initial weight scale",
        value: Some(PaperSettingValue::Number(1e-2)),
        text: "1e-2",
    },
    PaperSetting {
        param: "filter_rms_radius",
        what: "conv filter RMS renormalisation radius",
        value: Some(PaperSettingValue::Number(0.1)),
        text: "0.1",
    },
    PaperSetting {
        param: "lr_schedule",
        what: "learning-rate annealing",
        value: None,
        text: "by hand, when the validation error plateaus",
    },
];
