//! `gl run`'s live progress: tasks done / total, the running tasks by name, elapsed time and an
//! ETA from how long tasks of the same stage took before (`pipeline_tasks`), or from how long
//! this run's tasks took so far when a stage has no history. On a terminal it is one indicatif
//! bar on stderr; otherwise (a log, a pipe) a plain `progress:` line on stderr at the start, at
//! every task end and at least every [`PLAIN_EVERY`] while tasks run — a log shows where a 2,444-task profile
//! is without a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a plain line is written while nothing ends.
pub const PLAIN_EVERY: Duration = Duration::from_secs(30);

/// Seconds until the tasks left are done: each task not started takes its stage's mean, each
/// running task its stage's mean less what it has run (at least 0), the whole shared by `jobs`
/// and never less than the longest single task left (one task is not shared). A stage
/// without a mean counts the mean of the stages that have one (task counts: every task alike);
/// `None` when no stage has a mean yet.
pub fn eta(
    means: &BTreeMap<String, f64>,
    remaining: &BTreeMap<String, usize>,
    running: &[(String, f64)],
    jobs: usize,
) -> Option<f64> {
    let left = remaining.values().sum::<usize>() + running.len();
    if left == 0 {
        return Some(0.0);
    }
    if means.is_empty() {
        return None;
    }
    let fallback = means.values().sum::<f64>() / means.len() as f64;
    let mean = |stage: &str| means.get(stage).copied().unwrap_or(fallback);
    let mut work = 0.0;
    let mut longest: f64 = 0.0;
    for (stage, &n) in remaining {
        work += mean(stage) * n as f64;
        if n > 0 {
            longest = longest.max(mean(stage));
        }
    }
    for (stage, elapsed) in running {
        let rest = (mean(stage) - elapsed).max(0.0);
        work += rest;
        longest = longest.max(rest);
    }
    let parallel = jobs.max(1) as f64;
    Some((work / parallel).max(longest))
}

/// The stages of the tasks left that have no mean duration yet, whose share of [`eta`] is a
/// guess from the other stages' (shown, so a fast fetch does not pass for a training's ETA).
pub fn unmeasured(
    means: &BTreeMap<String, f64>,
    remaining: &BTreeMap<String, usize>,
    running: &[(String, f64)],
) -> Vec<String> {
    let mut out: Vec<String> = remaining
        .iter()
        .filter(|(_, &n)| n > 0)
        .map(|(s, _)| s.clone())
        .chain(running.iter().map(|(s, _)| s.clone()))
        .filter(|s| !means.contains_key(s))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `h:mm:ss`, or `m:ss` under an hour.
pub fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s / 3600 {
        0 => format!("{}:{:02}", s / 60, s % 60),
        h => format!("{h}:{:02}:{:02}", (s / 60) % 60, s % 60),
    }
}

/// Where the progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An indicatif bar on stderr (a terminal).
    Bar,
    /// `progress:` lines on stderr (a log, a pipe).
    Plain,
    /// Nothing (a dry run).
    Hidden,
}

impl Mode {
    /// A bar when stderr is a terminal, plain lines otherwise.
    pub fn for_stderr() -> Mode {
        match std::io::stderr().is_terminal() {
            true => Mode::Bar,
            false => Mode::Plain,
        }
    }
}

/// A task of the batch while it runs.
struct Running {
    index: usize,
    since: Instant,
    gpu: Option<usize>,
}

/// What the line shows, behind [`Live`]'s lock.
struct State {
    /// Per plan index of the batch: (task id, stage).
    tasks: BTreeMap<usize, (String, String)>,
    total: usize,
    done: usize,
    failed: usize,
    remaining: BTreeMap<String, usize>,
    running: Vec<Running>,
    /// Per stage: (sum of seconds, count), history and this run's ends together.
    durations: BTreeMap<String, (f64, usize)>,
    start: Instant,
    last_plain: Option<Instant>,
}

/// The live progress of one `gl run`, shared by the runner (which knows the batch, the history
/// and the ends) and the local executor (which knows the starts).
pub struct Live {
    mode: Mode,
    jobs: usize,
    bar: Option<ProgressBar>,
    state: Mutex<State>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("mode", &self.mode).finish()
    }
}

impl Live {
    /// Progress shown as `mode`, for `jobs` tasks at once.
    pub fn new(mode: Mode, jobs: usize) -> Live {
        let bar = (mode == Mode::Bar).then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template("{bar:20} {pos}/{len} tasks {wide_msg}")
            {
                bar.set_style(style);
            }
            bar
        });
        Live {
            mode,
            jobs,
            bar,
            state: Mutex::new(State {
                tasks: BTreeMap::new(),
                total: 0,
                done: 0,
                failed: 0,
                remaining: BTreeMap::new(),
                running: Vec::new(),
                durations: BTreeMap::new(),
                start: Instant::now(),
                last_plain: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The batch about to run (plan index, task id, stage) and the seconds each stage's tasks
    /// took before (succeeded runs of `pipeline_tasks`).
    pub fn begin(&self, batch: Vec<(usize, String, String)>, history: &[(String, f64)]) {
        let mut st = self.lock();
        st.total = batch.len();
        for (i, id, stage) in batch {
            *st.remaining.entry(stage.clone()).or_default() += 1;
            st.tasks.insert(i, (id, stage));
        }
        for (stage, s) in history {
            let d = st.durations.entry(stage.clone()).or_default();
            d.0 += s;
            d.1 += 1;
        }
        st.start = Instant::now();
        if let Some(bar) = &self.bar {
            bar.set_length(st.total as u64);
        }
        self.show(&mut st, true);
    }

    /// Task `i` started, on `gpu` when it was given one.
    pub fn started(&self, i: usize, gpu: Option<usize>) {
        let mut st = self.lock();
        let Some((_, stage)) = st.tasks.get(&i).cloned() else {
            return;
        };
        if let Some(n) = st.remaining.get_mut(&stage) {
            *n = n.saturating_sub(1);
        }
        st.running.push(Running {
            index: i,
            since: Instant::now(),
            gpu,
        });
    }

    /// Task `i` ended after `seconds` (a task that never ran: 0 and not `ran`); writes a line.
    pub fn ended(&self, i: usize, seconds: f64, ran: bool, ok: bool) {
        let mut st = self.lock();
        let Some((_, stage)) = st.tasks.get(&i).cloned() else {
            return;
        };
        match st.running.iter().position(|r| r.index == i) {
            Some(p) => {
                st.running.remove(p);
            }
            None => {
                if let Some(n) = st.remaining.get_mut(&stage) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        st.done += 1;
        st.failed += usize::from(!ok);
        if ran && ok {
            let d = st.durations.entry(stage).or_default();
            d.0 += seconds;
            d.1 += 1;
        }
        self.show(&mut st, true);
    }

    /// Called while tasks run: refreshes the bar, or writes a plain line when none was written
    /// for [`PLAIN_EVERY`] (and the first time).
    pub fn tick(&self) {
        let mut st = self.lock();
        self.show(&mut st, false);
    }

    /// Prints `line` on stdout without tearing the bar.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    /// Clears the bar (the task lines stay).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    fn show(&self, st: &mut State, now: bool) {
        match self.mode {
            Mode::Hidden => {}
            Mode::Bar => {
                if let Some(bar) = &self.bar {
                    bar.set_position(st.done as u64);
                    bar.set_message(self.message(st));
                }
            }
            Mode::Plain => {
                let due = st.last_plain.is_none_or(|t| t.elapsed() >= PLAIN_EVERY);
                if now || due {
                    eprintln!(
                        "progress: {}/{} tasks {}",
                        st.done,
                        st.total,
                        self.message(st)
                    );
                    st.last_plain = Some(Instant::now());
                }
            }
        }
    }

    /// `elapsed 0:12, eta 1:05; running a, b [gpu 1]` (eta `?` without any duration): the
    /// times first, so a narrow terminal cuts the names, not the ETA.
    fn message(&self, st: &State) -> String {
        let means: BTreeMap<String, f64> = st
            .durations
            .iter()
            .filter(|(_, d)| d.1 > 0)
            .map(|(s, d)| (s.clone(), d.0 / d.1 as f64))
            .collect();
        let running: Vec<(String, f64)> = st
            .running
            .iter()
            .map(|r| {
                (
                    st.tasks[&r.index].1.clone(),
                    r.since.elapsed().as_secs_f64(),
                )
            })
            .collect();
        let eta = eta(&means, &st.remaining, &running, self.jobs).map_or("?".into(), clock);
        let eta = match unmeasured(&means, &st.remaining, &running) {
            g if g.is_empty() || eta == "?" => eta,
            g => format!("~{eta} (guessed: no durations yet for {})", g.join(", ")),
        };
        let names: Vec<String> = st
            .running
            .iter()
            .map(|r| match r.gpu {
                Some(g) => format!("{} [gpu {g}]", st.tasks[&r.index].0),
                None => st.tasks[&r.index].0.clone(),
            })
            .collect();
        let failed = match st.failed {
            0 => String::new(),
            n => format!("({n} not succeeded) "),
        };
        let running = match names.is_empty() {
            true => String::new(),
            false => format!("; running {}", names.join(", ")),
        };
        format!(
            "{failed}elapsed {}, eta {eta}{running}",
            clock(st.start.elapsed().as_secs_f64())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map<T: Copy>(kv: &[(&str, T)]) -> BTreeMap<String, T> {
        kv.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    /// Four 10 s trains and two 2 s embeds left on two jobs: (40 + 4) / 2.
    #[test]
    fn remaining_work_is_shared_by_the_jobs() {
        let means = map(&[("train", 10.0), ("embed", 2.0)]);
        let left = map(&[("train", 4usize), ("embed", 2)]);
        assert_eq!(eta(&means, &left, &[], 2), Some(22.0));
        assert_eq!(eta(&means, &left, &[], 1), Some(44.0));
    }

    /// A running task counts what is left of its mean, never less than 0.
    #[test]
    fn running_tasks_count_what_is_left_of_their_mean() {
        let means = map(&[("train", 10.0)]);
        let none = map::<usize>(&[]);
        let running = vec![("train".to_string(), 4.0)];
        assert_eq!(eta(&means, &none, &running, 1), Some(6.0));
        let late = vec![("train".to_string(), 15.0)];
        assert_eq!(eta(&means, &none, &late, 1), Some(0.0));
    }

    /// More jobs than tasks left do not shorten one task: one 10 s task on 4 jobs is 10 s.
    #[test]
    fn stages_without_a_duration_are_named_as_guessed() {
        let means = map(&[("fetch", 1.0)]);
        let left = map(&[("train", 2usize), ("fetch", 0), ("embed", 1)]);
        let running = [("finetune".to_string(), 3.0)];
        assert_eq!(
            unmeasured(&means, &left, &running),
            ["embed", "finetune", "train"]
        );
        let means = map(&[("train", 9.0), ("embed", 1.0), ("finetune", 5.0)]);
        assert!(unmeasured(&means, &left, &running).is_empty());
    }

    #[test]
    fn one_long_task_bounds_the_eta() {
        let means = map(&[("train", 10.0), ("embed", 2.0)]);
        let left = map(&[("train", 1usize), ("embed", 1)]);
        assert_eq!(eta(&means, &left, &[], 4), Some(10.0));
    }

    /// A stage with no history counts the mean of the stages that have one; no history at all
    /// gives no ETA; nothing left is 0.
    #[test]
    fn stages_without_history_fall_back_to_task_counts() {
        let means = map(&[("train", 10.0), ("embed", 2.0)]);
        let left = map(&[("report", 2usize)]);
        assert_eq!(eta(&means, &left, &[], 1), Some(12.0));
        assert_eq!(eta(&BTreeMap::new(), &left, &[], 1), None);
        assert_eq!(eta(&BTreeMap::new(), &BTreeMap::new(), &[], 3), Some(0.0));
    }

    #[test]
    fn clock_reads_as_minutes_or_hours() {
        assert_eq!(clock(65.4), "1:05");
        assert_eq!(clock(3725.0), "1:02:05");
        assert_eq!(clock(-3.0), "0:00");
    }

    /// The line counts ends, names the running tasks with their GPU, and has an ETA once a
    /// stage has a duration.
    #[test]
    fn the_line_names_running_tasks_and_counts_ends() {
        let live = Live::new(Mode::Hidden, 2);
        let batch = vec![
            (0, "train:a".to_string(), "train".to_string()),
            (1, "train:b".to_string(), "train".to_string()),
        ];
        live.begin(batch, &[]);
        live.started(0, Some(1));
        let msg = live.message(&live.lock());
        assert!(msg.contains("running train:a [gpu 1]"), "{msg}");
        assert!(msg.starts_with("elapsed 0:00, eta ?; running"), "{msg}");
        live.ended(0, 3.0, true, true);
        let st = live.lock();
        assert_eq!(st.done, 1);
        let msg = live.message(&st);
        assert!(!msg.contains("eta ?") && !msg.contains("running"), "{msg}");
    }
}
