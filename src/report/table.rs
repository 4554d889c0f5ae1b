//! A report table and what fills its cells: [`Table`] (header, rows, rules; Markdown and
//! LaTeX), [`Cell`] (mean ± std over seeds), [`summarise`] (long rows aggregated with polars),
//! and the metric columns of a dataset. Shared by the main tables and the sweep's.

use crate::report::data::DatasetData;
use anyhow::{Context, Result};
use polars::prelude::*;
use std::collections::BTreeMap;

/// A mean over `n` values with its sample standard deviation (`None` for one value).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    pub mean: f64,
    pub std: Option<f64>,
    pub n: u32,
}

impl Cell {
    /// `61.00 ± 1.41`, or the mean alone for one value.
    pub fn show(&self) -> String {
        match self.std {
            Some(s) if self.n > 1 => format!("{:.2} ± {:.2}", self.mean, s),
            _ => format!("{:.2}", self.mean),
        }
    }
}

/// One aggregated group: its cells by metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub group: i64,
    pub cells: BTreeMap<String, Cell>,
}

/// Long rows `(group, metric, value)` → one [`Summary`] per group (ascending): group by
/// (group, metric), mean / std / count, pivoted wide on the metric.
pub fn summarise(rows: &[(i64, String, f64)]) -> Result<Vec<Summary>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let long = df!(
        "group" => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        "metric" => rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>(),
        "value" => rows.iter().map(|r| r.2).collect::<Vec<_>>(),
    )?;
    let mut metrics: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    metrics.sort_unstable();
    metrics.dedup();
    let on_columns = Arc::new(df!("metric" => metrics.clone())?);
    let wide = anyhow::Context::context(
        long.lazy()
            .group_by([col("group"), col("metric")])
            .agg([
                col("value").mean().alias("mean"),
                col("value").std(1).alias("std"),
                col("value").count().cast(DataType::UInt32).alias("n"),
            ])
            .pivot(
                cols(["metric"]),
                on_columns,
                cols(["group"]),
                cols(["mean", "std", "n"]),
                element().first(),
                false,
                "|".into(),
                polars::frame::PivotColumnNaming::Combine,
            )
            .sort(["group"], SortMultipleOptions::default())
            .collect(),
        "aggregating the metrics with polars",
    )?;
    let groups = wide.column("group")?.i64()?;
    let mut out = Vec::with_capacity(wide.height());
    for (i, g) in groups.iter().enumerate() {
        let mut cells = BTreeMap::new();
        for m in &metrics {
            let mean = wide.column(&format!("mean|{m}"))?.f64()?.get(i);
            let std = wide.column(&format!("std|{m}"))?.f64()?.get(i);
            let n = wide.column(&format!("n|{m}"))?.u32()?.get(i);
            if let (Some(mean), Some(n)) = (mean, n) {
                cells.insert(m.to_string(), Cell { mean, std, n });
            }
        }
        out.push(Summary {
            group: g.context("a null group")?,
            cells,
        });
    }
    Ok(out)
}

/// A table with a header, rows and horizontal rules after some rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub caption: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Row indices followed by a rule (LaTeX `\midrule`).
    pub rules_after: Vec<usize>,
}

fn latex_escape(s: &str) -> String {
    s.replace('\\', r"\textbackslash{}")
        .replace('&', r"\&")
        .replace('%', r"\%")
        .replace('_', r"\_")
        .replace('#', r"\#")
        .replace('±', r"$\pm$")
        .replace('Δ', r"$\Delta$")
        .replace('−', "$-$")
        .replace('—', "--")
}

impl Table {
    pub fn to_markdown(&self) -> String {
        let mut s = format!("| {} |\n", self.header.join(" | "));
        let align: Vec<&str> = (0..self.header.len())
            .map(|i| if i == 0 { ":---" } else { "---:" })
            .collect();
        s += &format!("|{}|\n", align.join("|"));
        for r in &self.rows {
            s += &format!("| {} |\n", r.join(" | "));
        }
        s
    }

    /// A booktabs `table` environment.
    pub fn to_latex(&self, label: &str) -> String {
        let cols = format!("l{}", "r".repeat(self.header.len().saturating_sub(1)));
        let mut s = String::from("\\begin{table}[t]\n\\centering\n");
        s += &format!(
            "\\caption{{{}}}\n\\label{{{label}}}\n",
            latex_escape(&self.caption)
        );
        s += &format!("\\begin{{tabular}}{{{cols}}}\n\\toprule\n");
        let head: Vec<String> = self.header.iter().map(|h| latex_escape(h)).collect();
        s += &format!("{} \\\\\n\\midrule\n", head.join(" & "));
        for (i, r) in self.rows.iter().enumerate() {
            let cells: Vec<String> = r.iter().map(|c| latex_escape(c)).collect();
            s += &format!("{} \\\\\n", cells.join(" & "));
            if self.rules_after.contains(&i) && i + 1 < self.rows.len() {
                s += "\\midrule\n";
            }
        }
        s += "\\bottomrule\n\\end{tabular}\n\\end{table}\n";
        s
    }
}

/// Column metrics of a dataset's main table: R@K for its K, NMI, MAP@R.
pub fn metric_columns(d: &DatasetData) -> Vec<(String, String)> {
    let mut cols: Vec<(String, String)> = d
        .recall_ks()
        .into_iter()
        .map(|k| (format!("recall@{k}"), format!("R@{k}")))
        .collect();
    for (m, label) in [("nmi", "NMI"), ("map@r", "MAP@R")] {
        if d.metrics.iter().any(|r| r.metric == m) {
            cols.push((m.to_string(), label.to_string()));
        }
    }
    cols
}
