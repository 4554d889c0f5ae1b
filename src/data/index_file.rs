//! A dataset index as a Parquet file (`images.parquet` beside the extracted data, with each
//! image's sha256; bounding boxes, where the source has them, in `bboxes.parquet`): the fetch
//! stage's output, which the catalogue ingests and any later stage (on a machine without the
//! catalogue) can read.

use crate::data::index::{BBox, DatasetIndex, ImageEntry, Split};
use anyhow::{bail, Context, Result};
use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use std::path::Path;
use std::sync::Arc;

fn schema() -> Arc<Schema> {
    let f = |n: &str, t: DataType| Field::new(n, t, false);
    Arc::new(Schema::new(vec![
        f("image_id", DataType::Int64),
        f("rel_path", DataType::Utf8),
        f("class_id", DataType::Int64),
        f("split", DataType::Utf8),
        f("sha256", DataType::Utf8),
    ]))
}

fn bbox_schema() -> Arc<Schema> {
    let f = |n: &str, t: DataType| Field::new(n, t, false);
    Arc::new(Schema::new(vec![
        f("image_id", DataType::Int64),
        f("x1", DataType::Float64),
        f("y1", DataType::Float64),
        f("x2", DataType::Float64),
        f("y2", DataType::Float64),
    ]))
}

/// The bounding boxes' file beside an index: `bboxes.parquet`. Boxes are annotations some
/// sources ship and others do not, so they stay out of `images.parquet`, which is the same
/// bytes for every source of a dataset ([`crate::data::content`]).
pub fn bboxes_path(index_path: &Path) -> std::path::PathBuf {
    index_path.with_file_name("bboxes.parquet")
}

/// Writes `index` (with each image's sha256, aligned) to `path` atomically, and its boxes, if
/// any image has one, to [`bboxes_path`] (a stale boxes file is removed otherwise).
pub fn write(path: &Path, index: &DatasetIndex, sha256: &[String]) -> Result<()> {
    anyhow::ensure!(
        sha256.len() == index.images.len(),
        "{} digests for {} images",
        sha256.len(),
        index.images.len()
    );
    let im = &index.images;
    let text = |v: Vec<&str>| -> ArrayRef { Arc::new(StringArray::from(v)) };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(im.iter().map(|i| i.image_id).collect::<Int64Array>()),
        text(im.iter().map(|i| i.rel_path.as_str()).collect()),
        Arc::new(im.iter().map(|i| i.class_id).collect::<Int64Array>()),
        text(im.iter().map(|i| i.split.as_str()).collect()),
        text(sha256.iter().map(String::as_str).collect()),
    ];
    write_batch(path, schema(), columns)?;
    let boxed: Vec<(i64, &BBox)> = im
        .iter()
        .filter_map(|i| i.bbox.as_ref().map(|b| (i.image_id, b)))
        .collect();
    let boxes = bboxes_path(path);
    if boxed.is_empty() {
        return match std::fs::remove_file(&boxes) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", boxes.display()))
            }
            _ => Ok(()),
        };
    }
    let coord = |g: fn(&BBox) -> f64| -> ArrayRef {
        Arc::new(boxed.iter().map(|(_, b)| g(b)).collect::<Float64Array>())
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(boxed.iter().map(|(id, _)| *id).collect::<Int64Array>()),
        coord(|b| b.x1),
        coord(|b| b.y1),
        coord(|b| b.x2),
        coord(|b| b.y2),
    ];
    write_batch(&boxes, bbox_schema(), columns)
}

/// Writes one batch as a Parquet file atomically (temp file + rename).
fn write_batch(path: &Path, schema: Arc<Schema>, columns: Vec<ArrayRef>) -> Result<()> {
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .with_context(|| format!("building the batch of {}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = crate::tempfiles::temp_file_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let mut w = ArrowWriter::try_new(tmp.as_file().try_clone()?, schema, None)?;
    w.write(&batch)
        .with_context(|| format!("writing {}", path.display()))?;
    w.close()
        .with_context(|| format!("writing {}", path.display()))?;
    crate::fsutil::persist(tmp, path)
}

/// Reads an index written by [`write`] with the boxes beside it, naming the file and column
/// on error.
pub fn read(path: &Path) -> Result<DatasetIndex> {
    Ok(read_with_digests(path)?.0)
}

/// Reads an index written by [`write`] and the images' sha256 (aligned).
pub fn read_with_digests(path: &Path) -> Result<(DatasetIndex, Vec<String>)> {
    let mut images = Vec::new();
    let mut digests = Vec::new();
    for b in batches(path)? {
        let b = b?;
        let int = |name| column::<Int64Array>(&b, name, path);
        let text = |name| column::<StringArray>(&b, name, path);
        let (ids, paths, classes, splits, shas) = (
            int("image_id")?,
            text("rel_path")?,
            int("class_id")?,
            text("split")?,
            text("sha256")?,
        );
        for r in 0..b.num_rows() {
            let split: Split = match splits.value(r).parse() {
                Ok(s) => s,
                Err(e) => bail!("{}: row {r}: {e}", path.display()),
            };
            images.push(ImageEntry {
                image_id: ids.value(r),
                rel_path: paths.value(r).to_string(),
                class_id: classes.value(r),
                split,
                bbox: None,
            });
            digests.push(shas.value(r).to_string());
        }
    }
    let boxes = bboxes_path(path);
    if boxes.is_file() {
        attach_boxes(&boxes, &mut images)?;
    }
    Ok((DatasetIndex { images }, digests))
}

/// Sets the boxes read from `path` on the images with their ids.
fn attach_boxes(path: &Path, images: &mut [ImageEntry]) -> Result<()> {
    let at: std::collections::HashMap<i64, usize> = images
        .iter()
        .enumerate()
        .map(|(i, im)| (im.image_id, i))
        .collect();
    for b in batches(path)? {
        let b = b?;
        let ids = column::<Int64Array>(&b, "image_id", path)?;
        let c: Vec<Float64Array> = ["x1", "y1", "x2", "y2"]
            .iter()
            .map(|n| column::<Float64Array>(&b, n, path))
            .collect::<Result<_>>()?;
        for r in 0..b.num_rows() {
            let Some(&i) = at.get(&ids.value(r)) else {
                bail!(
                    "{}: row {r}: no image {} in the index",
                    path.display(),
                    ids.value(r)
                );
            };
            images[i].bbox = Some(BBox {
                x1: c[0].value(r),
                y1: c[1].value(r),
                x2: c[2].value(r),
                y2: c[3].value(r),
            });
        }
    }
    Ok(())
}

/// The record batches of a Parquet file, each error naming the file.
pub(crate) fn batches(path: &Path) -> Result<impl Iterator<Item = Result<RecordBatch>> + '_> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{} is not a Parquet file", path.display()))?
        .build()?;
    Ok(reader.map(move |b| b.with_context(|| format!("reading {}", path.display()))))
}

/// Column `name` of `batch` as the array type `A`, naming the file and column on error.
pub(crate) fn column<A: Array + Clone + 'static>(
    batch: &RecordBatch,
    name: &str,
    path: &Path,
) -> Result<A> {
    batch
        .column_by_name(name)
        .with_context(|| format!("{}: no column `{name}`", path.display()))?
        .as_any()
        .downcast_ref::<A>()
        .cloned()
        .with_context(|| format!("{}: column `{name}` has the wrong type", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let index = DatasetIndex {
            images: vec![
                ImageEntry {
                    image_id: 1,
                    rel_path: "a/1.jpg".into(),
                    class_id: 3,
                    split: Split::Train,
                    bbox: Some(BBox {
                        x1: 1.0,
                        y1: 2.0,
                        x2: 3.5,
                        y2: 4.0,
                    }),
                },
                ImageEntry {
                    image_id: 2,
                    rel_path: "b/2.jpg".into(),
                    class_id: 4,
                    split: Split::Test,
                    bbox: None,
                },
            ],
        };
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("images.parquet");
        let shas = vec!["aa".to_string(), "bb".to_string()];
        write(&p, &index, &shas).unwrap();
        assert_eq!(
            read_with_digests(&p).unwrap(),
            (index.clone(), shas.clone())
        );
        assert!(bboxes_path(&p).is_file());
        // Without boxes, no boxes file (a stale one goes).
        let plain = DatasetIndex {
            images: index
                .images
                .iter()
                .map(|i| ImageEntry {
                    bbox: None,
                    ..i.clone()
                })
                .collect(),
        };
        write(&p, &plain, &shas).unwrap();
        assert!(!bboxes_path(&p).exists());
        assert_eq!(read(&p).unwrap(), plain);
        std::fs::write(&p, b"not parquet").unwrap();
        assert!(format!("{:#}", read(&p).unwrap_err()).contains("images.parquet"));
    }
}
