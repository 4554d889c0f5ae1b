//! What the integration tests share: a deterministic payload and temp dirs (fetch, archive),
//! the loopback HTTP server, running the `gl` binary (also in the background, to be stopped),
//! two throw-away projects (the demo set; the tiny synthetic pipeline), and reading golden
//! cases.
#![allow(dead_code)] // each helper serves some of the test modules

pub mod demo_project;
pub mod fixture_archives;
pub mod gl_cli;
pub mod golden_cases;
pub mod http_server;
pub mod processes;
pub mod reference_npz;
pub mod tiny_pipeline;

/// A tiny valid PNG (2×2 grayscale) whose pixels depend on `seed`: the images of the dataset
/// fixtures in their real layouts.
pub fn png(seed: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, 2, 2);
    enc.set_color(png::ColorType::Grayscale);
    let mut w = enc.write_header().unwrap();
    w.write_image_data(&[seed, seed.wrapping_add(1), seed.wrapping_mul(3), 7])
        .unwrap();
    w.finish().unwrap();
    out
}

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

/// The global CPU generator, for a test that seeds it (`tch::manual_seed`) and compares what it
/// then draws with PyTorch's draws: the tests of this binary run on parallel threads, and a
/// draw or a reseed on another thread in between would shift the stream.
pub fn global_rng() -> std::sync::MutexGuard<'static, ()> {
    static M: std::sync::Mutex<()> = std::sync::Mutex::new(());
    M.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}
