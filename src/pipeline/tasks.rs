//! How each declared stage fans out into tasks for a profile: the registry of task builders
//! (one function per stage name), each giving the task's variables, its `gl` command, the files
//! it writes and the settings it was resolved with.
//!
//! A profile's `[released]` datasets add one run each that never trains (a released checkpoint,
//! [`crate::stages::released`]): created and embedded by its `embed` task (`gl embed RUN --model
//! untrained --dataset D --weights W`), then evaluated like any run's initial weights.

use crate::data::registry::Registry;
use crate::pipeline::profile::Profile;
use crate::pipeline::run_specs::{run_specs, tuning, Kind, RunSpec};
use crate::pipeline::task::{Output, Task};
use crate::project::Project;
use crate::stages::released;
use crate::train::config::CheckedConfig;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// Run ids are made where runs are planned; re-exported where tests and tools have used them.
pub use crate::pipeline::run_specs::run_id;

/// Stage names with a builder.
pub const KNOWN: &[&str] = &[
    "fetch", "weights", "prepare", "finetune", "train", "embed", "evaluate", "ensemble", "report",
];

pub fn is_known(stage: &str) -> bool {
    KNOWN.contains(&stage)
}

/// The tasks of `stage` for `profile`.
pub fn build(stage: &str, p: &Profile, project: &Project) -> Result<Vec<Task>> {
    match stage {
        "fetch" => {
            let registry = Registry::load(&project.root, &project.data_dir)?;
            Ok(p.datasets
                .iter()
                .map(|d| fetch(d, project, &registry))
                .collect())
        }
        "weights" => Ok(p.weights.iter().map(|w| weights(w)).collect()),
        "prepare" => prepare(p, project),
        "finetune" => runs(p, project, Kind::Finetune),
        "train" => runs(p, project, Kind::GroupLoss),
        "embed" => embeddings(p, project, "embed"),
        "evaluate" => embeddings(p, project, "evaluate"),
        "ensemble" => ensembles(p, project),
        "report" => report(p, project),
        other => anyhow::bail!("no task builder for stage {other:?}"),
    }
}

fn file(path: String) -> Output {
    Output::File(PathBuf::from(path))
}

/// What a task reads and writes, as resource names.
struct Io {
    consumes: Vec<String>,
    produces: Vec<String>,
}

fn io(consumes: Vec<String>, produces: &str) -> Io {
    Io {
        consumes,
        produces: vec![produces.to_string()],
    }
}

fn task(stage: &str, key: String, argv: Vec<String>, outputs: Vec<Output>, io: Io) -> Task {
    Task {
        stage: stage.into(),
        key,
        argv,
        outputs,
        config: serde_json::Value::Null,
        run_dir: None,
        consumes: io.consumes,
        produces: io.produces,
        deps: Vec::new(),
    }
}

fn strings(xs: &[&str]) -> Vec<String> {
    xs.iter().map(|s| s.to_string()).collect()
}

/// Fetching dataset `d`. A local folder has no archive whose checksum pins it: the listing of
/// its files is part of the task's configuration instead, so adding, removing or rewriting an
/// image makes the task (and the crops after it) stale.
fn fetch(d: &str, project: &Project, registry: &Registry) -> Task {
    let mut t = task(
        "fetch",
        d.into(),
        strings(&["fetch", d, "--quiet"]),
        vec![file(format!("datasets/{d}/dataset.json"))],
        io(vec![], &format!("dataset:{d}")),
    );
    // (A dataset the registry does not know fails when the task runs, with the known ones.)
    if let Some(local) = registry.datasets.get(d).and_then(|s| s.local_root.as_ref()) {
        let root = project.root.join(local);
        let listing = crate::fsutil::tree_digest(&root).unwrap_or_else(|e| format!("{e:#}"));
        t.config = serde_json::json!({ "local_root": root, "listing": listing });
    }
    t
}

fn weights(w: &str) -> Task {
    task(
        "weights",
        w.into(),
        strings(&["weights", w, "--quiet"]),
        vec![file(format!("weights/{w}/weights.json"))],
        io(vec![], &format!("weights:{w}")),
    )
}

fn runs(p: &Profile, project: &Project, kind: Kind) -> Result<Vec<Task>> {
    let stage = match kind {
        Kind::Finetune => "finetune",
        Kind::GroupLoss => "train",
    };
    run_specs(p, project, kind)?
        .into_iter()
        .map(|r| {
            let cfg = &r.config;
            let seed = r.seed.to_string();
            let mut argv = strings(&[
                "train",
                "--dataset",
                &r.dataset,
                "--profile",
                &r.recipe,
                "--seed",
                &seed,
                "--run-id",
                &r.run_id,
                "--resume",
                "--quiet",
            ]);
            argv.extend(p.compute_args()?);
            for s in &r.set {
                argv.push(format!("--set={s}"));
            }
            let mut consumes = vec![format!("crops:{}/r{}", r.dataset, cfg.resize)];
            consumes.extend(p.weights.iter().map(|w| format!("weights:{w}")));
            if let Some(init) = cfg.init.strip_prefix("run:") {
                consumes.push(format!("run:{init}"));
            }
            let mut t = task(
                stage,
                run_key(&r),
                argv,
                vec![file(format!("runs/{}/run.json", r.run_id))],
                io(consumes, &format!("run:{}", r.run_id)),
            );
            t.config = serde_json::to_value(cfg)?;
            t.run_dir = Some(PathBuf::from("runs").join(&r.run_id));
            Ok(t)
        })
        .collect()
}

/// The run of a `[released]` dataset: a checkpoint evaluated as it is.
struct ReleasedSpec {
    dataset: String,
    /// The `gl weights` entry.
    weights: String,
    run_id: String,
    config: CheckedConfig,
}

/// One run per `[released]` dataset, named `<dataset>-<profile>-released-<h>` (`<h>` as for
/// training runs: the resolved recipe, which names the weights entry in `init`).
fn released_specs(p: &Profile, project: &Project) -> Result<Vec<ReleasedSpec>> {
    p.released_datasets()
        .into_iter()
        .map(|(dataset, weights)| {
            let config = released::config(project, &dataset, &weights)
                .with_context(|| format!("released.{dataset}"))?;
            let h = hex::encode(Sha256::digest(serde_json::to_vec(&config)?));
            Ok(ReleasedSpec {
                run_id: format!("{dataset}-{}-released-{}", p.name, &h[..8]),
                dataset,
                weights,
                config,
            })
        })
        .collect()
}

/// `<dataset>/s<seed>`, or `<dataset>/<point>/s<seed>` in a sweep.
fn run_key(r: &RunSpec) -> String {
    match r.point.as_str() {
        "" => format!("{}/s{}", r.dataset, r.seed),
        point => format!("{}/{point}/s{}", r.dataset, r.seed),
    }
}

/// One crop cache per dataset and distinct `resize` of the profile's recipes.
fn prepare(p: &Profile, project: &Project) -> Result<Vec<Task>> {
    let mut seen = std::collections::BTreeSet::new();
    for kind in [Kind::Finetune, Kind::GroupLoss] {
        for r in run_specs(p, project, kind)? {
            seen.insert((r.dataset.clone(), r.config.resize));
        }
    }
    for r in released_specs(p, project)? {
        seen.insert((r.dataset, r.config.resize));
    }
    Ok(seen
        .into_iter()
        .map(|(d, resize)| {
            let r = resize.to_string();
            let mut t = task(
                "prepare",
                format!("{d}/r{resize}"),
                strings(&["prepare", &d, "--resize", &r, "--quiet"]),
                vec![Output::CropCache {
                    dataset: d.clone(),
                    resize,
                }],
                io(
                    vec![format!("dataset:{d}")],
                    &format!("crops:{d}/r{resize}"),
                ),
            );
            t.config = serde_json::json!({ "resize": resize });
            t
        })
        .collect())
}

/// `embed` or `evaluate` tasks: every run's selected model, the softmax baselines, the
/// untrained network of each dataset's first Group Loss run, and the released checkpoints.
fn embeddings(p: &Profile, project: &Project, stage: &str) -> Result<Vec<Task>> {
    // (run, model, the released checkpoint the embed task creates the run of)
    let mut items: Vec<(String, &str, Option<ReleasedSpec>)> = Vec::new();
    let group_loss = run_specs(p, project, Kind::GroupLoss)?;
    let softmax = run_specs(p, project, Kind::Finetune)?;
    let mut released = released_specs(p, project)?;
    for d in &p.datasets {
        let of = |specs: &[RunSpec]| -> Vec<String> {
            specs
                .iter()
                .filter(|r| &r.dataset == d)
                .map(|r| r.run_id.clone())
                .collect()
        };
        let gl = of(&group_loss);
        for run in &gl {
            items.push((run.clone(), "selected", None));
        }
        // The floor: the initial weights of the first run — a Group Loss run, else a softmax
        // one — that does not start from another run (the pretrained network), else of the
        // first run (the fine-tuned start).
        let floor = group_loss
            .iter()
            .chain(&softmax)
            .filter(|r| &r.dataset == d)
            .find(|r| !r.config.init.starts_with("run:"))
            .map(|r| &r.run_id)
            .or(gl.first());
        if let (true, Some(run)) = (p.evaluate.untrained_baseline, floor) {
            items.push((run.clone(), "untrained", None));
        }
        for run in of(&softmax) {
            items.push((run, "selected", None));
        }
        if let Some(i) = released.iter().position(|r| &r.dataset == d) {
            let r = released.remove(i);
            items.push((r.run_id.clone(), "untrained", Some(r)));
        }
    }
    items
        .into_iter()
        .map(|(run, model, rel)| {
            let mut argv = strings(&[stage, &run, "--model", model]);
            argv.extend(p.compute_args()?);
            // The selected models also on the validation classes (the sweep's signal).
            let val = p.evaluate.validation && model == "selected";
            if val {
                argv.extend(strings(&["--split", "test,val"]));
            }
            let (out, consumes) = match stage {
                // The vectors themselves (bit-identical when re-embedded from the same weights),
                // not the record beside them with its timings.
                "embed" => (
                    format!("runs/{run}/embeddings/{model}-test.parquet"),
                    match &rel {
                        // It creates its run: from the crops and the converted checkpoint.
                        Some(r) => {
                            argv.extend(strings(&[
                                "--dataset",
                                &r.dataset,
                                "--weights",
                                &r.weights,
                            ]));
                            vec![
                                format!("crops:{}/r{}", r.dataset, r.config.resize),
                                format!("weights:{}", r.weights),
                            ]
                        }
                        None => vec![format!("run:{run}")],
                    },
                ),
                _ => {
                    argv.extend(eval_flags(p));
                    (
                        format!("runs/{run}/eval/{model}-test.values.tsv"),
                        vec![format!("emb:{run}/{model}")],
                    )
                }
            };
            let produces = match stage {
                "embed" => format!("emb:{run}/{model}"),
                _ => format!("eval:{run}/{model}"),
            };
            let mut outputs = vec![file(out.clone())];
            if val {
                outputs.push(file(out.replace("-test.", "-val.")));
            }
            let mut t = task(
                stage,
                format!("{run}/{model}"),
                argv,
                outputs,
                io(consumes, &produces),
            );
            if let (Some(r), "embed") = (&rel, stage) {
                t.config = serde_json::to_value(&r.config)?;
            }
            Ok(t)
        })
        .collect()
}

fn eval_flags(p: &Profile) -> Vec<String> {
    let mut a = vec![
        "--kmeans-restarts".to_string(),
        p.evaluate.kmeans_restarts.to_string(),
    ];
    if !p.evaluate.nmi {
        a.push("--no-nmi".into());
    }
    a
}

/// Name of a dataset's ensemble of seeds: `<dataset>-<profile>`, or
/// `<dataset>-<profile>-<point>` for a sweep point.
pub fn ensemble_name(p: &Profile, dataset: &str, point: &str) -> String {
    match point {
        "" => format!("{dataset}-{}", p.name),
        point => format!("{dataset}-{}-{point}", p.name),
    }
}

/// One ensemble per dataset and sweep point.
fn ensembles(p: &Profile, project: &Project) -> Result<Vec<Task>> {
    if !p.ensemble {
        return Ok(Vec::new());
    }
    let specs = run_specs(p, project, Kind::GroupLoss)?;
    let mut groups: Vec<(&str, &str)> = specs
        .iter()
        .map(|r| (r.dataset.as_str(), r.point.as_str()))
        .collect();
    groups.dedup();
    let compute = p.compute_args()?;
    Ok(groups
        .into_iter()
        .map(|(d, point)| {
            let name = ensemble_name(p, d, point);
            let runs: Vec<String> = specs
                .iter()
                .filter(|r| r.dataset == d && r.point == point)
                .map(|r| r.run_id.clone())
                .collect();
            let mut argv = strings(&["ensemble", "--name", &name]);
            argv.extend(compute.iter().cloned());
            argv.extend(runs.iter().cloned());
            argv.extend(eval_flags(p));
            let consumes = runs.iter().map(|r| format!("eval:{r}/selected")).collect();
            task(
                "ensemble",
                name.clone(),
                argv,
                vec![
                    file(format!("ensembles/{name}/ensemble.json")),
                    file(format!("ensembles/{name}/eval/selected-test.values.tsv")),
                ],
                io(consumes, &format!("ensemble:{name}")),
            )
        })
        .collect())
}

/// The profile's report: reads every evaluation, ensemble and training run of the profile (all
/// through the catalogue), writes `reports/<profile>/`. Not planned while a two-stage tuning
/// still waits for runs: the plan that follows them has it.
fn report(p: &Profile, project: &Project) -> Result<Vec<Task>> {
    if tuning(p, project)?
        .iter()
        .any(|t| t.waiting().next().is_some())
    {
        return Ok(Vec::new());
    }
    let mut consumes: Vec<String> = Vec::new();
    for t in embeddings(p, project, "evaluate")? {
        consumes.extend(t.produces);
    }
    for t in ensembles(p, project)? {
        consumes.extend(t.produces);
    }
    for kind in [Kind::Finetune, Kind::GroupLoss] {
        for r in run_specs(p, project, kind)? {
            consumes.push(format!("run:{}", r.run_id));
        }
    }
    consumes.sort();
    consumes.dedup();
    let dir = PathBuf::from("reports").join(&p.name);
    let mut outputs = vec![
        Output::Project(dir.join("README.md")),
        Output::Project(dir.join("index.html")),
    ];
    for d in &p.datasets {
        outputs.push(Output::Project(dir.join(format!("tables/{d}.md"))));
    }
    Ok(vec![task(
        "report",
        p.name.clone(),
        strings(&["report", "--profile", &p.name]),
        outputs,
        Io {
            consumes,
            produces: vec![format!("report:{}", p.name)],
        },
    )])
}
