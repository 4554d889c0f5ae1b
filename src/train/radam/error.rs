//! What can go wrong building, stepping or restoring a [`RAdam`](super::RAdam).

/// Errors from building, stepping or restoring a [`RAdam`](super::RAdam).
#[derive(Debug, thiserror::Error)]
pub enum RAdamError {
    /// γ must be finite and ≥ 0.
    #[error("learning rate γ must be finite and >= 0, got {0}")]
    InvalidLr(f64),
    /// β1 must lie in [0, 1).
    #[error("β1 must be in [0, 1), got {0}")]
    InvalidBeta1(f64),
    /// β2 must lie in [0, 1).
    #[error("β2 must be in [0, 1), got {0}")]
    InvalidBeta2(f64),
    /// ε must be finite and ≥ 0.
    #[error("ε must be finite and >= 0, got {0}")]
    InvalidEps(f64),
    /// λ must be finite and ≥ 0.
    #[error("weight decay λ must be finite and >= 0, got {0}")]
    InvalidWeightDecay(f64),
    /// A parameter group index that does not exist.
    #[error("parameter group {0} does not exist ({1} groups)")]
    NoSuchGroup(usize, usize),
    /// The same tensor twice among the parameters (as `torch.optim`, which refuses it too): it
    /// would be updated twice per step, and with flat buffers it could live in only one of them.
    #[error("parameter {index} of group {group} is already optimised (same storage as another parameter)")]
    DuplicateParam {
        /// Group of the second occurrence.
        group: usize,
        /// Its position in that group.
        index: usize,
    },
    /// A state name that is not `g<G>.p<I>.{exp_avg,exp_avg_sq,step}` or `g<G>.lr` for an existing
    /// group and parameter.
    #[error("unknown optimiser state entry {0:?}")]
    UnknownStateKey(String),
    /// A parameter's state is only partly present.
    #[error("optimiser state for {0} is incomplete: missing {1}")]
    IncompleteState(String, &'static str),
    /// A state tensor whose shape differs from its parameter's.
    #[error("optimiser state {name} has shape {got:?}, its parameter has {expected:?}")]
    ShapeMismatch {
        /// Name of the state entry.
        name: String,
        /// Shape found in the state.
        got: Vec<i64>,
        /// Shape of the parameter.
        expected: Vec<i64>,
    },
    /// A `step` or `lr` entry that is not a valid scalar.
    #[error("optimiser state {0} is not a valid scalar")]
    InvalidScalar(String),
    /// An error from libtorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}
