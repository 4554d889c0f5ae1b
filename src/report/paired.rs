//! Paired comparisons over seeds: for each seed s, Group Loss(s) − softmax(s) (the baseline
//! trained with the same seed, so the shared randomness — initial head, batch order — cancels)
//! and Group Loss(s) − untrained (one network, so every seed is compared with it), with the
//! mean difference and its 95 % confidence interval from Student's t distribution over seeds,
//! and one sentence whose wording follows the interval.

use crate::report::data::{DatasetData, Method, RunRow};
use crate::report::table::Table;
use std::collections::BTreeMap;

/// The metrics compared (catalogue name, column label).
const METRICS: [(&str, &str); 2] = [("recall@1", "R@1"), ("map@r", "MAP@R")];

/// Two-sided 95 % quantile t_{0.975, df} of Student's t distribution for df = 1..=30
/// (standard tables, e.g. NIST/SEMATECH e-Handbook of Statistical Methods, table 1.3.6.7.2).
const T975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// t_{0.975, df}; beyond the table the Cornish–Fisher expansion around z = 1.96 (error
/// below 1e-3 for df > 30). `None` for df = 0.
pub fn t975(df: usize) -> Option<f64> {
    match df {
        0 => None,
        1..=30 => Some(T975[df - 1]),
        _ => {
            let (z, n) = (1.959964f64, df as f64);
            Some(
                z + (z.powi(3) + z) / (4.0 * n)
                    + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * n * n),
            )
        }
    }
}

/// A mean difference over n paired seeds with its 95 % t interval (`half` = t · s / √n;
/// `None` with one seed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub mean: f64,
    pub half: Option<f64>,
    pub n: usize,
}

impl Interval {
    /// Mean, sample standard deviation and t interval of `xs` (empty → `None`).
    pub fn of(xs: &[f64]) -> Option<Interval> {
        let n = xs.len();
        if n == 0 {
            return None;
        }
        let mean = xs.iter().sum::<f64>() / n as f64;
        let half = t975(n - 1).map(|t| {
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            t * var.sqrt() / (n as f64).sqrt()
        });
        Some(Interval { mean, half, n })
    }

    pub fn low(&self) -> Option<f64> {
        self.half.map(|h| self.mean - h)
    }

    pub fn high(&self) -> Option<f64> {
        self.half.map(|h| self.mean + h)
    }

    /// `+1.23 [−0.40, +2.86]`, or the mean alone with one seed.
    pub fn show(&self) -> String {
        match (self.low(), self.high()) {
            (Some(l), Some(h)) => format!("{:+.2} [{:+.2}, {:+.2}]", self.mean, l, h),
            _ => format!("{:+.2}", self.mean),
        }
    }
}

/// Per-seed differences of Group Loss against one baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Paired {
    pub baseline: Method,
    pub metric: &'static str,
    /// (seed, Group Loss value, baseline value), by seed.
    pub pairs: Vec<(u64, f64, f64)>,
}

impl Paired {
    pub fn diffs(&self) -> Vec<f64> {
        self.pairs.iter().map(|p| p.1 - p.2).collect()
    }

    pub fn interval(&self) -> Option<Interval> {
        Interval::of(&self.diffs())
    }
}

/// Test value of `metric` for each subject of `method`.
fn values(d: &DatasetData, method: Method, metric: &str) -> BTreeMap<String, f64> {
    d.metrics
        .iter()
        .filter(|m| m.method == method && m.metric == metric)
        .map(|m| (m.subject.clone(), m.value))
        .collect()
}

fn by_seed(runs: &[RunRow], vals: &BTreeMap<String, f64>) -> BTreeMap<u64, f64> {
    runs.iter()
        .filter_map(|r| Some((r.seed, *vals.get(&r.run_id)?)))
        .collect()
}

/// Group Loss against the softmax baseline of the same seed and against the untrained network,
/// for each compared metric the catalogue has; empty when there is nothing to pair.
pub fn comparisons(d: &DatasetData) -> Vec<Paired> {
    let mut out = Vec::new();
    for (metric, _) in METRICS {
        let gl = by_seed(&d.group_loss, &values(d, Method::GroupLoss, metric));
        let sm = by_seed(&d.softmax, &values(d, Method::Softmax, metric));
        let untrained = values(d, Method::Untrained, metric).into_values().next();
        let pairs: Vec<_> = gl
            .iter()
            .filter_map(|(s, g)| Some((*s, *g, *sm.get(s)?)))
            .collect();
        if !pairs.is_empty() {
            out.push(Paired {
                baseline: Method::Softmax,
                metric,
                pairs,
            });
        }
        if let Some(u) = untrained {
            out.push(Paired {
                baseline: Method::Untrained,
                metric,
                pairs: gl.iter().map(|(s, g)| (*s, *g, u)).collect(),
            });
        }
    }
    out
}

fn label(metric: &str) -> &'static str {
    METRICS.iter().find(|m| m.0 == metric).map_or("?", |m| m.1)
}

fn short(m: Method) -> &'static str {
    match m {
        Method::Softmax => "softmax",
        Method::Untrained => "untrained",
        _ => m.label(),
    }
}

/// The paired-difference table: one row per seed, then the mean with its 95 % interval. Only
/// for a dataset with a softmax baseline paired by seed (a profile without one, like a sweep
/// over Group Loss alone, keeps its tables as they were).
pub fn paired_table(d: &DatasetData) -> Option<Table> {
    let cmp = comparisons(d);
    if !cmp.iter().any(|c| c.baseline == Method::Softmax) {
        return None;
    }
    let mut header = vec!["seed".to_string()];
    header.extend(
        cmp.iter()
            .map(|c| format!("Δ {} GL − {}", label(c.metric), short(c.baseline))),
    );
    let mut seeds: Vec<u64> = cmp
        .iter()
        .flat_map(|c| c.pairs.iter().map(|p| p.0))
        .collect();
    seeds.sort_unstable();
    seeds.dedup();
    let mut rows: Vec<Vec<String>> = seeds
        .iter()
        .map(|s| {
            let mut r = vec![s.to_string()];
            r.extend(cmp.iter().map(|c| {
                c.pairs
                    .iter()
                    .find(|p| p.0 == *s)
                    .map_or("—".into(), |p| format!("{:+.2}", p.1 - p.2))
            }));
            r
        })
        .collect();
    let rules_after = vec![rows.len() - 1];
    let mut mean = vec!["mean [95 % CI]".to_string()];
    mean.extend(
        cmp.iter()
            .map(|c| c.interval().map_or("—".into(), |i| i.show())),
    );
    rows.push(mean);
    Some(Table {
        caption: format!(
            "{}: paired differences on the test classes (percentage points): Group Loss minus \
             the softmax baseline trained with the same seed, and minus the untrained network; \
             mean with its 95 % confidence interval (Student's t over seeds)",
            d.name
        ),
        header,
        rows,
        rules_after,
    })
}

/// One sentence for a comparison, worded by where its interval lies.
pub fn verdict(c: &Paired) -> String {
    let what = format!("{} on the test classes", label(c.metric));
    let against = match c.baseline {
        Method::Softmax => "the softmax baseline trained with the same seeds",
        _ => "the untrained network",
    };
    let Some(i) = c.interval() else {
        return String::new();
    };
    let (Some(lo), Some(hi)) = (i.low(), i.high()) else {
        return format!(
            "With one seed, Group Loss's {what} differs from {against} by {:+.2} points; one \
             seed gives no interval, so this is no evidence either way.",
            i.mean
        );
    };
    let ci = format!(
        "{:+.2} points, 95 % CI [{lo:+.2}, {hi:+.2}] over {} seeds",
        i.mean, i.n
    );
    if lo > 0.0 {
        format!("Group Loss beats {against} in {what}: {ci}.")
    } else if hi < 0.0 {
        format!("Group Loss is worse than {against} in {what}: {ci}.")
    } else {
        format!(
            "Group Loss does not beat {against} in {what}: {ci}; the interval includes zero, so \
             with these seeds the two cannot be told apart."
        )
    }
}

/// When the softmax baseline is itself below the untrained network in `metric` (the mean of
/// the two paired differences says by how much), a sentence saying that the gap to it is partly
/// what softmax fine-tuning loses, not only what Group Loss adds.
fn baseline_caveat(cmp: &[Paired], metric: &str) -> Option<String> {
    let mean = |b: Method| {
        cmp.iter()
            .find(|c| c.metric == metric && c.baseline == b)?
            .interval()
            .map(|i| i.mean)
    };
    let below = mean(Method::Softmax)? - mean(Method::Untrained)?;
    (below > 0.0).then(|| {
        format!(
            "Note that the softmax baseline is itself {below:.2} points below the untrained \
             network in {}: part of Group Loss's lead over it is what softmax fine-tuning loses \
             on unseen classes, and its gain over the pretrained network is the comparison above.",
            label(metric)
        )
    })
}

/// The sentences for every comparison, one paragraph.
pub fn summary(d: &DatasetData) -> String {
    let cmp = comparisons(d);
    let mut out = Vec::new();
    for c in &cmp {
        out.push(verdict(c));
        if c.baseline == Method::Untrained {
            out.extend(baseline_caveat(&cmp, c.metric));
        }
    }
    out.retain(|s| !s.is_empty());
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::data::MetricRow;
    use crate::report::fixtures::run;

    fn metric(method: Method, subject: &str, value: f64) -> MetricRow {
        crate::report::fixtures::metric(method, subject, "recall@1", value)
    }

    fn data(gl: &[f64], sm: &[f64], untrained: f64) -> DatasetData {
        let mut d = DatasetData {
            name: "x".into(),
            ..Default::default()
        };
        for (s, v) in gl.iter().enumerate() {
            d.group_loss.push(run(&format!("gl{s}"), s as u64));
            d.metrics
                .push(metric(Method::GroupLoss, &format!("gl{s}"), *v));
        }
        for (s, v) in sm.iter().enumerate() {
            d.softmax.push(run(&format!("sm{s}"), s as u64));
            d.metrics
                .push(metric(Method::Softmax, &format!("sm{s}"), *v));
        }
        d.metrics.push(metric(Method::Untrained, "gl0", untrained));
        d
    }

    #[test]
    fn t_quantiles() {
        assert_eq!(t975(0), None);
        assert_eq!(t975(2), Some(4.303));
        // Cornish–Fisher beyond the table: t(40) = 2.021, t(120) = 1.980.
        assert!((t975(40).unwrap() - 2.021).abs() < 1e-3);
        assert!((t975(120).unwrap() - 1.980).abs() < 1e-3);
    }

    #[test]
    fn interval_of_three_seeds() {
        // diffs 1, 2, 3: mean 2, s = 1, half = 4.303 / √3 = 2.4844
        let i = Interval::of(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!(i.mean, 2.0);
        assert!((i.half.unwrap() - 4.303 / 3f64.sqrt()).abs() < 1e-12);
        assert_eq!(i.show(), "+2.00 [-0.48, +4.48]");
        assert_eq!(Interval::of(&[1.5]).unwrap().half, None);
        assert_eq!(Interval::of(&[]), None);
    }

    #[test]
    fn pairs_by_seed_and_words_follow_the_interval() {
        // GL − softmax per seed: +5.0, +5.2, +4.8 → CI well above 0.
        let d = data(&[80.0, 81.0, 79.0], &[75.0, 75.8, 74.2], 60.0);
        let c = comparisons(&d);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].baseline, Method::Softmax);
        let diffs = c[0].diffs();
        assert!((diffs[0] - 5.0).abs() < 1e-9 && (diffs[1] - 5.2).abs() < 1e-9);
        assert!(verdict(&c[0]).starts_with("Group Loss beats the softmax baseline"));
        assert_eq!(c[1].diffs(), vec![20.0, 21.0, 19.0]);
        // Noisy differences around 0: +2, −1.5, +0.1 → "does not beat".
        let d = data(&[80.0, 78.5, 79.1], &[78.0, 80.0, 79.0], 60.0);
        let v = verdict(&comparisons(&d)[0]);
        assert!(v.starts_with("Group Loss does not beat"), "{v}");
        // Consistently lower → "is worse".
        let d = data(&[70.0, 71.0, 70.5], &[75.0, 75.5, 75.2], 60.0);
        assert!(verdict(&comparisons(&d)[0]).starts_with("Group Loss is worse"));
        // Only seed 0 has a softmax twin: one pair, no interval.
        let d = data(&[80.0, 81.0], &[75.0], 60.0);
        let c = comparisons(&d);
        assert_eq!(c[0].pairs.len(), 1);
        assert!(verdict(&c[0]).contains("no evidence"));
        // A softmax baseline below the untrained network is said to be so.
        let d = data(&[80.0, 81.0, 79.0], &[65.0, 66.0, 64.0], 70.0);
        let s = summary(&d);
        assert!(
            s.contains("itself 5.00 points below the untrained network in R@1"),
            "{s}"
        );
        let d = data(&[80.0, 81.0, 79.0], &[75.0, 75.8, 74.2], 60.0);
        assert!(!summary(&d).contains("below the untrained"));
    }

    #[test]
    fn table_has_a_row_per_seed_and_the_mean() {
        let d = data(&[80.0, 81.0, 79.0], &[75.0, 75.8, 74.2], 60.0);
        let t = paired_table(&d).unwrap();
        assert_eq!(t.rows.len(), 4);
        assert_eq!(t.rows[1], vec!["1", "+5.20", "+21.00"]);
        assert_eq!(t.rows[3][0], "mean [95 % CI]");
        assert!(t.rows[3][1].starts_with("+5.00 ["));
        assert!(paired_table(&DatasetData::default()).is_none());
        let no_softmax = data(&[80.0, 81.0], &[], 60.0);
        assert!(
            paired_table(&no_softmax).is_none(),
            "no softmax twin, no table"
        );
    }
}
