//! Training: the optimiser (RAdam, as `torch.optim.RAdam`) and the learning-rate schedule. The
//! training loop and checkpoints arrive with the trainer.

pub mod radam;
pub mod schedule;
