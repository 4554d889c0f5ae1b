//! The run directory: the contract between the trainer and everything after it (evaluation,
//! the catalogue, reports), so a run can happen on a GPU box or a cluster node and be indexed
//! elsewhere. Layout of `data/runs/<run id>/`:
//!
//! * `config.json` — [`RunConfig`]: dataset, profile, seed, device, the resolved
//!   [`TrainConfig`], the crop cache and the splits; written once, before the first epoch.
//! * `epochs.jsonl` — one [`EpochRecord`] per completed epoch.
//! * `checkpoint-eNNN/` — `model.safetensors` + `optimizer.safetensors` after epoch NNN.
//! * `selected-eNNN.safetensors` — the model of the best epoch so far under the run's selection
//!   rule (kept for the reload-at-lr-drop policy and for evaluation).
//! * `state.json` — [`RunState`], the commit point: written last (atomically) after an epoch's
//!   files are fsynced, it names the checkpoint and selected model that are complete, with
//!   their sha256, checked whenever they are read back. Files of an epoch that crashed before
//!   its `state.json` are ignored and overwritten on `--resume`.
//! * `writer.lock` — held (flock) by the one process writing the directory.
//! * `untrained.json` — [`Untrained`]: Recall@K of the initial network (`eval_untrained`).
//! * `run.json` — [`RunSummary`], when the run has finished.
//! * `failed.json` — [`Failure`], when the last attempt failed (removed when it is resumed).

use crate::fsutil::write_atomic;
use crate::train::config::{SelectMetric, TrainConfig};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a run is, fixed at its start.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunConfig {
    pub run_id: String,
    pub dataset: String,
    pub profile: String,
    pub seed: u64,
    /// Device as requested and as resolved (`cpu`, `cuda:0`).
    pub device: String,
    pub train: TrainConfig,
    /// Crop cache directory and its key.
    pub crops: PathBuf,
    pub crops_key: String,
    pub dataset_fingerprint: String,
    pub train_classes: usize,
    pub val_classes: usize,
    pub test_classes: usize,
    pub train_images: usize,
    pub val_images: usize,
    pub test_images: usize,
    pub gl_version: String,
    pub libtorch: String,
    /// Seconds since the Unix epoch.
    pub created_unix: u64,
    /// [`crate::numerics::TRAINING`] of the code that started the run (1 for runs older than
    /// the version): part of the run's identity.
    #[serde(default = "numerics_before_versioning")]
    pub numerics: u32,
    /// Device kind, kernel pin and threads: part of the run's identity (`None` for runs older
    /// than it, which therefore never resume under the current code).
    #[serde(default)]
    pub execution: Option<crate::numerics::Execution>,
}

fn numerics_before_versioning() -> u32 {
    1
}

/// Metrics of one completed epoch.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub lr: f64,
    /// Mean over the epoch's batches: total loss, its Group Loss part and its CE part.
    pub loss: f64,
    pub loss_group: f64,
    pub loss_ce: f64,
    pub batches: usize,
    pub images: usize,
    pub train_seconds: f64,
    pub eval_seconds: f64,
    pub images_per_second: f64,
    /// Recall@K (fractions) for `recall_ks`, when evaluated; `None` when the run has no
    /// validation classes or skipped evaluation this epoch.
    pub val_recall: Option<Vec<f64>>,
    pub test_recall: Option<Vec<f64>>,
    /// The model was reloaded from the selected epoch before this epoch (official lr drop).
    pub reloaded_from: Option<usize>,
    /// MAP@R (a fraction) of the same embeddings as `val_recall` and `test_recall`; `None`
    /// where those are, where no query has a positive, and in records written before it.
    #[serde(default)]
    pub val_map_at_r: Option<f64>,
    #[serde(default)]
    pub test_map_at_r: Option<f64>,
}

#[cfg(test)]
impl EpochRecord {
    /// An evaluated epoch for tests: validation R@1 `val_r1` (then 1.0), test R@1 0.5 (then
    /// 0.9), the MAP@R values given, everything else fixed.
    pub(crate) fn fixture(
        epoch: usize,
        val_r1: f64,
        val_map_at_r: Option<f64>,
        test_map_at_r: Option<f64>,
    ) -> Self {
        EpochRecord {
            epoch,
            lr: 1e-3,
            loss: 1.0,
            loss_group: 0.5,
            loss_ce: 0.5,
            batches: 1,
            images: 4,
            train_seconds: 0.1,
            eval_seconds: 0.1,
            images_per_second: 40.0,
            val_recall: Some(vec![val_r1, 1.0]),
            test_recall: Some(vec![0.5, 0.9]),
            reloaded_from: None,
            val_map_at_r,
            test_map_at_r,
        }
    }
}

/// Recall@K of the initial network (`untrained.json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Untrained {
    pub val_recall: Option<Vec<f64>>,
    pub test_recall: Option<Vec<f64>>,
    pub seconds: f64,
}

/// Best epoch under the run's `select_metric`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Best {
    pub epoch: usize,
    /// What `value` measures; `recall_at_1` in states written before the key existed.
    #[serde(default)]
    pub metric: SelectMetric,
    /// The metric at `epoch` (a fraction); `recall_at_1` in states written before `metric`.
    #[serde(alias = "recall_at_1")]
    pub value: f64,
}

/// The commit point after each epoch (the default: before the first).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunState {
    /// Last completed epoch.
    pub epoch: usize,
    /// `checkpoint-eNNN` directory of that epoch.
    pub checkpoint: String,
    /// File of the selected model so far (`selected-eNNN.safetensors`).
    pub selected: Option<String>,
    pub selected_epoch: Option<usize>,
    pub best_val: Option<Best>,
    pub best_test: Option<Best>,
    /// sha256 of every file this state commits to (the checkpoint's files and the selected
    /// model), keyed by path relative to the run directory; empty in runs from before it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sha256: BTreeMap<String, String>,
}

impl RunState {
    /// Records the digest of the committed file `rel` (fsynced first, so the digest and the
    /// bytes on disk agree after a crash).
    pub fn commit_file(&mut self, dir: &RunDir, rel: &str) -> Result<()> {
        let path = dir.root.join(rel);
        let f =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", path.display()))?;
        self.sha256
            .insert(rel.to_string(), crate::fsutil::file_sha256(&path)?);
        Ok(())
    }

    /// Forgets the digests of files the state no longer names.
    pub fn forget_stale(&mut self) {
        let ckpt = format!("{}/", self.checkpoint);
        let selected = self.selected.clone();
        self.sha256
            .retain(|k, _| k.starts_with(&ckpt) || Some(k) == selected.as_ref());
    }

    /// The path of the committed file `rel`, after checking it against its recorded sha256
    /// (an error naming the file when it differs: it was damaged after it was written).
    pub fn verified(&self, dir: &RunDir, rel: &str) -> Result<PathBuf> {
        let path = dir.root.join(rel);
        if let Some(want) = self.sha256.get(rel) {
            let got = crate::fsutil::file_sha256(&path)?;
            if &got != want {
                bail!(
                    "{} does not match the sha256 recorded in {} ({got} ≠ {want}): the file \
                     is damaged; retrain the run or restore the file",
                    path.display(),
                    dir.state_path().display()
                );
            }
        }
        Ok(path)
    }
}

/// Why the last attempt at a run failed (`failed.json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    pub error: String,
    /// Seconds since the Unix epoch.
    pub at_unix: u64,
}

/// How far a run directory got, as the catalogue's `runs.status` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// `run.json` is there.
    Completed,
    /// Not finished and a process holds its writer lock.
    Running,
    /// Not finished, nobody writing it, and its last attempt recorded an error.
    Failed,
    /// Not finished, nobody writing it, no error recorded: killed or stopped
    /// (`gl train --resume` continues it).
    Interrupted,
}

impl Progress {
    pub fn as_str(self) -> &'static str {
        match self {
            Progress::Completed => "completed",
            Progress::Running => "running",
            Progress::Failed => "failed",
            Progress::Interrupted => "interrupted",
        }
    }
}

/// The finished run: the three numbers the report puts side by side.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunSummary {
    pub status: String,
    pub epochs: usize,
    /// Selection rule of the run (`val`, `test` = the paper's protocol, `last`).
    pub selection: String,
    pub selected_epoch: Option<usize>,
    /// Test Recall@K of the last epoch, of the validation-selected epoch, and of the best test
    /// epoch (selection on the test set, as the published numbers).
    pub test_recall_last: Option<Vec<f64>>,
    pub test_recall_val_selected: Option<Vec<f64>>,
    pub test_recall_best_on_test: Option<Vec<f64>>,
    /// Recall@K of the initial network, before any training step.
    pub test_recall_untrained: Option<Vec<f64>>,
    pub val_recall_untrained: Option<Vec<f64>>,
    pub seconds: f64,
    /// Why training ended before the recipe's `epochs` (`epochs` above is how many it ran);
    /// absent when it ran them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<EarlyStop>,
}

/// Why a run ended before its last epoch (`run.json`'s `stopped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `patience` epochs in a row without a strict improvement of the validation metric.
    Patience,
}

/// A run stopped early: at which epoch, out of how many, and on what evidence.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EarlyStop {
    pub reason: StopReason,
    /// The last epoch trained.
    pub epoch: usize,
    /// The recipe's `epochs`.
    pub max_epochs: usize,
    pub patience: usize,
    pub metric: SelectMetric,
    /// The best validation epoch (the selected one), `None` when validation never measured.
    pub best_epoch: Option<usize>,
}

/// Paths inside one run directory.
/// Removes the temporary files of atomic writes a killed writer left in the run (or
/// ensemble) directory `dir` and its subdirectories (`checkpoint-eNNN/`, `embeddings/`, `eval/`);
/// the caller holds `dir`'s writer lock, so no live writer is using them.
pub fn remove_temp_files(dir: &Path) {
    crate::tempfiles::remove_leftovers_or_warn(dir, 2, &crate::tempfiles::is_temp_file);
}

#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: PathBuf) -> Self {
        RunDir { root }
    }

    /// Takes the directory's writer lock (`writer.lock`): one process writes a run directory
    /// at a time — training, resuming, embedding or evaluating it — and a second is refused
    /// with the holder named. Then removes the temporary files a killed writer left in it.
    pub fn lock(&self) -> Result<crate::writer_lock::WriterLock> {
        let lock = crate::writer_lock::WriterLock::acquire(
            &self.root.join("writer.lock"),
            &format!("the run directory {}", self.root.display()),
        )?;
        remove_temp_files(&self.root);
        Ok(lock)
    }

    pub fn failure_path(&self) -> PathBuf {
        self.root.join("failed.json")
    }

    /// Records why this attempt failed (best effort: the error itself is what matters, and a
    /// directory without `config.json` is not a run yet).
    pub fn record_failure(&self, e: &anyhow::Error) {
        if !self.config_path().is_file() {
            return;
        }
        let f = Failure {
            error: format!("{e:#}"),
            at_unix: crate::clock::unix_now(),
        };
        if let Err(w) = self.write_json(&self.failure_path(), &f) {
            tracing::warn!("{w:#}");
        }
    }

    /// Forgets an earlier failed attempt (a new attempt starts).
    pub fn clear_failure(&self) -> Result<()> {
        match std::fs::remove_file(self.failure_path()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", self.failure_path().display()))
            }
            _ => Ok(()),
        }
    }

    /// How far the run got: completed, running (its writer lock is held), failed or
    /// interrupted.
    pub fn progress(&self) -> Result<Progress> {
        if self.summary_path().exists() {
            return Ok(Progress::Completed);
        }
        if crate::writer_lock::WriterLock::held(&self.root.join("writer.lock"))? {
            return Ok(Progress::Running);
        }
        Ok(match self.failure_path().exists() {
            true => Progress::Failed,
            false => Progress::Interrupted,
        })
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.json")
    }
    /// Where the run was started: [`crate::numerics::environment::Environment`].
    pub fn environment_path(&self) -> PathBuf {
        self.root.join("environment.json")
    }
    pub fn epochs_path(&self) -> PathBuf {
        self.root.join("epochs.jsonl")
    }
    pub fn state_path(&self) -> PathBuf {
        self.root.join("state.json")
    }
    pub fn untrained_path(&self) -> PathBuf {
        self.root.join("untrained.json")
    }
    pub fn summary_path(&self) -> PathBuf {
        self.root.join("run.json")
    }
    pub fn checkpoint_name(epoch: usize) -> String {
        format!("checkpoint-e{epoch:03}")
    }
    pub fn selected_name(epoch: usize) -> String {
        format!("selected-e{epoch:03}.safetensors")
    }

    pub fn write_json<T: serde::Serialize>(&self, path: &Path, value: &T) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(value)?;
        bytes.push(b'\n');
        write_atomic(path, &bytes)
    }

    pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
    }

    /// The committed state, or `None` before the first epoch completed.
    pub fn state(&self) -> Result<Option<RunState>> {
        let p = self.state_path();
        if !p.exists() {
            return Ok(None);
        }
        Self::read_json(&p).map(Some)
    }

    /// The first `upto` epoch records (all when `None`); lines past a committed state are
    /// ignored, a malformed line is an error naming the line.
    pub fn epochs(&self, upto: Option<usize>) -> Result<Vec<EpochRecord>> {
        let p = self.epochs_path();
        if !p.exists() {
            return Ok(Vec::new());
        }
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        text.lines()
            .take(upto.unwrap_or(usize::MAX))
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .with_context(|| format!("{} line {}: bad epoch record", p.display(), i + 1))
            })
            .collect()
    }

    /// Rewrites `epochs.jsonl` atomically with `records`.
    pub fn write_epochs(&self, records: &[EpochRecord]) -> Result<()> {
        let mut out = String::new();
        for r in records {
            out.push_str(&serde_json::to_string(r)?);
            out.push('\n');
        }
        write_atomic(&self.epochs_path(), out.as_bytes())
    }

    /// Removes checkpoints and selected models that `state` no longer names.
    pub fn prune(&self, state: &RunState) -> Result<()> {
        for entry in std::fs::read_dir(&self.root)
            .with_context(|| format!("listing {}", self.root.display()))?
        {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale_ckpt = name.starts_with("checkpoint-e") && name != state.checkpoint;
            let stale_sel =
                name.starts_with("selected-e") && Some(&name) != state.selected.as_ref();
            if stale_ckpt {
                std::fs::remove_dir_all(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
            } else if stale_sel {
                std::fs::remove_file(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
            }
        }
        Ok(())
    }
}
