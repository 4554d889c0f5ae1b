use super::*;
use crate::data::index::{DatasetIndex, ImageEntry, Split};

/// A tree of images under `root` (bytes `b"\xFF\xD8\xFF" + tag`), indexed with `paths`.
fn tree(root: &Path, images: &[(&str, i64, &str)]) -> DatasetIndex {
    let mut out = Vec::new();
    for (i, (rel, class_id, tag)) in images.iter().enumerate() {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, [&[0xFF, 0xD8, 0xFF][..], tag.as_bytes()].concat()).unwrap();
        out.push(ImageEntry {
            image_id: 100 + i as i64,
            rel_path: rel.to_string(),
            class_id: *class_id,
            split: if *class_id <= 2 {
                Split::Train
            } else {
                Split::Test
            },
            bbox: None,
        });
    }
    DatasetIndex { images: out }
}

const IMAGES: &[(&str, i64, &str)] = &[
    ("a/x.jpg", 1, "one"),
    ("a/y.JPEG", 1, "two"),
    ("b/z.jpg", 2, "three"),
    ("c/w.jpg", 3, "four"),
];

#[test]
fn two_packagings_of_the_same_images_give_the_same_index_and_digest() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = tree(d1.path(), IMAGES);
    // Another source: other file names, other order, other source ids.
    let renamed: Vec<(&str, i64, &str)> = vec![
        ("train/3/q.jpg", 3, "four"),
        ("train/1/p.jpg", 1, "two"),
        ("test/2/r.jpg", 2, "three"),
        ("train/1/s.jpg", 1, "one"),
    ];
    let second = tree(d2.path(), &renamed);
    let (c1, m1) = Content::of(d1.path(), first, Paths::Canonical).unwrap();
    let (c2, _) = Content::of(d2.path(), second, Paths::Canonical).unwrap();
    assert_eq!(c1.index, c2.index);
    assert_eq!(c1.sha256, c2.sha256);
    assert_eq!(c1.digest, c2.digest);
    assert_eq!(
        c1.index
            .images
            .iter()
            .map(|i| i.image_id)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert!(c1.index.images[0].rel_path.starts_with("images/1/"));
    assert!(c1.index.images.iter().all(|i| i.rel_path.ends_with(".jpg")));
    // The moves put the files where the index says.
    let out = d1.path().join("out");
    Content::place(&m1, d1.path(), &out).unwrap();
    let again = Content::reread(&out, c1.index.clone(), c1.sha256.clone()).unwrap();
    assert_eq!(again.digest, c1.digest);
}

#[test]
fn a_relabelled_image_changes_the_digest_and_is_named_per_class() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (c1, _) = Content::of(d1.path(), tree(d1.path(), IMAGES), Paths::Keep).unwrap();
    let mut relabelled = IMAGES.to_vec();
    relabelled[1].1 = 2; // "two" moves from class 1 to class 2
    let (c2, _) = Content::of(d2.path(), tree(d2.path(), &relabelled), Paths::Keep).unwrap();
    assert_ne!(c1.digest, c2.digest);
    let diff = differences(&c1.classes(), &c2.classes(), 10);
    assert_eq!(
        diff,
        [
            "class 1: 2 images pinned, 1 found",
            "class 2: 1 images pinned, 2 found"
        ]
    );
    // A swap within equal counts is still named.
    let mut swapped = IMAGES.to_vec();
    swapped[0].2 = "three";
    swapped[2].2 = "one";
    swapped[1].1 = 1;
    let d3 = tempfile::tempdir().unwrap();
    let (c3, _) = Content::of(d3.path(), tree(d3.path(), &swapped), Paths::Keep).unwrap();
    let diff = differences(&c1.classes(), &c3.classes(), 10);
    assert!(
        diff.iter()
            .any(|d| d.starts_with("class 1: 2 images as pinned, but other")),
        "{diff:?}"
    );
}

#[test]
fn the_pin_is_written_then_enforced_with_what_differs() {
    let project = tempfile::tempdir().unwrap();
    let d = tempfile::tempdir().unwrap();
    let (good, _) = Content::of(d.path(), tree(d.path(), IMAGES), Paths::Keep).unwrap();
    let mut lock = Lock::load(project.path()).unwrap();
    verify_or_pin(&mut lock, "tiny", &good).unwrap();
    let table = classes_file(lock.path(), "tiny");
    assert_eq!(read_classes(&table).unwrap(), good.classes());
    let mut lock = Lock::load(project.path()).unwrap();
    assert_eq!(lock.content("tiny").unwrap().digest, good.digest);
    verify_or_pin(&mut lock, "tiny", &good).unwrap();

    let dropped = &IMAGES[..3];
    let d2 = tempfile::tempdir().unwrap();
    let (bad, _) = Content::of(d2.path(), tree(d2.path(), dropped), Paths::Keep).unwrap();
    let e = format!("{:#}", verify_or_pin(&mut lock, "tiny", &bad).unwrap_err());
    assert!(
        e.contains("4 images in 3 classes pinned, 3 in 2 found"),
        "{e}"
    );
    assert!(e.contains("classes missing: 3"), "{e}");
    assert!(e.contains("datasets.lock"), "{e}");
    // The pin is unchanged by the refusal.
    assert_eq!(
        Lock::load(project.path())
            .unwrap()
            .content("tiny")
            .unwrap()
            .digest,
        good.digest
    );
}

#[test]
fn a_changed_file_fails_the_reread() {
    let d = tempfile::tempdir().unwrap();
    let (c, _) = Content::of(d.path(), tree(d.path(), IMAGES), Paths::Keep).unwrap();
    std::fs::write(d.path().join("b/z.jpg"), b"\xFF\xD8\xFFtampered").unwrap();
    let e = format!(
        "{:#}",
        Content::reread(d.path(), c.index, c.sha256).unwrap_err()
    );
    assert!(e.contains("b/z.jpg") && e.contains("differs"), "{e}");
}

#[test]
fn extensions_follow_the_bytes() {
    assert_eq!(extension(b"\xFF\xD8\xFF\xE0"), "jpg");
    assert_eq!(extension(b"\x89PNG\r\n"), "png");
    assert_eq!(extension(b"hello"), "img");
}
