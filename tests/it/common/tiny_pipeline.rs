//! A tiny pipeline project for the stage-runner tests: a synthetic dataset (`gl synth`; 48
//! classes whose colours are jittered per image, so retrieval is far from perfect), a tiny
//! CNN for 1 epoch, a `tiny` profile with two seeds, a softmax baseline and an ensemble; and
//! helpers to run `gl` in it and read `gl run` / `gl status` / the catalogue's runs; and what
//! the fault tests add to it: smaller profiles, the project with its crops prepared, and the
//! crop cache file to damage.
#![allow(dead_code)]

use super::gl_cli;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const TINY_PROFILE: &str = r#"
description = "tests: synthetic data, tiny CNN, 1 epoch"
datasets = ["tiny_synth"]
seeds = [0, 1]
device = "cpu"
ensemble = true

[train]
recipe = "tiny"

[finetune]
recipe = "tiny"
set = ['objective="cross_entropy"']
seeds = [0]

[evaluate]
kmeans_restarts = 1
"#;

/// Appended to the project's copy of pipeline/train.toml.
pub const TINY_RECIPE: &str = r#"
[datasets.tiny_synth]
backbone = "tiny_cnn"
init = "none"
classes_per_batch = 4
samples_per_class = 3
input_size = 24
resize = 32
crop_scale_min = 0.5
loader_threads = 1
eval_batch = 64

[profiles.tiny]
epochs = 1
lr = 1e-3
lr_milestones = []
val_fraction = 0.25
"#;

/// One Group Loss run of the tiny recipe (500 epochs), long enough to be stopped mid-training.
pub const SLOW_PROFILE: &str = r#"
description = "tests: one long tiny run"
datasets = ["tiny_synth"]
seeds = [0]
device = "cpu"
ensemble = false

[train]
recipe = "tiny"
set = ['epochs=500']
"#;

/// One seed, no fine-tuning, no ensemble: fetch, prepare, train, embed, evaluate and report,
/// quickly — the smallest whole pipeline.
pub const ONE_RUN_PROFILE: &str = r#"
description = "tests: one tiny run"
datasets = ["tiny_synth"]
seeds = [0]
device = "cpu"
ensemble = false

[train]
recipe = "tiny"

[evaluate]
kmeans_restarts = 1
"#;

/// A project with the tiny profile (`extra` appended to it) and its dataset fetched.
pub fn project_with(extra: &str) -> tempfile::TempDir {
    let dir = bare_project(TINY_RECIPE);
    let p = dir.path();
    std::fs::write(
        p.join("pipeline/profiles/tiny.toml"),
        format!("{TINY_PROFILE}{extra}"),
    )
    .unwrap();
    let (code, out, err) = gl(
        p,
        &[
            "synth",
            "--name",
            "tiny_synth",
            "--classes",
            "48",
            "--per-class",
            "8",
            "--size",
            "16",
            "--jitter",
            "60",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    dir
}

/// A project with the repository's registry, stages and recipes (`recipes` appended to its
/// `train.toml`), and no data.
pub fn bare_project(recipes: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(p.join("pipeline/profiles")).unwrap();
    for f in ["datasets.toml", "stages.toml", "published.toml"] {
        std::fs::copy(repo.join("pipeline").join(f), p.join("pipeline").join(f)).unwrap();
    }
    let train = std::fs::read_to_string(repo.join("pipeline/train.toml")).unwrap();
    std::fs::write(p.join("pipeline/train.toml"), train + recipes).unwrap();
    dir
}

pub fn gl_env(p: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut a = vec!["--threads", "1"];
    a.extend_from_slice(args);
    gl_cli::run(p, &a, env)
}

pub fn gl(p: &Path, args: &[&str]) -> (i32, String, String) {
    gl_env(p, args, &[])
}

/// `gl status` as stage:task → status.
pub fn status(p: &Path, extra: &[&str]) -> BTreeMap<String, String> {
    let mut a = vec!["status", "--profile", "tiny", "--format", "json"];
    a.extend_from_slice(extra);
    let (code, out, err) = gl(p, &a);
    assert_eq!(code, 0, "{out}{err}");
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    rows.iter()
        .map(|r| {
            (
                format!(
                    "{}:{}",
                    r["stage"].as_str().unwrap(),
                    r["task"].as_str().unwrap()
                ),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `gl sql` as rows of fields (the csv without its header; no field may hold a comma).
pub fn sql_rows(p: &Path, q: &str) -> Vec<Vec<String>> {
    let (code, out, err) = gl(p, &["sql", q, "--format", "csv"]);
    assert_eq!(code, 0, "{q}: {err}");
    out.lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .map(|f| f.trim_matches('"').to_string())
                .collect()
        })
        .collect()
}

/// The stages of the `gl run` lines that say "ran".
pub fn ran(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.contains(" ran in "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

pub fn project() -> tempfile::TempDir {
    project_with("")
}

/// Every file of `dir` (recursively) with its bytes.
pub fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// The tiny project with profile `name` (`text` in `pipeline/profiles/<name>.toml`), its
/// dataset fetched and its crops prepared by `gl run fetch|prepare --profile <name>`.
pub fn prepared(name: &str, text: &str) -> tempfile::TempDir {
    let dir = project();
    let p = dir.path();
    std::fs::write(p.join(format!("pipeline/profiles/{name}.toml")), text).unwrap();
    for stage in ["fetch", "prepare"] {
        let (code, out, err) = gl(p, &["run", stage, "--profile", name]);
        assert_eq!(code, 0, "{out}{err}");
    }
    dir
}

/// The crop cache file of the tiny dataset (the only one).
pub fn crops_file(p: &Path) -> PathBuf {
    let cache = p.join("data/cache/tiny_synth");
    let key = std::fs::read_dir(&cache).unwrap().next().unwrap().unwrap();
    key.path().join("crops.parquet")
}

/// An offset inside the first JPEG stored in `bytes` (its SOI marker, plus 200 bytes): a byte
/// to damage that leaves a crop cache a valid Parquet file.
pub fn inside_first_jpeg(bytes: &[u8]) -> usize {
    let soi = bytes
        .windows(3)
        .position(|w| w == [0xff, 0xd8, 0xff])
        .expect("a JPEG in the cache");
    soi + 200
}

/// Flips every bit of the byte at `offset` of `path` (in place, same length).
pub fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

/// `gl train` of the tiny dataset with the tiny profile as run `run_id`, quiet, `extra` after.
pub fn train_args<'a>(run_id: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "train",
        "--dataset",
        "tiny_synth",
        "--profile",
        "tiny",
        "--run-id",
        run_id,
        "--quiet",
    ];
    a.extend_from_slice(extra);
    a
}

/// The `state.json` a run directory's last committed checkpoint wrote (none before the first).
pub fn run_state(run: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(run.join("state.json")).ok()?).ok()
}

/// `runs.status` of every run, as "run_id status" lines, read from the catalogue as it is now
/// (`gl sql`; no `gl index-runs` first).
pub fn run_statuses(p: &Path) -> String {
    let q = "select run_id || ' ' || status as s from runs order by run_id";
    let (code, out, err) = gl(p, &["sql", q, "--format", "csv"]);
    assert_eq!(code, 0, "{out}{err}");
    out
}
