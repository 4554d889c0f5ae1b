//! The way out when no source of a dataset answers: every source tried with its error, then
//! the exact files to get by hand (names, sizes, checksums, where they were published) and the
//! `gl fetch … --source … --from …` command that takes them.

use super::Settings;
use crate::data::lock::Lock;
use crate::data::registry::FileEntry;
use crate::data::sources::SourceSpec;
use std::fmt::Write as _;

/// One source that failed, with its error chain (recorded in `dataset.json` when a later
/// source succeeds).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Failure {
    pub source: String,
    pub error: String,
}

/// The error of a fetch where every source in `tried` failed (`failures`, in the same order).
pub(super) fn all_failed(
    s: &Settings,
    tried: &[&crate::data::sources::SourceSpec],
    failures: &[Failure],
) -> anyhow::Error {
    let lock = Lock::load(&s.project.root).ok();
    let mut m = match failures.len() {
        1 => format!("could not fetch `{}`: its source failed\n", s.dataset),
        n => format!("could not fetch `{}`: all {n} sources failed\n", s.dataset),
    };
    for (i, (src, f)) in tried.iter().zip(failures).enumerate() {
        let _ = writeln!(m, "  {}. source `{}`{}:", i + 1, src.name, who(src));
        for line in f.error.lines() {
            let _ = writeln!(m, "       {line}");
        }
    }
    let _ = writeln!(
        m,
        "get these files by hand (one source's files are enough):"
    );
    for src in tried {
        by_hand(&mut m, s, src, lock.as_ref());
    }
    anyhow::anyhow!(m.trim_end().to_owned())
}

/// ` (host, since …)`, or nothing for the `default` source.
fn who(src: &SourceSpec) -> String {
    match (src.host.is_empty(), src.since.is_empty()) {
        (true, _) => String::new(),
        (false, true) => format!(" ({})", src.host),
        (false, false) => format!(" ({}, since {})", src.host, src.since),
    }
}

/// The files of `src` to get by hand and the command that takes them.
fn by_hand(m: &mut String, s: &Settings, src: &SourceSpec, lock: Option<&Lock>) {
    let _ = writeln!(m, "  source `{}`{}:", src.name, who(src));
    if src.files.is_empty() {
        let _ = writeln!(m, "    (no files listed)");
        return;
    }
    for f in &src.files {
        let pin = lock.and_then(|l| l.get_in(&s.dataset, src.lock_key(), &f.name));
        let size = f.size.or(pin.map(|p| p.bytes));
        let size = size.map_or("size unknown".to_owned(), |b| format!("{b} bytes"));
        let _ = writeln!(m, "    {}: {size}, {}", f.name, checksum(f, pin));
        match f.urls.first() {
            Some(url) => {
                let _ = writeln!(m, "      published at {url}");
            }
            None => {
                let _ = writeln!(m, "      no public URL (get it from the host by hand)");
            }
        }
    }
    if let Some(note) = &src.note {
        let _ = writeln!(m, "    note: {note}");
    }
    let from: Vec<String> = src
        .files
        .iter()
        .map(|f| format!("--from /path/to/{}", f.name))
        .collect();
    let _ = writeln!(
        m,
        "    then: gl fetch {} --source {} {}",
        s.dataset,
        src.name,
        from.join(" ")
    );
    let _ = writeln!(
        m,
        "    (or put them in {})",
        src.downloads(s.project.downloads(&s.dataset)).display()
    );
}

/// The checksum a hand-downloaded file must have: published, else pinned, else none yet.
fn checksum(f: &FileEntry, pin: Option<&crate::data::lock::Pin>) -> String {
    match (&f.sha256, &f.md5, pin) {
        (Some(sha), _, _) => format!("sha256 {sha} (published)"),
        (None, Some(md5), _) => format!("md5 {md5} (published)"),
        (None, None, Some(p)) => format!("sha256 {} (pinned in pipeline/datasets.lock)", p.sha256),
        (None, None, None) => {
            "no checksum published or pinned yet (the first fetch pins it)".into()
        }
    }
}
