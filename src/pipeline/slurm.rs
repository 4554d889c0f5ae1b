//! The Slurm executor (`gl run --executor slurm`): each fan-out stage of a batch becomes one job
//! array (`sbatch --array`), later stages depend on earlier ones (`--dependency=afterok:…
//! --kill-on-invalid-dep=yes`, so a failure cancels what follows instead of leaving it pending),
//! resources come from the profile's `[slurm]` table per stage. Every array task runs the same
//! `gl` over files with `GL_CATALOG=off`, writes its log and, when it ends, an exit file
//! (`<rc> <start> <end>`); the coordinator polls those files and `squeue` (never `sacct`:
//! accounting is often off) and records each task as it ends. Stages that need the internet or
//! the catalogue (fetch, weights, prepare, report by default) run on the coordinator.
//!
//! `<data>/pipeline/slurm/<profile>/jobs.json` lists what was submitted: `gl status` shows those
//! jobs as queued/running, `gl cancel` cancels them by job id, and a `gl run` after the
//! coordinator was killed waits for the jobs still queued and takes the finished ones' outputs
//! instead of submitting them again.

use crate::pipeline::dag::Plan;
use crate::pipeline::executor::{
    failed_dep, log_path, log_tail, Done, Ended, Executor, Local, Outcome,
};
use crate::pipeline::slurm_config::{Resources, SlurmConfig};
use crate::pipeline::task::Task;
use anyhow::{bail, ensure, Context, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One submitted task (an element of a job array).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobEntry {
    pub task: String,
    /// The array's job id; empty while its `sbatch` has not answered.
    pub job: String,
    /// The array's `--comment`, unique to one submission and recorded before it: how a job
    /// whose `sbatch` answered after the coordinator was killed is found (then by id).
    #[serde(default)]
    pub comment: String,
    pub index: usize,
    pub argv: Vec<String>,
    pub log: PathBuf,
    pub exit: PathBuf,
}

/// `<data>/pipeline/slurm/<profile>`.
pub fn state_dir(data_dir: &Path, profile: &str) -> PathBuf {
    data_dir.join("pipeline/slurm").join(profile)
}

/// The jobs a profile's `gl run` submitted (empty when none). An entry recorded just before its
/// `sbatch` (the coordinator was killed before the answer) gets its job id from the queue, by
/// its submission's comment; it stays empty when no such job is queued.
pub fn load_jobs(dir: &Path) -> Result<Vec<JobEntry>> {
    let path = dir.join("jobs.json");
    let mut jobs: Vec<JobEntry> = match std::fs::read(&path) {
        Ok(b) => {
            serde_json::from_slice(&b).with_context(|| format!("parsing {}", path.display()))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if jobs.iter().any(|e| e.job.is_empty()) {
        let by_comment = queued_comments()?;
        for e in jobs.iter_mut().filter(|e| e.job.is_empty()) {
            if let Some(job) = by_comment.get(&e.comment) {
                e.job = job.clone();
            }
        }
    }
    Ok(jobs)
}

/// `squeue -h --me <args>`: this user's queued jobs, one line each.
fn squeue(args: &[&str]) -> Result<String> {
    let out = Command::new("squeue")
        .args(["-h", "--me"])
        .args(args)
        .output()
        .context("running squeue (is Slurm's client on PATH?)")?;
    ensure!(
        out.status.success(),
        "squeue failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Comment → array job id of this user's queued jobs.
fn queued_comments() -> Result<HashMap<String, String>> {
    Ok(squeue(&["-o", "%F %k"])?
        .lines()
        .filter_map(|l| l.trim().split_once(' '))
        .map(|(job, comment)| (comment.trim().to_string(), job.to_string()))
        .collect())
}

fn save_jobs(dir: &Path, jobs: &[JobEntry]) -> Result<()> {
    crate::fsutil::write_atomic(&dir.join("jobs.json"), &serde_json::to_vec_pretty(jobs)?)
}

/// `(array job id, index)` → state (`PENDING`, `RUNNING`, …) of this user's queued jobs.
pub fn queue() -> Result<HashMap<(String, usize), String>> {
    let mut q = HashMap::new();
    for line in squeue(&["-r", "-o", "%F %K %T"])?.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [job, index, state] = f[..] {
            let index = index.parse().unwrap_or(0);
            q.insert((job.to_string(), index), state.to_string());
        }
    }
    Ok(q)
}

/// Cancels the jobs of `entries` still queued or running, by job id; returns the ids.
pub fn cancel(entries: &[JobEntry]) -> Result<Vec<String>> {
    let q = queue()?;
    let ids: BTreeSet<String> = entries
        .iter()
        .filter(|e| q.contains_key(&(e.job.clone(), e.index)))
        .map(|e| e.job.clone())
        .collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = ids.into_iter().collect();
    let status = Command::new("scancel")
        .args(&ids)
        .status()
        .context("running scancel")?;
    ensure!(
        status.success(),
        "scancel {} failed ({status})",
        ids.join(" ")
    );
    Ok(ids)
}

/// `gl:<profile>:<stage>:<pid>-<nanoseconds>`: one submission's comment, unique to it.
fn submission_comment(profile: &str, stage: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("gl:{profile}:{stage}:{}-{nanos}", std::process::id())
}

/// The tracked entries by job id and array index.
fn sorted(tracked: &HashMap<usize, JobEntry>) -> Vec<JobEntry> {
    let mut all: Vec<JobEntry> = tracked.values().cloned().collect();
    all.sort_by(|a, b| (&a.job, a.index).cmp(&(&b.job, b.index)));
    all
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Reads an exit file: `(rc, started, seconds)`.
fn read_exit(path: &Path) -> Option<(i32, SystemTime, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let f: Vec<&str> = text.split_whitespace().collect();
    let rc = f.first()?.parse().ok()?;
    let start: f64 = f.get(1).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let end: f64 = f.get(2).and_then(|v| v.parse().ok()).unwrap_or(start);
    Some((
        rc,
        UNIX_EPOCH + Duration::from_secs_f64(start.max(0.0)),
        (end - start).max(0.0),
    ))
}

/// Runs a profile's tasks through Slurm.
pub struct Slurm {
    pub local: Local,
    pub cfg: SlurmConfig,
    /// [`state_dir`] of the profile.
    pub dir: PathBuf,
    pub profile: String,
}

impl Slurm {
    fn exit_path(&self, t: &Task) -> PathBuf {
        self.dir
            .join("exit")
            .join(&t.stage)
            .join(format!("{}.exit", t.key.replace('/', "_")))
    }

    /// Writes the array script of `stage` over `tasks`.
    fn script(&self, plan: &Plan, stage: &str, tasks: &[usize]) -> Result<PathBuf> {
        let res = self
            .cfg
            .resources
            .merged(self.cfg.stages.get(stage).unwrap_or(&Resources::default()));
        let mut s = String::from("#!/bin/bash\n");
        s += &format!("#SBATCH --job-name=gl-{}-{stage}\n", self.profile);
        s += &format!("#SBATCH --array=0-{}\n", tasks.len() - 1);
        s += &format!(
            "#SBATCH --output={}\n",
            self.dir
                .join("out")
                .join(format!("{stage}-%A_%a.out"))
                .display()
        );
        for o in res.options() {
            s += &format!("#SBATCH {o}\n");
        }
        s += "# One array task = one gl stage task; the coordinating gl run indexes its outputs.\n";
        // As many libtorch threads as CPUs were allocated (an explicit --threads still wins):
        // more threads than cores makes libtorch's spinning workers crawl.
        s += "export GL_CATALOG=off\n";
        s += "export GL_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\" OMP_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"\n";
        s += "case \"$SLURM_ARRAY_TASK_ID\" in\n";
        for (k, &i) in tasks.iter().enumerate() {
            let t = &plan.tasks[i];
            let args: Vec<String> = t.argv.iter().map(|a| quote(a)).collect();
            s += &format!(
                "  {k}) log={}; exit_file={}; export {}={}; set -- {} ;;\n",
                quote(&log_path(&self.local.logs, t).display().to_string()),
                quote(&self.exit_path(t).display().to_string()),
                crate::env_vars::RUN_TASK,
                quote(&t.id()),
                args.join(" ")
            );
        }
        s += "  *) echo \"no task $SLURM_ARRAY_TASK_ID\" >&2; exit 2 ;;\nesac\n";
        s += "mkdir -p \"$(dirname \"$log\")\" \"$(dirname \"$exit_file\")\"\n";
        s += "start=$(date +%s.%N)\n";
        let gl: Vec<String> = std::iter::once(self.local.gl.display().to_string())
            .chain(self.local.global.iter().cloned())
            .map(|a| quote(&a))
            .collect();
        s += &format!("{} \"$@\" > \"$log\" 2>&1\nrc=$?\n", gl.join(" "));
        s += "printf '%s %s %s\\n' \"$rc\" \"$start\" \"$(date +%s.%N)\" > \"$exit_file.tmp\" \
              && mv \"$exit_file.tmp\" \"$exit_file\"\nexit $rc\n";
        let path = self.dir.join("scripts").join(format!("{stage}.sh"));
        crate::fsutil::write_atomic(&path, s.as_bytes())?;
        Ok(path)
    }

    fn sbatch(&self, script: &Path, after: &[String], comment: &str) -> Result<String> {
        let mut cmd = Command::new("sbatch");
        cmd.arg("--parsable").arg(format!("--comment={comment}"));
        if !after.is_empty() {
            cmd.arg(format!("--dependency=afterok:{}", after.join(":")));
            cmd.arg("--kill-on-invalid-dep=yes");
        }
        let out = cmd
            .arg(script)
            .output()
            .context("running sbatch (is Slurm's client on PATH?)")?;
        ensure!(
            out.status.success(),
            "sbatch {} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let id = text.trim().split(';').next().unwrap_or("").to_string();
        ensure!(!id.is_empty(), "sbatch printed no job id: {text:?}");
        Ok(id)
    }

    /// Submits the tasks `seg` (consecutive non-local stages of the batch) and waits for them.
    fn run_segment(
        &self,
        plan: &Plan,
        seg: &[usize],
        ok: &mut HashMap<usize, bool>,
        jobs: &mut Vec<JobEntry>,
        done: &mut Done,
    ) -> Result<()> {
        let q = queue()?;
        let earlier: HashMap<String, JobEntry> =
            jobs.drain(..).map(|e| (e.task.clone(), e)).collect();
        let mut tracked: HashMap<usize, JobEntry> = HashMap::new();
        let mut stage_jobs: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut by_stage: Vec<(String, Vec<usize>)> = Vec::new();
        for &i in seg {
            let t = &plan.tasks[i];
            // A task finished or still queued from a killed coordinator's submission: taken over.
            if let Some(e) = earlier.get(&t.id()).filter(|e| e.argv == t.argv) {
                let alive = q.contains_key(&(e.job.clone(), e.index));
                if alive || read_exit(&e.exit).is_some_and(|x| x.0 == 0) {
                    if alive {
                        stage_jobs
                            .entry(t.stage.clone())
                            .or_default()
                            .push(e.job.clone());
                    }
                    tracked.insert(i, e.clone());
                    continue;
                }
            }
            match by_stage.last_mut() {
                Some((s, v)) if *s == t.stage => v.push(i),
                _ => by_stage.push((t.stage.clone(), vec![i])),
            }
        }
        for (stage, tasks) in &by_stage {
            let needs = plan
                .stages
                .get(stage)
                .map(|s| s.needs.clone())
                .unwrap_or_default();
            let mut after: Vec<String> = needs
                .iter()
                .flat_map(|n| stage_jobs.get(n).cloned().unwrap_or_default())
                .collect();
            after.sort();
            after.dedup();
            for &i in tasks {
                let _ = std::fs::remove_file(self.exit_path(&plan.tasks[i]));
            }
            let script = self.script(plan, stage, tasks)?;
            // Recorded before and after every array, so a coordinator killed at any point leaves
            // no job that `gl cancel` and the next `gl run` cannot find.
            let comment = submission_comment(&plan.profile.name, stage);
            for (k, &i) in tasks.iter().enumerate() {
                let t = &plan.tasks[i];
                let entry = JobEntry {
                    task: t.id(),
                    job: String::new(),
                    comment: comment.clone(),
                    index: k,
                    argv: t.argv.clone(),
                    log: log_path(&self.local.logs, t),
                    exit: self.exit_path(t),
                };
                tracked.insert(i, entry);
            }
            *jobs = sorted(&tracked);
            save_jobs(&self.dir, jobs)?;
            let job = self.sbatch(&script, &after, &comment)?;
            tracing::info!("submitted {stage}: job array {job} ({} tasks)", tasks.len());
            stage_jobs
                .entry(stage.clone())
                .or_default()
                .push(job.clone());
            for &i in tasks {
                if let Some(e) = tracked.get_mut(&i) {
                    e.job = job.clone();
                }
            }
            *jobs = sorted(&tracked);
            save_jobs(&self.dir, jobs)?;
        }
        *jobs = sorted(&tracked);
        save_jobs(&self.dir, jobs)?;
        self.wait(plan, seg, &tracked, ok, done)
    }

    /// Polls until every task of `seg` has ended; reports them in plan order.
    fn wait(
        &self,
        plan: &Plan,
        seg: &[usize],
        tracked: &HashMap<usize, JobEntry>,
        ok: &mut HashMap<usize, bool>,
        done: &mut Done,
    ) -> Result<()> {
        let mut pending: Vec<usize> = seg.to_vec();
        while !pending.is_empty() {
            let q = queue()?;
            let mut left = Vec::new();
            for &i in &pending {
                let e = &tracked[&i];
                let deps_done = plan.tasks[i]
                    .deps
                    .iter()
                    .all(|d| !pending.contains(d) || ok.contains_key(d));
                let alive = q.contains_key(&(e.job.clone(), e.index));
                let ended = match read_exit(&e.exit) {
                    _ if !deps_done => None,
                    Some((rc, started, seconds)) => Some(Ended {
                        executor: "slurm",
                        outcome: match rc {
                            0 => Outcome::Succeeded,
                            _ => Outcome::Failed(format!(
                                "slurm job {}_{} exited {rc}; log {}: {}",
                                e.job,
                                e.index,
                                e.log.display(),
                                log_tail(&e.log, 5)
                            )),
                        },
                        started,
                        seconds,
                    }),
                    // Gone from the queue without an exit file (re-read: it may have just ended).
                    None if !alive && read_exit(&e.exit).is_none() => {
                        Some(Ended::cancelled(match failed_dep(plan, i, ok) {
                            Some(up) => format!("{up} did not succeed (slurm job {}_{} cancelled)", e.job, e.index),
                            None => format!(
                                "slurm job {}_{} ended without an exit status (cancelled, time limit or node failure; see {})",
                                e.job,
                                e.index,
                                e.log.display()
                            ),
                        }))
                    }
                    None => None,
                };
                match ended {
                    Some(ended) => {
                        let good = done(i, ended)?;
                        ok.insert(i, good);
                        // Recorded now: its exit file no longer means "finished, not recorded".
                        let _ = std::fs::remove_file(&e.exit);
                    }
                    None => left.push(i),
                }
            }
            // SIGTERM/SIGINT to `gl run`: stop waiting (the jobs stay queued; the next
            // `gl run` adopts them, `gl cancel` cancels them).
            crate::interrupt::check()?;
            if left.len() == pending.len() {
                std::thread::sleep(Duration::from_secs_f64(self.cfg.poll_seconds.max(0.1)));
            }
            pending = left;
        }
        Ok(())
    }
}

impl Executor for Slurm {
    fn name(&self) -> &str {
        "slurm"
    }

    fn execute(&self, plan: &Plan, batch: &[usize], done: &mut Done) -> Result<()> {
        // Slurm opens each array task's output file before the script runs: the folder must exist.
        let out = self.dir.join("out");
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let mut jobs = load_jobs(&self.dir)?;
        let mut ok: HashMap<usize, bool> = HashMap::new();
        let local = |t: &Task| self.cfg.local_stages.contains(&t.stage);
        let mut k = 0;
        while k < batch.len() {
            let i = batch[k];
            if local(&plan.tasks[i]) {
                let good = match failed_dep(plan, i, &ok) {
                    Some(up) => done(i, Ended::cancelled(format!("{up} did not succeed")))?,
                    None => {
                        let mut good = false;
                        self.local.execute(plan, &[i], &mut |i, ended| {
                            good = done(i, ended)?;
                            Ok(good)
                        })?;
                        good
                    }
                };
                ok.insert(i, good);
                k += 1;
                continue;
            }
            let end = batch[k..]
                .iter()
                .position(|&j| local(&plan.tasks[j]))
                .map_or(batch.len(), |p| k + p);
            let seg: Vec<usize> = batch[k..end].to_vec();
            // Tasks whose upstream already failed are not submitted.
            let (dead, live): (Vec<usize>, Vec<usize>) = seg
                .iter()
                .partition(|&&i| failed_dep(plan, i, &ok).is_some());
            for i in dead {
                let up = failed_dep(plan, i, &ok).unwrap_or_default();
                let good = done(i, Ended::cancelled(format!("{up} did not succeed")))?;
                ok.insert(i, good);
            }
            if !live.is_empty() {
                self.run_segment(plan, &live, &mut ok, &mut jobs, done)?;
            }
            k = end;
        }
        Ok(())
    }
}

/// Checks that Slurm's client commands answer (before submitting anything).
pub fn check_available() -> Result<()> {
    match Command::new("squeue").args(["-h", "--me"]).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => bail!(
            "the Slurm executor needs a reachable Slurm: squeue failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => bail!("the Slurm executor needs Slurm's client commands (squeue, sbatch): {e}"),
    }
}
