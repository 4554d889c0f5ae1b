//! `gl fetch --check`: whether a URL answers, and with what size, without downloading it — a
//! HEAD request, or where HEAD is refused a one-byte ranged GET (`Range: bytes=0-0`) whose body
//! is not read; for `file://` URLs, whether the file exists and its size.

use super::source::{self, Source};
use super::FetchOptions;

/// What asking one URL found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub url: String,
    /// `HEAD`, `GET bytes=0-0` or `file`.
    pub method: &'static str,
    /// The HTTP status of the last request (none for files and transport errors).
    pub status: Option<u16>,
    /// Content-Length (HEAD, a 200), the total of Content-Range (a 206) or the file's size.
    pub size: Option<u64>,
    /// Why it does not answer, when it does not.
    pub error: Option<String>,
}

impl Probe {
    /// Whether the URL would serve the file.
    pub fn answers(&self) -> bool {
        self.error.is_none()
    }
}

/// Asks `url` (already resolved: `http(s)://` or `file:///abs`), downloading nothing.
pub fn probe(url: &str, opts: &FetchOptions) -> Probe {
    match source::parse(url) {
        Ok(Source::Http(u)) => probe_http(&u, opts),
        Ok(Source::Local(p)) => {
            let (size, error) = match std::fs::metadata(&p) {
                Ok(m) if m.is_file() => (Some(m.len()), None),
                Ok(_) => (None, Some(format!("{} is not a file", p.display()))),
                Err(e) => (None, Some(format!("{}: {e}", p.display()))),
            };
            Probe {
                url: url.to_owned(),
                method: "file",
                status: None,
                size,
                error,
            }
        }
        Err(e) => Probe {
            url: url.to_owned(),
            method: "-",
            status: None,
            size: None,
            error: Some(e.to_string()),
        },
    }
}

/// HEAD, then a ranged GET when HEAD gets an answer other than success or "not there".
fn probe_http(url: &str, opts: &FetchOptions) -> Probe {
    let agent = super::http::agent(opts);
    let head = agent.head(url).call();
    match head {
        Ok(r) if r.status().is_success() => answer(url, "HEAD", &r),
        Ok(r) if matches!(r.status().as_u16(), 404 | 410) => answer(url, "HEAD", &r),
        Ok(_) => match agent.get(url).header("Range", "bytes=0-0").call() {
            Ok(r) => answer(url, "GET bytes=0-0", &r),
            Err(e) => transport(url, "GET bytes=0-0", e),
        },
        Err(e) => transport(url, "HEAD", e),
    }
}

/// A probe from a response; its body is dropped unread.
fn answer(url: &str, method: &'static str, r: &ureq::http::Response<ureq::Body>) -> Probe {
    let status = r.status().as_u16();
    let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok());
    let size = match status {
        206 => header("content-range")
            .and_then(|v| v.rsplit_once('/'))
            .and_then(|(_, total)| total.trim().parse().ok()),
        _ => header("content-length").and_then(|v| v.trim().parse().ok()),
    };
    let ok = (200..300).contains(&status);
    Probe {
        url: url.to_owned(),
        method,
        status: Some(status),
        size: if ok { size } else { None },
        error: (!ok).then(|| format!("HTTP {status}")),
    }
}

fn transport(url: &str, method: &'static str, e: ureq::Error) -> Probe {
    Probe {
        url: url.to_owned(),
        method,
        status: None,
        size: None,
        error: Some(e.to_string()),
    }
}
