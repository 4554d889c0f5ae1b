//! RAdam against `torch.optim.RAdam` (PyTorch 2.11). The expected numbers come from
//! `tests/fixtures/radam/make_radam.py` (run it with the project's venv to regenerate
//! `radam.npz`); the model, loss and cases are described there:
//!
//! ```python
//! h = torch.tanh(x.matmul(w1) + b1); y_hat = h.matmul(w2) + b2
//! loss = (y_hat - y).square().mean()
//! opt = torch.optim.RAdam(params, lr=1e-2, weight_decay=1e-4, foreach=False)  # case "l2"
//! # "dec": decoupled_weight_decay=True; "grp": [w1, b1] lr=1e-2, [w2, b2] lr=1e-3
//! # "adam": torch.optim.Adam(params, lr=1e-2, weight_decay=1e-4) against rectify = false
//! ```

use std::collections::HashMap;

use grouploss::train::radam::{RAdam, RAdamError, RAdamParams};
use tch::{Kind, Tensor};

const STEPS: usize = 30;
const NAMES: [&str; 4] = ["w1", "b1", "w2", "b2"];
/// Elementwise |rust − torch| ≤ TOL·max(|torch|, 1e-3) (relative, floored for entries near 0).
const TOL: f64 = 1e-12;

struct Fixture(HashMap<String, Tensor>);

impl Fixture {
    fn load() -> Self {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/radam/radam.npz"
        );
        let map = Tensor::read_npz(path).unwrap().into_iter().collect();
        Fixture(map)
    }
    fn get(&self, k: &str) -> &Tensor {
        self.0
            .get(k)
            .unwrap_or_else(|| panic!("fixture has no {k}"))
    }
    fn init_params(&self) -> Vec<Tensor> {
        NAMES
            .iter()
            .map(|n| {
                self.get(&format!("init_{n}"))
                    .copy()
                    .set_requires_grad(true)
            })
            .collect()
    }
}

fn loss(x: &Tensor, y: &Tensor, p: &[Tensor]) -> Tensor {
    let h = (x.matmul(&p[0]) + &p[1]).tanh();
    let y_hat = h.matmul(&p[2]) + &p[3];
    (y_hat - y).square().mean(Kind::Double)
}

fn forward_backward(f: &Fixture, opt: &mut RAdam, params: &[Tensor]) {
    opt.zero_grad();
    loss(f.get("x"), f.get("y"), params).backward();
}

/// Max elementwise relative error (floored denominator) and max absolute error.
fn errors(got: &Tensor, want: &Tensor) -> (f64, f64) {
    assert_eq!(got.size(), want.size());
    assert_eq!(got.kind(), Kind::Double);
    let diff = (got - want).abs();
    let rel = &diff / want.abs().clamp_min(1e-3);
    (rel.max().double_value(&[]), diff.max().double_value(&[]))
}

fn hp(decoupled: bool) -> RAdamParams {
    RAdamParams {
        lr: 1e-2,
        weight_decay: 1e-4,
        decoupled_weight_decay: decoupled,
        ..RAdamParams::default()
    }
}

fn build(case: &str, params: &[Tensor]) -> RAdam {
    let sc = |v: &[Tensor]| v.iter().map(Tensor::shallow_clone).collect::<Vec<_>>();
    match case {
        "l2" => RAdam::new(sc(params), hp(false)).unwrap(),
        "dec" => RAdam::new(sc(params), hp(true)).unwrap(),
        "adam" => RAdam::new(
            sc(params),
            RAdamParams {
                rectify: false,
                ..hp(false)
            },
        )
        .unwrap(),
        "grp" => {
            let mut o = RAdam::new(sc(&params[..2]), hp(false)).unwrap();
            o.add_group(sc(&params[2..]), 1e-3).unwrap();
            o
        }
        _ => unreachable!(),
    }
}

/// Runs `case` for 30 steps, comparing the parameters after every step; returns the max
/// relative and absolute errors over all steps and parameters.
fn check_case(case: &str) -> (f64, f64) {
    let f = Fixture::load();
    let params = f.init_params();
    let mut opt = build(case, &params);
    let (mut max_rel, mut max_abs) = (0f64, 0f64);
    for step in 1..=STEPS {
        forward_backward(&f, &mut opt, &params);
        opt.step().unwrap();
        for (n, p) in NAMES.iter().zip(&params) {
            let (rel, abs) = errors(p, f.get(&format!("{case}_s{step:02}_{n}")));
            assert!(rel <= TOL, "{case} step {step} {n}: rel err {rel:e}");
            max_rel = max_rel.max(rel);
            max_abs = max_abs.max(abs);
        }
    }
    // final optimiser state m_30, v_30
    let state: HashMap<String, Tensor> = opt.state_tensors().into_iter().collect();
    for (i, n) in NAMES.iter().enumerate() {
        let (g, pi) = if case == "grp" {
            (i / 2, i % 2)
        } else {
            (0, i)
        };
        for field in ["exp_avg", "exp_avg_sq"] {
            let got = &state[&format!("g{g}.p{pi}.{field}")];
            let want = f.get(&format!("{case}_final_{n}_{field}"));
            let diff = (got - want).abs().max().double_value(&[]);
            let scale = want.abs().max().double_value(&[]);
            assert!(
                diff <= TOL * scale,
                "{case} {n} {field}: {diff:e} vs scale {scale:e}"
            );
        }
        assert_eq!(
            state[&format!("g{g}.p{pi}.step")].int64_value(&[]),
            STEPS as i64
        );
    }
    eprintln!("{case}: max rel err {max_rel:e}, max abs err {max_abs:e} over {STEPS} steps");
    (max_rel, max_abs)
}

#[test]
fn l2_weight_decay_matches_pytorch() {
    check_case("l2");
}

#[test]
fn decoupled_weight_decay_matches_pytorch() {
    check_case("dec");
}

#[test]
fn param_groups_match_pytorch() {
    check_case("grp");
}

#[test]
fn adam_matches_pytorch_adam() {
    check_case("adam");
}

/// The Adam and RAdam trajectories differ (rectification damps the early steps), so the Adam
/// case above cannot pass by accident with the RAdam update.
#[test]
fn adam_differs_from_radam() {
    let f = Fixture::load();
    let d = (f.get("adam_s30_w1") - f.get("l2_s30_w1"))
        .abs()
        .max()
        .double_value(&[]);
    assert!(d > 1e-3, "Adam and RAdam end {d:e} apart");
}

#[test]
fn invalid_params_are_errors() {
    let bad = |f: fn(&mut RAdamParams)| {
        let mut p = RAdamParams::default();
        f(&mut p);
        p.validate().unwrap_err()
    };
    assert!(matches!(bad(|p| p.lr = -1e-3), RAdamError::InvalidLr(v) if v == -1e-3));
    assert!(matches!(bad(|p| p.lr = f64::NAN), RAdamError::InvalidLr(_)));
    assert!(matches!(bad(|p| p.betas.0 = 1.0), RAdamError::InvalidBeta1(v) if v == 1.0));
    assert!(matches!(
        bad(|p| p.betas.0 = -0.1),
        RAdamError::InvalidBeta1(_)
    ));
    assert!(matches!(bad(|p| p.betas.1 = 1.0), RAdamError::InvalidBeta2(v) if v == 1.0));
    assert!(matches!(bad(|p| p.eps = -1e-8), RAdamError::InvalidEps(_)));
    assert!(matches!(
        bad(|p| p.weight_decay = -1.0),
        RAdamError::InvalidWeightDecay(_)
    ));
    assert!(RAdamParams::default().validate().is_ok());

    let p = vec![Tensor::zeros([2], (Kind::Double, tch::Device::Cpu)).set_requires_grad(true)];
    let bad_hp = RAdamParams {
        eps: f64::INFINITY,
        ..RAdamParams::default()
    };
    assert!(matches!(
        RAdam::new(vec![p[0].shallow_clone()], bad_hp),
        Err(RAdamError::InvalidEps(_))
    ));
    let mut opt = RAdam::new(p, RAdamParams::default()).unwrap();
    assert!(matches!(opt.set_lr(-1.0), Err(RAdamError::InvalidLr(_))));
    assert!(matches!(
        opt.add_group(vec![], -2.0),
        Err(RAdamError::InvalidLr(_))
    ));
    assert!(matches!(
        opt.set_group_lr(3, 1e-3),
        Err(RAdamError::NoSuchGroup(3, 1))
    ));
}

#[test]
fn params_without_grad_are_skipped() {
    let a = Tensor::from_slice(&[1.0f64, 2.0]).set_requires_grad(true);
    let b = Tensor::from_slice(&[3.0f64]).set_requires_grad(true);
    let mut opt = RAdam::new(vec![a.shallow_clone(), b.shallow_clone()], hp(false)).unwrap();
    a.sum(Kind::Double).backward();
    opt.step().unwrap();
    assert_eq!(Vec::<f64>::try_from(&b).unwrap(), vec![3.0]);
    let names: Vec<String> = opt.state_tensors().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["g0.lr", "g0.p0.exp_avg", "g0.p0.exp_avg_sq", "g0.p0.step"]
    );
}

/// Save after 10 steps (through an .npz file), restore into a fresh optimiser over a copy of the
/// parameters, run 20 more steps: bit-identical to the uninterrupted run.
#[test]
fn save_load_resumes_bit_exactly() {
    let f = Fixture::load();
    for case in ["l2", "dec", "grp"] {
        let params = f.init_params();
        let mut opt = build(case, &params);
        for _ in 0..10 {
            forward_backward(&f, &mut opt, &params);
            opt.step().unwrap();
        }
        let dir = std::env::temp_dir().join(format!("gl-radam-{}-{case}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ckpt = dir.join("optim.npz");
        Tensor::write_npz(&opt.state_tensors(), &ckpt).unwrap();
        let saved: Vec<Tensor> = params.iter().map(|p| p.detach().copy()).collect();

        let params2: Vec<Tensor> = saved
            .iter()
            .map(|p| p.copy().set_requires_grad(true))
            .collect();
        let mut opt2 = build(case, &params2);
        opt2.load_state(&Tensor::read_npz(&ckpt).unwrap()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        for step in 11..=STEPS {
            forward_backward(&f, &mut opt, &params);
            opt.step().unwrap();
            forward_backward(&f, &mut opt2, &params2);
            opt2.step().unwrap();
            for (p, q) in params.iter().zip(&params2) {
                assert!(p.equal(q), "{case}: resumed run differs at step {step}");
            }
        }
        let (rel, _) = errors(&params2[0], f.get(&format!("{case}_s30_w1")));
        assert!(rel <= TOL);
    }
}

#[test]
fn load_state_rejects_bad_input_and_is_all_or_nothing() {
    let f = Fixture::load();
    let params = f.init_params();
    let mut opt = build("l2", &params);
    forward_backward(&f, &mut opt, &params);
    opt.step().unwrap();
    let good = opt.state_tensors();
    let before: Vec<(String, Tensor)> = opt.state_tensors();

    let mut wrong_shape = good
        .iter()
        .map(|(n, t)| (n.clone(), t.copy()))
        .collect::<Vec<_>>();
    wrong_shape[1].1 = Tensor::zeros([5], (Kind::Double, tch::Device::Cpu));
    assert!(matches!(
        opt.load_state(&wrong_shape),
        Err(RAdamError::ShapeMismatch { .. })
    ));

    let mut missing: Vec<_> = good.iter().map(|(n, t)| (n.clone(), t.copy())).collect();
    missing.retain(|(n, _)| n != "g0.p2.step");
    assert!(
        matches!(opt.load_state(&missing), Err(RAdamError::IncompleteState(k, "step")) if k == "g0.p2")
    );

    let unknown = vec![("g7.p0.exp_avg".to_string(), Tensor::from(0.0))];
    assert!(matches!(
        opt.load_state(&unknown),
        Err(RAdamError::UnknownStateKey(_))
    ));
    let unknown = vec![("g0.p0.momentum".to_string(), Tensor::from(0.0))];
    assert!(matches!(
        opt.load_state(&unknown),
        Err(RAdamError::UnknownStateKey(_))
    ));

    // the failed loads left the state untouched
    for ((n1, t1), (n2, t2)) in opt.state_tensors().iter().zip(&before) {
        assert_eq!(n1, n2);
        assert!(t1.equal(t2));
    }
}
