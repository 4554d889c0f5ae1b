//! The report's footer: which environments its runs were trained in (CPU, kernels, threads,
//! device, library versions, numerics versions) and from which commits — flagged when the
//! runs mix environments whose numbers differ.

use crate::catalog::environments;
use crate::catalog::Catalog;
use crate::numerics::environment::EnvGroup;
use crate::report::data::ReportData;
use anyhow::Result;

/// Every run id the report shows: each dataset's runs and every sweep point's.
pub fn run_ids(data: &ReportData) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for d in &data.datasets {
        ids.extend(d.group_loss.iter().map(|r| r.run_id.clone()));
        ids.extend(d.softmax.iter().map(|r| r.run_id.clone()));
        if let Some(s) = &d.sweep {
            for p in &s.points {
                ids.extend(p.runs.iter().map(|r| r.run_id.clone()));
            }
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

/// The footer's Markdown for the runs of `data`.
pub fn footer(cat: &Catalog, data: &ReportData) -> Result<String> {
    let ids = run_ids(data);
    let groups = environments::of_runs(cat, &ids)?;
    Ok(markdown(&groups, ids.len()))
}

fn markdown(groups: &[EnvGroup], runs: usize) -> String {
    let mut md = String::from("## Environment\n\n");
    if groups.is_empty() {
        md += "No run of this report recorded its environment (runs made before `gl` recorded \
               one).\n";
        return md;
    }
    if groups.len() > 1 {
        md += &format!(
            "**Mixed environments:** the runs of this report were made in {} environments \
             whose numbers can differ; compare them with care, or rerun them in one.\n\n",
            groups.len()
        );
    }
    let recorded: usize = groups.iter().map(|g| g.runs.len()).sum();
    for g in groups {
        let commits: Vec<&str> = g.commits.iter().map(String::as_str).collect();
        md += &format!(
            "- {} run(s): {}; code: {}.\n",
            g.runs.len(),
            g.env.summary(),
            commits.join(", ")
        );
    }
    if recorded < runs {
        md += &format!("- {} run(s) recorded no environment.\n", runs - recorded);
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numerics::environment::Environment;
    use crate::numerics::Kernels;

    fn group(threads: i32, commit: &str, runs: &[&str]) -> EnvGroup {
        let mut env = Environment::current(std::path::Path::new("."), Kernels::Portable, "cpu");
        env.threads = threads;
        EnvGroup {
            env,
            runs: runs.iter().map(|s| s.to_string()).collect(),
            commits: [commit.to_string()].into(),
        }
    }

    #[test]
    fn one_environment_names_its_commit_and_is_not_flagged() {
        let md = markdown(&[group(1, "abc123", &["r1", "r2"])], 2);
        assert!(md.contains("code: abc123"), "{md}");
        assert!(md.contains("kernels portable"), "{md}");
        assert!(!md.contains("Mixed"), "{md}");
    }

    #[test]
    fn two_environments_are_flagged_and_unrecorded_runs_counted() {
        let md = markdown(&[group(1, "a", &["r1"]), group(2, "a", &["r2"])], 3);
        assert!(md.contains("**Mixed environments:**"), "{md}");
        assert!(md.contains("1 run(s) recorded no environment"), "{md}");
    }
}
