//! `gl bench loader`: prepare throughput, and decode + augment + batch throughput of the
//! training loader from a Parquet crop cache at 227×227 with 1 and 2 threads, beside the PIL +
//! NumPy reference (`tests/reference/loader_ref.py`) reading the same cache file in the same run.
//!
//! The cache is synthetic but realistic: `images` photographs-like JPEGs of 500×375 (CUB's
//! typical size), prepared exactly as `gl prepare` does (shorter side 256, JPEG quality 90).

use crate::bench::{median, print_speedups, Comparison, Reference};
use crate::cli::BenchLoaderArgs;
use crate::data::crop_cache::{CacheWriter, CropRow};
use crate::data::index::Split;
use crate::data::loader::{stream, LoaderParams, Mode};
use crate::data::transform::Normalize;
use crate::stages::prepare::{prepare_image, PrepareParams};
use anyhow::{ensure, Context, Result};
use image::{ImageEncoder, Rgb, RgbImage};
use rayon::prelude::*;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

pub fn run(args: BenchLoaderArgs) -> Result<ExitCode> {
    let BenchLoaderArgs {
        images,
        batch,
        rounds,
        reference,
    } = args;
    ensure!(
        images >= batch && batch >= 1,
        "--images must be ≥ --batch ≥ 1"
    );
    let reference = Reference::resolve(reference)?;
    let sources = photo_sources(images)?;
    let params = PrepareParams::default();

    println!("bench loader: {images} images 500×375 → prepare (shorter side 256) → loader 227×227, batch {batch}, median of {rounds} rounds");
    let mut rows = Vec::new();
    for threads in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        let t = Instant::now();
        let prepared: Vec<(u32, u32, Vec<u8>)> = pool
            .install(|| {
                sources
                    .par_iter()
                    .map(|b| prepare_image(b, &params))
                    .collect::<Result<_, String>>()
            })
            .map_err(anyhow::Error::msg)?;
        println!(
            "prepare  {threads} thread(s): {:8.1} images/s",
            images as f64 / t.elapsed().as_secs_f64()
        );
        rows = crop_rows(prepared);
    }
    let dir = tempfile::tempdir()?;
    let cache = dir.path().join("crops.parquet");
    let rows = cache_rows(&rows, &cache)?;
    let batches: Vec<Vec<usize>> = crate::data::loader::sequential(images - images % batch, batch);

    let mut comparisons = Vec::new();
    for threads in [1usize, 2] {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let reply = reference
                .run_json(
                    "loader_ref.py",
                    &[
                        "bench".into(),
                        cache.display().to_string(),
                        format!("--threads={threads}"),
                        format!("--batch={batch}"),
                        format!("--images={}", batches.len() * batch),
                    ],
                )
                .context("timing the PIL + NumPy reference loader")?;
            theirs.push(
                1.0 / reply["images_per_s"]
                    .as_f64()
                    .context("reference JSON has no images_per_s")?,
            );
            let p = LoaderParams {
                crop: 227,
                resize: 256,
                normalize: Normalize::BnInception,
                augment: crate::data::transform::Augment::PAPER,
                threads,
                prefetch: 2,
                seed: 0,
            };
            ours.push(1.0 / loader_images_per_s(&rows, &batches, p)?);
        }
        let c = Comparison {
            name: format!("loader_{threads}t"),
            ours_s: median(&mut ours),
            reference_s: median(&mut theirs),
        };
        println!(
            "loader   {threads} thread(s): {:8.1} images/s   reference {:8.1} images/s",
            1.0 / c.ours_s,
            1.0 / c.reference_s
        );
        comparisons.push(c);
    }
    print_speedups(&comparisons);
    Ok(ExitCode::SUCCESS)
}

/// `n` synthetic photographs ([`photo_like`]), generated in parallel.
pub fn photo_sources(n: usize) -> Result<Vec<Vec<u8>>> {
    (0..n as u32).into_par_iter().map(photo_like).collect()
}

/// Prepared images (`prepare_image`'s width, height, JPEG) as training rows of 50 classes.
pub fn crop_rows(prepared: Vec<(u32, u32, Vec<u8>)>) -> Vec<CropRow> {
    prepared
        .into_iter()
        .enumerate()
        .map(|(i, (width, height, jpeg))| {
            CropRow::new(
                i as i64 + 1,
                i as i64 % 50,
                Split::Train,
                (width, height),
                jpeg,
            )
        })
        .collect()
}

/// Writes `rows` as a Parquet crop cache at `path` and reads it back as the trainer does.
pub fn cache_rows(rows: &[CropRow], path: &Path) -> Result<Arc<Vec<CropRow>>> {
    let mut w = CacheWriter::create(std::fs::File::create(path)?, path)?;
    w.write_group(rows)?;
    w.finish()?;
    Ok(Arc::new(crate::data::crop_cache::read(path, None)?))
}

/// Training-mode loader throughput (images/s) over `batches`, after one warm-up batch.
pub fn loader_images_per_s(
    rows: &Arc<Vec<CropRow>>,
    batches: &[Vec<usize>],
    p: LoaderParams,
) -> Result<f64> {
    ensure!(!batches.is_empty(), "the loader benchmark needs ≥ 1 batch");
    for b in stream(
        rows.clone(),
        batches[..1].to_vec(),
        Mode::Train { epoch: 0 },
        p,
    )? {
        b?; // warm-up
    }
    let images: usize = batches.iter().map(Vec::len).sum();
    let t = Instant::now();
    for b in stream(rows.clone(), batches.to_vec(), Mode::Train { epoch: 1 }, p)? {
        b?;
    }
    Ok(images as f64 / t.elapsed().as_secs_f64())
}

/// A 500×375 JPEG with smooth gradients, edges and noise (compresses like a photograph).
pub fn photo_like(seed: u32) -> Result<Vec<u8>> {
    let mut state = seed.wrapping_mul(0x9E37_79B9) | 1;
    let img = RgbImage::from_fn(500, 375, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = state % 24;
        let edge = if (x / 40 + y / 30 + seed).is_multiple_of(3) {
            60
        } else {
            0
        };
        Rgb([
            ((x * 255 / 500) + n + edge).min(255) as u8,
            ((y * 255 / 375) + n).min(255) as u8,
            ((x + y + seed * 7) % 256) as u8,
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92).write_image(
        img.as_raw(),
        500,
        375,
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(out)
}
