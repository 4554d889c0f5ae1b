//! The embed stage (`gl embed <run>`): the test and validation images of a trained run through
//! one of its models, written as Parquet ([`crate::eval::embeddings_file`]) under
//! `<run>/embeddings/<model>-<split>.parquet`, each with a JSON record beside it (rows, dim,
//! sha256, the epoch the model comes from) that later stages check before use.
//!
//! The images, splits and network are rebuilt from the run directory alone (`config.json` names
//! the crop cache and its key), so a run embeds wherever its files are.

use crate::data::crop_cache;
use crate::data::fetch::hash_file;
use crate::data::loader::LoaderParams;
use crate::data::transform::Augment;
use crate::eval::embed::embed;
use crate::eval::embeddings_file::{self, EmbeddingSet};
use crate::eval::knn::l2_normalise;
use crate::model::net::EmbeddingNet;
use crate::model::weights::load_into;
use crate::numerics::environment::Environment;
use crate::project::Project;
use crate::stages::prepare::Manifest;
use crate::train::run_dir::{RunConfig, RunDir};
use crate::train::{init, split};
use anyhow::{bail, ensure, Context, Result};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tch::{nn, Device};

/// Which weights of a run to embed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelChoice {
    /// The model the run's selection rule chose (validation R@1 by default).
    Selected,
    /// The last completed epoch.
    Last,
    /// The initial weights (`init`), before any training step: the pretrained baseline.
    Untrained,
}

impl ModelChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelChoice::Selected => "selected",
            ModelChoice::Last => "last",
            ModelChoice::Untrained => "untrained",
        }
    }
}

impl std::str::FromStr for ModelChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "selected" => Ok(ModelChoice::Selected),
            "last" => Ok(ModelChoice::Last),
            "untrained" => Ok(ModelChoice::Untrained),
            _ => Err(format!("unknown model {s:?} (selected, last, untrained)")),
        }
    }
}

/// The evaluation splits of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvalSplit {
    Test,
    Val,
}

impl EvalSplit {
    pub fn as_str(self) -> &'static str {
        match self {
            EvalSplit::Test => "test",
            EvalSplit::Val => "val",
        }
    }
}

impl std::str::FromStr for EvalSplit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "test" => Ok(EvalSplit::Test),
            "val" => Ok(EvalSplit::Val),
            _ => Err(format!("unknown split {s:?} (test, val)")),
        }
    }
}

/// The record beside each embeddings file (`<model>-<split>.json`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EmbeddingsRecord {
    /// Run id, or ensemble name.
    pub subject: String,
    pub dataset: String,
    pub model: String,
    pub split: String,
    /// Epoch of the weights (`None` for untrained weights and ensembles).
    pub epoch: Option<usize>,
    /// What identifies those weights (sha256 of the weights file, or of the recipe and seed for
    /// the initial weights; empty for ensembles).
    #[serde(default)]
    pub model_sha256: String,
    /// File name inside the `embeddings/` directory.
    pub file: String,
    pub sha256: String,
    pub rows: usize,
    pub dim: i64,
    pub device: String,
    pub seconds: f64,
    pub created_unix: u64,
    /// [`crate::numerics::EVALUATION`] of the code that embedded (1 for older records): a file
    /// of another version is embedded again, never reused.
    #[serde(default = "numerics_before_versioning")]
    pub numerics: u32,
    /// Where it was computed.
    #[serde(default)]
    pub environment: Option<Environment>,
}

fn numerics_before_versioning() -> u32 {
    1
}

/// The environment of a result computed on `device` by this process for `project`.
pub fn environment(project: &Project, device: Device) -> Environment {
    Environment::current(
        &project.root,
        crate::numerics::Kernels::in_effect(),
        &crate::device::name(device),
    )
}

impl EmbeddingsRecord {
    /// Reads the record of `<dir>/embeddings/<model>-<split>` and checks its file's checksum.
    pub fn load_verified(dir: &Path, model: &str, split: &str) -> Result<Option<(Self, PathBuf)>> {
        let rec_path = record_path(dir, model, split);
        if !rec_path.exists() {
            return Ok(None);
        }
        let rec: EmbeddingsRecord = RunDir::read_json(&rec_path)?;
        let file = dir.join("embeddings").join(&rec.file);
        let sha = hash_file(&file)
            .with_context(|| format!("{} names {}", rec_path.display(), file.display()))?
            .0;
        ensure!(
            sha == rec.sha256,
            "{}: sha256 {sha} but {} records {} (re-run `gl embed`)",
            file.display(),
            rec_path.display(),
            rec.sha256
        );
        Ok(Some((rec, file)))
    }
}

/// `<dir>/embeddings/<model>-<split>.json`.
pub fn record_path(dir: &Path, model: &str, split: &str) -> PathBuf {
    dir.join("embeddings").join(format!("{model}-{split}.json"))
}

/// Writes an embedding set and its record under `<dir>/embeddings/` (file first, record last:
/// the record is the commit point).
pub fn write_embeddings(
    dir: &Path,
    set: &EmbeddingSet,
    mut rec: EmbeddingsRecord,
) -> Result<EmbeddingsRecord> {
    rec.file = format!("{}-{}.parquet", rec.model, rec.split);
    let file = dir.join("embeddings").join(&rec.file);
    embeddings_file::write(&file, set)?;
    rec.sha256 = hash_file(&file)?.0;
    rec.rows = set.len();
    rec.dim = set.dim();
    RunDir::new(dir.to_path_buf()).write_json(&record_path(dir, &rec.model, &rec.split), &rec)?;
    Ok(rec)
}

/// Resolved settings of `gl embed`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub project: Project,
    pub run_dir: PathBuf,
    pub model: ModelChoice,
    pub splits: Vec<EvalSplit>,
    pub device: Device,
    /// Embed again even when a verified file exists.
    pub force: bool,
}

/// Embeds the run's splits; returns one record per split written (or found up to date).
pub fn run(s: &Settings) -> Result<Vec<EmbeddingsRecord>> {
    let rd = RunDir::new(s.run_dir.clone());
    let cfg: RunConfig = RunDir::read_json(&rd.config_path())
        .with_context(|| format!("{} is not a run directory", s.run_dir.display()))?;
    let model = s.model.as_str();
    let identity = model_identity(&rd, &cfg, s.model, &s.project)?;
    let mut todo = Vec::new();
    let mut out = Vec::new();
    for &sp in &s.splits {
        match EmbeddingsRecord::load_verified(&rd.root, model, sp.as_str()) {
            Ok(Some((rec, _)))
                if !s.force
                    && rec.model_sha256 == identity
                    && rec.numerics == crate::numerics::evaluation() =>
            {
                out.push(rec)
            }
            Ok(_) => todo.push(sp),
            Err(e) => {
                tracing::warn!("embedding again: {e:#}");
                todo.push(sp);
            }
        }
    }
    if todo.is_empty() {
        return Ok(out);
    }
    let t = Instant::now();
    let rows = Arc::new(crop_cache::read(&crops_file(&cfg)?, None)?);
    let tc = &cfg.train;
    let splits = split::split(&rows, tc.val_fraction, tc.val_seed, tc.class_limit)?;
    // Seeded as in training, so untrained heads (random init) are the run's own.
    tch::manual_seed(crate::train::epoch::torch_seed(cfg.seed, 0));
    let vs = nn::VarStore::new(s.device);
    let net = EmbeddingNet::new(&vs.root(), &tc.backbone, tc.head(splits.num_classes()))?;
    let epoch = load_model(&vs, &rd, &cfg, s.model, &s.project)?;
    let loader = LoaderParams {
        crop: tc.input_size,
        resize: tc.resize,
        normalize: net.spec().normalize,
        augment: Augment::PAPER, // unused: evaluation batches are not augmented
        threads: tc.loader_threads,
        prefetch: tc.prefetch,
        seed: cfg.seed,
    };
    for sp in todo {
        let idx = match sp {
            EvalSplit::Test => &splits.test,
            EvalSplit::Val => &splits.val,
        };
        if idx.is_empty() {
            tracing::info!("run {} has no {} images", cfg.run_id, sp.as_str());
            continue;
        }
        let e = embed(&net, &rows, idx, tc.eval_batch, loader, s.device)?;
        let set = EmbeddingSet {
            image_ids: Some(e.image_ids),
            class_ids: e.labels,
            vectors: l2_normalise(&e.features),
            raw: Some(e.features),
        };
        let rec = EmbeddingsRecord {
            subject: cfg.run_id.clone(),
            dataset: cfg.dataset.clone(),
            model: model.to_string(),
            split: sp.as_str().to_string(),
            epoch,
            model_sha256: identity.clone(),
            file: String::new(),
            sha256: String::new(),
            rows: 0,
            dim: 0,
            device: crate::device::name(s.device),
            seconds: t.elapsed().as_secs_f64(),
            created_unix: crate::clock::unix_now(),
            numerics: crate::numerics::evaluation(),
            environment: Some(environment(&s.project, s.device)),
        };
        out.push(write_embeddings(&rd.root, &set, rec)?);
    }
    Ok(out)
}

/// The crop cache file a run was trained on, checked against the key in its config.
fn crops_file(cfg: &RunConfig) -> Result<PathBuf> {
    let manifest_path = cfg.crops.join("manifest.json");
    let manifest: Manifest = RunDir::read_json(&manifest_path).with_context(|| {
        format!(
            "the run's crop cache is gone (run `gl prepare {}` with resize {})",
            cfg.dataset, cfg.train.resize
        )
    })?;
    ensure!(
        manifest.key == cfg.crops_key,
        "{}: crop cache key {} but the run was trained on {}",
        manifest_path.display(),
        manifest.key,
        cfg.crops_key
    );
    Ok(cfg.crops.join(&manifest.file))
}

/// The weights file `choice` means now and its epoch (`None` for the initial weights).
fn model_file(rd: &RunDir, choice: ModelChoice) -> Result<Option<(PathBuf, usize)>> {
    if choice == ModelChoice::Untrained {
        return Ok(None);
    }
    let Some(state) = rd.state()? else {
        bail!("run {} has no completed epoch yet", rd.root.display());
    };
    Ok(Some(match choice {
        ModelChoice::Last => (
            state.verified(rd, &format!("{}/model.safetensors", state.checkpoint))?,
            state.epoch,
        ),
        _ => match (&state.selected, state.selected_epoch) {
            (Some(f), Some(e)) => (state.verified(rd, f)?, e),
            _ => bail!(
                "run {} has no selected model (its selection metric was never evaluated)",
                rd.root.display()
            ),
        },
    }))
}

/// What identifies the weights `choice` means: the sha256 of the weights file, or for the
/// initial weights the hash of what makes them (recipe, seed). Embeddings are reused only
/// when it is unchanged — a run trained again under the same id gets new embeddings.
fn model_identity(
    rd: &RunDir,
    cfg: &RunConfig,
    choice: ModelChoice,
    project: &Project,
) -> Result<String> {
    Ok(match model_file(rd, choice)? {
        Some((file, _)) => hash_file(&file)?.0,
        None => {
            let init = init::source_file(&cfg.train, project)?
                .map(|(f, _)| hash_file(&f).map(|h| h.0))
                .transpose()?;
            let doc = serde_json::to_vec(&(&cfg.train, cfg.seed, &cfg.crops_key, init))?;
            hex::encode(sha2::Sha256::digest(&doc))
        }
    })
}

/// Loads the chosen weights into `vs`; returns their epoch.
fn load_model(
    vs: &nn::VarStore,
    rd: &RunDir,
    cfg: &RunConfig,
    choice: ModelChoice,
    project: &Project,
) -> Result<Option<usize>> {
    match model_file(rd, choice)? {
        None => {
            init::initialise(vs, &cfg.train, project)?;
            Ok(None)
        }
        Some((file, epoch)) => {
            load_into(vs, &file, "")?;
            Ok(Some(epoch))
        }
    }
}
