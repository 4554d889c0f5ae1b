//! The prepare stage: decode every image of a fetched dataset once, resize it so the shorter
//! side is `resize`, re-encode it as JPEG and write the crop cache (see
//! [`crate::data::crop_cache`]). Parallel over images with rayon, one row group in flight at a
//! time (bounded memory), content-addressed output, idempotent. Undecodable images are recorded,
//! not fatal, unless their fraction exceeds `max_failed_fraction`.

use crate::data::crop_cache::{CacheWriter, CropRow, FORMAT_VERSION};
use crate::data::index::ImageEntry;
use crate::data::index_file;
use crate::project::Project;
use anyhow::{bail, ensure, Context, Result};
use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Validated preprocessing parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PrepareParams {
    /// Shorter side after resizing (paper: 256, then 227 crops).
    pub resize: u32,
    /// JPEG quality of the stored images.
    pub jpeg_quality: u8,
    /// Images per Parquet row group (the loader's streaming unit).
    pub row_group: usize,
    /// The stage fails when more than this fraction of images cannot be decoded.
    pub max_failed_fraction: f64,
}

impl Default for PrepareParams {
    fn default() -> Self {
        PrepareParams {
            resize: 256,
            jpeg_quality: 90,
            row_group: 512,
            max_failed_fraction: 0.001,
        }
    }
}

impl PrepareParams {
    pub fn validate(&self) -> Result<()> {
        ensure!(
            (32..=4096).contains(&self.resize),
            "resize must be in 32..=4096, got {}",
            self.resize
        );
        ensure!(
            (1..=100).contains(&self.jpeg_quality),
            "jpeg_quality must be in 1..=100, got {}",
            self.jpeg_quality
        );
        ensure!(self.row_group >= 1, "row_group must be ≥ 1");
        ensure!(
            (0.0..=1.0).contains(&self.max_failed_fraction),
            "max_failed_fraction must be in [0, 1]"
        );
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub project: Project,
    pub dataset: crate::names::Name,
    pub params: PrepareParams,
    pub progress: bool,
    /// Rebuild even when an intact cache exists.
    pub force: bool,
}

/// An image that could not be prepared.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    pub image_id: i64,
    pub rel_path: String,
    pub error: String,
}

/// The cache's manifest (`manifest.json`, written last: its presence marks a complete cache).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub dataset: String,
    pub dataset_fingerprint: String,
    pub params: PrepareParams,
    pub format_version: u32,
    pub key: String,
    pub images: u64,
    pub failures: Vec<Failure>,
    pub file: String,
    /// sha256 of `file`, checked before the cache is reused (absent in caches before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_sha256: Option<String>,
    pub seconds: f64,
}

impl Manifest {
    /// Why the cache in `dir` cannot be reused as it is, if it cannot: its file is gone or
    /// does not hash to what this manifest recorded.
    pub fn damage(&self, dir: &Path) -> Result<Option<String>> {
        let file = dir.join(&self.file);
        if !file.is_file() {
            return Ok(Some(format!("{} is missing", file.display())));
        }
        let Some(want) = &self.file_sha256 else {
            return Ok(Some(format!("{} records no checksum", self.file)));
        };
        let got = crate::fsutil::file_sha256(&file)?;
        Ok((got != *want).then(|| {
            format!(
                "{} does not match its recorded sha256 ({got} ≠ {want})",
                file.display()
            )
        }))
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// False when an identical cache already existed and nothing was done.
    pub built: bool,
}

/// `data/cache/<dataset>/<key>/`, key = sha256(dataset fingerprint, params, format version).
pub fn cache_key(dataset_fingerprint: &str, params: &PrepareParams) -> Result<String> {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&(
        dataset_fingerprint,
        params.resize,
        params.jpeg_quality,
        params.row_group,
        FORMAT_VERSION,
    ))?);
    Ok(hex::encode(h.finalize())[..16].to_string())
}

pub fn run(s: &Settings) -> Result<Outcome> {
    s.params.validate()?;
    let dataset_dir = s.project.dataset_dir(&s.dataset);
    let summary_path = dataset_dir.join("dataset.json");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary_path).with_context(|| {
            format!(
                "reading {} (run `gl fetch {}` first)",
                summary_path.display(),
                s.dataset
            )
        })?)
        .with_context(|| format!("parsing {}", summary_path.display()))?;
    let fingerprint = summary["fingerprint"]
        .as_str()
        .with_context(|| format!("{}: no `fingerprint`", summary_path.display()))?;
    let root = PathBuf::from(
        summary["root"]
            .as_str()
            .with_context(|| format!("{}: no `root`", summary_path.display()))?,
    );
    let index = index_file::read(&dataset_dir.join("images.parquet"))?;
    let key = cache_key(fingerprint, &s.params)?;
    let dir = s.project.cache_dir(&s.dataset).join(&key);
    let manifest_path = dir.join("manifest.json");
    if let Ok(bytes) = std::fs::read(&manifest_path) {
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("parsing {}", manifest_path.display()))?;
        match manifest.damage(&dir)? {
            None if !s.force => {
                return Ok(Outcome {
                    dir,
                    manifest,
                    built: false,
                })
            }
            None => tracing::info!("{}: rebuilding the crop cache (--force)", s.dataset),
            Some(why) => tracing::warn!("{}: rebuilding the crop cache: {why}", s.dataset),
        }
        // The manifest goes first, so a rebuild cut short leaves no manifest naming a file
        // that is not its own.
        match std::fs::remove_file(&manifest_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", manifest_path.display()))
            }
            _ => {}
        }
    }
    let clock = std::time::Instant::now();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file_name = "crops.parquet".to_string();
    let tmp = crate::tempfiles::temp_file_in(&dir)?;
    let mut writer = CacheWriter::create(tmp.as_file().try_clone()?, tmp.path())?;
    let bar = crate::progress::items(
        s.progress,
        index.images.len() as u64,
        &format!("prepare {}", s.dataset),
    );
    let mut failures = Vec::new();
    let mut written = 0u64;
    for chunk in index.images.chunks(s.params.row_group) {
        let results: Vec<Result<CropRow, Failure>> = chunk
            .par_iter()
            .map(|im| prepare_one(&root, im, &s.params))
            .collect();
        let mut rows = Vec::with_capacity(chunk.len());
        for r in results {
            match r {
                Ok(row) => rows.push(row),
                Err(f) => failures.push(f),
            }
        }
        if !rows.is_empty() {
            writer.write_group(&rows)?;
        }
        written += rows.len() as u64;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let total = index.images.len().max(1) as f64;
    if failures.len() as f64 / total > s.params.max_failed_fraction {
        let first: Vec<String> = failures
            .iter()
            .take(5)
            .map(|f| format!("{} ({})", f.rel_path, f.error))
            .collect();
        bail!(
            "{}: {} of {} images could not be prepared (more than max_failed_fraction {}); first: {}",
            s.dataset,
            failures.len(),
            index.images.len(),
            s.params.max_failed_fraction,
            first.join("; ")
        );
    }
    writer.finish()?;
    let file_sha256 = crate::fsutil::file_sha256(tmp.path())?;
    crate::fsutil::persist(tmp, &dir.join(&file_name))?;
    let manifest = Manifest {
        dataset: s.dataset.to_string(),
        dataset_fingerprint: fingerprint.to_string(),
        params: s.params.clone(),
        format_version: FORMAT_VERSION,
        key,
        images: written,
        failures,
        file: file_name,
        file_sha256: Some(file_sha256),
        seconds: clock.elapsed().as_secs_f64(),
    };
    crate::fsutil::write_atomic(&manifest_path, &serde_json::to_vec_pretty(&manifest)?)?;
    Ok(Outcome {
        dir,
        manifest,
        built: true,
    })
}

/// Decode, convert to RGB (grayscale, CMYK, alpha), resize so the shorter side is `resize`
/// (bilinear, antialiased when shrinking; small images are enlarged, as torchvision's
/// `Resize(256)` does), re-encode.
fn prepare_one(root: &Path, im: &ImageEntry, p: &PrepareParams) -> Result<CropRow, Failure> {
    let fail = |e: String| Failure {
        image_id: im.image_id,
        rel_path: im.rel_path.clone(),
        error: e,
    };
    let bytes =
        std::fs::read(root.join(&im.rel_path)).map_err(|e| fail(format!("reading: {e}")))?;
    let (width, height, jpeg) = prepare_image(&bytes, p).map_err(fail)?;
    Ok(CropRow::new(
        im.image_id,
        im.class_id,
        im.split,
        (width, height),
        jpeg,
    ))
}

/// One image's preprocessing: decode (any JPEG/PNG colour type → RGB), resize so the shorter
/// side is `p.resize`, re-encode as JPEG. Returns the new size and the bytes.
pub fn prepare_image(bytes: &[u8], p: &PrepareParams) -> Result<(u32, u32, Vec<u8>), String> {
    let img = image::load_from_memory(bytes)
        .map_err(|e| format!("decoding: {e}"))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    let scale = p.resize as f64 / w.min(h).max(1) as f64;
    let (nw, nh) = (
        ((w as f64 * scale).round() as u32).max(1),
        ((h as f64 * scale).round() as u32).max(1),
    );
    let resized = if (nw, nh) == (w, h) {
        img
    } else {
        image::imageops::resize(&img, nw, nh, FilterType::Triangle)
    };
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, p.jpeg_quality)
        .encode_image(&resized)
        .map_err(|e| format!("encoding: {e}"))?;
    Ok((nw, nh, jpeg))
}
