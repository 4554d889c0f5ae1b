//! A benchmark tuned in two stages (`tuning_seeds`, src/pipeline/tuning.rs), end to end on the
//! tiny set: `gl run` trains every point on the tuning seed, plans each objective's point with
//! the best validation MAP@R on it, trains that point on the reported seeds — in one command —
//! and the leaderboard reports those seeds only; the dry run of a fresh project says which
//! choices wait and plans no report. Like the benchmark profiles, the runs evaluate only the
//! validation classes after each epoch (`epoch_eval = "val"`).

use crate::common::tiny_pipeline::{gl, project_with, ran, sql_rows};
use std::path::Path;

/// Two objectives, two learning rates each; seed 0 tunes, seeds 1 and 2 are reported.
const TWO_STAGE: &str = r#"
description = "tests: a benchmark tuned on seed 0, reported on seeds 1 and 2"
datasets = ["tiny_synth"]
seeds = [1, 2]
tuning_seeds = [0]
device = "cpu"
ensemble = false

[train]
recipe = "tiny"
set = ["embedding_dim=16", "epoch_eval=\"val\""]

[evaluate]
kmeans_restarts = 1
validation = true

[benchmark.group_loss]
lr = [1e-3, 3e-3]

[benchmark.contrastive]
lr = [1e-3, 3e-3]
"#;

fn project() -> tempfile::TempDir {
    let dir = project_with("");
    std::fs::write(dir.path().join("pipeline/profiles/two.toml"), TWO_STAGE).unwrap();
    dir
}

/// Per objective, from the catalogue: the lr with the best validation MAP@R among its seed-0
/// runs, the lrs of its runs of seeds 1 and 2, and their mean test MAP@R (%).
fn chosen(p: &Path) -> Vec<Vec<String>> {
    let lr = "json_extract_string(r.config, '$.lr')";
    sql_rows(
        p,
        &format!(
            "with val as (select r.objective o, {lr} lr, m.value v from runs r \
             join metrics m on m.subject = r.run_id where r.seed = 0 and m.split = 'val' \
             and m.metric = 'map@r' and m.model = 'selected'), \
             best as (select o, arg_max(lr, v) lr from val group by o), \
             rep as (select r.objective o, string_agg(distinct {lr}, ';') lrs, \
             count(*) n, avg(m.value) * 100 t from runs r join metrics m \
             on m.subject = r.run_id where r.seed in (1, 2) and m.split = 'test' \
             and m.metric = 'map@r' and m.model = 'selected' group by all) \
             select best.o, best.lr, rep.lrs, rep.n, format('{{:.2f}}', rep.t) \
             from best join rep on rep.o = best.o order by 1"
        ),
    )
}

#[test]
fn the_chosen_point_trains_on_the_reported_seeds_in_one_run_and_only_they_are_reported() {
    let dir = project();
    let p = dir.path();
    let (code, out, err) = gl(p, &["run", "--profile", "two", "--dry-run"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !out.contains("\nreport "),
        "no report while choices wait:\n{out}"
    );
    for group in ["group_loss", "contrastive"] {
        assert!(
            out.contains(&format!(
                "tiny_synth: {group}: 0 of 2 tuning runs evaluated"
            )),
            "{out}"
        );
    }

    let (code, out, err) = gl(p, &["status", "--profile", "two"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("waiting: tiny_synth: contrastive: 0 of 2 tuning runs evaluated"),
        "{out}"
    );

    // `--force` applies to the first plan: the second only adds the chosen points' seeds.
    let (code, out, err) = gl(p, &["run", "--profile", "two", "--force"]);
    assert_eq!(code, 0, "{out}{err}");
    let trained = ran(&out).iter().filter(|s| *s == "train").count();
    assert_eq!(
        trained,
        4 + 4,
        "4 tuning runs, then 2 points × 2 seeds:\n{out}"
    );
    assert!(ran(&out).iter().any(|s| s == "report"), "{out}");
    let rows = chosen(p);
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in &rows {
        assert_eq!(
            r[1], r[2],
            "{}: seeds 1, 2 run the lr seed 0 chose: {rows:?}",
            r[0]
        );
        assert_eq!(r[3], "2", "{rows:?}");
    }

    let table =
        std::fs::read_to_string(p.join("reports/two/tables/tiny_synth-leaderboard.md")).unwrap();
    let label = |o: &str| match o {
        "group_loss" => "Group Loss",
        _ => "contrastive",
    };
    for r in &rows {
        let row = table
            .lines()
            .find(|l| l.contains(&format!("| {} |", label(&r[0]))))
            .unwrap_or_else(|| panic!("no row for {}: {table}", r[0]));
        assert!(
            row.contains(&format!("| {} ±", r[4])),
            "{}: the MAP@R of seeds 1, 2 ({}): {table}",
            r[0],
            r[4]
        );
    }
    let readme = std::fs::read_to_string(p.join("reports/two/README.md")).unwrap();
    assert!(
        !readme.contains("NaN"),
        "no per-epoch test numbers must not show as NaN:\n{readme}"
    );
    assert!(
        readme.contains("seed(s) 0 (one run per point and seed), the selected point then trained on seeds 1, 2, which took no part in selecting it"),
        "{readme}"
    );

    let (code, out, err) = gl(p, &["run", "--profile", "two"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        ran(&out).is_empty(),
        "a second run finds every task fresh:\n{out}"
    );
}

#[test]
fn a_report_without_the_chosen_points_seeds_is_refused() {
    let dir = project();
    let p = dir.path();
    // Only the tuning runs (their keys end in /s0), so no choice has its seeds yet.
    let (code, out, err) = gl(p, &["run", "--profile", "two", "--match", "/s0"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !out.lines()
            .any(|l| l.starts_with("train") && !l.contains("/s0 ")),
        "only seed 0 trained:\n{out}"
    );
    let (code, out, err) = gl(p, &["report", "--profile", "two"]);
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("are not fresh: train:"), "{err}");
    // Made anyway, the leaderboard would rank seed-0 numbers of points chosen on seed 0.
    let (code, out, err) = gl(p, &["report", "--profile", "two", "--allow-stale"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("has no run of seeds [1, 2]"),
        "the refusal names what is missing: {err}"
    );
}
