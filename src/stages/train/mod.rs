//! `gl train`: a whole run from the resolved configuration to the run directory — crops
//! prepared (idempotent), class-disjoint splits, the network and its initial weights, RAdam,
//! then per epoch: train, evaluate validation and test Recall@K, checkpoint (atomic), update the
//! selected model, commit `state.json` — until the recipe's last epoch, or earlier when
//! `patience` epochs brought no better validation metric. `--resume` continues from the last
//! commit exactly.
//!
//! In parts: [`inputs`] (crops, splits, open or resume the run directory), [`trainee`] (the
//! network and optimiser, built or restored, and one epoch), the checkpointer and the selection
//! rule of the training library ([`crate::train::checkpoint`], [`crate::train::selection`]), and
//! an [`Observer`] that hears of every epoch — the stage prints nothing itself ([`lines`] has
//! the lines `gl train` prints).

pub mod guard;
pub mod inputs;
pub mod lines;
pub mod trainee;

use crate::project::Project;
use crate::train::checkpoint::Checkpointer;
use crate::train::config::{CheckedConfig, TrainConfig};
use crate::train::criterion::Criterion;
use crate::train::epoch::StepRecord;
use crate::train::run_dir::{EpochRecord, RunDir, RunState, RunSummary, Untrained};
use crate::train::selection::{self, Rule};
use crate::train::tensorboard::Board;
use anyhow::Result;
use inputs::Inputs;
use std::path::PathBuf;
use std::time::Instant;
use tch::Device;
use trainee::Trainee;

/// Resolved settings of one `gl train` invocation.
#[derive(Debug, Clone)]
pub struct Settings {
    pub project: Project,
    pub dataset: crate::names::Name,
    pub profile: String,
    /// Checked once when it was resolved.
    pub config: CheckedConfig,
    pub seed: u64,
    pub device: Device,
    /// Device kind, kernel pin and threads: part of the run's identity.
    pub execution: crate::numerics::Execution,
    pub run_id: String,
    pub run_dir: PathBuf,
    pub resume: bool,
    pub progress: bool,
}

/// What a finished `gl train` hands back.
#[derive(Debug)]
pub struct Outcome {
    pub run_dir: RunDir,
    pub epochs: Vec<EpochRecord>,
    pub summary: RunSummary,
}

/// What a run tells its caller as it goes.
pub trait Observer {
    /// The untrained network's Recall@K, measured before the first epoch.
    fn untrained(&mut self, _u: &Untrained, _ks: &[usize]) {}
    /// An epoch trained and evaluated, before it is committed.
    fn epoch(&mut self, _r: &EpochRecord, _ks: &[usize]) {}
    /// The run directory after each commit (every epoch, then the summary): index it here.
    fn committed(&mut self, _dir: &RunDir) -> Result<()> {
        Ok(())
    }
}

/// Runs (or resumes) the training run `s` describes, as the run directory's one writer
/// ([`RunDir::lock`]); a run that fails records why in `failed.json` (cleared when it is
/// resumed), so the catalogue can tell a failed run from one still running or killed — a panic
/// of libtorch (out of memory) included ([`guard`]); one stopped by a signal
/// ([`crate::interrupt`]) records nothing and reads `interrupted`.
pub fn run(s: &Settings, obs: &mut dyn Observer) -> Result<Outcome> {
    let run_dir = RunDir::new(s.run_dir.clone());
    let _writer = run_dir.lock()?;
    run_dir.clear_failure()?;
    let out = guard::catching_panics(&s.config, s.device, || run_locked(s, &run_dir, obs));
    match &out {
        // Stopped by SIGTERM/SIGINT between steps: no error to record, the run reads
        // `interrupted` and resumes from its last commit.
        Err(e) if crate::interrupt::of(e).is_some() => {}
        Err(e) => run_dir.record_failure(e),
        Ok(_) => {}
    }
    out
}

fn run_locked(s: &Settings, run_dir: &RunDir, obs: &mut dyn Observer) -> Result<Outcome> {
    let started = Instant::now();
    let cfg = &s.config;
    let inputs = Inputs::prepare(s)?;
    let env = crate::numerics::environment::Environment::current(
        &s.project.root,
        s.execution.kernels,
        &crate::device::name(s.device),
    );
    let state = inputs::open_run_dir(run_dir, &inputs.run_config, &env, s.resume)?;
    if let Some(done) = finished(run_dir, state.as_ref(), cfg)? {
        return Ok(done);
    }
    let parts = cfg.objective == crate::train::objective::Objective::GroupLoss;
    let mut board = Board::open(&run_dir.root, parts, &cfg.recall_ks);
    let out = train_epochs(s, run_dir, obs, &inputs, state, started, board.as_mut());
    // Only a completed run ends its HParams session: TensorBoard keeps the first session end
    // of a run's files, so a failure recorded here would outlive the resume that completes it.
    if let (Some(b), Ok(o)) = (board.as_mut(), &out) {
        b.completed(o.epochs.len());
    }
    out
}

/// The epochs still to train, each committed, then `run.json`; every step and committed epoch
/// also goes to the run's TensorBoard log `board`.
fn train_epochs(
    s: &Settings,
    run_dir: &RunDir,
    obs: &mut dyn Observer,
    inputs: &Inputs,
    state: Option<RunState>,
    started: Instant,
    mut board: Option<&mut Board>,
) -> Result<Outcome> {
    let cfg = &s.config;
    let mut t = Trainee::build(s, inputs, run_dir, state)?;
    let criterion = Criterion::new(cfg)?;
    if t.state.epoch == 0 && cfg.eval_untrained && !run_dir.untrained_path().exists() {
        let rec = t.untrained(s, inputs)?;
        obs.untrained(&rec, &cfg.recall_ks);
        run_dir.write_json(&run_dir.untrained_path(), &rec)?;
    }
    let checkpointer = Checkpointer::new(run_dir);
    let rule = Rule::of(cfg);
    for e in t.state.epoch + 1..=cfg.epochs {
        // Decided from the committed state: a run killed after its stopping epoch's commit
        // stops here when resumed.
        if selection::early_stop(cfg, &t.state).is_some() {
            break;
        }
        crate::interrupt::check()?;
        let mut log_step = |r: &StepRecord| {
            if let Some(b) = board.as_deref_mut() {
                b.step(r);
            }
        };
        let record = t.epoch(s, inputs, run_dir, &criterion, e, Some(&mut log_step))?;
        tracing::info!(?record, "epoch done");
        obs.epoch(&record, &cfg.recall_ks);
        checkpointer.commit(&t.vs, &t.opt, rule, &mut t.state, &record)?;
        t.records.push(record);
        run_dir.write_epochs(&t.records)?;
        run_dir.write_json(&run_dir.state_path(), &t.state)?;
        run_dir.prune(&t.state)?;
        if let (Some(b), Some(r)) = (board.as_deref_mut(), t.records.last()) {
            b.epoch(r);
        }
        obs.committed(run_dir)?;
    }
    let summary = summarise(run_dir, cfg, &t.records, &t.state, started)?;
    obs.committed(run_dir)?;
    Ok(Outcome {
        run_dir: run_dir.clone(),
        epochs: t.records,
        summary,
    })
}

/// `--resume` of a finished run — all its epochs trained, or stopped early
/// ([`selection::early_stop`]) — nothing to do, its record stays as it was.
fn finished(dir: &RunDir, state: Option<&RunState>, cfg: &TrainConfig) -> Result<Option<Outcome>> {
    let done = |st: &RunState| st.epoch >= cfg.epochs || selection::early_stop(cfg, st).is_some();
    match state {
        Some(st) if done(st) && dir.summary_path().exists() => Ok(Some(Outcome {
            epochs: dir.epochs(Some(st.epoch))?,
            summary: RunDir::read_json(&dir.summary_path())?,
            run_dir: dir.clone(),
        })),
        _ => Ok(None),
    }
}

/// Writes `run.json`: test R@1 under each selection protocol, the untrained network's, and why
/// the run stopped early if it did.
fn summarise(
    dir: &RunDir,
    cfg: &TrainConfig,
    recs: &[EpochRecord],
    st: &RunState,
    started: Instant,
) -> Result<RunSummary> {
    let test_at = |ep: Option<usize>| {
        ep.and_then(|e| recs.iter().find(|r| r.epoch == e))
            .and_then(|r| r.test_recall.clone())
    };
    let untrained: Option<Untrained> = match dir.untrained_path().exists() {
        true => Some(RunDir::read_json(&dir.untrained_path())?),
        false => None,
    };
    let summary = RunSummary {
        status: "completed".into(),
        epochs: recs.len(),
        selection: serde_json::to_value(cfg.selection)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        selected_epoch: st.selected_epoch,
        test_recall_last: recs.last().and_then(|r| r.test_recall.clone()),
        test_recall_val_selected: test_at(st.best_val.map(|b| b.epoch)),
        test_recall_best_on_test: test_at(st.best_test.map(|b| b.epoch)),
        test_recall_untrained: untrained.as_ref().and_then(|u| u.test_recall.clone()),
        val_recall_untrained: untrained.and_then(|u| u.val_recall),
        seconds: started.elapsed().as_secs_f64(),
        stopped: selection::early_stop(cfg, st),
    };
    dir.write_json(&dir.summary_path(), &summary)?;
    Ok(summary)
}
