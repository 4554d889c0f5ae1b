//! The libtorch this process actually runs on, read from the process's own mapped libraries
//! (`/proc/self/maps`), so `gl env` reports the truth even when `LD_LIBRARY_PATH` redirected it.

use std::path::{Path, PathBuf};

/// Facts about the running libtorch, for `gl env` and bug reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Runtime {
    pub gl_version: &'static str,
    /// Version read from `torch/version.py` beside the loaded library, if there is one.
    pub libtorch_version: Option<String>,
    /// Directory the loaded `libtorch_cpu.so` came from.
    pub libtorch_dir: Option<PathBuf>,
    /// Directory and version `gl` was linked against (build time).
    pub built_against_dir: Option<&'static str>,
    pub built_against_version: Option<&'static str>,
    /// Whether `libtorch_cuda.so` is mapped into this process.
    pub libtorch_cuda_loaded: bool,
    pub cuda_devices: i64,
    pub cudnn: bool,
    pub threads: i32,
}

/// Inspects the running process.
pub fn inspect() -> Runtime {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let libs: Vec<&Path> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(Path::new)
        .collect();
    let named = |name: &str| {
        libs.iter()
            .find(|p| p.file_name().is_some_and(|f| f == name))
    };
    let libtorch_dir = named("libtorch_cpu.so")
        .and_then(|p| p.parent())
        .map(Path::to_path_buf);
    Runtime {
        gl_version: env!("CARGO_PKG_VERSION"),
        libtorch_version: libtorch_dir.as_deref().and_then(torch_version),
        libtorch_dir,
        built_against_dir: option_env!("GL_LIBTORCH_BUILD_DIR"),
        built_against_version: option_env!("GL_LIBTORCH_BUILD_VERSION"),
        libtorch_cuda_loaded: named("libtorch_cuda.so").is_some(),
        cuda_devices: tch::Cuda::device_count(),
        cudnn: tch::Cuda::cudnn_is_available(),
        threads: tch::get_num_threads(),
    }
}

/// `__version__` from `<torch>/version.py`, given `<torch>/lib`.
fn torch_version(lib: &Path) -> Option<String> {
    let text = std::fs::read_to_string(lib.parent()?.join("version.py")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
}

/// Allocations at or above this size bypass glibc's heap and get fresh `mmap`ed pages: 1 GiB,
/// above any activation of BN-Inception at the paper's batch (the largest, conv1's output at
/// 54 × 64 × 114 × 114 f32, is 180 MB).
pub const MMAP_THRESHOLD: usize = 1 << 30;
/// Free memory at the top of the heap above this is returned to the OS.
pub const TRIM_THRESHOLD: usize = 1 << 30;

/// Keeps libtorch's large, short-lived CPU tensors in glibc's heap.
///
/// By default glibc serves blocks above a (dynamic, at most 32 MiB) threshold with `mmap` and
/// returns them with `munmap`, so a training step that allocates the same large tensors every
/// iteration pays a page fault for every 4 KiB of them, every step. Measured: the SOP-shape
/// loss step 19.7 ms → 13.1 ms on 2 cores (thresholds 64/128 MiB); a BN-Inception training step
/// at the paper's CUB batch took 770,000 minor faults (3 GB of fresh pages, 1.3–1.5 s of kernel
/// time) per step with a 64 MiB threshold and 2–44,000 (0.06–0.7 s) with 1 GiB. The cost: up
/// to [`TRIM_THRESHOLD`] of freed memory stays mapped for reuse. `gl bench` hands the same
/// policy to its Python reference (see [`allocator_env`]) so comparisons stay like for like:
/// no SPEEDUP comes from this.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called once, at start-up.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int);
    }
}

/// The environment that gives a child process (e.g. a Python reference) the allocator policy
/// of [`tune_allocator`].
pub fn allocator_env() -> [(&'static str, String); 2] {
    [
        ("MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD.to_string()),
        ("MALLOC_TRIM_THRESHOLD_", TRIM_THRESHOLD.to_string()),
    ]
}

/// The interpreter of the venv that provided libtorch at build time
/// (`<venv>/lib/python3.X/site-packages/torch/lib` → `<venv>/bin/python`), else `python3`.
pub fn default_python() -> PathBuf {
    option_env!("GL_LIBTORCH_BUILD_DIR")
        .and_then(|lib| {
            Path::new(lib)
                .ancestors()
                .nth(5)
                .map(|v| v.join("bin/python"))
        })
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("python3"))
}
