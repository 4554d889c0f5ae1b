//! The paper's published numbers (`pipeline/published.toml`): what the report's "paper" rows
//! and difference rows compare against. Values are percentages keyed like the catalogue's
//! metrics (`recall@1`, `nmi`, `map@r`); a metric the file leaves out is shown as missing.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// The file, relative to the project root.
pub const PUBLISHED_FILE: &str = "pipeline/published.toml";

/// Where the numbers come from.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub paper: String,
    pub checked_against: String,
}

/// One dataset's published rows: one network, and the ensemble.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishedRows {
    #[serde(default)]
    pub group_loss: BTreeMap<String, f64>,
    #[serde(default)]
    pub ensemble: BTreeMap<String, f64>,
}

/// Every dataset's published numbers.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Published {
    pub source: Source,
    #[serde(default)]
    pub datasets: BTreeMap<String, PublishedRows>,
}

impl Published {
    /// Reads and checks `<project>/pipeline/published.toml`: every key a known metric, every
    /// value a percentage.
    pub fn load(project_root: &Path) -> Result<Self> {
        let path = project_root.join(PUBLISHED_FILE);
        let p: Published = crate::fsutil::read_toml(&path, "the published numbers")?;
        p.validate()
            .with_context(|| format!("{}", path.display()))?;
        Ok(p)
    }

    fn validate(&self) -> Result<()> {
        for (d, rows) in &self.datasets {
            for (row, m) in [
                ("group_loss", &rows.group_loss),
                ("ensemble", &rows.ensemble),
            ] {
                for (k, v) in m {
                    let known = k == "nmi"
                        || k == "map@r"
                        || k == "r_precision"
                        || k.strip_prefix("recall@")
                            .is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n > 0));
                    if !known {
                        bail!("datasets.{d}.{row}.{k:?}: not a metric (recall@K, nmi, map@r, r_precision)");
                    }
                    if !(0.0..=100.0).contains(v) {
                        bail!("datasets.{d}.{row}.{k:?} = {v}: a percentage is within 0..100");
                    }
                }
            }
        }
        Ok(())
    }

    /// The rows of `dataset`, if the paper reports it.
    pub fn rows(&self, dataset: &str) -> Option<&PublishedRows> {
        self.datasets.get(dataset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Published> {
        let p: Published = toml::from_str(text)?;
        p.validate()?;
        Ok(p)
    }

    const SOURCE: &str = "[source]\npaper = \"p\"\nchecked_against = \"c\"\n";

    #[test]
    fn the_projects_file_loads() {
        let p = Published::load(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(p
            .rows("cub")
            .is_some_and(|r| r.group_loss.contains_key("recall@1")));
        assert!(p.rows("demo").is_none());
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let e = parse(&format!(
            "{SOURCE}[datasets.cub.group_loss]\n\"recall@0\" = 1.0\n"
        ));
        assert!(format!("{:#}", e.unwrap_err()).contains("datasets.cub.group_loss.\"recall@0\""));
        let e = parse(&format!(
            "{SOURCE}[datasets.cub.ensemble]\nnmi = 0.69\nx = 1\n"
        ));
        assert!(format!("{:#}", e.unwrap_err()).contains("datasets.cub.ensemble.\"x\""));
        let e = parse(&format!("{SOURCE}[datasets.cub.ensemble]\nnmi = 690.0\n"));
        assert!(format!("{:#}", e.unwrap_err()).contains("percentage"));
        let e = parse(&format!("{SOURCE}[datasets.cub.single]\nnmi = 69.0\n"));
        assert!(format!("{:#}", e.unwrap_err()).contains("single"));
    }
}
