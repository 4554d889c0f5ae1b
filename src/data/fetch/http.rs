//! One HTTP download attempt: resume the `.part` with a `Range` request where there is one,
//! stream the body into it while hashing, and hand the result to [`Target::finish`].

use super::digest::{copy_hashing, feed_file, CopyError, Hashers};
use super::error::io_err;
use super::target::Target;
use super::{FetchError, FetchOptions, Fetched};

/// The HTTP client for one [`fetch`](super::fetch): statuses are answers, not errors, and
/// `opts.timeout` bounds connecting and each read or write. TLS trusts the system's certificate
/// store (`SSL_CERT_FILE` / the distribution's bundle), not a bundled copy of Mozilla's: behind
/// an institution's TLS-inspecting proxy only the system store has its CA.
pub(super) fn agent(opts: &FetchOptions) -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .http_status_as_error(false)
        .timeout_connect(Some(opts.timeout))
        .timeout_per_read(Some(opts.timeout))
        .timeout_per_write(Some(opts.timeout))
        .user_agent(concat!("grouploss/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

fn header_u64(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<u64> {
    resp.headers().get(name)?.to_str().ok()?.trim().parse().ok()
}

/// START of `Content-Range: bytes START-END/TOTAL`.
fn content_range_start(resp: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    let value = resp.headers().get("content-range")?.to_str().ok()?;
    let range = value.trim().strip_prefix("bytes")?.trim_start();
    range.split_once('-')?.0.trim().parse().ok()
}

/// One HTTP attempt, resuming the `.part` when there is one. Sets `resumed` when bytes from
/// an earlier attempt were kept.
pub(super) fn attempt(
    agent: &ureq::Agent,
    url: &str,
    target: &Target<'_>,
    opts: &FetchOptions,
    resumed: &mut bool,
) -> Result<Fetched, FetchError> {
    let have = target.part_len()?;
    let mut request = agent.get(url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let response = request.call().map_err(|e| FetchError::Transport {
        url: url.to_owned(),
        source: Box::new(e),
    })?;
    let status = response.status().as_u16();
    let length = header_u64(&response, "content-length");
    let (mut hashers, mut out, total) = match status {
        200 => (Hashers::new(), target.open_part(false)?, length),
        206 if have > 0 && content_range_start(&response).is_none_or(|s| s == have) => {
            // Hash what is already there, then append; the digests cover the whole file.
            let mut hashers = Hashers::new();
            feed_file(&target.part, &mut hashers)?;
            *resumed = true;
            (hashers, target.open_part(true)?, length.map(|l| l + have))
        }
        206 | 416 if have > 0 => {
            target.remove_part()?;
            return Err(FetchError::BadResume {
                url: url.to_owned(),
                offset: have,
                status,
            });
        }
        _ => {
            return Err(FetchError::Http {
                url: url.to_owned(),
                status,
            })
        }
    };
    if let (Some(expected), Some(actual)) = (target.spec.size, total) {
        if expected != actual {
            drop(out);
            target.remove_part()?;
            return Err(FetchError::SizeMismatch {
                url: url.to_owned(),
                expected,
                actual,
            });
        }
    }
    let bar = target.progress(opts.progress, total.or(target.spec.size), hashers.bytes);
    let mut body = response.into_body().into_reader();
    let copied = copy_hashing(&mut body, &mut out, &mut hashers, &bar);
    bar.finish_and_clear();
    match copied {
        Ok(()) => {}
        Err(CopyError::Read(source)) => {
            return Err(FetchError::Interrupted {
                url: url.to_owned(),
                received: hashers.bytes,
                source,
            })
        }
        Err(CopyError::Write(e)) => return Err(io_err("writing", &target.part)(e)),
    }
    // A close-delimited body that stopped early is a cut connection, not a bad file: keep the
    // `.part` and resume.
    if let Some(expected) = total.or(target.spec.size) {
        if hashers.bytes < expected {
            return Err(FetchError::Truncated {
                url: url.to_owned(),
                received: hashers.bytes,
                expected,
            });
        }
    }
    target.finish(out, hashers, url)
}
