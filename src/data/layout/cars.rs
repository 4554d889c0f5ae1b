//! CARS196: the official `cars_annos.mat` and the common class-folder mirror with CSV files.
//! Either way the split is by class (1–98 train, 99–196 test), not by the `test` flag, as in the
//! metric-learning literature.

use super::{field, read_text, LayoutError};
use crate::data::index::{class_halves, BBox, DatasetIndex, ImageEntry};
use matrw::{MatVariable, MatlabType};
use std::collections::HashMap;
use std::path::Path;

pub fn parse_mat(root: &Path, annotations: &str) -> Result<DatasetIndex, LayoutError> {
    let path = root.join(annotations);
    let invalid = |message: String| LayoutError::Invalid {
        path: path.clone(),
        message,
    };
    let bytes = std::fs::read(&path).map_err(|source| LayoutError::Io {
        path: path.clone(),
        source,
    })?;
    // matrw can panic on malformed input instead of returning an error: contain it.
    let mat = std::panic::catch_unwind(|| matrw::load_matfile_from_u8(&normalise_header(bytes)))
        .map_err(|_| invalid("the MATLAB parser failed on this file".into()))?
        .map_err(|e| invalid(format!("not a readable MATLAB file: {e}")))?;
    let annos = mat
        .iter()
        .find(|(name, _)| name.as_str() == "annotations")
        .map(|(_, v)| v)
        .ok_or_else(|| invalid("no variable `annotations`".into()))?;
    let n: usize = annos.dim().iter().product();
    let mut rows = Vec::with_capacity(n);
    for i in 0..n {
        let rec = &annos[i];
        let get = |name: &str| match &rec[name] {
            MatVariable::Null => Err(invalid(format!(
                "annotation {} has no field `{name}`",
                i + 1
            ))),
            v => Ok(v),
        };
        let num = |name: &str| -> Result<f64, LayoutError> {
            scalar(get(name)?)
                .ok_or_else(|| invalid(format!("annotation {}: `{name}` is not a number", i + 1)))
        };
        let rel = text(get("relative_im_path")?).ok_or_else(|| {
            invalid(format!(
                "annotation {}: `relative_im_path` is not text",
                i + 1
            ))
        })?;
        let bbox = BBox {
            x1: num("bbox_x1")?,
            y1: num("bbox_y1")?,
            x2: num("bbox_x2")?,
            y2: num("bbox_y2")?,
        };
        rows.push((i as i64 + 1, rel, num("class")? as i64, bbox));
    }
    Ok(index(rows))
}

/// The first 116 bytes of a Level-5 MAT file are free descriptive text. MATLAB writes
/// `MATLAB 5.0 MAT-file, Platform: …`; other writers (scipy: `MATLAB 5.0 MAT-file Platform: …`)
/// differ, and matrw insists on MATLAB's exact prefix, so the text is canonicalised first.
fn normalise_header(mut bytes: Vec<u8>) -> Vec<u8> {
    const CANONICAL: &[u8] = b"MATLAB 5.0 MAT-file, ";
    if bytes.len() >= 128
        && bytes.starts_with(b"MATLAB 5.0 MAT-file")
        && !bytes.starts_with(CANONICAL)
    {
        bytes[..116].fill(b' ');
        bytes[..CANONICAL.len()].copy_from_slice(CANONICAL);
    }
    bytes
}

/// A numeric scalar of any stored MATLAB class (the official file mixes uint8, uint16, double).
/// Dispatches on the stored type: matrw's typed getters panic on a type mismatch.
fn scalar(v: &MatVariable) -> Option<f64> {
    use MatlabType::*;
    match v.numeric_type()? {
        U8(x) => x.first().map(|&a| f64::from(a)),
        I8(x) => x.first().map(|&a| f64::from(a)),
        U16(x) => x.first().map(|&a| f64::from(a)),
        I16(x) => x.first().map(|&a| f64::from(a)),
        U32(x) => x.first().map(|&a| f64::from(a)),
        I32(x) => x.first().map(|&a| f64::from(a)),
        U64(x) => x.first().map(|&a| a as f64),
        I64(x) => x.first().map(|&a| a as f64),
        F32(x) => x.first().map(|&a| f64::from(a)),
        F64(x) => x.first().copied(),
        UTF8(_) | UTF16(_) | BOOL(_) => None,
    }
}

/// A MATLAB char array as a string.
fn text(v: &MatVariable) -> Option<String> {
    match v.numeric_type()? {
        MatlabType::UTF8(c) | MatlabType::UTF16(c) => Some(c.iter().collect()),
        _ => None,
    }
}

pub fn parse_csv(
    root: &Path,
    csvs: [&String; 2],
    dirs: [&String; 2],
) -> Result<DatasetIndex, LayoutError> {
    let mut rows = Vec::new();
    for (csv, dir) in csvs.into_iter().zip(dirs) {
        let path = root.join(csv);
        let files = files_by_name(&root.join(dir), dir)?;
        for (i, l) in read_text(&path)?.lines().enumerate() {
            let row: Vec<&str> = l.split(',').map(str::trim).collect();
            if l.trim().is_empty()
                || (i == 0
                    && row[0].parse::<f64>().is_err()
                    && row.len() > 1
                    && row[1].parse::<f64>().is_err())
            {
                continue; // blank line or a header
            }
            let line = i + 1;
            let name: String = field(&path, line, &row, 0, "file name")?;
            let v = |idx, what| field::<f64>(&path, line, &row, idx, what);
            let bbox = BBox {
                x1: v(1, "x1")?,
                y1: v(2, "y1")?,
                x2: v(3, "x2")?,
                y2: v(4, "y2")?,
            };
            let class_id: i64 = field(&path, line, &row, 5, "class id")?;
            let rel = files
                .get(&name)
                .cloned()
                .ok_or_else(|| LayoutError::Parse {
                    path: path.clone(),
                    line,
                    message: format!(
                        "image `{name}` not found under {}",
                        root.join(dir).display()
                    ),
                })?;
            rows.push((rows.len() as i64 + 1, rel, class_id, bbox));
        }
    }
    Ok(index(rows))
}

/// Every file under `dir` (recursively) by file name → path relative to the dataset root.
fn files_by_name(dir: &Path, rel_dir: &str) -> Result<HashMap<String, String>, LayoutError> {
    let mut out = HashMap::new();
    let mut stack = vec![(dir.to_path_buf(), rel_dir.trim_end_matches('/').to_string())];
    while let Some((d, rel)) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| LayoutError::Io {
            path: d.clone(),
            source,
        })?;
        for e in entries {
            let e = e.map_err(|source| LayoutError::Io {
                path: d.clone(),
                source,
            })?;
            let name = e.file_name().to_string_lossy().into_owned();
            let child_rel = format!("{rel}/{name}");
            if e.path().is_dir() {
                stack.push((e.path(), child_rel));
            } else if let Some(prev) = out.insert(name.clone(), child_rel.clone()) {
                return Err(LayoutError::Invalid {
                    path: dir.to_path_buf(),
                    message: format!("file name `{name}` is ambiguous: {prev} and {child_rel}"),
                });
            }
        }
    }
    Ok(out)
}

fn index(rows: Vec<(i64, String, i64, BBox)>) -> DatasetIndex {
    let split = class_halves(rows.iter().map(|r| r.2).collect::<Vec<_>>());
    DatasetIndex {
        images: rows
            .into_iter()
            .map(|(image_id, rel_path, class_id, bbox)| ImageEntry {
                image_id,
                rel_path,
                class_id,
                split: split(class_id),
                bbox: Some(bbox),
            })
            .collect(),
    }
}
