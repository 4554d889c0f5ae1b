//! What survives what (docs/reliability.md), the data side of issue 36: a crop cache rebuilt to
//! the same bytes, a truncated JPEG, an image replaced by a symlink out of the dataset after
//! its fetch, and a sampler that cannot fill one batch — each done for real, through `gl`.
#![cfg(feature = "catalog")] // `gl run`, `gl status` and the catalogue

use std::path::{Path, PathBuf};

use crate::common::tiny_pipeline;

use tiny_pipeline::{
    crops_file, gl, prepared, project, ran, status, train_args, ONE_RUN_PROFILE, TINY_PROFILE,
};

/// issue 36, fault 2: the manifest of the crop cache recorded the build's `seconds`, and the
/// pipeline's output digest of prepare covers the manifest, so `gl prepare --force` (or the
/// repair of a damaged cache) rebuilding the same crops made every run downstream stale.
#[test]
fn a_crop_cache_rebuilt_to_the_same_bytes_leaves_every_run_fresh() {
    let dir = project();
    let p = dir.path();
    std::fs::write(p.join("pipeline/profiles/tiny.toml"), ONE_RUN_PROFILE).unwrap();
    let (code, out, err) = gl(p, &["run", "--profile", "tiny"]);
    assert_eq!(code, 0, "{out}{err}");
    let before = status(p, &[]);
    for stage in ["prepare", "train", "embed", "evaluate"] {
        let task = before
            .iter()
            .find(|(t, _)| t.starts_with(&format!("{stage}:")));
        assert_eq!(task.map(|t| t.1.as_str()), Some("fresh"), "{before:?}");
    }
    let file = crops_file(p);
    let crops = std::fs::read(&file).unwrap();
    let manifest = std::fs::read(file.with_file_name("manifest.json")).unwrap();

    let args = [
        "prepare",
        "tiny_synth",
        "--resize",
        "32",
        "--force",
        "--quiet",
    ];
    let (code, out, err) = gl(p, &args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("images prepared"), "{out}");
    assert!(std::fs::read(&file).unwrap() == crops, "the same crops");
    assert_eq!(status(p, &[]), before, "after `gl prepare --force`");

    let (code, out, err) = gl(p, &["run", "prepare", "--profile", "tiny", "--force"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(ran(&out), ["prepare"], "{out}");
    assert!(std::fs::read(&file).unwrap() == crops, "the same crops");
    let after = std::fs::read(file.with_file_name("manifest.json")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&after),
        String::from_utf8_lossy(&manifest)
    );
    assert_eq!(status(p, &[]), before, "after `gl run prepare --force`");
    let (code, out, err) = gl(p, &["run", "--profile", "tiny"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(ran(&out).is_empty(), "nothing to redo: {out}");

    // A cache of the binary before, whose manifest carries `seconds` (as the caches of long
    // benchmarks do): runs built on it stay fresh when it is rebuilt, its bytes kept.
    let manifest_path = file.with_file_name("manifest.json");
    let mut old: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    old["seconds"] = 0.25.into();
    let old = serde_json::to_vec_pretty(&old).unwrap();
    std::fs::write(&manifest_path, &old).unwrap();
    let (code, out, err) = gl(p, &["run", "--profile", "tiny"]);
    assert_eq!(code, 0, "{out}{err}");
    let before = status(p, &[]);
    assert!(before.values().all(|s| s == "fresh"), "{before:?}");
    let (code, out, err) = gl(p, &args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("images prepared"), "{out}");
    assert!(
        std::fs::read(&manifest_path).unwrap() == old,
        "kept as it was"
    );
    assert_eq!(status(p, &[]), before, "an older manifest rebuilt");
}

/// `n` JPEG images of class `k` (a colour of its own, a pattern so the JPEG data is not
/// trivial) in `dir`.
fn class_folder(dir: &Path, k: u32, n: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let img = image::RgbImage::from_fn(40, 36, |x, y| {
            let c = |s: u32| ((k * s + i * 7 + (x ^ y) * 3 + x * y) % 256) as u8;
            image::Rgb([c(37), c(91), c(53)])
        });
        img.save(dir.join(format!("{i}.jpg"))).unwrap();
    }
}

/// An image folder of 16 classes of 5 JPEGs registered as dataset `mine` (docs/datasets.md,
/// "Your own images"); returns the folder.
fn own_images(p: &Path) -> PathBuf {
    let images = p.join("photos");
    for k in 1..=16 {
        class_folder(&images.join(format!("class_{k:02}")), k, 5);
    }
    std::fs::create_dir_all(p.join("data/registry.d")).unwrap();
    let entry = format!(
        "[datasets.mine]\ntitle = \"my images\"\nlicense = \"mine\"\nlocal_root = \"{}\"\n\
         layout = {{ kind = \"image_folder\", split = {{ rule = \"class_halves\" }} }}\n",
        images.display()
    );
    std::fs::write(p.join("data/registry.d/mine.toml"), entry).unwrap();
    images
}

/// `gl prepare mine` at resize 32 with `extra` flags.
fn prepare_mine(p: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut a = vec!["prepare", "mine", "--resize", "32", "--quiet"];
    a.extend_from_slice(extra);
    gl(p, &a)
}

/// issue 36, fault 4: a JPEG cut to half its bytes decoded without an error, its missing half
/// gray (rows of 128), and went into the crop cache; PIL and torchvision raise "image file is
/// truncated".
#[test]
fn a_truncated_jpeg_is_an_image_that_could_not_be_prepared() {
    let dir = tiny_pipeline::bare_project("");
    let p = dir.path();
    let images = own_images(p);
    let cut = images.join("class_03/2.jpg");
    let whole = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    let (code, out, err) = gl(p, &["fetch", "mine", "--quiet"]);
    assert_eq!(code, 0, "{out}{err}");

    // One image of 80 is more than max_failed_fraction: the stage fails, naming it.
    let (code, out, err) = prepare_mine(p, &[]);
    assert_ne!(code, 0, "a truncated image was prepared: {out}{err}");
    assert!(
        err.contains("class_03/2.jpg") && err.contains("image file is truncated"),
        "{err}"
    );
    // Allowed to fail: recorded as not prepared, naming it, and left out of the cache.
    let (code, out, err) = prepare_mine(p, &["--max-failed-fraction", "0.5"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("79 images prepared (1 failed)"), "{out}");
    assert!(
        out.contains("not prepared") && out.contains("class_03/2.jpg") && out.contains("truncated"),
        "{out}"
    );
}

/// issue 36, fault 9: the fetch refuses an image path that leaves the dataset root, but an
/// image replaced by a symlink to a file outside after the fetch was read by `gl prepare` into
/// the crop cache.
#[test]
fn an_image_replaced_by_a_symlink_out_of_the_dataset_is_refused_by_prepare() {
    let dir = tiny_pipeline::bare_project("");
    let p = dir.path();
    let images = own_images(p);
    let (code, out, err) = gl(p, &["fetch", "mine", "--quiet"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = prepare_mine(p, &[]);
    assert_eq!(code, 0, "{out}{err}");
    let cache: Vec<PathBuf> = std::fs::read_dir(p.join("data/cache/mine"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let kept = tiny_pipeline::files(&cache[0]);

    // A readable image outside the dataset, linked in place of one of its images.
    let secret = p.join("secret.jpg");
    std::fs::copy(images.join("class_09/0.jpg"), &secret).unwrap();
    let link = images.join("class_02/1.jpg");
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&secret, &link).unwrap();

    let (code, out, err) = prepare_mine(p, &["--force"]);
    assert_ne!(
        code, 0,
        "an image outside the dataset was prepared: {out}{err}"
    );
    assert!(
        err.contains("class_02/1.jpg") && err.contains("outside the dataset root"),
        "{err}"
    );
    // The cache built before is kept as it was.
    assert_eq!(tiny_pipeline::files(&cache[0]), kept);
}

/// issue 36, fault 10: a sampler that cannot fill one batch failed after the first epoch had
/// started, with "epoch 1 had no batches: too few training images for the sampler" — naming
/// neither key nor the numbers that do not fit.
#[test]
fn a_batch_the_training_split_cannot_fill_is_refused_before_training_naming_the_keys() {
    let dir = prepared("tiny", TINY_PROFILE);
    let p = dir.path();
    let train = |set: &str| gl(p, &train_args("x", &["--device", "cpu", "--set", set]));
    // 48 classes of 8: the official sampler's runs of 3 from the training classes are fewer
    // than 500.
    let (code, out, err) = train("classes_per_batch=500");
    assert_ne!(code, 0, "{out}{err}");
    for want in [
        "`classes_per_batch` = 500",
        "`samples_per_class` = 3",
        "training split",
        "images",
    ] {
        assert!(err.contains(want), "{want:?} in {err}");
    }
    assert!(
        !err.contains("epoch 1"),
        "refused before the first epoch: {err}"
    );
    let run = p.join("data/runs/x");
    assert!(!run.join("state.json").exists() && !run.join("untrained.json").exists());
}
