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
/// It records what later stages read and nothing that varies between two builds of the same
/// cache (no timings: a rebuild to the same crops leaves it byte-identical, so the pipeline's
/// output digest, and every run downstream, stays fresh). Manifests written before carry a
/// `seconds` field, ignored when read.
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
    /// Wall seconds of the build (0 when nothing was built): reported and catalogued, not
    /// stored in the manifest.
    pub seconds: f64,
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
    let previous = std::fs::read(&manifest_path).ok();
    if let Some(bytes) = &previous {
        let manifest: Manifest = serde_json::from_slice(bytes)
            .with_context(|| format!("parsing {}", manifest_path.display()))?;
        match manifest.damage(&dir)? {
            None if !s.force => {
                return Ok(Outcome {
                    dir,
                    manifest,
                    built: false,
                    seconds: 0.0,
                })
            }
            None => tracing::info!("{}: rebuilding the crop cache (--force)", s.dataset),
            Some(why) => tracing::warn!("{}: rebuilding the crop cache: {why}", s.dataset),
        }
        // An image that now leaves the dataset root fails the rebuild before the cache is
        // given up.
        check_images_inside(&root, &index.images)?;
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
            .collect::<Result<_>>()?;
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
    };
    let bytes = manifest_bytes(&manifest, previous.as_deref())?;
    crate::fsutil::write_atomic(&manifest_path, &bytes)?;
    Ok(Outcome {
        dir,
        manifest,
        built: true,
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// The bytes to store for `manifest`: those of the manifest it replaces (`previous`) when that
/// one records the same cache — timings aside, which manifests before this one carried as
/// `seconds` — so a cache rebuilt to the same crops keeps the output digest that runs
/// downstream were fingerprinted with; otherwise its own JSON.
fn manifest_bytes(manifest: &Manifest, previous: Option<&[u8]>) -> Result<Vec<u8>> {
    let new = serde_json::to_value(manifest)?;
    if let Some(prev) = previous {
        if let Ok(serde_json::Value::Object(mut old)) = serde_json::from_slice(prev) {
            old.remove("seconds");
            if serde_json::Value::Object(old) == new {
                return Ok(prev.to_vec());
            }
        }
    }
    Ok(serde_json::to_vec_pretty(manifest)?)
}

/// What an image path leaving the dataset root is told.
const CHANGED: &str =
    "the dataset changed since it was fetched: restore the image, or fetch it again";

/// Checks that every image path is inside `root`, symlinks resolved (the check the fetch made,
/// [`crate::data::layout::check_inside`]), naming the first that is not.
fn check_images_inside(root: &Path, images: &[ImageEntry]) -> Result<()> {
    for im in images {
        crate::data::layout::check_inside(root, &im.rel_path).context(CHANGED)?;
    }
    Ok(())
}

/// Decode, convert to RGB (grayscale, CMYK, alpha), resize so the shorter side is `resize`
/// (bilinear, antialiased when shrinking; small images are enlarged, as torchvision's
/// `Resize(256)` does), re-encode. An image that cannot be read or decoded is a [`Failure`];
/// an image path that leaves the dataset root (a file replaced by a symlink to elsewhere since
/// the fetch checked it) fails the whole stage, naming it: nothing outside the dataset is read
/// into the cache.
fn prepare_one(
    root: &Path,
    im: &ImageEntry,
    p: &PrepareParams,
) -> Result<Result<CropRow, Failure>> {
    crate::data::layout::check_inside(root, &im.rel_path).context(CHANGED)?;
    let fail = |e: String| Failure {
        image_id: im.image_id,
        rel_path: im.rel_path.clone(),
        error: e,
    };
    let row = std::fs::read(root.join(&im.rel_path))
        .map_err(|e| fail(format!("reading: {e}")))
        .and_then(|bytes| prepare_image(&bytes, p).map_err(fail))
        .map(|(width, height, jpeg)| {
            CropRow::new(im.image_id, im.class_id, im.split, (width, height), jpeg)
        });
    Ok(row)
}

/// One image's preprocessing: decode (any JPEG/PNG colour type → RGB), resize so the shorter
/// side is `p.resize`, re-encode as JPEG. Returns the new size and the bytes. A truncated JPEG
/// is an error ("image file is truncated", as PIL says), not an image whose missing part the
/// decoder fills with gray.
pub fn prepare_image(bytes: &[u8], p: &PrepareParams) -> Result<(u32, u32, Vec<u8>), String> {
    crate::data::jpeg::check_complete(bytes).map_err(|e| format!("decoding: {e}"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_jpeg_is_refused_where_the_decoder_would_fill_it_with_gray() {
        let img = image::RgbImage::from_fn(256, 192, |x, y| {
            image::Rgb([x as u8, (y * 3) as u8, ((x ^ y) * 5) as u8])
        });
        let mut whole = Vec::new();
        JpegEncoder::new_with_quality(&mut whole, 90)
            .encode_image(&img)
            .unwrap();
        let p = PrepareParams {
            resize: 32,
            ..Default::default()
        };
        assert_eq!(prepare_image(&whole, &p).unwrap().0, 43);
        let half = &whole[..whole.len() / 2];
        // The decoder alone accepts it: the missing half becomes gray.
        let gray = image::load_from_memory(half).unwrap().to_rgb8();
        assert_eq!(gray.get_pixel(128, 191).0, [128, 128, 128]);
        let e = prepare_image(half, &p).unwrap_err();
        assert!(e.contains("image file is truncated"), "{e}");
    }

    #[test]
    fn a_rebuilt_manifest_keeps_the_bytes_of_an_older_one_that_carried_seconds() {
        let m = Manifest {
            dataset: "d".into(),
            dataset_fingerprint: "f".into(),
            params: PrepareParams::default(),
            format_version: FORMAT_VERSION,
            key: "k".into(),
            images: 3,
            failures: Vec::new(),
            file: "crops.parquet".into(),
            file_sha256: Some("abc".into()),
        };
        let mut old = serde_json::to_value(&m).unwrap();
        old["seconds"] = 12.5.into();
        let old = serde_json::to_vec_pretty(&old).unwrap();
        assert_eq!(manifest_bytes(&m, Some(&old)).unwrap(), old);
        let other = Manifest {
            images: 4,
            ..m.clone()
        };
        let fresh = manifest_bytes(&other, Some(&old)).unwrap();
        assert_eq!(fresh, serde_json::to_vec_pretty(&other).unwrap());
        assert!(!String::from_utf8(fresh).unwrap().contains("seconds"));
        assert_eq!(
            manifest_bytes(&m, Some(b"{ not json")).unwrap(),
            serde_json::to_vec_pretty(&m).unwrap()
        );
    }
}
