//! The retrieval gallery: a few test queries, each with its top-5 neighbours among the other
//! test images (cosine similarity of the embeddings the metrics use; ties by gallery order, as
//! in [`crate::eval::knn`]), framed green when of the query's class and red when not. A PNG
//! made with the `image` crate: thumbnails are pictures, and no text is drawn.

use anyhow::{ensure, Context, Result};
use image::imageops::FilterType;
use image::{ImageEncoder, Rgb, RgbImage};
use std::path::Path;

const QUERY: Rgb<u8> = Rgb([0, 114, 178]);
const RIGHT: Rgb<u8> = Rgb([0, 158, 60]);
const WRONG: Rgb<u8> = Rgb([213, 0, 0]);
const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);

/// Rows of the gallery: queries `(index)` evenly spread over the `n` test images.
pub fn pick_queries(n: usize, count: usize) -> Vec<usize> {
    let count = count.min(n);
    (0..count).map(|i| (2 * i + 1) * n / (2 * count)).collect()
}

/// The `k` nearest rows to row `q` of the row-major `n × dim` unit vectors, `q` itself left out:
/// similarity descending, then row index ascending.
pub fn neighbours(vectors: &[f32], dim: usize, q: usize, k: usize) -> Vec<usize> {
    let n = vectors.len() / dim;
    let query = &vectors[q * dim..(q + 1) * dim];
    let mut sims: Vec<(f32, usize)> = (0..n)
        .filter(|&j| j != q)
        .map(|j| {
            let row = &vectors[j * dim..(j + 1) * dim];
            (query.iter().zip(row).map(|(a, b)| a * b).sum::<f32>(), j)
        })
        .collect();
    sims.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    sims.into_iter().take(k).map(|s| s.1).collect()
}

/// The image at `path` fitted into a `size`×`size` square on white, aspect kept.
pub fn thumbnail(path: &Path, size: u32) -> Result<RgbImage> {
    let img = image::open(path)
        .with_context(|| format!("reading the image {}", path.display()))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    ensure!(w > 0 && h > 0, "{}: an empty image", path.display());
    let scale = size as f64 / w.max(h) as f64;
    let (tw, th) = (
        ((w as f64 * scale).round() as u32).clamp(1, size),
        ((h as f64 * scale).round() as u32).clamp(1, size),
    );
    let small = image::imageops::resize(&img, tw, th, FilterType::Triangle);
    let mut out = RgbImage::from_pixel(size, size, BACKGROUND);
    image::imageops::overlay(
        &mut out,
        &small,
        ((size - tw) / 2) as i64,
        ((size - th) / 2) as i64,
    );
    Ok(out)
}

/// One gallery row: the query's thumbnail and its neighbours', each with whether it is right.
pub struct GalleryRow {
    pub query: RgbImage,
    pub neighbours: Vec<(RgbImage, bool)>,
}

fn framed(canvas: &mut RgbImage, thumb: &RgbImage, x: u32, y: u32, frame: u32, colour: Rgb<u8>) {
    let s = thumb.width() + 2 * frame;
    for dy in 0..s {
        for dx in 0..s {
            canvas.put_pixel(x + dx, y + dy, colour);
        }
    }
    image::imageops::overlay(canvas, thumb, (x + frame) as i64, (y + frame) as i64);
}

/// The gallery as PNG bytes: one row per query, the query first (blue frame), a gap, then its
/// neighbours (green right, red wrong).
pub fn render(rows: &[GalleryRow], thumb: u32) -> Result<Vec<u8>> {
    ensure!(!rows.is_empty(), "a gallery of no queries");
    let (frame, pad, gap) = (4u32, 6u32, 18u32);
    let cell = thumb + 2 * frame;
    let k = rows.iter().map(|r| r.neighbours.len()).max().unwrap_or(0) as u32;
    let width = pad + cell + gap + k * (cell + pad);
    let height = pad + rows.len() as u32 * (cell + pad);
    let mut canvas = RgbImage::from_pixel(width, height, BACKGROUND);
    for (i, r) in rows.iter().enumerate() {
        let y = pad + i as u32 * (cell + pad);
        framed(&mut canvas, &r.query, pad, y, frame, QUERY);
        for (j, (img, right)) in r.neighbours.iter().enumerate() {
            let x = pad + cell + gap + j as u32 * (cell + pad);
            framed(
                &mut canvas,
                img,
                x,
                y,
                frame,
                if *right { RIGHT } else { WRONG },
            );
        }
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png).write_image(
        canvas.as_raw(),
        width,
        height,
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_rank_by_similarity_then_index_and_skip_the_query() {
        // rows: e0, e0, e1, (e0+e1)/√2, e0
        let s = std::f32::consts::FRAC_1_SQRT_2;
        let v = [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, s, s, 1.0, 0.0];
        assert_eq!(neighbours(&v, 2, 0, 3), vec![1, 4, 3]);
        assert_eq!(neighbours(&v, 2, 2, 2), vec![3, 0]);
        assert_eq!(pick_queries(10, 2), vec![2, 7]);
        assert_eq!(pick_queries(3, 8), vec![0, 1, 2]);
    }

    #[test]
    fn frames_are_green_for_right_and_red_for_wrong() {
        let t = RgbImage::from_pixel(10, 10, Rgb([9, 9, 9]));
        let rows = [GalleryRow {
            query: t.clone(),
            neighbours: vec![(t.clone(), true), (t.clone(), false)],
        }];
        let png = render(&rows, 10).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        let cell = 18;
        let x1 = 6 + cell + 18;
        assert_eq!(*img.get_pixel(6, 6), QUERY);
        assert_eq!(*img.get_pixel(6 + 4, 6 + 4), Rgb([9, 9, 9]));
        assert_eq!(*img.get_pixel(x1, 6), RIGHT);
        assert_eq!(*img.get_pixel(x1 + cell + 6, 6), WRONG);
        assert_eq!(render(&rows, 10).unwrap(), png);
    }
}
