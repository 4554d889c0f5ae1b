//! The numbers follow the code and the kernels, not the machine: the golden trajectory against
//! its committed fixture (and failing under the per-tensor RAdam), two numerics versions giving
//! two run ids, a version bump making the pipeline's tasks stale and training under new ids
//! beside the old runs, and the kernel pin holding under a hostile environment while a control
//! pinned to another level computes other numbers.

use crate::common::gl_cli;
use crate::common::tiny_pipeline::{files, gl, gl_env, project_with, ran, status, train_args};
use grouploss::numerics::{Execution, Kernels};
use std::path::Path;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/numerics/trajectory.json"
);

fn numerics_check(extra: &[&str]) -> (i32, String, String) {
    let mut args = vec!["numerics-check", FIXTURE];
    args.extend_from_slice(extra);
    gl_cli::run(Path::new(env!("CARGO_MANIFEST_DIR")), &args, &[])
}

#[test]
fn the_golden_trajectory_matches_its_fixture_under_the_pin() {
    let (code, out, err) = numerics_check(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("matches"), "{out}");
}

#[test]
fn the_per_tensor_radam_fails_the_golden_trajectory() {
    let (code, out, err) = numerics_check(&["--per-tensor-radam"]);
    assert_ne!(
        code, 0,
        "the per-tensor RAdam must move the numbers: {out}{err}"
    );
    assert!(
        err.contains("bump numerics::TRAINING") && err.contains("weights"),
        "{err}"
    );
}

#[test]
fn the_check_pins_its_kernels_whatever_the_environment_says() {
    let hostile = [
        ("ATEN_CPU_CAPABILITY", "default"),
        ("MKL_CBWR", "AUTO"),
        ("OMP_NUM_THREADS", "7"),
        ("GL_KERNELS", "baseline"),
    ];
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (code, out, err) = gl_cli::run(repo, &["numerics-check", FIXTURE], &hostile);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn two_numerics_versions_give_two_run_ids_for_one_recipe() {
    let project = project_with("");
    let p = grouploss::project::Project::resolve(Some(project.path().to_path_buf()), None).unwrap();
    let cfg = grouploss::train::config::TrainConfig::resolve(&p, "tiny_synth", "tiny", &[])
        .unwrap()
        .into_inner();
    let e = Execution::new("cpu", Kernels::Portable, 1);
    let id = |numerics| {
        let identity = grouploss::numerics::RunIdentity {
            recipe: &cfg,
            data: "content",
            numerics,
            execution: &e,
        };
        grouploss::pipeline::tasks::run_id("tiny", "tiny_synth", 0, false, &identity)
    };
    let (a, b) = (id(2).unwrap(), id(3).unwrap());
    assert_ne!(a, b);
    assert!(a.starts_with("tiny_synth-tiny-s0-") && b.starts_with("tiny_synth-tiny-s0-"));
}

/// The tiny project with its profile's kernels pinned to `kernels`.
fn pinned_project(kernels: &str) -> tempfile::TempDir {
    let dir = project_with("");
    let profile = dir.path().join("pipeline/profiles/tiny.toml");
    let text = std::fs::read_to_string(&profile).unwrap();
    std::fs::write(&profile, format!("kernels = \"{kernels}\"\n{text}")).unwrap();
    dir
}

/// A profile's report under `env`, in a fresh project with `kernels` pinned.
fn report(kernels: &str, env: &[(&str, &str)]) -> (tempfile::TempDir, Vec<(String, Vec<u8>)>) {
    let dir = pinned_project(kernels);
    let p = dir.path();
    let (code, out, err) = gl_env(p, &["run", "--profile", "tiny"], env);
    assert_eq!(code, 0, "{out}{err}");
    let files = files(&p.join("reports/tiny")).into_iter().collect();
    (dir, files)
}

fn tables(files: &[(String, Vec<u8>)]) -> Vec<&(String, Vec<u8>)> {
    files
        .iter()
        .filter(|(n, _)| n.starts_with("tables/"))
        .collect()
}

#[test]
fn pinned_kernels_survive_a_hostile_environment_and_another_pin_differs() {
    let (native_dir, native) = report("portable", &[]);
    let hostile = [
        ("ATEN_CPU_CAPABILITY", "default"),
        ("MKL_CBWR", "AUTO"),
        ("OMP_NUM_THREADS", "7"),
    ];
    let (hostile_dir, under_hostile) = report("portable", &hostile);
    assert!(!native.is_empty());
    for ((a, x), (b, y)) in native.iter().zip(&under_hostile) {
        assert_eq!(a, b);
        assert!(x == y, "{a} differs under the hostile environment");
    }
    assert_eq!(native.len(), under_hostile.len());
    // The footer names the code's commit and the runs' environment: the pin, not the CPU model.
    let readme = native.iter().find(|(n, _)| n == "README.md").unwrap();
    let readme = String::from_utf8_lossy(&readme.1);
    assert!(
        readme.contains("## Environment")
            && readme.contains("kernels portable (ATen AVX2, MKL COMPATIBLE,STRICT)")
            && readme.contains("x86-64 with AVX2 + FMA (model: runs.cpu_model)")
            && readme.contains("from the code at no git checkout"),
        "{readme}"
    );
    assert!(!readme.contains("Mixed environments"), "{readme}");
    // What the hostile run recorded: the pinned level, not the environment it was given.
    let (code, out, err) = gl(
        hostile_dir.path(),
        &[
            "sql",
            "select distinct kernels, threads, aten_capability from runs",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("portable") && out.contains("AVX2"), "{out}");
    assert!(!out.contains("DEFAULT"), "{out}");
    // The control: the same profile pinned to the baseline level computes other numbers, so
    // the equality above is the pin's doing and not a set-up that cannot tell.
    let (_b, baseline) = report("baseline", &[]);
    assert_ne!(
        tables(&native),
        tables(&baseline),
        "the baseline pin gave the same tables"
    );
    drop(native_dir);
}

#[test]
fn a_numerics_bump_makes_training_stale_and_trains_under_new_ids_beside_the_old() {
    let dir = pinned_project("portable");
    let p = dir.path();
    let (code, out, err) = gl(p, &["run", "--profile", "tiny"]);
    assert_eq!(code, 0, "{out}{err}");
    let runs_before: Vec<String> = std::fs::read_dir(p.join("data/runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    let old = files(&p.join("data/runs").join(&runs_before[0]));
    let bump = [(grouploss::env_vars::TEST_NUMERICS_BUMP, "1")];
    let (code, out, err) = gl_env(p, &["status", "--profile", "tiny"], &bump);
    assert_eq!(code, 0, "{out}{err}");
    let stale_train = out
        .lines()
        .filter(|l| l.starts_with("train") && l.contains("stale"))
        .count();
    assert_eq!(stale_train, 2, "both seeds' runs are stale:\n{out}");
    assert!(
        out.lines()
            .filter(|l| l.starts_with("fetch") || l.starts_with("prepare"))
            .all(|l| l.contains("fresh")),
        "data stages do not depend on the numerics:\n{out}"
    );
    let (code, out, err) = gl_env(p, &["run", "--profile", "tiny"], &bump);
    assert_eq!(code, 0, "{out}{err}");
    assert!(ran(&out).iter().any(|s| s == "train"), "{out}");
    let runs_after: Vec<String> = std::fs::read_dir(p.join("data/runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    for r in &runs_before {
        assert!(runs_after.contains(r), "{r} is still there");
    }
    assert!(runs_after.len() > runs_before.len(), "{runs_after:?}");
    assert_eq!(
        files(&p.join("data/runs").join(&runs_before[0])),
        old,
        "the old run directory is untouched"
    );
    // And without the bump the old runs are current again.
    let st = status(p, &[]);
    let train: Vec<_> = st.iter().filter(|(k, _)| k.starts_with("train:")).collect();
    assert_eq!(train.len(), 2);
    assert!(train.iter().all(|(_, s)| *s == "fresh"), "{st:?}");
}

#[test]
fn a_resume_in_another_environment_warns_and_another_execution_is_refused() {
    let dir = project_with("");
    let p = dir.path();
    let train = train_args("r", &[]);
    let (code, out, err) = gl(p, &["fetch", "tiny_synth", "--quiet"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = gl(p, &train);
    assert_eq!(code, 0, "{out}{err}");
    // As if the run had started on another CPU model (native kernels: the model matters).
    let env_path = p.join("data/runs/r/environment.json");
    let mut env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&env_path).unwrap()).unwrap();
    env["cpu_model"] = "Another CPU".into();
    std::fs::write(&env_path, serde_json::to_vec(&env).unwrap()).unwrap();
    let resume: Vec<&str> = train.iter().copied().chain(["--resume"]).collect();
    let (code, out, err) = gl(p, &resume);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("another environment") && err.contains("cpu Another CPU →"),
        "{err}"
    );
    let kept = std::fs::read_dir(p.join("data/runs/r"))
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("environment.resumed-")
        });
    assert!(kept, "the new environment is kept beside the first");
    // Another thread count is another execution: part of the run's identity, refused.
    let mut two = vec!["--threads", "2"];
    two.extend(&resume);
    let (code, out, err) = gl_cli::run(p, &two, &[]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("execution"), "{err}");
}
