//! `gl run`'s progress lines in a log (stderr not a terminal) and the spreading of local tasks
//! over GPUs, on the tiny pipeline: a fake 3-GPU machine through `GL_GPUS` (the tasks compute on
//! the CPU; each task's log names the `CUDA_VISIBLE_DEVICES` it got, the catalogue when it ran).
#![cfg(feature = "catalog")]

use crate::common::tiny_pipeline::{gl, gl_env, project, ran, status};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The `progress: D/N tasks …` lines of stderr as (D, N, the rest).
fn progress(err: &str) -> Vec<(usize, usize, String)> {
    err.lines()
        .filter_map(|l| l.strip_prefix("progress: "))
        .map(|l| {
            let (counts, rest) = l.split_once(" tasks ").expect("D/N tasks …");
            let (d, n) = counts.split_once('/').unwrap();
            (d.parse().unwrap(), n.parse().unwrap(), rest.to_string())
        })
        .collect()
}

/// The first line of each task log under `data/pipeline/logs`: the device it was given, if any.
fn devices_in_logs(p: &Path) -> BTreeMap<String, Option<String>> {
    let logs = p.join("data/pipeline/logs");
    let mut out = BTreeMap::new();
    for stage in std::fs::read_dir(&logs).unwrap() {
        let stage = stage.unwrap().path();
        for f in std::fs::read_dir(&stage).unwrap() {
            let f = f.unwrap().path();
            let text = std::fs::read_to_string(&f).unwrap();
            let dev = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("gl run: CUDA_VISIBLE_DEVICES="))
                .map(str::to_string);
            out.insert(f.display().to_string(), dev);
        }
    }
    out
}

/// A task run as the catalogue has it: id, start and end (µs), and its log's device.
#[derive(Debug)]
struct Span {
    id: String,
    start: i64,
    end: i64,
    device: Option<String>,
}

/// The last `n` task runs of `pipeline_tasks`, with the device their log names now.
fn last_runs(p: &Path, n: usize) -> Vec<Span> {
    let q = format!(
        "SELECT stage || ':' || task, epoch_us(started_at), epoch_us(finished_at), log \
         FROM pipeline_tasks ORDER BY id DESC LIMIT {n}"
    );
    let (code, out, err) = gl(p, &["sql", &q, "--format", "csv"]);
    assert_eq!(code, 0, "{out}{err}");
    let logs = devices_in_logs(p);
    out.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Span {
                id: f[0].to_string(),
                start: f[1].parse().unwrap(),
                end: f[2].parse().unwrap(),
                device: logs[f[3]].clone(),
            }
        })
        .collect()
}

/// Tasks whose runs overlap in time never share a device; returns the devices used.
fn distinct_while_overlapping(spans: &[Span]) -> BTreeSet<String> {
    for a in spans {
        for b in spans {
            let overlap = a.id != b.id && a.start < b.end && b.start < a.end;
            if overlap && a.device.is_some() {
                assert_ne!(a.device, b.device, "{a:?} and {b:?} ran at once");
            }
        }
    }
    spans.iter().filter_map(|s| s.device.clone()).collect()
}

/// A first run in a log: plain lines (no bar), counts from 0 up to every task, and no ETA
/// before any task of the project has a duration; a second run (train forced, 2 jobs) has an
/// ETA from its first line, from the durations the first recorded. No `GL_GPUS` on this
/// CPU-only machine: no task gets a device.
#[test]
fn progress_lines_count_tasks_and_give_an_eta_from_history() {
    let dir = project();
    let p = dir.path();
    let (code, out, err) = gl(p, &["run", "--profile", "tiny"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!err.contains('\u{1b}'), "no terminal codes in a log: {err}");
    let lines = progress(&err);
    let tasks = ran(&out).len();
    assert!(tasks >= 10, "{out}");
    assert!(lines.iter().all(|l| l.1 == tasks), "{err}");
    assert_eq!(lines.first().map(|l| l.0), Some(0), "{err}");
    assert!(lines[0].2.contains("eta ?"), "no history yet: {err}");
    // Once a quick stage has a duration, the training's share of the ETA is a guess, and says so.
    assert!(
        lines
            .iter()
            .any(|l| l.2.contains("(guessed: no durations yet for") && l.2.contains("train")),
        "{err}"
    );
    assert!(lines.windows(2).all(|w| w[0].0 <= w[1].0), "{err}");
    assert_eq!(lines.last().map(|l| l.0), Some(tasks), "{err}");
    let ends: BTreeSet<usize> = lines.iter().map(|l| l.0).collect();
    assert_eq!(ends.len(), tasks + 1, "a line at every end: {err}");
    assert!(devices_in_logs(p).values().all(Option::is_none));

    let (code, out, err) = gl(
        p,
        &[
            "run",
            "train",
            "--profile",
            "tiny",
            "--force",
            "--jobs",
            "2",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let lines = progress(&err);
    assert_eq!(lines.first().map(|l| (l.0, l.1)), Some((0, 2)), "{err}");
    let eta = lines[0].2.split_once("eta ").unwrap().1;
    let eta = eta.split(';').next().unwrap();
    assert!(
        eta.contains(':') && eta != "?" && !eta.contains("guessed"),
        "an ETA from history: {err}"
    );
    assert!(devices_in_logs(p).values().all(Option::is_none));
}

/// `GL_GPUS=0,1,2` and 3 jobs: every computing task gets one device, tasks at once distinct
/// ones, all three used, tasks that compute nothing (prepare, report) none; then the profile's
/// `gpus = [0, 2]` keeps two trains at once on devices 0 and 2.
#[test]
fn local_tasks_are_spread_over_the_gpus() {
    let dir = project();
    let p = dir.path();
    let env = [("GL_GPUS", "0,1,2")];
    let (code, out, err) = gl_env(p, &["run", "--profile", "tiny", "--jobs", "3"], &env);
    assert_eq!(code, 0, "{out}{err}");
    let spans = last_runs(p, ran(&out).len());
    let used = distinct_while_overlapping(&spans);
    assert_eq!(used, BTreeSet::from(["0".into(), "1".into(), "2".into()]));
    for s in &spans {
        let computes = ["finetune:", "train:", "embed:", "evaluate:", "ensemble:"]
            .iter()
            .any(|st| s.id.starts_with(st));
        assert_eq!(s.device.is_some(), computes, "{s:?}");
    }
    assert!(
        progress(&err).iter().any(|l| l.2.contains(" [gpu ")),
        "the line names the devices: {err}"
    );

    let args = [
        "run",
        "train",
        "--profile",
        "tiny",
        "--force",
        "--jobs",
        "3",
        "--set",
        "gpus=[0,2]",
    ];
    let (code, out, err) = gl_env(p, &args, &env);
    assert_eq!(code, 0, "{out}{err}");
    let spans = last_runs(p, 2);
    assert!(
        spans.iter().all(|s| s.id.starts_with("train:")),
        "{spans:?}"
    );
    let used = distinct_while_overlapping(&spans);
    assert_eq!(used, BTreeSet::from(["0".into(), "2".into()]), "{spans:?}");

    // Where tasks run is not what they compute: the key changes no task's state.
    assert_eq!(status(p, &["--set", "gpus=[5]"]), status(p, &[]));
    let (code, _, err) = gl_env(p, &["run", "--profile", "tiny", "--set", "gpus=[5]"], &env);
    assert_ne!(code, 0);
    assert!(err.contains("gpus = [5]"), "{err}");
}
