//! Where a result was made: the code (git commit, numerics versions), the libraries (libtorch,
//! MKL, oneDNN), the CPU and the kernels actually dispatched, threads and device — written
//! beside every run, embedding set and evaluation (`environment.json`) and indexed in the
//! catalogue, so two runs of one recipe that differ can be told apart.
//!
//! The git commit is recorded, never hashed into an identity: a docs edit must not retrain
//! anything.

use super::kernels::{Kernels, PINNED_VARS};
use std::collections::BTreeMap;
use std::path::Path;

/// The paths of the project whose content makes the numbers: the code, the recipes and
/// profiles, the lock files and the embedded demo data. A commit that touches none of them
/// (docs, reports) computes the same numbers as its parent.
pub const CODE_PATHS: &[&str] = &[
    "src",
    "pipeline",
    "build.rs",
    "Cargo.toml",
    "Cargo.lock",
    "data/demo",
];

/// The environment of one process's result.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Environment {
    /// `git rev-parse HEAD` of the project, if it is a git checkout.
    pub git_commit: Option<String>,
    /// The last commit that touched [`CODE_PATHS`]: what a report names, the same for a commit
    /// that only regenerated reports or edited docs on top of it.
    #[serde(default)]
    pub code_commit: Option<String>,
    /// Whether tracked files of [`CODE_PATHS`] differed from that commit.
    pub git_dirty: Option<bool>,
    pub numerics_training: u32,
    pub numerics_evaluation: u32,
    pub gl_version: String,
    pub libtorch_version: Option<String>,
    pub mkl_version: Option<String>,
    /// MKL's conditional-numerical-reproducibility branch in force, read back from MKL
    /// (`mkl_cbwr_get`): what the pin achieved, not what was asked.
    #[serde(default)]
    pub mkl_cbwr: Option<String>,
    pub onednn_version: Option<String>,
    pub cpu_vendor: Option<String>,
    pub cpu_model: Option<String>,
    /// The CPU's instruction-set flags (`/proc/cpuinfo`), space-separated.
    pub cpu_flags: Option<String>,
    /// The kernel pin asked for.
    pub kernels: Kernels,
    /// The level ATen dispatches to (`at::get_cpu_capability()`), read from libtorch itself.
    pub aten_capability: Option<String>,
    /// The pin's variables as this process saw them (unset ones left out).
    pub kernel_env: BTreeMap<String, String>,
    pub threads: i32,
    /// `cpu`, `cuda:0`, ….
    pub device: String,
}

impl Environment {
    /// This process's environment, for a result computed on `device` of the project at `root`.
    pub fn current(root: &Path, kernels: Kernels, device: &str) -> Self {
        let cpu = cpuinfo();
        let field = |k: &str| cpu.get(k).cloned();
        Environment {
            git_commit: git(root, &["rev-parse", "HEAD"]),
            code_commit: git(
                root,
                &[&["log", "-1", "--format=%H", "--"], CODE_PATHS].concat(),
            )
            .filter(|c| !c.is_empty()),
            git_dirty: git(
                root,
                &[
                    &["status", "--porcelain", "--untracked-files=no", "--"],
                    CODE_PATHS,
                ]
                .concat(),
            )
            .map(|s| !s.is_empty()),
            numerics_training: super::training(),
            numerics_evaluation: super::evaluation(),
            gl_version: env!("CARGO_PKG_VERSION").to_string(),
            libtorch_version: crate::runtime::inspect().libtorch_version,
            mkl_version: libs::mkl_version(),
            mkl_cbwr: libs::mkl_cbwr(),
            onednn_version: libs::cpp_string("_ZN2at18get_mkldnn_versionB5cxx11Ev"),
            cpu_vendor: field("vendor_id"),
            cpu_model: field("model name"),
            cpu_flags: field("flags"),
            kernels,
            aten_capability: libs::cpp_string("_ZN2at18get_cpu_capabilityB5cxx11Ev"),
            kernel_env: PINNED_VARS
                .iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
                .collect(),
            threads: tch::get_num_threads(),
            device: device.to_string(),
        }
    }

    /// One line for a report footer or `gl status`: CPU, kernels, threads, device, libtorch.
    /// Under a kernel pin the CPU is named by the level, not the model (which the catalogue
    /// keeps): the line is the same on every CPU that has the level.
    pub fn summary(&self) -> String {
        let cpu = match self.kernels {
            Kernels::Native => self.cpu_model.clone().unwrap_or("unknown CPU".into()),
            Kernels::Portable => "x86-64 with AVX2 + FMA (model: runs.cpu_model)".into(),
            Kernels::Baseline => "x86-64 with SSE4.1 (model: runs.cpu_model)".into(),
        };
        format!(
            "{} · kernels {} (ATen {}, MKL {}) · {} thread(s) · {} · libtorch {} · numerics {}/{}",
            cpu,
            self.kernels,
            self.aten_capability.as_deref().unwrap_or("?"),
            self.mkl_cbwr.as_deref().unwrap_or("?"),
            self.threads,
            self.device,
            self.libtorch_version.as_deref().unwrap_or("?"),
            self.numerics_training,
            self.numerics_evaluation,
        )
    }

    /// What of the environment can change a result's bits, as (field, value) pairs. Under a
    /// kernel pin the CPU model and ATen's level are left out: the pin makes them not matter.
    pub fn numerics_key(&self) -> Vec<(&'static str, String)> {
        let mut k = vec![
            (
                "numerics",
                format!("{}/{}", self.numerics_training, self.numerics_evaluation),
            ),
            (
                "libtorch",
                self.libtorch_version.clone().unwrap_or_default(),
            ),
            ("mkl", self.mkl_version.clone().unwrap_or_default()),
            ("mkl_cbwr", self.mkl_cbwr.clone().unwrap_or_default()),
            ("onednn", self.onednn_version.clone().unwrap_or_default()),
            ("kernels", self.kernels.to_string()),
            ("threads", self.threads.to_string()),
            ("device", self.device.clone()),
        ];
        if !self.kernels.is_pinned() {
            k.push(("cpu", self.cpu_model.clone().unwrap_or_default()));
            k.push(("aten", self.aten_capability.clone().unwrap_or_default()));
        }
        k
    }

    /// The code's commit, for a footer: `commit <12 digits>`, `(dirty)` appended when the code
    /// differed from it, or `no git checkout`.
    pub fn commit_label(&self) -> String {
        let short = |c: &String| c[..c.len().min(12)].to_string();
        match (
            self.code_commit.as_ref().or(self.git_commit.as_ref()),
            self.git_dirty,
        ) {
            (Some(c), Some(true)) => format!("commit {} (dirty)", short(c)),
            (Some(c), _) => format!("commit {}", short(c)),
            (None, _) => "no git checkout".to_string(),
        }
    }

    /// The fields of [`Environment::numerics_key`] in which `other` differs, as `field a → b`.
    pub fn differences(&self, other: &Environment) -> Vec<String> {
        let theirs: BTreeMap<_, _> = other.numerics_key().into_iter().collect();
        self.numerics_key()
            .into_iter()
            .filter(|(k, v)| theirs.get(k) != Some(v))
            .map(|(k, v)| {
                let t = theirs.get(k).cloned().unwrap_or_default();
                format!("{k} {v} → {t}")
            })
            .collect()
    }
}

/// Results that share one environment, as far as their numbers depend on it.
#[derive(Debug, Clone)]
pub struct EnvGroup {
    /// The first one's environment (the others differ from it at most in what does not change
    /// numbers: the commit, or the CPU model under a kernel pin).
    pub env: Environment,
    /// Run ids (or other names) of the results.
    pub runs: Vec<String>,
    /// Their distinct code commits ([`Environment::commit_label`]).
    pub commits: std::collections::BTreeSet<String>,
}

/// Groups named results by environment ([`Environment::differences`] empty), in first-seen
/// order.
pub fn group(items: impl IntoIterator<Item = (String, Environment)>) -> Vec<EnvGroup> {
    let mut out: Vec<EnvGroup> = Vec::new();
    for (name, env) in items {
        let commit = env.commit_label();
        let i = match out.iter().position(|g| g.env.differences(&env).is_empty()) {
            Some(i) => i,
            None => {
                out.push(EnvGroup {
                    env,
                    runs: Vec::new(),
                    commits: Default::default(),
                });
                out.len() - 1
            }
        };
        out[i].runs.push(name);
        out[i].commits.insert(commit);
    }
    out
}

/// `git -C root ARGS` trimmed, `None` when git fails (no checkout, no git).
fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The first processor's fields of `/proc/cpuinfo`.
fn cpuinfo() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    text.split("\n\n")
        .next()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The CPU's model name, e.g. `AMD EPYC` or `Intel(R) Xeon(R) Platinum 8488C`.
pub fn cpu_model() -> Option<String> {
    cpuinfo().get("model name").cloned()
}

/// Versions read from the loaded libtorch through its exported symbols.
mod libs {
    use std::ffi::{c_char, c_int, c_void, CStr};

    fn symbol(name: &str) -> Option<*mut c_void> {
        let c = std::ffi::CString::new(name).ok()?;
        // SAFETY: dlsym with RTLD_DEFAULT only looks the name up in the loaded objects.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c.as_ptr()) };
        (!p.is_null()).then_some(p)
    }

    /// `MKL_Get_Version_String` (MKL's C API, linked into libtorch_cpu).
    pub fn mkl_version() -> Option<String> {
        let f = symbol("MKL_Get_Version_String")?;
        let mut buf = [0 as c_char; 256];
        // SAFETY: the documented signature `void MKL_Get_Version_String(char*, int)`; the
        // buffer outlives the call and its length is passed.
        unsafe {
            let f: extern "C" fn(*mut c_char, c_int) = std::mem::transmute(f);
            f(buf.as_mut_ptr(), buf.len() as c_int - 1);
            let s = CStr::from_ptr(buf.as_ptr()).to_string_lossy();
            Some(s.trim().to_string()).filter(|s| !s.is_empty())
        }
    }

    /// MKL's CNR setting (`mkl_cbwr_get(MKL_CBWR_ALL)`), by name.
    pub fn mkl_cbwr() -> Option<String> {
        let f = symbol("mkl_serv_cbwr_get")?;
        // SAFETY: `int mkl_cbwr_get(int option)`; -1 is MKL_CBWR_ALL.
        let v = unsafe {
            let f: extern "C" fn(c_int) -> c_int = std::mem::transmute(f);
            f(-1)
        };
        let branch = match v & 0xffff {
            1 => "OFF".to_string(),
            2 => "AUTO".to_string(),
            3 => "COMPATIBLE".to_string(),
            b => format!("branch {b}"),
        };
        Some(match v & 0x10000 {
            0 => branch,
            _ => format!("{branch},STRICT"),
        })
    }

    /// libstdc++'s `std::string` (the C++11 ABI): pointer, length, 16-byte local buffer.
    #[repr(C)]
    struct StdString {
        ptr: *const u8,
        len: usize,
        local: [u8; 16],
    }

    /// Calls a libtorch function `std::string f()` by its mangled name. On x86-64 Linux a
    /// `std::string` is returned through a hidden pointer to caller-provided memory, which is
    /// the first argument of a C function; the (small, once per process) string is leaked
    /// rather than freed with another allocator than the one that made it.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    pub fn cpp_string(mangled: &str) -> Option<String> {
        let f = symbol(mangled)?;
        let mut out = std::mem::MaybeUninit::<StdString>::uninit();
        // SAFETY: the symbol is a free function `std::string()` of the C++11 ABI; it
        // constructs the string in `out`, whose bytes we only read.
        unsafe {
            let f: extern "C" fn(*mut StdString) -> *mut StdString = std::mem::transmute(f);
            f(out.as_mut_ptr());
            let s = out.assume_init_ref();
            let bytes = std::slice::from_raw_parts(s.ptr, s.len);
            Some(String::from_utf8_lossy(bytes).trim().to_string())
        }
    }

    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    pub fn cpp_string(_mangled: &str) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loaded_libtorch_names_its_libraries_and_level() {
        let e = Environment::current(Path::new("."), Kernels::Native, "cpu");
        assert!(e
            .mkl_version
            .as_deref()
            .is_some_and(|v| v.contains("Math Kernel")));
        let onednn = e.onednn_version.as_deref().unwrap_or_default();
        assert!(
            onednn.contains("oneDNN") || onednn.contains("v3"),
            "{onednn:?}"
        );
        let level = e.aten_capability.as_deref().unwrap_or_default();
        assert!(
            ["DEFAULT", "AVX2", "AVX512", "ZVECTOR", "VSX", "SVE256"].contains(&level)
                || !level.is_empty(),
            "{level:?}"
        );
        assert!(e.threads >= 1);
        assert!(e.mkl_cbwr.is_some(), "MKL's CNR branch is read back");
    }

    #[test]
    fn pinned_environments_ignore_the_cpu_model_native_ones_do_not() {
        let mut a = Environment::current(Path::new("."), Kernels::Portable, "cpu");
        let mut b = a.clone();
        b.cpu_model = Some("another CPU".into());
        assert!(a.differences(&b).is_empty());
        a.kernels = Kernels::Native;
        b.kernels = Kernels::Native;
        assert_eq!(a.differences(&b).len(), 1, "{:?}", a.differences(&b));
        b.threads += 1;
        assert!(a.differences(&b).iter().any(|d| d.starts_with("threads")));
    }
}
