//! Dataset layouts: how the extracted files of a dataset become a [`DatasetIndex`].
//!
//! One parser per published layout (CUB-200-2011, CARS196 as the official `.mat` or the common
//! class-folder mirror, Stanford Online Products), one per mirror packaging (`class_folders`
//! with the classification split, `parquet_images` with the images inside Parquet files) plus
//! `image_folder` for a user's own images. Every layout gives class ids in the dataset's
//! OFFICIAL numbering (1-based; see [`classes`] for how mirror labels are mapped).
//! Class-disjoint splits follow the paper: the first half of the classes trains, the second half
//! tests (SOP ships that split in its two files).

mod cars;
mod class_folders;
pub mod classes;
mod cub;
mod file_patterns;
mod image_folder;
mod parquet_images;
mod sop;

use crate::data::index::DatasetIndex;
use std::path::{Path, PathBuf};

pub use classes::ClassIds;
pub use image_folder::SplitRule;
pub use parquet_images::image_extension;

/// The layout of a dataset's extracted root, as a registry entry declares it
/// (`[datasets.<name>.layout]`, tagged by `kind`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Layout {
    /// `images.txt`, `image_class_labels.txt`, optional `bounding_boxes.txt`; images under
    /// `images/`. Classes 1..c/2 train.
    Cub,
    /// The official CARS196 annotations (`cars_annos.mat`, MATLAB v5: `annotations` with
    /// `relative_im_path`, `bbox_*`, `class`, `test`). Classes 1–98 train whatever `test` says.
    CarsMat {
        #[serde(default = "default_cars_mat")]
        annotations: String,
    },
    /// The class-folder mirror: `anno_train.csv` / `anno_test.csv` rows
    /// `file,x1,y1,x2,y2,class` and images somewhere under `train_dir` / `test_dir`.
    CarsCsv {
        #[serde(default = "default_anno_train")]
        train_csv: String,
        #[serde(default = "default_anno_test")]
        test_csv: String,
        #[serde(default = "default_train_dir")]
        train_dir: String,
        #[serde(default = "default_test_dir")]
        test_dir: String,
    },
    /// `Ebay_train.txt` / `Ebay_test.txt` (`image_id class_id super_class_id path`, one header).
    Sop,
    /// One folder per class under the root, or a CSV `path,class[,split]` with a header.
    ImageFolder {
        #[serde(default)]
        csv: Option<String>,
        #[serde(default)]
        split: SplitRule,
    },
    /// A mirror's class folders with the classification split: `<train_dir>/<class>/<image>`
    /// and `<test_dir>/<class>/<image>`, folder names mapped to official ids by `class_ids`
    /// (a class list with the alias rule, or a `NNN.` prefix). Both halves are merged and the
    /// classes split in halves by official id.
    ClassFolders {
        #[serde(default = "default_train_dir")]
        train_dir: String,
        #[serde(default = "default_test_dir")]
        test_dir: String,
        class_ids: ClassIds,
    },
    /// A mirror's Parquet files with the images inside (Hugging Face `datasets`: an `image`
    /// struct `{bytes, path}` and an integer `label`): `files` are paths relative to the root
    /// whose file name may hold `*`. Images are unpacked to `unpacked/…` under the root; labels
    /// mapped to official ids by `class_ids` (`{ from = "index", base = 0 }` for a
    /// `ClassLabel` in the official order); classes split in halves by official id.
    ParquetImages {
        files: Vec<String>,
        #[serde(default = "default_image_column")]
        image_column: String,
        #[serde(default = "default_label_column")]
        label_column: String,
        class_ids: ClassIds,
    },
}

fn default_image_column() -> String {
    "image".into()
}
fn default_label_column() -> String {
    "label".into()
}

fn default_cars_mat() -> String {
    "cars_annos.mat".into()
}
fn default_anno_train() -> String {
    "anno_train.csv".into()
}
fn default_anno_test() -> String {
    "anno_test.csv".into()
}
fn default_train_dir() -> String {
    "train".into()
}
fn default_test_dir() -> String {
    "test".into()
}

/// A layout file that is missing or malformed; always names the file (and line).
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Layout {
    /// Parses the dataset extracted at `root`. Every image path the layout's index files name
    /// must stay inside `root` ([`check_inside`]): the archive extractor's rule for entry names
    /// holds for the paths a parser produces too, whatever the layout.
    pub fn parse(&self, root: &Path) -> Result<DatasetIndex, LayoutError> {
        self.parse_in(root, None)
    }

    /// [`Layout::parse`] with the project root that a layout's own files (a class list) are
    /// relative to; without one they are relative to the working directory.
    pub fn parse_in(
        &self,
        root: &Path,
        project_root: Option<&Path>,
    ) -> Result<DatasetIndex, LayoutError> {
        let index = self.parse_unchecked(root, project_root)?;
        for e in &index.images {
            check_inside(root, &e.rel_path)?;
        }
        Ok(index)
    }

    fn parse_unchecked(
        &self,
        root: &Path,
        project_root: Option<&Path>,
    ) -> Result<DatasetIndex, LayoutError> {
        match self {
            Layout::Cub => cub::parse(root),
            Layout::CarsMat { annotations } => cars::parse_mat(root, annotations),
            Layout::CarsCsv {
                train_csv,
                test_csv,
                train_dir,
                test_dir,
            } => cars::parse_csv(root, [train_csv, test_csv], [train_dir, test_dir]),
            Layout::Sop => sop::parse(root),
            Layout::ImageFolder { csv, split } => image_folder::parse(root, csv.as_deref(), split),
            Layout::ClassFolders {
                train_dir,
                test_dir,
                class_ids,
            } => class_folders::parse(root, [train_dir, test_dir], class_ids, project_root),
            Layout::ParquetImages {
                files,
                image_column,
                label_column,
                class_ids,
            } => parquet_images::parse(
                root,
                files,
                &parquet_images::Columns {
                    image: image_column,
                    label: label_column,
                },
                class_ids,
                project_root,
            ),
        }
    }
}

/// Checks that `rel` (an image path from a layout's index files) names a file inside `root`: a
/// relative path of plain components (no `..`, no root, no drive), and — where it exists — one
/// whose real location, symlinks resolved, is still under `root`'s. A path that leaves the
/// dataset is an error naming it, never read into the crop cache.
pub fn check_inside(root: &Path, rel: &str) -> Result<(), LayoutError> {
    use std::path::Component;
    let invalid = |message: String| LayoutError::Invalid {
        path: root.join(rel),
        message,
    };
    let p = Path::new(rel);
    if rel.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(invalid(format!(
            "image path {rel:?} is not a plain relative path inside the dataset root {}",
            root.display()
        )));
    }
    let full = root.join(p);
    if let (Ok(real), Ok(real_root)) = (full.canonicalize(), root.canonicalize()) {
        if !real.starts_with(&real_root) {
            return Err(invalid(format!(
                "image path {rel:?} resolves to {}, outside the dataset root {} (a symlink leaves it)",
                real.display(),
                real_root.display()
            )));
        }
    }
    Ok(())
}

/// Reads a text file, naming it on error.
fn read_text(path: &Path) -> Result<String, LayoutError> {
    std::fs::read_to_string(path).map_err(|source| LayoutError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Non-empty lines of a whitespace-separated table with their 1-based line numbers, each split
/// into at most `n` fields (the last keeps any spaces, e.g. a path).
fn table_rows(text: &str, n: usize) -> impl Iterator<Item = (usize, Vec<&str>)> {
    text.lines().enumerate().filter_map(move |(i, l)| {
        let mut rest = l.trim();
        if rest.is_empty() {
            return None;
        }
        let mut row = Vec::with_capacity(n);
        while row.len() + 1 < n {
            match rest.split_once(char::is_whitespace) {
                Some((head, tail)) => {
                    row.push(head);
                    rest = tail.trim_start();
                }
                None => break,
            }
        }
        row.push(rest);
        Some((i + 1, row))
    })
}

/// Parses field `idx` of a row as `T`, with the file and line in the error.
fn field<T: std::str::FromStr>(
    path: &Path,
    line: usize,
    row: &[&str],
    idx: usize,
    what: &str,
) -> Result<T, LayoutError> {
    let raw = row.get(idx).ok_or_else(|| LayoutError::Parse {
        path: path.to_path_buf(),
        line,
        message: format!("missing {what} (column {})", idx + 1),
    })?;
    raw.parse().map_err(|_| LayoutError::Parse {
        path: path.to_path_buf(),
        line,
        message: format!("{what} `{raw}` is not valid"),
    })
}

/// The index of `(official class id, rel_path)` rows in their order, ids 1..n, split by class
/// halves (the paper's rule): what a mirror whose split is the classification one becomes.
fn halves_index(rows: Vec<(i64, String)>) -> DatasetIndex {
    let split = crate::data::index::class_halves(rows.iter().map(|r| r.0).collect::<Vec<_>>());
    DatasetIndex {
        images: rows
            .into_iter()
            .enumerate()
            .map(|(i, (class_id, rel_path))| crate::data::index::ImageEntry {
                image_id: i as i64 + 1,
                rel_path,
                class_id,
                split: split(class_id),
                bbox: None,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CUB-layout root whose `images.txt` names `path` for its one image of class 1 (and a
    /// second of class 2, so the split has both halves).
    fn cub_root(path: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path().join("root");
        std::fs::create_dir_all(r.join("images/1")).unwrap();
        std::fs::write(r.join("images/1/a.png"), b"x").unwrap();
        std::fs::write(r.join("images.txt"), format!("1 {path}\n2 1/a.png\n")).unwrap();
        std::fs::write(r.join("image_class_labels.txt"), "1 1\n2 2\n").unwrap();
        dir
    }

    fn cub_error(path: &str) -> String {
        let dir = cub_root(path);
        match Layout::Cub.parse(&dir.path().join("root")) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{path:?} was accepted"),
        }
    }

    #[test]
    fn index_paths_that_leave_the_root_are_refused_by_name() {
        // CUB paths are under `images/`: `..` must not climb out of it.
        for bad in ["../../secret.png", "1/../../../x.png"] {
            let e = cub_error(bad);
            assert!(
                e.contains(bad) && e.contains("not a plain relative path"),
                "{e}"
            );
        }
        let ok = cub_root("1/a.png");
        assert!(Layout::Cub.parse(&ok.path().join("root")).is_ok());
        // An image-folder CSV names paths as they are: absolute and `..` ones are refused.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("b")).unwrap();
        std::fs::write(dir.path().join("b/y.png"), b"y").unwrap();
        let layout = Layout::ImageFolder {
            csv: Some("index.csv".into()),
            split: image_folder::SplitRule::ClassHalves,
        };
        for bad in ["/etc/hostname", "../outside.png"] {
            std::fs::write(
                dir.path().join("index.csv"),
                format!("path,class\n{bad},a\nb/y.png,b\n"),
            )
            .unwrap();
            let e = layout.parse(dir.path()).unwrap_err().to_string();
            assert!(
                e.contains(bad) && e.contains("not a plain relative path"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_symlink_out_of_the_root_is_refused() {
        let dir = cub_root("1/link.png");
        std::fs::write(dir.path().join("secret.png"), b"s").unwrap();
        std::os::unix::fs::symlink(
            dir.path().join("secret.png"),
            dir.path().join("root/images/1/link.png"),
        )
        .unwrap();
        let e = Layout::Cub
            .parse(&dir.path().join("root"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside the dataset root"), "{e}");
        // An image folder with a class directory linked from outside.
        let out = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(out.path().join("elsewhere")).unwrap();
        std::fs::write(out.path().join("elsewhere/x.png"), b"x").unwrap();
        let root = dir.path().join("folder");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("a/y.png"), b"y").unwrap();
        std::os::unix::fs::symlink(out.path().join("elsewhere"), root.join("b")).unwrap();
        let layout = Layout::ImageFolder {
            csv: None,
            split: image_folder::SplitRule::ClassHalves,
        };
        if let Err(e) = layout.parse(&root) {
            assert!(e.to_string().contains("outside the dataset root"), "{e}");
        } else {
            panic!("a class directory linked from outside was indexed");
        }
    }
}
