//! The class-disjoint splits a run uses: training classes minus a validation share (model
//! selection without looking at the test set), the validation classes, and the test classes,
//! with training labels remapped to 0..m for the classifier.

use crate::data::crop_cache::CropRow;
use crate::data::index::Split;
use anyhow::{ensure, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};

/// Indices into the cached rows for each split, and the training label map.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSplits {
    pub train: Vec<usize>,
    /// Classifier label (0..m) of each `train` index, same order.
    pub train_labels: Vec<i64>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
    /// Dataset class id of classifier label i.
    pub train_classes: Vec<i64>,
    pub val_classes: Vec<i64>,
    pub test_classes: Vec<i64>,
}

impl RunSplits {
    /// m: classes of the classifier.
    pub fn num_classes(&self) -> i64 {
        self.train_classes.len() as i64
    }

    /// Keeps at most `per_class` training images of each class (0 = all): the first of each
    /// class in a shuffle seeded by `seed`, so every run seed trains on the same images.
    /// Validation and test are untouched. An ablation of images per class.
    pub fn limit_train_per_class(&mut self, per_class: usize, seed: u64) {
        if per_class == 0 {
            return;
        }
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let mut taken: BTreeMap<i64, usize> = BTreeMap::new();
        let mut keep = vec![false; self.train.len()];
        for i in order {
            let n = taken.entry(self.train_labels[i]).or_default();
            if *n < per_class {
                *n += 1;
                keep[i] = true;
            }
        }
        let (mut train, mut labels) = (Vec::new(), Vec::new());
        for (i, k) in keep.into_iter().enumerate() {
            if k {
                train.push(self.train[i]);
                labels.push(self.train_labels[i]);
            }
        }
        self.train = train;
        self.train_labels = labels;
    }
}

/// Splits `rows`: the dataset's test split is the test set; of its training classes (sorted by
/// id, the first `class_limit` if > 0), ⌈`val_fraction` · n⌉ chosen with `val_seed` become the
/// validation classes. The choice depends only on the class ids and `val_seed`.
pub fn split(
    rows: &[CropRow],
    val_fraction: f64,
    val_seed: u64,
    class_limit: usize,
) -> Result<RunSplits> {
    let mut by_split: BTreeMap<&'static str, BTreeSet<i64>> = BTreeMap::new();
    for r in rows {
        by_split
            .entry(r.split.as_str())
            .or_default()
            .insert(r.class_id);
    }
    let limit = |set: Option<&BTreeSet<i64>>| -> Vec<i64> {
        let all: Vec<i64> = set.map(|s| s.iter().copied().collect()).unwrap_or_default();
        match class_limit {
            0 => all,
            n => all.into_iter().take(n).collect(),
        }
    };
    let mut train_pool = limit(by_split.get(Split::Train.as_str()));
    let test_classes = limit(by_split.get(Split::Test.as_str()));
    ensure!(
        !train_pool.is_empty(),
        "the crop cache has no training images"
    );
    ensure!(
        !test_classes.is_empty(),
        "the crop cache has no test images"
    );
    let n_val = (val_fraction * train_pool.len() as f64).ceil() as usize;
    let mut val_classes = Vec::new();
    if n_val > 0 {
        ensure!(
            n_val + 2 <= train_pool.len(),
            "val_fraction {val_fraction} leaves fewer than 2 of {} training classes",
            train_pool.len()
        );
        let mut shuffled = train_pool.clone();
        shuffled.shuffle(&mut ChaCha8Rng::seed_from_u64(val_seed));
        val_classes = shuffled[..n_val].to_vec();
        val_classes.sort_unstable();
        train_pool.retain(|c| val_classes.binary_search(c).is_err());
    }
    let train_classes = train_pool;
    let mut out = RunSplits {
        train: Vec::new(),
        train_labels: Vec::new(),
        val: Vec::new(),
        test: Vec::new(),
        train_classes,
        val_classes,
        test_classes,
    };
    for (i, r) in rows.iter().enumerate() {
        match r.split {
            Split::Test => {
                if out.test_classes.binary_search(&r.class_id).is_ok() {
                    out.test.push(i);
                }
            }
            Split::Train | Split::Val => {
                if let Ok(label) = out.train_classes.binary_search(&r.class_id) {
                    out.train.push(i);
                    out.train_labels.push(label as i64);
                } else if out.val_classes.binary_search(&r.class_id).is_ok() {
                    out.val.push(i);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(classes: std::ops::Range<i64>, per: usize, split: Split) -> Vec<CropRow> {
        classes
            .flat_map(|c| {
                (0..per).map(move |i| CropRow {
                    image_id: c * 100 + i as i64,
                    class_id: c,
                    split,
                    width: 1,
                    height: 1,
                    jpeg: Vec::new(),
                    sha256: String::new(),
                })
            })
            .collect()
    }

    #[test]
    fn limit_train_per_class_keeps_n_per_class_seeded() {
        let mut r = rows(1..11, 6, Split::Train);
        r.extend(rows(21..25, 2, Split::Test));
        let full = split(&r, 0.0, 0, 0).unwrap();
        let mut a = full.clone();
        a.limit_train_per_class(4, 3);
        let mut b = full.clone();
        b.limit_train_per_class(4, 3);
        assert_eq!(a, b, "the same seed keeps the same images");
        assert_eq!(a.train.len(), 40);
        for label in 0..10 {
            assert_eq!(a.train_labels.iter().filter(|&&l| l == label).count(), 4);
        }
        for (&i, &l) in a.train.iter().zip(&a.train_labels) {
            assert_eq!(full.train_classes[l as usize], r[i].class_id);
        }
        let mut c = full.clone();
        c.limit_train_per_class(4, 4);
        assert_ne!(a.train, c.train, "another seed keeps other images");
        let mut d = full.clone();
        d.limit_train_per_class(0, 3);
        assert_eq!(d, full, "0 keeps everything");
        assert_eq!(a.test, full.test);
    }

    #[test]
    fn class_disjoint_and_seeded() {
        let mut r = rows(1..21, 3, Split::Train);
        r.extend(rows(21..41, 2, Split::Test));
        let s = split(&r, 0.25, 7, 0).unwrap();
        assert_eq!(s.val_classes.len(), 5);
        assert_eq!(s.train_classes.len(), 15);
        assert!(s.val_classes.iter().all(|c| !s.train_classes.contains(c)));
        assert_eq!((s.train.len(), s.val.len(), s.test.len()), (45, 15, 40));
        for (&i, &l) in s.train.iter().zip(&s.train_labels) {
            assert_eq!(s.train_classes[l as usize], r[i].class_id);
        }
        assert_eq!(split(&r, 0.25, 7, 0).unwrap(), s);
        assert_ne!(split(&r, 0.25, 8, 0).unwrap().val_classes, s.val_classes);
        let none = split(&r, 0.0, 7, 0).unwrap();
        assert!(none.val.is_empty() && none.train_classes.len() == 20);
        let few = split(&r, 0.0, 7, 4).unwrap();
        assert_eq!(
            (few.train_classes, few.test_classes),
            (vec![1, 2, 3, 4], vec![21, 22, 23, 24])
        );
        assert!(split(&r, 0.95, 7, 0).is_err());
    }
}
