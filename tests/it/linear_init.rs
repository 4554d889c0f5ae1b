//! [`torch_linear`] against `torch.nn.Linear` (PyTorch 2.11): after the same `manual_seed`,
//! the same weight and bias bit for bit. The expected tensors come from
//! `tests/reference/linear_init_ref.py`, run in the same test run
//! ([`crate::common::reference_npz`]):
//!
//! ```python
//! torch.manual_seed(seed); layer = torch.nn.Linear(n_in, n_out)  # w_<i>, b_<i>
//! # and after torch.set_default_dtype(torch.float64): w64_<i>, b64_<i>
//! ```
//!
//! tch's default `nn::linear` fails both checks: its weight is U(−√6/√in, √6/√in) and its
//! bias is drawn before the weight.

use std::collections::BTreeMap;

use grouploss::model::linear::torch_linear;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/reference/linear_init_ref.py"
);

/// (seed, in, out); keep in step with CASES in the script.
const CASES: [(i64, i64, i64); 4] = [(0, 1280, 128), (1, 128, 107), (7, 3, 5), (42, 1024, 98)];
/// The same in f64 (`w64_<i>`), where the weight's bound must be kaiming_uniform_'s to the last
/// bit (1 ulp below 1/√in for these); keep in step with CASES64 in the script.
const CASES64: [(i64, i64, i64); 2] = [(5, 1024, 16), (6, 1280, 8)];

fn reference() -> BTreeMap<String, Tensor> {
    crate::common::reference_npz::generate(SCRIPT).unwrap_or_else(|e| panic!("{e:#}"))
}

/// `torch_linear(in, out)` in a fresh VarStore of `kind` on the CPU, right after
/// `manual_seed(seed)`.
fn ours(seed: i64, n_in: i64, n_out: i64, kind: Kind) -> (Tensor, Tensor) {
    let mut vs = VarStore::new(Device::Cpu);
    vs.set_kind(kind);
    tch::manual_seed(seed);
    let l = torch_linear(vs.root() / "layer", n_in, n_out);
    let bs = l.bs.expect("torch_linear has a bias");
    (l.ws.detach().copy(), bs.detach().copy())
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

#[test]
fn torch_linear_is_bit_identical_to_torch_nn_linear() {
    let expected = reference();
    let _rng = crate::common::global_rng();
    let cases = CASES
        .iter()
        .enumerate()
        .map(|(i, &c)| (format!("_{i}"), c, Kind::Float))
        .chain(
            CASES64
                .iter()
                .enumerate()
                .map(|(i, &c)| (format!("64_{i}"), c, Kind::Double)),
        );
    for (suffix, (seed, n_in, n_out), kind) in cases {
        let (w, b) = ours(seed, n_in, n_out, kind);
        for (name, got) in [("w", &w), ("b", &b)] {
            let key = format!("{name}{suffix}");
            let want = &expected[&key];
            let case = format!("{key} (seed {seed}, {n_in}→{n_out}, {kind:?})");
            assert_eq!(got.size(), want.size(), "{case}: shape");
            assert_eq!(got.kind(), want.kind(), "{case}: dtype");
            assert!(
                got.equal(want),
                "{case} differs from torch.nn.Linear: max |Δ| = {:e}, ours[..3] = {:?}, \
                 torch[..3] = {:?}",
                max_abs(&(got - want)),
                Vec::<f64>::try_from(got.flatten(0, -1).narrow(0, 0, 3).to_kind(Kind::Double))
                    .unwrap(),
                Vec::<f64>::try_from(want.flatten(0, -1).narrow(0, 0, 3).to_kind(Kind::Double))
                    .unwrap(),
            );
        }
    }
}

/// nn.Linear's bound 1/√in, reached up to sampling (tch's default weight reaches √6/√in).
#[test]
fn torch_linear_stays_within_one_over_sqrt_fan_in() {
    let _rng = crate::common::global_rng();
    for &(seed, n_in, n_out) in &CASES {
        let (w, b) = ours(seed, n_in, n_out, Kind::Float);
        let bound = 1.0 / (n_in as f64).sqrt();
        let (mw, mb) = (max_abs(&w), max_abs(&b));
        assert!(
            mw <= bound,
            "weight (seed {seed}, {n_in}→{n_out}): max |w| = {mw} > {bound}"
        );
        assert!(
            mb <= bound,
            "bias (seed {seed}, {n_in}→{n_out}): max |b| = {mb} > {bound}"
        );
        // n draws of U(−b, b) leave max |w| < 0.99·b with probability 0.99ⁿ (e^−137 for the
        // smallest large case, 107×128; 0.86 for 3→5): the large cases only.
        if n_in * n_out >= 1000 {
            assert!(
                mw > 0.99 * bound,
                "weight (seed {seed}, {n_in}→{n_out}): max |w| = {mw} ≪ {bound}"
            );
            let var = w
                .to_kind(Kind::Double)
                .square()
                .mean(Kind::Double)
                .double_value(&[]);
            let want = bound * bound / 3.0;
            assert!(
                (var / want - 1.0).abs() < 0.05,
                "weight (seed {seed}, {n_in}→{n_out}): E[w²] = {var}, U(−b, b) has {want}"
            );
        }
    }
}
