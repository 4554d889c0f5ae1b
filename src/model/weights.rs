//! Pretrained weights: the registry (`pipeline/weights.toml`, [`registry`]), the conversion of
//! PyTorch checkpoints to safetensors ([`convert`], run by `gl weights <name>`), and loading a
//! converted file into a model's [`VarStore`] ([`load_into`]), which the trainer uses.
//!
//! A converted file (`data/weights/<name>/weights.safetensors`) holds float32 tensors named
//! like the backbone's variables (`conv1_7x7_s2.weight`, `layer1.0.bn1.running_mean`, …) and,
//! for the authors' fine-tuned and trained checkpoints, the classifier over their training
//! classes under [`CLASSIFIER_PREFIX`] (`classifier.weight`, `classifier.bias`).

pub mod convert;
pub mod registry;

use crate::project::Project;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use tch::nn::VarStore;
use tch::{TchError, Tensor};
use thiserror::Error;

/// Key prefix of a classifier kept in a converted file, and the variable prefix it loads into.
pub const CLASSIFIER_PREFIX: &str = "classifier.";
/// File name of the converted weights inside `data/weights/<name>/`.
pub const WEIGHTS_FILE: &str = "weights.safetensors";
/// File name of the conversion record beside it.
pub const MANIFEST_FILE: &str = "weights.json";

/// Errors of loading converted weights.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("reading {}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: TchError,
    },
    #[error("{}: no tensor `{key}` for the model's variable `{var}`", file.display())]
    Missing {
        file: PathBuf,
        key: String,
        var: String,
    },
    #[error("{}: `{key}` has shape {found:?}, the model's variable `{var}` {expected:?}", file.display())]
    Shape {
        file: PathBuf,
        key: String,
        var: String,
        found: Vec<i64>,
        expected: Vec<i64>,
    },
    #[error("{}: the model has no variables under `{prefix}`", file.display())]
    NoVariables { file: PathBuf, prefix: String },
    #[error("weights `{name}` are not converted yet ({} missing): run `gl weights {name}`", path.display())]
    NotConverted { name: String, path: PathBuf },
    #[error(transparent)]
    Name(#[from] crate::names::NameError),
}

/// A key of the file that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unused {
    pub key: String,
    pub reason: String,
}

/// What [`load_into`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Backbone variables filled (all of them under the prefix).
    pub backbone: usize,
    /// Classifier variables filled from the file's `classifier.*` (0 when none was usable).
    pub classifier: usize,
    /// Keys of the file that went nowhere.
    pub unused: Vec<Unused>,
}

/// Copies the tensors of a converted file into `vs` (under `no_grad`, converting dtype and
/// device as the variables have them):
///
/// * every variable under `prefix` (a path like `"backbone"`, or `""` for the root) must have a
///   tensor `name − "prefix."` of the same shape in the file: otherwise a [`LoadError`] naming
///   the file and the key, and nothing is copied;
/// * the file's `classifier.*` tensors load into the variables of the same names when every one
///   of them exists with the same shape (and every `classifier.*` variable has a tensor); when
///   not — a model with another class count, or without a classifier — they are reported in
///   [`LoadReport::unused`] with the reason, not loaded;
/// * any other key without a variable is reported unused.
pub fn load_into(vs: &VarStore, file: &Path, prefix: &str) -> Result<LoadReport, LoadError> {
    let tensors: BTreeMap<String, Tensor> = Tensor::read_safetensors(file)
        .map_err(|source| LoadError::Read {
            file: file.to_owned(),
            source,
        })?
        .into_iter()
        .collect();
    let vars = vs.variables();
    let dotted = if prefix.is_empty() {
        String::new()
    } else {
        format!("{}.", prefix.trim_end_matches('.'))
    };
    let in_backbone = |var: &str| {
        var.starts_with(&dotted) && !(dotted.is_empty() && var.starts_with(CLASSIFIER_PREFIX))
    };

    let mut plan: Vec<(&Tensor, &Tensor)> = Vec::new();
    let mut used: BTreeSet<&str> = BTreeSet::new();
    let mut backbone_vars: Vec<(&String, &Tensor)> =
        vars.iter().filter(|(name, _)| in_backbone(name)).collect();
    backbone_vars.sort_by(|a, b| a.0.cmp(b.0));
    if backbone_vars.is_empty() {
        return Err(LoadError::NoVariables {
            file: file.to_owned(),
            prefix: prefix.to_owned(),
        });
    }
    for (var, target) in backbone_vars {
        let key = &var[dotted.len()..];
        let source = tensors.get(key).ok_or_else(|| LoadError::Missing {
            file: file.to_owned(),
            key: key.to_owned(),
            var: var.clone(),
        })?;
        if source.size() != target.size() {
            return Err(LoadError::Shape {
                file: file.to_owned(),
                key: key.to_owned(),
                var: var.clone(),
                found: source.size(),
                expected: target.size(),
            });
        }
        plan.push((target, source));
        used.insert(key);
    }
    let backbone = plan.len();

    let classifier_keys: Vec<&String> = tensors
        .keys()
        .filter(|k| k.starts_with(CLASSIFIER_PREFIX) && !used.contains(k.as_str()))
        .collect();
    let mut unused = Vec::new();
    let mut classifier = 0;
    if !classifier_keys.is_empty() {
        let problems: Vec<String> = classifier_keys
            .iter()
            .filter_map(|k| match vars.get(k.as_str()) {
                None => Some(format!("the model has no variable `{k}`")),
                Some(v) if v.size() != tensors[k.as_str()].size() => Some(format!(
                    "shape {:?} in the file, {:?} in the model (another class count)",
                    tensors[k.as_str()].size(),
                    v.size()
                )),
                Some(_) => None,
            })
            .chain(
                vars.keys()
                    .filter(|v| v.starts_with(CLASSIFIER_PREFIX) && !tensors.contains_key(*v))
                    .map(|v| format!("the file has no `{v}`")),
            )
            .collect();
        if problems.is_empty() {
            for k in &classifier_keys {
                plan.push((&vars[k.as_str()], &tensors[k.as_str()]));
                used.insert(k);
            }
            classifier = classifier_keys.len();
        } else {
            let reason = problems.join("; ");
            unused.extend(classifier_keys.iter().map(|k| Unused {
                key: (*k).clone(),
                reason: format!("classifier not loaded: {reason}"),
            }));
            used.extend(classifier_keys.iter().map(|k| k.as_str()));
        }
    }
    for key in tensors.keys().filter(|k| !used.contains(k.as_str())) {
        unused.push(Unused {
            key: key.clone(),
            reason: format!("the model has no variable `{dotted}{key}`"),
        });
    }

    tch::no_grad(|| {
        for (target, source) in &plan {
            let mut target = target.shallow_clone();
            target.copy_(source);
        }
    });
    Ok(LoadReport {
        backbone,
        classifier,
        unused,
    })
}

/// `data/weights/<name>/weights.safetensors`, or [`LoadError::NotConverted`] telling the user
/// to run `gl weights <name>`.
pub fn converted_file(project: &Project, name: &str) -> Result<PathBuf, LoadError> {
    let dir = project.weights_dir(&crate::names::Name::new(crate::names::Kind::Weights, name)?);
    let file = dir.join(WEIGHTS_FILE);
    for path in [&file, &dir.join(MANIFEST_FILE)] {
        if !path.is_file() {
            return Err(LoadError::NotConverted {
                name: name.to_owned(),
                path: path.clone(),
            });
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind};

    /// A tiny "backbone" under `backbone` and a 3-class classifier at the root.
    fn model() -> VarStore {
        let vs = VarStore::new(Device::Cpu);
        let root = vs.root();
        let b = &root / "backbone";
        let _ = b.zeros("w", &[2, 2]);
        let _ = b.zeros("b", &[2]);
        nn::linear(&root / "classifier", 2, 3, Default::default());
        vs
    }

    fn write(dir: &Path, tensors: &[(&str, Tensor)]) -> PathBuf {
        let file = dir.join("w.safetensors");
        Tensor::write_safetensors(tensors, &file).unwrap();
        file
    }

    fn t(shape: &[i64], v: f64) -> Tensor {
        Tensor::full(shape, v, (Kind::Float, Device::Cpu))
    }

    #[test]
    fn loads_backbone_and_matching_classifier_reports_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let vs = model();
        let file = write(
            d.path(),
            &[
                ("w", t(&[2, 2], 1.0)),
                ("b", t(&[2], 2.0)),
                ("classifier.weight", t(&[3, 2], 3.0)),
                ("classifier.bias", t(&[3], 4.0)),
                ("extra", t(&[1], 5.0)),
            ],
        );
        let r = load_into(&vs, &file, "backbone").unwrap();
        assert_eq!((r.backbone, r.classifier), (2, 2));
        assert_eq!(r.unused.len(), 1);
        assert_eq!(r.unused[0].key, "extra");
        let v = vs.variables();
        assert_eq!(v["backbone.w"].double_value(&[1, 1]), 1.0);
        assert_eq!(v["classifier.bias"].double_value(&[2]), 4.0);
    }

    #[test]
    fn another_class_count_is_reported_not_loaded() {
        let d = tempfile::tempdir().unwrap();
        let vs = model();
        let file = write(
            d.path(),
            &[
                ("w", t(&[2, 2], 1.0)),
                ("b", t(&[2], 2.0)),
                ("classifier.weight", t(&[5, 2], 3.0)),
                ("classifier.bias", t(&[5], 4.0)),
            ],
        );
        let r = load_into(&vs, &file, "backbone.").unwrap();
        assert_eq!((r.backbone, r.classifier), (2, 0));
        assert_eq!(r.unused.len(), 2);
        assert!(r.unused[0].reason.contains("another class count"), "{r:?}");
        assert_ne!(vs.variables()["classifier.bias"].double_value(&[0]), 4.0);
    }

    #[test]
    fn missing_key_and_wrong_shape_name_file_and_key_and_copy_nothing() {
        let d = tempfile::tempdir().unwrap();
        let vs = model();
        let file = write(d.path(), &[("w", t(&[2, 2], 1.0))]);
        let e = load_into(&vs, &file, "backbone").unwrap_err();
        assert!(
            matches!(&e, LoadError::Missing { key, .. } if key == "b"),
            "{e}"
        );
        assert!(e.to_string().contains("w.safetensors"), "{e}");
        let file = write(d.path(), &[("w", t(&[2, 2], 1.0)), ("b", t(&[3], 1.0))]);
        let e = load_into(&vs, &file, "backbone").unwrap_err();
        assert!(
            matches!(&e, LoadError::Shape { key, found, .. } if key == "b" && found == &[3]),
            "{e}"
        );
        assert_eq!(vs.variables()["backbone.w"].double_value(&[0, 0]), 0.0);
        let e = load_into(&vs, &file, "nothing_here").unwrap_err();
        assert!(matches!(e, LoadError::NoVariables { .. }), "{e}");
    }

    #[test]
    fn root_prefix_leaves_the_classifier_to_its_own_rule() {
        let d = tempfile::tempdir().unwrap();
        let vs = VarStore::new(Device::Cpu);
        let _ = vs.root().zeros("w", &[2]);
        let file = write(
            d.path(),
            &[("w", t(&[2], 1.0)), ("classifier.weight", t(&[4, 2], 1.0))],
        );
        let r = load_into(&vs, &file, "").unwrap();
        assert_eq!((r.backbone, r.classifier), (1, 0));
        assert!(
            r.unused[0]
                .reason
                .contains("no variable `classifier.weight`"),
            "{r:?}"
        );
    }

    #[test]
    fn unconverted_weights_say_what_to_run() {
        let d = tempfile::tempdir().unwrap();
        let project = Project {
            root: d.path().to_owned(),
            data_dir: d.path().join("data"),
        };
        let e = converted_file(&project, "cub_trained")
            .unwrap_err()
            .to_string();
        assert!(e.contains("run `gl weights cub_trained`"), "{e}");
        // `init = "weights:<name>"` of a recipe: the name is checked before it is joined.
        let e = converted_file(&project, "../../x").unwrap_err();
        assert!(
            matches!(&e, LoadError::Name(n) if n.name == "../../x"),
            "{e}"
        );
    }
}
