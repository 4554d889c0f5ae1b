//! RAdam against `torch.optim.RAdam` (PyTorch 2.11), in both layouts. The expected numbers
//! come from `tests/fixtures/radam/make_radam.py`, run in the same test run on the same machine
//! ([`crate::common::reference_npz`]): a bit-exact comparison with bits another CPU wrote would
//! compare kernels, not the optimiser (a fixture written on an AVX-512 Xeon differed from torch
//! on an AMD EPYC by 1.4e-17). The model, loss and cases are described in the script:
//!
//! ```python
//! h = torch.tanh(x.matmul(w1) + b1); y_hat = h.matmul(w2) + b2
//! loss = (y_hat - y).square().mean()
//! opt = torch.optim.RAdam(params, lr=1e-2, weight_decay=1e-4, foreach=False)  # case "l2"
//! # "dec": decoupled_weight_decay=True; "grp": [w1, b1] lr=1e-2, [w2, b2] lr=1e-3
//! # "adam": torch.optim.Adam(params, lr=1e-2, weight_decay=1e-4) against rectify = false
//! # "wd" (foreach=True only): weight_decay=0.1, also in f32 ("fe32_wd")
//! # "late" (foreach=True only): b2 detached in the loss before step 6, so it has no gradient
//! ```
//!
//! `Layout::PerTensor` is checked against `foreach=False` to a relative 1e-12, with gradients
//! from our own autograd (whose matmuls may round differently from the fixture's machine).
//! `Layout::MultiTensor` is checked against `foreach=True` bit for bit, replaying the
//! fixture's gradients (the gradient of Σ θ·g is g exactly) so that only the optimiser's
//! arithmetic is compared.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use grouploss::train::radam::{Layout, RAdam, RAdamError, RAdamParams};
use tch::{Kind, Tensor};

const STEPS: usize = 30;
/// First step at which b2 has a gradient in case "late".
const LATE_FROM: usize = 6;
const NAMES: [&str; 4] = ["w1", "b1", "w2", "b2"];
/// Elementwise |rust − torch| ≤ TOL·max(|torch|, 1e-3) (relative, floored for entries near 0).
const TOL: f64 = 1e-12;

struct Fixture(HashMap<String, Tensor>);

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/radam/make_radam.py"
);

/// The reference's arrays, written once per test process.
static ARRAYS: OnceLock<Result<Mutex<Arrays>, String>> = OnceLock::new();

type Arrays = Vec<(String, Tensor)>;

impl Fixture {
    fn load() -> Self {
        let arrays = ARRAYS.get_or_init(|| {
            crate::common::reference_npz::generate(SCRIPT)
                .map(|m| Mutex::new(m.into_iter().collect()))
                .map_err(|e| format!("{e:#}"))
        });
        match arrays {
            Ok(a) => Fixture(
                a.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .map(|(k, t)| (k.clone(), t.copy()))
                    .collect(),
            ),
            Err(e) => panic!("{e}"),
        }
    }
    fn get(&self, k: &str) -> &Tensor {
        self.0
            .get(k)
            .unwrap_or_else(|| panic!("fixture has no {k}"))
    }
    fn init_params(&self) -> Vec<Tensor> {
        self.params_from("init")
    }
    /// Fresh leaf copies of `<init>_<p>` (`init`: f64, `init32`: f32).
    fn params_from(&self, init: &str) -> Vec<Tensor> {
        NAMES
            .iter()
            .map(|n| {
                self.get(&format!("{init}_{n}"))
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

fn hp(decoupled: bool, layout: Layout) -> RAdamParams {
    RAdamParams {
        lr: 1e-2,
        weight_decay: 1e-4,
        decoupled_weight_decay: decoupled,
        layout,
        ..RAdamParams::default()
    }
}

/// The optimiser of `case` (see the fixture script) over `params`.
fn build_with(case: &str, params: &[Tensor], layout: Layout) -> RAdam {
    let sc = |v: &[Tensor]| v.iter().map(Tensor::shallow_clone).collect::<Vec<_>>();
    match case {
        "l2" | "late" => RAdam::new(sc(params), hp(false, layout)).unwrap(),
        "wd" => RAdam::new(
            sc(params),
            RAdamParams {
                weight_decay: 0.1,
                ..hp(false, layout)
            },
        )
        .unwrap(),
        "dec" => RAdam::new(sc(params), hp(true, layout)).unwrap(),
        "adam" => RAdam::new(
            sc(params),
            RAdamParams {
                rectify: false,
                ..hp(false, layout)
            },
        )
        .unwrap(),
        "grp" => {
            let mut o = RAdam::new(sc(&params[..2]), hp(false, layout)).unwrap();
            o.add_group(sc(&params[2..]), 1e-3).unwrap();
            o
        }
        _ => unreachable!(),
    }
}

/// The per-tensor optimiser of `case`, for the `foreach=False` fixture.
fn build(case: &str, params: &[Tensor]) -> RAdam {
    build_with(case, params, Layout::PerTensor)
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
    for layout in [Layout::PerTensor, Layout::MultiTensor] {
        let a = Tensor::from_slice(&[1.0f64, 2.0]).set_requires_grad(true);
        let b = Tensor::from_slice(&[3.0f64]).set_requires_grad(true);
        let mut opt = RAdam::new(
            vec![a.shallow_clone(), b.shallow_clone()],
            hp(false, layout),
        )
        .unwrap();
        a.sum(Kind::Double).backward();
        opt.step().unwrap();
        assert_eq!(Vec::<f64>::try_from(&b).unwrap(), vec![3.0], "{layout:?}");
        assert_ne!(
            Vec::<f64>::try_from(&a).unwrap(),
            vec![1.0, 2.0],
            "{layout:?}"
        );
        let names: Vec<String> = opt.state_tensors().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["g0.lr", "g0.p0.exp_avg", "g0.p0.exp_avg_sq", "g0.p0.step"],
            "{layout:?}"
        );
    }
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
    for layout in [Layout::PerTensor, Layout::MultiTensor] {
        load_state_rejects_bad_input(layout);
    }
}

fn load_state_rejects_bad_input(layout: Layout) {
    let f = Fixture::load();
    let params = f.init_params();
    let mut opt = build_with("l2", &params, layout);
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

// ---- Layout::MultiTensor against torch.optim.RAdam(foreach=True), bit for bit ----

/// Group and position of parameter `i` (w1, b1, w2, b2) in `case`'s optimiser.
fn group_and_index(case: &str, i: usize) -> (usize, usize) {
    if case == "grp" {
        (i / 2, i % 2)
    } else {
        (0, i)
    }
}

/// Zeroes the gradients, then gives each parameter the gradient the fixture recorded for
/// `step` (0-based) of `key` — the backward of Σ_p Σ θ_p·g_p, whose gradient is g_p exactly —
/// except where the recording is NaN (no gradient at that step).
fn replay_backward(f: &Fixture, key: &str, step: usize, opt: &mut RAdam, params: &[Tensor]) {
    opt.zero_grad();
    let mut loss: Option<Tensor> = None;
    for (n, p) in NAMES.iter().zip(params) {
        let g = f.get(&format!("{key}_grad_{n}")).get(step as i64);
        if g.isnan().any().int64_value(&[]) != 0 {
            continue;
        }
        let term = (p * &g).sum(p.kind());
        loss = Some(match loss {
            Some(l) => l + term,
            None => term,
        });
    }
    loss.expect("a step with some gradient").backward();
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Steps of parameter `i` after `steps` steps of `case`.
fn expected_steps(case: &str, i: usize, steps: usize) -> i64 {
    let skipped = if case == "late" && i == 3 {
        steps.min(LATE_FROM - 1)
    } else {
        0
    };
    (steps - skipped) as i64
}

/// Runs `case` for 30 steps in the multi-tensor layout from `<init>_<p>`, replaying the
/// gradients of fixture run `key`; the parameters must equal `foreach=True`'s after every step,
/// and the final m, v and t its state, bit for bit.
fn check_foreach(key: &str, case: &str, init: &str) {
    let f = Fixture::load();
    let params = f.params_from(init);
    let mut opt = build_with(case, &params, Layout::MultiTensor);
    for step in 0..STEPS {
        replay_backward(&f, key, step, &mut opt, &params);
        opt.step().unwrap();
        for (n, p) in NAMES.iter().zip(&params) {
            let want = f.get(&format!("{key}_{n}")).get(step as i64);
            assert!(
                p.equal(&want),
                "{key} step {} {n}: differs from foreach=True by up to {:e}",
                step + 1,
                max_abs_diff(p, &want)
            );
        }
    }
    let state: HashMap<String, Tensor> = opt.state_tensors().into_iter().collect();
    for (i, n) in NAMES.iter().enumerate() {
        let (g, pi) = group_and_index(case, i);
        for field in ["exp_avg", "exp_avg_sq"] {
            let got = &state[&format!("g{g}.p{pi}.{field}")];
            let want = f.get(&format!("{key}_final_{n}_{field}"));
            assert!(
                got.equal(want),
                "{key} {n} {field}: differs by up to {:e}",
                max_abs_diff(got, want)
            );
        }
        assert_eq!(
            state[&format!("g{g}.p{pi}.step")].int64_value(&[]),
            expected_steps(case, i, STEPS),
            "{key} {n}"
        );
    }
}

#[test]
fn multi_tensor_l2_equals_foreach() {
    check_foreach("fe_l2", "l2", "init");
}

#[test]
fn multi_tensor_decoupled_equals_foreach() {
    check_foreach("fe_dec", "dec", "init");
}

#[test]
fn multi_tensor_param_groups_equal_foreach() {
    check_foreach("fe_grp", "grp", "init");
}

#[test]
fn multi_tensor_adam_equals_foreach_adam() {
    check_foreach("fe_adam", "adam", "init");
}

/// b2 has no gradient for 5 steps, then lags 5 steps behind: the per-parameter fallback.
#[test]
fn multi_tensor_late_gradient_equals_foreach() {
    check_foreach("fe_late", "late", "init");
}

/// λθ as large as g: the L2 term must round as `grad.add(param, alpha=λ)` (`g + θ·λ` does
/// not, in about one element in seven here).
#[test]
fn multi_tensor_large_weight_decay_equals_foreach() {
    check_foreach("fe_wd", "wd", "init");
}

#[test]
fn multi_tensor_f32_equals_foreach() {
    check_foreach("fe32_wd", "wd", "init32");
}

/// The per-tensor layout on the same gradients stays within 1e-12 of `foreach=True` but not
/// bit-identical to it: the bit-exact checks above tell the two implementations apart.
#[test]
fn per_tensor_layout_is_close_to_but_not_foreach() {
    let f = Fixture::load();
    let params = f.init_params();
    let mut opt = build("l2", &params);
    let mut bit_identical = true;
    for step in 0..STEPS {
        replay_backward(&f, "fe_l2", step, &mut opt, &params);
        opt.step().unwrap();
        for (n, p) in NAMES.iter().zip(&params) {
            let want = f.get(&format!("fe_l2_{n}")).get(step as i64);
            let (rel, _) = errors(p, &want);
            assert!(rel <= TOL, "step {} {n}: rel err {rel:e}", step + 1);
            bit_identical &= p.equal(&want);
        }
    }
    assert!(!bit_identical);
}

/// Saves the state after `at` steps (through an .npz file), restores it into a fresh
/// optimiser (`layout`) over copies of the parameters, and runs both to step 30 on the
/// fixture's gradients: the resumed run must equal the uninterrupted one bit for bit.
fn check_resume(case: &str, at: usize) {
    let f = Fixture::load();
    let key = format!("fe_{case}");
    let params = f.init_params();
    let mut opt = build_with(case, &params, Layout::MultiTensor);
    for step in 0..at {
        replay_backward(&f, &key, step, &mut opt, &params);
        opt.step().unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("optim.npz");
    Tensor::write_npz(&opt.state_tensors(), &ckpt).unwrap();
    let params2: Vec<Tensor> = params
        .iter()
        .map(|p| p.detach().copy().set_requires_grad(true))
        .collect();
    let mut opt2 = build_with(case, &params2, Layout::MultiTensor);
    opt2.load_state(&Tensor::read_npz(&ckpt).unwrap()).unwrap();
    for step in at..STEPS {
        replay_backward(&f, &key, step, &mut opt, &params);
        opt.step().unwrap();
        replay_backward(&f, &key, step, &mut opt2, &params2);
        opt2.step().unwrap();
        for ((n, p), q) in NAMES.iter().zip(&params).zip(&params2) {
            assert!(
                p.equal(q),
                "{case} saved at {at}: {n} differs at step {}",
                step + 1
            );
        }
    }
    for (n, q) in NAMES.iter().zip(&params2) {
        assert!(q.equal(&f.get(&format!("{key}_{n}")).get(STEPS as i64 - 1)));
    }
    for ((n1, t1), (n2, t2)) in opt.state_tensors().iter().zip(&opt2.state_tensors()) {
        assert_eq!(n1, n2);
        assert!(t1.equal(t2), "{case} saved at {at}: final {n1} differs");
    }
}

#[test]
fn multi_tensor_resumes_bit_exactly() {
    for case in ["l2", "dec", "grp", "adam", "wd", "late"] {
        check_resume(case, 15);
    }
    // before b2's first gradient: no state for it in the checkpoint
    check_resume("late", 3);
}

/// A state written by one layout loads into the other unchanged (the checkpoint format is
/// shared), also with parameters at different step counts.
#[test]
fn state_moves_between_layouts_unchanged() {
    let f = Fixture::load();
    let params = f.init_params();
    let mut multi = build_with("late", &params, Layout::MultiTensor);
    for step in 0..8 {
        replay_backward(&f, "fe_late", step, &mut multi, &params);
        multi.step().unwrap();
    }
    let copies = || -> Vec<Tensor> {
        params
            .iter()
            .map(|p| p.detach().copy().set_requires_grad(true))
            .collect()
    };
    let a = multi.state_tensors();
    let mut per = build_with("late", &copies(), Layout::PerTensor);
    per.load_state(&a).unwrap();
    let b = per.state_tensors();
    let mut multi2 = build_with("late", &copies(), Layout::MultiTensor);
    multi2.load_state(&b).unwrap();
    let c = multi2.state_tensors();
    assert_eq!(a.len(), 1 + 4 * 3);
    for ((x, y), z) in a.iter().zip(&b).zip(&c) {
        assert_eq!((&x.0, &x.0), (&y.0, &z.0));
        assert!(x.1.equal(&y.1) && x.1.equal(&z.1), "{} changed", x.0);
    }
    let steps: HashMap<_, _> = a.into_iter().collect();
    assert_eq!(steps["g0.p3.step"].int64_value(&[]), 3);
    assert_eq!(steps["g0.p0.step"].int64_value(&[]), 8);
}

fn assert_consecutive(ts: &[Tensor], what: &str) {
    for (i, w) in ts.windows(2).enumerate() {
        let end = w[0].data_ptr() as usize + w[0].numel() * w[0].kind().elt_size_in_bytes();
        assert_eq!(w[1].data_ptr() as usize, end, "{what} {} and {}", i, i + 1);
    }
}

/// The layout itself: the parameters keep their values but now sit back to back in one
/// buffer; after the first step so do their gradients, which later backwards accumulate into
/// in place.
#[test]
fn multi_tensor_params_and_grads_view_one_buffer() {
    let f = Fixture::load();
    let params = f.init_params();
    let before: Vec<Tensor> = params.iter().map(|p| p.detach().copy()).collect();
    let mut opt = build_with("l2", &params, Layout::MultiTensor);
    for (p, b) in params.iter().zip(&before) {
        assert!(p.equal(b) && p.requires_grad() && p.is_contiguous());
    }
    assert_consecutive(&params, "params");
    replay_backward(&f, "fe_l2", 0, &mut opt, &params);
    opt.step().unwrap();
    let grads: Vec<Tensor> = params.iter().map(Tensor::grad).collect();
    assert_consecutive(&grads, "grads");
    replay_backward(&f, "fe_l2", 1, &mut opt, &params);
    for (g, p) in grads.iter().zip(&params) {
        assert_eq!(g.data_ptr(), p.grad().data_ptr());
    }
}

/// A channels-last parameter stays channels-last, and its updates equal those of the same
/// values stored contiguously (all the arithmetic is element-wise).
#[test]
fn multi_tensor_keeps_channels_last_strides() {
    tch::manual_seed(0);
    let opts = (Kind::Float, tch::Device::Cpu);
    let w = Tensor::randn([4, 3, 2, 5], opts);
    let cl = |t: &Tensor| t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
    let a = w.copy().set_requires_grad(true);
    let b = cl(&w).set_requires_grad(true);
    let stride = b.stride();
    assert_ne!(stride, a.stride());
    let mut opt_a = RAdam::new(vec![a.shallow_clone()], hp(false, Layout::MultiTensor)).unwrap();
    let mut opt_b = RAdam::new(vec![b.shallow_clone()], hp(false, Layout::MultiTensor)).unwrap();
    for _ in 0..8 {
        let g = Tensor::randn([4, 3, 2, 5], opts);
        for (opt, p) in [(&mut opt_a, &a), (&mut opt_b, &b)] {
            opt.zero_grad();
            (p * &g).sum(Kind::Float).backward();
            opt.step().unwrap();
        }
        assert_eq!(b.stride(), stride);
        assert!(a.equal(&b));
    }
}

/// `VarStore::load` copies into the variables in place, so they keep viewing the optimiser's
/// buffer; the layers compute with it and the updates reach them.
#[test]
fn varstore_variables_stay_views_across_steps_and_load() {
    use tch::nn::{self, Module};
    let mut vs = nn::VarStore::new(tch::Device::Cpu);
    let lin = nn::linear(vs.root() / "l", 3, 2, Default::default());
    let mut opt = RAdam::new(vs.trainable_variables(), RAdamParams::default()).unwrap();
    let x = Tensor::ones([4, 3], (Kind::Float, tch::Device::Cpu));
    let step = |opt: &mut RAdam| {
        opt.zero_grad();
        lin.forward(&x).sum(Kind::Float).backward();
        opt.step().unwrap();
    };
    let w0 = lin.ws.copy();
    step(&mut opt);
    assert!(!lin.ws.equal(&w0), "the update reaches the layer");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vs.safetensors");
    vs.save(&file).unwrap();
    let (saved, ptr) = (lin.ws.copy(), lin.ws.data_ptr());
    step(&mut opt);
    assert!(!lin.ws.equal(&saved));
    vs.load(&file).unwrap();
    assert!(lin.ws.equal(&saved));
    assert_eq!(lin.ws.data_ptr(), ptr);
    assert_eq!(vs.variables()["l.weight"].data_ptr(), ptr);
    step(&mut opt);
    assert_eq!(lin.ws.data_ptr(), ptr);
}

#[test]
fn a_tensor_twice_is_an_error() {
    for layout in [Layout::PerTensor, Layout::MultiTensor] {
        let a = Tensor::from_slice(&[1.0f64, 2.0]).set_requires_grad(true);
        let b = Tensor::from_slice(&[3.0f64]).set_requires_grad(true);
        let mut opt = RAdam::new(vec![a.shallow_clone()], hp(false, layout)).unwrap();
        assert!(matches!(
            opt.add_group(vec![b.shallow_clone(), a.shallow_clone()], 1e-3),
            Err(RAdamError::DuplicateParam { group: 1, index: 1 })
        ));
        assert_eq!(opt.num_groups(), 1);
        assert!(matches!(
            RAdam::new(
                vec![b.shallow_clone(), b.shallow_clone()],
                hp(false, layout)
            ),
            Err(RAdamError::DuplicateParam { group: 0, index: 1 })
        ));
    }
}

/// `gl bench optimizer` end to end on the small backbone: the check passes with our update norm
/// equal to `foreach=True`'s (bit-identical steps on the CPU), and it ends with a SPEEDUP line.
#[test]
fn bench_optimizer_agrees_with_foreach_and_ends_with_a_speedup_line() {
    let reference = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference");
    let out = std::process::Command::new(crate::common::gl_cli::bin())
        .args([
            "bench",
            "optimizer",
            "--backbone",
            "tiny_cnn",
            "--device",
            "cpu",
        ])
        .args(["--rounds", "1", "--steps", "1", "--warmup", "0"])
        .arg("--reference-dir")
        .arg(reference)
        .output()
        .expect("starting gl");
    let (code, out, err) = crate::common::gl_cli::collect(out);
    assert_eq!(
        code, 0,
        "set GL_PYTHON to a python with torch (just does)\n{out}\n{err}"
    );
    let check = out
        .lines()
        .find(|l| l.starts_with("check after 6 steps"))
        .unwrap_or_else(|| panic!("no check line:\n{out}"));
    assert!(
        check.contains("(torch foreach=True, relative difference 0.0e0)"),
        "{check}"
    );
    let last = out.lines().last().unwrap_or_default();
    let parts: Vec<&str> = last.split(' ').collect();
    assert_eq!(parts[..2], ["SPEEDUP", "optimizer"], "{last}");
    let x: f64 = parts[2].parse().unwrap();
    assert!(x.is_finite() && x > 0.0, "{last}");
}
