//! Embeddings as Parquet: the output of `gl embed` and `gl ensemble`, and the input of
//! `gl evaluate --embeddings` for embeddings made anywhere.
//!
//! Columns: `image_id` (Int64), `class_id` (Int64), `vector` (FixedSizeList<Float32, D>, L2-
//! normalised, what the metrics use) and `raw` (the network's output before normalisation; an
//! ensemble has none). DuckDB reads `vector` as `FLOAT[]`, so
//! `SELECT class_id, vector FROM read_parquet('…/test.parquet')` works in `gl sql`.
//!
//! The reader is lenient where other tools differ: `vector` may be a fixed-size list, a list or
//! a large list of Float32 or Float64 (all rows the same length); `image_id` is optional.

use crate::data::index_file::batches;
use anyhow::{bail, ensure, Context, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type};
use arrow_array::{Array, ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use std::path::Path;
use std::sync::Arc;
use tch::{Kind, Tensor};

/// Embeddings of one image set, rows in the same order everywhere.
#[derive(Debug)]
pub struct EmbeddingSet {
    /// `None` when the file had no `image_id` column.
    pub image_ids: Option<Vec<i64>>,
    pub class_ids: Vec<i64>,
    /// N×D f32 on the CPU (L2-normalised when written by `gl`).
    pub vectors: Tensor,
    pub raw: Option<Tensor>,
}

impl EmbeddingSet {
    pub fn len(&self) -> usize {
        self.class_ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.class_ids.is_empty()
    }
    pub fn dim(&self) -> i64 {
        self.vectors.size()[1]
    }

    /// Checks that the vectors can be searched at all: at least one dimension, every value
    /// finite, no all-zero row (its cosine to anything is undefined, and an exact search would
    /// rank it arbitrarily). `what` names the source in the error, with the first bad row.
    pub fn check_searchable(&self, what: &str) -> Result<()> {
        ensure!(self.dim() >= 1, "{what}: the vectors have 0 dimensions");
        let v = self.vectors.to_kind(tch::Kind::Float);
        let bad_value = v.isfinite().logical_not().any_dim(1, false);
        if let Some(row) = first_true(&bad_value) {
            bail!("{what}: row {row} has a value that is NaN or infinite");
        }
        let zero = v.abs().amax(&[1i64][..], false).eq(0.0);
        if let Some(row) = first_true(&zero) {
            let n = zero.sum(tch::Kind::Int64).int64_value(&[]);
            bail!("{what}: row {row} is all zeros ({n} such rows); a zero vector has no direction to search by");
        }
        Ok(())
    }
}

/// Index of the first `true` of a 1-d boolean tensor.
fn first_true(mask: &Tensor) -> Option<i64> {
    let idx = mask.nonzero();
    (idx.size()[0] > 0).then(|| idx.int64_value(&[0, 0]))
}

fn vector_field(name: &str, dim: i32) -> Field {
    Field::new(
        name,
        DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), dim),
        false,
    )
}

fn fixed_list(t: &Tensor) -> Result<ArrayRef> {
    let (n, d) = (t.size()[0], t.size()[1]);
    let flat = Vec::<f32>::try_from(t.to_kind(Kind::Float).contiguous().view([-1]))?;
    let values = Arc::new(Float32Array::from(flat));
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    ensure!(values.len() as i64 == n * d, "embedding tensor of {n}×{d}");
    Ok(Arc::new(FixedSizeListArray::try_new(
        item, d as i32, values, None,
    )?))
}

/// Writes `set` to `path` atomically (temp file + rename), rows in one file.
pub fn write(path: &Path, set: &EmbeddingSet) -> Result<()> {
    let n = set.len();
    let dim = set.dim() as i32;
    ensure!(
        set.vectors.size()[0] as usize == n,
        "{} vectors for {n} labels",
        set.vectors.size()[0]
    );
    let mut fields = vec![
        Field::new("image_id", DataType::Int64, false),
        Field::new("class_id", DataType::Int64, false),
        vector_field("vector", dim),
    ];
    let ids = set
        .image_ids
        .clone()
        .unwrap_or_else(|| (0..n as i64).collect());
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids)),
        Arc::new(Int64Array::from(set.class_ids.clone())),
        fixed_list(&set.vectors)?,
    ];
    if let Some(raw) = &set.raw {
        fields.push(vector_field("raw", raw.size()[1] as i32));
        columns.push(fixed_list(raw)?);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = crate::tempfiles::temp_file_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let props = WriterProperties::builder()
        .set_created_by(format!("grouploss {}", env!("CARGO_PKG_VERSION")))
        .set_max_row_group_row_count(Some(8192))
        .build();
    let mut w = ArrowWriter::try_new(tmp.as_file().try_clone()?, schema, Some(props))?;
    w.write(&batch)
        .and_then(|_| w.close().map(|_| ()))
        .with_context(|| format!("writing {}", path.display()))?;
    crate::fsutil::persist(tmp, path)
}

/// Reads embeddings from any Parquet file with `class_id` and `vector` columns.
pub fn read(path: &Path) -> Result<EmbeddingSet> {
    let mut image_ids: Option<Vec<i64>> = None;
    let mut class_ids = Vec::new();
    let (mut values, mut raw_values) = (Vec::<f32>::new(), Vec::<f32>::new());
    let (mut dim, mut raw_dim): (Option<usize>, Option<usize>) = (None, None);
    let mut has_raw = None;
    for batch in batches(path)? {
        let batch = batch?;
        let n = batch.num_rows();
        let classes = int_column(&batch, "class_id", path)?
            .with_context(|| format!("{}: no column `class_id`", path.display()))?;
        let ids = int_column(&batch, "image_id", path)?;
        if class_ids.is_empty() && image_ids.is_none() {
            image_ids = ids.as_ref().map(|_| Vec::new());
        }
        match (&mut image_ids, ids) {
            (Some(all), Some(ids)) => all.extend(ids),
            (None, None) => {}
            _ => bail!("{}: `image_id` in some row groups only", path.display()),
        }
        class_ids.extend(classes);
        let vec_col = batch
            .column_by_name("vector")
            .with_context(|| format!("{}: no column `vector`", path.display()))?;
        append_vectors(vec_col, n, &mut dim, &mut values, path, "vector")?;
        let raw = batch.column_by_name("raw");
        ensure!(
            has_raw.is_none_or(|h| h == raw.is_some()),
            "{}: `raw` in some row groups only",
            path.display()
        );
        has_raw = Some(raw.is_some());
        if let Some(raw) = raw {
            append_vectors(raw, n, &mut raw_dim, &mut raw_values, path, "raw")?;
        }
    }
    let n = class_ids.len() as i64;
    ensure!(n > 0, "{}: no rows", path.display());
    let to_tensor =
        |v: &[f32], d: Option<usize>| Tensor::from_slice(v).view([n, d.unwrap_or(0) as i64]);
    Ok(EmbeddingSet {
        image_ids,
        vectors: to_tensor(&values, dim),
        raw: has_raw
            .unwrap_or(false)
            .then(|| to_tensor(&raw_values, raw_dim)),
        class_ids,
    })
}

/// An integer column as i64 (any integer width), `None` when absent; nulls are errors.
fn int_column(batch: &RecordBatch, name: &str, path: &Path) -> Result<Option<Vec<i64>>> {
    let Some(col) = batch.column_by_name(name) else {
        return Ok(None);
    };
    ensure!(
        col.null_count() == 0,
        "{}: column `{name}` has nulls",
        path.display()
    );
    use arrow_array::types::*;
    fn widen<T: arrow_array::ArrowPrimitiveType>(c: &ArrayRef) -> Vec<i64>
    where
        T::Native: Into<i64>,
    {
        c.as_primitive::<T>()
            .values()
            .iter()
            .map(|&v| v.into())
            .collect()
    }
    Ok(Some(match col.data_type() {
        DataType::Int64 => widen::<Int64Type>(col),
        DataType::Int32 => widen::<Int32Type>(col),
        DataType::Int16 => widen::<Int16Type>(col),
        DataType::Int8 => widen::<Int8Type>(col),
        DataType::UInt32 => widen::<UInt32Type>(col),
        DataType::UInt16 => widen::<UInt16Type>(col),
        DataType::UInt8 => widen::<UInt8Type>(col),
        DataType::UInt64 => col
            .as_primitive::<UInt64Type>()
            .values()
            .iter()
            .map(|&v| i64::try_from(v))
            .collect::<Result<_, _>>()
            .with_context(|| format!("{}: column `{name}` exceeds i64", path.display()))?,
        other => bail!(
            "{}: column `{name}` must be integers, is {other}",
            path.display()
        ),
    }))
}

/// Appends the rows of a list-of-float column, checking one length for all rows.
fn append_vectors(
    col: &ArrayRef,
    n: usize,
    dim: &mut Option<usize>,
    out: &mut Vec<f32>,
    path: &Path,
    name: &str,
) -> Result<()> {
    let bad = || {
        format!(
            "{}: column `{name}` must be a list of float or double, is {}",
            path.display(),
            col.data_type()
        )
    };
    ensure!(
        col.null_count() == 0,
        "{}: `{name}` has null rows",
        path.display()
    );
    for r in 0..n {
        let row: ArrayRef = match col.data_type() {
            DataType::FixedSizeList(..) => col.as_fixed_size_list().value(r),
            DataType::List(_) => col.as_list::<i32>().value(r),
            DataType::LargeList(_) => col.as_list::<i64>().value(r),
            _ => bail!(bad()),
        };
        ensure!(
            row.null_count() == 0,
            "{}: `{name}` row {r} has null elements",
            path.display()
        );
        let len = row.len();
        match *dim {
            None => *dim = Some(len),
            Some(d) => ensure!(
                d == len,
                "{}: `{name}` row {r} has {len} values, earlier rows {d}",
                path.display()
            ),
        }
        match row.data_type() {
            DataType::Float32 => out.extend(row.as_primitive::<Float32Type>().values()),
            DataType::Float64 => out.extend(
                row.as_primitive::<Float64Type>()
                    .values()
                    .iter()
                    .map(|&v| v as f32),
            ),
            _ => bail!(bad()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rows: &[&[f32]], dim: i64) -> EmbeddingSet {
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        EmbeddingSet {
            image_ids: None,
            class_ids: (0..rows.len() as i64).collect(),
            vectors: Tensor::from_slice(&flat).view([rows.len() as i64, dim]),
            raw: None,
        }
    }

    /// Written to a real file and read back, as `gl evaluate --embeddings` reads it.
    fn round_trip(s: &EmbeddingSet) -> Result<()> {
        let dir = tempfile::tempdir()?;
        let f = dir.path().join("e.parquet");
        write(&f, s)?;
        read(&f)?.check_searchable("e.parquet")
    }

    #[test]
    fn unsearchable_vectors_are_refused_naming_the_row() {
        assert!(round_trip(&set(&[&[1.0, 0.0], &[0.0, 1.0]], 2)).is_ok());
        let e = round_trip(&set(&[&[1.0, 0.0], &[0.0, 0.0], &[0.0, 0.0]], 2)).unwrap_err();
        assert!(
            e.to_string().contains("row 1 is all zeros (2 such rows)"),
            "{e}"
        );
        let e = set(&[&[], &[]], 0).check_searchable("x").unwrap_err();
        assert!(e.to_string().contains("0 dimensions"), "{e}");
        let e = round_trip(&set(&[&[1.0, f32::NAN]], 2)).unwrap_err();
        assert!(
            e.to_string().contains("row 0 has a value that is NaN"),
            "{e}"
        );
    }
}
