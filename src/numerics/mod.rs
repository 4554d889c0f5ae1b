//! What decides the numbers a run makes, besides its recipe: the code's numerics versions, the
//! CPU kernels libtorch dispatches to ([`kernels`]), and the environment a result was made in
//! ([`environment`], recorded beside every run, embedding set and evaluation).
//!
//! A run id is a digest of the recipe *and* of [`TRAINING`] and the run's execution (device
//! kind, kernel pin, threads): code that changes a trained model's bits must bump
//! [`TRAINING`], which gives every run a new id (old run directories are never reused or
//! overwritten), and code that changes embeddings or metrics of the same weights must bump
//! [`EVALUATION`], which makes every embed, evaluate and ensemble task stale. The golden
//! trajectory test (`gl numerics-check`, `tests/it/numerics.rs`) fails when the numbers change
//! and these do not.

pub mod environment;
pub mod kernels;

pub use kernels::Kernels;

/// Version of the training numerics: optimiser, loss, model, initialisation, sampler, loader.
///
/// History: 1 — everything before run identity followed the code (run ids of 1 carry no
/// version in their digest). 2 — the multi-tensor RAdam as default, in-place activations, the
/// pooling order of 2026-12; from here on the run id covers this version and the execution.
/// 3 — the embedding layer and the classifier initialised as PyTorch's `nn.Linear` (weight
/// then bias, U(±1/√fan_in); tch's default drew the bias first and the weight 2.45× wider).
pub const TRAINING: u32 = 3;

/// Version of the evaluation numerics: embedding (eval transform, normalisation), exact
/// search, Recall@K, MAP@R, R-Precision, k-means and NMI, ensembles.
pub const EVALUATION: u32 = 1;

/// The training numerics version in force: [`TRAINING`], plus the test hook
/// [`crate::env_vars::TEST_NUMERICS_BUMP`] (tests show a bump's effect on the pipeline without
/// editing the code).
pub fn training() -> u32 {
    TRAINING + bump()
}

/// The evaluation numerics version in force: [`EVALUATION`], plus the test hook.
pub fn evaluation() -> u32 {
    EVALUATION + bump()
}

fn bump() -> u32 {
    std::env::var(crate::env_vars::TEST_NUMERICS_BUMP)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Which numerics version a pipeline stage's results depend on, by the stage's declared
/// `numerics` key (`pipeline/stages.toml`): `training` or `evaluation`.
pub fn version_of(kind: &str) -> Option<u32> {
    match kind {
        "training" => Some(training()),
        "evaluation" => Some(evaluation()),
        _ => None,
    }
}

/// Where and how a run computes, as far as its numbers depend on it: part of a run's identity
/// (its id and resume's check). `threads` is kept for CPU runs only, where libtorch's results
/// depend on it; `kernels` is the CPU kernel pin (a GPU run's host-side ops use it too).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Execution {
    /// `cpu` or `cuda` (never `auto`: resolved first).
    pub device: String,
    pub kernels: Kernels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<i32>,
}

impl Execution {
    /// The execution of a run on `device` (`cpu`, `cuda`, `cuda:N`) with `threads` libtorch
    /// threads: the CUDA ordinal and, on a GPU, the thread count are left out.
    pub fn new(device: &str, kernels: Kernels, threads: i32) -> Self {
        let cpu = device == "cpu";
        Execution {
            device: if cpu { "cpu" } else { "cuda" }.to_string(),
            kernels,
            threads: cpu.then_some(threads),
        }
    }
}

impl Execution {
    /// The execution of a run that never trains (a released checkpoint evaluated as it is):
    /// nothing of where it is computed changes its weights, so it is the same everywhere.
    pub fn untrained() -> Self {
        Execution {
            device: "any".into(),
            kernels: Kernels::Native,
            threads: None,
        }
    }
}

/// The identity a run id digests: the resolved recipe, the data it trains on (the dataset's
/// content digest as pinned: [`crate::data::content::planned`]), [`TRAINING`] and the
/// execution.
#[derive(serde::Serialize)]
pub struct RunIdentity<'a, C: serde::Serialize> {
    pub recipe: &'a C,
    pub data: &'a str,
    pub numerics: u32,
    pub execution: &'a Execution,
}

impl<C: serde::Serialize> RunIdentity<'_, C> {
    /// 8 hex digits of the sha256 of this identity as JSON.
    pub fn short_digest(&self) -> anyhow::Result<String> {
        use sha2::{Digest, Sha256};
        let h = hex::encode(Sha256::digest(serde_json::to_vec(self)?));
        Ok(h[..8].to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu() -> Execution {
        Execution::new("cpu", Kernels::Portable, 1)
    }

    #[test]
    fn two_numerics_versions_give_two_digests_for_one_recipe() {
        let recipe = serde_json::json!({"lr": 1e-4, "tau": 10.0});
        let e = cpu();
        let at = |numerics| {
            RunIdentity {
                recipe: &recipe,
                data: "content",
                numerics,
                execution: &e,
            }
            .short_digest()
            .unwrap()
        };
        assert_ne!(at(TRAINING), at(TRAINING + 1));
        assert_eq!(
            at(TRAINING),
            at(TRAINING),
            "a digest is a function of its inputs"
        );
    }

    #[test]
    fn the_datas_content_joins_the_identity() {
        let recipe = serde_json::json!({"lr": 1e-4});
        let e = cpu();
        let at = |data| {
            RunIdentity {
                recipe: &recipe,
                data,
                numerics: TRAINING,
                execution: &e,
            }
            .short_digest()
            .unwrap()
        };
        assert_ne!(at("c523"), at("c524"));
    }

    #[test]
    fn execution_joins_a_cpu_runs_identity() {
        let recipe = serde_json::json!({"lr": 1e-4});
        let digest = |e: &Execution| {
            RunIdentity {
                recipe: &recipe,
                data: "content",
                numerics: TRAINING,
                execution: e,
            }
            .short_digest()
            .unwrap()
        };
        let base = digest(&cpu());
        assert_ne!(base, digest(&Execution::new("cpu", Kernels::Portable, 2)));
        assert_ne!(base, digest(&Execution::new("cpu", Kernels::Native, 1)));
        assert_ne!(
            base,
            digest(&Execution::new("cuda:0", Kernels::Portable, 1))
        );
        // On a GPU neither the ordinal nor the CPU thread count is part of it.
        assert_eq!(
            digest(&Execution::new("cuda:0", Kernels::Portable, 1)),
            digest(&Execution::new("cuda:1", Kernels::Portable, 8))
        );
    }

    #[test]
    fn stage_numerics_kinds() {
        assert_eq!(version_of("training"), Some(TRAINING));
        assert_eq!(version_of("evaluation"), Some(EVALUATION));
        assert_eq!(version_of("other"), None);
    }
}
