//! Training with libtorch's errors as errors: tch's tensor methods panic when libtorch fails
//! (out of memory above all), which would end `gl train` with a backtrace, exit code 101, no
//! `failed.json` and a run that reads `interrupted`. [`catching_panics`] turns a panic of the
//! training thread into an error — out of memory named as such, with the keys that size it —
//! so the run records why it failed like any other failure.

use crate::train::config::TrainConfig;
use anyhow::{anyhow, Result};
use std::panic::{catch_unwind, AssertUnwindSafe};
use tch::Device;

/// Runs `f` on this thread; a panic in it becomes an error (printed by nobody: the panic hook
/// stays quiet for this thread while `f` runs, and speaks as before for every other thread).
pub fn catching_panics<T>(
    cfg: &TrainConfig,
    device: Device,
    f: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let me = std::thread::current().id();
    let previous = std::sync::Arc::new(std::panic::take_hook());
    let chained = std::sync::Arc::clone(&previous);
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() != me {
            chained(info);
        }
    }));
    let out = catch_unwind(AssertUnwindSafe(f));
    // Our hook holds the only other reference once it is replaced.
    let _ = std::panic::take_hook();
    match std::sync::Arc::try_unwrap(previous) {
        Ok(hook) => std::panic::set_hook(hook),
        Err(_) => tracing::warn!("the panic hook could not be restored"),
    }
    out.unwrap_or_else(|payload| Err(panic_error(cfg, device, &payload_text(&*payload))))
}

/// The text a panic carried (`panic!` with a literal or a formatted message).
fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// The error for a panic with `text`: out of memory, naming what sizes the memory a step takes
/// and the device; anything else as an internal error with libtorch's message.
pub fn panic_error(cfg: &TrainConfig, device: Device, text: &str) -> anyhow::Error {
    // libtorch appends the C++ stack after its message (after a newline, which tch's error
    // shows escaped): keep the message, without tch's `Torch("` wrapping.
    let msg = ["\\n", "\n", "Exception raised from"]
        .iter()
        .fold(text, |t, cut| t.split(cut).next().unwrap_or(t));
    let msg = msg.rsplit("Torch(\"").next().unwrap_or(msg).trim();
    let lower = msg.to_lowercase();
    let oom = [
        "out of memory",
        "can't allocate memory",
        "cannot allocate memory",
    ]
    .iter()
    .any(|p| lower.contains(p));
    if oom {
        anyhow!(
            "out of memory on {}: the network or a training step did not fit (input_size = {}, \
             classes_per_batch = {}, samples_per_class = {}, embedding_dim = {}): lower them \
             with `--set KEY=VALUE` or use another --device ({msg})",
            crate::device::name(device),
            cfg.input_size,
            cfg.classes_per_batch,
            cfg.samples_per_class,
            cfg.embedding_dim,
        )
    } else {
        anyhow!("training stopped by an internal error of libtorch or gl: {msg}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The repository's `demo` recipe.
    fn demo() -> crate::train::config::CheckedConfig {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let project = crate::project::Project::resolve(Some(root.into()), None).unwrap();
        TrainConfig::resolve(&project, "demo", "demo", &[]).unwrap()
    }

    #[test]
    fn an_out_of_memory_message_names_the_keys_that_size_memory() {
        let cfg = demo();
        let e = panic_error(
            &cfg,
            Device::Cpu,
            "called `Result::unwrap()` on an `Err` value: Torch(\"[enforce fail at alloc_cpu.cpp:117] \
             data. DefaultCPUAllocator: not enough memory: you tried to allocate 1 bytes. \
             Error code 12 (Cannot allocate memory)\\nframe #0: c10::ThrowEnforceNotMet\")",
        );
        let e = format!("{e:#}");
        for k in [
            "out of memory",
            "input_size",
            "classes_per_batch",
            "samples_per_class",
            "cpu",
        ] {
            assert!(e.contains(k), "{k}: {e}");
        }
        assert!(!e.contains("frame #0") && !e.contains("Torch("), "{e}");
    }

    #[test]
    fn a_panic_in_the_closure_is_an_error_and_the_hook_is_restored() {
        let cfg = demo();
        let r: Result<()> = catching_panics(&cfg, Device::Cpu, || panic!("boom"));
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.contains("internal error") && e.contains("boom"), "{e}");
        assert_eq!(catching_panics(&cfg, Device::Cpu, || Ok(7)).unwrap(), 7);
    }
}
