//! The Rust Group Loss against the official implementation's vectors in
//! `../shared/golden/group_loss/` (made by running dvl-tum/group_loss at commit 7d83231 in
//! float64; see `../shared/README.md`). The same cases are checked on the Python side by
//! `tests/reference/test_group_loss_ref.py`.
//!
//! Tolerances: ≤ 1e-9 relative in f64 (measured ≈ 1e-14), ≤ 1e-4 in f32.

use crate::common::golden_cases::{device, read_cases, rel_error};
use grouploss::loss::{Anchors, GroupLoss, GroupLossOptions, Priors};
use rand::SeedableRng;
use std::collections::HashMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn golden_dir() -> PathBuf {
    std::env::var_os("GL_GOLDEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/golden/group_loss")
        })
}

struct Case {
    name: String,
    k: i64,
    tau: f64,
    steps: i64,
    m: i64,
    a: HashMap<String, Tensor>,
}

fn cases() -> Vec<Case> {
    let list = read_cases(&golden_dir());
    assert_eq!(list.len(), 6, "expected the six official cases");
    list.into_iter()
        .map(|c| Case {
            k: c.params["anchors"].as_i64().unwrap(),
            tau: c.params["tau"].as_f64().unwrap(),
            steps: c.params["T"].as_i64().unwrap(),
            m: c.params["m"].as_i64().unwrap(),
            name: c.name,
            a: c.arrays,
        })
        .collect()
}

/// max|ours − want| / max|want|, as the Python reference tests measure it.
fn rel(ours: &Tensor, want: &Tensor) -> f64 {
    rel_error(ours, want, 1e-300)
}

struct Run {
    loss_group: Tensor,
    loss_ce: Tensor,
    loss: Tensor,
    x: Tensor,
    w: Tensor,
    /// d loss_group / d(f, z) and d loss / d(f, z)
    grads_group: Vec<Tensor>,
    grads_total: Vec<Tensor>,
}

fn run(case: &Case, kind: Kind) -> Run {
    let dev = device();
    let labels: Vec<i64> = Vec::try_from(&case.a["labels"]).unwrap();
    let mask = Anchors::first_k(case.k)
        .unwrap()
        .mask(&labels, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0))
        .unwrap();
    let official: Vec<i64> = Vec::try_from(&case.a["anchor_mask"]).unwrap();
    assert_eq!(
        mask.iter().map(|&b| b as i64).collect::<Vec<_>>(),
        official,
        "{}: first-k anchors differ from the official mask",
        case.name
    );
    let loss = GroupLoss::new(GroupLossOptions {
        tau: case.tau,
        steps: case.steps,
        ce_weight: 1.0,
        zero_diagonal: false,
        priors: Priors::Softmax,
    })
    .unwrap();
    let f = case.a["fc7"]
        .to_kind(kind)
        .to_device(dev)
        .set_requires_grad(true);
    let z = case.a["logits"]
        .to_kind(kind)
        .to_device(dev)
        .set_requires_grad(true);
    let t = loss.targets(&labels, &mask, case.m, dev).unwrap();
    let out = loss.forward(&f, &z, &t).unwrap();
    let grads_group = Tensor::run_backward(&[&out.loss_group], &[&f, &z], true, false);
    let grads_total = Tensor::run_backward(&[&out.loss], &[&f, &z], true, false);
    Run {
        w: loss.similarity(&f).unwrap(),
        loss_group: out.loss_group,
        loss_ce: out.loss_ce,
        loss: out.loss,
        x: out.x,
        grads_group,
        grads_total,
    }
}

/// Relative error of everything the official code produced: losses, W, X, both gradients of the
/// group-only and of the total loss.
fn errors(r: &Run, case: &Case) -> [(&'static str, f64); 9] {
    [
        ("loss_group", rel(&r.loss_group, &case.a["loss_group"])),
        ("loss_ce", rel(&r.loss_ce, &case.a["loss_ce"])),
        ("loss_total", rel(&r.loss, &case.a["loss_total"])),
        ("W", rel(&r.w, &case.a["W"])),
        ("X", rel(&r.x, &case.a["X"])),
        (
            "grad_fc7_group",
            rel(&r.grads_group[0], &case.a["grad_fc7_group"]),
        ),
        (
            "grad_logits_group",
            rel(&r.grads_group[1], &case.a["grad_logits_group"]),
        ),
        (
            "grad_fc7_total",
            rel(&r.grads_total[0], &case.a["grad_fc7_total"]),
        ),
        (
            "grad_logits_total",
            rel(&r.grads_total[1], &case.a["grad_logits_total"]),
        ),
    ]
}

fn assert_all_cases(kind: Kind, tolerance: f64) {
    for case in cases() {
        let r = run(&case, kind);
        assert_eq!(r.x.kind(), kind, "the loss must compute in the input dtype");
        for (what, err) in errors(&r, &case) {
            assert!(
                err <= tolerance,
                "{} {what} ({kind:?}): relative error {err:e} > {tolerance:e}",
                case.name
            );
        }
    }
}

#[test]
fn all_six_cases_match_in_f64() {
    assert_all_cases(Kind::Double, 1e-9);
}

#[test]
fn all_six_cases_match_in_f32() {
    assert_all_cases(Kind::Float, 1e-4);
}

#[test]
fn zero_diagonal_is_not_the_official_mode() {
    // The paper's text says W's diagonal is 0; the official code keeps 1. The goldens follow the
    // code, so the paper's variant must differ from them.
    let case = cases().into_iter().find(|c| c.name == "cub").unwrap();
    let labels: Vec<i64> = Vec::try_from(&case.a["labels"]).unwrap();
    let mask = Anchors::first_k(case.k)
        .unwrap()
        .mask(&labels, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0))
        .unwrap();
    let loss = GroupLoss::new(GroupLossOptions {
        tau: case.tau,
        zero_diagonal: true,
        ..GroupLossOptions::default()
    })
    .unwrap();
    let t = loss.targets(&labels, &mask, case.m, Device::Cpu).unwrap();
    let out = loss.forward(&case.a["fc7"], &case.a["logits"], &t).unwrap();
    assert!(rel(&out.x, &case.a["X"]) > 1e-3);
}
