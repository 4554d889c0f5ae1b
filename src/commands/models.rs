//! `gl models`: the backbone registry.

use crate::cli::ModelsArgs;
use crate::model::registry;
use anyhow::Result;
use std::process::ExitCode;

pub fn run(args: ModelsArgs) -> Result<ExitCode> {
    if args.json {
        let rows: Vec<serde_json::Value> = registry()
            .iter()
            .map(|s| {
                serde_json::json!({
                    "name": s.name,
                    "description": s.description,
                    "feature_dim": s.feature_dim,
                    "input_size": s.input_size,
                    "resize": s.resize,
                    "normalize": format!("{:?}", s.normalize),
                    "imagenet_weights": s.imagenet_weights,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:>5} {:>6}  {:<28} description",
        "name", "dim", "input", "imagenet weights"
    );
    for s in registry() {
        println!(
            "{:<20} {:>5} {:>6}  {:<28} {}",
            s.name,
            s.feature_dim,
            s.input_size,
            s.imagenet_weights.unwrap_or("-"),
            s.description
        );
    }
    Ok(ExitCode::SUCCESS)
}
