//! One dataset identity whatever the source: the same images under the same classes, packaged
//! as the CUB layout or as class folders, give byte-identical `images.parquet`, one content
//! digest and the same run ids; a copy with one image relabelled is refused by the pinned
//! digest, naming the classes that differ, and leaves the dataset and the pin as they were.

use crate::common::fixture_archives::{tar_gz, zip};
use crate::common::http_server::{Route, Server};
use crate::common::{png, tiny_pipeline};
use std::path::Path;

const CLASSES: usize = 4;
const PER: usize = 3;

/// `(class, image bytes)` of the fixture: 4 classes × 3 distinct PNGs.
fn images() -> Vec<(usize, Vec<u8>)> {
    (0..CLASSES * PER)
        .map(|i| (i / PER + 1, png(i as u8 * 7 + 1)))
        .collect()
}

/// The CUB packaging: images.txt in id order, labels, boxes.
fn cub_tgz(images: &[(usize, Vec<u8>)]) -> Vec<u8> {
    let (mut list, mut labels, mut boxes, mut files) =
        (String::new(), String::new(), String::new(), Vec::new());
    for (i, (c, bytes)) in images.iter().enumerate() {
        let id = i + 1;
        let rel = format!("{c:03}.Class_{c}/cub_{id}.png");
        list.push_str(&format!("{id} {rel}\n"));
        labels.push_str(&format!("{id} {c}\n"));
        boxes.push_str(&format!("{id} 1.0 2.0 10.0 20.0\n"));
        files.push((format!("CUB/images/{rel}"), bytes.clone()));
    }
    files.push(("CUB/images.txt".into(), list.into_bytes()));
    files.push(("CUB/image_class_labels.txt".into(), labels.into_bytes()));
    files.push(("CUB/bounding_boxes.txt".into(), boxes.into_bytes()));
    tar_gz(&files)
}

/// The class-folder packaging: other file names, images listed in reverse.
fn folders_zip(images: &[(usize, Vec<u8>)]) -> Vec<u8> {
    let files: Vec<(String, Vec<u8>)> = images
        .iter()
        .enumerate()
        .rev()
        .map(|(i, (c, bytes))| (format!("{c:03}.Class_{c}/mirror-{i:02}.png"), bytes.clone()))
        .collect();
    zip(&files)
}

fn registry(layout: &str, root: &str, file: &str, url: &str) -> String {
    format!(
        "[datasets.tinyid]\ntitle = \"t\"\nlicense = \"t\"\nroot = \"{root}\"\nlayout = {layout}\n\
         expect = {{ images = {}, classes = {CLASSES} }}\n\
         [[datasets.tinyid.files]]\nname = \"{file}\"\nurls = [\"{url}\"]\n",
        CLASSES * PER
    )
}

const RECIPE: &str = r#"
[datasets.tinyid]
backbone = "tiny_cnn"
init = "none"
classes_per_batch = 2
samples_per_class = 3
input_size = 24
resize = 32
loader_threads = 1
"#;

const PROFILE: &str = r#"
description = "tests: one run on tinyid"
datasets = ["tinyid"]
seeds = [0]
device = "cpu"
ensemble = false

[train]
recipe = "tiny"
"#;

/// A project whose `tinyid` is the given registry entry (in `data/registry.d/`).
fn project(registry: &str) -> tempfile::TempDir {
    let dir = tiny_pipeline::bare_project(&format!("{}{RECIPE}", tiny_pipeline::TINY_RECIPE));
    let p = dir.path();
    std::fs::write(p.join("pipeline/profiles/idp.toml"), PROFILE).unwrap();
    std::fs::create_dir_all(p.join("data/registry.d")).unwrap();
    std::fs::write(p.join("data/registry.d/tinyid.toml"), registry).unwrap();
    dir
}

fn fetch(p: &Path) -> (i32, String) {
    let (code, out, err) = tiny_pipeline::gl(p, &["fetch", "tinyid", "--quiet"]);
    (code, format!("{out}{err}"))
}

/// The run directories the `idp` profile plans (from `gl status --format json`).
fn run_dirs(p: &Path) -> Vec<String> {
    let (code, out, err) =
        tiny_pipeline::gl(p, &["status", "--profile", "idp", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    rows.iter()
        .filter_map(|r| r["run_dir"].as_str().map(String::from))
        .collect()
}

fn dataset_file(p: &Path, name: &str) -> Vec<u8> {
    std::fs::read(p.join("data/datasets/tinyid").join(name)).unwrap()
}

#[test]
fn two_packagings_give_one_index_one_digest_and_one_run_id() {
    let ims = images();
    let server = Server::start(&[
        ("/cub.tgz", Route::Bytes(cub_tgz(&ims))),
        ("/folders.zip", Route::Bytes(folders_zip(&ims))),
    ]);
    let cub = project(&registry(
        "{ kind = \"cub\" }",
        "CUB",
        "cub.tgz",
        &server.url("/cub.tgz"),
    ));
    let folders = project(&registry(
        "{ kind = \"image_folder\" }",
        "",
        "folders.zip",
        &server.url("/folders.zip"),
    ));
    for p in [cub.path(), folders.path()] {
        let (code, out) = fetch(p);
        assert_eq!(code, 0, "{out}");
    }
    assert_eq!(
        dataset_file(cub.path(), "images.parquet"),
        dataset_file(folders.path(), "images.parquet"),
        "two packagings of the same images give the same index, byte for byte"
    );
    let fingerprint = |p: &Path| {
        let v: serde_json::Value =
            serde_json::from_slice(&dataset_file(p, "dataset.json")).unwrap();
        v["fingerprint"].as_str().unwrap().to_string()
    };
    assert_eq!(fingerprint(cub.path()), fingerprint(folders.path()));
    // Only the CUB packaging has boxes: they live beside the index, not in it.
    assert!(cub
        .path()
        .join("data/datasets/tinyid/bboxes.parquet")
        .is_file());
    assert!(!folders
        .path()
        .join("data/datasets/tinyid/bboxes.parquet")
        .exists());
    let runs = run_dirs(cub.path());
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        runs,
        run_dirs(folders.path()),
        "one recipe, one data: one run id"
    );

    // Another image set under the same name is another dataset, so another run id.
    let other: Vec<(usize, Vec<u8>)> = ims
        .iter()
        .map(|(c, _)| *c)
        .enumerate()
        .map(|(i, c)| (c, png(i as u8 * 7 + 2)))
        .collect();
    let server2 = Server::start(&[("/other.zip", Route::Bytes(folders_zip(&other)))]);
    let third = project(&registry(
        "{ kind = \"image_folder\" }",
        "",
        "other.zip",
        &server2.url("/other.zip"),
    ));
    assert_eq!(fetch(third.path()).0, 0);
    assert_ne!(run_dirs(third.path()), runs);
}

#[test]
fn a_copy_with_one_relabelled_image_is_refused_by_the_pinned_content() {
    let ims = images();
    let mut relabelled = ims.clone();
    relabelled[0].0 = 2; // the first image of class 1 filed under class 2
    let server = Server::start(&[
        ("/cub.tgz", Route::Bytes(cub_tgz(&ims))),
        ("/bad.zip", Route::Bytes(folders_zip(&relabelled))),
    ]);
    let dir = project(&registry(
        "{ kind = \"cub\" }",
        "CUB",
        "cub.tgz",
        &server.url("/cub.tgz"),
    ));
    let p = dir.path();
    assert_eq!(fetch(p).0, 0);
    let lock = std::fs::read_to_string(p.join("pipeline/datasets.lock")).unwrap();
    assert!(lock.contains("[[content]]"), "{lock}");
    let index = dataset_file(p, "images.parquet");

    std::fs::write(
        p.join("data/registry.d/tinyid.toml"),
        registry(
            "{ kind = \"image_folder\" }",
            "",
            "bad.zip",
            &server.url("/bad.zip"),
        ),
    )
    .unwrap();
    let (code, out) = fetch(p);
    assert_ne!(code, 0, "a relabelled copy must be refused:\n{out}");
    assert!(out.contains("differ from the content pinned"), "{out}");
    assert!(out.contains("class 1: 3 images pinned, 2 found"), "{out}");
    assert!(out.contains("class 2: 3 images pinned, 4 found"), "{out}");
    assert_eq!(
        dataset_file(p, "images.parquet"),
        index,
        "the dataset stays"
    );
    let content = |lock: &str| lock[lock.find("[[content]]").unwrap()..].to_string();
    let after = std::fs::read_to_string(p.join("pipeline/datasets.lock")).unwrap();
    assert_eq!(content(&after), content(&lock), "the content pin stays");
}
