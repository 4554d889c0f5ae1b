//! Link-time fixes for libtorch taken from a pip-installed PyTorch (`LIBTORCH_USE_PYTORCH=1`).
//!
//! torch-sys links `libtorch_cpu`, `libtorch` and `libc10` but leaves two traps (measured, see
//! `../shared/README.md`):
//! 1. the binary gets no RPATH, so it fails to start without `LD_LIBRARY_PATH`;
//! 2. the linker's default `--as-needed` drops `libtorch_cuda.so` (nothing references its symbols
//!    directly), so CUDA kernels are never registered and `tch::Cuda::is_available()` is false on
//!    a GPU.
//!
//! We add a RUNPATH to the libtorch directory torch-sys linked against and re-add
//! `libtorch_cuda.so` between `--no-as-needed … --as-needed` when that library exists.
//! `LD_LIBRARY_PATH` still takes precedence over RUNPATH, which is how a `gl` built here runs on a
//! machine whose PyTorch lives elsewhere.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_CATALOG").is_some()
        && std::env::var_os("CARGO_FEATURE_DUCKDB_BUNDLED").is_none()
    {
        duckdb_rpath();
    }
    let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB").map(PathBuf::from) else {
        println!("cargo:warning=torch-sys did not report its libtorch directory; no rpath added");
        return;
    };
    println!("cargo:rustc-env=GL_LIBTORCH_BUILD_DIR={}", lib.display());
    if let Some(v) = torch_version(&lib) {
        println!("cargo:rustc-env=GL_LIBTORCH_BUILD_VERSION={v}");
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}

/// libduckdb-sys links `-lduckdb` from `DUCKDB_LIB_DIR` but adds no RPATH: without one `gl` and
/// the tests fail with `libduckdb.so: cannot open shared object file`. `$ORIGIN` first, so a
/// `libduckdb.so` shipped beside the binary wins; then the fetched copy.
fn duckdb_rpath() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    match std::env::var("DUCKDB_LIB_DIR") {
        Ok(dir) => {
            println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN");
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
        Err(_) => println!(
            "cargo:warning=DUCKDB_LIB_DIR is not set: run `just duckdb` (scripts/fetch-libduckdb.sh) \
             and export DUCKDB_LIB_DIR, or build with --no-default-features (no catalogue)"
        ),
    }
}

/// `torch/version.py` beside `torch/lib` holds `__version__ = '2.11.0+cu130'`.
fn torch_version(lib: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(lib.parent()?.join("version.py")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .map(|v| v.trim().trim_matches(|c| c == '\'' || c == '"').to_string())
}
