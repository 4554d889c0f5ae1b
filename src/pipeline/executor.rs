//! Where stage tasks run. Each task is its own `gl` process over files; an executor starts a
//! batch of tasks and reports each one's outcome, a task only after the tasks of the batch it
//! needs. The runner records every outcome in the catalogue (the single writer): this is the seam
//! a cluster scheduler plugs into ([`super::slurm`]).

use crate::pipeline::dag::Plan;
use crate::pipeline::gpus::Gpus;
use crate::pipeline::progress::Live;
use crate::pipeline::task::Task;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

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

/// This machine, up to `jobs` tasks at a time: `gl <global options> <task argv>`.
#[derive(Debug, Clone)]
pub struct Local {
    pub gl: PathBuf,
    /// `--project-dir`, `--data-dir`, `--threads` as the coordinator got them.
    pub global: Vec<String>,
    /// Where task logs go (`<data>/pipeline/logs`).
    pub logs: PathBuf,
    /// Tasks run at once (a task starts once every batch task it needs has succeeded).
    pub jobs: usize,
    /// The GPUs tasks are spread over (none: no task gets `CUDA_VISIBLE_DEVICES`).
    pub gpus: Gpus,
    /// The live progress line, told of every start (`None`: no progress).
    pub live: Option<Arc<Live>>,
}

/// A task of the batch while its process runs.
struct Running {
    index: usize,
    child: Child,
    started: SystemTime,
    clock: Instant,
    /// Its position in [`Gpus::devices`], when it was given a device.
    gpu: Option<usize>,
}

/// A task still running when the batch is abandoned (an error on the way out) is killed, so no
/// task outlives the coordinator's batch.
impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Local {
    /// The running `gl` itself, with `global` options.
    pub fn current(global: Vec<String>, logs: PathBuf) -> Result<Self> {
        Ok(Local {
            gl: std::env::current_exe().context("locating the running gl")?,
            global,
            logs,
            jobs: 1,
            gpus: Gpus::default(),
            live: None,
        })
    }

    /// Runs one task to completion, its output in its log.
    pub fn run(&self, task: &Task) -> Result<()> {
        let status = self
            .spawn(task, None)?
            .wait()
            .with_context(|| format!("waiting for {}", self.gl.display()))?;
        self.check(task, status)
    }

    /// Starts one task, its output in its log; on GPU `gpu` (a device index) when given one,
    /// which the log's first line names.
    fn spawn(&self, task: &Task, gpu: Option<usize>) -> Result<Child> {
        use std::io::Write;
        let log = log_path(&self.logs, task);
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(&self.gl);
        if let Some(g) = gpu {
            writeln!(out, "gl run: CUDA_VISIBLE_DEVICES={g}")
                .with_context(|| format!("writing {}", log.display()))?;
            cmd.env("CUDA_VISIBLE_DEVICES", g.to_string());
        }
        cmd.args(&self.global)
            .args(&task.argv)
            .env(crate::env_vars::RUN_TASK, task.id())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        dies_with_parent(&mut cmd);
        cmd.spawn()
            .with_context(|| format!("starting {}", self.gl.display()))
    }

    /// Tasks running on each device (per position of [`Gpus::devices`]).
    fn load(&self, running: &[Running]) -> Vec<usize> {
        let mut load = vec![0; self.gpus.devices.len()];
        for p in running.iter().filter_map(|r| r.gpu) {
            load[p] += 1;
        }
        load
    }

    /// The error of a task that exited with `status`, naming its log.
    fn check(&self, task: &Task, status: ExitStatus) -> Result<()> {
        let log = log_path(&self.logs, task);
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

/// The task gets SIGTERM when the coordinator dies, however it dies (SIGKILL included), so no
/// task outlives its `gl run` and the data lock it held: a second `gl run` cannot start a
/// second writer beside an orphan. (Linux `PR_SET_PDEATHSIG`; tasks are spawned from the
/// coordinator's main thread, which lives as long as it does.)
#[cfg(target_os = "linux")]
fn dies_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The coordinator died before the call above: die now instead of running orphaned.
            if libc::getppid() != parent {
                libc::_exit(143);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn dies_with_parent(_cmd: &mut Command) {}

impl Executor for Local {
    fn name(&self) -> &str {
        "local"
    }

    fn execute(&self, plan: &Plan, batch: &[usize], done: &mut Done) -> Result<()> {
        let mut ok: HashMap<usize, bool> = HashMap::new();
        let mut pending: Vec<usize> = batch.to_vec();
        let mut running: Vec<Running> = Vec::new();
        let mut cursor = 0;
        while !pending.is_empty() || !running.is_empty() {
            if let Some(sig) = crate::interrupt::received() {
                return stop(running, crate::interrupt::Interrupted(sig), done);
            }
            // Start (or cancel) every pending task whose batch dependencies have all ended.
            let mut k = 0;
            while k < pending.len() && running.len() < self.jobs.max(1) {
                let i = pending[k];
                let waits = plan.tasks[i]
                    .deps
                    .iter()
                    .any(|d| pending.contains(d) || running.iter().any(|r| r.index == *d));
                if waits {
                    k += 1;
                    continue;
                }
                let gpu = match self.gpus.wants(&plan.tasks[i].argv) {
                    true => match self.gpus.pick(&self.load(&running), cursor) {
                        Some(p) => Some(p),
                        None => {
                            k += 1; // every device is busy: a task without one may start
                            continue;
                        }
                    },
                    false => None,
                };
                pending.remove(k);
                if let Some(up) = failed_dep(plan, i, &ok) {
                    let good = done(i, Ended::cancelled(format!("{up} did not succeed")))?;
                    ok.insert(i, good);
                    continue;
                }
                let (started, clock) = (SystemTime::now(), Instant::now());
                let device = gpu.map(|p| self.gpus.devices[p]);
                match self.spawn(&plan.tasks[i], device) {
                    Ok(child) => {
                        if let Some(p) = gpu {
                            cursor = p + 1;
                        }
                        if let Some(live) = &self.live {
                            live.started(i, device);
                        }
                        running.push(Running {
                            index: i,
                            child,
                            started,
                            clock,
                            gpu,
                        })
                    }
                    Err(e) => {
                        let ended = Ended {
                            outcome: Outcome::Failed(format!("{e:#}")),
                            executor: "local",
                            started,
                            seconds: 0.0,
                        };
                        let good = done(i, ended)?;
                        ok.insert(i, good);
                    }
                }
                k = 0;
            }
            if running.is_empty() {
                if pending.is_empty() {
                    break;
                }
                bail!("no task of the batch can start: a dependency cycle among {pending:?}");
            }
            // Wait for any running task to end; report it.
            let (pos, status) = loop {
                let mut ended = None;
                for (pos, r) in running.iter_mut().enumerate() {
                    if let Some(st) = r.child.try_wait().context("waiting for a task")? {
                        ended = Some((pos, st));
                        break;
                    }
                }
                match (ended, crate::interrupt::received()) {
                    (Some(e), _) => break e,
                    (None, Some(sig)) => {
                        return stop(running, crate::interrupt::Interrupted(sig), done)
                    }
                    (None, None) => {
                        if let Some(live) = &self.live {
                            live.tick();
                        }
                        std::thread::sleep(Duration::from_millis(50))
                    }
                }
            };
            let r = running.remove(pos);
            let outcome = match self.check(&plan.tasks[r.index], status) {
                Ok(()) => Outcome::Succeeded,
                Err(e) => Outcome::Failed(format!("{e:#}")),
            };
            let ended = Ended {
                outcome,
                executor: "local",
                started: r.started,
                seconds: r.clock.elapsed().as_secs_f64(),
            };
            let good = done(r.index, ended)?;
            ok.insert(r.index, good);
        }
        Ok(())
    }
}

/// How long a task stopped by the coordinator may take to stop (it records its state at its
/// next safe point) before it is killed.
const STOP_PATIENCE: Duration = Duration::from_secs(120);

/// The coordinator got SIGTERM/SIGINT: each running task gets SIGTERM and is waited for (killed
/// after [`STOP_PATIENCE`]), then reported cancelled ("stopped by …") so the runner re-indexes
/// what it left; tasks not started stay unstarted. Returns the interruption as the error.
fn stop(
    mut running: Vec<Running>,
    why: crate::interrupt::Interrupted,
    done: &mut Done,
) -> Result<()> {
    for r in &running {
        // SAFETY: kill(2) on the pid of a child not yet reaped (so not reused).
        unsafe {
            libc::kill(r.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_PATIENCE;
    for r in &mut running {
        while r.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = r.child.kill();
                let _ = r.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for r in running.drain(..) {
        let ended = Ended {
            outcome: Outcome::Cancelled(format!("{why}: gl run was interrupted")),
            executor: "local",
            started: r.started,
            seconds: r.clock.elapsed().as_secs_f64(),
        };
        done(r.index, ended)?;
    }
    Err(why.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::dag::Stages;
    use std::os::unix::fs::PermissionsExt;

    fn task(key: &str, deps: Vec<usize>) -> Task {
        Task::fixture(key, deps)
    }

    /// A fake `gl`: appends `start <task>` and `end <task>` to a journal around a short sleep,
    /// and fails for task `bad`.
    fn fake_gl(dir: &Path) -> PathBuf {
        let gl = dir.join("gl");
        let journal = dir.join("journal");
        std::fs::write(
            &gl,
            format!(
                "#!/bin/sh\necho \"start $1\" >> {j}\nsleep 0.4\necho \"end $1\" >> {j}\n[ \"$1\" != bad ]\n",
                j = journal.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&gl, std::fs::Permissions::from_mode(0o755)).unwrap();
        gl
    }

    fn plan(tasks: Vec<Task>) -> Plan {
        let profile = serde_json::from_value(serde_json::json!({
            "datasets": ["x"], "seeds": [0], "train": {"recipe": "demo"}
        }))
        .unwrap();
        Plan {
            profile,
            stages: Stages { stages: Vec::new() },
            tasks,
            tuning: Vec::new(),
        }
    }

    /// a and b are independent, c needs a, d needs bad: with 2 jobs a and b overlap, c starts
    /// only after a ended, d is cancelled, and every outcome is reported after its dependencies'.
    #[test]
    fn parallel_tasks_respect_dependencies() {
        let dir = tempfile::tempdir().unwrap();
        let local = Local {
            gl: fake_gl(dir.path()),
            global: Vec::new(),
            logs: dir.path().join("logs"),
            jobs: 2,
            gpus: Gpus::default(),
            live: None,
        };
        let p = plan(vec![
            task("a", vec![]),
            task("b", vec![]),
            task("c", vec![0]),
            task("bad", vec![]),
            task("d", vec![3]),
        ]);
        let mut reported = Vec::new();
        local
            .execute(&p, &[0, 1, 2, 3, 4], &mut |i, e| {
                reported.push((p.tasks[i].key.clone(), e.outcome.clone()));
                Ok(e.outcome == Outcome::Succeeded)
            })
            .unwrap();
        let journal = std::fs::read_to_string(dir.path().join("journal")).unwrap();
        let lines: Vec<&str> = journal.lines().collect();
        let at = |l: &str| lines.iter().position(|x| *x == l).unwrap();
        assert!(at("start b") < at("end a"), "a and b overlap: {lines:?}");
        assert!(at("end a") < at("start c"), "c waits for a: {lines:?}");
        assert!(!lines.contains(&"start d"), "d never starts: {lines:?}");
        let pos = |k: &str| reported.iter().position(|r| r.0 == k).unwrap();
        assert!(pos("a") < pos("c") && pos("bad") < pos("d"));
        assert!(matches!(reported[pos("bad")].1, Outcome::Failed(_)));
        assert!(matches!(reported[pos("d")].1, Outcome::Cancelled(_)));
        assert_eq!(reported.len(), 5);
    }

    /// One job runs the batch in plan order, one task at a time.
    #[test]
    fn one_job_is_sequential() {
        let dir = tempfile::tempdir().unwrap();
        let local = Local {
            gl: fake_gl(dir.path()),
            global: Vec::new(),
            logs: dir.path().join("logs"),
            jobs: 1,
            gpus: Gpus::default(),
            live: None,
        };
        let p = plan(vec![task("a", vec![]), task("b", vec![])]);
        local.execute(&p, &[0, 1], &mut |_, _| Ok(true)).unwrap();
        let journal = std::fs::read_to_string(dir.path().join("journal")).unwrap();
        assert_eq!(journal, "start a\nend a\nstart b\nend b\n");
    }

    /// A fake `gl` that journals `start|end <task> <CUDA_VISIBLE_DEVICES or ->`.
    fn device_gl(dir: &Path) -> PathBuf {
        let gl = dir.join("gl");
        let j = dir.join("journal").display().to_string();
        let line = |w: &str| format!("echo \"{w} $1 ${{CUDA_VISIBLE_DEVICES:--}}\" >> {j}\n");
        let script = format!("#!/bin/sh\n{}sleep 0.3\n{}", line("start"), line("end"));
        std::fs::write(&gl, script).unwrap();
        std::fs::set_permissions(&gl, std::fs::Permissions::from_mode(0o755)).unwrap();
        gl
    }

    /// Six computing tasks and one that computes nothing on 3 fake GPUs with 4 jobs: a device
    /// runs one task at a time, every device is used, the task without `--device` gets none.
    #[test]
    fn tasks_are_spread_over_the_gpus_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let local = Local {
            gl: device_gl(dir.path()),
            global: Vec::new(),
            logs: dir.path().join("logs"),
            jobs: 4,
            gpus: Gpus {
                devices: vec![0, 1, 2],
                per_device: 1,
                cpu_tasks: true,
            },
            live: None,
        };
        let mut tasks: Vec<Task> = (0..6).map(|k| task(&format!("t{k}"), vec![])).collect();
        for t in &mut tasks {
            t.argv.extend(["--device".to_string(), "cpu".to_string()]);
        }
        tasks.push(task("plain", vec![]));
        let p = plan(tasks);
        local
            .execute(&p, &[0, 1, 2, 3, 4, 5, 6], &mut |_, _| Ok(true))
            .unwrap();
        let journal = std::fs::read_to_string(dir.path().join("journal")).unwrap();
        let mut busy: HashMap<String, usize> = HashMap::new();
        let mut used = std::collections::BTreeSet::new();
        for l in journal.lines() {
            let w: Vec<&str> = l.split(' ').collect();
            let (what, key, dev) = (w[0], w[1], w[2].to_string());
            assert_eq!(dev == "-", key == "plain", "{journal}");
            if dev == "-" {
                continue;
            }
            used.insert(dev.clone());
            let n = busy.entry(dev).or_default();
            match what {
                "start" => *n += 1,
                _ => *n -= 1,
            }
            assert!(*n <= 1, "two tasks at once on one device: {journal}");
        }
        assert_eq!(used.len(), 3, "{journal}");
    }
}
