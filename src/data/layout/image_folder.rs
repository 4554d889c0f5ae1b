//! A user's own images: one folder per class under the root, or a CSV `path,class[,split]`.

use super::{read_text, LayoutError};
use crate::data::index::{class_halves, DatasetIndex, ImageEntry, Split};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::path::Path;

/// Image file extensions an `image_folder` picks up (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "bmp", "webp", "gif"];

/// How an `image_folder` dataset is split into class-disjoint train and test classes.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum SplitRule {
    /// The first half of the classes (sorted by name) train, the rest test — the paper's rule.
    #[default]
    ClassHalves,
    /// Classes shuffled with a seed; the first `train_fraction` of them train.
    SeededShuffle { seed: u64, train_fraction: f64 },
    /// The CSV's `split` column (`train`/`test`); classes must not straddle the split.
    Column,
}

pub fn parse(
    root: &Path,
    csv: Option<&str>,
    rule: &SplitRule,
) -> Result<DatasetIndex, LayoutError> {
    // (relative path, class name, split given by the CSV)
    let rows: Vec<(String, String, Option<Split>)> = match csv {
        Some(csv) => csv_rows(&root.join(csv))?,
        None => folder_rows(root)?,
    };
    if rows.is_empty() {
        return Err(LayoutError::Invalid {
            path: root.to_path_buf(),
            message: "no images found".into(),
        });
    }
    // Class ids 1..c in sorted class-name order.
    let mut class_ids: BTreeMap<&str, i64> = rows.iter().map(|r| (r.1.as_str(), 0)).collect();
    for (i, id) in class_ids.values_mut().enumerate() {
        *id = i as i64 + 1;
    }
    let split_of: Box<dyn Fn(i64, Option<Split>) -> Result<Split, String>> = match rule {
        SplitRule::ClassHalves => {
            let halves = class_halves(class_ids.values().copied());
            Box::new(move |c, _| Ok(halves(c)))
        }
        SplitRule::SeededShuffle {
            seed,
            train_fraction,
        } => {
            if !(0.0..=1.0).contains(train_fraction) {
                return Err(LayoutError::Invalid {
                    path: root.to_path_buf(),
                    message: format!("train_fraction must be in [0, 1], got {train_fraction}"),
                });
            }
            let mut ids: Vec<i64> = class_ids.values().copied().collect();
            ids.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(*seed));
            let n_train = (ids.len() as f64 * train_fraction).round() as usize;
            let train: std::collections::HashSet<i64> = ids[..n_train].iter().copied().collect();
            Box::new(move |c, _| {
                Ok(if train.contains(&c) {
                    Split::Train
                } else {
                    Split::Test
                })
            })
        }
        SplitRule::Column => Box::new(|_, s| {
            s.ok_or_else(|| "split rule `column` needs a `split` column".to_string())
        }),
    };
    let mut images = Vec::with_capacity(rows.len());
    for (i, (rel_path, class, given)) in rows.iter().enumerate() {
        let class_id = class_ids[class.as_str()];
        let split = split_of(class_id, *given).map_err(|message| LayoutError::Invalid {
            path: root.join(csv.unwrap_or("")),
            message,
        })?;
        images.push(ImageEntry {
            image_id: i as i64 + 1,
            rel_path: rel_path.clone(),
            class_id,
            split,
            bbox: None,
        });
    }
    Ok(DatasetIndex { images })
}

pub(super) fn is_image(name: &std::ffi::OsStr) -> bool {
    Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|ext| IMAGE_EXTENSIONS.iter().any(|e| e.eq_ignore_ascii_case(ext)))
}

/// A directory entry's name as UTF-8, or an error naming the entry (a mangled name would be
/// indexed under a path that does not exist).
pub(super) fn utf8_name(entry: &std::fs::DirEntry) -> Result<String, LayoutError> {
    entry
        .file_name()
        .into_string()
        .map_err(|_| LayoutError::Invalid {
            path: entry.path(),
            message: "the name is not valid UTF-8; rename it to index it".into(),
        })
}

/// The entries of `dir`, each error naming it.
pub(super) fn entries(dir: &Path) -> Result<Vec<std::fs::DirEntry>, LayoutError> {
    let io = |source| LayoutError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::read_dir(dir)
        .map_err(io)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io)
}

/// `root/<class>/<image>` in sorted order; files directly under the root are ignored, and so
/// is anything under a class that is not a file (a directory named `x.jpg`).
fn folder_rows(root: &Path) -> Result<Vec<(String, String, Option<Split>)>, LayoutError> {
    let mut classes = Vec::new();
    for e in entries(root)? {
        if e.path().is_dir() {
            classes.push(utf8_name(&e)?);
        }
    }
    classes.sort();
    let mut rows = Vec::new();
    for class in classes {
        let mut files = Vec::new();
        for e in entries(&root.join(&class))? {
            if !is_image(&e.file_name()) {
                continue;
            }
            if !e.path().is_file() {
                tracing::warn!("{}: not a file, not indexed", e.path().display());
                continue;
            }
            files.push(utf8_name(&e)?);
        }
        files.sort();
        rows.extend(
            files
                .into_iter()
                .map(|f| (format!("{class}/{f}"), class.clone(), None)),
        );
    }
    Ok(rows)
}

/// A CSV with a header naming `path` and `class` (and optionally `split`) columns.
fn csv_rows(path: &Path) -> Result<Vec<(String, String, Option<Split>)>, LayoutError> {
    let text = read_text(path)?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()
        .map(|(_, h)| {
            h.split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .collect()
        })
        .unwrap_or_default();
    let col = |name: &str| header.iter().position(|h| h == name);
    let (Some(p), Some(c)) = (col("path"), col("class")) else {
        return Err(LayoutError::Parse {
            path: path.into(),
            line: 1,
            message: "header must name `path` and `class` columns".into(),
        });
    };
    let s = col("split");
    lines
        .map(|(i, l)| {
            let row: Vec<&str> = l.split(',').map(str::trim).collect();
            let err = |message: String| LayoutError::Parse {
                path: path.into(),
                line: i + 1,
                message,
            };
            let get = |j: usize| {
                row.get(j)
                    .copied()
                    .ok_or_else(|| err(format!("missing column {}", j + 1)))
            };
            let split = match s.map(get).transpose()? {
                None => None,
                Some("train") => Some(Split::Train),
                Some("test") => Some(Split::Test),
                Some(other) => {
                    return Err(err(format!("split `{other}` is neither train nor test")))
                }
            };
            Ok((get(p)?.to_string(), get(c)?.to_string(), split))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn csv_with_split_column_and_errors_naming_the_line() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("labels.csv"),
            "path,class,split\na.jpg,owl,train\nb.jpg,owl,train\nc.jpg,emu,test\n",
        )
        .unwrap();
        let idx = parse(d.path(), Some("labels.csv"), &SplitRule::Column).unwrap();
        let got: Vec<(i64, Split)> = idx.images.iter().map(|i| (i.class_id, i.split)).collect();
        assert_eq!(
            got,
            [(2, Split::Train), (2, Split::Train), (1, Split::Test)]
        );
        std::fs::write(
            d.path().join("labels.csv"),
            "path,class,split\na.jpg,owl,dev\n",
        )
        .unwrap();
        let e = parse(d.path(), Some("labels.csv"), &SplitRule::Column)
            .unwrap_err()
            .to_string();
        assert!(e.contains("labels.csv:2") && e.contains("dev"), "{e}");
        std::fs::write(d.path().join("labels.csv"), "file,label\n").unwrap();
        let e = parse(d.path(), Some("labels.csv"), &SplitRule::Column)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`path` and `class`"), "{e}");
    }

    #[test]
    fn seeded_shuffle_is_reproducible_and_class_disjoint() {
        let d = tempfile::tempdir().unwrap();
        for c in 0..10 {
            touch(d.path(), &format!("c{c}/1.png"));
            touch(d.path(), &format!("c{c}/2.JPG"));
        }
        let rule = |seed| SplitRule::SeededShuffle {
            seed,
            train_fraction: 0.3,
        };
        let a = parse(d.path(), None, &rule(5)).unwrap();
        assert_eq!(a, parse(d.path(), None, &rule(5)).unwrap());
        assert_ne!(a, parse(d.path(), None, &rule(6)).unwrap());
        assert_eq!(a.counts().train_classes, 3);
        assert!(a.verify("x", &Default::default()).is_ok(), "class-disjoint");
        let bad = SplitRule::SeededShuffle {
            seed: 1,
            train_fraction: 1.5,
        };
        assert!(parse(d.path(), None, &bad)
            .unwrap_err()
            .to_string()
            .contains("train_fraction"));
    }
}
