//! `gl export catalog PATH` and notebooks (docs/python.md): a real Python process with the
//! `duckdb` package (the notebook) holding a snapshot open never delays `gl run`; one holding
//! the live catalogue gets a message naming the snapshot command; and the snapshot never
//! lands on the live file or on anything that is not an earlier snapshot.
#![cfg(feature = "catalog")] // the catalogue

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::reference_npz::python;
use crate::common::tiny_pipeline::{self, gl, project, ran};

/// A notebook: `$GL_PYTHON` with `duckdb` holding a database open (read-only or read-write)
/// for as long as the value lives, answering one query per line.
struct Notebook {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

const NOTEBOOK: &str = r#"
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "ro")
print("open", flush=True)
for line in sys.stdin:
    print(con.execute(line).fetchall(), flush=True)
"#;

impl Notebook {
    fn open(db: &Path, read_only: bool) -> Self {
        let mut child = Command::new(python())
            .args(["-c", NOTEBOOK])
            .arg(db)
            .arg(if read_only { "ro" } else { "rw" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting python (GL_PYTHON, with requirements-dev.txt: `just setup`)");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut nb = Notebook {
            child,
            stdin,
            stdout,
        };
        assert_eq!(nb.line(), "open", "python could not open {}", db.display());
        nb
    }

    fn line(&mut self) -> String {
        let mut s = String::new();
        self.stdout.read_line(&mut s).unwrap();
        s.trim_end().to_string()
    }

    /// The rows of `sql` as Python prints them: `[(3,)]`.
    fn ask(&mut self, sql: &str) -> String {
        writeln!(self.stdin, "{sql}").unwrap();
        self.line()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Notebook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn live(p: &Path) -> PathBuf {
    p.join("data/catalog.duckdb")
}

fn fetched() -> tempfile::TempDir {
    let dir = project();
    let (code, out, err) = gl(dir.path(), &["run", "fetch", "--profile", "tiny"]);
    assert_eq!(code, 0, "{out}{err}");
    dir
}

/// `gl export catalog PATH` (PATH relative to the project), asserting it succeeds.
fn export(p: &Path, path: &str) -> String {
    let (code, out, err) = gl(
        p,
        &["export", "catalog", &p.join(path).display().to_string()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("wrote a snapshot of"), "{out}");
    out
}

/// `select count(*) from runs` as `gl sql` reads it from the live catalogue.
fn live_runs(p: &Path) -> String {
    let (code, out, err) = gl(p, &["sql", "select count(*) from runs", "--format", "csv"]);
    assert_eq!(code, 0, "{out}{err}");
    out.lines().nth(1).unwrap().to_string()
}

/// A notebook holding a snapshot open while `gl run` trains, embeds, evaluates and reports:
/// the run never waits for the catalogue, and the notebook keeps reading its copy, also after
/// the copy is replaced by a newer one.
#[test]
fn a_notebook_holding_a_snapshot_never_delays_gl_run() {
    let dir = fetched();
    let p = dir.path();
    std::fs::create_dir(p.join("notebooks")).unwrap();
    let out = export(p, "notebooks/catalog.duckdb");
    let snap = p.join("notebooks/catalog.duckdb");
    let mode = std::fs::metadata(&snap).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o444, "{out}");
    assert!(!snap.with_extension("duckdb.wal").exists());
    let mut nb = Notebook::open(&snap, true);
    assert_eq!(nb.ask("select count(*) from runs"), "[(0,)]");

    let started = Instant::now();
    let (code, out, err) = gl(p, &["run", "--profile", "tiny"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(ran(&out).contains(&"train".to_string()), "{out}");
    assert!(
        !format!("{out}{err}").contains("waiting for the catalogue"),
        "{out}{err}"
    );
    let runs = live_runs(p);
    assert_ne!(runs, "0");
    eprintln!(
        "gl run took {:.1}s with the snapshot held",
        started.elapsed().as_secs_f64()
    );

    // Still open, still its copy; a new export replaces the file, not what the notebook reads.
    assert_eq!(nb.ask("select count(*) from runs"), "[(0,)]");
    export(p, "notebooks/catalog.duckdb");
    assert_eq!(nb.ask("select count(*) from runs"), "[(0,)]");
    let mut fresh = Notebook::open(&snap, true);
    assert_eq!(
        fresh.ask("select count(*) from runs"),
        format!("[({runs},)]")
    );
    let names: Vec<String> = std::fs::read_dir(p.join("notebooks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["catalog.duckdb"],
        "nothing else left beside the snapshot"
    );
}

/// A notebook holding the live catalogue, read-only or read-write (DuckDB's lock blocks
/// writers either way): a writer that gives up names the snapshot command and the holder, not
/// a bare lock error; `gl run` waits saying the same and carries on once the notebook closes.
#[test]
fn a_notebook_holding_the_live_catalogue_is_told_to_read_a_snapshot() {
    let dir = fetched();
    let p = dir.path();
    for read_only in [true, false] {
        let nb = Notebook::open(&live(p), read_only);
        let started = Instant::now();
        let (code, out, err) = gl(p, &["index-runs", &p.join("data").display().to_string()]);
        assert_ne!(code, 0, "{out}{err}");
        for said in [
            "is held by another process (a notebook?): read a copy instead",
            "`gl export catalog PATH`",
            &format!("(PID {})", nb.pid()),
        ] {
            assert!(
                err.contains(said),
                "read_only={read_only}: no {said:?} in\n{err}"
            );
        }
        assert!(
            !err.contains("read-only mode"),
            "DuckDB's hint would block gl too\n{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    let nb = Notebook::open(&live(p), true);
    let log = p.join("run.log");
    let mut run = Command::new(crate::common::gl_cli::bin())
        .args([
            "--threads",
            "1",
            "run",
            "fetch",
            "--profile",
            "tiny",
            "--force",
        ])
        .arg("--project-dir")
        .arg(p)
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let said = || std::fs::read_to_string(&log).unwrap();
    let end = Instant::now() + Duration::from_secs(60);
    while !said().contains("waiting for the catalogue") {
        assert!(
            Instant::now() < end,
            "gl run did not say it waits:\n{}",
            said()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(said().contains("`gl export catalog PATH`"), "{}", said());
    assert!(run.try_wait().unwrap().is_none(), "{}", said());
    drop(nb);
    assert!(run.wait().unwrap().success(), "{}", said());
    assert_eq!(tiny_pipeline::status(p, &[])["fetch:tiny_synth"], "fresh");
}

/// The snapshot never lands on the live catalogue (by name, symlink or hard link) or its log,
/// nor on a directory, a symlink, a file that is not a snapshot, a snapshot someone writes, or
/// a directory that does not exist; each is refused naming the path, and the live catalogue
/// and the other file keep their bytes.
#[test]
fn gl_export_catalog_refuses_paths_that_are_not_a_snapshot() {
    let dir = fetched();
    let p = dir.path();
    let before = std::fs::read(live(p)).unwrap();
    std::os::unix::fs::symlink(live(p), p.join("link.duckdb")).unwrap();
    std::fs::hard_link(live(p), p.join("hard.duckdb")).unwrap();
    std::fs::write(p.join("notes.ipynb"), b"{\"cells\": []}").unwrap();
    std::fs::create_dir(p.join("dir")).unwrap();
    export(p, "old.duckdb");
    std::fs::write(p.join("old.duckdb.wal"), b"log").unwrap();
    let refused = [
        ("data/catalog.duckdb", "is the live catalogue"),
        ("data/../data/catalog.duckdb", "is the live catalogue"),
        ("data/catalog.duckdb.wal", "is the live catalogue"),
        ("link.duckdb", "is the live catalogue"),
        ("hard.duckdb", "is the live catalogue"),
        ("notes.ipynb", "is not a DuckDB database"),
        ("dir", "is a directory"),
        ("old.duckdb", "old.duckdb.wal is beside"),
        ("missing/catalog.duckdb", "create it first"),
    ];
    for (path, why) in refused {
        let arg = p.join(path).display().to_string();
        let (code, out, err) = gl(p, &["export", "catalog", &arg]);
        assert_ne!(code, 0, "{path}: {out}{err}");
        assert!(err.contains(why) && err.contains(&arg), "{path}: {err}");
    }
    assert_eq!(std::fs::read(live(p)).unwrap(), before);
    assert_eq!(
        std::fs::read(p.join("notes.ipynb")).unwrap(),
        b"{\"cells\": []}"
    );
    assert_eq!(std::fs::read(p.join("old.duckdb.wal")).unwrap(), b"log");

    std::os::unix::fs::symlink(p.join("old.duckdb"), p.join("other.duckdb")).unwrap();
    let arg = p.join("other.duckdb").display().to_string();
    let (code, _, err) = gl(p, &["export", "catalog", &arg]);
    assert!(code != 0 && err.contains("is a symbolic link"), "{err}");
}
