//! `gl synth`: generate a SOP-shaped synthetic dataset and register it.

use crate::cli::SynthArgs;
use crate::data::synth::{generate, SynthSpec};
use crate::project::Project;
use anyhow::Result;
use std::process::ExitCode;
use std::time::Instant;

pub fn run(args: SynthArgs, project: Project) -> Result<ExitCode> {
    let SynthArgs {
        name,
        classes,
        per_class,
        size,
        seed,
        jitter,
    } = args;
    let spec = SynthSpec {
        name,
        classes,
        per_class,
        size,
        seed,
        jitter,
    };
    spec.validate()?;
    let t = Instant::now();
    let out = generate(&spec, &project.data_dir)?;
    println!(
        "{}: {} images ({} train) in {} ({:.1} s); registered in {} — next: gl fetch {}",
        spec.name,
        out.images,
        out.train_images,
        out.archive.display(),
        t.elapsed().as_secs_f64(),
        out.registry_entry.display(),
        spec.name
    );
    Ok(ExitCode::SUCCESS)
}
