//! Training's library: the resolved configuration (pipeline/train.toml), class-disjoint splits,
//! initial weights, the objective and its loss, one epoch, the run directory that is the stage's contract, RAdam (as
//! `torch.optim.RAdam`) and the lr schedule. The training stage itself, the whole run with its
//! checkpoints and model selection, is [`crate::stages::train`]; released checkpoints as runs
//! that never train are [`crate::stages::released`].

pub mod checkpoint;
pub mod choices;
pub mod config;
pub mod criterion;
pub mod epoch;
pub mod init;
pub mod objective;
pub mod radam;
pub mod run_dir;
pub mod schedule;
pub mod selection;
pub mod split;
pub mod tensorboard;
pub mod trajectory;
