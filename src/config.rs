//! Pieces every figment-based configuration shares: `--set key=value` overrides.

use anyhow::{Context, Result};

/// Parses `key=value`: the value as TOML (`5`, `1e-4`, `[1, 2]`, `"x"`, `true`), else taken as a
/// plain string; the key may be a dotted path (`train.recipe`).
pub fn parse_override(o: &str) -> Result<(String, toml::Value)> {
    let (key, value) = o
        .split_once('=')
        .with_context(|| format!("override {o:?} is not key=value"))?;
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    Ok((key.trim().to_string(), value))
}

/// A figment error with its key path and source on one line: the file it came from, or
/// "from --set" for a command-line override (never the source location of the code that merged
/// it).
pub fn describe(e: &figment::Error) -> String {
    let mut parts = Vec::new();
    for err in e.clone() {
        let key = err.path.join(".");
        let source = match err.metadata.as_ref().and_then(|m| m.source.as_ref()) {
            Some(figment::Source::File(f)) => format!(" (in {})", f.display()),
            Some(figment::Source::Code(_)) => " (from --set)".to_string(),
            Some(s) => format!(" (from {s})"),
            None => err
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default(),
        };
        parts.push(if key.is_empty() {
            format!("{}{source}", err.kind)
        } else {
            format!("key `{key}`: {}{source}", err.kind)
        });
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_toml_else_strings() {
        assert_eq!(
            parse_override("epochs=5").unwrap(),
            ("epochs".into(), toml::Value::Integer(5))
        );
        assert_eq!(
            parse_override(" a.b =[1, 2]").unwrap().1,
            toml::Value::Array(vec![1.into(), 2.into()])
        );
        assert_eq!(
            parse_override("init=run:x").unwrap().1,
            toml::Value::String("run:x".into())
        );
        assert!(parse_override("novalue").is_err());
    }
}
