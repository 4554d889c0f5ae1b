//! Dataset layouts: how the extracted files of a dataset become a [`DatasetIndex`].
//!
//! One parser per published layout (CUB-200-2011, CARS196 as the official `.mat` or the common
//! class-folder mirror, Stanford Online Products) plus `image_folder` for a user's own images.
//! Class-disjoint splits follow the paper: the first half of the classes trains, the second half
//! tests (SOP ships that split in its two files).

mod cars;
mod cub;
mod image_folder;
mod sop;

use crate::data::index::DatasetIndex;
use std::path::{Path, PathBuf};

pub use image_folder::SplitRule;

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
    /// Parses the dataset extracted at `root`.
    pub fn parse(&self, root: &Path) -> Result<DatasetIndex, LayoutError> {
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
        }
    }
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
