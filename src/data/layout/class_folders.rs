//! Class folders with the CLASSIFICATION split, as public mirrors ship CARS196 (and CUB):
//! `<train_dir>/<class>/<image>` and `<test_dir>/<class>/<image>`, every class in both halves.
//!
//! Folder names become official class ids through [`ClassIds`] (a class list with the alias
//! rule, or a `NNN.` prefix); a folder that matches no class is an error that names every such
//! folder. Both halves are merged and split again by class id for metric learning (the first
//! half of the classes train, like [`class_halves`]), so the mirror's own split does not matter.

use super::classes::{ClassIds, Label};
use super::image_folder::{entries, is_image, utf8_name};
use super::LayoutError;
use crate::data::index::DatasetIndex;
use std::path::Path;

pub fn parse(
    root: &Path,
    dirs: [&str; 2],
    class_ids: &ClassIds,
    project_root: Option<&Path>,
) -> Result<DatasetIndex, LayoutError> {
    let resolver = class_ids.resolve(project_root)?;
    // (class id, rel path), in (half, folder name, file path) order.
    let mut rows: Vec<(i64, String)> = Vec::new();
    let mut unknown: Vec<String> = Vec::new();
    for dir in dirs {
        let dir = dir.trim_end_matches('/');
        let base = root.join(dir);
        if !base.is_dir() {
            return Err(LayoutError::Invalid {
                path: base,
                message: "the class-folder directory does not exist".into(),
            });
        }
        let mut classes = Vec::new();
        for e in entries(&base)? {
            let name = utf8_name(&e)?;
            if e.path().is_dir() && !name.starts_with('.') {
                classes.push(name);
            }
        }
        classes.sort();
        for class in classes {
            let class_id = match resolver.class_id(Label::Name(&class)) {
                Ok(id) => id,
                Err(why) => {
                    unknown.push(format!("{dir}/{class}: {why}"));
                    continue;
                }
            };
            let mut files = Vec::new();
            collect_images(&base.join(&class), &format!("{dir}/{class}"), &mut files)?;
            files.sort();
            rows.extend(files.into_iter().map(|rel| (class_id, rel)));
        }
    }
    if !unknown.is_empty() {
        return Err(LayoutError::Invalid {
            path: root.to_path_buf(),
            message: format!(
                "{} class folder(s) match no class:\n  {}",
                unknown.len(),
                unknown.join("\n  ")
            ),
        });
    }
    if rows.is_empty() {
        return Err(LayoutError::Invalid {
            path: root.to_path_buf(),
            message: format!("no images under {} or {}", dirs[0], dirs[1]),
        });
    }
    Ok(super::halves_index(rows))
}

/// Every image file under `dir` (recursively; hidden entries skipped), as paths relative to
/// the dataset root (`rel` is `dir`'s).
fn collect_images(dir: &Path, rel: &str, out: &mut Vec<String>) -> Result<(), LayoutError> {
    for e in entries(dir)? {
        let name = utf8_name(&e)?;
        if name.starts_with('.') {
            continue;
        }
        let path = e.path();
        if path.is_dir() {
            collect_images(&path, &format!("{rel}/{name}"), out)?;
        } else if is_image(e.file_name().as_os_str()) {
            out.push(format!("{rel}/{name}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::index::Split;

    fn write(root: &Path, rel: &str, bytes: &[u8]) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    /// A class list of 4 names, one with a `/` that a folder cannot hold.
    fn class_list(dir: &Path) -> ClassIds {
        let list = dir.join("classes.txt");
        std::fs::write(&list, "Alpha One\nRam C/V Van\nGamma\nDelta Three\n").unwrap();
        ClassIds::List {
            file: list.to_string_lossy().into_owned(),
        }
    }

    #[test]
    fn classification_halves_are_merged_and_split_by_official_id() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("root");
        // Classification split: every class in both halves; names as mirrors alter them.
        for (half, k) in [("train", 1), ("test", 2)] {
            write(&r, &format!("{half}/Alpha One/a{k}.jpg"), b"a");
            write(&r, &format!("{half}/Ram C-V Van/b{k}.jpg"), b"b");
            write(&r, &format!("{half}/gamma /c{k}.png"), b"c");
            write(&r, &format!("{half}/Delta  Three/sub/d{k}.JPG"), b"d");
            write(
                &r,
                &format!("{half}/Delta  Three/notes.txt"),
                b"not an image",
            );
        }
        let idx = parse(&r, ["train", "test"], &class_list(d.path()), None).unwrap();
        assert_eq!(idx.images.len(), 8);
        let of = |rel: &str| idx.images.iter().find(|i| i.rel_path == rel).unwrap();
        assert_eq!(of("test/Ram C-V Van/b2.jpg").class_id, 2);
        assert_eq!(of("train/gamma /c1.png").class_id, 3);
        assert_eq!(of("train/Delta  Three/sub/d1.JPG").class_id, 4);
        for im in &idx.images {
            let want = if im.class_id <= 2 {
                Split::Train
            } else {
                Split::Test
            };
            assert_eq!(im.split, want, "{im:?}");
        }
        let ids: Vec<i64> = idx.images.iter().map(|i| i.image_id).collect();
        assert_eq!(ids, (1..=8).collect::<Vec<_>>());
    }

    #[test]
    fn every_folder_matching_no_class_is_named() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("root");
        write(&r, "train/Alpha One/a.jpg", b"a");
        write(&r, "train/Beta Two/x.jpg", b"x");
        write(&r, "test/Gamma/c.jpg", b"c");
        write(&r, "test/Epsilon/y.jpg", b"y");
        let e = parse(&r, ["train", "test"], &class_list(d.path()), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 class folder(s) match no class"), "{e}");
        assert!(
            e.contains("train/Beta Two") && e.contains("test/Epsilon"),
            "{e}"
        );
        assert!(!e.contains("Alpha One:") && !e.contains("Gamma:"), "{e}");
    }

    #[test]
    fn cub_style_prefix_ids_and_a_missing_half() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(r, "tr/001.Black_footed_Albatross/a.jpg", b"a");
        write(r, "te/200.Common_Yellowthroat/b.jpg", b"b");
        let idx = parse(r, ["tr", "te"], &ClassIds::Prefix, None).unwrap();
        let ids: Vec<(i64, Split)> = idx.images.iter().map(|i| (i.class_id, i.split)).collect();
        assert_eq!(ids, [(1, Split::Train), (200, Split::Test)]);
        write(r, "te/Cardinal/c.jpg", b"c");
        let e = parse(r, ["tr", "te"], &ClassIds::Prefix, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("te/Cardinal"), "{e}");
        let e = parse(r, ["tr", "nope"], &ClassIds::Prefix, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope") && e.contains("does not exist"), "{e}");
    }
}
