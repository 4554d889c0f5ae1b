//! Recall@K for retrieval on the test classes, as the paper reports it: every image is a query
//! against all others (itself excluded); a hit at K is a neighbour of the query's class among its
//! K nearest. Features are L2-normalised first (the official `predict_batchwise`), so Euclidean
//! neighbours are cosine neighbours; the search is exact, in query chunks of a bounded
//! similarity block, on whatever device the embeddings live on.

use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

/// Queries per similarity block: chunk × N floats at a time (64 MiB at N = 120k with 128).
const QUERY_CHUNK: i64 = 128;

/// Recall@k for each k in `ks` (fractions in [0, 1]), for embeddings N×D and labels of length N.
pub fn recall_at_k(embeddings: &Tensor, labels: &[i64], ks: &[usize]) -> Result<Vec<f64>> {
    let size = embeddings.size();
    ensure!(
        size.len() == 2,
        "embeddings must be N×D, got shape {size:?}"
    );
    let n = size[0];
    ensure!(
        n as usize == labels.len(),
        "{} labels for {n} embeddings",
        labels.len()
    );
    ensure!(n >= 2, "Recall@K needs ≥ 2 embeddings, got {n}");
    ensure!(!ks.is_empty(), "no K given");
    let kmax = *ks.iter().max().unwrap_or(&1);
    ensure!(
        ks.iter().all(|&k| k >= 1) && (kmax as i64) < n,
        "every K must be in 1..{n} (N − 1 neighbours), got {ks:?}"
    );
    let device = embeddings.device();
    // f64 stays f64 (exact comparisons in tests); anything else is computed in f32.
    let kind = match embeddings.kind() {
        Kind::Double => Kind::Double,
        _ => Kind::Float,
    };
    let e = embeddings.to_kind(kind);
    let x = e.f_div(&e.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12))?;
    let y = Tensor::from_slice(labels).to_device(device);
    let mut hits = vec![0i64; ks.len()];
    let mut start = 0;
    while start < n {
        let len = QUERY_CHUNK.min(n - start);
        let q = x.narrow(0, start, len);
        let mut sim = q.matmul(&x.tr());
        // The query itself is not a neighbour.
        let own = Tensor::arange_start(start, start + len, (Kind::Int64, device)).view([len, 1]);
        let _ = sim.scatter_value_(1, &own, f64::NEG_INFINITY);
        let (_, idx) = sim.topk(kmax as i64, 1, true, true);
        let same = y
            .index_select(0, &idx.view([-1]))
            .view([len, kmax as i64])
            .eq_tensor(&y.narrow(0, start, len).view([len, 1]));
        // first_hit[i] = rank (1-based) of the first neighbour of the same class, or kmax + 1.
        let ranks = Tensor::arange_start(1, kmax as i64 + 1, (Kind::Int64, device));
        let first_hit = same
            .to_kind(Kind::Int64)
            .f_mul(&ranks)?
            .f_add(&(same.logical_not().to_kind(Kind::Int64) * (kmax as i64 + 1)))?
            .amin([1], false);
        for (h, &k) in hits.iter_mut().zip(ks) {
            *h += first_hit.le(k as i64).sum(Kind::Int64).int64_value(&[]);
        }
        start += len;
    }
    Ok(hits.iter().map(|&h| h as f64 / n as f64).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force on the CPU with f64 distances, for comparison.
    fn brute(x: &[[f64; 2]], labels: &[i64], k: usize) -> f64 {
        let norm = |v: &[f64; 2]| {
            let l = (v[0] * v[0] + v[1] * v[1]).sqrt();
            [v[0] / l, v[1] / l]
        };
        let xs: Vec<_> = x.iter().map(norm).collect();
        let mut hits = 0;
        for (i, q) in xs.iter().enumerate() {
            let mut d: Vec<(f64, usize)> = xs
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(j, v)| ((q[0] - v[0]).powi(2) + (q[1] - v[1]).powi(2), j))
                .collect();
            d.sort_by(|a, b| a.partial_cmp(b).unwrap());
            if d[..k].iter().any(|&(_, j)| labels[j] == labels[i]) {
                hits += 1;
            }
        }
        hits as f64 / xs.len() as f64
    }

    #[test]
    fn equals_brute_force() {
        let pts: Vec<[f64; 2]> = (0..300)
            .map(|i| {
                let a = (i as f64 * 0.7381).sin() * 3.0;
                [a.cos() + 0.01 * i as f64, a.sin() + 2.0]
            })
            .collect();
        let labels: Vec<i64> = (0..300).map(|i| (i % 7) as i64).collect();
        let flat: Vec<f64> = pts.iter().flatten().copied().collect();
        let t = Tensor::from_slice(&flat).view([300, 2]);
        let got = recall_at_k(&t, &labels, &[1, 2, 4, 8]).unwrap();
        for (g, k) in got.iter().zip([1, 2, 4, 8]) {
            assert!((g - brute(&pts, &labels, k)).abs() < 1e-12, "R@{k}: {g}");
        }
        assert!(got.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn separated_classes_recall_one_and_self_excluded() {
        // Two tight clusters, one per class: R@1 = 1. With a single member per class no
        // neighbour can match, so R@1 = 0 (self is excluded).
        let t = Tensor::from_slice(&[1.0f32, 0.0, 0.99, 0.01, 0.0, 1.0, 0.01, 0.99]).view([4, 2]);
        assert_eq!(recall_at_k(&t, &[0, 0, 1, 1], &[1]).unwrap(), vec![1.0]);
        assert_eq!(
            recall_at_k(&t, &[0, 1, 2, 3], &[1, 3]).unwrap(),
            vec![0.0, 0.0]
        );
        assert!(recall_at_k(&t, &[0, 0, 1, 1], &[4]).is_err());
        assert!(recall_at_k(&t, &[0, 0, 1], &[1]).is_err());
    }
}
