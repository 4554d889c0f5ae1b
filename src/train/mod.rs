//! Training: the resolved configuration (pipeline/train.toml), class-disjoint splits, initial
//! weights, one epoch, the whole run with checkpoints and model selection, the run directory
//! that is the stage's contract, RAdam (as `torch.optim.RAdam`), the lr schedule, and released
//! checkpoints as runs that never train.

pub mod config;
pub mod epoch;
pub mod init;
pub mod radam;
pub mod released;
pub mod run_dir;
pub mod schedule;
pub mod split;
pub mod trainer;
