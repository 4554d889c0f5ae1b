//! The stage runner end to end (`gl run`, `gl status`) on a tiny profile: a synthetic dataset
//! (`gl synth`), a tiny CNN for 1 epoch, two seeds, a softmax baseline, the untrained baseline
//! and an ensemble — every stage — then what the DAG promises: a second run does nothing, a
//! changed key makes only the stages that depend on it stale, `gl run <stage> --force` reruns
//! exactly that stage, a failing stage leaves what follows it stale and a fixed run finishes it,
//! a second writer is refused, and configuration errors name the key.
#![cfg(feature = "catalog")] // `gl run`, `gl sql` and the catalogue

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::tiny_pipeline;

use crate::common::gl_cli;
use tiny_pipeline::{files, gl, project, ran, status, TINY_PROFILE, TINY_RECIPE};

#[test]
fn the_dag_runs_every_stage_and_reruns_only_what_changed() {
    let dir = project();
    let p = dir.path();
    let (code, out, err) = gl(p, &["run", "--profile", "tiny"]);
    assert_eq!(code, 0, "{out}{err}");
    let stages: std::collections::BTreeSet<String> = ran(&out).into_iter().collect();
    for s in [
        "fetch", "prepare", "finetune", "train", "embed", "evaluate", "ensemble", "report",
    ] {
        assert!(stages.contains(s), "{s} did not run:\n{out}");
    }
    let st = status(p, &[]);
    assert!(st.values().all(|s| s == "fresh"), "{st:?}");
    assert_eq!(st.len(), 15, "{st:?}");
    check_report(p);

    // Nothing stale: nothing runs.
    let (code, out, err) = gl(p, &["run", "--profile", "tiny"]);
    assert_eq!(code, 0, "{err}");
    assert!(ran(&out).is_empty(), "{out}");

    // One evaluation key: evaluate and what follows it are stale, nothing else.
    let st = status(p, &["--set", "evaluate.kmeans_restarts=2"]);
    for (task, s) in &st {
        let expected = if ["evaluate:", "ensemble:", "report:"]
            .iter()
            .any(|s| task.starts_with(s))
        {
            "stale"
        } else {
            "fresh"
        };
        assert_eq!(s, expected, "{task}: {st:?}");
    }

    // `gl run <stage> --force` reruns exactly that stage.
    let (code, out, err) = gl(p, &["run", "embed", "--profile", "tiny", "--force"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(ran(&out), vec!["embed"; 4], "{out}");

    // Same weights and images give the same Parquet bytes, so what follows embed keeps its
    // fingerprint and stays fresh; the same holds one stage further for evaluate's values.
    let st = status(p, &[]);
    assert!(st.values().all(|s| s == "fresh"), "{st:?}");

    let (code, out, err) = gl(p, &["run", "evaluate", "--profile", "tiny", "--force"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(ran(&out), vec!["evaluate"; 4], "{out}");
    let st = status(p, &[]);
    assert!(st.values().all(|s| s == "fresh"), "{st:?}");

    // A failing train (initial weights that were never converted) fails its tasks, leaves what follows stale
    // and the run exits non-zero; fixing it runs only what was missing.
    let broken = "train.set=['init=\"weights:missing\"']";
    let (code, out, _) = gl(p, &["run", "--profile", "tiny", "--set", broken]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("FAILED") && out.contains("not run: train:"),
        "{out}"
    );
    let st = status(p, &["--set", broken]);
    assert_eq!(st["train:tiny_synth/s0"], "failed");
    let embed_s0 = |st: &BTreeMap<String, String>| {
        st.iter()
            .find(|(k, _)| k.starts_with("embed:tiny_synth-tiny-s0-") && k.ends_with("/selected"))
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(embed_s0(&st), "missing", "another recipe is another run id");
    assert_eq!(st["finetune:tiny_synth/s0"], "fresh");
    // Back to the profile as written: its earlier outputs are still there and still fresh.
    let st = status(p, &[]);
    assert!(st.values().all(|s| s == "fresh"), "{st:?}");

    // A forced training stage trains anew: the finished runs move to runs/.superseded/ (kept),
    // and what was computed from them is stale until the next `gl run`.
    let (code, out, err) = gl(p, &["run", "train", "--profile", "tiny", "--force"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(ran(&out), vec!["train"; 2], "{out}");
    let superseded = std::fs::read_dir(p.join("data/runs/.superseded"))
        .unwrap()
        .count();
    assert_eq!(superseded, 2);
    let st = status(p, &[]);
    assert_eq!(embed_s0(&st), "stale", "{st:?}");
    let (code, out, err) = gl(p, &["run", "--profile", "tiny"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(status(p, &[]).values().all(|s| s == "fresh"));

    // A second writer of the same data directory is refused, naming the lock.
    let lock = grouploss::pipeline::lock::DataLock::acquire(&p.join("data")).unwrap();
    let (code, _, err) = gl(p, &["run", "--profile", "tiny"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("pipeline.lock") && err.contains("locked by another gl"),
        "{err}"
    );
    drop(lock);

    // The catalogue has every task run and the resolved profile.
    let (code, out, err) = gl(
        p,
        &[
            "sql",
            "select count(*) filter (status = 'failed') > 0 as f, \
                 count(distinct stage) as stages from pipeline_tasks",
            "--format",
            "csv",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "f,stages\ntrue,8\n");
}

/// The report of the tiny profile: every table and figure, numbers that are the catalogue's,
/// and the same bytes when regenerated.
fn check_report(p: &Path) {
    let dir = p.join("reports/tiny");
    let first = files(&dir);
    for f in [
        "README.md",
        "index.html",
        "tables/tiny_synth.md",
        "tables/tiny_synth.tex",
        "tables/tiny_synth-selection.md",
        "tables/tiny_synth-selection.tex",
        "figures/tiny_synth-recall.svg",
        "figures/tiny_synth-training.svg",
        "figures/tiny_synth-tsne.svg",
        "figures/tiny_synth-gallery.png",
    ] {
        assert!(first.contains_key(f), "{f} missing: {:?}", first.keys());
    }
    let index = std::fs::read_to_string(p.join("reports/README.md")).unwrap();
    assert!(index.contains("[tiny](tiny/README.md)"), "{index}");
    // The Group Loss row is the mean ± sample std of the two seeds' R@1 in the catalogue.
    let (code, out, err) = gl(
        p,
        &[
            "sql",
            "select format('{:.2f} ± {:.2f}', avg(value) * 100, stddev_samp(value) * 100) \
             from metrics join runs on subject = run_id \
             where objective = 'group_loss' and model = 'selected' and metric = 'recall@1'",
            "--format",
            "csv",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let expected = out.lines().nth(1).unwrap().trim_matches('"').to_string();
    let table = String::from_utf8(first["tables/tiny_synth.md"].clone()).unwrap();
    let row = table
        .lines()
        .find(|l| l.starts_with("| Group Loss (mean ± std, 2 seeds)"))
        .unwrap_or_else(|| panic!("{table}"));
    assert_eq!(row.split(" | ").nth(1), Some(expected.as_str()), "{table}");
    for method in [
        "pretrained, untrained",
        "softmax fine-tuning",
        "Group Loss ensemble (2 seeds)",
    ] {
        assert!(
            table.contains(&format!("| {method} |")),
            "{method}: {table}"
        );
    }
    // The page has the same cell, every figure inline, and references nothing on the network.
    let page = String::from_utf8(first["index.html"].clone()).unwrap();
    assert!(page.contains(&format!("<td>{expected}</td>")), "{page}");
    assert_eq!(page.matches("<figure ").count(), 4, "{page}");
    assert!(page.contains("src=\"data:image/png;base64,"), "{page}");
    let refs = grouploss::report::html::network_references(&page);
    assert!(refs.is_empty(), "network references at {refs:?}");
    let svg = String::from_utf8(first["figures/tiny_synth-training.svg"].clone()).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("Group Loss s1"),
        "{svg}"
    );

    let (code, out, err) = gl(p, &["report", "--profile", "tiny"]);
    assert_eq!(code, 0, "{out}{err}");
    let second = files(&dir);
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        second.keys().collect::<Vec<_>>()
    );
    for (f, bytes) in &first {
        assert!(second[f] == *bytes, "{f} differs when regenerated");
    }
}

#[test]
fn configuration_errors_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(p.join("pipeline/profiles")).unwrap();
    for f in ["datasets.toml", "stages.toml"] {
        std::fs::copy(repo.join("pipeline").join(f), p.join("pipeline").join(f)).unwrap();
    }
    let recipes = std::fs::read_to_string(repo.join("pipeline/train.toml")).unwrap();
    std::fs::write(p.join("pipeline/train.toml"), recipes + TINY_RECIPE).unwrap();
    std::fs::write(p.join("pipeline/profiles/tiny.toml"), TINY_PROFILE).unwrap();
    let err = |args: &[&str], env: &[(&str, &str)]| {
        let mut a = vec!["status", "--profile", "tiny"];
        a.extend_from_slice(args);
        let (code, out, err) = gl_cli::run(p, &a, env);
        assert_eq!(code, 2, "{out}");
        err
    };
    let e = err(&["--set", "evaluate.restarts=2"], &[]);
    assert!(e.contains("key `evaluate.restarts`: unknown field"), "{e}");
    let e = err(&["--set", "sweep={tau=[]}"], &[]);
    assert!(e.contains("sweep.tau: at least one value"), "{e}");
    let e = err(&["--set", "sweep={taux=[1.0]}"], &[]);
    assert!(
        e.contains("taux") && e.contains("sweep point taux=1.0"),
        "{e}"
    );
    let e = err(
        &[
            "--set",
            "sweep={tau=[1.0]}",
            "--set",
            "train.set=['tau=2.0']",
        ],
        &[],
    );
    assert!(e.contains("sweep it or set it"), "{e}");
    let e = err(&["--set", "seeds=3"], &[]);
    assert!(e.contains("key `seeds`") && e.contains("--set"), "{e}");
    let e = err(&[], &[("GL_PIPELINE_SEEDS", "x")]);
    assert!(
        e.contains("key `seeds`") && e.contains("GL_PIPELINE_"),
        "{e}"
    );
    std::fs::write(
        p.join("pipeline/profiles/tiny.toml"),
        TINY_PROFILE.replace("ensemble = true", "ensemble = 1"),
    )
    .unwrap();
    let e = err(&[], &[]);
    assert!(
        e.contains("key `ensemble`") && e.contains("tiny.toml"),
        "{e}"
    );
    let (code, _, e) = gl_cli::run(p, &["status", "--profile", "nope"], &[]);
    assert_eq!(code, 2);
    assert!(
        e.contains("nope.toml not found") && e.contains("tiny"),
        "{e}"
    );
    // A stage that needs one declared after it.
    std::fs::write(p.join("pipeline/profiles/tiny.toml"), TINY_PROFILE).unwrap();
    let stages = std::fs::read_to_string(p.join("pipeline/stages.toml")).unwrap();
    std::fs::write(
        p.join("pipeline/stages.toml"),
        stages.replace("needs = [\"fetch\"]", "needs = [\"train\"]"),
    )
    .unwrap();
    let e = err(&[], &[]);
    assert!(
        e.contains("stages.toml") && e.contains("needs \"train\""),
        "{e}"
    );
}

/// The committed reports stay the reports of their profiles: every run id a committed report
/// names is one the profile plans now (run ids hash the resolved recipe, so a recipe change that
/// leaks into a profile — e.g. the tuned demo recipe into `demo_sweep`, which pins the untuned one
/// as `demo_untuned` — fails here instead of leaving a stale report behind).
#[test]
fn committed_reports_name_the_runs_their_profiles_plan() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for profile in ["demo", "demo_sweep", "demo_tune", "ablation_demo"] {
        let readme = repo.join(format!("reports/{profile}/README.md"));
        let Ok(report) = std::fs::read_to_string(&readme) else {
            panic!("{} is missing", readme.display());
        };
        let prefix = format!("demo-{profile}-");
        let named: std::collections::BTreeSet<&str> = report
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .filter(|w| w.starts_with(&prefix))
            .collect();
        assert!(!named.is_empty(), "{} names no run", readme.display());
        let data = tempfile::tempdir().unwrap();
        let (code, out, err) = gl_cli::run(
            repo,
            &["run", "--profile", profile, "--dry-run"],
            &[("GL_DATA_DIR", data.path().to_str().unwrap())],
        );
        assert_eq!(code, 0, "{profile}: {err}");
        for id in named {
            assert!(
                out.contains(id),
                "{profile}: the report names {id}, the plan does not:\n{out}"
            );
        }
    }
}
