//! Every integration test in one binary, a module per area (one link of libtorch, DuckDB and
//! polars instead of one per file). Tests that need more than this checkout are behind cargo
//! features that `just test` turns on, so leaving them out is visible in the command line,
//! never a silent pass: `test-slurm` (a real single-node Slurm, installed from Debian packages)
//! and `test-golden` (the official vectors in `../shared/golden/`).

mod common;

mod archive;
mod bench_train;
mod bn_inception;
mod catalog;
mod cli;
mod datasets;
mod datasets_mirrors;
mod efficientnet_lite;
mod evaluate;
mod export;
mod faults;
mod faults_data;
mod faults_runs;
mod faults_tmp;
mod fetch;
#[cfg(feature = "test-golden")] // needs ../shared/golden: `just test` enables it
mod group_loss_golden;
mod group_loss_properties;
mod hostile_names;
mod identity;
mod linear_init;
mod numerics;
mod pair_losses_golden;
mod pipeline;
mod prepare_loader;
mod progress;
mod proxy_losses_golden;
mod radam;
mod released;
#[cfg(feature = "test-slurm")] // installs Slurm from Debian packages: `just test` enables it
mod slurm;
mod sources;
mod tracks;
mod train;
mod transform;
mod tuning;
mod weights;
