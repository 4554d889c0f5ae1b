//! How a mirror's labels become the OFFICIAL class ids (1-based, in the dataset's published
//! order), whatever the mirror calls them: an integer label with a known base, a folder or
//! label name that starts with the id (`001.Black_footed_Albatross`), or a name looked up in a
//! class list file (`pipeline/classes/cars196.txt`: line n is class n).
//!
//! Names are compared after [`alias_key`]: mirrors that name folders after classes have to
//! change some names (`Ram C/V Cargo Van Minivan 2012` cannot be a folder name, so it becomes
//! `Ram C-V …`; some lower-case everything; some leave trailing spaces).

use super::LayoutError;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where a mirror's label gives the official class id (`class_ids = { from = … }` in a layout).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "from", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClassIds {
    /// An integer label (or a name that is an integer): official id = label − `base` + 1.
    /// Hugging Face `ClassLabel` columns count from 0 (`base = 0`).
    Index { base: i64 },
    /// The digits before the first `.` of the name: CUB's `001.Black_footed_Albatross`.
    Prefix,
    /// The name's line in a class list file (one name per line, line n = class id n), relative
    /// to the project root; names compared after [`alias_key`].
    List { file: String },
}

/// The comparison key of a class name: `/` and `\` read as `-` (a folder name cannot hold a
/// `/`), surrounding whitespace trimmed, inner runs of whitespace read as one space, and ASCII
/// letters lower-cased. `"Ram C/V Cargo Van Minivan 2012"` and `"ram c-v cargo van  minivan
/// 2012 "` have the same key.
pub fn alias_key(name: &str) -> String {
    name.replace(['/', '\\'], "-")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}

/// A resolved [`ClassIds`]: the class list read once.
#[derive(Debug)]
pub enum Resolver {
    Index(i64),
    Prefix,
    List {
        path: PathBuf,
        by_key: HashMap<String, i64>,
    },
}

/// A label as a mirror stores it.
#[derive(Debug, Clone, Copy)]
pub enum Label<'a> {
    Int(i64),
    Name(&'a str),
}

impl ClassIds {
    /// Reads what the rule needs (the class list file, relative to `project_root` where one is
    /// given, else to the working directory).
    pub fn resolve(&self, project_root: Option<&Path>) -> Result<Resolver, LayoutError> {
        Ok(match self {
            ClassIds::Index { base } => Resolver::Index(*base),
            ClassIds::Prefix => Resolver::Prefix,
            ClassIds::List { file } => {
                let path = match project_root {
                    Some(r) => r.join(file),
                    None => PathBuf::from(file),
                };
                let by_key = read_class_list(&path)?;
                Resolver::List { path, by_key }
            }
        })
    }
}

/// Reads a class list: every line a name, line n = class n. An empty line inside the list or
/// two names with the same [`alias_key`] are errors naming the line.
pub fn read_class_list(path: &Path) -> Result<HashMap<String, i64>, LayoutError> {
    let text = super::read_text(path)?;
    let mut by_key = HashMap::new();
    for (i, line) in text.trim_end_matches(['\n', '\r']).lines().enumerate() {
        let parse = |message: String| LayoutError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let key = alias_key(line);
        if key.is_empty() {
            return Err(parse(
                "empty class name (line n is class n: no blank lines)".into(),
            ));
        }
        if let Some(prev) = by_key.insert(key, i as i64 + 1) {
            return Err(parse(format!(
                "class name {line:?} is the same as class {prev}'s after the alias rule"
            )));
        }
    }
    if by_key.is_empty() {
        return Err(LayoutError::Invalid {
            path: path.to_path_buf(),
            message: "the class list is empty".into(),
        });
    }
    Ok(by_key)
}

impl Resolver {
    /// The official id of `label`, or a message saying why there is none (the caller names the
    /// file and row or folder).
    pub fn class_id(&self, label: Label<'_>) -> Result<i64, String> {
        match (self, label) {
            (Resolver::Index(base), Label::Int(v)) => index_id(*base, v),
            (Resolver::Index(base), Label::Name(s)) => match s.trim().parse::<i64>() {
                Ok(v) => index_id(*base, v),
                Err(_) => Err(format!(
                    "label {s:?} is not an integer (class_ids from = \"index\")"
                )),
            },
            (Resolver::Prefix, Label::Name(s)) => {
                let digits = s.trim().split_once('.').map_or("", |(d, _)| d);
                match digits.parse::<i64>() {
                    Ok(id) if id >= 1 && !digits.is_empty() => Ok(id),
                    _ => Err(format!(
                        "name {s:?} does not start with a class id and a dot (like `001.`)"
                    )),
                }
            }
            (Resolver::List { path, by_key }, Label::Name(s)) => {
                by_key.get(&alias_key(s)).copied().ok_or_else(|| {
                    format!(
                        "{s:?} matches no class in {} (compared after the alias rule: `/` as `-`, spaces trimmed, case ignored)",
                        path.display()
                    )
                })
            }
            (Resolver::Prefix | Resolver::List { .. }, Label::Int(v)) => Err(format!(
                "the label is the integer {v}: integer labels need class_ids = {{ from = \"index\", base = … }}"
            )),
        }
    }

    /// Whether the rule reads a name (folder or string label) rather than an integer.
    pub fn wants_names(&self) -> bool {
        !matches!(self, Resolver::Index(_))
    }
}

fn index_id(base: i64, v: i64) -> Result<i64, String> {
    if v < base {
        return Err(format!(
            "label {v} is below the label base {base} (class_ids from = \"index\", base = {base})"
        ));
    }
    Ok(v - base + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_rule_matches_what_folder_mirrors_do_to_names() {
        assert_eq!(
            alias_key("Ram C/V Cargo Van Minivan 2012"),
            alias_key(" ram c-v cargo van  Minivan 2012  ")
        );
        assert_ne!(
            alias_key("Audi S4 Sedan 2012"),
            alias_key("Audi S4 Sedan 2007")
        );
    }

    #[test]
    fn rules_give_official_ids_or_say_why_not() {
        assert_eq!(Resolver::Index(0).class_id(Label::Int(0)), Ok(1));
        assert_eq!(Resolver::Index(1).class_id(Label::Int(1)), Ok(1));
        assert!(Resolver::Index(1)
            .class_id(Label::Int(0))
            .unwrap_err()
            .contains("below the label base 1"));
        assert_eq!(
            Resolver::Prefix.class_id(Label::Name("017.Cardinal")),
            Ok(17)
        );
        assert!(Resolver::Prefix.class_id(Label::Name("Cardinal")).is_err());
        assert!(Resolver::Prefix.class_id(Label::Int(3)).is_err());
    }

    #[test]
    fn the_committed_cars196_list_has_196_distinct_names_in_official_order() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipeline/classes/cars196.txt");
        let by_key = read_class_list(&path).unwrap();
        assert_eq!(by_key.len(), 196);
        // Spot checks against the devkit order (cars_meta.mat class_names).
        assert_eq!(by_key[&alias_key("AM General Hummer SUV 2000")], 1);
        assert_eq!(
            by_key[&alias_key("Chevrolet Silverado 1500 Classic Extended Cab 2007")],
            70
        );
        assert_eq!(by_key[&alias_key("FIAT 500 Abarth 2012")], 99);
        assert_eq!(by_key[&alias_key("Ram C-V Cargo Van Minivan 2012")], 174);
        assert_eq!(by_key[&alias_key("smart fortwo Convertible 2012")], 196);
        let dup = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(dup.path(), "A b\nB/c\na  B\n").unwrap();
        let e = read_class_list(dup.path()).unwrap_err().to_string();
        assert!(e.contains(":3:") && e.contains("class 1"), "{e}");
    }
}
