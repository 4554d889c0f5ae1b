//! Temporary files and `gl sql` (issue 36, faults 6–8), done for real: `gl sql` processes killed
//! with SIGKILL mid-query, temporary files left in run directories and `reports/`, and hostile
//! statements through the real `gl sql` binary.
#![cfg(feature = "catalog")] // `gl sql`, `gl run` and the catalogue

use std::path::{Path, PathBuf};

use crate::common::processes::{log, spawn_gl, wait_for};
use crate::common::tiny_pipeline;

use tiny_pipeline::{gl, project};

/// A `gl sql` query that runs for hours in little memory (10¹² rows of a cross join).
const SLOW: &str = "select count(*) from range(1000000) a, range(1000000) b \
                    where (a.range + b.range) % 7 = 3";

/// A child process, killed with SIGKILL when dropped (a failing test leaves none running).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `gl sql SLOW` started in the background, its output in `P/<log>`.
fn spawn_slow_sql(p: &Path, log: &str) -> Child {
    Child(spawn_gl(p, &["sql", SLOW], log))
}

/// The entries of `dir` (sorted; none when it does not exist).
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// The scratch directory in `data/tmp/` holding a catalogue snapshot that is not in `known`.
fn new_snapshot(p: &Path, known: &[PathBuf]) -> Option<PathBuf> {
    entries(&p.join("data/tmp"))
        .into_iter()
        .find(|d| !known.contains(d) && d.join("catalog.duckdb").is_file())
}

/// Runs `gl ARGS` and checks it succeeded.
fn ok(p: &Path, args: &[&str]) -> String {
    let (code, out, err) = gl(p, args);
    assert_eq!(code, 0, "gl {args:?}: {out}{err}");
    out
}

/// issue 36, fault 6: a killed `gl sql` left its whole catalogue copy in
/// `/tmp/gl-catalog-snapshot-*`, never removed; and fault 7: nothing cleaned such leftovers. The
/// snapshot is now in `data/tmp/`, and the next `gl run` removes a killed reader's copy but not
/// the copy a live `gl sql` is reading.
#[test]
fn a_killed_readers_snapshot_is_cleaned_and_a_live_readers_is_not() {
    let dir = project();
    let p = dir.path();
    ok(p, &["run", "fetch", "--profile", "tiny"]);
    let mut killed = spawn_slow_sql(p, "killed.log");
    let dead = wait_for(30, "the snapshot of gl sql in data/tmp/", || {
        let ended = killed.0.try_wait().unwrap();
        assert!(
            ended.is_none(),
            "gl sql ended ({ended:?}) with no snapshot in data/tmp/: {:?}\n{}",
            entries(&p.join("data/tmp")),
            log(p, "killed.log")
        );
        new_snapshot(p, &[])
    });
    drop(killed); // SIGKILL mid-query
    assert!(
        dead.join("catalog.duckdb").is_file(),
        "a kill leaves the copy"
    );

    let mut live = spawn_slow_sql(p, "live.log");
    let kept = wait_for(60, "the snapshot of a second gl sql", || {
        new_snapshot(p, std::slice::from_ref(&dead))
    });
    ok(p, &["run", "fetch", "--profile", "tiny"]); // holds the data directory's lock
    assert!(
        !dead.exists(),
        "the killed reader's {} is left",
        dead.display()
    );
    assert!(
        kept.join("catalog.duckdb").is_file(),
        "the live reader's snapshot was removed"
    );
    assert!(
        live.0.try_wait().unwrap().is_none(),
        "{}",
        log(p, "live.log")
    );
    drop(live);
    ok(p, &["run", "fetch", "--profile", "tiny"]);
    assert_eq!(entries(&p.join("data/tmp")), Vec::<PathBuf>::new());
}

/// A profile of one tiny Group Loss run, for the run-directory and report leftovers.
const ONE_RUN: &str = r#"
description = "tests: one tiny run"
datasets = ["tiny_synth"]
seeds = [0]
device = "cpu"

[train]
recipe = "tiny"

[evaluate]
kmeans_restarts = 1
"#;

/// Writes `rel` (its parent made) under `root` with a few bytes.
fn put(root: &Path, rel: &str) -> PathBuf {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"left behind").unwrap();
    path
}

/// Every file under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    tiny_pipeline::files(dir).into_keys().collect()
}

/// issue 36, fault 7: temporary files a killed writer leaves beside their target —
/// `.tmpXXXXXX` / `.gl-tmp-*` in a run directory, `reports/.<profile>.old-*/previous/` and
/// staging directories in the git-tracked `reports/` — were never removed. The next writer of
/// that directory (holding its lock) removes them, and nothing else.
#[test]
fn leftovers_of_killed_writers_are_removed_by_the_next_writer_of_their_directory() {
    let dir = project();
    let p = dir.path();
    std::fs::write(p.join("pipeline/profiles/one.toml"), ONE_RUN).unwrap();
    ok(p, &["run", "--profile", "one"]);
    let runs = entries(&p.join("data/runs"));
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    let id = run.file_name().unwrap().to_str().unwrap();

    // A run directory: the temporary files of atomic writes, at its top and below.
    let before = tree(run);
    let leftovers = [
        ".tmpQ1w2E3",
        ".gl-tmp-AbC123",
        "eval/.gl-tmp-Zz9Yy8",
        "embeddings/.tmpa1b2c3",
    ];
    let ours = ["notes.txt", ".tmp-mine", "eval/.tmp"];
    for rel in leftovers.iter().chain(&ours) {
        put(run, rel);
    }
    ok(p, &["evaluate", id]);
    let mut expected: Vec<String> = before.into_iter().chain(ours.map(String::from)).collect();
    expected.sort();
    assert_eq!(tree(run), expected, "left behind in {}", run.display());

    // `reports/`: a report set aside, staging directories (named now and as before), the
    // index's temporary file; another directory and a file of the user's stay.
    let reports = p.join("reports");
    let leftovers = [
        ".one.old-Ab12Cd/previous/README.md",
        ".one.staging-Xy34Zw/tables/x.md",
        ".one.Qw12Er/README.md",
        ".gl-tmp-Tt5Uu6",
    ];
    let ours = [".drafts/x.md", "notes.txt"];
    for rel in leftovers.iter().chain(&ours) {
        put(&reports, rel);
    }
    // The `gl evaluate` above rewrote the run's evaluation by hand: its pipeline task reads
    // stale, which `gl report` refuses unless told (issue 36, fault 11).
    ok(p, &["report", "--profile", "one", "--allow-stale"]);
    let mut left = tree(&reports);
    left.retain(|f| !f.starts_with("one/"));
    assert_eq!(
        left,
        [".drafts/x.md", "README.md", "notes.txt"],
        "in reports/"
    );
    assert!(reports.join("one/README.md").is_file());
}

/// The sha256 of a file (hex).
fn sha256(path: &Path) -> String {
    grouploss::fsutil::file_sha256(path).unwrap()
}

/// issue 36, fault 8: the "read-only" `gl sql` ran `COPY … TO` (over the live catalogue too),
/// `EXPORT DATABASE`, `ATTACH` and read any file. Every statement but one query is refused,
/// naming the rule, and changes nothing; reading a file other than the catalogue is refused
/// too; an ordinary query still works.
#[test]
fn gl_sql_runs_one_query_and_touches_no_file() {
    let dir = project();
    let p = dir.path();
    ok(p, &["run", "fetch", "--profile", "tiny"]);
    let catalogue = p.join("data/catalog.duckdb");
    let digest = sha256(&catalogue);
    let export = p.join("exported");
    let attached = p.join("attached.duckdb");
    let hostile = [
        format!("COPY (select 1) TO '{}'", catalogue.display()),
        format!("COPY images TO '{}/images.csv'", p.display()),
        format!("EXPORT DATABASE '{}'", export.display()),
        "select * from read_csv('/etc/passwd')".into(),
        format!(
            "select * from read_text('{}/pipeline/stages.toml')",
            p.display()
        ),
        format!("ATTACH '{}' AS x", attached.display()),
        "SET enable_external_access=true".into(),
        "INSTALL httpfs".into(),
        "LOAD httpfs".into(),
        "PRAGMA enable_profiling".into(),
        "CREATE TABLE t AS SELECT 1".into(),
        format!("select 1; COPY (select 1) TO '{}'", catalogue.display()),
    ];
    for sql in &hostile {
        let (code, out, err) = gl(p, &["sql", sql]);
        assert_ne!(code, 0, "{sql}: was not refused: {out}{err}");
        assert!(
            err.contains("`gl sql` is read-only") && err.contains("catalog.duckdb"),
            "{sql}: no clear refusal: {err}"
        );
        assert_eq!(sha256(&catalogue), digest, "{sql}: changed the catalogue");
    }
    assert!(!export.exists() && !attached.exists(), "a file was written");
    assert!(!p.join("images.csv").exists(), "a file was written");
    let out = ok(
        p,
        &["sql", "select count(*) as n from runs", "--format", "csv"],
    );
    assert_eq!(out, "n\n0\n");
    let out = ok(
        p,
        &["sql", "select count(*) as n from images", "--format", "csv"],
    );
    assert_eq!(out, "n\n384\n");
    // A stage's own Parquet output in the data directory may be read (docs/datasets.md)…
    let images = p.join("data/datasets/tiny_synth/images.parquet");
    let sql = format!("select count(*) as n from '{}'", images.display());
    assert_eq!(ok(p, &["sql", &sql, "--format", "csv"]), "n\n384\n");
    // … but not through a path that leaves it.
    let sql = format!(
        "select * from read_text('{}/data/../pipeline/stages.toml')",
        p.display()
    );
    let (code, out, err) = gl(p, &["sql", &sql]);
    assert!(
        code != 0 && err.contains("`gl sql` is read-only"),
        "{sql}: {out}{err}"
    );
}
