//! The contrastive, triplet (semi-hard and batch-hard) and Multi-Similarity losses against
//! pytorch-metric-learning 2.9.0 configured to each paper, in float64:
//! `tests/fixtures/pair_losses/`, made by `tests/reference/pair_losses_ref.py` (its docstring
//! says how to regenerate them and which PML objects each objective is).
//!
//! Six objectives × six batches (P×K, ties and duplicates, a singleton class, all easy, mixed
//! easy/hard anchors, a pair near the MS miner's ε boundary). Relative error is
//! max|ours − PML| / max(max|PML|, 1e-12) for the loss and for d loss / d raw embeddings (the
//! gradient's scale floored at 1e-3·|loss|, see [`errors`]).
//! Tolerances: ≤ 1e-6 in f64, ≤ 1e-4 in f32. Measured worst f64 errors (loss, gradient):
//! contrastive paper form 4e-16, 1e-16; PML form 1e-16, 1e-16; triplet semi-hard 3e-16,
//! 2e-16; batch-hard 0, 3e-16; MS mined 0, 3e-16; MS all pairs 0, 3e-16. In f32 the worst are
//! 3e-6 (semi-hard loss) and 3e-5 (the vanishing MS gradient against its floor), else ≤ 3e-7.
//! `cargo test --test it -- pair_losses_golden --nocapture` prints them.

use crate::common::golden_cases::{device, read_cases, rel_error};
use grouploss::loss::contrastive::{ContrastiveLoss, ContrastiveOptions};
use grouploss::loss::multi_similarity::{MultiSimilarityLoss, MultiSimilarityOptions};
use grouploss::loss::triplet::{TripletLoss, TripletOptions};
use grouploss::loss::LossError;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use tch::{Kind, Tensor};

const F64_TOLERANCE: f64 = 1e-6;
const F32_TOLERANCE: f64 = 1e-4;

struct Case {
    name: String,
    /// The objective key, e.g. `triplet_batch_hard` (the name before `__`).
    key: String,
    batch: String,
    objective: String,
    options: serde_json::Value,
    a: HashMap<String, Tensor>,
}

fn cases() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pair_losses");
    let list = read_cases(&dir);
    assert_eq!(list.len(), 36, "six objectives × six batches");
    list.into_iter()
        .map(|c| Case {
            key: c.name.split("__").next().unwrap().to_string(),
            batch: c.params["batch"].as_str().unwrap().to_string(),
            objective: c.params["objective"].as_str().unwrap().to_string(),
            options: c.params["options"].clone(),
            name: c.name,
            a: c.arrays,
        })
        .collect()
}

enum Loss {
    Contrastive(ContrastiveLoss),
    Triplet(TripletLoss),
    MultiSimilarity(MultiSimilarityLoss),
}

impl Loss {
    /// The loss named by `objective` with `options` as `cases.json` spells them.
    fn new(objective: &str, options: &serde_json::Value) -> Result<Loss, LossError> {
        let o = options.clone();
        Ok(match objective {
            "contrastive" => Loss::Contrastive(ContrastiveLoss::new(from_json(o))?),
            "triplet" => Loss::Triplet(TripletLoss::new(from_json(o))?),
            "multi_similarity" => Loss::MultiSimilarity(MultiSimilarityLoss::new(from_json(o))?),
            other => panic!("unknown objective {other}"),
        })
    }

    fn forward(&self, x: &Tensor, y: &Tensor) -> Result<Tensor, LossError> {
        match self {
            Loss::Contrastive(l) => l.forward(x, y),
            Loss::Triplet(l) => l.forward(x, y),
            Loss::MultiSimilarity(l) => l.forward(x, y),
        }
    }
}

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// max|ours − want| / max(max|want|, `floor`, 1e-12).
fn rel_above(ours: &Tensor, want: &Tensor, floor: f64) -> f64 {
    rel_error(ours, want, floor.max(1e-12))
}

/// max|ours − want| / max(max|want|, 1e-12).
fn rel(ours: &Tensor, want: &Tensor) -> f64 {
    rel_above(ours, want, 0.0)
}

/// Our loss and d loss / d embeddings on the case's batch, in `kind` on the test device.
fn run(loss: &Loss, case: &Case, kind: Kind) -> (Tensor, Tensor) {
    let dev = device();
    let x = case.a["embeddings"]
        .to_kind(kind)
        .to_device(dev)
        .set_requires_grad(true);
    let y = case.a["labels"].to_device(dev);
    let l = loss.forward(&x, &y).unwrap();
    assert_eq!(
        l.kind(),
        kind,
        "{}: the loss must keep the input dtype",
        case.name
    );
    assert_eq!(l.size(), Vec::<i64>::new(), "{}: a 0-d loss", case.name);
    assert!(
        l.requires_grad(),
        "{}: the loss must be in the graph",
        case.name
    );
    let g = Tensor::run_backward(&[&l], &[&x], false, false).remove(0);
    (l, g)
}

/// (loss, gradient) relative errors of `loss` against the case's PML values. A gradient below
/// 1e-3·|loss| counts as vanishing and is measured against that floor instead of its own
/// rounding noise (only MS over all pairs on the easy batch, whose PML gradient is 1e-17;
/// every other gradient is ≥ 0.02 ≥ 1e-3·|loss|, so the floor never applies there).
fn errors(loss: &Loss, case: &Case, kind: Kind) -> (f64, f64) {
    let (l, g) = run(loss, case, kind);
    let want = &case.a["loss"];
    let floor = 1e-3 * want.abs().double_value(&[]);
    (
        rel(&l, want),
        rel_above(&g, &case.a["grad_embeddings"], floor),
    )
}

fn assert_all_cases(kind: Kind, tolerance: f64) {
    let mut worst: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for case in cases() {
        let loss = Loss::new(&case.objective, &case.options).unwrap();
        let (el, eg) = errors(&loss, &case, kind);
        assert!(
            el <= tolerance && eg <= tolerance,
            "{} ({kind:?}): relative error loss {el:e}, gradient {eg:e} > {tolerance:e}",
            case.name
        );
        let w = worst.entry(case.key.clone()).or_default();
        *w = (w.0.max(el), w.1.max(eg));
    }
    for (key, (el, eg)) in worst {
        eprintln!("{kind:?} {key:20} worst relative error: loss {el:.1e}, gradient {eg:.1e}");
    }
}

#[test]
fn every_case_matches_pml_in_f64() {
    assert_all_cases(Kind::Double, F64_TOLERANCE);
}

#[test]
fn every_case_matches_pml_in_f32() {
    assert_all_cases(Kind::Float, F32_TOLERANCE);
}

#[test]
fn the_cases_use_the_papers_defaults() {
    let ms = MultiSimilarityOptions::default();
    for case in cases() {
        let ok = match case.key.as_str() {
            "contrastive_paper" => {
                from_json::<ContrastiveOptions>(case.options.clone())
                    == ContrastiveOptions::default()
            }
            "contrastive_pml" => {
                from_json::<ContrastiveOptions>(case.options.clone())
                    == ContrastiveOptions {
                        squared: false,
                        ..ContrastiveOptions::default()
                    }
            }
            "triplet_semi_hard" => {
                from_json::<TripletOptions>(case.options.clone()) == TripletOptions::semi_hard()
            }
            "triplet_batch_hard" => {
                from_json::<TripletOptions>(case.options.clone()) == TripletOptions::batch_hard()
            }
            "ms_mined" => from_json::<MultiSimilarityOptions>(case.options.clone()) == ms,
            "ms_all" => {
                from_json::<MultiSimilarityOptions>(case.options.clone())
                    == MultiSimilarityOptions { mine: false, ..ms }
            }
            other => panic!("unknown objective key {other}"),
        };
        assert!(
            ok,
            "{}: options {} are not the paper's defaults",
            case.name, case.options
        );
    }
}

#[test]
fn a_perturbed_hyperparameter_fails_the_comparison() {
    // The comparison can fail: a 1 % change of any hyper-parameter must break at least one case
    // of its objective (the generator checks that each one moves PML's values).
    let perturbed: [(&str, &[&str]); 6] = [
        ("contrastive_paper", &["neg_margin"]),
        ("contrastive_pml", &["neg_margin"]),
        ("triplet_semi_hard", &["margin"]),
        ("triplet_batch_hard", &["margin"]),
        ("ms_mined", &["alpha", "beta", "base", "epsilon"]),
        ("ms_all", &["alpha", "beta", "base"]),
    ];
    let all = cases();
    for (key, params) in perturbed {
        for param in params {
            let failing = all
                .iter()
                .filter(|c| c.key == key)
                .filter(|c| {
                    let mut o = c.options.clone();
                    o[*param] = (o[*param].as_f64().unwrap() * 1.01).into();
                    let (el, eg) = errors(&Loss::new(&c.objective, &o).unwrap(), c, Kind::Double);
                    el.max(eg) > F64_TOLERANCE
                })
                .count();
            assert!(
                failing > 0,
                "{key}: {param} × 1.01 still matches every case"
            );
        }
    }
}

#[test]
fn pml_defaults_differ_from_the_papers() {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for case in cases() {
        let loss = Loss::new(&case.objective, &case.options).unwrap();
        let (ours, _) = run(&loss, &case, Kind::Double);
        for key in ["loss_pml_default", "loss_pml_reducer"] {
            if let Some(pml) = case.a.get(key) {
                let d = rel(&ours, pml).min(rel(pml, &ours));
                assert!(
                    d > 1e-3,
                    "{} {key}: the paper's loss equals PML's ({d:e})",
                    case.name
                );
                *seen.entry(format!("{}/{key}", case.key)).or_default() += 1;
            }
        }
    }
    for key in [
        "contrastive_paper/loss_pml_default",
        "triplet_semi_hard/loss_pml_default",
        "triplet_batch_hard/loss_pml_default",
        "triplet_batch_hard/loss_pml_reducer",
        "ms_mined/loss_pml_default",
        "ms_all/loss_pml_default",
    ] {
        assert!(seen.contains_key(key), "no case shows {key}: {seen:?}");
    }
}

#[test]
fn the_easy_batch_is_a_connected_zero() {
    // MS over all pairs is the exception: without the miner every positive pair costs.
    for case in cases()
        .iter()
        .filter(|c| c.batch == "easy" && c.key != "ms_all")
    {
        let loss = Loss::new(&case.objective, &case.options).unwrap();
        let (l, g) = run(&loss, case, Kind::Double);
        assert_eq!(l.double_value(&[]), 0.0, "{}", case.name);
        assert_eq!(g.abs().max().double_value(&[]), 0.0, "{}", case.name);
    }
}
