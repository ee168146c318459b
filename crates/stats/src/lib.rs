//! The statistics behind every `±` and every verdict of the report: one summary (mean,
//! sample standard deviation, n) and 95% t intervals for an effect — a mean, a difference of
//! two independent groups (Welch), or a mean of paired differences.
//!
//! One convention everywhere: `std` is the *sample* standard deviation (divisor n − 1), and a
//! single value has no spread (`std` is `None`), so a table can never show `± 0.0` for one run.

/// Mean, sample standard deviation and count of some values (runs, folds, images).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub mean: f64,
    /// Sample standard deviation (n − 1); `None` for a single value.
    pub std: Option<f64>,
    pub n: usize,
}

impl Summary {
    /// `None` for no values.
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = (n > 1).then(|| {
            (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64).sqrt()
        });
        Some(Summary { mean, std, n })
    }

    /// A summary stored as mean, sample std and n (a table that kept only those).
    pub fn from_parts(mean: f64, std: f64, n: usize) -> Summary {
        Summary {
            mean,
            std: (n > 1).then_some(std),
            n,
        }
    }

    /// Standard error of the mean; `None` without a spread.
    pub fn standard_error(&self) -> Option<f64> {
        self.std.map(|s| s / (self.n as f64).sqrt())
    }

    /// `mean ± std`, both multiplied by `scale` (100 for percentages), with `decimals`; a single
    /// value prints alone.
    pub fn format(&self, scale: f64, decimals: usize) -> String {
        match self.std {
            Some(std) => format!(
                "{:.*} ± {:.*}",
                decimals,
                scale * self.mean,
                decimals,
                scale * std
            ),
            None => format!("{:.*}", decimals, scale * self.mean),
        }
    }
}

/// An estimated effect with its standard error and degrees of freedom: what a verdict reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    pub value: f64,
    /// `None` when the data have no spread to estimate it from (one run per arm).
    pub standard_error: Option<f64>,
    pub degrees_of_freedom: f64,
    /// Independent units behind the estimate (runs, folds, images), for the report's "n".
    pub n: usize,
    /// An interval computed directly (e.g. Newcombe's for a difference of proportions),
    /// used instead of the t interval.
    pub direct_interval: Option<(f64, f64)>,
}

impl Estimate {
    /// The mean of some values (e.g. per-image effects) as the effect.
    pub fn mean(values: &[f64]) -> Option<Estimate> {
        let s = Summary::of(values)?;
        Some(Estimate::from_summary(&s))
    }

    /// The mean of a summary as the effect.
    pub fn from_summary(s: &Summary) -> Estimate {
        Estimate {
            value: s.mean,
            standard_error: s.standard_error(),
            degrees_of_freedom: s.n.saturating_sub(1) as f64,
            n: s.n,
            direct_interval: None,
        }
    }

    /// `a − b` for two independent groups (Welch: unequal variances, Welch–Satterthwaite
    /// degrees of freedom).
    pub fn difference(a: &Summary, b: &Summary) -> Estimate {
        let value = a.mean - b.mean;
        let n = a.n.min(b.n);
        match (a.std, b.std) {
            (Some(sa), Some(sb)) => {
                let (va, vb) = (sa * sa / a.n as f64, sb * sb / b.n as f64);
                let se = (va + vb).sqrt();
                let df = if va + vb > 0.0 {
                    (va + vb).powi(2) / (va * va / (a.n - 1) as f64 + vb * vb / (b.n - 1) as f64)
                } else {
                    (a.n + b.n - 2) as f64
                };
                Estimate {
                    value,
                    standard_error: Some(se),
                    degrees_of_freedom: df,
                    n,
                    direct_interval: None,
                }
            }
            _ => Estimate {
                value,
                standard_error: None,
                degrees_of_freedom: 0.0,
                n,
                direct_interval: None,
            },
        }
    }

    /// The mean of `a[i] − b[i]` (the same folds or images under two conditions).
    pub fn paired(a: &[f64], b: &[f64]) -> Option<Estimate> {
        assert_eq!(a.len(), b.len(), "paired values come in pairs");
        let differences: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        Estimate::mean(&differences)
    }

    /// A weighted sum `Σ w_i · mean_i` of independent summaries (e.g. a least-squares slope
    /// over layers), with its standard error; degrees of freedom from the smallest n.
    pub fn linear_combination(terms: &[(f64, Summary)]) -> Option<Estimate> {
        if terms.is_empty() {
            return None;
        }
        let value = terms.iter().map(|(w, s)| w * s.mean).sum();
        let n = terms.iter().map(|(_, s)| s.n).min().unwrap_or(0);
        let variance: Option<f64> = terms
            .iter()
            .map(|(w, s)| s.standard_error().map(|se| w * w * se * se))
            .sum();
        Some(Estimate {
            value,
            standard_error: variance.map(f64::sqrt),
            degrees_of_freedom: n.saturating_sub(1) as f64,
            n,
            direct_interval: None,
        })
    }

    /// `k1/n1 − k2/n2` for two proportions (e.g. dead filters of two models), with Newcombe's
    /// hybrid score interval (his method 10, from Wilson intervals): unlike the normal
    /// approximation it stays honest for counts near 0 (4 of 48 against 0 of 48 is inside
    /// the noise, as Fisher's exact test agrees, p ≈ 0.12).
    pub fn proportion_difference(k1: usize, n1: usize, k2: usize, n2: usize) -> Option<Estimate> {
        let (w1, w2) = (wilson(k1, n1)?, wilson(k2, n2)?);
        let (p1, p2) = (k1 as f64 / n1 as f64, k2 as f64 / n2 as f64);
        let d = p1 - p2;
        let lower = d - ((p1 - w1.0).powi(2) + (w2.1 - p2).powi(2)).sqrt();
        let upper = d + ((w1.1 - p1).powi(2) + (p2 - w2.0).powi(2)).sqrt();
        Some(Estimate {
            value: d,
            standard_error: None,
            degrees_of_freedom: 0.0,
            n: n1.min(n2),
            direct_interval: Some((lower, upper)),
        })
    }

    /// The same estimate in other units (e.g. fractions to percent).
    pub fn scaled(mut self, factor: f64) -> Estimate {
        self.value *= factor;
        self.standard_error = self.standard_error.map(|se| se * factor.abs());
        self.direct_interval = self.direct_interval.map(|(lo, hi)| {
            let (a, b) = (lo * factor, hi * factor);
            (a.min(b), a.max(b))
        });
        self
    }

    /// The 95% two-sided interval (t, or the direct one); `None` without a spread: no standard
    /// error, no degrees of freedom, a non-finite value, or a standard error of (numerically)
    /// zero — identical values are no evidence of an effect, and round-off must not decide.
    pub fn interval95(&self) -> Option<(f64, f64)> {
        if !self.value.is_finite() {
            return None;
        }
        if let Some(interval) = self.direct_interval {
            return Some(interval);
        }
        let se = self.standard_error?;
        if self.degrees_of_freedom < 1.0
            || !se.is_finite()
            || se <= 1e-12 * self.value.abs().max(1.0)
        {
            return None;
        }
        let half = t975(self.degrees_of_freedom) * se;
        Some((self.value - half, self.value + half))
    }
}

/// Wilson's 95% score interval for k successes in n trials; `None` for n = 0.
fn wilson(k: usize, n: usize) -> Option<(f64, f64)> {
    if n == 0 || k > n {
        return None;
    }
    let (z, n) = (1.959964f64, n as f64);
    let p = k as f64 / n;
    let denominator = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denominator;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denominator;
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

/// The 0.975 quantile of Student's t with `df` degrees of freedom (df ≥ 1; a fractional df
/// rounds down, which widens the interval). Exact to 3 decimals from tables up to 30; beyond,
/// 1.96 + 2.4/df (within 0.003 of the exact values at 40, 60 and 120, up to 0.002 narrower
/// between 31 and 60).
pub fn t975(df: f64) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    let whole = df.floor().max(1.0) as usize;
    if whole <= TABLE.len() {
        TABLE[whole - 1]
    } else {
        1.96 + 2.4 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spread_is_the_sample_standard_deviation_and_one_value_has_none() {
        let s = Summary::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(s.mean, 2.5);
        // Sample std: sqrt(5/3); the population std would be sqrt(5/4).
        assert!((s.std.unwrap() - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(s.format(1.0, 2), "2.50 ± 1.29");
        let one = Summary::of(&[0.25]).unwrap();
        assert_eq!((one.std, one.n), (None, 1));
        assert_eq!(one.format(100.0, 1), "25.0");
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn t_quantiles_match_the_tables() {
        assert_eq!(t975(1.0), 12.706);
        assert_eq!(t975(2.0), 4.303);
        assert_eq!(t975(2.9), 4.303, "a fractional df rounds down");
        assert_eq!(t975(30.0), 2.042);
        // Exact: 2.021 (40), 2.000 (60), 1.980 (120).
        for (df, exact) in [(40.0, 2.021), (60.0, 2.000), (120.0, 1.980)] {
            assert!((t975(df) - exact).abs() < 0.003, "df {df}");
        }
    }

    #[test]
    fn welch_difference_of_two_groups() {
        // Two groups of 3 with std 1 and 2: se = sqrt(1/3 + 4/3); Welch df = (5/3)^2 /
        // ((1/3)^2/2 + (4/3)^2/2) = 2.94.
        let a = Summary::of(&[11.0, 12.0, 13.0]).unwrap();
        let b = Summary::of(&[8.0, 10.0, 12.0]).unwrap();
        let e = Estimate::difference(&a, &b);
        assert_eq!(e.value, 2.0);
        assert!((e.standard_error.unwrap() - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((e.degrees_of_freedom - 2.9412).abs() < 1e-3);
        let (lo, hi) = e.interval95().unwrap();
        assert!((lo - (2.0 - 4.303 * (5.0f64 / 3.0).sqrt())).abs() < 1e-9 && hi > 2.0);
        // One run per arm: no interval.
        let one = Summary::of(&[1.0]).unwrap();
        assert_eq!(Estimate::difference(&one, &one).interval95(), None);
    }

    #[test]
    fn paired_differences_remove_what_the_pairs_share() {
        // Folds differ a lot, the difference between methods hardly: a tight interval.
        let a = [0.50, 0.70, 0.90];
        let b = [0.40, 0.61, 0.79];
        let e = Estimate::paired(&a, &b).unwrap();
        assert!((e.value - 0.1).abs() < 1e-12);
        let (lo, _) = e.interval95().unwrap();
        assert!(lo > 0.0, "{e:?}");
        let independent =
            Estimate::difference(&Summary::of(&a).unwrap(), &Summary::of(&b).unwrap());
        assert!(independent.interval95().unwrap().0 < 0.0);
    }

    #[test]
    fn identical_values_give_no_interval_so_round_off_cannot_decide() {
        // A slope of ~1e-16 from constant accuracies: not evidence either way.
        let flat = Estimate::mean(&[0.5, 0.5, 0.5]).unwrap();
        assert_eq!(flat.interval95(), None);
        let e = Estimate::linear_combination(&[
            (-0.5, Summary::from_parts(0.7, 0.0, 3)),
            (0.5, Summary::from_parts(0.7, 0.0, 3)),
        ])
        .unwrap();
        assert_eq!(e.interval95(), None);
    }

    #[test]
    fn newcombes_interval_keeps_small_counts_inside_the_noise() {
        // 4 of 48 vs 0 of 48: Fisher's exact p ≈ 0.12; the normal approximation would say
        // "beyond the noise".
        let e = Estimate::proportion_difference(4, 48, 0, 48).unwrap();
        let (lo, hi) = e.interval95().unwrap();
        assert!(lo < 0.0 && hi > 0.0, "({lo}, {hi})");
        // 20 of 48 vs 2 of 48 is clear.
        let (lo, _) = Estimate::proportion_difference(20, 48, 2, 48)
            .unwrap()
            .interval95()
            .unwrap();
        assert!(lo > 0.0);
        // 0 vs 0: an interval around 0, no effect.
        let (lo, hi) = Estimate::proportion_difference(0, 48, 0, 48)
            .unwrap()
            .interval95()
            .unwrap();
        assert!(lo < 0.0 && hi > 0.0);
        let pct = Estimate::proportion_difference(4, 48, 0, 48)
            .unwrap()
            .scaled(100.0);
        assert!((pct.value - 8.333).abs() < 1e-3 && pct.interval95().unwrap().0 < 0.0);
    }

    #[test]
    fn a_slope_over_layers_carries_each_layers_spread() {
        // Slope weights for layers 1, 2, 3: (-1, 0, 1) / 2.
        let s = |m: f64| Summary::from_parts(m, 0.02, 5);
        let e =
            Estimate::linear_combination(&[(-0.5, s(0.6)), (0.0, s(0.7)), (0.5, s(0.8))]).unwrap();
        assert!((e.value - 0.1).abs() < 1e-12);
        let se = (2.0 * 0.25 * 0.02 * 0.02 / 5.0f64).sqrt();
        assert!((e.standard_error.unwrap() - se).abs() < 1e-12);
        assert_eq!((e.degrees_of_freedom, e.n), (4.0, 5));
    }
}
