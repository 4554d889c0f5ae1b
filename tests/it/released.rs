//! The `paper_released` profile (the authors' released models, evaluated without training):
//! its dry run on a fresh data directory plans fetch → weights → prepare → embed → evaluate →
//! report for CUB, Cars196 and SOP and no training; and the profile itself runs end to end on
//! the CPU through the real weights path — a fake `groupl_trained_cub` with the official
//! BN-Inception key names and a `last_linear` head (`tests/fixtures/released/
//! make_checkpoint.py`), served over loopback HTTP under the registry's own entry — on a tiny
//! synthetic dataset, and its report shows the "authors' released model" row with the
//! catalogue's numbers beside the paper's.
#![cfg(feature = "catalog")] // `gl run`, `gl sql` and the catalogue

use crate::common::gl_cli;
#[allow(dead_code)] // only `Bytes` routes are needed here
use crate::common::http_server;

use http_server::{Route, Server};
use std::collections::BTreeSet;
use std::path::Path;

const PROFILE: &str = "paper_released";
const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/released/make_checkpoint.py"
);
/// The official URLs of `groupl_trained_cub` in pipeline/weights.toml (replaced by the
/// loopback server in the end-to-end test).
const CUB_URLS: [&str; 2] = [
    "https://github.com/dvl-tum/group_loss/raw/7d832310eeb8738e7c719d780acc730babd03dd6/net/trained_cub_bn_inception.pth",
    "https://raw.githubusercontent.com/dvl-tum/group_loss/7d832310eeb8738e7c719d780acc730babd03dd6/net/trained_cub_bn_inception.pth",
];

/// A project with the repository's pipeline files (registries, recipes, stage DAG, published
/// numbers, the paper_released profile), each passed through `edit` (file name, text).
fn project(edit: impl Fn(&str, String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(p.join("pipeline/profiles")).unwrap();
    for f in [
        "datasets.toml",
        "stages.toml",
        "published.toml",
        "train.toml",
        "weights.toml",
        "profiles/paper_released.toml",
    ] {
        let text = std::fs::read_to_string(repo.join("pipeline").join(f)).unwrap();
        std::fs::write(p.join("pipeline").join(f), edit(f, text)).unwrap();
    }
    dir
}

fn gl(p: &Path, args: &[&str]) -> (i32, String, String) {
    let mut a = vec!["--threads", "2"];
    a.extend_from_slice(args);
    gl_cli::run(p, &a, &[])
}

/// `(stage, task, what)` of each line `gl run` printed.
fn lines(out: &str) -> Vec<(String, String, String)> {
    // The plan's lines, not the listing of the fetch tasks' sources after them.
    let out = out
        .split("\nsources each fetch tries")
        .next()
        .unwrap_or(out);
    out.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (stage, task) = (it.next()?, it.next()?);
            Some((stage.into(), task.into(), it.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

fn sql(p: &Path, query: &str) -> String {
    let (code, out, err) = gl(p, &["sql", query, "--format", "csv"]);
    assert_eq!(code, 0, "{query}: {err}");
    out.lines().skip(1).collect::<Vec<_>>().join("\n")
}

#[test]
fn the_dry_run_plans_fetch_weights_embed_evaluate_report_and_no_training() {
    let dir = project(|_, t| t);
    let p = dir.path();
    let (code, out, err) = gl(p, &["run", "--profile", PROFILE, "--dry-run"]);
    assert_eq!(code, 0, "a dry run exits 0:\n{out}{err}");
    let plan = lines(&out);
    let stages: BTreeSet<&str> = plan.iter().map(|l| l.0.as_str()).collect();
    assert_eq!(
        stages,
        BTreeSet::from(["fetch", "weights", "prepare", "embed", "evaluate", "report"]),
        "{out}"
    );
    for (stage, task, what) in &plan {
        assert_eq!(what, "would run (missing)", "{stage} {task}:\n{out}");
    }
    let has = |stage: &str, pred: &dyn Fn(&str) -> bool| {
        plan.iter()
            .filter(|(s, t, _)| s == stage && pred(t))
            .count()
    };
    for (d, w) in [
        ("cub", "groupl_trained_cub"),
        ("cars196", "groupl_trained_cars"),
        ("sop", "groupl_trained_sop"),
    ] {
        assert_eq!(has("fetch", &|t| t == d), 1, "{d}:\n{out}");
        assert_eq!(has("weights", &|t| t == w), 1, "{w}:\n{out}");
        assert_eq!(has("prepare", &|t| t == format!("{d}/r256")), 1, "{out}");
        let run = format!("{d}-{PROFILE}-released-");
        for stage in ["embed", "evaluate"] {
            let one = |t: &str| t.starts_with(&run) && t.ends_with("/untrained");
            assert_eq!(has(stage, &one), 1, "{stage} {d}:\n{out}");
        }
    }
    assert_eq!(plan.len(), 3 * 5 + 1, "{out}");
    assert!(!p.join("data/runs").exists(), "a dry run creates no run");
    // The same plan through `gl status`: every task missing.
    let (code, out, err) = gl(p, &["status", "--profile", PROFILE]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("0 fresh, 0 stale, 16 missing, 0 failed"),
        "{out}"
    );
}

#[test]
fn a_fake_released_checkpoint_runs_through_weights_embed_evaluate_and_report() {
    // 8 classes × 4 images: 4 training classes (the head of the checkpoint), 16 test images.
    let ckpt = tempfile::tempdir().unwrap();
    let file = ckpt.path().join("trained_cub_bn_inception.pth");
    let out = std::process::Command::new(grouploss::runtime::default_python())
        .arg(SCRIPT)
        .arg(&file)
        .arg("4")
        .output()
        .expect("starting python");
    assert!(
        out.status.success(),
        "make_checkpoint.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Server::start(&[(
        "/trained_cub_bn_inception.pth",
        Route::Bytes(std::fs::read(&file).unwrap()),
    )]);
    let url = server.url("/trained_cub_bn_inception.pth");
    let dir = project(|f, t| match f {
        "weights.toml" => {
            assert!(CUB_URLS.iter().all(|u| t.contains(u)), "{t}");
            CUB_URLS.iter().fold(t, |t, u| t.replace(u, &url))
        }
        // The tiny dataset with the paper's input (BN-Inception, resize 256, crops 227).
        "train.toml" => t + "\n[datasets.tiny_released]\nloader_threads = 1\neval_batch = 16\n",
        "published.toml" => t + "\n[datasets.tiny_released.group_loss]\n\"recall@1\" = 50.0\n",
        _ => t,
    });
    let p = dir.path();
    let (code, out, err) = gl(
        p,
        &[
            "synth",
            "--name",
            "tiny_released",
            "--classes",
            "8",
            "--per-class",
            "4",
            "--size",
            "16",
            "--jitter",
            "60",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let run = [
        "run",
        "--profile",
        PROFILE,
        "--set",
        "datasets=[\"tiny_released\"]",
        "--set",
        "released.tiny_released=\"groupl_trained_cub\"",
        "--set",
        "weights=[\"groupl_trained_cub\"]",
        "--set",
        "device=\"cpu\"",
        "--set",
        "evaluate.kmeans_restarts=1",
    ];
    let (code, out, err) = gl(p, &run);
    assert_eq!(code, 0, "{out}{err}");
    println!("{out}");
    let ran: Vec<String> = lines(&out)
        .into_iter()
        .filter(|l| l.2.starts_with("ran in"))
        .map(|l| l.0)
        .collect();
    assert_eq!(
        ran,
        ["fetch", "weights", "prepare", "embed", "evaluate", "report"],
        "{out}"
    );
    assert_eq!(server.requests("/trained_cub_bn_inception.pth").len(), 1);

    // Converted through the registry's entry: the head kept as the classifier over 4 classes.
    assert_eq!(
        sql(p, "select name, tensors, classifier_classes from weights"),
        "groupl_trained_cub,416,4"
    );
    // The run never trained; the catalogue indexes it like any run.
    let run_id = sql(p, "select run_id from runs");
    assert!(
        run_id.starts_with("tiny_released-paper_released-released-"),
        "{run_id}"
    );
    assert_eq!(
        sql(
            p,
            "select profile, backbone, status, epochs_planned, epochs_done, \
             config->>'init', config->>'input_size', config->>'resize' from runs"
        ),
        "released,bn_inception,completed,0,0,weights:groupl_trained_cub,227,256"
    );

    // The report's row is the catalogue's numbers; the paper's row and the difference beside.
    let values: std::collections::BTreeMap<String, f64> = sql(
        p,
        &format!(
            "select metric, value from metrics where subject = '{run_id}' and \
             model = 'untrained' and split = 'test'"
        ),
    )
    .lines()
    .map(|l| {
        let (m, v) = l.split_once(',').unwrap();
        (m.to_string(), 100.0 * v.parse::<f64>().unwrap())
    })
    .collect();
    let value = |metric: &str| -> f64 {
        *values
            .get(metric)
            .unwrap_or_else(|| panic!("no {metric}: {values:?}"))
    };
    let cols = [
        "recall@1", "recall@2", "recall@4", "recall@8", "nmi", "map@r",
    ];
    let expected: Vec<String> = cols.iter().map(|m| format!("{:.2}", value(m))).collect();
    let table =
        std::fs::read_to_string(p.join(format!("reports/{PROFILE}/tables/tiny_released.md")))
            .unwrap();
    let row = |label: &str| -> Vec<String> {
        let line = table
            .lines()
            .find(|l| l.starts_with(&format!("| {label} |")))
            .unwrap_or_else(|| panic!("no row {label}:\n{table}"));
        line.trim_matches('|')
            .split(" | ")
            .skip(1)
            .map(|c| c.trim().to_string())
            .collect()
    };
    assert_eq!(
        table.lines().next(),
        Some("| method | R@1 | R@2 | R@4 | R@8 | NMI | MAP@R |"),
        "{table}"
    );
    assert_eq!(row("authors' released model"), expected, "{table}");
    assert_eq!(row("paper: Group Loss")[0], "50.0", "{table}");
    assert_eq!(
        row("Δ released model − paper")[0],
        format!("{:+.2}", value("recall@1") - 50.0),
        "{table}"
    );
    assert!(!table.contains("Δ Group Loss"), "{table}");
    let readme = std::fs::read_to_string(p.join(format!("reports/{PROFILE}/README.md"))).unwrap();
    assert!(
        readme.contains("the checkpoint `groupl_trained_cub` evaluated as it is"),
        "{readme}"
    );
    assert!(p
        .join(format!(
            "reports/{PROFILE}/figures/tiny_released-recall.svg"
        ))
        .is_file());

    // Nothing stale: a second run does nothing.
    let (code, out, err) = gl(p, &run);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("ran in"), "{out}");
}
