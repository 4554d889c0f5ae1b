//! PyTorch checkpoint → `weights.safetensors`, in two steps:
//!
//! 1. `pipeline/tools/torch_to_safetensors.py` (embedded in `gl`, run with the project venv's
//!    python) unpickles the checkpoint with `torch.load(…, weights_only=True)` — libtorch's C++
//!    cannot read the legacy (PyTorch < 1.6) format of the official BN-Inception weights — and
//!    writes every tensor as it is named there (wrappers and a DataParallel `module.` removed).
//! 2. Here, that raw file is read back with [`Tensor::read_safetensors`], the registry's skip
//!    and rename rules are applied, and the result is compared with the backbone built from the
//!    backbone registry: every variable present with its shape, no unexpected key (a kept
//!    `classifier.*` is allowed). The output is written atomically and loaded once more through
//!    [`super::load_into`], the path the trainer takes.

use super::registry::{CheckpointFormat, KeyAction, WeightsSpec};
use super::CLASSIFIER_PREFIX;
use crate::model::BackboneSpec;
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use tch::{nn, Device, Kind, Tensor};
use thiserror::Error;

/// The converter script, embedded so `gl` needs no checkout beside it.
pub const CONVERTER: &str = include_str!("../../../pipeline/tools/torch_to_safetensors.py");
/// Bumped when the conversion changes what it writes (part of the rules fingerprint).
pub const CONVERTER_VERSION: u32 = 1;

/// What the Python converter reported.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ConverterSummary {
    pub tensors: usize,
    /// `state_dict` / `model_state_dict` / `model` when the checkpoint wrapped its state dict.
    pub wrapper: Option<String>,
    /// `module.` when every key carried it (DataParallel).
    pub stripped_prefix: Option<String>,
    /// Entries that were not tensors, skipped.
    pub non_tensor: Vec<String>,
    /// Source dtypes and how many tensors had each.
    pub dtypes: BTreeMap<String, usize>,
}

/// What the skip and rename rules did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct KeyMapping {
    /// Source keys dropped, with the pattern that dropped them.
    pub skipped: Vec<(String, String)>,
    /// Source keys renamed (from, to).
    pub renamed: Vec<(String, String)>,
}

/// What one conversion produced (recorded in `weights.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Conversion {
    pub format: CheckpointFormat,
    pub converter: ConverterSummary,
    /// Tensors in the output.
    pub tensors: usize,
    #[serde(flatten)]
    pub mapping: KeyMapping,
    /// Shape of `classifier.weight` when the output keeps a classifier.
    pub classifier_shape: Option<Vec<i64>>,
}

/// A converted key set that does not fit the backbone. `origin` names the checkpoint (a path,
/// or `archive!member`).
#[derive(Debug, Error)]
pub enum MismatchError {
    #[error(
        "{origin}: the keys do not fit backbone `{backbone}` (skip or rename source keys in \
         pipeline/weights.toml): {} missing{}{}; {} unexpected{}{}",
        missing.len(), if missing.is_empty() { "" } else { ": " }, list(missing),
        unexpected.len(), if unexpected.is_empty() { "" } else { ": " }, list(unexpected)
    )]
    Keys {
        origin: String,
        backbone: String,
        missing: Vec<String>,
        unexpected: Vec<String>,
    },
    #[error("{origin}: shape mismatch with backbone `{backbone}`: {}", list(items))]
    Shape {
        origin: String,
        backbone: String,
        items: Vec<String>,
    },
    #[error("{origin}: `{key}` is {kind:?}, not a floating-point tensor (skip it in pipeline/weights.toml)")]
    NotFloat {
        origin: String,
        key: String,
        kind: Kind,
    },
    #[error("{origin}: keys `{first}` and `{second}` both become `{to}`")]
    Duplicate {
        origin: String,
        first: String,
        second: String,
        to: String,
    },
}

fn list(keys: &[String]) -> String {
    const SHOWN: usize = 12;
    let mut s = keys
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > SHOWN {
        s.push_str(&format!(", … ({} more)", keys.len() - SHOWN));
    }
    s
}

/// The serialisation of a checkpoint, from its first bytes; anything else (an HTML error page,
/// a Git LFS pointer, a truncated file) is an error naming the file.
pub fn sniff(path: &Path) -> Result<CheckpointFormat> {
    let mut head = [0u8; 4];
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let n = f
        .read(&mut head)
        .with_context(|| format!("reading {}", path.display()))?;
    match &head[..n] {
        [b'P', b'K', 3, 4] => Ok(CheckpointFormat::TorchZip),
        [0x80, 2..=5, ..] => Ok(CheckpointFormat::TorchLegacy),
        other => bail!(
            "{} is not a PyTorch checkpoint (neither a zip archive nor a pickle; it starts with {:?})",
            path.display(),
            String::from_utf8_lossy(other)
        ),
    }
}

/// Runs the embedded converter: `python - SRC DST` with the script on standard input.
pub fn run_converter(python: &Path, src: &Path, dst: &Path) -> Result<ConverterSummary> {
    let mut child = Command::new(python)
        .arg("-")
        .arg(src)
        .arg(dst)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (the python with torch that converts checkpoints; set --python or GL_PYTHON)",
                python.display()
            )
        })?;
    child
        .stdin
        .take()
        .context("converter stdin")?
        .write_all(CONVERTER.as_bytes())
        .context("sending the converter script to python")?;
    let out = child
        .wait_with_output()
        .context("waiting for the converter")?;
    if !out.status.success() {
        bail!(
            "converting {} with {} failed ({}): {}",
            src.display(),
            python.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .with_context(|| format!("parsing the converter's summary: {text}"))
}

/// Applies `spec`'s skip and rename rules to the raw tensors, checks the result against
/// `backbone` and returns it as float32 tensors sorted by name. `origin` names the source in
/// errors.
pub fn map_and_check(
    raw: Vec<(String, Tensor)>,
    spec: &WeightsSpec,
    backbone: &BackboneSpec,
    origin: &str,
) -> Result<(Vec<(String, Tensor)>, KeyMapping), MismatchError> {
    let mut out: BTreeMap<String, (String, Tensor)> = BTreeMap::new();
    let mut mapping = KeyMapping::default();
    for (key, tensor) in raw {
        let to = match spec.map_key(&key) {
            KeyAction::Skip(pattern) => {
                mapping.skipped.push((key, pattern.to_owned()));
                continue;
            }
            KeyAction::Keep(to) => to,
        };
        if !tensor.is_floating_point() {
            return Err(MismatchError::NotFloat {
                origin: origin.to_owned(),
                key,
                kind: tensor.kind(),
            });
        }
        if let Some((first, _)) = out.get(&to) {
            return Err(MismatchError::Duplicate {
                origin: origin.to_owned(),
                first: first.clone(),
                second: key,
                to,
            });
        }
        if to != key {
            mapping.renamed.push((key.clone(), to.clone()));
        }
        out.insert(to, (key, tensor.to_kind(Kind::Float).contiguous()));
    }

    let vs = nn::VarStore::new(Device::Cpu);
    let _net = (backbone.build)(&vs.root());
    let vars: BTreeMap<String, Vec<i64>> = vs
        .variables()
        .into_iter()
        .map(|(k, v)| (k, v.size()))
        .collect();
    let missing: Vec<String> = vars
        .keys()
        .filter(|k| !out.contains_key(*k))
        .cloned()
        .collect();
    let unexpected: Vec<String> = out
        .keys()
        .filter(|k| !vars.contains_key(*k) && !k.starts_with(CLASSIFIER_PREFIX))
        .cloned()
        .collect();
    let shapes: Vec<String> = vars
        .iter()
        .filter_map(|(k, shape)| {
            let found = out.get(k)?.1.size();
            (found != *shape).then(|| format!("{k} {found:?} (expected {shape:?})"))
        })
        .collect();
    if !missing.is_empty() || !unexpected.is_empty() {
        return Err(MismatchError::Keys {
            origin: origin.to_owned(),
            backbone: backbone.name.to_owned(),
            missing,
            unexpected,
        });
    }
    if !shapes.is_empty() {
        return Err(MismatchError::Shape {
            origin: origin.to_owned(),
            backbone: backbone.name.to_owned(),
            items: shapes,
        });
    }
    Ok((out.into_iter().map(|(k, (_, t))| (k, t)).collect(), mapping))
}

/// Converts the checkpoint `src` into `dst` (atomically) for `backbone` by `spec`'s rules;
/// `origin` names the checkpoint in errors.
pub fn convert(
    python: &Path,
    src: &Path,
    origin: &str,
    dst: &Path,
    spec: &WeightsSpec,
    backbone: &BackboneSpec,
) -> Result<Conversion> {
    let format = sniff(src).with_context(|| format!("checking {origin}"))?;
    if let Some(want) = spec.format {
        ensure!(
            want == format,
            "{origin}: the registry says {want:?}, the file is {format:?}"
        );
    }
    let dir = dst.parent().context("output has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix(".convert-")
        .tempdir_in(dir)
        .with_context(|| format!("creating a scratch directory in {}", dir.display()))?;
    let raw_path = scratch.path().join("raw.safetensors");
    let summary =
        run_converter(python, src, &raw_path).with_context(|| format!("converting {origin}"))?;
    let raw = Tensor::read_safetensors(&raw_path)
        .with_context(|| format!("reading the converter's output {}", raw_path.display()))?;
    ensure!(
        raw.len() == summary.tensors,
        "the converter reported {} tensors but wrote {}",
        summary.tensors,
        raw.len()
    );
    let (tensors, mapping) = map_and_check(raw, spec, backbone, origin)?;
    let classifier_shape = tensors
        .iter()
        .find(|(k, _)| k.strip_prefix(CLASSIFIER_PREFIX) == Some("weight"))
        .map(|(_, t)| t.size());

    let tmp = tempfile::Builder::new()
        .prefix(".weights-")
        .suffix(".safetensors")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    Tensor::write_safetensors(&tensors, tmp.path())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    // The trainer's path: a fresh backbone must load every variable from the written file.
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = (backbone.build)(&vs.root());
    super::load_into(&vs, tmp.path(), "")
        .with_context(|| format!("loading the converted {} back", tmp.path().display()))?;
    crate::fsutil::persist(tmp, dst)?;
    Ok(Conversion {
        format,
        converter: summary,
        tensors: tensors.len(),
        mapping,
        classifier_shape,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_tells_formats_and_rejects_other_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"PK\x03\x04rest").unwrap();
        assert_eq!(sniff(&p).unwrap(), CheckpointFormat::TorchZip);
        std::fs::write(&p, b"\x80\x02\x8a\x0alegacy").unwrap();
        assert_eq!(sniff(&p).unwrap(), CheckpointFormat::TorchLegacy);
        std::fs::write(&p, b"<!DOCTYPE html>").unwrap();
        let e = sniff(&p).unwrap_err().to_string();
        assert!(
            e.contains("not a PyTorch checkpoint") && e.contains("<!DO"),
            "{e}"
        );
    }
}
