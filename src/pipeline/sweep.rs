//! Sweeps: a profile's `[sweep]` table, a grid over training-recipe keys
//! (`tau = [10.0, 24.0, 54.0]`, `anchors = [1, 2, 3]`) run for every seed of the profile. Each
//! grid point is the profile's `[train]` recipe with the point's values set last, so it is its
//! own run (its id hashes the resolved recipe), its own ensemble and its own row of the report's
//! sweep table.

use anyhow::{ensure, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;

/// `[sweep]`: recipe key → the values it takes. Keys are in name order (a TOML table has no
/// order a reader could rely on), values in the order written.
pub type SweepGrid = BTreeMap<String, Vec<Value>>;

/// One point of the grid: a value for every swept key, in key order.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub values: Vec<(String, Value)>,
}

impl Point {
    /// `tau=10.0,anchors=1`: the task keys' and ensemble names' part for this point (empty for
    /// the single point of a profile without a sweep). Path-safe: `/`, whitespace and quotes
    /// in a string value become `_`.
    pub fn label(&self) -> String {
        self.values
            .iter()
            .map(|(k, v)| format!("{k}={}", show(v)))
            .collect::<Vec<_>>()
            .join(",")
            .chars()
            .map(|c| match c {
                '/' | '\\' | '"' | '\'' => '_',
                c if c.is_whitespace() => '_',
                c => c,
            })
            .collect()
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

/// Checks a grid: every list non-empty, scalars only, no value twice, no key the `[train]` set
/// already fixes (which of the two would win is then a question nobody should need to ask).
pub fn validate(grid: &SweepGrid, train_set: &[String]) -> Result<()> {
    for (k, values) in grid {
        ensure!(!values.is_empty(), "sweep.{k}: at least one value");
        for v in values {
            ensure!(
                matches!(v, Value::Number(_) | Value::String(_) | Value::Bool(_)),
                "sweep.{k}: {v} is not a number, string or boolean"
            );
        }
        for (i, v) in values.iter().enumerate() {
            ensure!(!values[..i].contains(v), "sweep.{k}: {v} is listed twice");
        }
        for s in train_set {
            let (key, _) = crate::config::parse_override(s)?;
            ensure!(
                key != *k,
                "sweep.{k}: train.set sets {k} too ({s:?}); sweep it or set it, not both"
            );
        }
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
    }

    #[test]
    fn bad_grids_name_the_key() {
        let err = |v: Value, set: &[&str]| {
            let set: Vec<String> = set.iter().map(|s| s.to_string()).collect();
            validate(&grid(v), &set).unwrap_err().to_string()
        };
        assert!(err(json!({"tau": []}), &[]).contains("sweep.tau: at least one"));
        assert!(err(json!({"tau": [1, 1]}), &[]).contains("listed twice"));
        assert!(err(json!({"tau": [[1]]}), &[]).contains("not a number"));
        assert!(err(json!({"tau": [1]}), &["tau=3"]).contains("train.set sets tau"));
        assert!(validate(&grid(json!({"tau": [1, 2]})), &["anchors=3".into()]).is_ok());
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
