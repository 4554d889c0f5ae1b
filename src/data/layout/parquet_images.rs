//! Parquet files with the images inside, as Hugging Face hub mirrors ship CARS196 and CUB: an
//! image column that is a struct `{bytes: binary, path: string}` (what the `datasets` library
//! writes for an `Image` feature; a plain binary column works too) and a label column (an
//! integer `ClassLabel`, or a class name).
//!
//! Each image's bytes are written to `<root>/unpacked/<parquet file>/<row>.<ext>` (the
//! extension from the magic bytes; the parquet file's path with `/` as `__` and without
//! `.parquet`), and the index points at those files, so the rest of the pipeline reads images
//! as it always does. Labels become official class ids through [`ClassIds`]; the mirror's own
//! train/test split (the classification one) is ignored and the classes are split in halves by
//! official id (like [`class_halves`]). Unpacking is bounded by the archive extractor's limits
//! (bytes, files, and bytes per byte of Parquet), so a hostile file cannot fill the disk.

use super::classes::{ClassIds, Label, Resolver};
use super::LayoutError;
use crate::data::archive::Limits;
use crate::data::index::DatasetIndex;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use std::path::{Path, PathBuf};

/// Rows decoded at a time: bounds the memory one batch of images takes.
const BATCH_ROWS: usize = 64;

/// The columns to read, as a layout names them.
pub struct Columns<'a> {
    pub image: &'a str,
    pub label: &'a str,
}

pub fn parse(
    root: &Path,
    patterns: &[String],
    columns: &Columns<'_>,
    class_ids: &ClassIds,
    project_root: Option<&Path>,
) -> Result<DatasetIndex, LayoutError> {
    let resolver = class_ids.resolve(project_root)?;
    let files = super::file_patterns::match_files(root, patterns, "Parquet file")?;
    let limits = Limits::default();
    let mut budget = Budget {
        bytes_left: limits.max_bytes,
        files_left: limits.max_files,
    };
    let mut rows: Vec<(i64, String)> = Vec::new();
    for rel in &files {
        read_file(
            root,
            rel,
            columns,
            &resolver,
            &limits,
            &mut budget,
            &mut rows,
        )?;
    }
    if rows.is_empty() {
        return Err(LayoutError::Invalid {
            path: root.to_path_buf(),
            message: format!("no rows in {}", files.join(", ")),
        });
    }
    Ok(super::halves_index(rows))
}

/// What unpacking may still write, over all files.
struct Budget {
    bytes_left: u64,
    files_left: u64,
}

/// Reads one Parquet file: writes its images under `unpacked/` and appends (class id, rel path)
/// per row.
fn read_file(
    root: &Path,
    rel: &str,
    columns: &Columns<'_>,
    resolver: &Resolver,
    limits: &Limits,
    budget: &mut Budget,
    rows: &mut Vec<(i64, String)>,
) -> Result<(), LayoutError> {
    let path = root.join(rel);
    let invalid = |message: String| LayoutError::Invalid {
        path: path.clone(),
        message,
    };
    let file = std::fs::File::open(&path).map_err(|source| LayoutError::Io {
        path: path.clone(),
        source,
    })?;
    let file_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| invalid(format!("not a readable Parquet file: {e}")))?;
    let n_rows = u64::try_from(builder.metadata().file_metadata().num_rows()).unwrap_or(0);
    if n_rows > budget.files_left {
        return Err(invalid(format!(
            "{n_rows} rows would pass the limit of {} images in all",
            limits.max_files
        )));
    }
    budget.files_left -= n_rows;
    let schema = builder.schema().clone();
    let index_of = |name: &str| {
        schema.index_of(name).map_err(|_| {
            let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            invalid(format!("no column `{name}` (columns: {})", have.join(", ")))
        })
    };
    let (image_idx, label_idx) = (index_of(columns.image)?, index_of(columns.label)?);
    let mask = ProjectionMask::roots(builder.parquet_schema(), [image_idx, label_idx]);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|e| invalid(format!("reading: {e}")))?;

    let out_rel = format!(
        "unpacked/{}",
        rel.strip_suffix(".parquet")
            .unwrap_or(rel)
            .replace('/', "__")
    );
    let out_dir = root.join(&out_rel);
    std::fs::create_dir_all(&out_dir).map_err(|source| LayoutError::Io {
        path: out_dir.clone(),
        source,
    })?;
    let mut file_budget = limits.byte_budget(file_bytes);
    let mut row = 0usize;
    for batch in reader {
        let batch = batch.map_err(|e| invalid(format!("after row {row}: {e}")))?;
        let images = batch
            .column_by_name(columns.image)
            .ok_or_else(|| invalid(format!("no column `{}`", columns.image)))?;
        let labels = batch
            .column_by_name(columns.label)
            .ok_or_else(|| invalid(format!("no column `{}`", columns.label)))?;
        let bytes_of =
            image_bytes(images).map_err(|m| invalid(format!("column `{}`: {m}", columns.image)))?;
        for i in 0..batch.num_rows() {
            let at = |column: &str, message: String| {
                invalid(format!("row {row}, column `{column}`: {message}"))
            };
            let label = label_at(labels, i, resolver).map_err(|m| at(columns.label, m))?;
            let class_id = resolver
                .class_id(label.as_label())
                .map_err(|m| at(columns.label, m))?;
            let bytes = bytes_of(i).ok_or_else(|| at(columns.image, "no image bytes".into()))?;
            let ext = image_extension(bytes).ok_or_else(|| {
                at(
                    columns.image,
                    "the bytes are not a JPEG, PNG, GIF, BMP or WebP image".into(),
                )
            })?;
            let n = bytes.len() as u64;
            if n > file_budget || n > budget.bytes_left {
                return Err(at(
                    columns.image,
                    format!(
                        "unpacking passes the limit of {} bytes for this {file_bytes}-byte file (or {} in all)",
                        limits.byte_budget(file_bytes),
                        limits.max_bytes
                    ),
                ));
            }
            file_budget -= n;
            budget.bytes_left -= n;
            let name = format!("{row:06}.{ext}");
            write_if_changed(&out_dir.join(&name), bytes)?;
            rows.push((class_id, format!("{out_rel}/{name}")));
            row += 1;
        }
    }
    Ok(())
}

/// A label value, owned so that it outlives the batch borrow.
enum LabelValue {
    Int(i64),
    Name(String),
}

impl LabelValue {
    fn as_label(&self) -> Label<'_> {
        match self {
            LabelValue::Int(v) => Label::Int(*v),
            LabelValue::Name(s) => Label::Name(s),
        }
    }
}

/// Row `i` of a label column: any integer type or a string.
fn label_at(col: &ArrayRef, i: usize, resolver: &Resolver) -> Result<LabelValue, String> {
    if col.is_null(i) {
        return Err("the label is null".into());
    }
    macro_rules! int {
        ($t:ty) => {
            col.as_primitive_opt::<$t>()
                .map(|a| i64::try_from(a.value(i)).map_err(|_| "label out of range".to_string()))
        };
    }
    let v = match col.data_type() {
        DataType::Int8 => int!(Int8Type),
        DataType::Int16 => int!(Int16Type),
        DataType::Int32 => int!(Int32Type),
        DataType::Int64 => int!(Int64Type),
        DataType::UInt8 => int!(UInt8Type),
        DataType::UInt16 => int!(UInt16Type),
        DataType::UInt32 => int!(UInt32Type),
        DataType::UInt64 => int!(UInt64Type),
        DataType::Utf8 => {
            return Ok(LabelValue::Name(
                col.as_string::<i32>().value(i).to_string(),
            ))
        }
        DataType::LargeUtf8 => {
            return Ok(LabelValue::Name(
                col.as_string::<i64>().value(i).to_string(),
            ))
        }
        DataType::Utf8View => {
            return Ok(LabelValue::Name(col.as_string_view().value(i).to_string()))
        }
        other => {
            return Err(format!(
                "type {other} is neither an integer nor a string (class_ids from {})",
                if resolver.wants_names() {
                    "a name"
                } else {
                    "an index"
                }
            ))
        }
    };
    v.unwrap_or_else(|| Err("unreadable integer column".into()))
        .map(LabelValue::Int)
}

/// The bytes of row `i` of an image column: a struct with a `bytes` field (Hugging Face's
/// `Image` feature) or a binary column.
type BytesAt<'a> = Box<dyn Fn(usize) -> Option<&'a [u8]> + 'a>;

fn image_bytes<'a>(col: &'a ArrayRef) -> Result<BytesAt<'a>, String> {
    let (bin, outer): (&ArrayRef, Option<&ArrayRef>) = match col.data_type() {
        DataType::Struct(_) => {
            let s = col.as_struct();
            let b = s
                .column_by_name("bytes")
                .ok_or("a struct without a `bytes` field")?;
            (b, Some(col))
        }
        _ => (col, None),
    };
    let valid = move |i: usize| outer.is_none_or(|o| o.is_valid(i)) && bin.is_valid(i);
    match bin.data_type() {
        DataType::Binary => {
            let a = bin.as_binary::<i32>();
            Ok(Box::new(move |i| valid(i).then(|| a.value(i))))
        }
        DataType::LargeBinary => {
            let a = bin.as_binary::<i64>();
            Ok(Box::new(move |i| valid(i).then(|| a.value(i))))
        }
        DataType::BinaryView => {
            let a = bin.as_binary_view();
            Ok(Box::new(move |i| valid(i).then(|| a.value(i))))
        }
        other => Err(format!("image bytes of type {other}, not binary")),
    }
}

/// The file extension an image's magic bytes call for.
pub fn image_extension(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("jpg")
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("gif")
    } else if bytes.starts_with(b"BM") && bytes.len() > 14 {
        Some("bmp")
    } else if bytes.len() > 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WEBP" {
        Some("webp")
    } else {
        None
    }
}

/// Writes `bytes` to `path` unless it already holds exactly them (a rerun on an unchanged
/// dataset rewrites nothing).
fn write_if_changed(path: &PathBuf, bytes: &[u8]) -> Result<(), LayoutError> {
    if let Ok(m) = std::fs::metadata(path) {
        if m.is_file()
            && m.len() == bytes.len() as u64
            && std::fs::read(path).is_ok_and(|b| b == bytes)
        {
            return Ok(());
        }
    }
    std::fs::write(path, bytes).map_err(|source| LayoutError::Io {
        path: path.clone(),
        source,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::index::Split;
    use arrow_array::{BinaryArray, Int64Array, RecordBatch, StringArray, StructArray};
    use arrow_schema::{Field, Fields, Schema};
    use std::sync::Arc;

    /// A tiny PNG-looking payload: the magic, then `seed`.
    fn png(seed: u8) -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
        b.extend([seed; 8]);
        b
    }

    /// Writes a Parquet file in Hugging Face's layout: `image {bytes, path}`, `label` (int64).
    pub(crate) fn write_hf_parquet(path: &Path, rows: &[(Vec<u8>, i64)]) {
        let fields = Fields::from(vec![
            Field::new("bytes", DataType::Binary, true),
            Field::new("path", DataType::Utf8, true),
        ]);
        let bytes = BinaryArray::from_iter_values(rows.iter().map(|r| r.0.as_slice()));
        let paths = StringArray::from_iter_values((0..rows.len()).map(|i| format!("{i}.png")));
        let image = StructArray::new(
            fields.clone(),
            vec![Arc::new(bytes) as ArrayRef, Arc::new(paths)],
            None,
        );
        let label = Int64Array::from_iter_values(rows.iter().map(|r| r.1));
        let schema = Arc::new(Schema::new(vec![
            Field::new("image", DataType::Struct(fields), true),
            Field::new("label", DataType::Int64, true),
        ]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(image), Arc::new(label)]).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(path).unwrap(),
            schema,
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }

    fn columns() -> Columns<'static> {
        Columns {
            image: "image",
            label: "label",
        }
    }

    #[test]
    fn three_classes_two_images_each_unpack_with_official_ids() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        // Classification split: each class in both files; labels 0-based.
        write_hf_parquet(
            &r.join("data/train-00000-of-00001.parquet"),
            &[(png(1), 0), (png(2), 1), (png(3), 2)],
        );
        write_hf_parquet(
            &r.join("data/test-00000-of-00001.parquet"),
            &[(png(4), 0), (png(5), 1), (png(6), 2)],
        );
        let pats = [
            "data/train-*.parquet".to_string(),
            "data/test-*".to_string(),
        ];
        let idx = parse(r, &pats, &columns(), &ClassIds::Index { base: 0 }, None).unwrap();
        assert_eq!(idx.images.len(), 6);
        let first = &idx.images[0];
        assert_eq!(
            first.rel_path,
            "unpacked/data__train-00000-of-00001/000000.png"
        );
        assert_eq!(std::fs::read(r.join(&first.rel_path)).unwrap(), png(1));
        let got: Vec<(i64, Split, Vec<u8>)> = idx
            .images
            .iter()
            .map(|i| {
                (
                    i.class_id,
                    i.split,
                    std::fs::read(r.join(&i.rel_path)).unwrap(),
                )
            })
            .collect();
        let want = [(1, 1), (2, 2), (3, 3), (1, 4), (2, 5), (3, 6)];
        for ((c, split, bytes), (wc, seed)) in got.iter().zip(want) {
            assert_eq!((*c, bytes.clone()), (wc, png(seed)));
            // 3 classes: class 1 trains, 2 and 3 test (⌊3/2⌋ = 1 train class).
            assert_eq!(*split, if *c == 1 { Split::Train } else { Split::Test });
        }
        // A 1-based reading of 0-based labels is refused, naming file, row and column.
        let e = parse(r, &pats, &columns(), &ClassIds::Index { base: 1 }, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("train-00000-of-00001.parquet")
                && e.contains("row 0, column `label`")
                && e.contains("below the label base 1"),
            "{e}"
        );
        // Parsing again rewrites nothing and gives the same index.
        let again = parse(r, &pats, &columns(), &ClassIds::Index { base: 0 }, None).unwrap();
        assert_eq!(again, idx);
    }

    /// The error of parsing `pattern` under `r` with `cols` and 0-based labels, as text.
    fn parse_error(r: &Path, pattern: &str, cols: &Columns) -> String {
        parse(
            r,
            &[pattern.into()],
            cols,
            &ClassIds::Index { base: 0 },
            None,
        )
        .unwrap_err()
        .to_string()
    }

    #[test]
    fn bad_files_columns_and_images_are_named() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write_hf_parquet(
            &r.join("a.parquet"),
            &[(png(1), 0), (b"GIF00 nope".to_vec(), 1)],
        );
        let e = parse_error(r, "a.parquet", &columns());
        assert!(
            e.contains("a.parquet") && e.contains("row 1, column `image`"),
            "{e}"
        );
        let cols = Columns {
            image: "img",
            label: "label",
        };
        let e = parse_error(r, "a.parquet", &cols);
        assert!(e.contains("no column `img` (columns: image, label)"), "{e}");
        let e = parse_error(r, "b-*.parquet", &columns());
        assert!(
            e.contains("b-*.parquet") && e.contains("no Parquet file matches"),
            "{e}"
        );
        std::fs::write(r.join("c.parquet"), b"PAR1 truncated").unwrap();
        let e = parse_error(r, "c.parquet", &columns());
        assert!(
            e.contains("c.parquet") && e.contains("not a readable Parquet file"),
            "{e}"
        );
    }

    #[test]
    fn string_labels_go_through_the_class_list() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let schema = Arc::new(Schema::new(vec![
            Field::new("jpg", DataType::Binary, false),
            Field::new("name", DataType::Utf8, false),
        ]));
        let jpeg = |s: u8| vec![0xFF, 0xD8, 0xFF, 0xE0, s];
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(BinaryArray::from_iter_values([jpeg(1), jpeg(2)])),
                Arc::new(StringArray::from(vec!["ram c-v van", "Alpha"])),
            ],
        )
        .unwrap();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(r.join("x.parquet")).unwrap(),
            schema,
            None,
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        std::fs::write(r.join("classes.txt"), "Alpha\nRam C/V Van\n").unwrap();
        let ids = ClassIds::List {
            file: "classes.txt".into(),
        };
        let cols = Columns {
            image: "jpg",
            label: "name",
        };
        let idx = parse(r, &["x.parquet".into()], &cols, &ids, Some(r)).unwrap();
        let got: Vec<(i64, &str)> = idx
            .images
            .iter()
            .map(|i| (i.class_id, i.rel_path.as_str()))
            .collect();
        assert_eq!(
            got,
            [(2, "unpacked/x/000000.jpg"), (1, "unpacked/x/000001.jpg")]
        );
    }
}
