//! The paper's claims as data. A [`Claim`] holds where the paper makes it, the paper's words,
//! what we measure, and one or more [`Comparison`]s — each an effect in the direction the paper
//! claims, with its uncertainty. The verdict is *computed* from those comparisons by the rules
//! below (never stored beside them), so a verdict cannot say more than its own table:
//!
//! - **INCONCLUSIVE** when the claim cannot be measured here (a stated blocker: the runs it rests
//!   on did not train, the models lack what the claim is about), or when some comparison's 95%
//!   interval contains the claim's minimum effect (inside the noise), or has no interval (one
//!   run: no spread to judge it by);
//! - **FAIL** when some comparison's whole 95% interval lies below the minimum effect (the
//!   opposite of the claim, or less than the claim needs, beyond the noise);
//! - **PASS** when every comparison's whole 95% interval lies above the minimum effect.
//!
//! FAIL outranks INCONCLUSIVE: one comparison that contradicts the paper beyond the noise fails
//! the claim whatever the others show.

use std::fmt::Write as _;

use stats::Estimate;

use crate::document::MdTable;

/// The verdict rules as the report prints them.
pub const RULES: &str = "Each claim is tested as the paper states it, on this run's own \
    artifacts. An *effect* is measured in the direction the paper claims (positive = as the \
    paper says), with a 95% t interval from its spread over independent runs, folds or images \
    (`n` in the table; two groups: Welch; the same folds or images under two conditions: paired \
    differences). **PASS**: every comparison of the claim has its whole interval above the \
    claim's minimum effect (0 unless stated). **FAIL**: some comparison has its whole interval \
    below that minimum — the data contradict the claim beyond their noise. **INCONCLUSIVE**: \
    anything else — an interval that contains the minimum (inside the noise), a single run \
    (no spread), or a claim this run cannot measure (runs that did not train, models without \
    the feature the claim is about), with the reason. An optimisation failure is never counted \
    as evidence: a run whose final validation top-1 error is within 5 points of chance \
    (1 − 1/classes) *did not train*, is left out of every mean and makes every comparison that \
    needs it INCONCLUSIVE. `±` in every table is the sample standard deviation (n − 1), with n \
    stated.";

/// PASS, FAIL or INCONCLUSIVE (with the reason).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail(String),
    Inconclusive(String),
}

impl Verdict {
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail(_) => "FAIL",
            Verdict::Inconclusive(_) => "INCONCLUSIVE",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            Verdict::Pass => None,
            Verdict::Fail(r) | Verdict::Inconclusive(r) => Some(r),
        }
    }
}

/// How one comparison reads against its minimum effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// The whole interval is above the minimum.
    Above,
    /// The whole interval is below the minimum.
    Below,
    /// The interval contains the minimum.
    InsideNoise,
    /// No interval: a single run, or no spread.
    NoSpread,
    /// Not measured (a run it needs did not train, a value is missing).
    Missing,
}

/// One effect, in the paper's direction, in the claim's unit.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// What is compared, e.g. `N = 5 per class` or `zf_small vs krizhevsky_small`.
    pub label: String,
    /// `None` when it could not be measured (the reason is in `missing`).
    pub estimate: Option<Estimate>,
    /// Why there is no estimate.
    pub missing: Option<String>,
}

impl Comparison {
    pub fn new(label: impl Into<String>, estimate: Estimate) -> Self {
        Comparison {
            label: label.into(),
            estimate: Some(estimate),
            missing: None,
        }
    }

    pub fn missing(label: impl Into<String>, why: impl Into<String>) -> Self {
        Comparison {
            label: label.into(),
            estimate: None,
            missing: Some(why.into()),
        }
    }

    pub fn reading(&self, minimum: f64) -> Reading {
        let Some(estimate) = &self.estimate else {
            return Reading::Missing;
        };
        match estimate.interval95() {
            None => Reading::NoSpread,
            Some((lo, _)) if lo > minimum => Reading::Above,
            Some((_, hi)) if hi < minimum => Reading::Below,
            Some(_) => Reading::InsideNoise,
        }
    }
}

/// Why a comparison has no interval: one run, identical values, or a value that is not a
/// number.
fn no_spread_why(c: &Comparison) -> &'static str {
    match c.estimate {
        Some(e) if !e.value.is_finite() => "is not a number (no effect measurable)",
        Some(e) if e.n < 2 => "comes from a single run: no spread",
        _ => "has no spread (identical values): no evidence either way",
    }
}

/// One claim of the paper, tested here.
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    /// Where the paper makes it: `Table 2`, `Fig. 7 (d)`.
    pub source: String,
    /// The claim in the paper's words (quoted or closely paraphrased from PAPER.md).
    pub paper_says: String,
    /// What this run measures, and the sign convention of the effect.
    pub measured: String,
    /// The effect's unit as printed (`points`, `` for a plain number).
    pub unit: String,
    /// Decimals when printing effects.
    pub decimals: usize,
    /// The smallest effect that supports the claim (0: any effect in the paper's direction).
    pub minimum: f64,
    /// Why the minimum is that size.
    pub minimum_why: String,
    pub comparisons: Vec<Comparison>,
    /// Why the claim cannot be measured here at all (makes it INCONCLUSIVE).
    pub blocker: Option<String>,
    /// The paper's own effect, for comparison only (never used by the verdict).
    pub paper_effect: Option<String>,
}

impl Claim {
    pub fn new(source: &str, paper_says: &str, measured: &str) -> Self {
        Claim {
            source: source.to_owned(),
            paper_says: paper_says.to_owned(),
            measured: measured.to_owned(),
            unit: String::new(),
            decimals: 3,
            minimum: 0.0,
            minimum_why: String::new(),
            comparisons: Vec::new(),
            blocker: None,
            paper_effect: None,
        }
    }

    pub fn unit(mut self, unit: &str, decimals: usize) -> Self {
        self.unit = unit.to_owned();
        self.decimals = decimals;
        self
    }

    /// A minimum effect, with why it is that size (printed beside it).
    pub fn minimum(mut self, minimum: f64, why: &str) -> Self {
        self.minimum = minimum;
        self.minimum_why = why.to_owned();
        self
    }

    pub fn blocked(mut self, why: impl Into<String>) -> Self {
        self.blocker = Some(why.into());
        self
    }

    /// Blocks the claim when `reasons` is not empty: "`prefix`: reason; reason".
    pub fn blocked_if(self, prefix: &str, reasons: Vec<String>) -> Self {
        if reasons.is_empty() {
            self
        } else if prefix.is_empty() {
            self.blocked(reasons.join("; "))
        } else {
            self.blocked(format!("{prefix}: {}", reasons.join("; ")))
        }
    }

    pub fn paper_effect(mut self, text: impl Into<String>) -> Self {
        self.paper_effect = Some(text.into());
        self
    }

    pub fn compare(mut self, comparison: Comparison) -> Self {
        self.comparisons.push(comparison);
        self
    }

    /// The verdict, from the rules in the module doc.
    pub fn verdict(&self) -> Verdict {
        if let Some(why) = &self.blocker {
            return Verdict::Inconclusive(why.clone());
        }
        if self.comparisons.is_empty() {
            return Verdict::Inconclusive("nothing to compare in this run".to_owned());
        }
        if let Some(c) = self
            .comparisons
            .iter()
            .find(|c| c.reading(self.minimum) == Reading::Below)
        {
            return Verdict::Fail(format!(
                "{}: {} is below {} beyond the noise",
                c.label,
                self.effect_text(c),
                self.minimum_text()
            ));
        }
        let unsettled: Vec<String> = self
            .comparisons
            .iter()
            .filter_map(|c| match c.reading(self.minimum) {
                Reading::Above | Reading::Below => None,
                Reading::InsideNoise => Some(format!(
                    "{}: {} contains {}",
                    c.label,
                    self.effect_text(c),
                    self.minimum_text()
                )),
                Reading::NoSpread => Some(format!(
                    "{}: {} {}",
                    c.label,
                    self.effect_text(c),
                    no_spread_why(c)
                )),
                Reading::Missing => Some(format!(
                    "{}: {}",
                    c.label,
                    c.missing.as_deref().unwrap_or("not measured")
                )),
            })
            .collect();
        if unsettled.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Inconclusive(unsettled.join("; "))
        }
    }

    fn minimum_text(&self) -> String {
        if self.minimum == 0.0 {
            "0".to_owned()
        } else {
            format!("the minimum {}", self.number(self.minimum))
        }
    }

    fn number(&self, value: f64) -> String {
        let unit = if self.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", self.unit)
        };
        format!("{:+.*}{unit}", self.decimals, value)
    }

    /// `+6.0 points [95%: −3.1, +15.1]`, or the bare value without an interval.
    pub fn effect_text(&self, c: &Comparison) -> String {
        match &c.estimate {
            None => "not measured".to_owned(),
            Some(e) => match e.interval95() {
                Some((lo, hi)) => format!(
                    "{} [95%: {:+.*}, {:+.*}]",
                    self.number(e.value),
                    self.decimals,
                    lo,
                    self.decimals,
                    hi
                ),
                None => self.number(e.value),
            },
        }
    }

    /// The comparison the summary shows: the failing one, else the least settled one, else
    /// the weakest passing one.
    pub fn headline(&self) -> Option<&Comparison> {
        let rank = |c: &Comparison| match c.reading(self.minimum) {
            Reading::Below => 0,
            Reading::Missing => 1,
            Reading::NoSpread => 2,
            Reading::InsideNoise => 3,
            Reading::Above => 4,
        };
        let lower = |c: &Comparison| {
            c.estimate
                .and_then(|e| e.interval95())
                .map_or(f64::INFINITY, |(lo, _)| lo)
        };
        self.comparisons
            .iter()
            .min_by(|a, b| rank(a).cmp(&rank(b)).then(lower(a).total_cmp(&lower(b))))
    }

    /// The claim in its section: the evidence table (one row per comparison) and the verdict.
    pub fn render(&self) -> String {
        let verdict = self.verdict();
        let mut md = format!(
            "**Claim ({})**: {} — *the paper*: {}\n\n",
            self.source, self.measured, self.paper_says
        );
        if !self.comparisons.is_empty() {
            let mut table = MdTable::new(&["comparison", "effect [95% interval]", "n", "reads"]);
            for c in &self.comparisons {
                table.row(vec![
                    c.label.clone(),
                    self.effect_text(c),
                    c.estimate.map_or("–".to_owned(), |e| e.n.to_string()),
                    match c.reading(self.minimum) {
                        Reading::Above => "supports the claim".to_owned(),
                        Reading::Below if self.minimum == 0.0 => {
                            "**contradicts the claim**".to_owned()
                        }
                        Reading::Below => "**below the claim's minimum**".to_owned(),
                        Reading::InsideNoise => "inside the noise".to_owned(),
                        Reading::NoSpread => no_spread_why(c).to_owned(),
                        Reading::Missing => c.missing.clone().unwrap_or_default(),
                    },
                ]);
            }
            md.push_str(&table.render());
            md.push('\n');
        }
        if self.minimum != 0.0 {
            let _ = writeln!(
                md,
                "Minimum effect for the claim: {}{}.\n",
                self.number(self.minimum),
                if self.minimum_why.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", self.minimum_why)
                }
            );
        }
        if let Some(paper) = &self.paper_effect {
            let _ = writeln!(md, "The paper's own effect: {paper}.\n");
        }
        let _ = writeln!(
            md,
            "**Verdict: {}**{}\n",
            verdict.word(),
            verdict
                .reason()
                .map_or(String::new(), |r| format!(" — {r}."))
        );
        md
    }
}

/// The summary that opens the report: claim | the paper says | measured | effect | verdict,
/// each claim linked to its section.
pub fn summary_table<'a>(claims: impl Iterator<Item = (&'a Claim, String)>) -> MdTable {
    let mut table = MdTable::new(&[
        "claim",
        "the paper says",
        "measured here",
        "effect [95% interval] (n)",
        "verdict",
    ]);
    for (claim, anchor) in claims {
        let effect = claim.headline().map_or("–".to_owned(), |c| {
            format!(
                "{}: {}{}",
                c.label,
                claim.effect_text(c),
                c.estimate
                    .map_or(String::new(), |e| format!(" (n = {})", e.n))
            )
        });
        let verdict = claim.verdict();
        table.row(vec![
            format!("[{}](#{anchor})", claim.source),
            claim.paper_says.clone(),
            claim.measured.clone(),
            effect,
            match verdict.reason() {
                None => format!("**{}**", verdict.word()),
                Some(reason) => format!("**{}**: {reason}", verdict.word()),
            },
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use stats::Summary;

    fn claim() -> Claim {
        Claim::new("Table X", "A beats B", "A − B").unit("points", 1)
    }

    fn paired(a: &[f64], b: &[f64]) -> Estimate {
        Estimate::paired(a, b).unwrap()
    }

    #[test]
    fn a_claim_passes_only_when_every_comparison_is_beyond_its_noise() {
        let clear = Comparison::new("N = 1", paired(&[60.0, 62.0, 61.0], &[40.0, 41.0, 43.0]));
        assert_eq!(claim().compare(clear.clone()).verdict(), Verdict::Pass);
        // A second comparison inside the noise: no longer PASS.
        let noisy = Comparison::new("N = 10", paired(&[73.0, 70.0, 76.0], &[74.0, 72.0, 70.0]));
        let v = claim().compare(clear.clone()).compare(noisy).verdict();
        assert!(
            matches!(&v, Verdict::Inconclusive(r) if r.starts_with("N = 10: ")),
            "{v:?}"
        );
    }

    #[test]
    fn one_contradiction_beyond_the_noise_fails_the_claim() {
        let clear = Comparison::new("N = 1", paired(&[60.0, 62.0, 61.0], &[40.0, 41.0, 43.0]));
        let against = Comparison::new("N = 20", paired(&[76.0, 77.0, 77.5], &[81.0, 80.5, 82.0]));
        let c = claim().compare(clear).compare(against);
        let v = c.verdict();
        assert!(
            matches!(&v, Verdict::Fail(r) if r.starts_with("N = 20")),
            "{v:?}"
        );
        assert_eq!(c.headline().unwrap().label, "N = 20");
        assert!(c.render().contains("**contradicts the claim**"));
    }

    #[test]
    fn a_single_run_or_a_blocker_is_inconclusive_never_a_pass() {
        let one = Summary::of(&[0.2]).unwrap();
        let two = Summary::of(&[0.3]).unwrap();
        let single = Comparison::new("one seed", Estimate::difference(&two, &one));
        let v = claim().compare(single.clone()).verdict();
        assert!(
            matches!(&v, Verdict::Inconclusive(r) if r.contains("no spread")),
            "{v:?}"
        );
        let clear = Comparison::new("N = 1", paired(&[60.0, 62.0, 61.0], &[40.0, 41.0, 43.0]));
        let blocked = claim().compare(clear).blocked("2 of 3 runs did not train");
        assert_eq!(
            blocked.verdict(),
            Verdict::Inconclusive("2 of 3 runs did not train".to_owned())
        );
        let missing = claim().compare(Comparison::missing("x", "did not train"));
        assert!(matches!(missing.verdict(), Verdict::Inconclusive(_)));
        assert!(matches!(claim().verdict(), Verdict::Inconclusive(_)));
    }

    #[test]
    fn a_minimum_effect_turns_a_small_effect_into_a_fail() {
        // Drops of 0.2-0.4 points, tightly measured, against a minimum of 1 point.
        let small = Comparison::new("drop", Estimate::mean(&[0.2, 0.3, 0.4, 0.3, 0.3]).unwrap());
        let v = claim()
            .minimum(1.0, "test")
            .compare(small.clone())
            .verdict();
        assert!(
            matches!(&v, Verdict::Fail(r) if r.contains("the minimum +1.0 points")),
            "{v:?}"
        );
        assert_eq!(claim().compare(small).verdict(), Verdict::Pass);
    }

    #[test]
    fn the_summary_names_the_decisive_comparison() {
        let clear = Comparison::new("N = 1", paired(&[60.0, 62.0, 61.0], &[40.0, 41.0, 43.0]));
        let against = Comparison::new("N = 20", paired(&[76.0, 77.0, 77.5], &[81.0, 80.5, 82.0]));
        let c = claim().compare(clear).compare(against);
        let md = summary_table(std::iter::once((&c, "x".to_owned()))).render();
        assert!(md.contains("N = 20: -4.3 points"), "{md}");
        assert!(md.contains("| **FAIL**: N = 20: -4.3 points"), "{md}");
    }
}
