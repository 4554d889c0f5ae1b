//! Retrieval metrics over exact neighbours ([`super::knn`]), every image a query against all
//! others (itself excluded), accumulated query chunk by query chunk so memory stays bounded:
//!
//! * **Recall@K** (the paper's table): a query is a hit when one of its K nearest neighbours has
//!   its class. Every query counts, also one whose class has no other image (always a miss), as
//!   in the official evaluation. A K at or above the gallery size (N − 1) looks at the whole
//!   gallery.
//! * **MAP@R** and **R-Precision** (Musgrave et al., "A Metric Learning Reality Check", 2020):
//!   with R the number of other images of the query's class, R-Precision = r/R for r relevant
//!   among the R nearest, and MAP@R = (1/R) Σ_{i ≤ R} P(i)·rel(i). Averaged over the queries
//!   with R ≥ 1 (for R = 0 both are undefined); how many were left out is reported.

use crate::eval::knn::{Chunks, Index, Neighbours, Similarity, Strategy};
use anyhow::{ensure, Result};
use std::collections::HashMap;
use tch::{Kind, Tensor};

/// What to compute.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrievalParams {
    pub recall_ks: Vec<usize>,
    /// MAP@R and R-Precision too (needs the R nearest, R up to the largest class − 1).
    pub map_at_r: bool,
    pub similarity: Similarity,
    pub chunks: Chunks,
    pub search: Strategy,
}

impl Default for RetrievalParams {
    fn default() -> Self {
        RetrievalParams {
            recall_ks: vec![1, 2, 4, 8],
            map_at_r: true,
            similarity: Similarity::Cosine,
            chunks: Chunks::default(),
            search: Strategy::Auto,
        }
    }
}

/// Retrieval metrics of one embedding set (fractions in [0, 1]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Retrieval {
    /// (K, Recall@K) in the order asked.
    pub recall: Vec<(usize, f64)>,
    pub map_at_r: Option<f64>,
    pub r_precision: Option<f64>,
    pub queries: usize,
    /// Queries whose class has no other image (left out of MAP@R and R-Precision).
    pub queries_without_positives: usize,
}

/// Evaluates `embeddings` (N×D on any device) with `labels` (N class ids).
pub fn evaluate(embeddings: &Tensor, labels: &[i64], p: &RetrievalParams) -> Result<Retrieval> {
    let index = Index::new(embeddings, p.similarity)?;
    let n = index.len();
    ensure!(
        n as usize == labels.len(),
        "{} labels for {n} embeddings",
        labels.len()
    );
    ensure!(n >= 2, "retrieval needs ≥ 2 embeddings, got {n}");
    ensure!(
        !p.recall_ks.is_empty() && p.recall_ks.iter().all(|&k| k >= 1),
        "Recall@K needs K ≥ 1, got {:?}",
        p.recall_ks
    );
    let device = index.device();
    // Dense class ids and, per image, R = its class size − 1.
    let mut dense: HashMap<i64, i64> = HashMap::new();
    let ids: Vec<i64> = labels
        .iter()
        .map(|c| {
            let next = dense.len() as i64;
            *dense.entry(*c).or_insert(next)
        })
        .collect();
    let mut counts = vec![0i64; dense.len()];
    for &i in &ids {
        counts[i as usize] += 1;
    }
    let r_of: Vec<i64> = ids.iter().map(|&i| counts[i as usize] - 1).collect();
    let max_r = r_of.iter().copied().max().unwrap_or(0);
    let kmax_recall = *p.recall_ks.iter().max().unwrap_or(&1) as i64;
    let k = kmax_recall
        .max(if p.map_at_r { max_r } else { 1 })
        .clamp(1, n - 1);
    let y = Tensor::from_slice(&ids).to_device(device);
    let r = Tensor::from_slice(&r_of).to_device(device);
    let mut hits = vec![0i64; p.recall_ks.len()];
    let (mut ap_sum, mut rp_sum) = (0f64, 0f64);
    let ranks = Tensor::arange_start(1, k + 1, (Kind::Int64, device));
    index.search_with(k, p.chunks, p.search, |nb: Neighbours| {
        let len = nb.indices.size()[0];
        let same = y
            .index_select(0, &nb.indices.view([-1]))
            .view([len, k])
            .eq_tensor(&y.narrow(0, nb.start, len).unsqueeze(1));
        // First hit rank (1-based), k + 1 when none of the k is of the query's class.
        let first = same
            .logical_not()
            .to_kind(Kind::Int64)
            .f_mul_scalar(k + 1)?
            .f_add(&(same.to_kind(Kind::Int64) * &ranks))?
            .amin([1], false);
        for (h, &kk) in hits.iter_mut().zip(&p.recall_ks) {
            // K beyond the k searched (K ≥ N − 1) means the whole gallery.
            *h += i64::try_from(first.le((kk as i64).min(k)).sum(Kind::Int64))?;
        }
        if p.map_at_r {
            let rq = r.narrow(0, nb.start, len).unsqueeze(1);
            let rel = same
                .logical_and(&ranks.unsqueeze(0).le_tensor(&rq))
                .to_kind(Kind::Double);
            let precision = rel.cumsum(1, Kind::Double) / ranks.to_kind(Kind::Double);
            let rq = rq.squeeze_dim(1).to_kind(Kind::Double);
            let valid = rq.gt(0.0);
            let denom = rq.clamp_min(1.0);
            let ap =
                (precision * &rel).sum_dim_intlist([1i64].as_slice(), false, Kind::Double) / &denom;
            let rp = rel.sum_dim_intlist([1i64].as_slice(), false, Kind::Double) / denom;
            ap_sum += f64::try_from(ap.masked_fill(&valid.logical_not(), 0.0).sum(Kind::Double))?;
            rp_sum += f64::try_from(rp.masked_fill(&valid.logical_not(), 0.0).sum(Kind::Double))?;
        }
        Ok(())
    })?;
    let with_positives = r_of.iter().filter(|&&r| r > 0).count();
    let mean = |s: f64| (with_positives > 0).then(|| s / with_positives as f64);
    Ok(Retrieval {
        recall: p
            .recall_ks
            .iter()
            .zip(hits)
            .map(|(&kk, h)| (kk, h as f64 / n as f64))
            .collect(),
        map_at_r: if p.map_at_r { mean(ap_sum) } else { None },
        r_precision: if p.map_at_r { mean(rp_sum) } else { None },
        queries: n as usize,
        queries_without_positives: n as usize - with_positives,
    })
}

/// Recall@K only, as fractions in the order of `ks` (the trainer's per-epoch numbers).
pub fn recall_at_k(embeddings: &Tensor, labels: &[i64], ks: &[usize]) -> Result<Vec<f64>> {
    let p = RetrievalParams {
        recall_ks: ks.to_vec(),
        map_at_r: false,
        ..Default::default()
    };
    Ok(evaluate(embeddings, labels, &p)?
        .recall
        .into_iter()
        .map(|(_, v)| v)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force on the CPU: f64 cosine similarities, ties to the lower index.
    fn brute(x: &[Vec<f64>], labels: &[i64], k: usize) -> f64 {
        let unit = |v: &Vec<f64>| {
            let l = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            v.iter().map(|a| a / l).collect::<Vec<_>>()
        };
        let xs: Vec<_> = x.iter().map(unit).collect();
        let mut hits = 0;
        for (i, q) in xs.iter().enumerate() {
            let mut d: Vec<(f64, usize)> = xs
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(j, v)| (-q.iter().zip(v).map(|(a, b)| a * b).sum::<f64>(), j))
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
        // 60 well-spread points in 3-D (no near-ties at f32 precision).
        let pts: Vec<Vec<f64>> = (0..60)
            .map(|i| {
                let (a, b) = (i as f64 * 2.3999, (i as f64 * 0.7381).sin());
                vec![a.cos(), a.sin(), b]
            })
            .collect();
        // Classes are angular sectors (neighbours agree except near the borders and where the
        // third coordinate pulls them apart).
        let tau = std::f64::consts::TAU;
        let labels: Vec<i64> = (0..60)
            .map(|i| ((i as f64 * 2.3999).rem_euclid(tau) / (tau / 5.0)) as i64)
            .collect();
        let flat: Vec<f64> = pts.iter().flatten().copied().collect();
        let t = Tensor::from_slice(&flat).view([60, 3]);
        let got = recall_at_k(&t, &labels, &[1, 2, 4, 8]).unwrap();
        for (g, k) in got.iter().zip([1, 2, 4, 8]) {
            assert!((g - brute(&pts, &labels, k)).abs() < 1e-12, "R@{k}: {g}");
        }
        assert!(got.windows(2).all(|w| w[0] <= w[1]));
        assert!(
            got[0] > 0.0 && got[0] < 1.0,
            "a test that can tell: {got:?}"
        );
    }

    #[test]
    fn chunked_search_equals_one_block_on_random_data() {
        tch::manual_seed(7);
        for similarity in [Similarity::Cosine, Similarity::Euclidean] {
            let x = Tensor::randn([500, 32], (Kind::Float, tch::Device::Cpu));
            let index = Index::new(&x, similarity).unwrap();
            let all = |chunks: Chunks, strategy: Strategy| {
                let (mut idx, mut sim) = (Vec::new(), Vec::new());
                index
                    .search_with(40, chunks, strategy, |nb| {
                        idx.extend(Vec::<i64>::try_from(nb.indices.view([-1]))?);
                        sim.extend(Vec::<f32>::try_from(nb.similarities.view([-1]))?);
                        Ok(())
                    })
                    .unwrap();
                (idx, sim)
            };
            let one = Chunks {
                queries: 500,
                gallery: 500,
            };
            let (i1, s1) = all(one, Strategy::TopkBlocks);
            for chunks in [
                one,
                Chunks {
                    queries: 7,
                    gallery: 13,
                },
                Chunks {
                    queries: 64,
                    gallery: 41,
                },
            ] {
                for strategy in [Strategy::TopkBlocks, Strategy::Running] {
                    let (i2, s2) = all(chunks, strategy);
                    assert_eq!(i1, i2, "{similarity:?} {chunks:?} {strategy:?}");
                    // Values differ by the products' rounding: 2·q·g − ‖g‖² cancels terms of
                    // size ≈ 32 here, cosines are ≤ 1.
                    let tol = match similarity {
                        Similarity::Cosine => 1e-5,
                        Similarity::Euclidean => 1e-4,
                    };
                    let worst = s1
                        .iter()
                        .zip(&s2)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        worst < tol,
                        "{similarity:?} {chunks:?} {strategy:?}: {worst}"
                    );
                }
            }
            // Nearest first, and never the query itself.
            assert!(s1.chunks(40).all(|r| r.windows(2).all(|w| w[0] >= w[1])));
            assert!(i1
                .chunks(40)
                .enumerate()
                .all(|(q, r)| !r.contains(&(q as i64))));
        }
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
        // K above the gallery size (3) looks at the whole gallery.
        assert_eq!(recall_at_k(&t, &[0, 0, 1, 1], &[4]).unwrap(), vec![1.0]);
        assert_eq!(
            recall_at_k(&t, &[0, 1, 2, 0], &[1, 100]).unwrap(),
            vec![0.0, 0.5]
        );
        assert!(recall_at_k(&t, &[0, 0, 1], &[1]).is_err());
        assert!(recall_at_k(&t, &[0, 0, 1, 1], &[0]).is_err());
    }

    fn params(ks: &[usize], gallery_chunk: i64) -> RetrievalParams {
        RetrievalParams {
            recall_ks: ks.to_vec(),
            chunks: Chunks {
                queries: 2,
                gallery: gallery_chunk,
            },
            ..Default::default()
        }
    }

    #[test]
    fn ties_go_to_the_lower_index_in_every_chunking() {
        // Query 0 = e1; images 1 and 2 are both e2 (similarity 0 to e1, tied), image 3 = e1.
        // Image 4 = −e1. For query 0 the ranking is 3 (1.0), then the tie 1, 2 (0.0), then 4.
        let t = Tensor::from_slice(&[1.0f32, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, -1.0, 0.0])
            .view([5, 2]);
        let cases = [1, 2, 3, 5]
            .into_iter()
            .flat_map(|g| [(g, Strategy::TopkBlocks), (g, Strategy::Running)]);
        for (g, strategy) in cases {
            let index = Index::new(&t, Similarity::Cosine).unwrap();
            let mut got = Vec::new();
            index
                .search_with(
                    4,
                    Chunks {
                        queries: 2,
                        gallery: g,
                    },
                    strategy,
                    |nb| {
                        got.extend(Vec::<i64>::try_from(nb.indices.view([-1]))?);
                        Ok(())
                    },
                )
                .unwrap();
            assert_eq!(&got[..4], &[3, 1, 2, 4], "gallery chunk {g}, {strategy:?}");
            // Query 1 (e2): image 2 (1.0), then 0 and 3 tied at 0.0, then 4 (0.0 too).
            assert_eq!(&got[4..8], &[2, 0, 3, 4], "gallery chunk {g}");
        }
        // Labels: the tie decides R@1 of query 4 (−e1): nearest are 1, 2 (0.0, tied) → image 1.
        let labels = [0, 1, 2, 0, 1];
        let r = evaluate(&t, &labels, &params(&[1], 1)).unwrap();
        // Hits at 1: q0 → 3 (class 0 ✓), q1 → 2 (✗), q2 → 1 (✗), q3 → 0 (✓), q4 → 1 (✓).
        assert_eq!(r.recall, vec![(1, 0.6)]);
    }

    #[test]
    fn map_at_r_and_r_precision_by_hand() {
        // 1-D points on a line, cosine replaced by Euclidean so the order is by distance.
        // Class a: 0, 1, 5; class b: 2, 3; class c (single): 10.
        let xs = [0.0f32, 1.0, 5.0, 2.0, 3.0, 10.0];
        let labels = [0, 0, 0, 1, 1, 2];
        let t = Tensor::from_slice(&xs).view([6, 1]);
        let p = RetrievalParams {
            similarity: Similarity::Euclidean,
            ..params(&[1, 2], 4)
        };
        let r = evaluate(&t, &labels, &p).unwrap();
        // Neighbour orders (ties to the lower index):
        // q0 (0):  1(1) 3(2) 4(3) 2(5)      R=2: rel 1,0 → AP = 1/2·(1) = .5, RP = .5
        // q1 (1):  0(1) 3(1) 4(2) 2(4)      R=2: rel 1,0 → AP .5, RP .5
        // q2 (5):  4(2) 3(3) 1(4) 0(5) 5(5) R=2: rel 0,0 → 0, 0
        // q3 (2):  1(1) 4(1) 0(2) 2(3)      R=1: rel 0 → 0, 0
        // q4 (3):  3(1) 1(2) 2(2) 0(3)      R=1: rel 1 → 1, 1
        // q5 (10): R=0, left out.
        assert_eq!(r.queries_without_positives, 1);
        assert!((r.map_at_r.unwrap() - 2.0 / 5.0).abs() < 1e-12);
        assert!((r.r_precision.unwrap() - 2.0 / 5.0).abs() < 1e-12);
        // R@1: q0 ✓ q1 ✓ q2 ✗ q3 ✗ q4 ✓ q5 ✗ → 3/6; R@2 adds q3 (4 is class b) → 4/6.
        assert_eq!(r.recall[0], (1, 0.5));
        assert!((r.recall[1].1 - 4.0 / 6.0).abs() < 1e-12);
    }
}
