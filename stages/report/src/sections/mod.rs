//! The report's sections for the single-model analyses: training (§3), deconvnet projections
//! (Fig. 2), first-layer filter statistics, occlusion (Fig. 7), feature evolution (Fig. 4),
//! invariance (Fig. 5), correspondence (Table 1), per-layer probes (Table 7) and overlap
//! removal (§5.2). Each returns a [`Section`] with its tables, figures and claims.

use std::collections::BTreeMap;
use std::path::Path;

use artifacts::table::TableRow;
use artifacts::table::rows::{
    CorrespondenceRow, DedupMatchRow, EvaluationRow, FilterStatsRow, InvarianceRow,
    OcclusionCheckRow, ProbeRow, TrainMetricsRow,
};
use stage_api::{Error, Result};
use stats::{Estimate, Summary};

use crate::claims::{Claim, Comparison};
use crate::document::{MdTable, Section};
use crate::paper::TABLE7;
use crate::{copy_figures, stage_of};

/// One column of typed rows ([`artifacts::table::TableRow`]): every row's `name`, in order. The
/// field is checked by the compiler, where a column looked up by its name was not.
macro_rules! field {
    ($rows:expr, $name:ident) => {
        $rows
            .iter()
            .map(|row| row.$name.clone())
            .collect::<Vec<_>>()
    };
}
pub(crate) use field;

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

mod deconv;
mod occlusion;
mod probes;
mod training;

pub use deconv::*;
pub use occlusion::*;
pub use probes::*;
pub use training::*;

#[cfg(test)]
mod tests {
    use super::*;

    /// The paper pipeline ships Table 1's part file empty (the paper's annotations were not
    /// published): the section says the table was not computed and how to compute it, and
    /// its claim is inconclusive, never a verdict on nothing.
    #[test]
    fn an_unannotated_table_1_is_not_computed_and_its_claim_inconclusive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs/abc/table1.parquet");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        CorrespondenceRow::write(&[], &path, &artifacts::Provenance::ad_hoc("correspondence"))
            .unwrap();
        let section = correspondence(&path, None, dir.path()).unwrap();
        let text = section.render();
        assert!(text.contains("**Not computed**"), "{text}");
        assert!(text.contains("INCONCLUSIVE"), "{text}");
        assert!(!text.contains("| mask | layer 5"), "no empty table: {text}");
    }
}
