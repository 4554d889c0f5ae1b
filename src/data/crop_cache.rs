//! The preprocessed crop cache: every image of a dataset decoded once, resized so its shorter
//! side is `resize`, re-encoded as JPEG, and stored in Parquet row groups sized for streaming.
//!
//! Columns: `image_id`, `class_id`, `split`, `width`, `height` (of the stored image), `jpeg`
//! (the encoded bytes) and `sha256` (of those bytes). The directory is content-addressed by the
//! dataset's fingerprint, the preprocessing parameters and the cache format version, so changed
//! parameters give a new cache and unchanged ones reuse the old.

use crate::data::index::Split;
use crate::data::index_file::{batches, column};
use anyhow::Result;
use arrow_array::{ArrayRef, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
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
}

impl CacheWriter {
    pub fn create(file: File) -> Result<Self> {
        // No compression: the JPEG bytes are already compressed. Fixed `created_by` keeps the
        // file bit-identical across runs of the same gl.
        let props = WriterProperties::builder()
            .set_created_by(format!("grouploss {}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(CacheWriter {
            inner: ArrowWriter::try_new(file, schema(), Some(props))?,
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
        self.inner.write(&RecordBatch::try_new(schema(), cols)?)?;
        self.inner.flush()?; // one row group per call
        Ok(())
    }

    pub fn finish(self) -> Result<()> {
        self.inner.close()?;
        Ok(())
    }
}

/// Reads every row of a cache file (optionally only one split), naming the file on error.
pub fn read(path: &Path, split: Option<Split>) -> Result<Vec<CropRow>> {
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
