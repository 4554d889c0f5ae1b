//! Where stage tasks run. Each task is its own `gl` process over files; the executor only starts
//! it and says whether it succeeded. The runner records the result in the catalogue afterwards:
//! this is the seam a cluster scheduler plugs into.

use crate::pipeline::dag::Task;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs one task to completion, its output in `log`.
pub trait Executor {
    fn name(&self) -> &str;
    fn run(&self, task: &Task, log: &Path) -> Result<()>;
}

/// This machine, one task at a time: `gl <global options> <task argv>`.
#[derive(Debug, Clone)]
pub struct Local {
    pub gl: PathBuf,
    /// `--project-dir`, `--data-dir`, `--threads` as the coordinator got them.
    pub global: Vec<String>,
}

impl Local {
    /// The running `gl` itself, with `global` options.
    pub fn current(global: Vec<String>) -> Result<Self> {
        Ok(Local {
            gl: std::env::current_exe().context("locating the running gl")?,
            global,
        })
    }
}

impl Executor for Local {
    fn name(&self) -> &str {
        "local"
    }

    fn run(&self, task: &Task, log: &Path) -> Result<()> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let out =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let status = Command::new(&self.gl)
            .args(&self.global)
            .args(&task.argv)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .status()
            .with_context(|| format!("starting {}", self.gl.display()))?;
        if !status.success() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "gl {} failed ({status}); log {}: {}",
                task.argv.join(" "),
                log.display(),
                tail.join(" | ")
            );
        }
        Ok(())
    }
}
