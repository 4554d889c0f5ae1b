//! `gl synth`: generate a SOP-shaped synthetic dataset and register it — refused when the name
//! holds a set with other parameters, unless `--replace`.

use crate::cli::SynthArgs;
use crate::data::lock::Lock;
use crate::data::synth::{generate, other_parameters, registry_path, SynthSpec};
use crate::project::Project;
use anyhow::{bail, Context, Result};
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
        replace,
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
    if let Some(old) = other_parameters(&spec, &project.data_dir)? {
        if !replace {
            bail!(
                "the synthetic set {name} exists with other parameters ({old}, in {}): its \
                 fetched archive is pinned by sha256, so a different one under the same name \
                 would not fetch; pick another --name, or pass --replace to replace it",
                registry_path(&spec, &project.data_dir).display(),
                name = spec.name
            );
        }
        // The old archive's pin and its downloaded copy go: `gl fetch` then takes the new one.
        let file = format!("{}.tar", spec.name);
        let mut lock = Lock::load(&project.root)?;
        lock.unpin(spec.name.as_str(), &file)?;
        // The new set's images differ: its content is pinned anew on the next fetch.
        lock.unpin_content(spec.name.as_str())?;
        let copy = project.downloads(&spec.name).join(&file);
        match std::fs::remove_file(&copy) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", copy.display()))
            }
            _ => {}
        }
        eprintln!(
            "{}: replacing the set of other parameters ({old})",
            spec.name
        );
    }
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
