//! `gl env`: what a user pastes into a bug report.

use crate::cli::EnvArgs;
use crate::runtime::inspect;
use anyhow::Result;
use std::process::ExitCode;

pub fn run(args: EnvArgs) -> Result<ExitCode> {
    let EnvArgs { json } = args;
    let r = inspect();
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    let show = |o: Option<&str>| o.unwrap_or("unknown").to_string();
    println!("gl: {}", r.gl_version);
    println!("libtorch: {}", show(r.libtorch_version.as_deref()));
    println!(
        "libtorch_dir: {}",
        r.libtorch_dir
            .as_ref()
            .map_or("unknown".into(), |p| p.display().to_string())
    );
    println!(
        "built_against: {} ({})",
        show(r.built_against_version),
        show(r.built_against_dir)
    );
    println!(
        "libtorch_cuda: {}",
        if r.libtorch_cuda_loaded {
            "loaded"
        } else {
            "absent"
        }
    );
    println!("cuda_devices: {}", r.cuda_devices);
    println!("cudnn: {}", r.cudnn);
    println!("threads: {}", r.threads);
    Ok(ExitCode::SUCCESS)
}
