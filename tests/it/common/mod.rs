//! What the integration tests share: a deterministic payload and temp dirs (fetch, archive),
//! the loopback HTTP server, running the `gl` binary, two throw-away projects (the demo set;
//! the tiny synthetic pipeline), and reading golden cases.
#![allow(dead_code)] // each helper serves some of the test modules

pub mod demo_project;
pub mod gl_cli;
pub mod golden_cases;
pub mod http_server;
pub mod reference_npz;
pub mod tiny_pipeline;

/// Deterministic, non-repeating-looking test payload.
pub fn payload(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}
