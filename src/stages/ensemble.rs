//! The ensemble stage (`gl ensemble`): the paper's ensemble rows. The L2-normalised embeddings
//! of N runs of one configuration (seeds) are concatenated per image and normalised again, then
//! evaluated like a run. Output in `data/ensembles/<name>/`: `ensemble.json` (members and the
//! checksums of the embeddings used), `embeddings/<model>-<split>.parquet` and
//! `eval/<model>-<split>.json`.

use crate::clock::unix_now;
use crate::eval::embeddings_file::{self, EmbeddingSet};
use crate::eval::knn::l2_normalise;
use crate::eval::metrics::EvalParams;
use crate::stages::embed::{self, EmbeddingsRecord, EvalSplit, ModelChoice};
use crate::stages::evaluate::{evaluate_dir, EvalRecord};
use crate::train::run_dir::{RunConfig, RunDir};
use anyhow::{bail, ensure, Context, Result};
use std::path::PathBuf;
use tch::{Device, Tensor};

/// One member of an ensemble as it was used.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub run_id: String,
    pub seed: u64,
    pub epoch: Option<usize>,
    /// sha256 of the member's embeddings file, per split.
    pub embeddings_sha256: Vec<(String, String)>,
}

/// `ensemble.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EnsembleRecord {
    pub name: String,
    pub dataset: String,
    pub model: String,
    pub members: Vec<Member>,
    /// The members' configurations differ beyond the seed (`--allow-mixed`).
    pub mixed: bool,
    pub created_unix: u64,
}

/// Resolved settings of `gl ensemble`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub project: crate::project::Project,
    pub name: String,
    pub runs: Vec<crate::names::Name>,
    pub model: ModelChoice,
    pub splits: Vec<EvalSplit>,
    pub recall_ks: Option<Vec<usize>>,
    pub params: EvalParams,
    pub device: Device,
    pub allow_mixed: bool,
}

/// Builds, stores and evaluates the ensemble.
pub fn run(s: &Settings) -> Result<(EnsembleRecord, Vec<EvalRecord>)> {
    ensure!(!s.runs.is_empty(), "an ensemble needs at least one run");
    let dirs: Vec<PathBuf> = s.runs.iter().map(|r| s.project.run_dir(r)).collect();
    let configs: Vec<RunConfig> = dirs
        .iter()
        .map(|d| {
            RunDir::read_json(&RunDir::new(d.clone()).config_path())
                .with_context(|| format!("{} is not a run directory", d.display()))
        })
        .collect::<Result<_>>()?;
    let first = &configs[0];
    // Seeds of one configuration may start from per-seed runs (`init = "run:…-s<seed>"`, the
    // paper's fine-tuned initialisation): that difference does not make them another recipe.
    let recipe = |c: &RunConfig| {
        let mut t = c.train.clone();
        if t.init.starts_with("run:") {
            t.init = "run:<per seed>".into();
        }
        t
    };
    let same = |c: &RunConfig| recipe(c) == recipe(first);
    let mixed = configs.iter().any(|c| !same(c));
    for c in &configs {
        ensure!(
            c.dataset == first.dataset,
            "run {} is on {} but run {} on {}: an ensemble is of one dataset",
            c.run_id,
            c.dataset,
            first.run_id,
            first.dataset
        );
        if !same(c) && !s.allow_mixed {
            bail!(
                "runs {} and {} differ in configuration, not only in the seed (pass \
                 --allow-mixed to ensemble them anyway)",
                first.run_id,
                c.run_id
            );
        }
    }
    ensure!(
        !s.project.runs_dir().join(&s.name).exists(),
        "ensemble name {:?} is a run id too: the catalogue keys both by name; choose another",
        s.name
    );
    let dir = s.project.ensembles_dir().join(&s.name);
    let model = s.model.as_str();
    let mut members: Vec<Member> = configs
        .iter()
        .map(|c| Member {
            run_id: c.run_id.clone(),
            seed: c.seed,
            epoch: None,
            embeddings_sha256: Vec::new(),
        })
        .collect();
    let mut params = s.params.clone();
    params.recall_ks = s
        .recall_ks
        .clone()
        .unwrap_or_else(|| first.train.recall_ks.clone());
    let mut outputs = Vec::new();
    let env = embed::environment(&s.project, s.device);
    for &sp in &s.splits {
        let mut parts: Vec<Tensor> = Vec::new();
        let mut reference: Option<EmbeddingSet> = None;
        for (m, d) in members.iter_mut().zip(&dirs) {
            let recs = embed::run(&embed::Settings {
                project: s.project.clone(),
                run_dir: d.clone(),
                model: s.model,
                splits: vec![sp],
                device: s.device,
                force: false,
            })?;
            // `gl embed` verified (or wrote) the file just now.
            let Some(rec) = recs.into_iter().next() else {
                bail!("run {} has no {} images", m.run_id, sp.as_str());
            };
            let file = d.join("embeddings").join(&rec.file);
            let set = embeddings_file::read(&file)?;
            if let Some(r) = &reference {
                ensure!(
                    r.image_ids == set.image_ids && r.class_ids == set.class_ids,
                    "{}: other images or order than {}'s {} embeddings",
                    file.display(),
                    members_first(&s.runs),
                    sp.as_str()
                );
            }
            m.epoch = rec.epoch;
            m.embeddings_sha256
                .push((sp.as_str().to_string(), rec.sha256));
            parts.push(l2_normalise(&set.vectors));
            if reference.is_none() {
                reference = Some(set);
            }
        }
        let reference = reference.expect("≥ 1 member");
        let set = EmbeddingSet {
            image_ids: reference.image_ids,
            class_ids: reference.class_ids,
            vectors: l2_normalise(&Tensor::cat(&parts, 1)),
            raw: None,
        };
        let written = embed::write_embeddings(
            &dir,
            &set,
            EmbeddingsRecord {
                subject: s.name.clone(),
                dataset: first.dataset.clone(),
                model: model.to_string(),
                split: sp.as_str().to_string(),
                epoch: None,
                model_sha256: String::new(),
                file: String::new(),
                sha256: String::new(),
                rows: 0,
                dim: 0,
                device: crate::device::name(s.device),
                seconds: 0.0,
                created_unix: unix_now(),
                numerics: crate::numerics::evaluation(),
                environment: Some(env.clone()),
            },
        )?;
        outputs.push(evaluate_dir(
            &dir, "ensemble", written, &params, s.device, &env,
        )?);
    }
    let record = EnsembleRecord {
        name: s.name.clone(),
        dataset: first.dataset.clone(),
        model: model.to_string(),
        members,
        mixed,
        created_unix: unix_now(),
    };
    RunDir::new(dir.clone()).write_json(&dir.join("ensemble.json"), &record)?;
    Ok((record, outputs))
}

fn members_first(runs: &[crate::names::Name]) -> &str {
    runs.first().map_or("", crate::names::Name::as_str)
}
