//! Names that become path components: datasets (`data/datasets/<name>/`), runs
//! (`data/runs/<id>/`), pipeline profiles (`pipeline/profiles/<name>.toml`, `reports/<name>/`),
//! synthetic sets (`data/synth/<name>.tar`) and weights entries (`data/weights/<name>/`).
//!
//! A [`Name`] can only be made by [`Name::new`], which checks it, and the functions that join a
//! name onto a directory ([`crate::project::Project::dataset_dir`] and its siblings) take a
//! `&Name`: a name from a registry file, a profile or the command line is checked where it
//! enters, and no module can join one that was not. The rule — 1 to [`MAX_LEN`] ASCII
//! letters, digits, `_` and `-`, not starting with `-` — is the old rule of `gl synth --name`
//! with a length limit and no leading dash: no `/`, `\`, NUL, `.` or `..`, nothing that reads
//! as an option, and every name is a bare TOML key (`[datasets.<name>]`).

use std::fmt;
use std::path::Path;

/// The longest name, in bytes (a run id is built from a dataset and a profile name and must
/// itself fit in a file name).
pub const MAX_LEN: usize = 128;

/// The rule, as the errors state it.
pub const RULE: &str = "a name is 1–128 ASCII letters, digits, `_` and `-`, not starting with `-`";

/// What a name names (for its error messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dataset,
    Run,
    Profile,
    Synth,
    Weights,
    /// A source of a dataset (`[[datasets.<name>.sources]]`): `data/downloads/<dataset>/<source>/`.
    Source,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Dataset => "dataset name",
            Kind::Run => "run id",
            Kind::Profile => "profile name",
            Kind::Synth => "synthetic set name",
            Kind::Weights => "weights entry name",
            Kind::Source => "source name",
        })
    }
}

/// A name that breaks the rule: what it names, the name, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name:?} {why}: {RULE}")]
pub struct NameError {
    pub kind: Kind,
    pub name: String,
    pub why: String,
}

/// A checked name (see the module's documentation); derefs to `str`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    /// `name` when it keeps the rule, else an error saying which part of it breaks it.
    pub fn new(kind: Kind, name: &str) -> Result<Name, NameError> {
        let why = if name.is_empty() {
            Some("is empty".to_string())
        } else if name.len() > MAX_LEN {
            Some(format!("is {} bytes long, over {MAX_LEN}", name.len()))
        } else if name.starts_with('-') {
            Some("starts with `-`".to_string())
        } else if let Some(c) = name.chars().find(|c| matches!(c, '/' | '\\')) {
            Some(format!("contains the path separator {c:?}"))
        } else {
            name.chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
                .map(|c| format!("contains {c:?}"))
        };
        match why {
            None => Ok(Name(name.to_string())),
            Some(why) => Err(NameError {
                kind,
                name: name.to_string(),
                why,
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Value parsers for the command line: a bad name is refused as clap refuses a bad value.
pub mod arg {
    use super::{Kind, Name, NameError};

    pub fn dataset(s: &str) -> Result<Name, NameError> {
        Name::new(Kind::Dataset, s)
    }
    pub fn run(s: &str) -> Result<Name, NameError> {
        Name::new(Kind::Run, s)
    }
    pub fn profile(s: &str) -> Result<Name, NameError> {
        Name::new(Kind::Profile, s)
    }
    pub fn synth(s: &str) -> Result<Name, NameError> {
        Name::new(Kind::Synth, s)
    }
    pub fn weights(s: &str) -> Result<Name, NameError> {
        Name::new(Kind::Weights, s)
    }
    pub fn source(s: &str) -> Result<Name, NameError> {
        Name::new(Kind::Source, s)
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<Path> for Name {
    fn as_ref(&self) -> &Path {
        Path::new(&self.0)
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass_and_each_hostile_form_is_refused_saying_why() {
        for ok in [
            "cub",
            "cars196_folders",
            "demo-demo-s0-2ec89073",
            "_x",
            "A-1",
        ] {
            assert_eq!(Name::new(Kind::Dataset, ok).unwrap().as_str(), ok);
        }
        assert!(Name::new(Kind::Run, &"r".repeat(MAX_LEN)).is_ok());
        let long = "x".repeat(300);
        for (bad, why) in [
            ("..", "contains '.'"),
            (".", "contains '.'"),
            (".hidden", "contains '.'"),
            ("/abs/path", "contains the path separator '/'"),
            ("../../victim", "contains the path separator '/'"),
            ("a/b", "contains the path separator '/'"),
            ("a\\b", "contains the path separator '\\\\'"),
            ("-rf", "starts with `-`"),
            ("", "is empty"),
            ("a\0b", "contains '\\0'"),
            ("a b", "contains ' '"),
            ("café", "contains 'é'"),
            (&long, "is 300 bytes long, over 128"),
        ] {
            let e = Name::new(Kind::Weights, bad).unwrap_err();
            assert_eq!(e.why, why, "{bad:?}");
            let text = e.to_string();
            assert!(
                text.starts_with(&format!("weights entry name {bad:?} {why}: "))
                    && text.ends_with(RULE),
                "{text}"
            );
        }
    }
}
