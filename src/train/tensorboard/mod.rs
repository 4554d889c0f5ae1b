//! TensorBoard event files of a training run, in `<run>/tensorboard/`, so that
//! `tensorboard --logdir data/runs` shows every run while it trains and compares runs in its
//! HParams tab. Written without TensorFlow or a TensorBoard crate: the record framing
//! ([`record`]) and the few protobuf messages ([`proto`]) are a couple of hundred lines.
//!
//! What a run writes ([`Board`]):
//! * per optimiser step (step = the run's step count, 1-based): `train/loss` and, for the
//!   Group Loss, its parts `train/loss_group` and `train/loss_ce`; `lr/body` and
//!   `lr/classifier` (the two RAdam groups); `time/step_seconds` (the step) and
//!   `time/data_seconds` (waiting for the loader);
//! * per epoch (step = the epoch): the means `epoch/loss` (and parts), `epoch/lr`,
//!   `epoch/images_per_second`, `epoch/train_seconds`, `epoch/eval_seconds`, and where the
//!   epoch was evaluated `val/recall@K`, `val/map_at_r`, `test/recall@K`, `test/map_at_r` —
//!   the numbers of `epochs.jsonl`;
//! * the HParams plugin's experiment and session start (the recipe as in `config.json`) when
//!   the run starts or resumes, its session end (success) when it completes.
//!
//! Event files are append-only logs, not committed outputs: each record goes to the file in
//! one write as it is made (TensorBoard reads it at once on this machine), and the file is
//! fsynced after every epoch and at least every 30 s while steps are written (a shared file
//! system shows it to other machines then). A logging error never stops training: it is
//! reported once and the run goes on without its event file.

pub mod proto;
pub mod record;

use crate::train::epoch::StepRecord;
use crate::train::run_dir::EpochRecord;
use anyhow::{Context, Result};
use proto::{HValue, Metric, Msg, Status};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The longest time records may wait before the file is fsynced.
pub const SYNC_EVERY: Duration = Duration::from_secs(30);

/// The subdirectory of a run directory that holds its event files.
pub const DIR: &str = "tensorboard";

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// This machine's name, reduced to characters safe in a file name.
fn host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates, and we stop at the first NUL.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name: String = match rc {
        0 => buf
            .iter()
            .take_while(|&&b| b != 0)
            .map(|&b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' => b as char,
                _ => '_',
            })
            .collect(),
        _ => String::new(),
    };
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// One event file, written record by record.
pub struct EventWriter {
    file: File,
    path: PathBuf,
    synced: Instant,
}

impl EventWriter {
    /// A new event file in `dir` (created if needed), named as TensorFlow names them
    /// (`events.out.tfevents.<secs>.<host>.<pid>.gl`), beginning with its file-version event.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let secs = wall_time() as u64;
        let base = format!(
            "events.out.tfevents.{secs}.{}.{}.gl",
            host(),
            std::process::id()
        );
        let mut n = 0;
        let (file, path) = loop {
            let name = match n {
                0 => base.clone(),
                _ => format!("{base}.{n}"),
            };
            let path = dir.join(name);
            match File::options().write(true).create_new(true).open(&path) {
                Ok(f) => break (f, path),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        };
        let mut w = EventWriter {
            file,
            path,
            synced: Instant::now(),
        };
        w.write(&proto::file_version_event(wall_time()))?;
        Ok(w)
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event (its encoded bytes) as one record, in one write; fsyncs when the
    /// last fsync is [`SYNC_EVERY`] old.
    pub fn write(&mut self, event: &[u8]) -> Result<()> {
        self.file
            .write_all(&record::frame(event))
            .with_context(|| format!("writing {}", self.path.display()))?;
        if self.synced.elapsed() >= SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }

    /// One summary event of `values` at `step`.
    pub fn summary(&mut self, step: i64, values: &[Msg]) -> Result<()> {
        self.write(&proto::summary_event(wall_time(), step, values))
    }

    /// Makes what was written durable (and visible on a shared file system).
    pub fn sync(&mut self) -> Result<()> {
        self.synced = Instant::now();
        self.file
            .sync_data()
            .with_context(|| format!("syncing {}", self.path.display()))
    }
}

/// The hparams of a run: `dataset`, `profile`, `seed` and every key of the recipe (`train`)
/// of its `config.json`; a list becomes its JSON text, a null is left out.
pub fn hparams_of(config: &serde_json::Value) -> Vec<(String, HValue)> {
    let value = |v: &serde_json::Value| match v {
        serde_json::Value::Null => None,
        serde_json::Value::Bool(b) => Some(HValue::Bool(*b)),
        serde_json::Value::Number(n) => n.as_f64().map(HValue::Number),
        serde_json::Value::String(s) => Some(HValue::Text(s.clone())),
        other => Some(HValue::Text(other.to_string())),
    };
    let top = ["dataset", "profile", "seed"]
        .into_iter()
        .filter_map(|k| Some((k.to_string(), value(config.get(k)?)?)));
    let train = config
        .get("train")
        .and_then(|t| t.as_object())
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), value(v)?)));
    top.chain(train).collect()
}

/// The HParams tab's metrics: validation MAP@R first, then validation R@`k1`, and the same on
/// the test split.
fn metrics(k1: Option<usize>) -> Vec<Metric> {
    let mut out = Vec::new();
    for (split, validation) in [("val", true), ("test", false)] {
        out.push(Metric {
            tag: format!("{split}/map_at_r"),
            display: format!("{split} MAP@R"),
            validation,
        });
        if let Some(k) = k1 {
            out.push(Metric {
                tag: format!("{split}/recall@{k}"),
                display: format!("{split} R@{k}"),
                validation,
            });
        }
    }
    out
}

/// A training run's TensorBoard log: what [`crate::stages::train`] writes through it is in the
/// module's documentation. Errors are reported once (a warning) and end the logging, never the
/// training.
pub struct Board {
    writer: Option<EventWriter>,
    /// The objective has a Group Loss part and a CE part worth their own curves.
    parts: bool,
    recall_ks: Vec<usize>,
}

impl Board {
    /// Opens a new event file in `run_dir/tensorboard` and writes the run's hparams from its
    /// `config.json`; `None` (after a warning) when that fails.
    pub fn open(run_dir: &Path, parts: bool, recall_ks: &[usize]) -> Option<Board> {
        let mut b = Board {
            writer: None,
            parts,
            recall_ks: recall_ks.to_vec(),
        };
        let started = || -> Result<EventWriter> {
            let cfg_path = run_dir.join("config.json");
            let text = std::fs::read(&cfg_path)
                .with_context(|| format!("reading {}", cfg_path.display()))?;
            let config: serde_json::Value = serde_json::from_slice(&text)
                .with_context(|| format!("parsing {}", cfg_path.display()))?;
            let hp = hparams_of(&config);
            let mut w = EventWriter::create(&run_dir.join(DIR))?;
            let now = wall_time();
            let exp = proto::experiment(&hp, &metrics(recall_ks.first().copied()), now);
            w.summary(0, &[exp, proto::session_start(&hp, now)])?;
            w.sync()?;
            Ok(w)
        };
        b.writer = b.check(started());
        b.writer.as_ref()?;
        Some(b)
    }

    /// The event file written.
    pub fn path(&self) -> Option<&Path> {
        self.writer.as_ref().map(EventWriter::path)
    }

    fn check<T>(&mut self, r: Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!("TensorBoard log stopped (training goes on): {e:#}");
                self.writer = None;
                None
            }
        }
    }

    fn with(&mut self, f: impl FnOnce(&mut EventWriter) -> Result<()>) {
        if let Some(w) = self.writer.as_mut() {
            let r = f(w);
            self.check(r);
        }
    }

    /// One optimiser step's losses, learning rates and times.
    pub fn step(&mut self, s: &StepRecord) {
        let mut v = vec![proto::scalar("train/loss", s.values.loss)];
        if self.parts {
            v.push(proto::scalar("train/loss_group", s.values.loss_group));
            v.push(proto::scalar("train/loss_ce", s.values.loss_ce));
        }
        for (g, lr) in s.lrs.iter().enumerate() {
            let tag = match g {
                0 => "lr/body".to_string(),
                1 => "lr/classifier".to_string(),
                g => format!("lr/group{g}"),
            };
            v.push(proto::scalar(&tag, *lr));
        }
        v.push(proto::scalar("time/step_seconds", s.seconds));
        v.push(proto::scalar("time/data_seconds", s.loader_wait));
        self.with(|w| w.summary(s.step as i64, &v));
    }

    /// One committed epoch's record, then an fsync.
    pub fn epoch(&mut self, r: &EpochRecord) {
        let mut v = vec![proto::scalar("epoch/loss", r.loss)];
        if self.parts {
            v.push(proto::scalar("epoch/loss_group", r.loss_group));
            v.push(proto::scalar("epoch/loss_ce", r.loss_ce));
        }
        v.push(proto::scalar("epoch/lr", r.lr));
        v.push(proto::scalar(
            "epoch/images_per_second",
            r.images_per_second,
        ));
        v.push(proto::scalar("epoch/train_seconds", r.train_seconds));
        v.push(proto::scalar("epoch/eval_seconds", r.eval_seconds));
        for (split, recall, map) in [
            ("val", &r.val_recall, r.val_map_at_r),
            ("test", &r.test_recall, r.test_map_at_r),
        ] {
            for (k, x) in self.recall_ks.iter().zip(recall.iter().flatten()) {
                v.push(proto::scalar(&format!("{split}/recall@{k}"), *x));
            }
            if let Some(m) = map {
                v.push(proto::scalar(&format!("{split}/map_at_r"), m));
            }
        }
        self.with(|w| {
            w.summary(r.epoch as i64, &v)?;
            w.sync()
        });
    }

    /// The session's end, as a success, when the run has completed its `epochs`; then an
    /// fsync. A failed or interrupted run writes none: TensorBoard keeps the first session end
    /// it reads of a run, so the end of a failed attempt would outlive the resume that
    /// completes it (`failed.json` and `gl status` say that a run failed).
    pub fn completed(&mut self, epochs: usize) {
        self.with(|w| {
            let end = proto::session_end(Status::Success, wall_time());
            w.summary(epochs as i64, &[end])?;
            w.sync()
        });
    }
}
