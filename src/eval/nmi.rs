//! Normalised mutual information between class labels and a clustering, the paper's NMI column:
//! I(U; V) / mean(H(U), H(V)) with the arithmetic mean, natural logarithms, as scikit-learn's
//! `normalized_mutual_info_score` (its default `average_method="arithmetic"`). Sums run in key
//! order, so the same input gives the same bits.

use anyhow::{ensure, Result};
use std::collections::BTreeMap;

/// NMI of `labels` and `clusters` (same length), in [0, 1].
pub fn nmi(labels: &[i64], clusters: &[i64]) -> Result<f64> {
    ensure!(
        labels.len() == clusters.len(),
        "{} labels but {} cluster assignments",
        labels.len(),
        clusters.len()
    );
    let n = labels.len() as f64;
    let mut joint: BTreeMap<(i64, i64), f64> = BTreeMap::new();
    let mut a: BTreeMap<i64, f64> = BTreeMap::new();
    let mut b: BTreeMap<i64, f64> = BTreeMap::new();
    for (&u, &v) in labels.iter().zip(clusters) {
        *joint.entry((u, v)).or_default() += 1.0;
        *a.entry(u).or_default() += 1.0;
        *b.entry(v).or_default() += 1.0;
    }
    // scikit-learn: both trivial (one class and one cluster, or nothing) is a perfect match.
    if a.len() <= 1 && b.len() <= 1 {
        return Ok(1.0);
    }
    let entropy = |m: &BTreeMap<i64, f64>| -> f64 {
        m.values()
            .map(|&c| {
                let p = c / n;
                -p * p.ln()
            })
            .sum()
    };
    let mi: f64 = joint
        .iter()
        .map(|(&(u, v), &c)| c / n * (c * n / (a[&u] * b[&v])).ln())
        .sum::<f64>()
        .max(0.0);
    let (hu, hv) = (entropy(&a), entropy(&b));
    let denom = (hu + hv) / 2.0;
    Ok(if denom <= f64::EPSILON {
        0.0
    } else {
        (mi / denom).clamp(0.0, 1.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_cases() {
        // Identical partitions (up to renaming) → 1; independent → 0.
        assert_eq!(nmi(&[0, 0, 1, 1], &[5, 5, 7, 7]).unwrap(), 1.0);
        assert!(nmi(&[0, 0, 1, 1], &[0, 1, 0, 1]).unwrap().abs() < 1e-15);
        // One cluster for two classes: MI = 0.
        assert_eq!(nmi(&[0, 0, 1, 1], &[3, 3, 3, 3]).unwrap(), 0.0);
        // [0,0,1,1] vs [0,0,0,1]: MI = ½ln2 + ¼ln(4/3)·... computed by hand below.
        let (p, q) = ([0, 0, 1, 1], [0, 0, 0, 1]);
        let ln = f64::ln;
        let mi = 0.5 * ln(0.5 / (0.5 * 0.75)) + 0.25 * ln(0.25 / (0.5 * 0.75)) + 0.25 * ln(2.0);
        let hu = ln(2.0);
        let hv = -(0.75 * ln(0.75) + 0.25 * ln(0.25));
        assert!((nmi(&p, &q).unwrap() - mi / ((hu + hv) / 2.0)).abs() < 1e-12);
        assert!(nmi(&[0], &[0, 1]).is_err());
    }
}
