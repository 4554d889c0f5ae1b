//! The metric set of one embedding set — Recall@K, NMI, MAP@R, R-Precision — as `gl evaluate`,
//! `gl ensemble` and the catalogue store it. NMI clusters the L2-normalised embeddings with
//! k-means, k = the number of classes (the paper's protocol).

use crate::eval::kmeans::{kmeans, KMeansParams};
use crate::eval::knn::{l2_normalise, Chunks, Similarity, Strategy};
use crate::eval::nmi::nmi;
use crate::eval::retrieval::{self, Retrieval, RetrievalParams};
use anyhow::{Context, Result};
use rand::SeedableRng;
use std::collections::BTreeSet;
use std::time::Instant;
use tch::{Device, Tensor};

/// What `gl evaluate` computes, validated.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalParams {
    pub recall_ks: Vec<usize>,
    pub similarity: Similarity,
    /// Compute NMI (k-means can dominate the time at SOP scale on a CPU).
    pub nmi: bool,
    pub kmeans_restarts: usize,
    pub kmeans_max_iter: usize,
    pub kmeans_seed: u64,
    /// Similarity block budget in MiB.
    pub chunk_mib: usize,
    /// Neighbour search strategy (same result; time against memory).
    #[serde(default)]
    pub search: Strategy,
}

impl Default for EvalParams {
    fn default() -> Self {
        EvalParams {
            recall_ks: vec![1, 2, 4, 8],
            similarity: Similarity::Cosine,
            nmi: true,
            kmeans_restarts: 3,
            kmeans_max_iter: 100,
            kmeans_seed: 0,
            chunk_mib: 64,
            search: Strategy::Auto,
        }
    }
}

/// Metrics of one embedding set; fractions in [0, 1].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Metrics {
    pub retrieval: Retrieval,
    pub nmi: Option<f64>,
    pub kmeans_inertia: Option<f64>,
    pub images: usize,
    pub classes: usize,
    pub dim: i64,
    pub seconds: f64,
}

impl Metrics {
    /// `(name, value)` pairs in report order: `recall@K`…, `nmi`, `map@r`, `r_precision`.
    pub fn named(&self) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = self
            .retrieval
            .recall
            .iter()
            .map(|(k, v)| (format!("recall@{k}"), *v))
            .collect();
        out.extend(self.nmi.map(|v| ("nmi".to_string(), v)));
        out.extend(self.retrieval.map_at_r.map(|v| ("map@r".to_string(), v)));
        out.extend(
            self.retrieval
                .r_precision
                .map(|v| ("r_precision".to_string(), v)),
        );
        out
    }

    /// The flat JSON object `gl evaluate --format json` prints.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m: serde_json::Map<String, serde_json::Value> = self
            .named()
            .into_iter()
            .map(|(k, v)| (k, serde_json::json!(v)))
            .collect();
        m.insert("images".into(), self.images.into());
        m.insert("classes".into(), self.classes.into());
        m.insert("dim".into(), self.dim.into());
        m.insert(
            "queries_without_positives".into(),
            self.retrieval.queries_without_positives.into(),
        );
        serde_json::Value::Object(m)
    }

    /// A two-column text table (percentages, as the paper prints them).
    pub fn table(&self) -> String {
        let rows = self.named();
        let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(6).max(6);
        let mut s = format!("{:<w$}  {:>7}\n", "metric", "value");
        for (k, v) in rows {
            s.push_str(&format!("{k:<w$}  {:>7.2}\n", 100.0 * v));
        }
        s.push_str(&format!(
            "({} images, {} classes, dim {}, {:.1} s)\n",
            self.images, self.classes, self.dim, self.seconds
        ));
        s
    }
}

/// Evaluates `vectors` (N×D, any device, moved to `device`) with class `labels`.
pub fn evaluate(
    vectors: &Tensor,
    labels: &[i64],
    p: &EvalParams,
    device: Device,
) -> Result<Metrics> {
    let t = Instant::now();
    let x = vectors.to_device(device);
    let rp = RetrievalParams {
        recall_ks: p.recall_ks.clone(),
        map_at_r: true,
        similarity: p.similarity,
        chunks: Chunks::for_budget(p.chunk_mib),
        search: p.search,
    };
    let retrieval = retrieval::evaluate(&x, labels, &rp).context("retrieval metrics")?;
    let classes = labels.iter().collect::<BTreeSet<_>>().len();
    let (nmi_value, inertia) = if p.nmi {
        let mut kp = KMeansParams::new(classes);
        kp.restarts = p.kmeans_restarts;
        kp.max_iter = p.kmeans_max_iter;
        let points = match p.similarity {
            Similarity::Cosine => l2_normalise(&x.to_kind(tch::Kind::Float)),
            Similarity::Euclidean => x.to_kind(tch::Kind::Float),
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(p.kmeans_seed);
        let c = kmeans(&points, &kp, &mut rng).context("k-means for NMI")?;
        (Some(nmi(labels, &c.labels)?), Some(c.inertia))
    } else {
        (None, None)
    };
    Ok(Metrics {
        retrieval,
        nmi: nmi_value,
        kmeans_inertia: inertia,
        images: labels.len(),
        classes,
        dim: vectors.size()[1],
        seconds: t.elapsed().as_secs_f64(),
    })
}
