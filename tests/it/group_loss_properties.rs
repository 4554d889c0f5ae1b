//! Properties every faithful Group Loss has, the finite-difference gradient check, and the
//! errors (not panics) for invalid options and malformed batches.

use grouploss::loss::{AnchorError, Anchors, GroupLoss, GroupLossError, GroupLossOptions, Priors};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

const CPU: Device = Device::Cpu;

/// A batch of `classes × per` samples (grouped labels), ReLU'd Gaussian features, f64.
fn batch(seed: i64, classes: i64, per: i64, d: i64, m: i64) -> (Tensor, Tensor, Vec<i64>) {
    tch::manual_seed(seed);
    let n = classes * per;
    let f = Tensor::randn([n, d], (Kind::Double, CPU)).relu();
    let z = Tensor::randn([n, m], (Kind::Double, CPU)) * 2.0;
    let labels = (0..classes)
        .flat_map(|c| std::iter::repeat_n(c * 2, per as usize))
        .collect();
    (f, z, labels)
}

fn first_k(labels: &[i64], k: i64) -> Vec<bool> {
    Anchors::first_k(k)
        .unwrap()
        .mask(labels, &mut ChaCha8Rng::seed_from_u64(0))
        .unwrap()
}

fn loss(opts: GroupLossOptions) -> GroupLoss {
    GroupLoss::new(opts).unwrap()
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

#[test]
fn rows_on_simplex_and_anchor_rows_one_hot() {
    let (f, z, labels) = batch(1, 4, 5, 16, 12);
    let mask = first_k(&labels, 2);
    for priors in [Priors::Softmax, Priors::Uniform, Priors::BatchClasses] {
        for steps in [1, 3] {
            let l = loss(GroupLossOptions {
                tau: 3.0,
                steps,
                priors,
                ..Default::default()
            });
            let t = l.targets(&labels, &mask, 12, CPU).unwrap();
            let x = l.forward(&f, &z, &t).unwrap().x;
            let cols = x.size()[1];
            assert_eq!(
                cols,
                if priors == Priors::BatchClasses {
                    4
                } else {
                    12
                }
            );
            assert!(
                x.min().double_value(&[]) >= 0.0,
                "{priors:?}: negative probability"
            );
            let dev = max_abs(&(x.sum_dim_intlist(1, false, Kind::Double) - 1.0));
            assert!(dev < 1e-12, "{priors:?} T={steps}: rows sum to 1 ± {dev:e}");
            for (i, (&a, &y)) in mask.iter().zip(&labels).enumerate() {
                if !a {
                    continue;
                }
                let col = if priors == Priors::BatchClasses {
                    y / 2
                } else {
                    y
                };
                let row = x.get(i as i64);
                assert_eq!(
                    row.double_value(&[col]),
                    1.0,
                    "{priors:?}: anchor {i} not one-hot"
                );
                assert_eq!(row.sum(Kind::Double).double_value(&[]), 1.0);
            }
        }
    }
}

#[test]
fn permuting_the_batch_permutes_x() {
    let (f, z, labels) = batch(2, 3, 4, 8, 7);
    let mask = first_k(&labels, 1);
    let l = loss(GroupLossOptions {
        tau: 2.0,
        steps: 2,
        ..Default::default()
    });
    let x = l
        .forward(&f, &z, &l.targets(&labels, &mask, 7, CPU).unwrap())
        .unwrap()
        .x;
    let perm: Vec<i64> = vec![5, 0, 11, 3, 8, 1, 10, 2, 7, 4, 9, 6];
    let p = Tensor::from_slice(&perm);
    let labels_p: Vec<i64> = perm.iter().map(|&i| labels[i as usize]).collect();
    let mask_p: Vec<bool> = perm.iter().map(|&i| mask[i as usize]).collect();
    let t = l.targets(&labels_p, &mask_p, 7, CPU).unwrap();
    let xp = l
        .forward(&f.index_select(0, &p), &z.index_select(0, &p), &t)
        .unwrap()
        .x;
    assert!(max_abs(&(xp - x.index_select(0, &p))) < 1e-14);
}

#[test]
fn zero_diagonal_changes_x() {
    let (f, z, labels) = batch(3, 3, 4, 8, 7);
    let mask = first_k(&labels, 1);
    let run = |zero_diagonal| {
        let l = loss(GroupLossOptions {
            tau: 2.0,
            zero_diagonal,
            ..Default::default()
        });
        l.forward(&f, &z, &l.targets(&labels, &mask, 7, CPU).unwrap())
            .unwrap()
            .x
    };
    assert!(max_abs(&(run(true) - run(false))) > 1e-3);
}

#[test]
fn batch_classes_equals_softmax_with_absent_classes_masked_out() {
    // Restricting the softmax to the batch's classes is the same as giving every absent class
    // a logit of −∞: those columns start at 0 and the replicator keeps them at 0.
    let (f, z, labels) = batch(4, 3, 4, 8, 9);
    let mask = first_k(&labels, 2);
    let present = Tensor::from_slice(&[0i64, 2, 4]);
    let absent = Tensor::from_slice(&[1i64, 3, 5, 6, 7, 8]);
    let z_masked = z.index_fill(1, &absent, -1e300);
    let restricted = loss(GroupLossOptions {
        tau: 5.0,
        steps: 2,
        priors: Priors::BatchClasses,
        ..Default::default()
    });
    let full = loss(GroupLossOptions {
        tau: 5.0,
        steps: 2,
        ..Default::default()
    });
    let a = restricted
        .forward(&f, &z, &restricted.targets(&labels, &mask, 9, CPU).unwrap())
        .unwrap();
    let b = full
        .forward(
            &f,
            &z_masked,
            &full.targets(&labels, &mask, 9, CPU).unwrap(),
        )
        .unwrap();
    assert_eq!(
        a.classes.as_ref().map(|c| Vec::<i64>::try_from(c).unwrap()),
        Some(vec![0, 2, 4])
    );
    assert!(max_abs(&(&a.x - b.x.index_select(1, &present))) < 1e-14);
    assert!(max_abs(&(&a.loss_group - &b.loss_group)) < 1e-14);
}

#[test]
fn ce_weight_scales_only_the_auxiliary_term() {
    let (f, z, labels) = batch(5, 2, 3, 6, 5);
    let mask = first_k(&labels, 1);
    let l = loss(GroupLossOptions {
        tau: 1.5,
        ce_weight: 0.25,
        ..Default::default()
    });
    let o = l
        .forward(&f, &z, &l.targets(&labels, &mask, 5, CPU).unwrap())
        .unwrap();
    let expect = o.loss_group.double_value(&[]) + 0.25 * o.loss_ce.double_value(&[]);
    assert!((o.loss.double_value(&[]) - expect).abs() < 1e-15);
}

#[test]
fn zero_variance_feature_row_stays_finite() {
    let (f, z, labels) = batch(6, 3, 3, 8, 6);
    let f = f
        .index_fill(0, &Tensor::from_slice(&[4i64]), 0.7)
        .set_requires_grad(true);
    let z = z.set_requires_grad(true);
    let mask = first_k(&labels, 1);
    for zero_diagonal in [false, true] {
        let l = loss(GroupLossOptions {
            tau: 2.0,
            steps: 2,
            zero_diagonal,
            ..Default::default()
        });
        let o = l
            .forward(&f, &z, &l.targets(&labels, &mask, 6, CPU).unwrap())
            .unwrap();
        let g = Tensor::run_backward(&[&o.loss], &[&f, &z], false, false);
        for (what, t) in [("loss", &o.loss), ("X", &o.x), ("df", &g[0]), ("dz", &g[1])] {
            let finite = t.isfinite().all().int64_value(&[]) == 1;
            assert!(finite, "zero_diagonal={zero_diagonal}: {what} not finite");
        }
    }
}

#[test]
fn gradients_match_central_differences() {
    let (f, z, labels) = batch(7, 3, 3, 5, 6);
    // Keep every row away from zero variance, where W is not differentiable (the clamp).
    let f = &f + Tensor::rand_like(&f) * 0.1;
    let mask = first_k(&labels, 1);
    let l = loss(GroupLossOptions {
        tau: 1.7,
        steps: 2,
        ..Default::default()
    });
    let t = l.targets(&labels, &mask, 6, CPU).unwrap();
    let value = |f: &Tensor, z: &Tensor| l.forward(f, z, &t).unwrap().loss.double_value(&[]);
    let (fg, zg) = (f.set_requires_grad(true), z.set_requires_grad(true));
    let g = Tensor::run_backward(
        &[&l.forward(&fg, &zg, &t).unwrap().loss],
        &[&fg, &zg],
        false,
        false,
    );
    let (f, z) = (fg.detach(), zg.detach());
    let h = 1e-6;
    let mut worst: f64 = 0.0;
    for (which, base) in [(0, &f), (1, &z)] {
        let flat = base.flatten(0, -1);
        for i in 0..flat.size()[0] {
            let bump = |s: f64| {
                let t = flat.copy();
                let _ = t.get(i).fill_(flat.double_value(&[i]) + s);
                t.view_as(base)
            };
            let (plus, minus) = (bump(h), bump(-h));
            let numeric = if which == 0 {
                (value(&plus, &z) - value(&minus, &z)) / (2.0 * h)
            } else {
                (value(&f, &plus) - value(&f, &minus)) / (2.0 * h)
            };
            let analytic = g[which].flatten(0, -1).double_value(&[i]);
            worst = worst.max((numeric - analytic).abs() / (1e-3 + analytic.abs()));
        }
    }
    assert!(worst < 1e-6, "finite differences disagree: {worst:e}");
}

#[test]
fn invalid_options_are_errors() {
    let base = GroupLossOptions::default();
    let err = |o: GroupLossOptions| GroupLoss::new(o).unwrap_err();
    assert_eq!(
        err(GroupLossOptions { tau: 0.0, ..base }),
        GroupLossError::Tau(0.0)
    );
    assert_eq!(
        err(GroupLossOptions { tau: -1.0, ..base }),
        GroupLossError::Tau(-1.0)
    );
    assert!(matches!(
        err(GroupLossOptions {
            tau: f64::NAN,
            ..base
        }),
        GroupLossError::Tau(_)
    ));
    assert_eq!(
        err(GroupLossOptions { steps: 0, ..base }),
        GroupLossError::Steps(0)
    );
    assert_eq!(
        err(GroupLossOptions {
            ce_weight: -0.5,
            ..base
        }),
        GroupLossError::CeWeight(-0.5)
    );
    assert_eq!(
        Anchors::first_k(-1).unwrap_err(),
        AnchorError::NegativeK(-1)
    );
    assert!(GroupLossError::Tau(0.0).to_string().contains("τ"));
}

#[test]
fn malformed_batches_are_errors() {
    let l = loss(GroupLossOptions::default());
    let (f, z, labels) = batch(8, 2, 3, 4, 5);
    let mask = first_k(&labels, 1);
    assert_eq!(
        l.targets(&[], &[], 5, CPU).unwrap_err(),
        GroupLossError::EmptyBatch
    );
    assert_eq!(
        l.targets(&[0, 5], &[true, false], 5, CPU).unwrap_err(),
        GroupLossError::LabelOutOfRange {
            index: 1,
            label: 5,
            num_classes: 5
        }
    );
    assert!(matches!(
        l.targets(&[-1], &[true], 5, CPU).unwrap_err(),
        GroupLossError::LabelOutOfRange {
            index: 0,
            label: -1,
            ..
        }
    ));
    assert!(matches!(
        l.targets(&labels, &mask[1..], 5, CPU).unwrap_err(),
        GroupLossError::Shape { .. }
    ));
    assert_eq!(
        l.targets(&labels, &mask, 0, CPU).unwrap_err(),
        GroupLossError::NumClasses(0)
    );
    let t = l.targets(&labels, &mask, 5, CPU).unwrap();
    let shape = |e| matches!(e, GroupLossError::Shape { .. });
    assert!(
        shape(l.forward(&f.narrow(0, 0, 5), &z, &t).unwrap_err()),
        "f rows ≠ n"
    );
    assert!(
        shape(l.forward(&f, &z.narrow(1, 0, 4), &t).unwrap_err()),
        "z columns ≠ m"
    );
    assert!(
        shape(l.forward(&f.flatten(0, -1), &z, &t).unwrap_err()),
        "f not 2-D"
    );
    let e = l.forward(&f.to_kind(Kind::Float), &z, &t).unwrap_err();
    assert!(matches!(e, GroupLossError::Dtype { .. }), "{e}");
    let e = l
        .forward(&f.to_kind(Kind::Int64), &z.to_kind(Kind::Int64), &t)
        .unwrap_err();
    assert!(matches!(e, GroupLossError::Dtype { .. }), "{e}");
}

#[test]
fn random_anchors_are_seeded_and_k_per_class() {
    let labels: Vec<i64> = (0..4).flat_map(|c| std::iter::repeat_n(c, 6)).collect();
    let a = Anchors::Random { k: 2 };
    let m1 = a.mask(&labels, &mut ChaCha8Rng::seed_from_u64(11)).unwrap();
    assert_eq!(
        m1,
        a.mask(&labels, &mut ChaCha8Rng::seed_from_u64(11)).unwrap()
    );
    assert_eq!(m1.iter().filter(|&&b| b).count(), 8);
    assert_ne!(
        m1,
        first_k(&labels, 2),
        "seed 11 happens to pick the official anchors"
    );
}
