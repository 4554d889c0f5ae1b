//! Where stage tasks run. Each task is its own `gl` process over files; an executor starts a
//! batch of tasks and reports each one's outcome, a task only after the tasks of the batch it
//! needs. The runner records every outcome in the catalogue (the single writer): this is the seam
//! a cluster scheduler plugs into ([`super::slurm`]).

use crate::pipeline::dag::{Plan, Task};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime};

/// How one task of a batch ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded,
    Failed(String),
    /// Never ran, or was stopped before it ended: a task it needs failed, it was cancelled, the
    /// scheduler gave up on it. It is recorded nowhere, so it stays stale (or missing).
    Cancelled(String),
}

/// A task's outcome with when it started and how long it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub outcome: Outcome,
    /// Which executor ran it (`local`, `slurm`), recorded with it.
    pub executor: &'static str,
    pub started: SystemTime,
    pub seconds: f64,
}

impl Ended {
    /// A task that never ran.
    pub fn cancelled(why: String) -> Self {
        Ended {
            outcome: Outcome::Cancelled(why),
            executor: "",
            started: SystemTime::now(),
            seconds: 0.0,
        }
    }
}

/// Called once per task of the batch with its plan index and how it ended; says whether the
/// task counts as succeeded once recorded (a task that exits 0 without its outputs does not).
pub type Done<'a> = dyn FnMut(usize, Ended) -> Result<bool> + 'a;

/// Runs batches of tasks.
pub trait Executor {
    fn name(&self) -> &str;
    /// Runs the tasks `batch` (plan indices in plan order) of `plan`; `done` gets each outcome,
    /// a task's only after those of the batch tasks it needs.
    fn execute(&self, plan: &Plan, batch: &[usize], done: &mut Done) -> Result<()>;
}

/// `<logs>/<stage>/<task>.log`: one log per task, the same for every executor.
pub fn log_path(logs: &Path, t: &Task) -> PathBuf {
    logs.join(&t.stage)
        .join(format!("{}.log", t.key.replace('/', "_")))
}

/// The last `n` lines of a log, joined with ` | ` (for an error message).
pub fn log_tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(n).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// A dependency of task `i` in the batch that did not succeed, if any.
pub fn failed_dep(plan: &Plan, i: usize, ok: &HashMap<usize, bool>) -> Option<String> {
    plan.tasks[i]
        .deps
        .iter()
        .find(|d| ok.get(d) == Some(&false))
        .map(|&d| plan.tasks[d].id())
}

/// This machine, one task at a time: `gl <global options> <task argv>`.
#[derive(Debug, Clone)]
pub struct Local {
    pub gl: PathBuf,
    /// `--project-dir`, `--data-dir`, `--threads` as the coordinator got them.
    pub global: Vec<String>,
    /// Where task logs go (`<data>/pipeline/logs`).
    pub logs: PathBuf,
}

impl Local {
    /// The running `gl` itself, with `global` options.
    pub fn current(global: Vec<String>, logs: PathBuf) -> Result<Self> {
        Ok(Local {
            gl: std::env::current_exe().context("locating the running gl")?,
            global,
            logs,
        })
    }

    /// Runs one task to completion, its output in its log.
    pub fn run(&self, task: &Task) -> Result<()> {
        let log = log_path(&self.logs, task);
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let status = Command::new(&self.gl)
            .args(&self.global)
            .args(&task.argv)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .status()
            .with_context(|| format!("starting {}", self.gl.display()))?;
        if !status.success() {
            bail!(
                "gl {} failed ({status}); log {}: {}",
                task.argv.join(" "),
                log.display(),
                log_tail(&log, 5)
            );
        }
        Ok(())
    }
}

impl Executor for Local {
    fn name(&self) -> &str {
        "local"
    }

    fn execute(&self, plan: &Plan, batch: &[usize], done: &mut Done) -> Result<()> {
        let mut ok: HashMap<usize, bool> = HashMap::new();
        for &i in batch {
            let ended = match failed_dep(plan, i, &ok) {
                Some(up) => Ended::cancelled(format!("{up} did not succeed")),
                None => {
                    let (started, clock) = (SystemTime::now(), Instant::now());
                    let outcome = match self.run(&plan.tasks[i]) {
                        Ok(()) => Outcome::Succeeded,
                        Err(e) => Outcome::Failed(format!("{e:#}")),
                    };
                    Ended {
                        outcome,
                        executor: "local",
                        started,
                        seconds: clock.elapsed().as_secs_f64(),
                    }
                }
            };
            let good = done(i, ended)?;
            ok.insert(i, good);
        }
        Ok(())
    }
}
