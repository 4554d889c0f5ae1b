//! The prepare stage (crop cache) and the loader, end to end on a small image folder with a
//! grayscale JPEG, an RGBA PNG, a corrupt JPEG and a truncated PNG among the images.

use grouploss::data::crop_cache;
use grouploss::data::index::Split;
use grouploss::data::loader::{sequential, stream, LoaderParams, Mode};
use grouploss::data::transform::{decode, eval_transform, Normalize};
use image::{ImageEncoder, Rgb, RgbImage};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::common::gl_cli;

fn gl(project: &Path, args: &[&str]) -> (i32, String, String) {
    gl_cli::run(project, args, &[])
}

fn jpeg(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (x * 7 + seed * 31) as u8,
            (y * 5 + seed) as u8,
            ((x + y) * 3) as u8,
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92)
        .encode_image(&img)
        .unwrap();
    out
}

/// 4 classes × 3 images of assorted sizes and colour types, plus two broken files.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("pipeline")).unwrap();
    std::fs::write(
        p.join("pipeline/datasets.toml"),
        "[datasets.mine]\ntitle = \"t\"\nlicense = \"t\"\nlocal_root = \"imgs\"\nlayout = { kind = \"image_folder\" }\n",
    )
    .unwrap();
    for c in 0..4u32 {
        let d = p.join(format!("imgs/class{c}"));
        std::fs::create_dir_all(&d).unwrap();
        for k in 0..3u32 {
            std::fs::write(
                d.join(format!("{k}.jpg")),
                jpeg(300 + 20 * k, 200 + 10 * c, c * 3 + k),
            )
            .unwrap();
        }
    }
    let gray = image::GrayImage::from_fn(180, 260, |x, y| image::Luma([(x ^ y) as u8]));
    let mut g = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut g, 90)
        .encode_image(&gray)
        .unwrap();
    std::fs::write(p.join("imgs/class0/gray.jpg"), g).unwrap();
    let rgba = image::RgbaImage::from_fn(64, 48, |x, y| image::Rgba([x as u8, y as u8, 9, 128]));
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(rgba.as_raw(), 64, 48, image::ExtendedColorType::Rgba8)
        .unwrap();
    std::fs::write(p.join("imgs/class1/alpha.png"), &png).unwrap();
    std::fs::write(
        p.join("imgs/class2/corrupt.jpg"),
        b"\xff\xd8\xff\xe0 this is not a jpeg",
    )
    .unwrap();
    std::fs::write(p.join("imgs/class3/truncated.png"), &png[..png.len() / 2]).unwrap();
    let (code, out, err) = gl(p, &["fetch", "mine", "--quiet"]);
    assert_eq!(code, 0, "{out}{err}");
    dir
}

fn cache_file(project: &Path, resize: u32) -> PathBuf {
    let root = project.join("data/cache/mine");
    for e in std::fs::read_dir(&root).unwrap() {
        let dir = e.unwrap().path();
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        if m["params"]["resize"] == resize {
            return dir.join("crops.parquet");
        }
    }
    panic!("no cache with resize {resize} under {}", root.display());
}

#[test]
fn prepare_records_bad_images_is_idempotent_and_content_addressed() {
    let dir = project();
    let p = dir.path();
    let (code, out, err) = gl(
        p,
        &["prepare", "mine", "--quiet", "--max-failed-fraction", "0.2"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("14 images prepared (2 failed)"), "{out}");
    let (_, failures, _) = gl(
        p,
        &[
            "sql",
            "select rel_path from image_failures order by rel_path",
            "--format",
            "csv",
        ],
    );
    assert_eq!(
        failures,
        "rel_path\nclass2/corrupt.jpg\nclass3/truncated.png\n"
    );

    let file = cache_file(p, 256);
    let first = std::fs::read(&file).unwrap();
    let rows = crop_cache::read(&file, None).unwrap();
    assert_eq!(rows.len(), 14);
    assert!(
        rows.iter().all(|r| r.width.min(r.height) == 256),
        "shorter side 256"
    );
    let gray = rows
        .iter()
        .find(|r| r.width == 256 && r.height == 370)
        .expect("the grayscale image");
    assert_eq!(
        decode(&gray.jpeg, "gray").unwrap().dimensions(),
        (256, 370),
        "grayscale stored as RGB JPEG"
    );

    let (_, again, _) = gl(
        p,
        &["prepare", "mine", "--quiet", "--max-failed-fraction", "0.2"],
    );
    assert!(again.contains("cache up to date"), "{again}");
    std::fs::remove_dir_all(file.parent().unwrap()).unwrap();
    let (code, _, err) = gl(
        p,
        &["prepare", "mine", "--quiet", "--max-failed-fraction", "0.2"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        first,
        "same inputs → bit-identical cache"
    );

    let (code, _, err) = gl(
        p,
        &[
            "prepare",
            "mine",
            "--quiet",
            "--resize",
            "64",
            "--max-failed-fraction",
            "0.2",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_ne!(
        cache_file(p, 64).parent(),
        file.parent(),
        "another resize → another cache"
    );

    let (code, _, err) = gl(p, &["prepare", "mine", "--quiet", "--resize", "96"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("2 of 16 images could not be prepared") && err.contains("corrupt.jpg"),
        "{err}"
    );
}

#[test]
fn loader_is_deterministic_across_threads_and_eval_matches_the_transform() {
    let dir = project();
    let p = dir.path();
    let (code, _, err) = gl(
        p,
        &["prepare", "mine", "--quiet", "--max-failed-fraction", "0.2"],
    );
    assert_eq!(code, 0, "{err}");
    let rows = Arc::new(crop_cache::read(&cache_file(p, 256), Some(Split::Train)).unwrap());
    assert!(rows.iter().all(|r| r.split == Split::Train) && !rows.is_empty());
    let params = |threads, seed| LoaderParams {
        crop: 227,
        resize: 256,
        normalize: Normalize::BnInception,
        augment: grouploss::data::transform::Augment::PAPER,
        threads,
        prefetch: 2,
        seed,
    };
    let batches = vec![vec![0, 1, 2], vec![3, 4, 5, 0]];
    let collect = |threads, seed, mode| -> Vec<(Vec<f32>, Vec<i64>)> {
        stream(rows.clone(), batches.clone(), mode, params(threads, seed))
            .unwrap()
            .map(|b| {
                let b = b.unwrap();
                assert_eq!(b.images.size()[1..], [3, 227, 227]);
                (
                    Vec::<f32>::try_from(b.images.flatten(0, -1)).unwrap(),
                    b.labels,
                )
            })
            .collect()
    };
    let train = Mode::Train { epoch: 3 };
    let one = collect(1, 7, train);
    assert_eq!(one.len(), 2);
    assert_eq!(
        one,
        collect(2, 7, train),
        "same seed, different thread count → same batches"
    );
    assert_ne!(one, collect(2, 8, train), "another seed → other crops");
    assert_ne!(
        one,
        collect(1, 7, Mode::Train { epoch: 4 }),
        "another epoch → other crops"
    );
    let want: Vec<i64> = [3, 4, 5, 0].iter().map(|&i| rows[i].class_id).collect();
    assert_eq!(one[1].1, want, "labels follow the batch indices");

    let eval = stream(
        rows.clone(),
        sequential(rows.len(), 4),
        Mode::Eval,
        params(2, 0),
    )
    .unwrap();
    let mut seen = 0;
    for batch in eval {
        let batch = batch.unwrap();
        let got = Vec::<f32>::try_from(batch.images.flatten(0, -1)).unwrap();
        for (k, id) in batch.image_ids.iter().enumerate() {
            let row = rows.iter().find(|r| r.image_id == *id).unwrap();
            assert_eq!(batch.labels[k], row.class_id);
            let mut want = vec![0f32; 3 * 227 * 227];
            eval_transform(
                &decode(&row.jpeg, "x").unwrap(),
                256,
                227,
                Normalize::BnInception,
                &mut want,
            )
            .unwrap();
            assert_eq!(&got[k * want.len()..(k + 1) * want.len()], want.as_slice());
            seen += 1;
        }
    }
    assert_eq!(seen, rows.len());
}
