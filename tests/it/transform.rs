//! The loader's image transforms: crop parameters (bounds, scale, ratio, determinism), the eval
//! transform and fixed crops against PIL + NumPy references
//! (`tests/fixtures/transform/make_reference.py`, raw u8 HWC files), the per-backbone
//! normalisation on a constant colour, and decode errors naming the image.
//!
//! Tolerances, max abs error in 0–255 units: 0 for lossless input (the resampling is Pillow's
//! fixed-point bilinear, reproduced exactly); `JPEG_TOL` for JPEG input, where zune-jpeg
//! (the `image` crate) and libjpeg-turbo (PIL) decode a few pixels differently.

use grouploss::data::transform::{
    decode, eval_transform, random_resized_crop_params, resized_crop, train_transform,
    train_transform_with, Augment, CropBox, Normalize, TransformError,
};
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;

const SIZE: u32 = 227;
const N: usize = 3 * 227 * 227;
/// JPEG input: zune-jpeg and libjpeg-turbo decode `photo.jpg` (4:2:0, quality 90) up to 6 apart
/// (mean 0.37, chroma upsampling at the hard edges); measured after the eval transform: max 4,
/// mean 0.36.
const JPEG_TOL: f32 = 6.0;
const JPEG_MEAN_TOL: f32 = 0.5;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transform");
    std::fs::read(path.join(name)).unwrap_or_else(|e| panic!("reading fixture {name}: {e}"))
}

fn load(name: &str) -> RgbImage {
    decode(&fixture(name), name).unwrap()
}

/// A CHW output back to HWC pixel values (0–255 units) for either normalisation.
fn to_pixels(out: &[f32], norm: Normalize) -> Vec<f32> {
    let plane = out.len() / 3;
    let mut px = vec![0f32; out.len()];
    for i in 0..plane {
        for c in 0..3 {
            px[i * 3 + c] = match norm {
                Normalize::BnInception => out[(2 - c) * plane + i] + [128.0, 117.0, 104.0][c],
                Normalize::ImageNet => {
                    let (m, s) = ([0.485, 0.456, 0.406][c], [0.229, 0.224, 0.225][c]);
                    (out[c * plane + i] * s + m) * 255.0
                }
                Normalize::EfficientNetLite => out[c * plane + i] * 128.0 + 127.0,
            };
        }
    }
    px
}

fn mean_abs_err(got: &[f32], reference: &[u8]) -> f32 {
    let sum: f32 = got
        .iter()
        .zip(reference)
        .map(|(g, &r)| (g - r as f32).abs())
        .sum();
    sum / got.len() as f32
}

fn max_abs_err(got: &[f32], reference: &[u8]) -> f32 {
    assert_eq!(got.len(), reference.len());
    got.iter()
        .zip(reference)
        .map(|(g, &r)| (g - r as f32).abs())
        .fold(0.0, f32::max)
}

#[test]
fn crop_params_stay_in_bounds_and_in_range() {
    let mut sizes = ChaCha8Rng::seed_from_u64(1);
    let (lo, hi) = (3.0 / 4.0, 4.0 / 3.0);
    let mut fallbacks = 0;
    for case in 0..3000u64 {
        let (w, h) = match case % 3 {
            0 => (sizes.random_range(1..2000), sizes.random_range(1..2000)),
            1 => (sizes.random_range(1..8), sizes.random_range(1..8)),
            _ => (sizes.random_range(1..40), sizes.random_range(200..900)),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(case);
        let c = random_resized_crop_params(w, h, (0.08, 1.0), (lo, hi), &mut rng);
        let ctx = format!("image {w}×{h}, crop {c:?}");
        assert!(c.w >= 1 && c.h >= 1, "{ctx}");
        assert!(c.x + c.w <= w && c.y + c.h <= h, "{ctx}");
        let (cw, ch, area) = (c.w as f64, c.h as f64, w as f64 * h as f64);
        if c.fallback {
            fallbacks += 1;
            assert_eq!((c.x, c.y), ((w - c.w) / 2, (h - c.h) / 2), "{ctx}");
            assert!(c.w == w || c.h == h, "{ctx}");
        } else {
            // w = round(√(A·r)), h = round(√(A/r)): each within ½ of the unrounded value.
            assert!((cw + 0.5) * (ch + 0.5) >= 0.08 * area, "{ctx}");
            assert!((cw - 0.5) * (ch - 0.5) <= area, "{ctx}");
            assert!((cw + 0.5) / (ch - 0.5).max(1e-9) >= lo, "{ctx}");
            assert!((cw - 0.5) / (ch + 0.5) <= hi, "{ctx}");
        }
    }
    // The tall thin images need the fallback; a large image almost never does.
    assert!(fallbacks > 0 && fallbacks < 2000, "{fallbacks}");
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let big = (0..500)
        .map(|_| random_resized_crop_params(1000, 800, (0.08, 1.0), (lo, hi), &mut rng))
        .filter(|c| c.fallback)
        .count();
    assert!(big < 5, "{big} fallbacks on 1000×800");
}

#[test]
fn fallback_clamps_the_ratio() {
    // A 10×1000 strip: no attempt fits, the central crop takes w = 10, h = round(10 / (3/4)).
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let c = random_resized_crop_params(10, 1000, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut rng);
    let expected = CropBox {
        x: 0,
        y: (1000 - 13) / 2,
        w: 10,
        h: 13,
        fallback: true,
    };
    assert_eq!(c, expected);
    // Within the ratio range the fallback is the whole image.
    let c = random_resized_crop_params(3, 3, (2.0, 3.0), (0.75, 4.0 / 3.0), &mut rng);
    assert_eq!((c.x, c.y, c.w, c.h, c.fallback), (0, 0, 3, 3, true));
}

#[test]
fn train_transform_is_deterministic_under_a_seed() {
    let img = load("photo.jpg");
    let run = |seed: u64| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut out = vec![0f32; N];
        let draws: Vec<_> = (0..8)
            .map(|_| train_transform(&img, SIZE, Normalize::BnInception, &mut rng, &mut out))
            .collect::<Result<_, _>>()
            .unwrap();
        (draws, out)
    };
    let (a, out_a) = run(42);
    let (b, out_b) = run(42);
    assert_eq!(a, b);
    assert_eq!(out_a, out_b);
    let (c, _) = run(43);
    assert_ne!(a, c);
    assert!(a.iter().any(|d| d.flipped) && a.iter().any(|d| !d.flipped));
}

#[test]
fn any_image_size_transforms() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut out = vec![0f32; N];
    for (w, h) in [
        (1, 1),
        (1, 300),
        (300, 1),
        (2000, 3),
        (227, 227),
        (1500, 1100),
    ] {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, (x + y) as u8]));
        for _ in 0..5 {
            train_transform(&img, SIZE, Normalize::ImageNet, &mut rng, &mut out).unwrap();
            assert!(out.iter().all(|v| v.is_finite()), "{w}×{h}");
        }
        eval_transform(&img, 256, SIZE, Normalize::BnInception, &mut out).unwrap();
        assert!(out.iter().all(|v| (-128.0..=151.0).contains(v)), "{w}×{h}");
    }
}

#[test]
fn eval_transform_matches_pil() {
    // (fixture, reference, tolerance): photo is 300×200 → 384×256, crop at (78, 14) — 78.5 and
    // 14.5 round half to even; gray is 180×290 → 256×412 (upscale), crop at (14, 92).
    let cases = [
        ("photo.png", "eval_photo_png.u8", 0.0, 0.0),
        ("gray.png", "eval_gray_png.u8", 0.0, 0.0),
        ("photo.jpg", "eval_photo_jpg.u8", JPEG_TOL, JPEG_MEAN_TOL),
    ];
    for (image, reference, tol, mean_tol) in cases {
        let img = load(image);
        for norm in [
            Normalize::BnInception,
            Normalize::ImageNet,
            Normalize::EfficientNetLite,
        ] {
            let mut out = vec![0f32; N];
            eval_transform(&img, 256, SIZE, norm, &mut out).unwrap();
            // ImageNet goes through f32 (v/255 − m)/s and back: allow float rounding.
            let (px, reference) = (to_pixels(&out, norm), fixture(reference));
            let (err, mean) = (max_abs_err(&px, &reference), mean_abs_err(&px, &reference));
            eprintln!("eval {image} {norm:?}: max abs err {err}, mean {mean} (0–255 units)");
            assert!(err <= tol + 1e-3, "{image} {norm:?}: {err} > {tol}");
            assert!(
                mean <= mean_tol + 1e-3,
                "{image} {norm:?}: mean {mean} > {mean_tol}"
            );
        }
    }
}

#[test]
fn resized_crop_matches_pil() {
    // Upscale with flip, a downscale in x only, a small crop blown up 5.7×, with flip.
    let cases = [
        ((37, 21, 190, 150), true, "crop_a_flip.u8"),
        ((5, 0, 290, 200), false, "crop_b.u8"),
        ((150, 90, 40, 31), true, "crop_c_flip.u8"),
    ];
    let img = load("photo.png");
    for ((x, y, w, h), flip, reference) in cases {
        let crop = CropBox {
            x,
            y,
            w,
            h,
            fallback: false,
        };
        let mut out = vec![0f32; N];
        resized_crop(&img, crop, SIZE, flip, Normalize::BnInception, &mut out).unwrap();
        let err = max_abs_err(
            &to_pixels(&out, Normalize::BnInception),
            &fixture(reference),
        );
        assert_eq!(err, 0.0, "{reference}");
    }
}

#[test]
fn normalisation_of_a_constant_colour() {
    let img = RgbImage::from_pixel(300, 250, image::Rgb([200, 100, 50]));
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let imagenet = [
        (200f32 / 255.0 - 0.485) / 0.229,
        (100f32 / 255.0 - 0.456) / 0.224,
        (50f32 / 255.0 - 0.406) / 0.225,
    ];
    // BN-Inception: planes B, G, R minus [104, 117, 128].
    for (norm, planes) in [
        (
            Normalize::BnInception,
            [50.0 - 104.0, 100.0 - 117.0, 200.0 - 128.0],
        ),
        (Normalize::ImageNet, imagenet),
        // EfficientNet-Lite: planes R, G, B as (v − 127) / 128, exact in f32.
        (
            Normalize::EfficientNetLite,
            [73.0 / 128.0, -27.0 / 128.0, -77.0 / 128.0],
        ),
    ] {
        let mut eval = vec![0f32; N];
        eval_transform(&img, 256, SIZE, norm, &mut eval).unwrap();
        let mut train = vec![0f32; N];
        train_transform(&img, SIZE, norm, &mut rng, &mut train).unwrap();
        for out in [&eval, &train] {
            for (p, chunk) in out.chunks_exact(N / 3).enumerate() {
                assert!(chunk.iter().all(|&v| v == planes[p]), "{norm:?} plane {p}");
            }
        }
    }
    // torch: ((tensor([200., 100., 50.]) / 255 − mean) / std) in f32.
    assert_eq!(imagenet, [1.3070468, -0.28501397, -0.9329847]);
}

#[test]
fn flip_mirrors_the_crop_exactly() {
    let img = load("photo.png");
    let crop = CropBox {
        x: 10,
        y: 5,
        w: 200,
        h: 180,
        fallback: false,
    };
    let (mut a, mut b) = (vec![0f32; N], vec![0f32; N]);
    resized_crop(&img, crop, SIZE, false, Normalize::ImageNet, &mut a).unwrap();
    resized_crop(&img, crop, SIZE, true, Normalize::ImageNet, &mut b).unwrap();
    let s = SIZE as usize;
    for (ra, rb) in a.chunks_exact(s).zip(b.chunks_exact(s)) {
        assert!(ra.iter().eq(rb.iter().rev()));
    }
}

#[test]
fn decode_converts_to_rgb_like_pil() {
    let gray = load("gray.png");
    assert_eq!(gray.dimensions(), (180, 290));
    assert!(gray.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
    // RGBA: alpha dropped, exactly as PIL's convert("RGB").
    let rgba = load("rgba.png");
    let px: Vec<f32> = rgba.as_raw().iter().map(|&v| v as f32).collect();
    assert_eq!(max_abs_err(&px, &fixture("rgba_rgb.u8")), 0.0);
    // CMYK JPEG (PIL writes Adobe-inverted CMYK): converted to RGB; measured max 1 from PIL's.
    let cmyk = load("cmyk.jpg");
    assert_eq!(cmyk.dimensions(), (40, 30));
    let px: Vec<f32> = cmyk.as_raw().iter().map(|&v| v as f32).collect();
    let err = max_abs_err(&px, &fixture("cmyk_rgb.u8"));
    eprintln!("cmyk.jpg: max abs err vs PIL {err}");
    assert!(err <= 2.0, "cmyk: {err}");
}

#[test]
fn undecodable_input_is_an_error_naming_the_id() {
    let jpeg = fixture("photo.jpg");
    for bytes in [&jpeg[..120], &b"not an image at all"[..], &[][..]] {
        match decode(bytes, "cub/001.Black_footed_Albatross/img_0042.jpg") {
            Err(e @ TransformError::Decode { .. }) => {
                assert!(e.to_string().contains("img_0042.jpg"), "{e}")
            }
            other => panic!("expected a decode error, got {other:?}"),
        }
    }
}

#[test]
fn bad_buffers_and_sizes_are_errors() {
    let img = RgbImage::from_pixel(50, 40, image::Rgb([1, 2, 3]));
    let mut short = vec![0f32; N - 1];
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let r = train_transform(&img, SIZE, Normalize::ImageNet, &mut rng, &mut short);
    assert!(matches!(
        r,
        Err(TransformError::OutputLength { expected: N, got, .. }) if got == N - 1
    ));
    let mut out = vec![0f32; N];
    let r = eval_transform(&img, 200, SIZE, Normalize::ImageNet, &mut out);
    assert!(matches!(
        r,
        Err(TransformError::BadSize {
            resize: 200,
            crop: 227
        })
    ));
    let outside = CropBox {
        x: 45,
        y: 0,
        w: 10,
        h: 10,
        fallback: false,
    };
    let r = resized_crop(&img, outside, SIZE, false, Normalize::ImageNet, &mut out);
    assert!(matches!(r, Err(TransformError::CropOutOfBounds { .. })));
}

/// `cargo test --test transform -- --ignored --nocapture`: single-thread images/s on a decoded
/// 341×256 image (the cached crops' size), BN-Inception, next to the PIL + NumPy reference
/// (`make_reference.py bench`).
#[test]
#[ignore]
fn speed() {
    let img = RgbImage::from_fn(341, 256, |x, y| {
        image::Rgb([
            (x * 3 % 256) as u8,
            (y * 5 % 256) as u8,
            ((x ^ y) % 256) as u8,
        ])
    });
    let mut out = vec![0f32; N];
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let n = 2000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        eval_transform(&img, 256, SIZE, Normalize::BnInception, &mut out).unwrap();
    }
    let eval = n as f64 / t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    for _ in 0..n {
        train_transform(&img, SIZE, Normalize::BnInception, &mut rng, &mut out).unwrap();
    }
    let train = n as f64 / t.elapsed().as_secs_f64();
    println!("rust 341x256: eval {eval:.0} img/s, train {train:.0} img/s");
}

/// The shift-only augmentation (`augment = "random_crop"`) copies a window of the cached image
/// pixel for pixel (no resampling), at offsets that cover every valid position, and the
/// centred offset is what the eval transform shows.
#[test]
fn shift_only_crop_copies_a_window() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let img = RgbImage::from_fn(72, 72, |_, _| image::Rgb(rng.random::<[u8; 3]>()));
    let aug = Augment {
        shift_only: true,
        hflip: false,
        ..Augment::PAPER
    };
    let norm = Normalize::EfficientNetLite;
    let mut out = vec![0f32; 3 * 64 * 64];
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..400 {
        let d = train_transform_with(&img, 64, norm, aug, &mut rng, &mut out).unwrap();
        assert_eq!((d.crop.w, d.crop.h, d.flipped), (64, 64, false));
        assert!(d.crop.x <= 8 && d.crop.y <= 8);
        seen.insert((d.crop.x, d.crop.y));
        let px = to_pixels(&out, norm);
        for (i, v) in px.iter().enumerate() {
            let (p, c) = (i / 3, i % 3);
            let (x, y) = (d.crop.x + (p % 64) as u32, d.crop.y + (p / 64) as u32);
            let want = img.get_pixel(x, y)[c] as f32;
            assert!((v - want).abs() < 1e-3, "pixel {x},{y}: {v} vs {want}");
        }
    }
    assert!(seen.len() > 60, "only {} of 81 offsets drawn", seen.len());
    let mut eval = vec![0f32; 3 * 64 * 64];
    eval_transform(&img, 72, 64, norm, &mut eval).unwrap();
    let centre = CropBox {
        x: 4,
        y: 4,
        w: 64,
        h: 64,
        fallback: false,
    };
    resized_crop(&img, centre, 64, false, norm, &mut out).unwrap();
    assert_eq!(out, eval);
    let small = RgbImage::new(60, 80);
    assert!(matches!(
        train_transform_with(&small, 64, norm, aug, &mut rng, &mut out),
        Err(TransformError::CropOutOfBounds { .. })
    ));
}
