//! A benchmark's training curves: validation MAP@R per epoch, one line per run, one panel per
//! objective (per objective and start in a tracked benchmark) — how each grid point's runs
//! moved, where they peaked and where early stopping (`patience`) cut them. Read from the
//! catalogue's `epochs` (`val_map_at_r`, schema version 10); a run whose epochs were trained
//! before MAP@R was measured per epoch has no line, and a report without any such run says so.

use super::data::sweep::SweepData;
use super::figures::{err, legend, svg, CLASS_COLOURS, FONT};
use super::File;
use crate::catalog::Catalog;
use crate::train::objective::Objective;
use anyhow::{Context, Result};
use duckdb::params;
use plotters::prelude::*;
use std::collections::BTreeSet;

/// A run the curves show.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub run_id: String,
    pub seed: u64,
    /// Its grid point: the values of the keys tuned for its objective (`lr=0.0001`).
    pub point: String,
    /// The point is its objective's selected one (chosen on validation).
    pub selected: bool,
}

/// One run's curve.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// Its panel: the objective as tables name it, with the run's `start` where it has one.
    pub panel: String,
    pub point: String,
    pub seed: u64,
    pub selected: bool,
    /// (epoch, validation MAP@R in %) of the epochs that measured it, ascending.
    pub points: Vec<(f64, f64)>,
}

/// Every run of the benchmark `s`, by grid point, each objective's selected point marked.
pub fn benchmark_runs(s: &SweepData) -> Vec<Shown> {
    let selected: BTreeSet<usize> = s.by_objective.values().copied().collect();
    let mut out = Vec::new();
    for (i, p) in s.points.iter().enumerate() {
        // The panel names the objective; keys another objective tunes are null here.
        let point = s
            .keys
            .iter()
            .zip(&p.values)
            .filter(|(k, v)| !v.is_null() && k.as_str() != "objective")
            .map(|(k, v)| format!("{k}={}", crate::pipeline::sweep::show(v)))
            .collect::<Vec<_>>()
            .join(", ");
        for r in p.all_runs() {
            out.push(Shown {
                run_id: r.run_id.clone(),
                seed: r.seed,
                point: point.clone(),
                selected: selected.contains(&i),
            });
        }
    }
    out
}

/// The curves of `runs` from the catalogue, leaving out runs without a per-epoch validation
/// MAP@R (all of them in a catalogue older than schema version 10, opened read-only).
pub fn load(cat: &Catalog, runs: &[Shown]) -> Result<Vec<Curve>> {
    if cat.schema_version() < 10 {
        return Ok(Vec::new());
    }
    let conn = cat.connection();
    let mut run_stmt =
        conn.prepare("SELECT objective, CAST(config AS VARCHAR) FROM runs WHERE run_id = ?")?;
    let mut epoch_stmt = conn.prepare(
        "SELECT epoch, val_map_at_r FROM epochs \
         WHERE run_id = ? AND val_map_at_r IS NOT NULL ORDER BY epoch",
    )?;
    let mut out = Vec::new();
    for r in runs {
        let mut rows = run_stmt.query_map(params![r.run_id], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?;
        let Some((objective, config)) = rows.next().transpose()? else {
            continue;
        };
        let config: serde_json::Value = serde_json::from_str(&config)
            .with_context(|| format!("runs {}: config is not JSON", r.run_id))?;
        let objective = Objective::parse(&objective).map_or(objective, |o| o.label().into());
        let panel = match config.get("start").and_then(|s| s.as_str()) {
            Some(start) => format!("{objective} (start: {start})"),
            None => objective,
        };
        let points = epoch_stmt
            .query_map(params![r.run_id], |row| {
                Ok((row.get::<_, i64>(0)? as f64, 100.0 * row.get::<_, f64>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        if points.is_empty() {
            continue;
        }
        out.push(Curve {
            panel,
            point: r.point.clone(),
            seed: r.seed,
            selected: r.selected,
            points,
        });
    }
    Ok(out)
}

/// The figure: a grid of panels (three across), one per [`Curve::panel`] in `curves` order, each
/// with its runs' validation MAP@R against the epoch on a common epoch axis. One colour per
/// grid point (its seeds share it), the selected point's runs drawn bold. `None` without curves.
pub fn figure(dataset: &str, curves: &[Curve]) -> Result<Option<String>> {
    let mut panels: Vec<(&str, Vec<&Curve>)> = Vec::new();
    for c in curves {
        match panels.iter_mut().find(|p| p.0 == c.panel) {
            Some(p) => p.1.push(c),
            None => panels.push((&c.panel, vec![c])),
        }
    }
    if panels.is_empty() {
        return Ok(None);
    }
    let max_epoch = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let cols = panels.len().min(3);
    let rows = panels.len().div_ceil(cols);
    let size = (400 * cols as u32, 300 * rows as u32);
    svg(size, |root| {
        let areas = root.split_evenly((rows, cols));
        for ((panel, runs), area) in panels.iter().zip(areas.iter()) {
            let (lo, hi) = runs
                .iter()
                .flat_map(|c| c.points.iter().map(|p| p.1))
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                    (a.min(v), b.max(v))
                });
            let pad = ((hi - lo) * 0.1).max(0.5);
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{dataset}: {panel}"), (FONT, 15))
                .margin(10)
                .x_label_area_size(34)
                .y_label_area_size(48)
                .build_cartesian_2d(0.5f64..max_epoch + 0.5, lo - pad..hi + pad)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc("validation MAP@R (%)")
                .x_labels((max_epoch as usize).min(10))
                .x_label_formatter(&|x| format!("{x:.0}"))
                .label_style((FONT, 11))
                .draw()
                .map_err(err)?;
            let mut points: Vec<&str> = Vec::new();
            for c in runs {
                let first = !points.contains(&c.point.as_str());
                if first {
                    points.push(&c.point);
                }
                let i = points.iter().position(|p| *p == c.point).unwrap_or(0);
                let colour = CLASS_COLOURS[i % CLASS_COLOURS.len()];
                let style = match c.selected {
                    true => colour.stroke_width(3),
                    false => colour.mix(0.6).stroke_width(1),
                };
                let series = chart
                    .draw_series(LineSeries::new(c.points.clone(), style))
                    .map_err(err)?;
                if first {
                    let label = match (c.point.is_empty(), c.selected) {
                        (true, true) => "selected".to_string(),
                        (true, false) => "runs".to_string(),
                        (false, true) => format!("{} (selected)", c.point),
                        (false, false) => c.point.clone(),
                    };
                    series
                        .label(label)
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
                }
                chart
                    .draw_series(c.points.iter().map(|p| Circle::new(*p, 2, colour.filled())))
                    .map_err(err)?;
            }
            legend(&mut chart, SeriesLabelPosition::LowerRight, 10)?;
        }
        Ok(())
    })
    .map(Some)
}

/// The "Training curves" part of a benchmark's report for dataset `dataset`: its heading and
/// text, and the figure as a report file (`figures/<dataset>-curves.svg`) when there is one.
pub(super) fn benchmark_section(
    cat: &Catalog,
    dataset: &str,
    s: &SweepData,
) -> Result<(String, Option<File>)> {
    let curves = load(cat, &benchmark_runs(s))?;
    let mut md = String::from("### Training curves\n\n");
    let Some(svg) = figure(dataset, &curves)? else {
        md += "No run of this benchmark recorded its validation MAP@R per epoch (they were \
               trained before it was measured).\n\n";
        return Ok((md, None));
    };
    md += "Validation MAP@R after each epoch, one line per run (a grid point's seeds share a \
           colour; each objective's selected point bold). A line that ends early is a run \
           stopped by its `patience`.\n\n";
    let file = File {
        rel: format!("figures/{dataset}-curves.svg"),
        bytes: svg.into_bytes(),
    };
    Ok((md, Some(file)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> (tempfile::TempDir, Catalog) {
        let d = tempfile::tempdir().unwrap();
        let cat = Catalog::open(d.path().join("c.duckdb")).unwrap();
        (d, cat)
    }

    /// A run of `objective` with validation MAP@R (fractions; `None`: not measured) per epoch.
    fn add_run(
        cat: &Catalog,
        id: &str,
        objective: &str,
        start: Option<&str>,
        maps: &[Option<f64>],
    ) {
        let config = match start {
            Some(s) => format!("{{\"start\": \"{s}\"}}"),
            None => "{}".to_string(),
        };
        let conn = cat.connection();
        conn.execute(
            "INSERT INTO runs (run_id, dataset, profile, seed, backbone, objective, selection, \
             device, run_dir, status, epochs_planned, epochs_done, config, created_at, \
             indexed_at) VALUES (?, 'demo', 'b', 0, 'tiny_cnn', ?, 'val', 'cpu', 'runs/x', \
             'completed', 6, ?, ?::JSON, now(), now())",
            params![id, objective, maps.len() as i64, config],
        )
        .unwrap();
        for (i, m) in maps.iter().enumerate() {
            conn.execute(
                "INSERT INTO epochs (run_id, epoch, lr, loss, loss_group, loss_ce, batches, \
                 images, train_seconds, eval_seconds, images_per_second, val_map_at_r) \
                 VALUES (?, ?, 0.1, 1.0, 0.5, 0.5, 1, 4, 1.0, 1.0, 4.0, ?)",
                params![id, i as i64 + 1, m],
            )
            .unwrap();
        }
    }

    fn shown(id: &str, seed: u64, point: &str, selected: bool) -> Shown {
        Shown {
            run_id: id.into(),
            seed,
            point: point.into(),
            selected,
        }
    }

    #[test]
    fn curves_are_read_per_run_and_runs_without_map_at_r_are_left_out() {
        let (_d, cat) = catalog();
        add_run(
            &cat,
            "g0",
            "group_loss",
            None,
            &[Some(0.2), Some(0.25), Some(0.24)],
        );
        add_run(
            &cat,
            "g1",
            "group_loss",
            None,
            &[Some(0.21), None, Some(0.3)],
        );
        add_run(&cat, "old", "group_loss", None, &[None, None]);
        add_run(
            &cat,
            "t0",
            "triplet_batch_hard",
            Some("finetuned"),
            &[Some(0.1)],
        );
        let runs = [
            shown("g0", 0, "lr=0.001", true),
            shown("g1", 1, "lr=0.001", true),
            shown("old", 0, "lr=0.01", false),
            shown("t0", 0, "margin=0.1", false),
            shown("absent", 0, "", false),
        ];
        let curves = load(&cat, &runs).unwrap();
        let ids: Vec<(&str, u64, usize)> = curves
            .iter()
            .map(|c| (c.panel.as_str(), c.seed, c.points.len()))
            .collect();
        assert_eq!(
            ids,
            [
                ("Group Loss", 0, 3),
                ("Group Loss", 1, 2),
                ("triplet, batch-hard (start: finetuned)", 0, 1)
            ]
        );
        assert_eq!(curves[1].points, [(1.0, 21.0), (3.0, 30.0)]);

        let svg = figure("demo", &curves).unwrap().unwrap();
        assert!(svg.contains("demo: Group Loss"), "one panel per objective");
        assert!(svg.contains("demo: triplet, batch-hard (start: finetuned)"));
        assert!(svg.contains("lr=0.001 (selected)") && svg.contains("margin=0.1"));
        assert!(!svg.contains("lr=0.01<"), "a run without MAP@R has no line");
        // The same curves give the same bytes.
        assert_eq!(figure("demo", &curves).unwrap().unwrap(), svg);
    }

    #[test]
    fn nothing_to_draw_is_said_not_drawn() {
        let (_d, cat) = catalog();
        add_run(&cat, "old", "group_loss", None, &[None]);
        let curves = load(&cat, &[shown("old", 0, "", true)]).unwrap();
        assert!(curves.is_empty());
        assert_eq!(figure("demo", &curves).unwrap(), None);
    }
}
