//! The training and evaluation loader: encoded crops from the Parquet cache → decoded,
//! augmented, normalised batches as tch tensors, produced on worker threads ahead of the
//! consumer (a bounded queue of `prefetch` batches) so the GPU is not starved.
//!
//! Determinism: every image's randomness comes from its own RNG, seeded from
//! (seed, epoch, batch index, position in batch). The same seed gives the same batches and the
//! same crops whatever the number of threads.

use crate::data::crop_cache::CropRow;
use crate::data::transform::{decode, eval_transform, train_transform_with, Augment, Normalize};
use anyhow::{anyhow, ensure, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use tch::{Device, Kind, Tensor};

/// How images become tensors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoaderParams {
    /// Side of the square input (paper: 227).
    pub crop: u32,
    /// Shorter side before the eval centre crop (paper: 256).
    pub resize: u32,
    pub normalize: Normalize,
    /// Crop scale and flip of the train transform ([`Augment::PAPER`] for the paper's).
    pub augment: Augment,
    /// Decode/augment threads.
    pub threads: usize,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
    pub seed: u64,
}

impl LoaderParams {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.crop >= 1 && self.crop <= self.resize,
            "crop must be in 1..=resize"
        );
        ensure!(self.threads >= 1, "loader threads must be ≥ 1");
        ensure!(self.prefetch >= 1, "prefetch must be ≥ 1");
        Ok(())
    }
}

/// One batch: images (B×3×crop×crop, f32, CPU), and per image its label and id.
#[derive(Debug)]
pub struct Batch {
    pub images: Tensor,
    pub labels: Vec<i64>,
    pub image_ids: Vec<i64>,
}

/// Train or eval transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// RandomResizedCrop + flip, seeded per image.
    Train { epoch: u64 },
    /// Resize + centre crop.
    Eval,
}

/// A stream of batches computed on a background thread; iterate it to get them in order.
pub struct BatchStream {
    rx: Receiver<Result<Batch>>,
    worker: Option<JoinHandle<()>>,
}

impl Iterator for BatchStream {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        let item = self.rx.recv().ok();
        if item.is_none() {
            if let Some(w) = self.worker.take() {
                let _ = w.join();
            }
        }
        item
    }
}

/// Starts producing `batches` (lists of indices into `rows`) in `mode`.
pub fn stream(
    rows: Arc<Vec<CropRow>>,
    batches: Vec<Vec<usize>>,
    mode: Mode,
    p: LoaderParams,
) -> Result<BatchStream> {
    p.validate()?;
    if let Some(bad) = batches.iter().flatten().find(|&&i| i >= rows.len()) {
        return Err(anyhow!(
            "batch index {bad} is outside the {} cached images",
            rows.len()
        ));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(p.threads)
        .build()?;
    let (tx, rx) = sync_channel(p.prefetch);
    let worker = std::thread::Builder::new()
        .name("gl-loader".into())
        .spawn(move || {
            for (b, idx) in batches.iter().enumerate() {
                let batch = pool.install(|| make_batch(&rows, idx, b as u64, mode, &p));
                let failed = batch.is_err();
                if tx.send(batch).is_err() || failed {
                    break; // consumer gone, or the error has been delivered
                }
            }
        })?;
    Ok(BatchStream {
        rx,
        worker: Some(worker),
    })
}

/// The per-image RNG: a function of (seed, epoch, batch, position) only.
pub fn image_rng(seed: u64, epoch: u64, batch: u64, position: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ batch);
    rng.set_word_pos(u128::from(position) << 20);
    rng
}

fn make_batch(
    rows: &[CropRow],
    idx: &[usize],
    b: u64,
    mode: Mode,
    p: &LoaderParams,
) -> Result<Batch> {
    let s = i64::from(p.crop);
    let plane = (3 * p.crop * p.crop) as usize;
    // Write straight into the batch tensor's storage: no zeroing, no copy afterwards.
    let images = Tensor::empty([idx.len() as i64, 3, s, s], (Kind::Float, Device::Cpu));
    // SAFETY: `images` is a fresh, contiguous CPU f32 tensor of exactly plane × len elements,
    // owned here and not shared until this function returns it; the slice does not outlive it.
    let buf =
        unsafe { std::slice::from_raw_parts_mut(images.data_ptr() as *mut f32, plane * idx.len()) };
    buf.par_chunks_mut(plane)
        .zip(idx.par_iter().enumerate())
        .try_for_each(|(out, (pos, &i))| -> Result<()> {
            let row = &rows[i];
            let img = decode(&row.jpeg, &format!("image {}", row.image_id))?;
            match mode {
                Mode::Train { epoch } => {
                    let mut rng = image_rng(p.seed, epoch, b, pos as u64);
                    train_transform_with(&img, p.crop, p.normalize, p.augment, &mut rng, out)?;
                }
                Mode::Eval => eval_transform(&img, p.resize, p.crop, p.normalize, out)?,
            }
            Ok(())
        })?;
    Ok(Batch {
        images,
        labels: idx.iter().map(|&i| rows[i].class_id).collect(),
        image_ids: idx.iter().map(|&i| rows[i].image_id).collect(),
    })
}

/// Consecutive batches of `batch_size` over all rows (the last one may be smaller), for eval.
pub fn sequential(n: usize, batch_size: usize) -> Vec<Vec<usize>> {
    (0..n)
        .collect::<Vec<_>>()
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}
