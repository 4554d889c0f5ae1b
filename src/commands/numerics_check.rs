//! `gl numerics-check`: the golden trajectory ([`crate::train::trajectory`]) against its
//! committed fixture, or `--write` to refresh the fixture. `gl` runs it under the portable
//! kernel pin with one thread whatever the flags say, so the fixture means the same on every
//! x86-64 CPU with AVX2.

use crate::cli::NumericsCheckArgs;
use crate::train::radam::Layout;
use crate::train::trajectory::{self, TrajectoryRecord};
use anyhow::{bail, Context, Result};
use std::process::ExitCode;

pub fn run(args: NumericsCheckArgs) -> Result<ExitCode> {
    let layout = match args.per_tensor_radam {
        true => Layout::PerTensor,
        false => Layout::MultiTensor,
    };
    let found = trajectory::run(layout)?;
    if args.write {
        crate::fsutil::write_atomic(
            &args.fixture,
            format!("{}\n", serde_json::to_string_pretty(&found)?).as_bytes(),
        )?;
        println!("wrote {} (digest {})", args.fixture.display(), found.digest);
        return Ok(ExitCode::SUCCESS);
    }
    let bytes = std::fs::read(&args.fixture)
        .with_context(|| format!("reading the fixture {}", args.fixture.display()))?;
    let fixture: TrajectoryRecord = serde_json::from_slice(&bytes)
        .with_context(|| format!("parsing {}", args.fixture.display()))?;
    match trajectory::check(&found, &fixture) {
        Ok(()) => {
            println!(
                "numerics {}/{}: the golden trajectory matches {} (digest {})",
                found.numerics_training,
                found.numerics_evaluation,
                args.fixture.display(),
                found.digest
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => bail!("{}: {why}", args.fixture.display()),
    }
}
