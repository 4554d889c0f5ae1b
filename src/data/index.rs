//! A parsed dataset: every image with its class and split, and the structural checks against
//! the published counts.

use std::collections::BTreeSet;
use std::fmt;

/// Which side of the class-disjoint split an image is on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
    /// Validation classes carved from the training classes (model selection).
    Val,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::Val => "val",
        }
    }
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "train" => Ok(Split::Train),
            "test" => Ok(Split::Test),
            "val" => Ok(Split::Val),
            other => Err(format!(
                "unknown split {other:?} (expected train, test or val)"
            )),
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A bounding box in pixels (x1, y1, x2, y2), where the dataset gives one (CUB, Cars).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BBox {
    pub x1: f64,
    pub y1: f64,
    pub x2: f64,
    pub y2: f64,
}

/// One image of a dataset.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageEntry {
    /// Stable id within the dataset (the dataset's own id where it has one).
    pub image_id: i64,
    /// Path relative to the dataset's extracted root.
    pub rel_path: String,
    /// Class id as the dataset numbers it (CUB 1–200, Cars 1–196, SOP 1–22,634).
    pub class_id: i64,
    pub split: Split,
    pub bbox: Option<BBox>,
}

/// The images of a dataset, in image-id order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DatasetIndex {
    pub images: Vec<ImageEntry>,
}

/// Counts a dataset is published with; every field that is set is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedCounts {
    pub images: Option<u64>,
    pub classes: Option<u64>,
    pub train_images: Option<u64>,
    pub test_images: Option<u64>,
    pub train_classes: Option<u64>,
    pub test_classes: Option<u64>,
}

/// Counts of a parsed dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Counts {
    pub images: u64,
    pub classes: u64,
    pub train_images: u64,
    pub test_images: u64,
    pub train_classes: u64,
    pub test_classes: u64,
}

/// The parsed dataset differs from what was published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("{dataset}: {}", .differences.join("; "))]
    CountMismatch {
        dataset: String,
        differences: Vec<String>,
    },
    #[error("{dataset}: class {class_id} has images in both train and test (splits must be class-disjoint)")]
    SplitOverlap { dataset: String, class_id: i64 },
    #[error("{dataset}: image id {image_id} appears twice")]
    DuplicateImage { dataset: String, image_id: i64 },
}

impl DatasetIndex {
    /// Counts of images and classes per split.
    pub fn counts(&self) -> Counts {
        let mut train = BTreeSet::new();
        let mut test = BTreeSet::new();
        let mut c = Counts::default();
        for im in &self.images {
            // Validation classes are carved from the training classes.
            match im.split {
                Split::Train | Split::Val => {
                    c.train_images += 1;
                    train.insert(im.class_id);
                }
                Split::Test => {
                    c.test_images += 1;
                    test.insert(im.class_id);
                }
            }
        }
        c.images = self.images.len() as u64;
        c.train_classes = train.len() as u64;
        c.test_classes = test.len() as u64;
        c.classes = train.union(&test).count() as u64;
        c
    }

    /// Structural verification: unique image ids, class-disjoint splits, and every published
    /// count equal to the parsed one. The error lists every difference, not just the first.
    pub fn verify(&self, dataset: &str, expect: &ExpectedCounts) -> Result<Counts, IndexError> {
        let mut ids = BTreeSet::new();
        for im in &self.images {
            if !ids.insert(im.image_id) {
                return Err(IndexError::DuplicateImage {
                    dataset: dataset.into(),
                    image_id: im.image_id,
                });
            }
        }
        let train: BTreeSet<i64> = self
            .images
            .iter()
            .filter(|i| i.split != Split::Test)
            .map(|i| i.class_id)
            .collect();
        if let Some(im) = self
            .images
            .iter()
            .find(|i| i.split == Split::Test && train.contains(&i.class_id))
        {
            return Err(IndexError::SplitOverlap {
                dataset: dataset.into(),
                class_id: im.class_id,
            });
        }
        let got = self.counts();
        let pairs = [
            ("images", expect.images, got.images),
            ("classes", expect.classes, got.classes),
            ("train images", expect.train_images, got.train_images),
            ("test images", expect.test_images, got.test_images),
            ("train classes", expect.train_classes, got.train_classes),
            ("test classes", expect.test_classes, got.test_classes),
        ];
        let differences: Vec<String> = pairs
            .iter()
            .filter_map(|(what, want, got)| match want {
                Some(w) if w != got => Some(format!("expected {w} {what}, found {got}")),
                _ => None,
            })
            .collect();
        if differences.is_empty() {
            Ok(got)
        } else {
            Err(IndexError::CountMismatch {
                dataset: dataset.into(),
                differences,
            })
        }
    }
}

/// Splits classes into the paper's halves: the first ⌊c/2⌋ classes in increasing id order are
/// train, the rest test (CUB 1–100 / 101–200, Cars 1–98 / 99–196).
pub fn class_halves(class_ids: impl IntoIterator<Item = i64>) -> impl Fn(i64) -> Split {
    let classes: BTreeSet<i64> = class_ids.into_iter().collect();
    let cut = classes.iter().nth(classes.len() / 2).copied();
    move |c| match cut {
        Some(cut) if c >= cut => Split::Test,
        _ => Split::Train,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn im(image_id: i64, class_id: i64, split: Split) -> ImageEntry {
        ImageEntry {
            image_id,
            rel_path: format!("{image_id}.jpg"),
            class_id,
            split,
            bbox: None,
        }
    }

    #[test]
    fn halves_split_by_class_order() {
        let s = class_halves([4, 1, 3, 2]);
        assert_eq!(
            [s(1), s(2), s(3), s(4)],
            [Split::Train, Split::Train, Split::Test, Split::Test]
        );
        let odd = class_halves([1, 2, 3]);
        assert_eq!(
            [odd(1), odd(2), odd(3)],
            [Split::Train, Split::Test, Split::Test]
        );
    }

    #[test]
    fn verify_names_every_difference() {
        let idx = DatasetIndex {
            images: vec![im(1, 1, Split::Train), im(2, 2, Split::Test)],
        };
        let expect = ExpectedCounts {
            images: Some(3),
            classes: Some(2),
            train_images: Some(2),
            ..Default::default()
        };
        let e = idx.verify("cub", &expect).unwrap_err().to_string();
        assert!(e.contains("expected 3 images, found 2"), "{e}");
        assert!(e.contains("expected 2 train images, found 1"), "{e}");
        assert!(!e.contains("classes"), "{e}");
    }

    #[test]
    fn verify_rejects_overlap_and_duplicates() {
        let overlap = DatasetIndex {
            images: vec![im(1, 1, Split::Train), im(2, 1, Split::Test)],
        };
        assert!(matches!(
            overlap.verify("x", &ExpectedCounts::default()),
            Err(IndexError::SplitOverlap { class_id: 1, .. })
        ));
        let dup = DatasetIndex {
            images: vec![im(1, 1, Split::Train), im(1, 2, Split::Test)],
        };
        assert!(matches!(
            dup.verify("x", &ExpectedCounts::default()),
            Err(IndexError::DuplicateImage { image_id: 1, .. })
        ));
    }
}
