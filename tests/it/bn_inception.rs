//! BN-Inception against an independent PyTorch rewrite (tests/fixtures/bn_inception/).
//!
//! `make_reference.py` stores the official parameter names with their shapes, an input batch and
//! the eval-mode output. Weights are not stored (40 MB); both sides derive every tensor from its
//! key with the formula documented in that script, reimplemented here in `synthetic`.
//!
//! Device: CPU unless `GL_TEST_DEVICE=cuda`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, ensure, Context, Result};
use grouploss::model::bn_inception::{feature_dim, BnInception};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/bn_inception/reference.npz"
);

fn device() -> Device {
    match std::env::var("GL_TEST_DEVICE").as_deref() {
        Ok("cuda") => Device::Cuda(0),
        _ => Device::Cpu,
    }
}

struct Reference {
    shapes: BTreeMap<String, Vec<i64>>,
    input: Tensor,
    output: Tensor,
}

fn load_reference() -> Result<Reference> {
    let mut shapes = BTreeMap::new();
    let (mut input, mut output) = (None, None);
    for (name, tensor) in Tensor::read_npz(FIXTURE).with_context(|| format!("reading {FIXTURE}"))? {
        match name.strip_prefix("shape/") {
            Some(key) => {
                shapes.insert(key.to_owned(), Vec::<i64>::try_from(&tensor)?);
            }
            None if name == "input" => input = Some(tensor),
            None if name == "output" => output = Some(tensor),
            None => bail!("unexpected entry {name} in {FIXTURE}"),
        }
    }
    Ok(Reference {
        shapes,
        input: input.context("no `input` in fixture")?,
        output: output.context("no `output` in fixture")?,
    })
}

fn fnv1a64(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The deterministic parameter values of `make_reference.py`, bit-identical in f32.
fn synthetic(key: &str, shape: &[i64]) -> Result<Tensor> {
    let (module, param) = key.rsplit_once('.').context("key without '.'")?;
    let is_bn = module.ends_with("_bn");
    let fan_in: i64 = shape.iter().skip(1).product();
    let map = |u: f64| -> Result<f64> {
        Ok(match (is_bn, param) {
            (false, "weight") => (2.0 * u - 1.0) * (6.0 / fan_in as f64).sqrt(),
            (false, "bias") => (2.0 * u - 1.0) * 0.1,
            (true, "weight") => 0.5 + u,
            (true, "bias") => (2.0 * u - 1.0) * 0.2,
            (true, "running_mean") => (2.0 * u - 1.0) * 0.5,
            (true, "running_var") => 0.5 + 1.5 * u,
            _ => bail!("no synthetic rule for {key}"),
        })
    };
    let seed = fnv1a64(key);
    let n: i64 = shape.iter().product();
    let values = (0..n as u64)
        .map(|j| map((splitmix64(seed.wrapping_add(j)) >> 40) as f64 / (1u64 << 24) as f64))
        .map(|v| v.map(|v| v as f32))
        .collect::<Result<Vec<f32>>>()?;
    Ok(Tensor::from_slice(&values).reshape(shape))
}

/// Copies the fixture's tensors into the store by name; every name must match both ways.
fn load_by_name(vs: &nn::VarStore, shapes: &BTreeMap<String, Vec<i64>>) -> Result<()> {
    let mut vars = vs.variables();
    let ours: BTreeSet<&String> = vars.keys().collect();
    let theirs: BTreeSet<&String> = shapes.keys().collect();
    let missing: Vec<_> = theirs.difference(&ours).collect();
    let extra: Vec<_> = ours.difference(&theirs).collect();
    ensure!(
        missing.is_empty() && extra.is_empty(),
        "fixture keys not in VarStore: {missing:?}; VarStore keys not in fixture: {extra:?}"
    );
    for (key, shape) in shapes {
        let var = vars.get_mut(key).context("checked above")?;
        ensure!(
            var.size() == *shape,
            "{key}: VarStore {:?} vs fixture {shape:?}",
            var.size()
        );
        let value = synthetic(key, shape)?.to_device(var.device());
        tch::no_grad(|| var.copy_(&value));
    }
    Ok(())
}

/// max_i |a_i - b_i| / max(|b_i|, 1e-2 * max_j |b_j|): relative error, floored near zero.
fn max_rel_err(actual: &Tensor, expected: &Tensor) -> Result<f64> {
    let expected = expected.to_kind(Kind::Double);
    let actual = actual.to_kind(Kind::Double);
    let floor = 1e-2 * expected.abs().max().double_value(&[]);
    let denom = expected.abs().clamp_min(floor);
    Ok(((actual - &expected).abs() / denom).max().double_value(&[]))
}

#[test]
fn variable_names_are_the_official_state_dict_keys() -> Result<()> {
    let reference = load_reference()?;
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = BnInception::new(&vs.root());
    let vars = vs.variables();
    // 69 conv+BN units: conv weight/bias, BN weight/bias/running_mean/running_var.
    assert_eq!(vars.len(), 69 * 6);
    for (key, shape) in [
        ("conv1_7x7_s2.weight", vec![64, 3, 7, 7]),
        ("conv1_7x7_s2_bn.running_mean", vec![64]),
        ("conv2_3x3_bn.running_var", vec![192]),
        ("inception_3a_1x1.weight", vec![64, 192, 1, 1]),
        ("inception_3a_pool_proj_bn.bias", vec![32]),
        ("inception_3c_double_3x3_2.weight", vec![96, 96, 3, 3]),
        ("inception_4e_3x3.bias", vec![192]),
        ("inception_5b_pool_proj.weight", vec![128, 1024, 1, 1]),
        ("inception_5b_double_3x3_2_bn.weight", vec![224]),
    ] {
        assert_eq!(
            vars.get(key).map(Tensor::size),
            Some(shape.clone()),
            "{key}"
        );
        assert_eq!(reference.shapes.get(key), Some(&shape), "{key} in fixture");
    }
    // Reduction blocks have neither a 1x1 branch nor a pool projection.
    for absent in ["inception_3c_1x1.weight", "inception_4e_pool_proj.weight"] {
        assert!(!vars.contains_key(absent), "{absent}");
    }
    load_by_name(&vs, &reference.shapes)
}

#[test]
fn eval_output_matches_pytorch_reference() -> Result<()> {
    let reference = load_reference()?;
    let device = device();
    let vs = nn::VarStore::new(device);
    let net = BnInception::new(&vs.root());
    load_by_name(&vs, &reference.shapes)?;

    let output = tch::no_grad(|| net.forward_t(&reference.input.to_device(device), false));
    assert_eq!(output.size(), [2, feature_dim()]);
    let err = max_rel_err(&output.to_device(Device::Cpu), &reference.output)?;
    println!("BN-Inception max relative error vs PyTorch: {err:.3e}");
    assert!(err <= 1e-4, "max relative error {err:.3e} > 1e-4");
    Ok(())
}

#[test]
fn accepts_224_and_227_and_updates_bn_stats_only_in_train() -> Result<()> {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = BnInception::new(&vs.root());
    let xs227 = Tensor::randn([1, 3, 227, 227], (Kind::Float, Device::Cpu)) * 50.0;
    let xs224 = Tensor::randn([2, 3, 224, 224], (Kind::Float, Device::Cpu)) * 50.0;

    let map = tch::no_grad(|| net.feature_map(&xs227, false));
    assert_eq!(map.size(), [1, feature_dim(), 7, 7]);

    let mean_key = "inception_5b_1x1_bn.running_mean";
    let before = vs.variables()[mean_key].copy();
    let eval = tch::no_grad(|| net.forward_t(&xs224, false));
    assert_eq!(eval.size(), [2, feature_dim()]);
    assert!(
        vs.variables()[mean_key].equal(&before),
        "eval changed BN stats"
    );
    let train = tch::no_grad(|| net.forward_t(&xs224, true));
    assert_eq!(train.size(), [2, feature_dim()]);
    assert!(
        !vs.variables()[mean_key].equal(&before),
        "train left BN stats"
    );
    Ok(())
}
