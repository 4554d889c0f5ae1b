//! Sweeps: a profile's `[sweep]` table, a grid over training-recipe keys
//! (`tau = [10.0, 24.0, 54.0]`, `anchors = [1, 2, 3]`) run for every seed of the profile. Each
//! grid point is the profile's `[train]` recipe with the point's values set last, so it is its
//! own run (its id hashes the resolved recipe), its own ensemble and its own row of the report's
//! sweep table.

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The longest point label: task keys, log file names and ensemble directories stay far below
/// the 255-byte limit of a file name.
pub const MAX_LABEL: usize = 96;

/// `[sweep]`: recipe key → the values it takes. Keys are in name order (a TOML table has no
/// order a reader could rely on), values in the order written.
pub type SweepGrid = BTreeMap<String, Vec<Value>>;

/// One point of the grid: a value for every swept key, in key order.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub values: Vec<(String, Value)>,
}

impl Point {
    /// `anchors=1,tau=10.0`: the task keys' and ensemble names' part for this point (empty for
    /// the single point of a profile without a sweep). Path-safe, as it names log files and
    /// ensemble directories: any character but `A-Za-z0-9._=,+-` becomes `_`, and a label over
    /// [`MAX_LABEL`] bytes is cut and ends in 8 hex digits of the sha256 of the whole.
    pub fn label(&self) -> String {
        let full: String = self
            .values
            .iter()
            .map(|(k, v)| format!("{k}={}", show(v)))
            .collect::<Vec<_>>()
            .join(",");
        let safe: String = full
            .chars()
            .map(|c| match c {
                'A'..='Z' | 'a'..='z' | '0'..='9' | '.' | '_' | '=' | ',' | '+' | '-' => c,
                _ => '_',
            })
            .collect();
        if safe.len() <= MAX_LABEL {
            return safe;
        }
        let h = hex::encode(Sha256::digest(full.as_bytes()));
        format!("{}~{}", &safe[..MAX_LABEL - 9], &h[..8])
    }

    /// `key=<TOML literal>` overrides that set the point on top of the recipe.
    pub fn overrides(&self) -> Result<Vec<String>> {
        self.values
            .iter()
            .map(|(k, v)| {
                let t = toml::Value::try_from(v)
                    .with_context(|| format!("sweep.{k}: {v} is not a TOML value"))?;
                Ok(format!("{k}={t}"))
            })
            .collect()
    }
}

/// A value as the report and the labels show it: strings bare, numbers as JSON writes them.
pub fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// Orders values of one key: numbers by value, anything else by how it is shown.
pub fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        _ => show(a).cmp(&show(b)),
    }
}

/// Checks a grid: every list non-empty, scalars only, no value twice (`10` and `10.0` are the
/// same value), no key the `[train]` set already fixes (which of the two would win is then a
/// question nobody should need to ask), no `init` when the runs start from the fine-tuned ones,
/// and every point's label distinct.
pub fn validate(grid: &SweepGrid, train_set: &[String], init_from_finetune: bool) -> Result<()> {
    for (k, values) in grid {
        ensure!(!values.is_empty(), "sweep.{k}: at least one value");
        for v in values {
            ensure!(
                matches!(v, Value::Number(_) | Value::String(_) | Value::Bool(_)),
                "sweep.{k}: {v} is not a number, string or boolean"
            );
        }
        for (i, v) in values.iter().enumerate() {
            ensure!(
                !values[..i].iter().any(|u| compare(u, v).is_eq()),
                "sweep.{k}: {v} is listed twice"
            );
        }
        ensure!(
            !(init_from_finetune && k == "init"),
            "sweep.init: train.init_from_finetune sets each run's init already"
        );
        for s in train_set {
            let (key, _) = crate::config::parse_override(s)?;
            ensure!(
                key != *k,
                "sweep.{k}: train.set sets {k} too ({s:?}); sweep it or set it, not both"
            );
        }
    }
    let mut labels: Vec<String> = points(grid).iter().map(Point::label).collect();
    labels.sort();
    if let Some(w) = labels.windows(2).find(|w| w[0] == w[1]) {
        anyhow::bail!(
            "sweep: two points are both labelled {:?}; make the values differ in A-Za-z0-9._=,+-",
            w[0]
        );
    }
    Ok(())
}

/// The grid's points, the last key varying fastest; one empty point without a sweep.
pub fn points(grid: &SweepGrid) -> Vec<Point> {
    let mut out = vec![Point { values: Vec::new() }];
    for (k, values) in grid {
        out = out
            .into_iter()
            .flat_map(|p| {
                values.iter().map(move |v| {
                    let mut q = p.clone();
                    q.values.push((k.clone(), v.clone()));
                    q
                })
            })
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn grid(v: Value) -> SweepGrid {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn points_are_the_cartesian_product_in_key_order() {
        let g = grid(json!({"tau": [10.0, 24.5], "anchors": [1, 2, 3]}));
        let p = points(&g);
        let labels: Vec<String> = p.iter().map(Point::label).collect();
        assert_eq!(
            labels,
            [
                "anchors=1,tau=10.0",
                "anchors=1,tau=24.5",
                "anchors=2,tau=10.0",
                "anchors=2,tau=24.5",
                "anchors=3,tau=10.0",
                "anchors=3,tau=24.5",
            ]
        );
        assert_eq!(p[1].overrides().unwrap(), ["anchors=1", "tau=24.5"]);
        assert_eq!(points(&SweepGrid::new()), [Point { values: vec![] }]);
        assert_eq!(points(&SweepGrid::new())[0].label(), "");
    }

    #[test]
    fn string_values_are_quoted_as_toml_and_path_safe_in_labels() {
        let p = &points(&grid(json!({"sampler": ["a b/c"]})))[0];
        assert_eq!(p.overrides().unwrap(), ["sampler=\"a b/c\""]);
        assert_eq!(p.label(), "sampler=a_b_c");
        let long = "x".repeat(300);
        let p = &points(&grid(json!({ "init": [long] })))[0];
        assert_eq!(p.label().len(), MAX_LABEL);
        assert!(p.label().starts_with("init=xxx"));
    }

    #[test]
    fn bad_grids_name_the_key() {
        let err = |v: Value, set: &[&str]| {
            let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
            validate(&grid(v), &set, true).unwrap_err().to_string()
        };
        assert!(err(json!({"tau": []}), &[]).contains("sweep.tau: at least one"));
        assert!(err(json!({"tau": [1, 1]}), &[]).contains("listed twice"));
        assert!(err(json!({"tau": [10, 10.0]}), &[]).contains("sweep.tau: 10.0 is listed twice"));
        assert!(err(json!({"init": ["a"]}), &[]).contains("init_from_finetune"));
        assert!(err(json!({"s": ["a b", "a_b"]}), &[]).contains("both labelled \"s=a_b\""));
        assert!(err(json!({"tau": [[1]]}), &[]).contains("not a number"));
        assert!(err(json!({"tau": [1]}), &["tau=3"]).contains("train.set sets tau"));
        assert!(validate(&grid(json!({"tau": [1, 2]})), &["anchors=3".into()], true).is_ok());
    }

    #[test]
    fn values_order_numerically_then_by_text() {
        let mut v = vec![json!(24.0), json!(3), json!(10.5)];
        v.sort_by(compare);
        assert_eq!(v, [json!(3), json!(10.5), json!(24.0)]);
        assert_eq!(
            compare(&json!("b"), &json!("a")),
            std::cmp::Ordering::Greater
        );
    }
}
