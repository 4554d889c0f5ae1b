//! Fixtures shared by the `fetch` and `archive` integration tests. The loopback HTTP server,
//! which only the fetch tests use, is in `http_server.rs` beside this file.

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
