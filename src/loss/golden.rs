//! Reference vectors of the official Group Loss (`../shared/golden/group_loss/`) and the audit
//! of [`GroupLoss`] against them, shared by `gl verify-loss` and anyone auditing a change.
//!
//! A directory holds `cases.json` (one object per case: `name`, `anchors`, `tau`, `T`, `m`, …)
//! and one NumPy `<name>.npz` per case with the arrays listed in [`REQUIRED_ARRAYS`].

use crate::loss::{Anchors, GroupLoss, GroupLossOptions, Priors};
use anyhow::{bail, ensure, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Arrays every case file must hold.
pub const REQUIRED_ARRAYS: [&str; 13] = [
    "fc7",
    "logits",
    "labels",
    "anchor_mask",
    "W",
    "X",
    "loss_group",
    "loss_ce",
    "loss_total",
    "grad_fc7_group",
    "grad_logits_group",
    "grad_fc7_total",
    "grad_logits_total",
];

/// Parameters of one case, as `cases.json` spells them.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct CaseParams {
    pub name: String,
    /// Anchors per class k (first k in batch order).
    pub anchors: i64,
    /// Temperature τ.
    pub tau: f64,
    /// Replicator steps T.
    #[serde(rename = "T")]
    pub steps: i64,
    /// Number of classes m.
    pub m: i64,
    /// Batch size n.
    pub n: i64,
}

/// One case: its parameters and its arrays (on the CPU, as stored: f64 and i64).
#[derive(Debug)]
pub struct GoldenCase {
    pub params: CaseParams,
    pub path: PathBuf,
    arrays: HashMap<String, Tensor>,
}

impl GoldenCase {
    /// The array `key` (present: checked when the case was read).
    pub fn array(&self, key: &str) -> &Tensor {
        &self.arrays[key]
    }
}

/// Reads `dir/cases.json` and every case's `.npz`, checking that each array is present and
/// that the shapes agree with n and m. Errors name the file and the key.
pub fn read_cases(dir: &Path) -> Result<Vec<GoldenCase>> {
    let index = dir.join("cases.json");
    let text =
        std::fs::read_to_string(&index).with_context(|| format!("reading {}", index.display()))?;
    let params: Vec<CaseParams> =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", index.display()))?;
    ensure!(!params.is_empty(), "{} lists no cases", index.display());
    params
        .into_iter()
        .map(|p| {
            let path = dir.join(format!("{}.npz", p.name));
            let arrays: HashMap<String, Tensor> = Tensor::read_npz(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .into_iter()
                .collect();
            for key in REQUIRED_ARRAYS {
                ensure!(
                    arrays.contains_key(key),
                    "{}: array `{key}` missing",
                    path.display()
                );
            }
            let (n, m) = (p.n, p.m);
            for (key, want) in [("logits", vec![n, m]), ("X", vec![n, m]), ("W", vec![n, n])] {
                let got = arrays[key].size();
                if got != want {
                    bail!(
                        "{}: `{key}` has shape {got:?}, cases.json implies {want:?}",
                        path.display()
                    );
                }
            }
            Ok(GoldenCase {
                params: p,
                path,
                arrays,
            })
        })
        .collect()
}

/// Max relative error max|a − b| / max|b| of `ours` against `want` (scale-relative, so
/// near-zero entries of a gradient do not blow it up).
pub fn max_rel_error(ours: &Tensor, want: &Tensor) -> Result<f64> {
    let ours = ours.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?;
    let want = want.f_to_kind(Kind::Double)?;
    ensure!(
        ours.size() == want.size(),
        "shape {:?} differs from the reference's {:?}",
        ours.size(),
        want.size()
    );
    let diff = ours.f_sub(&want)?.f_abs()?.f_max()?.f_double_value(&[])?;
    let scale = want
        .f_abs()?
        .f_max()?
        .f_double_value(&[])?
        .max(f64::MIN_POSITIVE);
    Ok(diff / scale)
}

/// Worst relative errors of one case, each the max over the group-only and total variants.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CaseErrors {
    pub loss: f64,
    pub w: f64,
    pub x: f64,
    pub grad_features: f64,
    pub grad_logits: f64,
}

impl CaseErrors {
    /// The largest of the five errors.
    pub fn worst(&self) -> f64 {
        [
            self.loss,
            self.w,
            self.x,
            self.grad_features,
            self.grad_logits,
        ]
        .into_iter()
        .fold(0.0, f64::max)
    }
}

/// Runs the loss with the case's parameters (official options: first-k anchors, softmax priors,
/// diagonal 1, ce_weight 1) in `kind` on `device` and compares everything with the case.
pub fn audit_case(case: &GoldenCase, kind: Kind, device: Device) -> Result<CaseErrors> {
    let p = &case.params;
    let loss = GroupLoss::new(GroupLossOptions {
        tau: p.tau,
        steps: p.steps,
        ce_weight: 1.0,
        zero_diagonal: false,
        priors: Priors::Softmax,
    })?;
    let labels: Vec<i64> = Vec::try_from(case.array("labels"))?;
    let want_mask: Vec<i64> = Vec::try_from(case.array("anchor_mask"))?;
    // The official rule needs no randomness; the RNG argument is never drawn from.
    let mut unused = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
    let mask = Anchors::first_k(p.anchors)?.mask(&labels, &mut unused)?;
    let got_mask: Vec<i64> = mask.iter().map(|&b| b as i64).collect();
    ensure!(
        got_mask == want_mask,
        "{}: first-{} anchor rule gives {got_mask:?}, the official code {want_mask:?}",
        case.path.display(),
        p.anchors
    );
    let input = |key: &str| -> Result<Tensor> {
        Ok(case
            .array(key)
            .f_to_kind(kind)?
            .f_to_device(device)?
            .set_requires_grad(true))
    };
    let (f, z) = (input("fc7")?, input("logits")?);
    let targets = loss.targets(&labels, &mask, p.m, device)?;
    let out = loss.forward(&f, &z, &targets)?;
    let w = loss.similarity(&f)?;
    let grads = |l: &Tensor| Tensor::f_run_backward(&[l], &[&f, &z], true, false);
    let g_group = grads(&out.loss_group)?;
    let g_total = grads(&out.loss)?;
    let rel = |t: &Tensor, key: &str| max_rel_error(t, case.array(key));
    Ok(CaseErrors {
        loss: rel(&out.loss_group, "loss_group")?
            .max(rel(&out.loss_ce, "loss_ce")?)
            .max(rel(&out.loss, "loss_total")?),
        w: rel(&w, "W")?,
        x: rel(&out.x, "X")?,
        grad_features: rel(&g_group[0], "grad_fc7_group")?.max(rel(&g_total[0], "grad_fc7_total")?),
        grad_logits: rel(&g_group[1], "grad_logits_group")?
            .max(rel(&g_total[1], "grad_logits_total")?),
    })
}
