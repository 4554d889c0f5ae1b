//! Backbones. Today: BN-Inception (the paper's, with the official state-dict key names). The
//! registry and the other backbones arrive with the trainer.

pub mod bn_inception;
