//! `gl fetch [<dataset>] --check`: for every source of the dataset (of every dataset without
//! one), ask each file's URLs whether they answer and with what size, downloading nothing.
//! Fails when some dataset has no source whose files all answer.

use crate::data::fetch::check::{probe, Probe};
use crate::data::fetch::FetchOptions;
use crate::data::lock::Lock;
use crate::data::registry::{resolve_url, DatasetSpec, FileEntry, Registry};
use crate::data::sources::SourceSpec;
use crate::names::Name;
use crate::project::Project;
use anyhow::Result;
use std::process::ExitCode;

/// Checks `dataset` (every registered dataset when `None`) and prints one block per dataset.
pub fn run(project: &Project, dataset: Option<&Name>, opts: &FetchOptions) -> Result<ExitCode> {
    let registry = Registry::load(&project.root, &project.data_dir)?;
    let lock = Lock::load(&project.root)?;
    let names: Vec<&Name> = match dataset {
        Some(d) => {
            registry.get(d)?;
            vec![d]
        }
        None => registry.datasets.keys().collect(),
    };
    let mut dead = Vec::new();
    for name in names {
        let spec = registry.get(name)?;
        let answering = check_dataset(project, name, spec, &lock, opts);
        let total = spec.sources.len();
        println!("{name}: {answering} of {total} source(s) answer\n");
        if answering == 0 {
            dead.push(name.to_string());
        }
    }
    if dead.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "no source answers for: {} (`gl fetch <name>` says what to get by hand)",
        dead.join(", ")
    );
    Ok(ExitCode::from(1))
}

/// Prints the sources of one dataset; how many answer.
fn check_dataset(
    project: &Project,
    name: &Name,
    spec: &DatasetSpec,
    lock: &Lock,
    opts: &FetchOptions,
) -> usize {
    println!("{name} ({})", spec.title);
    if let Some(local) = &spec.local_root {
        let root = project.root.join(local);
        let ok = root.is_dir();
        let what = if ok { "exists" } else { "MISSING" };
        println!("  local folder {}: {what}", root.display());
        return usize::from(ok);
    }
    let mut answering = 0;
    for src in &spec.sources {
        println!("  source {}", src.describe_who());
        let all = src
            .files
            .iter()
            .map(|f| check_file(project, name, src, f, lock, opts))
            .fold(!src.files.is_empty(), |acc, ok| acc && ok);
        println!("    => {}", if all { "answers" } else { "does not answer" });
        answering += usize::from(all);
    }
    answering
}

/// Probes the URLs of one file in order until one answers; prints each.
fn check_file(
    project: &Project,
    dataset: &Name,
    src: &SourceSpec,
    f: &FileEntry,
    lock: &Lock,
    opts: &FetchOptions,
) -> bool {
    let known = f.size.or_else(|| {
        lock.get_in(dataset, src.lock_key(), &f.name)
            .map(|p| p.bytes)
    });
    if f.urls.is_empty() {
        println!(
            "    {}: no public URL (get it by hand, then --from)",
            f.name
        );
        return false;
    }
    for url in &f.urls {
        let p = probe(&resolve_url(url, &project.root), opts);
        println!("    {}: {}", f.name, line(&p, known));
        if p.answers() {
            return true;
        }
    }
    false
}

/// `HEAD 200, 123 bytes (matches the known size) <url>` and the like.
fn line(p: &Probe, known: Option<u64>) -> String {
    let status = match (p.status, &p.error) {
        (Some(s), _) => format!("{} {s}", p.method),
        (None, Some(e)) => format!("{} failed: {e}", p.method),
        (None, None) => format!("{} ok", p.method),
    };
    let size = match (p.answers(), p.size, known) {
        (false, _, _) => String::new(),
        (true, Some(n), Some(k)) if n == k => format!(", {n} bytes (matches the known size)"),
        (true, Some(n), Some(k)) => format!(", {n} bytes (DIFFERS from the known {k})"),
        (true, Some(n), None) => format!(", {n} bytes (no known size)"),
        (true, None, _) => ", size not given".to_owned(),
    };
    format!("{status}{size} {}", p.url)
}
