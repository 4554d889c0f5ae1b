//! The CPU kernels libtorch computes with, pinned to one portable x86-64 level.
//!
//! libtorch picks kernels by instruction set in three places, each read once, early: ATen's
//! dispatcher (`ATEN_CPU_CAPABILITY`, at the first dispatched operation), oneDNN's JIT
//! (`ONEDNN_MAX_CPU_ISA`, before its first kernel) and MKL's code branches (`MKL_CBWR`, with a
//! fixed thread count and `MKL_DYNAMIC=FALSE`); OpenMP reads `OMP_NUM_THREADS` when it is
//! loaded. So the same code gives other bits on a CPU with other instructions (AVX-512 against
//! AVX2), and a run's results hold on one CPU type only — unless the three are pinned.
//!
//! [`Kernels::Portable`] pins all three to AVX2 + FMA (MKL: `COMPATIBLE,STRICT` — the one
//! branch MKL honours on Intel and AMD CPUs alike, AVX2 silently becoming AUTO on AMD (read back
//! with `mkl_cbwr_get`: 0x2), and strict so that unaligned arrays give the same bits too) and
//! fixes the thread count. [`Kernels::Baseline`] pins them to the x86-64 baseline (ATen `default`, oneDNN
//! SSE4.1): slower, for a CPU without AVX2 and as the control of the pinning test. The pin is
//! applied by [`apply`] before libtorch is loaded: `gl` re-executes itself with the pinned
//! environment when its own differs, so whatever the outer environment says
//! (`ATEN_CPU_CAPABILITY=default`, `MKL_CBWR=AUTO`, `OMP_NUM_THREADS=7`) the kernels are the
//! pinned ones. A level the CPU lacks is refused with a message, never run into a SIGILL.

use anyhow::{bail, Result};
use std::fmt;
use std::str::FromStr;

/// Which CPU kernels a process computes with.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Kernels {
    /// Whatever libtorch picks on this CPU and whatever the environment says: results hold on
    /// this CPU type (and environment) only.
    #[default]
    Native,
    /// ATen `avx2`, oneDNN `AVX2`, MKL `COMPATIBLE,STRICT`, fixed threads: one code path on
    /// every x86-64 CPU with AVX2 and FMA, whatever its vendor, model or caches.
    Portable,
    /// ATen `default`, oneDNN `SSE41`, MKL `COMPATIBLE,STRICT`, fixed threads: the x86-64 baseline.
    Baseline,
}

/// The variables of the pin, in the order they are set.
pub const PINNED_VARS: &[&str] = &[
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "MKL_CBWR",
    "MKL_DYNAMIC",
    "MKL_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OMP_DYNAMIC",
];

impl Kernels {
    pub fn as_str(self) -> &'static str {
        match self {
            Kernels::Native => "native",
            Kernels::Portable => "portable",
            Kernels::Baseline => "baseline",
        }
    }

    pub fn is_pinned(self) -> bool {
        self != Kernels::Native
    }

    /// The pin this process runs under, read from its environment (what [`apply`] set, or an
    /// outer environment that already held a pin); [`Kernels::Native`] when none matches.
    pub fn in_effect() -> Kernels {
        let threads = std::env::var("OMP_NUM_THREADS")
            .ok()
            .and_then(|t| t.parse::<i32>().ok());
        [Kernels::Portable, Kernels::Baseline]
            .into_iter()
            .find(|k| threads.is_some_and(|t| missing_from_env(&k.env(t)).is_empty()))
            .unwrap_or(Kernels::Native)
    }

    /// The environment of the pin with `threads` threads (empty for [`Kernels::Native`]).
    pub fn env(self, threads: i32) -> Vec<(&'static str, String)> {
        let (aten, onednn) = match self {
            Kernels::Native => return Vec::new(),
            Kernels::Portable => ("avx2", "AVX2"),
            Kernels::Baseline => ("default", "SSE41"),
        };
        let t = threads.to_string();
        let values = [
            aten.to_string(),
            onednn.to_string(),
            onednn.to_string(),
            "COMPATIBLE,STRICT".to_string(),
            "FALSE".to_string(),
            t.clone(),
            t,
            "FALSE".to_string(),
        ];
        PINNED_VARS.iter().copied().zip(values).collect()
    }

    /// The instruction-set extensions this level needs (by `/proc/cpuinfo` names).
    fn needs(self) -> &'static [&'static str] {
        match self {
            Kernels::Native => &[],
            Kernels::Portable => &["avx2", "fma"],
            Kernels::Baseline => &["sse4_1"],
        }
    }

    /// Refuses a level this CPU cannot run, naming what it lacks.
    pub fn check_supported(self) -> Result<()> {
        if !self.is_pinned() {
            return Ok(());
        }
        if !cfg!(target_arch = "x86_64") {
            bail!(
                "kernels = \"{self}\" pins x86-64 instruction sets, and this is a {} machine: \
                 use kernels = \"native\" (results then hold on this CPU type only)",
                std::env::consts::ARCH
            );
        }
        let missing: Vec<&str> = self
            .needs()
            .iter()
            .copied()
            .filter(|f| !has_feature(f))
            .collect();
        if !missing.is_empty() {
            bail!(
                "kernels = \"{self}\" needs {} and this CPU ({}) lacks {}: use kernels = \
                 \"baseline\" (SSE4.1) or \"native\"",
                self.needs().join(" + "),
                super::environment::cpu_model().unwrap_or_else(|| "unknown model".into()),
                missing.join(", ")
            );
        }
        Ok(())
    }
}

#[cfg(target_arch = "x86_64")]
fn has_feature(name: &str) -> bool {
    match name {
        "avx2" => std::arch::is_x86_feature_detected!("avx2"),
        "fma" => std::arch::is_x86_feature_detected!("fma"),
        "sse4_1" => std::arch::is_x86_feature_detected!("sse4.1"),
        _ => false,
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn has_feature(_name: &str) -> bool {
    false
}

impl fmt::Display for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kernels {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "native" => Ok(Kernels::Native),
            "portable" => Ok(Kernels::Portable),
            "baseline" => Ok(Kernels::Baseline),
            other => Err(format!(
                "unknown kernels {other:?}: expected native, portable (AVX2 + FMA) or baseline"
            )),
        }
    }
}

/// The variables of `pin` that the current environment does not already hold.
pub fn missing_from_env(pin: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    pin.iter()
        .filter(|(k, v)| std::env::var(k).ok().as_deref() != Some(v.as_str()))
        .cloned()
        .collect()
}

/// Pins this process's kernels to `kernels` with `threads` threads: returns when the
/// environment already holds the pin (or `kernels` is native); otherwise re-executes the
/// running `gl` with the same arguments and the pinned environment, so that libtorch, oneDNN,
/// MKL and OpenMP read it from their first moment. Call it before anything touches libtorch.
pub fn apply(kernels: Kernels, threads: i32) -> Result<()> {
    kernels.check_supported()?;
    let missing = missing_from_env(&kernels.env(threads));
    if missing.is_empty() {
        return Ok(());
    }
    reexec(&missing)
}

#[cfg(unix)]
fn reexec(env: &[(&'static str, String)]) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    let exe = std::env::current_exe()?;
    let err = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .exec();
    bail!("re-executing {} with pinned kernels: {err}", exe.display())
}

#[cfg(not(unix))]
fn reexec(_env: &[(&'static str, String)]) -> Result<()> {
    bail!("pinned kernels need a Unix system (gl re-executes itself with the pin)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in [Kernels::Native, Kernels::Portable, Kernels::Baseline] {
            assert_eq!(k.as_str().parse::<Kernels>().unwrap(), k);
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{k}\""));
        }
        assert!("avx512".parse::<Kernels>().is_err());
    }

    #[test]
    fn the_pins_fix_every_dispatcher_and_the_thread_count() {
        let env = Kernels::Portable.env(3);
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("ATEN_CPU_CAPABILITY"), Some("avx2"));
        assert_eq!(get("ONEDNN_MAX_CPU_ISA"), Some("AVX2"));
        assert_eq!(get("MKL_CBWR"), Some("COMPATIBLE,STRICT"));
        assert_eq!(get("MKL_DYNAMIC"), Some("FALSE"));
        assert_eq!(get("OMP_NUM_THREADS"), Some("3"));
        assert_eq!(env.len(), PINNED_VARS.len());
        assert_ne!(Kernels::Portable.env(1), Kernels::Baseline.env(1));
        assert!(Kernels::Native.env(1).is_empty());
    }

    #[test]
    fn native_needs_nothing() {
        Kernels::Native.check_supported().unwrap();
        assert!(apply(Kernels::Native, 1).is_ok());
    }
}
