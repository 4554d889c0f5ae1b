//! Where each result was made, in the catalogue: the environment columns of `runs` (the ones a
//! reader filters by: numerics version, kernels, threads, commit, library versions, CPU) and the
//! whole [`Environment`] as JSON on `runs`, `embeddings` and `evaluations`; and the query that
//! tells which environments a set of runs comes from (`gl status`, the report's footer).

use crate::catalog::Catalog;
use crate::numerics::environment::{self, EnvGroup, Environment};
use anyhow::Result;
use duckdb::types::Value;

/// Schema version 9: the environment columns. Rows of older catalogues keep NULL there (their
/// run directories hold no `environment.json`) until they are indexed again.
pub const MIGRATION_SQL: &str = r#"
ALTER TABLE runs ADD COLUMN numerics INTEGER;
ALTER TABLE runs ADD COLUMN kernels VARCHAR;
ALTER TABLE runs ADD COLUMN threads INTEGER;
ALTER TABLE runs ADD COLUMN git_commit VARCHAR;
ALTER TABLE runs ADD COLUMN git_dirty BOOLEAN;
ALTER TABLE runs ADD COLUMN libtorch_version VARCHAR;
ALTER TABLE runs ADD COLUMN mkl_version VARCHAR;
ALTER TABLE runs ADD COLUMN onednn_version VARCHAR;
ALTER TABLE runs ADD COLUMN cpu_vendor VARCHAR;
ALTER TABLE runs ADD COLUMN cpu_model VARCHAR;
ALTER TABLE runs ADD COLUMN cpu_flags VARCHAR;
ALTER TABLE runs ADD COLUMN aten_capability VARCHAR;
ALTER TABLE runs ADD COLUMN environment JSON;
ALTER TABLE embeddings ADD COLUMN numerics INTEGER;
ALTER TABLE embeddings ADD COLUMN environment JSON;
ALTER TABLE evaluations ADD COLUMN environment JSON;
"#;

/// The values of the `runs` environment columns, in the migration's order (the last one JSON).
pub fn run_columns(numerics: u32, env: Option<&Environment>) -> Result<Vec<Value>> {
    let text = |v: Option<&String>| v.map_or(Value::Null, |s| Value::Text(s.clone()));
    let Some(e) = env else {
        let mut v = vec![Value::Int(numerics as i32)];
        v.extend(std::iter::repeat_n(Value::Null, 12));
        return Ok(v);
    };
    Ok(vec![
        Value::Int(numerics as i32),
        Value::Text(e.kernels.to_string()),
        Value::Int(e.threads),
        text(e.git_commit.as_ref()),
        e.git_dirty.map_or(Value::Null, Value::Boolean),
        text(e.libtorch_version.as_ref()),
        text(e.mkl_version.as_ref()),
        text(e.onednn_version.as_ref()),
        text(e.cpu_vendor.as_ref()),
        text(e.cpu_model.as_ref()),
        text(e.cpu_flags.as_ref()),
        text(e.aten_capability.as_ref()),
        Value::Text(serde_json::to_string(e)?),
    ])
}

/// An environment as JSON text for a `JSON` column (NULL when unknown).
pub fn json(env: Option<&Environment>) -> Result<Option<String>> {
    env.map(serde_json::to_string)
        .transpose()
        .map_err(Into::into)
}

/// The distinct environments of `runs` (by run id): what a report's footer shows, a report
/// mixing several being flagged. Runs not indexed, or indexed without an environment, are
/// left out.
pub fn of_runs(cat: &Catalog, runs: &[String]) -> Result<Vec<EnvGroup>> {
    let mut found = Vec::new();
    let mut stmt = cat.connection().prepare(
        "SELECT environment::VARCHAR FROM runs WHERE run_id = ? AND environment IS NOT NULL",
    )?;
    for run in runs {
        let rows: Vec<String> = stmt
            .query_map([run], |r| r.get::<_, String>(0))?
            .collect::<Result<_, _>>()?;
        for text in rows {
            found.push((run.clone(), serde_json::from_str::<Environment>(&text)?));
        }
    }
    Ok(environment::group(found))
}
