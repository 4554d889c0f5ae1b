//! A tiny pipeline project for the stage-runner tests: a synthetic dataset (`gl synth`; 48
//! classes whose colours are jittered per image, so retrieval is far from perfect), a tiny
//! CNN for 1 epoch, a `tiny` profile with two seeds, a softmax baseline and an ensemble; and
//! helpers to run `gl` in it and read `gl run` / `gl status`.
#![allow(dead_code)]

use super::gl_cli;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

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
