//! The report's figures, drawn with plotters' SVG backend: text stays text (no font files, the
//! viewer's sans-serif), and the same data give the same bytes. Recall@K curves against the
//! paper, training curves per seed, and the 2-D projection of test embeddings by class.

use crate::report::data::sweep::{SweepData, SweepPoint};
use crate::report::data::{DatasetData, EpochRow, Method};
use crate::report::published::PublishedRows;
use crate::report::table::Summary;
use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::BTreeMap;

pub(super) type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

pub(super) const FONT: &str = "sans-serif";

/// A method's colour (Okabe–Ito, readable by colour-blind readers).
fn method_colour(m: Method) -> RGBColor {
    match m {
        Method::Untrained => RGBColor(120, 120, 120),
        Method::Softmax => RGBColor(230, 159, 0),
        Method::GroupLoss => RGBColor(0, 114, 178),
        Method::Ensemble => RGBColor(0, 158, 115),
        Method::Released => RGBColor(213, 94, 0),
    }
}

/// Ten distinguishable class colours (matplotlib's tab10).
pub(super) const CLASS_COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

pub(super) fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a figure: {e:?}")
}

pub(super) fn svg(size: (u32, u32), draw: impl FnOnce(&Area) -> Result<()>) -> Result<String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw(&root)?;
        root.present().map_err(err)?;
    }
    Ok(buf)
}

pub(super) type Chart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The series' legend box at `position`.
pub(super) fn legend<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    position: SeriesLabelPosition,
    size: u32,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FONT, size))
        .draw()
        .map_err(err)
}

/// A chart whose x axis is the categories `labels` at 0, 1, …
fn categorical_chart<'a, 'b>(
    root: &'a Area<'b>,
    caption: &str,
    labels: &[String],
    y: std::ops::Range<f64>,
    (x_desc, y_desc): (&str, &str),
) -> Result<Chart<'a, 'b>> {
    let n = labels.len().max(1) as f64;
    let mut chart = ChartBuilder::on(root)
        .caption(caption, (FONT, 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.3f64..n - 0.7, y)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_labels(labels.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            match (i - x).abs() < 1e-6 && i >= 0.0 {
                true => labels.get(i as usize).cloned().unwrap_or_default(),
                false => String::new(),
            }
        })
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style((FONT, 13))
        .draw()
        .map_err(err)?;
    Ok(chart)
}

/// A line through `(x, mean, std)` points with a dot at each and ± std bars where std > 0.
fn mean_std_series(
    chart: &mut Chart,
    pts: &[(f64, f64, f64)],
    c: RGBColor,
    label: String,
) -> Result<()> {
    chart
        .draw_series(LineSeries::new(
            pts.iter().map(|p| (p.0, p.1)),
            c.stroke_width(2),
        ))
        .map_err(err)?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    chart
        .draw_series(pts.iter().map(|p| Circle::new((p.0, p.1), 3, c.filled())))
        .map_err(err)?;
    std_bars(chart, pts, c)
}

/// ± std bars at the `(x, mean, std)` points where std > 0.
fn std_bars(chart: &mut Chart, pts: &[(f64, f64, f64)], c: RGBColor) -> Result<()> {
    chart
        .draw_series(
            pts.iter()
                .filter(|p| p.2 > 0.0)
                .map(|p| ErrorBar::new_vertical(p.0, p.1 - p.2, p.1, p.1 + p.2, c, 8)),
        )
        .map_err(err)?;
    Ok(())
}

/// Test R@1 (mean ± std over seeds) against the values of swept key `k`, one line per
/// combination of the other swept keys; the selected point ringed.
pub fn sweep(dataset: &str, s: &SweepData, summaries: &[Summary], k: usize) -> Result<String> {
    use crate::pipeline::sweep::{compare, show};
    let mut xs: Vec<&serde_json::Value> = s.points.iter().map(|p| &p.values[k]).collect();
    xs.sort_by(|a, b| compare(a, b));
    xs.dedup();
    fn others(p: &SweepPoint, k: usize) -> Vec<&serde_json::Value> {
        let mut v: Vec<&serde_json::Value> = p.values.iter().collect();
        v.remove(k);
        v
    }
    // One line per combination of the other keys: (their values, its (x, mean, std) points).
    type Line<'a> = (Vec<&'a serde_json::Value>, Vec<(f64, f64, f64)>);
    let mut lines: Vec<Line> = Vec::new();
    let mut ring = None;
    let (mut lo, mut hi) = (100.0f64, 0.0f64);
    for (i, p) in s.points.iter().enumerate() {
        let Some(c) = summaries
            .iter()
            .find(|x| x.group == i as i64)
            .and_then(|x| x.cells.get("recall@1"))
        else {
            continue;
        };
        let x = xs.iter().position(|v| *v == &p.values[k]).unwrap_or(0) as f64;
        let pt = (x, c.mean, c.std.unwrap_or(0.0));
        (lo, hi) = (lo.min(pt.1 - pt.2), hi.max(pt.1 + pt.2));
        if i == s.selected {
            ring = Some((pt.0, pt.1));
        }
        match lines.iter_mut().find(|l| l.0 == others(p, k)) {
            Some(l) => l.1.push(pt),
            None => lines.push((others(p, k), vec![pt])),
        }
    }
    // Zoomed to the points (differences between settings are often a point or two), with
    // headroom above them for the legend.
    if lo > hi {
        (lo, hi) = (0.0, 100.0);
    }
    let span = (hi - lo).max(2.0);
    let y = (lo - 0.15 * span).floor().max(0.0)..(hi + 0.6 * span).ceil().min(100.0);
    let labels: Vec<String> = xs.iter().map(|v| show(v)).collect();
    let key = &s.keys[k];
    let rest: Vec<&String> = s
        .keys
        .iter()
        .enumerate()
        .filter(|e| e.0 != k)
        .map(|e| e.1)
        .collect();
    svg((640, 420), |root| {
        let caption = format!("{dataset}: test R@1 against {key}");
        let mut chart = categorical_chart(root, &caption, &labels, y, (key, "R@1 (%)"))?;
        for (j, (vals, pts)) in lines.iter().enumerate() {
            let label = match vals.is_empty() {
                true => "Group Loss".to_string(),
                false => rest
                    .iter()
                    .zip(vals)
                    .map(|(k, v)| format!("{k}={}", show(v)))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            let c = CLASS_COLOURS[j % CLASS_COLOURS.len()];
            mean_std_series(&mut chart, pts, c, label)?;
        }
        if let Some(p) = ring {
            chart
                .draw_series([Circle::new(p, 8, BLACK.stroke_width(2))])
                .map_err(err)?
                .label(match s.on_validation {
                    true => "selected (validation)",
                    false => "selected (test: no validation split)",
                })
                .legend(|(x, y)| Circle::new((x + 9, y), 5, BLACK.stroke_width(2)));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight, 13)
    })
}

/// Recall@K (%) against K for every method (mean with ± std bars over seeds) and the paper's
/// published points.
pub fn recall_curves(
    d: &DatasetData,
    ks: &[u32],
    summaries: &BTreeMap<Method, Summary>,
    published: Option<&PublishedRows>,
) -> Result<String> {
    let mut lo = 100.0f64;
    // per method: (x, mean, std) at each K
    type Curve = Vec<(f64, f64, f64)>;
    let mut series: Vec<(Method, Curve)> = Vec::new();
    for (m, s) in summaries {
        let pts: Vec<(f64, f64, f64)> = ks
            .iter()
            .enumerate()
            .filter_map(|(i, k)| {
                let c = s.cells.get(&format!("recall@{k}"))?;
                Some((i as f64, c.mean, c.std.unwrap_or(0.0)))
            })
            .collect();
        lo = pts.iter().fold(lo, |a, p| a.min(p.1 - p.2));
        series.push((*m, pts));
    }
    let mut paper: Vec<(&str, Vec<(f64, f64)>)> = Vec::new();
    if let Some(p) = published {
        for (label, values) in [
            ("paper: Group Loss", &p.group_loss),
            ("paper: ensemble", &p.ensemble),
        ] {
            let pts: Vec<(f64, f64)> = ks
                .iter()
                .enumerate()
                .filter_map(|(i, k)| Some((i as f64, *values.get(&format!("recall@{k}"))?)))
                .collect();
            lo = pts.iter().fold(lo, |a, p| a.min(p.1));
            paper.push((label, pts));
        }
    }
    let y0 = ((lo - 5.0) / 5.0).floor().max(0.0) * 5.0;
    let labels: Vec<String> = ks.iter().map(|k| k.to_string()).collect();
    svg((640, 420), |root| {
        let caption = format!("{}: Recall@K on the test set", d.name);
        let axes = ("K", "Recall@K (%)");
        let mut chart = categorical_chart(root, &caption, &labels, y0..100.0, axes)?;
        for (m, pts) in &series {
            mean_std_series(&mut chart, pts, method_colour(*m), m.label().to_string())?;
        }
        for (i, (label, pts)) in paper.iter().enumerate() {
            let c = if i == 0 {
                method_colour(Method::GroupLoss)
            } else {
                method_colour(Method::Ensemble)
            };
            if pts.is_empty() {
                continue;
            }
            chart
                .draw_series(DashedLineSeries::new(pts.clone(), 6, 4, c.stroke_width(1)))
                .map_err(err)?;
            chart
                .draw_series(pts.iter().map(|p| Cross::new(*p, 6, c.stroke_width(2))))
                .map_err(err)?
                .label(*label)
                .legend(move |(x, y)| Cross::new((x + 9, y), 5, c.stroke_width(2)));
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight, 13)
    })
}

/// Per-seed colours of a method's runs: shades of its colour.
fn shade(m: Method, i: usize) -> RGBColor {
    let RGBColor(r, g, b) = method_colour(m);
    let t = [0.0, 0.35, -0.35, 0.6, -0.55][i % 5];
    let f = |c: u8| -> u8 {
        let c = c as f64;
        let v = if t >= 0.0 {
            c + (255.0 - c) * t
        } else {
            c * (1.0 + t)
        };
        v.round().clamp(0.0, 255.0) as u8
    };
    RGBColor(f(r), f(g), f(b))
}

/// Training loss and validation R@1 per epoch, one line per run (Group Loss solid, the softmax
/// baseline dashed). Test R@1 stands in where a run had no validation split.
pub fn training_curves(d: &DatasetData) -> Result<String> {
    let mut runs: Vec<(Method, usize, &str, u64)> = Vec::new();
    for (m, rs) in [
        (Method::GroupLoss, &d.group_loss),
        (Method::Softmax, &d.softmax),
    ] {
        for (i, r) in rs.iter().enumerate() {
            runs.push((m, i, r.run_id.as_str(), r.seed));
        }
    }
    let curve = |run: &str, f: &dyn Fn(&EpochRow) -> Option<f64>| -> Vec<(f64, f64)> {
        d.epochs
            .iter()
            .filter(|e| e.run_id == run)
            .filter_map(|e| Some((e.epoch as f64, f(e)?)))
            .collect()
    };
    let use_val = d.epochs.iter().any(|e| e.val_r1.is_some());
    let r1 = move |e: &EpochRow| if use_val { e.val_r1 } else { e.test_r1 }.map(|v| 100.0 * v);
    let loss = |e: &EpochRow| Some(e.loss);
    let max_epoch = d.epochs.iter().map(|e| e.epoch).max().unwrap_or(1).max(1) as f64;
    type Panel<'a> = (
        &'a str,
        String,
        &'a dyn Fn(&EpochRow) -> Option<f64>,
        SeriesLabelPosition,
    );
    let panels: [Panel; 2] = [
        (
            "training loss",
            "loss".to_string(),
            &loss,
            SeriesLabelPosition::UpperRight,
        ),
        (
            if use_val {
                "validation R@1"
            } else {
                "test R@1 (no validation split)"
            },
            "R@1 (%)".to_string(),
            &r1,
            SeriesLabelPosition::LowerRight,
        ),
    ];
    svg((960, 400), |root| {
        let halves = root.split_evenly((1, 2));
        for ((title, ydesc, f, at), area) in panels.iter().zip(halves.iter()) {
            let all: Vec<f64> = runs
                .iter()
                .flat_map(|r| curve(r.2, *f))
                .map(|p| p.1)
                .collect();
            let (mut lo, mut hi) = all
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                    (a.min(*v), b.max(*v))
                });
            if !lo.is_finite() {
                (lo, hi) = (0.0, 1.0);
            }
            let pad = ((hi - lo) * 0.08).max(1e-3);
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{}: {title}", d.name), (FONT, 18))
                .margin(12)
                .x_label_area_size(38)
                .y_label_area_size(52)
                .build_cartesian_2d(0.5f64..max_epoch + 0.5, lo - pad..hi + pad)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(ydesc.as_str())
                .x_labels((max_epoch as usize).min(12))
                .x_label_formatter(&|x| format!("{x:.0}"))
                .label_style((FONT, 12))
                .draw()
                .map_err(err)?;
            for &(m, i, run, seed) in &runs {
                let pts = curve(run, *f);
                let c = shade(m, i);
                let label = format!("{} s{seed}", m.label());
                let legend = move |(x, y): (i32, i32)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                };
                match m {
                    Method::Softmax => chart
                        .draw_series(DashedLineSeries::new(pts.clone(), 6, 4, c.stroke_width(2)))
                        .map_err(err)?
                        .label(label)
                        .legend(legend),
                    _ => chart
                        .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))
                        .map_err(err)?
                        .label(label)
                        .legend(legend),
                };
                chart
                    .draw_series(pts.iter().map(|p| Circle::new(*p, 2, c.filled())))
                    .map_err(err)?;
            }
            legend(&mut chart, at.clone(), 12)?;
        }
        Ok(())
    })
}

/// One panel of the projection: its title, 2-D points and each point's class index.
pub struct ProjectionPanel {
    pub title: String,
    pub points: Vec<[f64; 2]>,
    pub classes: Vec<usize>,
}

/// Side-by-side 2-D projections (t-SNE) of the same test images, coloured by class.
pub fn projection(dataset: &str, panels: &[ProjectionPanel]) -> Result<String> {
    let w = 420 * panels.len().max(1) as u32;
    svg((w, 440), |root| {
        let areas = root.split_evenly((1, panels.len().max(1)));
        for (p, area) in panels.iter().zip(areas.iter()) {
            let (mut x0, mut x1, mut y0, mut y1) = (
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::INFINITY,
                f64::NEG_INFINITY,
            );
            for q in &p.points {
                (x0, x1, y0, y1) = (x0.min(q[0]), x1.max(q[0]), y0.min(q[1]), y1.max(q[1]));
            }
            let px = ((x1 - x0) * 0.05).max(1e-6);
            let py = ((y1 - y0) * 0.05).max(1e-6);
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{dataset}: {}", p.title), (FONT, 16))
                .margin(10)
                .build_cartesian_2d(x0 - px..x1 + px, y0 - py..y1 + py)
                .map_err(err)?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_labels(0)
                .y_labels(0)
                .draw()
                .map_err(err)?;
            chart
                .draw_series(p.points.iter().zip(&p.classes).map(|(q, c)| {
                    Circle::new(
                        (q[0], q[1]),
                        3,
                        CLASS_COLOURS[c % CLASS_COLOURS.len()].filled(),
                    )
                }))
                .map_err(err)?;
        }
        Ok(())
    })
}

/// A benchmark's test MAP@R per objective (mean with ± std bars over seeds), in leaderboard
/// order, with the pretrained floor as a dashed line.
pub fn leaderboard(
    dataset: &str,
    rows: &[(String, f64, f64)],
    floor: Option<f64>,
) -> Result<String> {
    let labels: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    let lo = rows
        .iter()
        .map(|r| r.1 - r.2)
        .chain(floor)
        .fold(100.0f64, f64::min);
    let hi = rows.iter().map(|r| r.1 + r.2).fold(0.0f64, f64::max);
    let span = (hi - lo).max(2.0);
    let y = (lo - 0.1 * span).floor().max(0.0)..(hi + 0.25 * span).ceil().min(100.0);
    svg((120 + 110 * rows.len().max(1) as u32, 440), |root| {
        let caption = format!("{dataset}: test MAP@R per objective (tuned on validation)");
        let mut chart = categorical_chart(root, &caption, &labels, y, ("objective", "MAP@R (%)"))?;
        let c = CLASS_COLOURS[0];
        let pts: Vec<(f64, f64, f64)> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (i as f64, r.1, r.2))
            .collect();
        chart
            .draw_series(pts.iter().map(|p| Circle::new((p.0, p.1), 4, c.filled())))
            .map_err(err)?
            .label("mean ± std over seeds")
            .legend(move |(x, y)| Circle::new((x + 9, y), 4, c.filled()));
        std_bars(&mut chart, &pts, c)?;
        if let Some(f) = floor {
            let n = rows.len() as f64;
            chart
                .draw_series(DashedLineSeries::new(
                    [(-0.3, f), (n - 0.7, f)],
                    6,
                    4,
                    BLACK.stroke_width(1),
                ))
                .map_err(err)?
                .label("pretrained, untrained")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight, 13)
    })
}
