//! Whether a JPEG file is whole. The `image` crate's decoder fills what a truncated JPEG lacks
//! with gray (rows of 128) and reports no error, so a half-downloaded or half-copied image
//! would be trained on silently; PIL and torchvision raise "image file is truncated". This
//! walks the file's marker structure — segments by their lengths, entropy-coded data up to its
//! next marker — and calls the file whole only when it reaches the end-of-image marker.

/// `SOI`, the two bytes every JPEG starts with.
const SOI: [u8; 2] = [0xFF, 0xD8];
/// `EOI`, the marker that ends a JPEG.
const EOI: u8 = 0xD9;
/// `SOS`: its segment is followed by entropy-coded data.
const SOS: u8 = 0xDA;

/// True when `bytes` start like a JPEG (the only format [`check_complete`] judges).
pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&SOI)
}

/// `Ok` when `bytes` are not a JPEG or are a JPEG that reaches its end-of-image marker; an
/// error saying "image file is truncated" (PIL's words) and where the data ran out otherwise.
/// Bytes after the end-of-image marker are allowed, as every decoder ignores them.
pub fn check_complete(bytes: &[u8]) -> Result<(), String> {
    if !is_jpeg(bytes) {
        return Ok(());
    }
    match end_of_image(bytes) {
        Some(_) => Ok(()),
        None => Err(format!(
            "image file is truncated: the JPEG data ends after {} bytes without its \
             end-of-image marker",
            bytes.len()
        )),
    }
}

/// The offset just past the end-of-image marker of the JPEG `bytes`, if the data reaches it.
fn end_of_image(bytes: &[u8]) -> Option<usize> {
    let mut i = SOI.len();
    loop {
        let (marker, after) = next_marker(bytes, i)?;
        i = after;
        match marker {
            EOI => return Some(i),
            // Markers without a length: TEM, RST0–7, a stray SOI.
            0x01 | 0xD0..=0xD8 => {}
            _ => {
                let len = u16::from_be_bytes([*bytes.get(i)?, *bytes.get(i + 1)?]) as usize;
                if len < 2 || i + len > bytes.len() {
                    return None;
                }
                i += len;
                if marker == SOS {
                    i = end_of_scan(bytes, i)?;
                }
            }
        }
    }
}

/// The marker at or after `i` (fill bytes `FF` and stray bytes before it skipped, as libjpeg
/// does) and the offset after it.
fn next_marker(bytes: &[u8], mut i: usize) -> Option<(u8, usize)> {
    loop {
        while *bytes.get(i)? != 0xFF {
            i += 1;
        }
        while *bytes.get(i)? == 0xFF {
            i += 1;
        }
        if bytes[i] != 0x00 {
            return Some((bytes[i], i + 1));
        }
        i += 1;
    }
}

/// The offset of the marker that ends the entropy-coded data starting at `i`: the first `FF`
/// not followed by a stuffed `00`, a restart marker or another `FF`.
fn end_of_scan(bytes: &[u8], mut i: usize) -> Option<usize> {
    loop {
        if *bytes.get(i)? != 0xFF {
            i += 1;
            continue;
        }
        match *bytes.get(i + 1)? {
            0x00 | 0xD0..=0xD7 => i += 2,
            0xFF => i += 1,
            _ => return Some(i),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real JPEG of `w`×`h` (a gradient, so its entropy-coded data is not trivial).
    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 7 % 256) as u8,
                (y * 5 % 256) as u8,
                ((x ^ y) % 256) as u8,
            ])
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img)
            .unwrap();
        out
    }

    #[test]
    fn a_whole_jpeg_passes_and_every_truncation_of_it_is_refused() {
        let whole = jpeg(48, 40);
        check_complete(&whole).unwrap();
        let mut padded = whole.clone();
        padded.extend_from_slice(b"\0\0trailing bytes after EOI");
        check_complete(&padded).unwrap();
        for cut in [whole.len() / 2, whole.len() - 2, 100, 3] {
            let e = check_complete(&whole[..cut]).unwrap_err();
            assert!(e.contains("image file is truncated"), "cut at {cut}: {e}");
        }
        // Not a JPEG: judged by its own decoder.
        check_complete(b"\x89PNG\r\n").unwrap();
    }
}
