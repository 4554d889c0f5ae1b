//! Running the `gl` binary of this build inside a test project directory.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The `gl` binary the tests run: this build's, or the one `GL_TEST_BIN` names — how a fix is
/// shown to matter: the tests of a commit run against the binary of the commit before it fail
/// (docs/development.md).
pub fn bin() -> PathBuf {
    match std::env::var_os("GL_TEST_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_gl")),
    }
}

/// `gl ARGS… --project-dir PROJECT` with extra environment; (exit code, stdout, stderr).
pub fn run(project: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .arg("--project-dir")
        .arg(project)
        .envs(env.iter().copied())
        .output()
        .expect("starting gl");
    collect(out)
}

/// (exit code, stdout, stderr) of a finished process.
pub fn collect(out: std::process::Output) -> (i32, String, String) {
    let s = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        s(out.stdout),
        s(out.stderr),
    )
}
