//! A throw-away project with the repository's registry and recipes and the embedded demo set
//! fetched through `gl fetch` (the real `file://` path).

use super::gl_cli;
use std::path::Path;

/// Creates the project in a new temporary directory and fetches `demo` into it.
pub fn create() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::create_dir_all(p.join("pipeline")).unwrap();
    std::fs::create_dir_all(p.join("data/demo")).unwrap();
    for f in [
        "pipeline/datasets.toml",
        "pipeline/datasets.lock",
        "pipeline/train.toml",
    ] {
        std::fs::copy(repo.join(f), p.join(f)).unwrap();
    }
    std::os::unix::fs::symlink(
        repo.join("data/demo/glyphs.tar.gz"),
        p.join("data/demo/glyphs.tar.gz"),
    )
    .unwrap();
    let (code, out, err) = gl_cli::run(p, &["fetch", "demo", "--quiet"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    dir
}

/// `gl train` of the tiny recipe on the demo set (one libtorch thread): 8 + 8 classes of 24
/// glyphs, tiny CNN from random init at 32²; `extra` adds epochs, milestones, seed, ….
pub fn tiny_train_args<'a>(run_id: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "--threads",
        "1",
        "train",
        "--dataset",
        "demo",
        "--quiet",
        "--run-id",
        run_id,
        "--profile=demo",
        "--set=backbone=\"tiny_cnn\"",
        "--set=init=\"none\"",
        "--set=class_limit=8",
        "--set=val_fraction=0.25",
        "--set=input_size=32",
        "--set=resize=36",
        "--set=lr=2e-3",
        "--set=classes_per_batch=4",
        "--set=loader_threads=2",
    ];
    a.extend_from_slice(extra);
    a
}
