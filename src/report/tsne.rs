//! Exact t-SNE (van der Maaten & Hinton, 2008) for the report's 2-D view of test embeddings:
//! a few hundred points, so the O(N²) gradient is cheap. Plain f64 loops in a fixed order with
//! a deterministic (PCA) initialisation, so the same vectors give the same picture bit for bit.
//! The optimiser follows scikit-learn's defaults: perplexity 30, early exaggeration 12 for 250
//! iterations, learning rate max(N / 12 / 4, 50), momentum 0.5 then 0.8, adaptive gains.

use anyhow::{ensure, Result};

/// t-SNE settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TsneParams {
    pub perplexity: f64,
    pub iterations: usize,
}

impl Default for TsneParams {
    fn default() -> Self {
        TsneParams {
            perplexity: 30.0,
            iterations: 1000,
        }
    }
}

fn sq_dists(x: &[Vec<f64>]) -> Vec<f64> {
    let n = x.len();
    let mut d = vec![0.0; n * n];
    for i in 0..n {
        for j in i + 1..n {
            let v: f64 = x[i].iter().zip(&x[j]).map(|(a, b)| (a - b) * (a - b)).sum();
            d[i * n + j] = v;
            d[j * n + i] = v;
        }
    }
    d
}

/// Symmetric joint probabilities P with each row's conditional at the target perplexity
/// (binary search on the Gaussian precision).
fn joint_p(d: &[f64], n: usize, perplexity: f64) -> Vec<f64> {
    let target = perplexity.ln();
    let mut p = vec![0.0; n * n];
    for i in 0..n {
        let (mut beta, mut lo, mut hi) = (1.0f64, 0.0f64, f64::INFINITY);
        for _ in 0..100 {
            let mut sum = 0.0;
            let mut dot = 0.0;
            for j in 0..n {
                if j != i {
                    let v = (-d[i * n + j] * beta).exp();
                    p[i * n + j] = v;
                    sum += v;
                    dot += d[i * n + j] * v;
                }
            }
            let sum = sum.max(1e-300);
            let entropy = sum.ln() + beta * dot / sum;
            for j in 0..n {
                p[i * n + j] /= sum;
            }
            let diff = entropy - target;
            if diff.abs() < 1e-5 {
                break;
            }
            if diff > 0.0 {
                lo = beta;
                beta = if hi.is_finite() {
                    (beta + hi) / 2.0
                } else {
                    beta * 2.0
                };
            } else {
                hi = beta;
                beta = (beta + lo) / 2.0;
            }
        }
    }
    let mut sym = vec![0.0; n * n];
    let total = 2.0 * n as f64;
    for i in 0..n {
        for j in 0..n {
            sym[i * n + j] = ((p[i * n + j] + p[j * n + i]) / total).max(1e-12);
        }
    }
    sym
}

/// The first two principal components of `x` (power iteration with deflation, fixed start and
/// sign), scaled to standard deviation 1e-4 as scikit-learn's PCA initialisation.
fn pca_init(x: &[Vec<f64>]) -> Vec<[f64; 2]> {
    let n = x.len();
    let dim = x[0].len();
    let mean: Vec<f64> = (0..dim)
        .map(|k| x.iter().map(|r| r[k]).sum::<f64>() / n as f64)
        .collect();
    let c: Vec<Vec<f64>> = x
        .iter()
        .map(|r| r.iter().zip(&mean).map(|(a, m)| a - m).collect())
        .collect();
    let mut comps: Vec<Vec<f64>> = Vec::new();
    for _ in 0..2 {
        let mut v: Vec<f64> = (0..dim).map(|k| 1.0 + (k as f64 * 0.618).sin()).collect();
        for _ in 0..200 {
            // w = Cᵀ (C v), minus the components already found
            let cv: Vec<f64> = c.iter().map(|r| dot(r, &v)).collect();
            let mut w = vec![0.0; dim];
            for (r, s) in c.iter().zip(&cv) {
                for (wk, rk) in w.iter_mut().zip(r) {
                    *wk += rk * s;
                }
            }
            for u in &comps {
                let a = dot(&w, u);
                for (wk, uk) in w.iter_mut().zip(u) {
                    *wk -= a * uk;
                }
            }
            let norm = dot(&w, &w).sqrt();
            if norm == 0.0 {
                break;
            }
            v = w.iter().map(|a| a / norm).collect();
        }
        // sign: the largest-magnitude coordinate positive
        let big = v
            .iter()
            .fold(0.0f64, |m, a| if a.abs() > m.abs() { *a } else { m });
        if big < 0.0 {
            v.iter_mut().for_each(|a| *a = -*a);
        }
        comps.push(v);
    }
    let mut y: Vec<[f64; 2]> = c
        .iter()
        .map(|r| [dot(r, &comps[0]), dot(r, &comps[1])])
        .collect();
    let sd = (y.iter().map(|p| p[0] * p[0]).sum::<f64>() / n as f64).sqrt();
    if sd > 0.0 {
        for p in &mut y {
            p[0] *= 1e-4 / sd;
            p[1] *= 1e-4 / sd;
        }
    }
    y
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Embeds the rows of `x` (N × D) in 2-D.
pub fn tsne(x: &[Vec<f64>], params: TsneParams) -> Result<Vec<[f64; 2]>> {
    let n = x.len();
    ensure!(n >= 3, "t-SNE needs at least 3 points, got {n}");
    ensure!(
        x.iter().all(|r| r.len() == x[0].len()),
        "rows of different lengths"
    );
    let perplexity = params.perplexity.min((n - 1) as f64 / 3.0);
    let p = joint_p(&sq_dists(x), n, perplexity);
    let mut y = pca_init(x);
    let mut update = vec![[0.0f64; 2]; n];
    let mut gains = vec![[1.0f64; 2]; n];
    let lr = (n as f64 / 12.0 / 4.0).max(50.0);
    let mut q = vec![0.0; n * n];
    for it in 0..params.iterations {
        let exaggeration = if it < 250 { 12.0 } else { 1.0 };
        let momentum = if it < 250 { 0.5 } else { 0.8 };
        let mut qsum = 0.0;
        for i in 0..n {
            for j in i + 1..n {
                let dx = y[i][0] - y[j][0];
                let dy = y[i][1] - y[j][1];
                let v = 1.0 / (1.0 + dx * dx + dy * dy);
                q[i * n + j] = v;
                q[j * n + i] = v;
                qsum += 2.0 * v;
            }
        }
        for i in 0..n {
            let mut g = [0.0f64; 2];
            for j in 0..n {
                if j == i {
                    continue;
                }
                let w = q[i * n + j];
                let f = (exaggeration * p[i * n + j] - w / qsum) * w;
                g[0] += 4.0 * f * (y[i][0] - y[j][0]);
                g[1] += 4.0 * f * (y[i][1] - y[j][1]);
            }
            for k in 0..2 {
                gains[i][k] = if (g[k] > 0.0) != (update[i][k] > 0.0) {
                    gains[i][k] + 0.2
                } else {
                    (gains[i][k] * 0.8).max(0.01)
                };
                update[i][k] = momentum * update[i][k] - lr * gains[i][k] * g[k];
            }
        }
        for (yi, u) in y.iter_mut().zip(&update) {
            yi[0] += u[0];
            yi[1] += u[1];
        }
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Three well-separated Gaussian blobs in 20-D stay separated in 2-D: every point's nearest
    /// 2-D neighbour is from its own blob.
    #[test]
    fn separated_clusters_stay_separated_and_runs_repeat_exactly() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut x = Vec::new();
        let mut label = Vec::new();
        for c in 0..3 {
            for _ in 0..20 {
                let row: Vec<f64> = (0..20)
                    .map(|k| if k == c { 10.0 } else { 0.0 } + rng.random_range(-1.0..1.0))
                    .collect();
                x.push(row);
                label.push(c);
            }
        }
        let params = TsneParams {
            perplexity: 10.0,
            iterations: 400,
        };
        let y = tsne(&x, params).unwrap();
        for i in 0..y.len() {
            let nearest = (0..y.len())
                .filter(|&j| j != i)
                .min_by(|&a, &b| {
                    let d = |j: usize| (y[i][0] - y[j][0]).powi(2) + (y[i][1] - y[j][1]).powi(2);
                    d(a).total_cmp(&d(b))
                })
                .unwrap();
            assert_eq!(label[nearest], label[i], "point {i}");
        }
        assert_eq!(tsne(&x, params).unwrap(), y);
    }
}
