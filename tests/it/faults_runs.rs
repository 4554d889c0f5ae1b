//! Issue 36, the run lifecycle and the report (faults 3, 5 and 11, and two extras), done for
//! real: `gl run` and `gl train` stopped with real signals, a task killed, a NaN loss, an
//! allocation libtorch cannot make under a real address-space limit, a crop cache damaged
//! under a finished report, a synthetic set re-made with other parameters. After each, the
//! catalogue is read as it is — no `gl index-runs` in between.
#![cfg(feature = "catalog")] // `gl run`, `gl sql`, `gl report`

use std::path::{Path, PathBuf};

use crate::common::processes::{
    alive, held, held_run_lock, holder, log, signal, spawn_gl, spawn_gl_limited, wait_for,
};
use crate::common::tiny_pipeline;

use tiny_pipeline::{
    crops_file, flip, gl, gl_env, inside_first_jpeg, prepared, project, run_statuses, train_args,
    ONE_RUN_PROFILE, SLOW_PROFILE,
};

/// The writer lock of the first started run (its `config.json` written) that a process holds
/// now, and that process's pid ("pid N on HOST since T").
fn training(p: &Path) -> Option<(PathBuf, u32)> {
    let lock = held_run_lock(p)?;
    let pid = holder(&lock)?;
    Some((lock, pid))
}

/// Waits until `pid` has exited and `lock` is free.
fn gone(pid: u32, lock: &Path, what: &str) {
    wait_for(60, &format!("{what} to exit"), || {
        (!alive(pid)).then_some(())
    });
    wait_for(10, &format!("{what}'s lock to be free"), || {
        (!held(lock)).then_some(())
    });
}

/// Issue 36, fault 3: `gl run` killed (SIGKILL), or stopped (SIGTERM, SIGINT) mid-training. The
/// run must read `interrupted` in the catalogue at once, not `running` until `gl index-runs`;
/// a stopped coordinator says which task it stopped and exits as a shell would (128 + signal);
/// the next `gl run` says which run it resumes.
#[test]
fn a_stopped_coordinator_leaves_its_run_interrupted_in_the_catalogue_at_once() {
    for (sig, code) in [("KILL", None), ("TERM", Some(143)), ("INT", Some(130))] {
        let dir = prepared("slow", SLOW_PROFILE);
        let p = dir.path();
        let mut coordinator = spawn_gl(p, &["run", "--profile", "slow"], "run.log");
        let (lock, task) = wait_for(120, "gl train to take its run directory", || training(p));
        signal(coordinator.id(), sig);
        let status = coordinator.wait().unwrap();
        gone(task, &lock, &format!("gl train after SIG{sig} to gl run"));
        let statuses = run_statuses(p);
        assert!(
            statuses.contains(" interrupted") && !statuses.contains(" running"),
            "SIG{sig}: {statuses}{}",
            log(p, "run.log")
        );
        let Some(code) = code else { continue };
        let out = log(p, "run.log");
        assert_eq!(status.code(), Some(code), "SIG{sig}: {out}");
        assert!(
            out.contains(&format!(
                "gl run stopped by SIG{sig}: stopped 1 task(s): train:"
            )) && out.contains("`gl run --profile slow` resumes"),
            "{out}"
        );
        if sig == "TERM" {
            let mut next = spawn_gl(p, &["run", "--profile", "slow"], "next.log");
            wait_for(120, "the next gl run to say what it resumes", || {
                log(p, "next.log").contains("resumes run ").then_some(())
            });
            let out = log(p, "next.log");
            assert!(out.contains("(it was interrupted)"), "{out}");
            signal(next.id(), "TERM");
            next.wait().unwrap();
        }
    }
}

/// Issue 36, fault 3: a train task that fails (a NaN loss) reads `failed`, and one killed with
/// SIGKILL — which can record nothing itself — `interrupted`, as soon as `gl run` returns: the
/// coordinator re-indexes the run of a training task that did not succeed.
#[test]
fn a_failed_or_killed_train_task_reads_failed_or_interrupted_without_reindexing() {
    let dir = prepared("slow", SLOW_PROFILE);
    let p = dir.path();
    let nan = [(grouploss::env_vars::FAULT_NAN_AT_EPOCH, "1")];
    let (code, out, err) = gl_env(p, &["run", "--profile", "slow"], &nan);
    assert_ne!(code, 0, "{out}{err}");
    let st = run_statuses(p);
    assert!(st.contains(" failed"), "NaN at epoch 1: {st}\n{out}{err}");

    let dir = prepared("slow", SLOW_PROFILE);
    let p = dir.path();
    let mut coordinator = spawn_gl(p, &["run", "--profile", "slow"], "run.log");
    let (lock, task) = wait_for(120, "gl train to take its run directory", || training(p));
    signal(task, "KILL");
    let status = coordinator.wait().unwrap();
    gone(task, &lock, "the killed gl train");
    assert!(!status.success(), "{}", log(p, "run.log"));
    let st = run_statuses(p);
    assert!(st.contains(" interrupted"), "task killed: {st}");
}

/// Issue 36, fault 3 (and the extra: `--quiet` printed every epoch line): `gl train` stopped
/// with SIGINT (Ctrl-C) stops between steps, records `interrupted` in the catalogue, leaves its
/// committed checkpoint intact, writes no `failed.json` and exits 130.
#[test]
fn gl_train_stopped_by_sigint_reads_interrupted_and_keeps_its_checkpoint() {
    let dir = prepared("tiny", tiny_pipeline::TINY_PROFILE);
    let p = dir.path();
    let args = train_args("x", &["--device", "cpu", "--set=epochs=500"]);
    let mut train = spawn_gl(p, &args, "train.log");
    let run = p.join("data/runs/x");
    let state = || tiny_pipeline::run_state(&run);
    wait_for(120, "the first checkpoint", || {
        state().filter(|s| s["epoch"].as_u64() >= Some(2))
    });
    signal(train.id(), "INT");
    let status = train.wait().unwrap();
    let out = log(p, "train.log");
    assert_eq!(status.code(), Some(130), "{out}");
    assert!(out.contains("stopped by SIGINT"), "{out}");
    assert!(
        !out.contains("loss "),
        "--quiet prints no epoch line: {out}"
    );
    assert!(run_statuses(p).contains("x interrupted"), "{out}");
    assert!(!run.join("failed.json").exists());
    let st = state().unwrap();
    for (rel, sha) in st["sha256"].as_object().unwrap() {
        let got = grouploss::fsutil::file_sha256(&run.join(rel)).unwrap();
        assert_eq!(Some(got.as_str()), sha.as_str(), "{rel}");
    }
}

/// Issue 36, fault 5: an allocation libtorch cannot make (a 200-billion-wide embedding under a
/// 16 GiB address-space limit) panicked with a backtrace (exit 101), wrote no `failed.json`
/// and left the run `interrupted`. It must be an error saying out of memory, naming the keys
/// that size memory and the device, recorded in `failed.json`, the run `failed`.
#[test]
fn running_out_of_memory_is_an_error_naming_the_keys_and_the_run_reads_failed() {
    let dir = prepared("tiny", tiny_pipeline::TINY_PROFILE);
    let p = dir.path();
    let args = train_args(
        "oom",
        &["--device", "cpu", "--set=embedding_dim=200000000000"],
    );
    let mut train = spawn_gl_limited(p, &args, "oom.log", 16 << 30);
    let status = train.wait().unwrap();
    let out = log(p, "oom.log");
    assert_eq!(status.code(), Some(2), "{out}");
    for k in [
        "out of memory on cpu",
        "input_size = 24",
        "classes_per_batch = 4",
        "samples_per_class = 3",
        "embedding_dim = 200000000000",
    ] {
        assert!(out.contains(k), "{k}: {out}");
    }
    assert!(
        !out.contains("panicked") && !out.contains("stack backtrace"),
        "{out}"
    );
    let failed = std::fs::read_to_string(p.join("data/runs/oom/failed.json")).unwrap();
    assert!(failed.contains("out of memory"), "{failed}");
    assert!(run_statuses(p).contains("oom failed"));
}

/// Issue 36, fault 11: `gl report` regenerated the report from stale results with exit code 0
/// and no warning. It must refuse, naming the tasks that are not fresh and `gl run` as the way
/// out, unless `--allow-stale`, whose report says so in its footer; `gl run`'s own report task
/// still works.
#[test]
fn gl_report_refuses_stale_results_unless_allowed_and_then_says_so() {
    let dir = prepared("small", ONE_RUN_PROFILE);
    let p = dir.path();
    let (code, out, err) = gl(p, &["run", "--profile", "small"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        tiny_pipeline::ran(&out).contains(&"report".to_string()),
        "{out}"
    );
    let (code, out, err) = gl(p, &["report", "--profile", "small"]);
    assert_eq!(code, 0, "fresh: {out}{err}");
    let readme = p.join("reports/small/README.md");
    assert!(!std::fs::read_to_string(&readme).unwrap().contains("stale"));

    // The crop cache damaged: prepare and everything after it is stale.
    let crops = crops_file(p);
    flip(&crops, inside_first_jpeg(&std::fs::read(&crops).unwrap()));
    let before = std::fs::read(&readme).unwrap();
    let (code, out, err) = gl(p, &["report", "--profile", "small"]);
    assert_ne!(code, 0, "stale: {out}{err}");
    assert!(
        err.contains("prepare:tiny_synth/r32 (stale)")
            && err.contains("gl run --profile small")
            && err.contains("--allow-stale"),
        "{err}"
    );
    assert!(std::fs::read(&readme).unwrap() == before, "report kept");
    let (code, out, err) = gl(p, &["report", "--profile", "small", "--allow-stale"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("warning") && err.contains("stale"), "{err}");
    let md = std::fs::read_to_string(&readme).unwrap();
    assert!(
        md.contains("Made from stale results") && md.contains("prepare:tiny_synth/r32"),
        "{md}"
    );
}

/// Issue 36, fault 11: a `gl synth` set re-made with other parameters under the same name
/// failed only at `gl fetch`, with "checksum mismatch … download it by hand". `gl synth` must
/// refuse it, saying the set exists with other parameters and what to do, keep the stored set,
/// and replace it (fetchable) with `--replace`.
#[test]
fn a_synthetic_set_remade_with_other_parameters_is_named_and_replaced_on_request() {
    let dir = project();
    let p = dir.path();
    let (code, out, err) = gl(p, &["fetch", "tiny_synth", "--quiet"]);
    assert_eq!(code, 0, "{out}{err}");
    let archive = p.join("data/synth/tiny_synth.tar");
    let before = std::fs::read(&archive).unwrap();
    let synth = |classes: &str, extra: &[&str]| {
        let mut a = vec!["synth", "--name", "tiny_synth", "--classes", classes];
        a.extend_from_slice(&["--per-class", "8", "--size", "16", "--jitter", "60"]);
        a.extend_from_slice(extra);
        gl(p, &a)
    };
    let (code, out, err) = synth("40", &[]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("synthetic set tiny_synth exists with other parameters")
            && err.contains("48 classes")
            && err.contains("--name")
            && err.contains("--replace")
            && !err.contains("checksum"),
        "{err}"
    );
    assert!(std::fs::read(&archive).unwrap() == before, "the set kept");
    let (code, out, err) = synth("48", &[]);
    assert_eq!(code, 0, "the same parameters again: {out}{err}");
    let (code, out, err) = synth("40", &["--replace"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = gl(p, &["fetch", "tiny_synth"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("40 classes"), "{out}{err}");
}
