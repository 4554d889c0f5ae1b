//! Running the `gl` binary of this build inside a test project directory.

use std::path::Path;
use std::process::Command;

/// `gl ARGS… --project-dir PROJECT` with extra environment; (exit code, stdout, stderr).
pub fn run(project: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gl"))
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
