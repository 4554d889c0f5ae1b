//! Sweeps, and the Slurm executor against a real single-node Slurm on loopback
//! (`scripts/slurm-local.sh` installs and starts it; skipped with a message where it cannot be
//! installed). The tiny profile with three seeds and a two-point sweep over the learning rate runs
//! locally: one
//! run per point and seed, one ensemble per point, a sweep table whose numbers are the
//! catalogue's. Through Slurm it gives the same catalogue and the same report; an injected
//! failure cancels what depends on it and a fixed run finishes only what was missing, and
//! `gl cancel` leaves nothing in the queue — after which a new `gl run` finishes the work.
#![cfg(feature = "catalog")] // `gl run`, `gl sql` and the catalogue

use crate::common::tiny_pipeline;

use std::path::{Path, PathBuf};
use std::process::Command;
use tiny_pipeline::{files, gl, project_with, ran, sql_rows, status};

/// A running harness; stopped (only what it started) when dropped.
struct Harness {
    dir: tempfile::TempDir,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-local.sh")
}

impl Harness {
    fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("slurm");
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(&state)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // With the `test-slurm` feature on, Slurm is required: no silent skip.
        assert_ne!(
            out.status.code(),
            Some(3),
            "Slurm cannot be installed here (build without `test-slurm` to leave these tests \
             out): {stderr}"
        );
        assert!(out.status.success(), "slurm-local.sh start: {stderr}");
        let line = String::from_utf8_lossy(&out.stdout);
        let conf = line
            .trim()
            .strip_prefix("export SLURM_CONF=")
            .unwrap()
            .to_string();
        std::env::set_var("SLURM_CONF", conf);
        Harness { dir }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path().join("slurm"))
            .status();
    }
}

fn squeue() -> String {
    let out = Command::new("squeue")
        .args(["-h", "--me"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits up to `secs` for the queue to be empty (`empty`) or not; whether it got there.
fn wait_for_queue(empty: bool, secs: u64) -> bool {
    let t0 = std::time::Instant::now();
    while squeue().trim().is_empty() != empty {
        if t0.elapsed().as_secs() >= secs {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    true
}

fn sql(p: &Path, q: &str) -> String {
    let (code, out, err) = gl(p, &["sql", q, "--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    out
}

const SEEDS: &str = "seeds=[0,1,2]";
/// Two more seeds through Slurm: the run that is cancelled, then finished.
const MORE_SEEDS: [&str; 7] = [
    "run",
    "--profile",
    "tiny",
    "--set",
    "seeds=[3,4]",
    "--executor",
    "slurm",
];
const ROWS: &str = "select subject, model, metric, value from metrics order by all";
const RUNS: &str = "select run_id, seed, objective, epochs_done, selected_epoch, test_r1_last, \
                    test_r1_val_selected, test_r1_best_on_test from runs order by run_id";

/// The sweep's table: a row per learning rate whose R@1 is the mean ± std of its runs in the
/// catalogue over `seeds` seeds, and the one with the best mean validation R@1 (the first in
/// grid order on a tie) marked selected and shown in the main table. Returns the table's rows.
fn check_sweep(p: &Path, seeds: usize) -> Vec<Vec<String>> {
    let table = std::fs::read_to_string(p.join("reports/tiny/tables/tiny_synth-sweep.md")).unwrap();
    let rows: Vec<Vec<String>> = table
        .lines()
        .skip(2)
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    // The runs of the seeds the profile was last run with.
    let seeds_now = "seed in (select unnest(from_json(config->'seeds', '[\"UBIGINT\"]')) \
                     from pipeline_profiles where name = 'tiny')";
    let expected = sql_rows(
        p,
        &format!(
            "select json_extract_string(r.config, '$.lr'), count(*), \
             format('{{:.2f}} ± {{:.2f}}', avg(value) * 100, stddev_samp(value) * 100) \
             from metrics join runs r on subject = run_id where objective = 'group_loss' \
             and model = 'selected' and metric = 'recall@1' and {seeds_now} \
             group by 1 order by any_value(json_extract(r.config, '$.lr')::DOUBLE)"
        ),
    );
    assert_eq!(rows.len(), 2, "{table}");
    assert_eq!(expected.len(), 2, "{expected:?}");
    for (row, want) in rows.iter().zip(&expected) {
        // lr | seeds | val R@1 | R@1 | … | ensemble R@1 | selected
        assert_eq!(
            (&row[0], &row[1], &row[3]),
            (&want[0], &want[1], &want[2]),
            "{table}"
        );
        assert_eq!(row[1], seeds.to_string(), "{table}");
    }
    let best = sql_rows(
        p,
        &format!(
            "select json_extract_string(r.config, '$.lr') from runs r join epochs e \
             on e.run_id = r.run_id and e.epoch = r.selected_epoch \
             where objective = 'group_loss' and {seeds_now} group by 1 \
             order by avg(val_r1) desc, any_value(json_extract(r.config, '$.lr')::DOUBLE) \
             limit 1"
        ),
    );
    let selected: Vec<&Vec<String>> = rows.iter().filter(|r| r[r.len() - 1] == "yes").collect();
    assert_eq!(selected.len(), 1, "{table}");
    assert_eq!(selected[0][0], best[0][0], "{table}");
    let main = std::fs::read_to_string(p.join("reports/tiny/tables/tiny_synth.md")).unwrap();
    assert!(
        main.contains(&format!(
            "| Group Loss, lr={} (mean ± std, {seeds} seeds)",
            best[0][0]
        )),
        "{main}"
    );
    rows
}

#[test]
fn sweeps_run_alike_locally_and_on_slurm_which_recovers_and_cancels() {
    let _one = SLURM.lock().unwrap_or_else(|e| e.into_inner());
    let fast = "\n[slurm]\npoll_seconds = 0.3\n\n[sweep]\nlr = [1e-4, 1e-2]\n";

    // The sweep locally: a run per point and seed, an ensemble per point, the sweep table.
    let local = project_with(fast);
    let (code, out, err) = gl(local.path(), &["run", "--profile", "tiny", "--set", SEEDS]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        ran(&out).iter().filter(|s| *s == "train").count(),
        6,
        "{out}"
    );
    assert_eq!(
        ran(&out).iter().filter(|s| *s == "ensemble").count(),
        2,
        "{out}"
    );
    let st = status(local.path(), &["--set", SEEDS]);
    assert_eq!(st["train:tiny_synth/lr=0.01/s2"], "fresh", "{st:?}");
    assert_eq!(st["ensemble:tiny_synth-tiny-lr=0.0001"], "fresh", "{st:?}");
    let rows = check_sweep(local.path(), 3);
    // The points differ on validation, so which one is selected is not a tie's accident.
    assert_ne!(rows[0][2], rows[1][2], "{rows:?}");

    // Through Slurm: the same catalogue and the same report.
    let _slurm = Harness::start();
    let remote = project_with(fast);
    let r = remote.path();
    let run = [
        "run",
        "--profile",
        "tiny",
        "--set",
        SEEDS,
        "--executor",
        "slurm",
    ];
    let (code, out, err) = gl(r, &run);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        ran(&out).iter().filter(|s| *s == "train").count(),
        6,
        "{out}"
    );
    assert_eq!(sql(local.path(), ROWS), sql(r, ROWS));
    assert_eq!(sql(local.path(), RUNS), sql(r, RUNS));
    let by_executor = "select executor, count(*) from pipeline_tasks group by all order by all";
    assert_eq!(
        sql(r, by_executor),
        "executor,count_star()\nlocal,3\nslurm,25\n"
    );
    let report = |p: &Path| files(&p.join("reports/tiny"));
    assert!(report(local.path()) == report(r), "the reports differ");
    let st = status(r, &["--set", SEEDS]);
    assert!(st.values().all(|s| s == "fresh"), "{st:?}");
    // Each array task logged where the local executor logs, and Slurm ran them as arrays.
    assert!(r
        .join("data/pipeline/logs/train/tiny_synth_lr=0.01_s2.log")
        .is_file());
    assert!(r
        .join("data/pipeline/slurm/tiny/scripts/train.sh")
        .is_file());

    // An injected failure: the softmax baseline cannot find its initial weights. Its task
    // fails, what depends on it is cancelled by Slurm, `gl status` says failed.
    let broken = "finetune.set=['objective=\"cross_entropy\"','init=\"weights:missing\"']";
    let (code, out, _) = gl(
        r,
        &[
            "run",
            "--profile",
            "tiny",
            "--set",
            SEEDS,
            "--set",
            broken,
            "--executor",
            "slurm",
        ],
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("finetune  tiny_synth/s0") && out.contains("FAILED"),
        "{out}"
    );
    assert!(out.contains("did not succeed (slurm job"), "{out}");
    let st = status(r, &["--set", SEEDS, "--set", broken]);
    assert_eq!(st["finetune:tiny_synth/s0"], "failed", "{st:?}");
    assert!(squeue().trim().is_empty(), "{}", squeue());
    // Fixed (back to the profile as written): nothing was lost, nothing runs again.
    let (code, out, err) = gl(r, &run);
    assert_eq!(code, 0, "{out}{err}");
    assert!(ran(&out).is_empty(), "{out}");

    // `gl cancel` while a run is queued: by job id, the queue ends empty; a new `gl run` then
    // finishes the work.
    let mut child = Command::new(crate::common::gl_cli::bin())
        .args(["--threads", "1"])
        .args(MORE_SEEDS)
        .arg("--project-dir")
        .arg(r)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed once it has recorded and submitted a job (jobs.json is written before and after
    // each array's sbatch).
    let jobs = r.join("data/pipeline/slurm/tiny/jobs.json");
    let before = std::fs::read_to_string(&jobs).unwrap();
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&jobs).unwrap() == before {
        assert!(t0.elapsed().as_secs() < 60, "nothing was submitted");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(wait_for_queue(false, 10), "nothing in the queue");
    child.kill().unwrap();
    let _ = child.wait();
    assert!(jobs.is_file());
    let (code, out, err) = gl(r, &["cancel", "--profile", "tiny"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("cancelled job(s)"), "{out}");
    assert!(wait_for_queue(true, 30), "{}", squeue());
    let (code, out, err) = gl(r, &MORE_SEEDS);
    assert_eq!(code, 0, "{out}{err}");
    let st = status(r, &["--set", "seeds=[3,4]"]);
    assert!(st.values().all(|s| s == "fresh"), "{st:?}");
    // The report shows the profile as last run: seeds 3 and 4 only.
    check_sweep(r, 2);

    // A job whose `sbatch` answered only after the coordinator was killed is in jobs.json
    // without an id, under its submission's comment: `gl cancel` finds it there and cancels it
    // by id.
    let comment = "gl:tiny:train:test-orphan";
    let out = Command::new("sbatch")
        .args(["--parsable", "--hold", "--wrap", "sleep 60"])
        .arg(format!("--comment={comment}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let pending = serde_json::json!([{
        "task": "train:tiny_synth/lr=0.01/s3", "job": "", "comment": comment, "index": 0,
        "argv": [], "log": "/dev/null", "exit": "/dev/null"
    }]);
    std::fs::write(&jobs, pending.to_string()).unwrap();
    let (code, out, err) = gl(r, &["cancel", "--profile", "tiny"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("cancelled job(s) {id}")), "{out}");
    assert!(wait_for_queue(true, 30), "{}", squeue());
}

/// One Slurm harness at a time: the tests that start one take this first.
static SLURM: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A loss benchmark on the tiny set: three objectives with the same budget (two learning rates
/// each), two seeds, each objective's point selected on validation MAP@R.
const BENCHMARK: &str = r#"
description = "tests: a loss benchmark on synthetic data"
datasets = ["tiny_synth"]
seeds = [0, 1]
device = "cpu"
ensemble = false

[train]
recipe = "tiny"
set = ["embedding_dim=16"]

[evaluate]
kmeans_restarts = 1
validation = true

[slurm]
poll_seconds = 0.3

[benchmark.group_loss]
lr = [1e-3, 3e-3]

[benchmark.contrastive]
lr = [1e-3, 3e-3]

[benchmark.proxy_anchor]
set = ["classifier_lr_factor=100"]
lr = [1e-3, 3e-3]
"#;

/// The leaderboard's (objective, selected, test MAP@R mean) rows, checked against the
/// catalogue: each objective's point is the lr with the best mean validation MAP@R over its
/// seeds, and its MAP@R the mean test MAP@R of that point's runs.
fn check_leaderboard(p: &Path) {
    let table =
        std::fs::read_to_string(p.join("reports/bench/tables/tiny_synth-leaderboard.md")).unwrap();
    let cells = |l: &str| -> Vec<String> {
        l.trim_matches('|')
            .split(" | ")
            .map(|c| c.trim().to_string())
            .collect()
    };
    let header = cells(table.lines().next().unwrap());
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<Vec<String>> = table.lines().skip(2).map(cells).collect();
    let expected = sql_rows(
        p,
        "with val as (select r.objective o, json_extract_string(r.config, '$.lr') lr, \
         avg(m.value) v from runs r join metrics m on m.subject = r.run_id \
         where m.split = 'val' and m.metric = 'map@r' and m.model = 'selected' group by all), \
         best as (select o, arg_max(lr, v) lr from val group by o) \
         select best.o, 'lr=' || best.lr, format('{:.2f}', avg(m.value) * 100) \
         from best join runs r on r.objective = best.o \
         and json_extract_string(r.config, '$.lr') = best.lr \
         join metrics m on m.subject = r.run_id and m.split = 'test' and m.metric = 'map@r' \
         and m.model = 'selected' group by all order by 1",
    );
    assert_eq!(expected.len(), 3, "{expected:?}");
    let label = |o: &str| match o {
        "group_loss" => "Group Loss",
        "contrastive" => "contrastive",
        _ => "Proxy-Anchor",
    };
    for want in &expected {
        let row = rows
            .iter()
            .find(|r| r[col("objective")] == label(&want[0]))
            .unwrap_or_else(|| panic!("no row for {}: {table}", want[0]));
        // A selected value on an edge of its grid is marked "(edge)" (both values here are).
        assert_eq!(
            row[col("selected (tuned on validation)")].trim_end_matches(" (edge)"),
            want[1],
            "{table}"
        );
        assert!(row[col("MAP@R")].starts_with(&want[2]), "{want:?}: {table}");
    }
    let reference = rows.iter().find(|r| r[1] == "Group Loss").unwrap();
    assert_eq!(reference.last().unwrap(), "(reference)", "{table}");
    assert!(rows.iter().any(|r| r[0] == "floor"), "{table}");
}

/// The benchmark runs alike locally and through Slurm arrays (the same runs, the same report
/// bytes), its leaderboard is the catalogue's numbers, and `gl report` regenerates it
/// byte-identical.
#[test]
fn a_benchmark_runs_alike_locally_and_on_slurm_and_regenerates_byte_identical() {
    let _one = SLURM.lock().unwrap_or_else(|e| e.into_inner());
    let bench = |p: &Path| {
        std::fs::write(p.join("pipeline/profiles/bench.toml"), BENCHMARK).unwrap();
    };
    let local = project_with("");
    bench(local.path());
    let (code, out, err) = gl(local.path(), &["run", "--profile", "bench"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        ran(&out).iter().filter(|s| *s == "train").count(),
        12,
        "{out}"
    );
    check_leaderboard(local.path());
    let report = |p: &Path| files(&p.join("reports/bench"));
    let first = report(local.path());
    let (code, out, err) = gl(local.path(), &["report", "--profile", "bench"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        first == report(local.path()),
        "regenerating the report changed it"
    );

    let _slurm = Harness::start();
    let remote = project_with("");
    let r = remote.path();
    bench(r);
    let (code, out, err) = gl(r, &["run", "--profile", "bench", "--executor", "slurm"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        ran(&out).iter().filter(|s| *s == "train").count(),
        12,
        "{out}"
    );
    assert_eq!(sql(local.path(), RUNS), sql(r, RUNS));
    assert!(first == report(r), "the reports differ");
}
