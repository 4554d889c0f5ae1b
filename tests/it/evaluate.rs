//! Evaluation against independent references and end to end:
//!
//! * Recall@K, MAP@R and R-Precision on fixed embeddings equal NumPy brute force, NMI equals
//!   scikit-learn's for the same assignments, and our k-means reaches scikit-learn's inertia
//!   within 1 % (fixtures: `tests/fixtures/eval/make_reference.py`);
//! * `gl evaluate --embeddings FILE` on a Parquet file written by pyarrow, and its errors;
//! * `gl embed`, `gl evaluate`, `gl ensemble` on tiny runs trained on the embedded demo set,
//!   indexed in the catalogue and readable with `gl sql`; an ensemble of one run equals it.

use crate::common::demo_project;
use crate::common::gl_cli;

use grouploss::eval::embeddings_file;
use grouploss::eval::kmeans::{kmeans, KMeansParams};
use grouploss::eval::knn::l2_normalise;
use grouploss::eval::nmi::nmi;
use grouploss::eval::retrieval::{evaluate, RetrievalParams};
use rand::SeedableRng;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eval")
}

fn reference() -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("reference.json")).unwrap()).unwrap()
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

#[test]
fn retrieval_metrics_equal_numpy_brute_force() {
    let r = reference();
    let set = embeddings_file::read(&fixtures().join("embeddings.parquet")).unwrap();
    assert_eq!(set.len(), ints(&r["kmeans_labels"]).len());
    // pyarrow wrote int32 class ids and a plain list<float>: read as i64 and N×16.
    assert_eq!(set.dim(), 16);
    let ks: Vec<usize> = ints(&r["ks"]).into_iter().map(|k| k as usize).collect();
    for chunks in [(1024, 16384), (5, 7)] {
        let p = RetrievalParams {
            recall_ks: ks.clone(),
            chunks: grouploss::eval::knn::Chunks {
                queries: chunks.0,
                gallery: chunks.1,
            },
            ..Default::default()
        };
        let got = evaluate(&set.vectors, &set.class_ids, &p).unwrap();
        for ((k, v), want) in got.recall.iter().zip(r["recall"].as_array().unwrap()) {
            assert!(
                (v - want.as_f64().unwrap()).abs() < 1e-12,
                "R@{k}: {v} vs {want}"
            );
        }
        let close = |a: Option<f64>, b: &Value| (a.unwrap() - b.as_f64().unwrap()).abs() < 1e-12;
        assert!(close(got.map_at_r, &r["map_at_r"]), "{:?}", got.map_at_r);
        assert!(
            close(got.r_precision, &r["r_precision"]),
            "{:?}",
            got.r_precision
        );
        assert_eq!(
            got.queries_without_positives as u64,
            r["queries_without_positives"].as_u64().unwrap()
        );
    }
}

#[test]
fn nmi_equals_scikit_learn_and_kmeans_matches_its_inertia() {
    let r = reference();
    let set = embeddings_file::read(&fixtures().join("embeddings.parquet")).unwrap();
    for (assignment, want) in [
        ("kmeans_labels", "nmi_kmeans"),
        ("random_labels", "nmi_random"),
    ] {
        let got = nmi(&set.class_ids, &ints(&r[assignment])).unwrap();
        let want = r[want].as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "{assignment}: {got} vs {want}");
    }
    let classes = r["classes"].as_u64().unwrap() as usize;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let c = kmeans(
        &l2_normalise(&set.vectors),
        &KMeansParams::new(classes),
        &mut rng,
    )
    .unwrap();
    let sk = r["sklearn_inertia"].as_f64().unwrap();
    assert!(
        c.inertia <= 1.01 * sk,
        "k-means inertia {} vs scikit-learn {sk}",
        c.inertia
    );
    assert_eq!(c.labels.len(), set.len());
    let used: std::collections::BTreeSet<_> = c.labels.iter().collect();
    assert_eq!(used.len(), classes, "no empty cluster");
}

#[test]
fn evaluate_a_parquet_file_from_another_tool() {
    let dir = tempfile::tempdir().unwrap();
    let file = fixtures().join("embeddings.parquet");
    let f = file.to_str().unwrap();
    let evaluate = |extra: &[&str]| {
        let mut a = vec!["evaluate", "--embeddings", f, "--format", "json"];
        a.extend_from_slice(&["--ks", "1,2,4,8,16,500", "--device", "cpu"]);
        a.extend_from_slice(extra);
        let (code, out, err) = gl_cli::run(dir.path(), &a, &[]);
        assert_eq!(code, 0, "{out}{err}");
        out
    };
    let out = evaluate(&[]);
    let got: Value = serde_json::from_str(&out).unwrap();
    let r = reference();
    for (k, want) in ints(&r["ks"]).iter().zip(r["recall"].as_array().unwrap()) {
        let v = got[format!("recall@{k}")].as_f64().unwrap();
        assert!((v - want.as_f64().unwrap()).abs() < 1e-12, "recall@{k}");
    }
    for key in ["nmi", "map@r", "r_precision"] {
        assert!(
            got[key].as_f64().is_some_and(|v| (0.0..=1.0).contains(&v)),
            "{key}: {out}"
        );
    }
    assert!((got["map@r"].as_f64().unwrap() - r["map_at_r"].as_f64().unwrap()).abs() < 1e-12);
    // The blocked search (the GPU's) gives the same numbers.
    let out2 = evaluate(&["--search", "blocks"]);
    assert_eq!(out2, out);

    // A file without `vector`, and one whose vectors differ in length: errors naming both.
    let bad = dir.path().join("bad.parquet");
    let py = std::env::var("GL_PYTHON")
        .unwrap_or_else(|_| grouploss::runtime::default_python().display().to_string());
    let script = format!(
        "import pyarrow as pa, pyarrow.parquet as pq\n\
         pq.write_table(pa.table({{'class_id': [1, 2]}}), '{0}')\n\
         pq.write_table(pa.table({{'class_id': [1, 2], 'vector': [[1.0, 0.0], [1.0]]}}), '{0}.ragged')\n",
        bad.display()
    );
    let st = std::process::Command::new(py)
        .args(["-c", &script])
        .status()
        .unwrap();
    assert!(st.success());
    let (code, _, err) = gl_cli::run(
        dir.path(),
        &["evaluate", "--embeddings", bad.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("bad.parquet") && err.contains("no column `vector`"),
        "{err}"
    );
    let ragged = format!("{}.ragged", bad.display());
    let (code, _, err) = gl_cli::run(dir.path(), &["evaluate", "--embeddings", &ragged], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("row 1 has 1 values, earlier rows 2"), "{err}");
}

/// A project with the demo set and two tiny one-epoch runs (seeds 0 and 1) of one recipe.
fn trained() -> &'static Path {
    static P: OnceLock<tempfile::TempDir> = OnceLock::new();
    P.get_or_init(|| {
        let dir = demo_project::create();
        let p = dir.path();
        for seed in ["0", "1"] {
            let id = format!("tiny-s{seed}");
            let extra = [
                "--device=cpu",
                "--seed",
                seed,
                "--set=epochs=1",
                "--set=lr_milestones=[]",
            ];
            let args = demo_project::tiny_train_args(&id, &extra);
            let (code, out, err) = gl_cli::run(p, &args, &[]);
            assert_eq!(code, 0, "{out}{err}");
        }
        dir
    })
    .path()
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    static M: std::sync::Mutex<()> = std::sync::Mutex::new(());
    M.lock().unwrap_or_else(|e| e.into_inner())
}

fn gl_json(args: &[&str]) -> Value {
    let mut a = vec!["--threads", "1"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--device", "cpu", "--format", "json"]);
    let (code, out, err) = gl_cli::run(trained(), &a, &[]);
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn sql(q: &str) -> String {
    let (code, out, err) = gl_cli::run(trained(), &["sql", q, "--format", "csv"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    out
}

#[test]
fn embed_evaluate_and_ensemble_a_trained_run() {
    let _s = serial();
    let p = trained();
    let (code, out, err) = gl_cli::run(
        p,
        &["embed", "tiny-s0", "--split", "test,val", "--device", "cpu"],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let emb = p.join("data/runs/tiny-s0/embeddings");
    for f in [
        "selected-test.parquet",
        "selected-val.parquet",
        "selected-test.json",
    ] {
        assert!(emb.join(f).is_file(), "{f}: {out}");
    }
    let set = embeddings_file::read(&emb.join("selected-test.parquet")).unwrap();
    let norms = set.vectors.norm_scalaropt_dim(2, [1], false);
    assert!(
        f64::try_from((norms - 1.0).abs().max()).unwrap() < 1e-5,
        "normalised"
    );
    assert!(set.raw.is_some(), "raw features kept");

    let run = gl_json(&["evaluate", "tiny-s0"]);
    // The run's own test R@1 of its selected epoch (epochs.jsonl) is what evaluate finds.
    let epoch: Value = serde_json::from_str(
        std::fs::read_to_string(p.join("data/runs/tiny-s0/epochs.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let trained_r1 = epoch["test_recall"][0].as_f64().unwrap();
    assert!(
        (run["recall@1"].as_f64().unwrap() - trained_r1).abs() < 1e-9,
        "{run} vs {epoch}"
    );
    // The initial weights give the trainer's own baseline (untrained.json).
    let untrained = gl_json(&["evaluate", "tiny-s0", "--model", "untrained"]);
    let base: Value =
        serde_json::from_slice(&std::fs::read(p.join("data/runs/tiny-s0/untrained.json")).unwrap())
            .unwrap();
    let base_r1 = base["test_recall"][0].as_f64().unwrap();
    assert!(
        (untrained["recall@1"].as_f64().unwrap() - base_r1).abs() < 1e-9,
        "{untrained} vs {base}"
    );
    assert_ne!(
        untrained["map@r"], run["map@r"],
        "trained and untrained weights differ"
    );

    // An ensemble of one run is that run; of two seeds, its own row.
    let one = gl_json(&["ensemble", "--name", "one", "tiny-s0"]);
    for key in [
        "recall@1",
        "recall@2",
        "recall@4",
        "recall@8",
        "map@r",
        "r_precision",
        "nmi",
    ] {
        let (a, b) = (one[key].as_f64().unwrap(), run[key].as_f64().unwrap());
        assert!((a - b).abs() < 1e-6, "{key}: ensemble {a} vs run {b}");
    }
    let two = gl_json(&["ensemble", "--name", "two", "tiny-s0", "tiny-s1"]);
    assert_eq!(
        two["dim"].as_i64().unwrap(),
        2 * run["dim"].as_i64().unwrap()
    );

    // The catalogue: evaluations, metrics, ensembles, embeddings; Parquet readable by DuckDB.
    let rows = sql("select subject, kind, model from evaluations order by subject, model");
    assert_eq!(
        rows,
        "subject,kind,model\none,ensemble,selected\ntiny-s0,run,selected\ntiny-s0,run,untrained\ntwo,ensemble,selected\n"
    );
    let r1 = sql("select value from metrics where subject = 'tiny-s0' and model = 'selected' and metric = 'recall@1'");
    let v: f64 = r1.lines().nth(1).unwrap().parse().unwrap();
    assert!((v - trained_r1).abs() < 1e-12);
    assert_eq!(
        sql("select n_members from ensembles where name = 'two'"),
        "n_members\n2\n"
    );
    let path = emb.join("selected-test.parquet");
    let q = format!(
        "select count(*) as n, min(len(vector)) as d from read_parquet('{}')",
        path.display()
    );
    assert_eq!(sql(&q), format!("n,d\n{},{}\n", set.len(), set.dim()));

    // Other weights under the same run id (a run trained again): embedded again, not reused —
    // with seed 1's selected model, seed 0's embeddings become seed 1's.
    let state: Value =
        serde_json::from_slice(&std::fs::read(p.join("data/runs/tiny-s1/state.json")).unwrap())
            .unwrap();
    let file = state["selected"].as_str().unwrap();
    std::fs::copy(
        p.join("data/runs/tiny-s1").join(file),
        p.join("data/runs/tiny-s0").join(file),
    )
    .unwrap();
    // …with the digest a training run records beside it (a copy alone is refused as damaged).
    let s0 = p.join("data/runs/tiny-s0/state.json");
    let mut state0: Value = serde_json::from_slice(&std::fs::read(&s0).unwrap()).unwrap();
    state0["sha256"][file] = state["sha256"][file].clone();
    std::fs::write(&s0, serde_json::to_vec(&state0).unwrap()).unwrap();
    for run in ["tiny-s0", "tiny-s1"] {
        let (code, out, err) = gl_cli::run(p, &["embed", run, "--device", "cpu"], &[]);
        assert_eq!(code, 0, "{out}{err}");
    }
    let vectors = |run: &str| {
        let f = p.join(format!("data/runs/{run}/embeddings/selected-test.parquet"));
        embeddings_file::read(&f).unwrap().vectors
    };
    assert!(vectors("tiny-s0").equal(&vectors("tiny-s1")));
    assert!(!vectors("tiny-s0").equal(&set.vectors), "re-embedded");

    // A different recipe is not an ensemble of seeds unless asked.
    let (code, _, err) = gl_cli::run(p, &["ensemble", "--name", "x", "tiny-s0", "missing"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("missing"), "{err}");
    // A refused ensemble leaves no directory behind (issue 36: its lock's directory stayed).
    assert!(!p.join("data/ensembles/x").exists(), "{err}");
}
