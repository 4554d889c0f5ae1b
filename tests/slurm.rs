//! The Slurm executor against a real single-node Slurm on loopback (`scripts/slurm-local.sh`
//! installs and starts it; skipped with a message where it cannot be installed): the tiny
//! profile with three seeds gives the same catalogue through Slurm as locally, an injected
//! failure cancels what depends on it and a fixed run finishes only what was missing, and
//! `gl cancel` leaves nothing in the queue — after which a new `gl run` finishes the work.

#[path = "common/tiny_pipeline.rs"]
mod tiny_pipeline;

use std::path::{Path, PathBuf};
use std::process::Command;
use tiny_pipeline::{gl, project_with, ran, status};

/// A running harness; stopped (only what it started) when dropped.
struct Harness {
    dir: tempfile::TempDir,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-local.sh")
}

impl Harness {
    fn start() -> Option<Harness> {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("slurm");
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(&state)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(3) {
            eprintln!("SKIPPED: Slurm cannot be installed here: {stderr}");
            return None;
        }
        assert!(out.status.success(), "slurm-local.sh start: {stderr}");
        let line = String::from_utf8_lossy(&out.stdout);
        let conf = line
            .trim()
            .strip_prefix("export SLURM_CONF=")
            .unwrap()
            .to_string();
        std::env::set_var("SLURM_CONF", conf);
        Some(Harness { dir })
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

#[test]
fn the_slurm_executor_matches_local_recovers_and_cancels() {
    let Some(_slurm) = Harness::start() else {
        return;
    };
    let fast = "\n[slurm]\npoll_seconds = 0.3\n";

    // Same profile, once locally, once through Slurm: the same catalogue.
    let local = project_with(fast);
    let (code, out, err) = gl(local.path(), &["run", "--profile", "tiny", "--set", SEEDS]);
    assert_eq!(code, 0, "{out}{err}");
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
        3,
        "{out}"
    );
    assert_eq!(sql(local.path(), ROWS), sql(r, ROWS));
    assert_eq!(sql(local.path(), RUNS), sql(r, RUNS));
    let by_executor = "select executor, count(*) from pipeline_tasks group by all order by all";
    assert_eq!(
        sql(r, by_executor),
        "executor,count_star()\nlocal,3\nslurm,15\n"
    );
    let st = status(r, &["--set", SEEDS]);
    assert!(st.values().all(|s| s == "fresh"), "{st:?}");
    // Each array task logged where the local executor logs, and Slurm ran them as arrays.
    assert!(r
        .join("data/pipeline/logs/train/tiny_synth_s2.log")
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_gl"))
        .args(["--threads", "1"])
        .args(MORE_SEEDS)
        .arg("--project-dir")
        .arg(r)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let jobs = r.join("data/pipeline/slurm/tiny/jobs.json");
    assert!(wait_for_queue(false, 60), "nothing was submitted");
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
}
