//! The evaluate stage (`gl evaluate`): the metrics of a run's (or an ensemble's) embeddings,
//! written as `<dir>/eval/<model>-<split>.json` ([`EvalRecord`]) for the catalogue to index —
//! or, for `--embeddings FILE`, of embeddings made anywhere, printed and not stored.

use crate::clock::unix_now;
use crate::eval::embeddings_file;
use crate::eval::metrics::{self, EvalParams, Metrics};
use crate::numerics::environment::Environment;
use crate::stages::embed::{self, EmbeddingsRecord};
use crate::train::run_dir::{RunConfig, RunDir};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use tch::Device;

/// What was evaluated and how; the file the catalogue's `evaluations` and `metrics` rows come
/// from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalRecord {
    /// Run id or ensemble name.
    pub subject: String,
    /// `run` or `ensemble`.
    pub kind: String,
    pub dataset: String,
    pub model: String,
    pub split: String,
    /// Path of the embeddings file and its sha256 when evaluated.
    pub embeddings: PathBuf,
    pub embeddings_sha256: String,
    pub params: EvalParams,
    pub metrics: Metrics,
    pub device: String,
    pub created_unix: u64,
    /// Where it was computed.
    #[serde(default)]
    pub environment: Option<Environment>,
}

/// `<dir>/eval/<model>-<split>.json`.
pub fn record_path(dir: &Path, model: &str, split: &str) -> PathBuf {
    dir.join("eval").join(format!("{model}-{split}.json"))
}

/// `<dir>/eval/<model>-<split>.values.tsv`: only the metric values (`name<TAB>value` lines),
/// the same bytes whenever the numbers are the same — what the stage runner fingerprints, so a
/// re-evaluation with equal results leaves what follows fresh.
pub fn values_path(dir: &Path, model: &str, split: &str) -> PathBuf {
    dir.join("eval").join(format!("{model}-{split}.values.tsv"))
}

/// Evaluates the embeddings `emb` describes under `<dir>/embeddings/` and writes the record.
/// `emb` comes from [`embed::run`] or [`embed::write_embeddings`], which verified or wrote the
/// file just before, so it is not hashed again here.
pub fn evaluate_dir(
    dir: &Path,
    kind: &str,
    emb: EmbeddingsRecord,
    params: &EvalParams,
    device: Device,
    env: &Environment,
) -> Result<EvalRecord> {
    let (model, split) = (emb.model.clone(), emb.split.clone());
    let file = dir.join("embeddings").join(&emb.file);
    let set = embeddings_file::read(&file)?;
    let metrics = metrics::evaluate(&set.vectors, &set.class_ids, params, device)
        .with_context(|| format!("evaluating {}", file.display()))?;
    let rec = EvalRecord {
        subject: emb.subject.clone(),
        kind: kind.to_string(),
        dataset: emb.dataset.clone(),
        model: model.to_string(),
        split: split.to_string(),
        embeddings: file,
        embeddings_sha256: emb.sha256,
        params: params.clone(),
        metrics,
        device: crate::device::name(device),
        created_unix: unix_now(),
        environment: Some(env.clone()),
    };
    RunDir::new(dir.to_path_buf()).write_json(&record_path(dir, &model, &split), &rec)?;
    let values: String = rec
        .metrics
        .named()
        .into_iter()
        .map(|(name, v)| format!("{name}\t{v}\n"))
        .collect();
    crate::fsutil::write_atomic(&values_path(dir, &model, &split), values.as_bytes())?;
    Ok(rec)
}

/// Resolved settings of `gl evaluate <run>`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub embed: embed::Settings,
    /// `None`: the K of the run's configuration (`recall_ks`).
    pub recall_ks: Option<Vec<usize>>,
    pub params: EvalParams,
}

/// Embeds what is missing, then evaluates each split; returns the records written.
pub fn run(s: &Settings) -> Result<Vec<EvalRecord>> {
    let rd = RunDir::new(s.embed.run_dir.clone());
    let cfg: RunConfig = RunDir::read_json(&rd.config_path())
        .with_context(|| format!("{} is not a run directory", rd.root.display()))?;
    let mut params = s.params.clone();
    params.recall_ks = s
        .recall_ks
        .clone()
        .unwrap_or_else(|| cfg.train.recall_ks.clone());
    let mut embedded = embed::run(&s.embed)?;
    let env = embed::environment(&s.embed.project, s.embed.device);
    // One record per split that has images, in the order asked.
    s.embed
        .splits
        .iter()
        .filter_map(|sp| {
            let i = embedded.iter().position(|e| e.split == sp.as_str())?;
            Some(embedded.swap_remove(i))
        })
        .map(|emb| evaluate_dir(&rd.root, "run", emb, &params, s.embed.device, &env))
        .collect()
}
