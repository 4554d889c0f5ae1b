//! The preprocessed crop cache: every image of a dataset decoded once, resized so its shorter
//! side is `resize`, re-encoded as JPEG, and stored in Parquet row groups sized for streaming.
//!
//! Columns: `image_id`, `class_id`, `split`, `width`, `height` (of the stored image), `jpeg`
//! (the encoded bytes) and `sha256` (of those bytes). The directory is content-addressed by the
//! dataset's fingerprint, the preprocessing parameters and the cache format version, so changed
//! parameters give a new cache and unchanged ones reuse the old.

use crate::data::index::Split;
use crate::data::index_file::{batches, column};
use anyhow::{bail, Context, Result};
use arrow_array::{ArrayRef, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// Bumped whenever the bytes a cache holds for the same inputs would change.
pub const FORMAT_VERSION: u32 = 1;

/// One prepared image.
#[derive(Debug, Clone, PartialEq)]
pub struct CropRow {
    pub image_id: i64,
    pub class_id: i64,
    pub split: Split,
    pub width: u32,
    pub height: u32,
    pub jpeg: Vec<u8>,
    pub sha256: String,
}

impl CropRow {
    /// The row of `jpeg` with its `sha256` computed, the digest every read checks.
    pub fn new(
        image_id: i64,
        class_id: i64,
        split: Split,
        size: (u32, u32),
        jpeg: Vec<u8>,
    ) -> Self {
        CropRow {
            image_id,
            class_id,
            split,
            width: size.0,
            height: size.1,
            sha256: hex::encode(Sha256::digest(&jpeg)),
            jpeg,
        }
    }
}

pub fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("image_id", DataType::Int64, false),
        Field::new("class_id", DataType::Int64, false),
        Field::new("split", DataType::Utf8, false),
        Field::new("width", DataType::Int32, false),
        Field::new("height", DataType::Int32, false),
        Field::new("jpeg", DataType::Binary, false),
        Field::new("sha256", DataType::Utf8, false),
    ]))
}

/// Writes row groups to one Parquet file; call [`CacheWriter::write_group`] once per group.
pub struct CacheWriter {
    inner: ArrowWriter<File>,
    /// The file, for messages (a full disk names it).
    path: std::path::PathBuf,
}

impl CacheWriter {
    /// A writer of `file`, which is at `path`.
    pub fn create(file: File, path: &Path) -> Result<Self> {
        // No compression: the JPEG bytes are already compressed. Fixed `created_by` keeps the
        // file bit-identical across runs of the same gl.
        let props = WriterProperties::builder()
            .set_created_by(format!("grouploss {}", env!("CARGO_PKG_VERSION")))
            .build();
        let inner = ArrowWriter::try_new(file, schema(), Some(props));
        Ok(CacheWriter {
            inner: inner.map_err(|e| writing(path, e))?,
            path: path.to_path_buf(),
        })
    }

    /// Writes `rows` as one row group.
    pub fn write_group(&mut self, rows: &[CropRow]) -> Result<()> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(rows.iter().map(|r| r.image_id).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| r.class_id).collect::<Int64Array>()),
            Arc::new(
                rows.iter()
                    .map(|r| Some(r.split.as_str()))
                    .collect::<StringArray>(),
            ),
            Arc::new(rows.iter().map(|r| r.width as i32).collect::<Int32Array>()),
            Arc::new(rows.iter().map(|r| r.height as i32).collect::<Int32Array>()),
            Arc::new(
                rows.iter()
                    .map(|r| Some(r.jpeg.as_slice()))
                    .collect::<BinaryArray>(),
            ),
            Arc::new(
                rows.iter()
                    .map(|r| Some(r.sha256.as_str()))
                    .collect::<StringArray>(),
            ),
        ];
        let batch = RecordBatch::try_new(schema(), cols)?;
        self.inner
            .write(&batch)
            .and_then(|_| self.inner.flush()) // one row group per call
            .map_err(|e| writing(&self.path, e))
    }

    pub fn finish(self) -> Result<()> {
        let path = self.path;
        self.inner.close().map_err(|e| writing(&path, e))?;
        Ok(())
    }
}

/// A Parquet write error as one message naming the file: Parquet's `External` error prints
/// its I/O cause and also returns it as its source, so a chain would say it twice.
fn writing(path: &Path, e: parquet::errors::ParquetError) -> anyhow::Error {
    anyhow::anyhow!("writing the crop cache {}: {e}", path.display())
}

/// Reads every row of a cache file (optionally only one split), naming the file on error.
///
/// Nothing is trusted: a file Parquet cannot read, or a row whose JPEG bytes do not hash to
/// the row's `sha256`, is an error that names the file (and the row) and says how to rebuild.
pub fn read(path: &Path, split: Option<Split>) -> Result<Vec<CropRow>> {
    read_unverified(path, split)
        .and_then(|rows| verify_rows(path, &rows).map(|_| rows))
        .with_context(|| {
            format!(
                "the crop cache {} is damaged: rebuild it with `gl prepare <dataset> --force`",
                path.display()
            )
        })
}

/// Every row's JPEG bytes hash to its recorded `sha256` (in parallel; ≈ 1 GB/s a core).
fn verify_rows(path: &Path, rows: &[CropRow]) -> Result<()> {
    let bad = rows
        .par_iter()
        .position_first(|r| hex::encode(Sha256::digest(&r.jpeg)) != r.sha256);
    if let Some(i) = bad {
        bail!(
            "{}: image {} (row {i}): its JPEG bytes do not match their sha256",
            path.display(),
            rows[i].image_id
        );
    }
    Ok(())
}

fn read_unverified(path: &Path, split: Option<Split>) -> Result<Vec<CropRow>> {
    let mut rows = Vec::new();
    for b in batches(path)? {
        let b = b?;
        let ids = column::<Int64Array>(&b, "image_id", path)?;
        let classes = column::<Int64Array>(&b, "class_id", path)?;
        let splits = column::<StringArray>(&b, "split", path)?;
        let widths = column::<Int32Array>(&b, "width", path)?;
        let heights = column::<Int32Array>(&b, "height", path)?;
        let jpegs = column::<BinaryArray>(&b, "jpeg", path)?;
        let hashes = column::<StringArray>(&b, "sha256", path)?;
        for r in 0..b.num_rows() {
            let s: Split = splits
                .value(r)
                .parse()
                .map_err(|e: String| anyhow::anyhow!("{}: row {r}: {e}", path.display()))?;
            if split.is_some_and(|want| want != s) {
                continue;
            }
            rows.push(CropRow {
                image_id: ids.value(r),
                class_id: classes.value(r),
                split: s,
                width: widths.value(r) as u32,
                height: heights.value(r) as u32,
                jpeg: jpegs.value(r).to_vec(),
                sha256: hashes.value(r).to_string(),
            });
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full disk (`/dev/full` answers every write with ENOSPC) is one message naming the
    /// file, not the cause twice and no path.
    #[test]
    fn a_full_disk_names_the_file_once() {
        let path = Path::new("/dev/full");
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        let row = CropRow {
            image_id: 1,
            class_id: 1,
            split: Split::Train,
            width: 1,
            height: 1,
            jpeg: vec![7; 1 << 16],
            sha256: String::new(),
        };
        let mut w = CacheWriter::create(file, path).unwrap();
        let e = format!("{:#}", w.write_group(&[row]).unwrap_err());
        assert!(e.contains("/dev/full"), "{e}");
        assert_eq!(e.matches("No space left on device").count(), 1, "{e}");
    }
}
