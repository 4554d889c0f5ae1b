//! `gl verify-loss DIR`: audit the Group Loss against reference vectors, one line per case.

use crate::cli::{Dtype, Format, VerifyLossArgs};
use crate::loss::golden::{audit_case, read_cases};
use anyhow::{ensure, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use tch::{Device, Kind};

/// Validated settings of `gl verify-loss`.
#[derive(Debug)]
pub struct Settings {
    pub dir: PathBuf,
    pub device: Device,
    pub kind: Kind,
    pub tolerance: f64,
    pub format: Format,
}

impl Settings {
    pub fn resolve(args: VerifyLossArgs) -> Result<Self> {
        let VerifyLossArgs {
            dir,
            device,
            dtype,
            tolerance,
            format,
        } = args;
        let (kind, default_tol) = match dtype {
            Dtype::F64 => (Kind::Double, 1e-9),
            Dtype::F32 => (Kind::Float, 1e-4),
        };
        let tolerance = tolerance.unwrap_or(default_tol);
        ensure!(
            tolerance.is_finite() && tolerance > 0.0,
            "--tolerance must be a finite number > 0, got {tolerance}"
        );
        ensure!(dir.is_dir(), "{} is not a directory", dir.display());
        Ok(Settings {
            dir,
            device: device.resolve()?,
            kind,
            tolerance,
            format,
        })
    }
}

/// Prints one line (or JSON object) per case; exit code 1 if any error exceeds the tolerance.
pub fn run(s: Settings) -> Result<ExitCode> {
    let cases = read_cases(&s.dir)?;
    let mut failed = 0;
    let mut rows = Vec::new();
    for case in &cases {
        let e = audit_case(case, s.kind, s.device)?;
        let pass = e.worst() <= s.tolerance;
        failed += usize::from(!pass);
        match s.format {
            Format::Text => println!(
                "{:<12} loss {:8.1e}  W {:8.1e}  X {:8.1e}  grad_f {:8.1e}  grad_z {:8.1e}  {}",
                case.params.name,
                e.loss,
                e.w,
                e.x,
                e.grad_features,
                e.grad_logits,
                if pass { "PASS" } else { "FAIL" }
            ),
            Format::Json => rows.push(serde_json::json!({
                "case": case.params.name, "errors": e, "pass": pass,
            })),
        }
    }
    let summary = format!(
        "{} of {} cases within {:.0e} (max relative error, {:?} on {:?})",
        cases.len() - failed,
        cases.len(),
        s.tolerance,
        s.kind,
        s.device
    );
    match s.format {
        Format::Text => println!("{summary}"),
        Format::Json => println!(
            "{}",
            serde_json::json!({"cases": rows, "tolerance": s.tolerance, "failed": failed})
        ),
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
