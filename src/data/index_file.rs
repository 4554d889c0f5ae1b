//! A dataset index as a Parquet file (`images.parquet` beside the extracted data): the fetch
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
    let f = |n: &str, t: DataType, null: bool| Field::new(n, t, null);
    Arc::new(Schema::new(vec![
        f("image_id", DataType::Int64, false),
        f("rel_path", DataType::Utf8, false),
        f("class_id", DataType::Int64, false),
        f("split", DataType::Utf8, false),
        f("bbox_x1", DataType::Float64, true),
        f("bbox_y1", DataType::Float64, true),
        f("bbox_x2", DataType::Float64, true),
        f("bbox_y2", DataType::Float64, true),
    ]))
}

/// Writes `index` to `path` atomically (temp file + rename).
pub fn write(path: &Path, index: &DatasetIndex) -> Result<()> {
    let im = &index.images;
    let bbox = |g: fn(&BBox) -> f64| -> ArrayRef {
        Arc::new(
            im.iter()
                .map(|i| i.bbox.as_ref().map(g))
                .collect::<Float64Array>(),
        )
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(im.iter().map(|i| i.image_id).collect::<Int64Array>()),
        Arc::new(
            im.iter()
                .map(|i| Some(i.rel_path.as_str()))
                .collect::<StringArray>(),
        ),
        Arc::new(im.iter().map(|i| i.class_id).collect::<Int64Array>()),
        Arc::new(
            im.iter()
                .map(|i| Some(i.split.as_str()))
                .collect::<StringArray>(),
        ),
        bbox(|b| b.x1),
        bbox(|b| b.y1),
        bbox(|b| b.x2),
        bbox(|b| b.y2),
    ];
    let batch = RecordBatch::try_new(schema(), columns).context("building the index batch")?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = crate::tempfiles::temp_file_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let mut w = ArrowWriter::try_new(tmp.as_file().try_clone()?, schema(), None)?;
    w.write(&batch)
        .with_context(|| format!("writing {}", path.display()))?;
    w.close()
        .with_context(|| format!("writing {}", path.display()))?;
    crate::fsutil::persist(tmp, path)
}

/// Reads an index written by [`write`], naming the file and column on error.
pub fn read(path: &Path) -> Result<DatasetIndex> {
    let mut images = Vec::new();
    for b in batches(path)? {
        let b = b?;
        let int = |name| column::<Int64Array>(&b, name, path);
        let text = |name| column::<StringArray>(&b, name, path);
        let float = |name| column::<Float64Array>(&b, name, path);
        let (ids, paths, classes, splits) = (
            int("image_id")?,
            text("rel_path")?,
            int("class_id")?,
            text("split")?,
        );
        let bb = [
            float("bbox_x1")?,
            float("bbox_y1")?,
            float("bbox_x2")?,
            float("bbox_y2")?,
        ];
        for r in 0..b.num_rows() {
            let split: Split = match splits.value(r).parse() {
                Ok(s) => s,
                Err(e) => bail!("{}: row {r}: {e}", path.display()),
            };
            let bbox = (!bb[0].is_null(r)).then(|| BBox {
                x1: bb[0].value(r),
                y1: bb[1].value(r),
                x2: bb[2].value(r),
                y2: bb[3].value(r),
            });
            images.push(ImageEntry {
                image_id: ids.value(r),
                rel_path: paths.value(r).to_string(),
                class_id: classes.value(r),
                split,
                bbox,
            });
        }
    }
    Ok(DatasetIndex { images })
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
        write(&p, &index).unwrap();
        assert_eq!(read(&p).unwrap(), index);
        std::fs::write(&p, b"not parquet").unwrap();
        assert!(format!("{:#}", read(&p).unwrap_err()).contains("images.parquet"));
    }
}
