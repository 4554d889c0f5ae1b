//! Embedding a set of cached crops: the evaluation transform (resize + centre crop), the network
//! in inference mode, features gathered on the CPU in dataset order.

use crate::data::crop_cache::CropRow;
use crate::data::loader::{self, LoaderParams, Mode};
use crate::model::net::EmbeddingNet;
use crate::model::ForwardMode;
use anyhow::{Context, Result};
use std::sync::Arc;
use tch::{Device, Tensor};

/// Embeddings of some rows: `features` N×D (f32, CPU) in the order of `indices`.
#[derive(Debug)]
pub struct Embedded {
    pub features: Tensor,
    pub labels: Vec<i64>,
    pub image_ids: Vec<i64>,
}

/// Embeds `rows[indices]` in batches of `batch_size` on `device`.
pub fn embed(
    net: &EmbeddingNet,
    rows: &Arc<Vec<CropRow>>,
    indices: &[usize],
    batch_size: usize,
    loader_params: LoaderParams,
    device: Device,
) -> Result<Embedded> {
    let batches: Vec<Vec<usize>> = loader::sequential(indices.len(), batch_size)
        .into_iter()
        .map(|b| b.into_iter().map(|i| indices[i]).collect())
        .collect();
    let bar = crate::progress::bar(batches.len() as u64, "embed batches");
    let stream = loader::stream(Arc::clone(rows), batches, Mode::Eval, loader_params)?;
    let mut parts = Vec::new();
    let (mut labels, mut image_ids) = (Vec::new(), Vec::new());
    tch::no_grad(|| -> Result<()> {
        for batch in stream {
            let batch = batch.context("loading an evaluation batch")?;
            let f = net.features(&batch.images.to_device(device), ForwardMode::EVAL);
            parts.push(f.to_device(Device::Cpu));
            labels.extend(batch.labels);
            image_ids.extend(batch.image_ids);
            bar.inc(1);
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    let features = if parts.is_empty() {
        Tensor::zeros([0, net.feature_dim()], (tch::Kind::Float, Device::Cpu))
    } else {
        Tensor::cat(&parts, 0)
    };
    Ok(Embedded {
        features,
        labels,
        image_ids,
    })
}
