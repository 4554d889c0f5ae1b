//! Integration tests of `data::fetch`, against a loopback HTTP server and local files. All
//! fixtures live in temp dirs.

use crate::common;
use crate::common::http_server;

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use grouploss::data::fetch::{
    fetch, fetch_from_local, hash_file, Checksum, FetchError, FetchOptions, FileSpec,
};
use sha2::{Digest, Sha256};

use common::{payload, tempdir};
use http_server::{Route, Server};

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn opts() -> FetchOptions {
    FetchOptions {
        retries: 3,
        backoff: Duration::from_millis(10),
        timeout: Duration::from_secs(5),
        progress: false,
    }
}

fn spec(urls: Vec<String>, checksum: Option<Checksum>) -> FileSpec {
    FileSpec {
        name: "data.tgz".into(),
        urls,
        checksum,
        size: None,
    }
}

/// A file of `len` payload bytes named `name` in a temp dir of its own: (the dir, which must
/// be kept alive, the file's path, its bytes).
fn local_source(name: &str, len: usize) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let data = payload(len);
    let src_dir = tempdir();
    let src = src_dir.path().join(name);
    fs::write(&src, &data).expect("write source");
    (src_dir, src, data)
}

#[test]
fn full_download_is_verified_and_renamed() {
    let data = payload(300_000);
    let server = Server::start(&[("/f", Route::Bytes(data.clone()))]);
    let dir = tempdir();
    let mut s = spec(
        vec![server.url("/f")],
        Some(Checksum::Sha256(sha256_hex(&data))),
    );
    s.size = Some(data.len() as u64);
    let got = fetch(
        &s,
        dir.path(),
        &FetchOptions {
            progress: true,
            ..opts()
        },
    )
    .expect("fetch");
    assert_eq!(fs::read(dir.path().join("data.tgz")).expect("read"), data);
    assert!(!dir.path().join("data.tgz.part").exists());
    assert_eq!(got.sha256, sha256_hex(&data));
    assert_eq!(got.md5, hex::encode(md5::Md5::digest(&data)));
    assert_eq!((got.bytes, got.reused), (data.len() as u64, false));
    assert_eq!(got.source, server.url("/f"));
    assert_eq!(server.requests("/f"), vec![None]);
}

#[test]
fn cut_connection_is_retried_with_range_and_resumed() {
    let data = payload(200_000);
    let server = Server::start(&[("/cut", Route::CutOnce(data.clone()))]);
    let dir = tempdir();
    let s = spec(
        vec![server.url("/cut")],
        Some(Checksum::Sha256(sha256_hex(&data))),
    );
    let got = fetch(&s, dir.path(), &opts()).expect("fetch after resume");
    assert_eq!(fs::read(&got.path).expect("read"), data);
    assert_eq!(got.sha256, sha256_hex(&data));
    let half = data.len() / 2;
    assert_eq!(
        server.requests("/cut"),
        vec![None, Some(format!("bytes={half}-"))]
    );
}

#[test]
fn stale_part_is_restarted_when_server_ignores_range() {
    let data = payload(50_000);
    let server = Server::start(&[("/f", Route::IgnoreRange(data.clone()))]);
    let dir = tempdir();
    fs::write(
        dir.path().join("data.tgz.part"),
        b"stale bytes from elsewhere",
    )
    .expect("write");
    let s = spec(
        vec![server.url("/f")],
        Some(Checksum::Sha256(sha256_hex(&data))),
    );
    let got = fetch(&s, dir.path(), &opts()).expect("fetch");
    assert_eq!(fs::read(&got.path).expect("read"), data);
    assert_eq!(server.requests("/f"), vec![Some("bytes=26-".to_owned())]);
}

#[test]
fn mismatch_after_resume_retries_from_zero() {
    let data = payload(30_000);
    let server = Server::start(&[("/f", Route::Bytes(data.clone()))]);
    let dir = tempdir();
    // A `.part` of another file: resuming it yields a wrong digest, so the bytes must be
    // discarded and fetched again from byte zero.
    fs::write(dir.path().join("data.tgz.part"), [0xaa_u8; 7]).expect("write part");
    let s = spec(
        vec![server.url("/f")],
        Some(Checksum::Sha256(sha256_hex(&data))),
    );
    let got = fetch(&s, dir.path(), &opts()).expect("fetch");
    assert_eq!(fs::read(&got.path).expect("read"), data);
    assert_eq!(
        server.requests("/f"),
        vec![Some("bytes=7-".to_owned()), None]
    );
}

#[test]
fn checksum_mismatch_deletes_part_and_keeps_existing_file() {
    let good = payload(10_000);
    let mut corrupted = good.clone();
    corrupted[5_000] ^= 0xff;
    let server = Server::start(&[("/bad", Route::Bytes(corrupted.clone()))]);
    let dir = tempdir();
    let final_path = dir.path().join("data.tgz");
    let old = b"previous release, still in use".to_vec();
    fs::write(&final_path, &old).expect("write old");
    let expected = sha256_hex(&good);
    let s = spec(
        vec![server.url("/bad")],
        Some(Checksum::Sha256(expected.clone())),
    );
    let err = fetch(&s, dir.path(), &opts()).expect_err("corrupted download must fail");
    let FetchError::AllSourcesFailed { ref failures, .. } = err else {
        panic!("unexpected error {err:?}");
    };
    assert_eq!(failures.len(), 1);
    match &failures[0].error {
        FetchError::ChecksumMismatch {
            url,
            algorithm,
            expected: e,
            actual,
        } => {
            assert_eq!(
                (url.as_str(), *algorithm),
                (server.url("/bad").as_str(), "sha256")
            );
            assert_eq!((e, actual), (&expected, &sha256_hex(&corrupted)));
        }
        other => panic!("unexpected failure {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&expected) && msg.contains(&sha256_hex(&corrupted)),
        "{msg}"
    );
    assert_eq!(fs::read(&final_path).expect("read old"), old);
    assert!(!dir.path().join("data.tgz.part").exists());
    assert_eq!(
        server.requests("/bad").len(),
        1,
        "a mismatch is not retried"
    );
}

#[test]
fn not_found_moves_to_next_mirror_without_retries() {
    let data = payload(4_096);
    let server = Server::start(&[
        ("/gone", Route::Status(404)),
        ("/ok", Route::Bytes(data.clone())),
    ]);
    let dir = tempdir();
    let s = spec(
        vec![server.url("/gone"), server.url("/ok")],
        Some(Checksum::Md5(hex::encode(md5::Md5::digest(&data)))),
    );
    let got = fetch(&s, dir.path(), &opts()).expect("second mirror");
    assert_eq!(got.source, server.url("/ok"));
    assert_eq!(server.requests("/gone").len(), 1);
    assert_eq!(server.requests("/ok").len(), 1);
}

#[test]
fn transient_errors_are_retried_with_exponential_backoff() {
    let data = payload(1_000);
    let server = Server::start(&[("/busy", Route::FailFirst(2, data.clone()))]);
    let dir = tempdir();
    let s = spec(
        vec![server.url("/busy")],
        Some(Checksum::Sha256(sha256_hex(&data))),
    );
    let o = FetchOptions {
        backoff: Duration::from_millis(40),
        ..opts()
    };
    let t0 = Instant::now();
    fetch(&s, dir.path(), &o).expect("third try succeeds");
    assert!(
        t0.elapsed() >= Duration::from_millis(40 + 80),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(server.requests("/busy").len(), 3);
}

#[test]
fn all_sources_failing_says_where_to_place_the_file() {
    let server = Server::start(&[("/gone", Route::Status(404)), ("/down", Route::Status(500))]);
    let dir = tempdir();
    let sum = sha256_hex(b"whatever");
    let s = spec(
        vec![server.url("/gone"), server.url("/down")],
        Some(Checksum::Sha256(sum.clone())),
    );
    let o = FetchOptions {
        retries: 2,
        backoff: Duration::from_millis(1),
        ..opts()
    };
    let err = fetch(&s, dir.path(), &o).expect_err("nothing works");
    let FetchError::AllSourcesFailed {
        ref failures,
        ref dest,
        ..
    } = err
    else {
        panic!("unexpected error {err:?}");
    };
    assert_eq!(dest, &dir.path().join("data.tgz"));
    let attempts: Vec<u32> = failures.iter().map(|f| f.attempts).collect();
    assert_eq!(attempts, vec![1, 3]);
    assert_eq!(server.requests("/down").len(), 3);
    let msg = err.to_string();
    for needle in [
        server.url("/gone"),
        server.url("/down"),
        "HTTP 404".to_owned(),
        "HTTP 500".to_owned(),
        format!("place it at {}", dir.path().join("data.tgz").display()),
        format!("expected sha256 {sum}"),
        "--from <path>".to_owned(),
    ] {
        assert!(msg.contains(&needle), "{needle:?} missing from: {msg}");
    }
}

#[test]
fn size_mismatch_names_both_sizes() {
    let data = payload(1_234);
    let server = Server::start(&[("/f", Route::Bytes(data))]);
    let dir = tempdir();
    let mut s = spec(vec![server.url("/f")], None);
    s.size = Some(999);
    let err = fetch(&s, dir.path(), &opts()).expect_err("wrong size");
    let FetchError::AllSourcesFailed { ref failures, .. } = err else {
        panic!("unexpected error {err:?}");
    };
    assert!(matches!(
        failures[0].error,
        FetchError::SizeMismatch {
            expected: 999,
            actual: 1_234,
            ..
        }
    ));
    assert!(
        err.to_string().contains("expected 999 bytes, got 1234"),
        "{err}"
    );
    assert!(!dir.path().join("data.tgz").exists());
}

#[test]
fn file_url_is_copied_and_verified() {
    let (_src_dir, src, data) = local_source("my archive.tgz", 70_000);
    let url = format!("file://{}", src.display()).replace(' ', "%20");
    let dir = tempdir();
    let got = fetch(
        &spec(vec![url.clone()], Some(Checksum::Sha256(sha256_hex(&data)))),
        dir.path(),
        &opts(),
    )
    .expect("file url");
    assert_eq!(got.source, url);
    assert_eq!(fs::read(&got.path).expect("read"), data);
    assert!(!dir.path().join("data.tgz.part").exists());
}

#[test]
fn fetch_from_local_verifies_copies_and_rejects_wrong_files() {
    let (src_dir, src, data) = local_source("CUB_200_2011.tgz", 20_000);
    let dir = tempdir();
    let s = spec(vec![], Some(Checksum::Sha256(sha256_hex(&data))));
    let got = fetch_from_local(&s, &src, dir.path()).expect("local copy");
    assert_eq!((got.source, got.reused), (src.display().to_string(), false));
    assert_eq!(fs::read(dir.path().join("data.tgz")).expect("read"), data);

    let other = tempdir();
    let wrong = spec(vec![], Some(Checksum::Sha256(sha256_hex(b"another file"))));
    match fetch_from_local(&wrong, &src, other.path()) {
        Err(FetchError::ChecksumMismatch { url, actual, .. }) => {
            assert_eq!(
                (url, actual),
                (src.display().to_string(), sha256_hex(&data))
            );
        }
        r => panic!("unexpected result {r:?}"),
    }
    assert_eq!(fs::read_dir(other.path()).expect("list").count(), 0);
    let missing = fetch_from_local(&s, &src_dir.path().join("absent.tgz"), other.path());
    assert!(
        matches!(missing, Err(FetchError::LocalSource { .. })),
        "{missing:?}"
    );
}

#[test]
fn pin_mode_returns_the_sha256_to_store() {
    let data = payload(8_192);
    let server = Server::start(&[("/f", Route::Bytes(data.clone()))]);
    let dir = tempdir();
    let got = fetch(&spec(vec![server.url("/f")], None), dir.path(), &opts()).expect("fetch");
    assert_eq!(got.sha256, sha256_hex(&data));
    let (sha, md5) = hash_file(&got.path).expect("hash");
    assert_eq!((sha, md5), (got.sha256.clone(), got.md5.clone()));
}

#[test]
fn verified_existing_file_is_reused_without_requests() {
    let data = payload(5_000);
    let server = Server::start(&[("/f", Route::Bytes(payload(17)))]);
    let dir = tempdir();
    fs::write(dir.path().join("data.tgz"), &data).expect("write");
    for checksum in [
        Checksum::Sha256(sha256_hex(&data)),
        Checksum::Md5(hex::encode(md5::Md5::digest(&data)).to_uppercase()),
    ] {
        let got = fetch(
            &spec(vec![server.url("/f")], Some(checksum)),
            dir.path(),
            &opts(),
        )
        .expect("reuse");
        assert!(got.reused);
        assert_eq!(got.sha256, sha256_hex(&data));
    }
    assert_eq!(server.total_requests(), 0);
}

#[test]
fn bad_names_and_checksums_are_rejected_before_any_request() {
    let dir = tempdir();
    let mut s = spec(vec!["http://127.0.0.1:9/never".into()], None);
    s.name = "../escape.tgz".into();
    assert!(matches!(
        fetch(&s, dir.path(), &opts()),
        Err(FetchError::InvalidName { .. })
    ));
    let s = spec(vec![], Some(Checksum::Sha256("abc".into())));
    assert!(matches!(
        fetch(&s, dir.path(), &opts()),
        Err(FetchError::InvalidChecksum { .. })
    ));
}
