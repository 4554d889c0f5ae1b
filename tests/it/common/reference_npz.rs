//! Fixtures a PyTorch reference script writes in the same test run, never committed bits: the
//! script runs with `GL_PYTHON` (else `~/.cache/grouploss/venv/bin/python`, else `python3`;
//! `just setup` installs requirements-dev.txt) into a temporary directory, on this machine and
//! in this environment (the same CPU kernels as the Rust side), so a bit-exact comparison never
//! compares with numbers another CPU made.

use anyhow::{ensure, Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use tch::Tensor;

/// The Python with the project's requirements.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("GL_PYTHON") {
        return p.into();
    }
    let venv = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/grouploss/venv/bin/python"))
        .filter(|p| p.is_file());
    venv.unwrap_or_else(|| "python3".into())
}

/// Runs `script OUT.npz` and reads back every array it wrote.
pub fn generate(script: &str) -> Result<BTreeMap<String, Tensor>> {
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("fixture.npz");
    let python = python();
    let run = Command::new(&python)
        .arg(script)
        .arg(&out)
        .output()
        .with_context(|| format!("starting {}", python.display()))?;
    ensure!(
        run.status.success(),
        "{} {script} failed ({}); set GL_PYTHON to a python with requirements-dev.txt \
         installed (`just setup`):\n{}",
        python.display(),
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let tensors = Tensor::read_npz(&out).with_context(|| format!("reading {}", out.display()))?;
    Ok(tensors.into_iter().collect())
}
