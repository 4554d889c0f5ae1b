//! Mirror URLs: which scheme a source uses, and the local path of a `file://` URL.

use std::path::PathBuf;

use super::FetchError;

/// A source, parsed from its URL.
pub(super) enum Source {
    Http(String),
    Local(PathBuf),
}

/// Accepts `http://`, `https://` and `file:///absolute/path` (also `file://localhost/…`,
/// with `%XX` escapes); anything else is [`FetchError::UnsupportedUrl`].
pub(super) fn parse(url: &str) -> Result<Source, FetchError> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok(Source::Http(url.to_owned()));
    }
    let unsupported = || FetchError::UnsupportedUrl {
        url: url.to_owned(),
    };
    if !lower.starts_with("file://") {
        return Err(unsupported());
    }
    let rest = &url["file://".len()..];
    let rest = if rest.to_ascii_lowercase().starts_with("localhost/") {
        &rest["localhost".len()..]
    } else {
        rest
    };
    if !rest.starts_with('/') {
        return Err(unsupported());
    }
    percent_decode(rest)
        .map(|p| Source::Local(PathBuf::from(p)))
        .ok_or_else(unsupported)
}

/// Decodes `%XX` escapes of a file URL path; `None` for a bad escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
