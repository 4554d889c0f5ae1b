//! grouploss: reproduce, audit and extend *The Group Loss for Deep Metric Learning*
//! (Elezi et al., ECCV 2020).
//!
//! The library holds every concept in its own module; the `gl` binary (`src/main.rs`) parses
//! arguments, resolves them into settings and calls one command function per subcommand.
//! Modules are layered, lowest first, as [`layers::LAYERS`] lists them: nothing uses a module
//! above its own layer (a test checks every source file).

pub mod bench;
#[cfg(feature = "catalog")]
pub mod catalog;
pub mod cli;
pub mod cli_doc;
pub mod clock;
pub mod commands;
pub mod config;
pub mod data;
pub mod device;
pub mod env_vars;
pub mod eval;
pub mod fsutil;
pub mod interrupt;
pub mod layers;
pub mod loss;
pub mod model;
pub mod names;
pub mod numerics;
#[cfg(feature = "catalog")]
pub mod pipeline;
pub mod progress;
pub mod project;
#[cfg(feature = "catalog")]
pub mod report;
pub mod runtime;
pub mod stages;
pub mod tempfiles;
pub mod train;
pub mod writer_lock;
