//! The report's tables: per dataset, the metrics of every method (mean ± std over seeds, the
//! ensemble, the paper's numbers and the difference) and R@1 by selection protocol. The long
//! catalogue rows are aggregated with [`crate::report::table::summarise`] (polars) and rendered
//! as a [`Table`].

use crate::report::data::{DatasetData, Method, RunRow};
use crate::report::published::PublishedRows;
use crate::report::table::{metric_columns, summarise, Cell, Summary, Table};
use anyhow::Result;
use std::collections::BTreeMap;

/// The aggregated rows of each method present.
pub fn method_summaries(d: &DatasetData) -> Result<BTreeMap<Method, Summary>> {
    let order = [
        Method::Untrained,
        Method::Softmax,
        Method::GroupLoss,
        Method::Ensemble,
        Method::Released,
    ];
    let long: Vec<(i64, String, f64)> = d
        .metrics
        .iter()
        .map(|m| {
            let g = order.iter().position(|o| *o == m.method).unwrap_or(0) as i64;
            (g, m.metric.clone(), m.value)
        })
        .collect();
    Ok(summarise(&long)?
        .into_iter()
        .map(|s| (order[s.group as usize], s))
        .collect())
}

fn method_label(d: &DatasetData, m: Method) -> String {
    let n = |runs: &[RunRow]| runs.len();
    // With a sweep, the Group Loss rows are the selected point's.
    let point = d
        .sweep
        .as_ref()
        .map(|s| format!(", {}", s.label(s.selected)))
        .unwrap_or_default();
    // With `objective` swept, the softmax rows are the selected cross-entropy point's.
    let softmax_point = d
        .sweep
        .as_ref()
        .and_then(|s| Some(format!(", {}", s.label(s.selected_softmax?))));
    match m {
        Method::GroupLoss if n(&d.group_loss) > 1 => {
            format!("Group Loss{point} (mean ± std, {} seeds)", n(&d.group_loss))
        }
        Method::GroupLoss => format!("Group Loss{point}"),
        Method::Softmax if softmax_point.is_some() || n(&d.softmax) > 1 => {
            let point = softmax_point.unwrap_or_default();
            match n(&d.softmax) {
                1 => format!("softmax fine-tuning{point}"),
                k => format!("softmax fine-tuning{point} (mean ± std, {k} seeds)"),
            }
        }
        Method::Ensemble => format!("Group Loss ensemble{point} ({} seeds)", n(&d.group_loss)),
        _ => m.label().to_string(),
    }
}

/// The main table of dataset `d`: every method, then the paper's rows and the differences.
pub fn metrics_table(d: &DatasetData, published: Option<&PublishedRows>) -> Result<Table> {
    let cols = metric_columns(d);
    let summaries = method_summaries(d)?;
    let mut header = vec!["method".to_string()];
    header.extend(cols.iter().map(|c| c.1.clone()));
    let mut rows = Vec::new();
    for (m, s) in &summaries {
        let mut r = vec![method_label(d, *m)];
        r.extend(
            cols.iter()
                .map(|(k, _)| s.cells.get(k).map_or("—".into(), Cell::show)),
        );
        rows.push(r);
    }
    let mut rules_after = vec![rows.len().saturating_sub(1)];
    if let Some(p) = published {
        for (label, values) in [
            ("paper: Group Loss", &p.group_loss),
            ("paper: ensemble", &p.ensemble),
        ] {
            let mut r = vec![label.to_string()];
            r.extend(
                cols.iter()
                    .map(|(k, _)| values.get(k).map_or("—".into(), |v| format!("{v:.1}"))),
            );
            rows.push(r);
        }
        rules_after.push(rows.len() - 1);
        let released = summaries.contains_key(&Method::Released);
        for (label, m, values) in [
            ("Δ Group Loss − paper", Method::GroupLoss, &p.group_loss),
            ("Δ ensemble − paper", Method::Ensemble, &p.ensemble),
            ("Δ released model − paper", Method::Released, &p.group_loss),
        ] {
            // Beside a released model, only the differences of the rows the table has.
            if (released && !summaries.contains_key(&m)) || (!released && m == Method::Released) {
                continue;
            }
            let mut r = vec![label.to_string()];
            r.extend(cols.iter().map(|(k, _)| {
                let ours = summaries.get(&m).and_then(|s| s.cells.get(k));
                match (ours, values.get(k)) {
                    (Some(o), Some(v)) => format!("{:+.2}", o.mean - v),
                    _ => "—".into(),
                }
            }));
            rows.push(r);
        }
    }
    let swept = match &d.sweep {
        Some(s) => format!(
            "; Group Loss at the sweep point with {}",
            crate::report::sweep::selected_by(s)
        ),
        None => String::new(),
    };
    let released = match &d.released {
        Some(r) => format!(
            "; the authors' released model is the checkpoint `{}` evaluated as it is, without \
             training",
            r.weights
        ),
        None => String::new(),
    };
    Ok(Table {
        caption: format!(
            "{}: test-set retrieval and clustering (%), the selected epoch of each run{swept}\
             {released}",
            d.name
        ),
        header,
        rows,
        rules_after,
    })
}

/// Test R@1 of each run by selection protocol, with mean ± std per method.
pub fn selection_table(d: &DatasetData) -> Result<Table> {
    let protocols = [
        ("last", "last epoch"),
        ("val", "validation-selected"),
        ("test", "best on test (official protocol)"),
    ];
    let header: Vec<String> = ["run", "seed", "epochs", "selected epoch"]
        .into_iter()
        .map(String::from)
        .chain(protocols.iter().map(|p| format!("R@1 {}", p.1)))
        .collect();
    let mut rows = Vec::new();
    let mut rules_after = Vec::new();
    for (m, runs) in [
        (Method::Softmax, &d.softmax),
        (Method::GroupLoss, &d.group_loss),
    ] {
        if runs.is_empty() {
            continue;
        }
        let mut long = Vec::new();
        for r in runs.iter() {
            let vals = [r.r1_last, r.r1_val_selected, r.r1_best_on_test];
            let mut row = vec![
                format!("{} `{}`", m.label(), r.run_id),
                r.seed.to_string(),
                r.epochs_done.to_string(),
                r.selected_epoch.map_or("—".into(), |e| e.to_string()),
            ];
            for (p, v) in protocols.iter().zip(vals) {
                row.push(v.map_or("—".into(), |v| format!("{:.2}", 100.0 * v)));
                if let Some(v) = v {
                    long.push((0, p.0.to_string(), 100.0 * v));
                }
            }
            rows.push(row);
        }
        if runs.len() > 1 {
            let s = summarise(&long)?;
            let mut row = vec![
                format!("{} (mean ± std)", m.label()),
                String::new(),
                String::new(),
                String::new(),
            ];
            for p in &protocols {
                let cell = s.first().and_then(|s| s.cells.get(p.0));
                row.push(cell.map_or("—".into(), Cell::show));
            }
            rows.push(row);
        }
        rules_after.push(rows.len() - 1);
    }
    Ok(Table {
        caption: format!(
            "{}: test R@1 (%) by the epoch selection protocol: the last epoch, the epoch with the \
             best validation R@1 (our default), the epoch with the best test R@1 (the official \
             code's protocol, optimistic)",
            d.name
        ),
        header,
        rows,
        rules_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarise_gives_mean_sample_std_and_count_per_group() {
        let rows = vec![
            (1, "a".to_string(), 1.0),
            (1, "a".to_string(), 3.0),
            (1, "b".to_string(), 5.0),
            (0, "a".to_string(), 2.0),
        ];
        let s = summarise(&rows).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].group, 0);
        assert_eq!(
            s[0].cells["a"],
            Cell {
                mean: 2.0,
                std: None,
                n: 1
            }
        );
        assert!(!s[0].cells.contains_key("b"));
        let a = s[1].cells["a"];
        assert_eq!((a.mean, a.n), (2.0, 2));
        assert!((a.std.unwrap() - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(s[1].cells["b"].show(), "5.00");
        assert_eq!(a.show(), "2.00 ± 1.41");
    }

    #[test]
    fn the_paper_rows_and_differences_use_the_published_numbers() {
        use crate::report::fixtures::{metric as m, run};
        let d = DatasetData {
            name: "cub".into(),
            group_loss: vec![run("a", 0), run("b", 1)],
            metrics: vec![
                m(Method::GroupLoss, "a", "recall@1", 60.0),
                m(Method::GroupLoss, "b", "recall@1", 62.0),
                m(Method::GroupLoss, "a", "nmi", 66.0),
                m(Method::GroupLoss, "b", "nmi", 66.0),
                m(Method::Ensemble, "e", "recall@1", 64.0),
            ],
            ..Default::default()
        };
        let published = PublishedRows {
            group_loss: [("recall@1".to_string(), 65.5)].into(),
            ensemble: [("recall@1".to_string(), 66.9)].into(),
        };
        let t = metrics_table(&d, Some(&published)).unwrap();
        assert_eq!(t.header, ["method", "R@1", "NMI"]);
        let rows: Vec<String> = t.rows.iter().map(|r| r.join(" | ")).collect();
        assert_eq!(
            rows,
            [
                "Group Loss (mean ± std, 2 seeds) | 61.00 ± 1.41 | 66.00 ± 0.00",
                "Group Loss ensemble (2 seeds) | 64.00 | —",
                "paper: Group Loss | 65.5 | —",
                "paper: ensemble | 66.9 | —",
                "Δ Group Loss − paper | -4.50 | —",
                "Δ ensemble − paper | -2.90 | —",
            ]
        );
        assert_eq!(t.rules_after, vec![1, 3]);
    }

    #[test]
    fn a_released_model_sits_above_the_paper_rows_with_its_difference() {
        use crate::report::data::ReleasedRow;
        use crate::report::fixtures::metric as m;
        let d = DatasetData {
            name: "cub".into(),
            released: Some(ReleasedRow {
                run_id: "r".into(),
                weights: "groupl_trained_cub".into(),
            }),
            metrics: vec![
                m(Method::Released, "r", "recall@1", 64.2),
                m(Method::Released, "r", "nmi", 70.0),
                m(Method::GroupLoss, "g", "recall@1", 60.0),
            ],
            ..Default::default()
        };
        let published = PublishedRows {
            group_loss: [("recall@1".to_string(), 65.5)].into(),
            ensemble: [("recall@1".to_string(), 66.9)].into(),
        };
        let t = metrics_table(&d, Some(&published)).unwrap();
        let rows: Vec<String> = t.rows.iter().map(|r| r.join(" | ")).collect();
        assert_eq!(
            rows,
            [
                "Group Loss | 60.00 | —",
                "authors' released model | 64.20 | 70.00",
                "paper: Group Loss | 65.5 | —",
                "paper: ensemble | 66.9 | —",
                "Δ Group Loss − paper | -5.50 | —",
                "Δ released model − paper | -1.30 | —",
            ]
        );
        assert_eq!(t.rules_after, vec![1, 3]);
        assert!(
            t.caption
                .contains("the checkpoint `groupl_trained_cub` evaluated as it is"),
            "{}",
            t.caption
        );
    }

    #[test]
    fn tables_render_markdown_and_escaped_latex() {
        let t = Table {
            caption: "x_1 & 50%".into(),
            header: vec!["method".into(), "R@1".into()],
            rows: vec![
                vec!["a".into(), "1.00 ± 0.50".into()],
                vec!["Δ".into(), "—".into()],
            ],
            rules_after: vec![0],
        };
        assert_eq!(
            t.to_markdown(),
            "| method | R@1 |\n|:---|---:|\n| a | 1.00 ± 0.50 |\n| Δ | — |\n"
        );
        let l = t.to_latex("tab:x");
        assert!(l.contains("\\caption{x\\_1 \\& 50\\%}"));
        assert!(
            l.contains("a & 1.00 $\\pm$ 0.50 \\\\\n\\midrule\n$\\Delta$ & -- \\\\\n\\bottomrule")
        );
    }
}
