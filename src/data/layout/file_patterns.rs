//! File patterns of a layout (`files = ["data/train-*.parquet"]`): paths relative to the
//! dataset root whose last component may hold `*`.

use super::LayoutError;
use std::path::Path;

/// The files the patterns name, relative to `root`: each pattern a path whose last component
/// may hold `*` (any run of characters), matches in name order, every pattern matching at least
/// one file; a file matched twice is read once.
pub fn match_files(
    root: &Path,
    patterns: &[String],
    what: &str,
) -> Result<Vec<String>, LayoutError> {
    if patterns.is_empty() {
        return Err(LayoutError::Invalid {
            path: root.to_path_buf(),
            message: format!("no {what} patterns given"),
        });
    }
    let mut out: Vec<String> = Vec::new();
    for pattern in patterns {
        let (dir, name) = match pattern.rsplit_once('/') {
            Some((d, n)) => (d, n),
            None => ("", pattern.as_str()),
        };
        if dir.contains('*') {
            return Err(LayoutError::Invalid {
                path: root.join(pattern),
                message: "only the file name of a pattern may hold `*`".into(),
            });
        }
        let base = root.join(dir);
        let mut found = Vec::new();
        if base.is_dir() {
            for e in super::image_folder::entries(&base)? {
                let n = super::image_folder::utf8_name(&e)?;
                if e.path().is_file() && wildcard(name, &n) {
                    found.push(if dir.is_empty() {
                        n
                    } else {
                        format!("{dir}/{n}")
                    });
                }
            }
        }
        if found.is_empty() {
            return Err(LayoutError::Invalid {
                path: root.join(pattern),
                message: format!("no {what} matches this pattern"),
            });
        }
        found.sort();
        for f in found {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    Ok(out)
}

/// `*` matches any run of characters (none included); everything else matches itself.
fn wildcard(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if name.len() < first.len() + last.len() || !name.starts_with(first) || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard("train-*.parquet", "train-00000-of-00002.parquet"));
        assert!(!wildcard("train-*.parquet", "test-00000-of-00002.parquet"));
        assert!(wildcard("*", "x"));
        assert!(wildcard("a*b*c", "a-b-c"));
        assert!(!wildcard("a*b*c", "a-c"));
        assert!(!wildcard("ab*ba", "aba"));
    }

    #[test]
    fn patterns_match_in_name_order_and_each_must_match() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("data")).unwrap();
        for f in ["data/b-1.p", "data/a-2.p", "data/a-1.p", "c.p"] {
            std::fs::write(d.path().join(f), b"").unwrap();
        }
        let got = match_files(d.path(), &["data/a-*".into(), "data/*.p".into()], "file").unwrap();
        assert_eq!(got, ["data/a-1.p", "data/a-2.p", "data/b-1.p"]);
        let e = match_files(d.path(), &["x*".into()], "file")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x*") && e.contains("no file matches"), "{e}");
        let e = match_files(d.path(), &["*/c.p".into()], "file")
            .unwrap_err()
            .to_string();
        assert!(e.contains("only the file name"), "{e}");
    }
}
