//! The fine-tuned start as the pipeline plans it (`start = "finetuned"`, a benchmark's
//! `tracks`): the committed benchmark profiles plan both tracks, every run of the fine-tuned
//! track starts from the one shared fine-tune run (and depends on it), every run of the
//! ImageNet track from ImageNet, and the two tracks have the same grid.

use grouploss::pipeline::profile::Profile;
use grouploss::pipeline::task::Task;
use grouploss::pipeline::tasks;
use grouploss::project::Project;
use std::collections::BTreeSet;
use std::path::Path;

fn plan(profile: &str, stage: &str) -> (Profile, Vec<Task>) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = tempfile::tempdir().unwrap();
    let project = Project::resolve(Some(repo.into()), Some(data.path().into())).unwrap();
    let p = Profile::resolve(repo, profile, &[]).unwrap();
    let t = tasks::build(stage, &p, &project).unwrap();
    (p, t)
}

fn set_value<'a>(t: &'a Task, key: &str) -> Option<&'a str> {
    t.argv
        .iter()
        .rev()
        .filter_map(|a| a.strip_prefix("--set="))
        .find_map(|s| s.strip_prefix(&format!("{key}=")))
}

/// What a train task runs apart from its start: its `--set` values but `start` and `init`, and
/// its seed (labels over 96 bytes end in a digest of the whole, start included, so the task key
/// cannot be compared).
fn grid_point(t: &Task) -> String {
    let mut sets: Vec<&str> = t
        .argv
        .iter()
        .filter_map(|a| a.strip_prefix("--set="))
        .filter(|s| !s.starts_with("start=") && !s.starts_with("init="))
        .collect();
    sets.sort();
    let seed = t.key.rsplit('/').next().unwrap();
    format!("{} {seed}", sets.join(" "))
}

#[test]
fn the_benchmarks_plan_both_tracks_from_one_shared_fine_tuned_run() {
    for profile in ["benchmark_demo", "benchmark_paper"] {
        let (p, train) = plan(profile, "train");
        let (_, finetune) = plan(profile, "finetune");
        assert_eq!(
            finetune.len(),
            p.datasets.len(),
            "{profile}: one fine-tune run per dataset"
        );
        let mut by_track: [BTreeSet<String>; 2] = Default::default();
        for t in &train {
            let start = set_value(t, "start").unwrap_or_else(|| panic!("{}: no start", t.key));
            let init = set_value(t, "init");
            match start {
                "\"imagenet\"" => {
                    assert!(
                        init.is_none_or(|i| i == "\"imagenet\""),
                        "{}: {init:?}",
                        t.key
                    );
                    by_track[0].insert(grid_point(t));
                }
                "\"finetuned\"" => {
                    let ft = finetune
                        .iter()
                        .find(|f| {
                            t.key
                                .starts_with(&format!("{}/", f.key.split('/').next().unwrap()))
                        })
                        .expect("the dataset's fine-tune run");
                    let ft_id = ft
                        .run_dir
                        .as_ref()
                        .unwrap()
                        .file_name()
                        .unwrap()
                        .to_str()
                        .unwrap();
                    assert_eq!(init, Some(format!("\"run:{ft_id}\"").as_str()), "{}", t.key);
                    assert!(
                        t.consumes.contains(&format!("run:{ft_id}")),
                        "{}: the fine-tuned run is an input of the task",
                        t.key
                    );
                    by_track[1].insert(grid_point(t));
                }
                other => panic!("{}: start {other}", t.key),
            }
        }
        assert!(!by_track[0].is_empty(), "{profile}: no imagenet track");
        assert_eq!(
            by_track[0], by_track[1],
            "{profile}: the tracks' grids differ"
        );
        assert!(p.seeds.len() >= 3, "{profile}: at least 3 seeds");
    }
}

#[test]
fn a_missing_fine_tuned_run_or_a_start_swept_beside_tracks_is_refused() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let err = |sets: &[&str]| {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        format!(
            "{:#}",
            Profile::resolve(repo, "benchmark_demo", &sets).unwrap_err()
        )
    };
    let e = err(&["finetune.start_seed=7"]);
    assert!(e.contains("seed 7") && e.contains("finetune.seeds"), "{e}");
    let e = err(&["benchmark.group_loss.start=[\"imagenet\",\"finetuned\"]"]);
    assert!(e.contains("benchmark.group_loss.start"), "{e}");
    let e = err(&["tracks=[\"imagenet\",\"imagenet\"]"]);
    assert!(e.contains("listed twice"), "{e}");
}
