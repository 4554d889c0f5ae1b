//! Names that become path components (datasets, runs, profiles, synthetic sets, weights
//! entries) fed in hostile forms — `..`, an absolute path, `a/b`, a leading `-`, empty, a NUL
//! byte, 300 characters — through every place a name enters `gl`: the registry files, the
//! command line and the profiles. Each is refused with an error naming where it came from and
//! the name, and nothing outside the data directory (nor the data directory itself) changes.

use crate::common::png;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A throw-away project `<tmp>/proj` (data directory `<tmp>/proj/data`) with victims around
/// it: `<tmp>/proj/victim/` (where `data/datasets/../../victim` resolves), `<tmp>/abs/` (an
/// absolute path a name may spell), files in the data directory itself and a dataset already
/// fetched beside the hostile one.
struct Project {
    tmp: tempfile::TempDir,
}

impl Project {
    fn new(registry: &str) -> Project {
        let tmp = tempfile::tempdir().unwrap();
        let p = Project { tmp };
        for (rel, text) in [
            ("proj/pipeline/datasets.toml", registry),
            ("proj/victim/keep.txt", "the victim's file"),
            ("abs/keep.txt", "another victim's file"),
            ("proj/data/keep.txt", "a file of the data directory"),
            (
                "proj/data/datasets/other/keep.txt",
                "another dataset's file",
            ),
        ] {
            let path = p.tmp.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        p
    }
    fn root(&self) -> PathBuf {
        self.tmp.path().join("proj")
    }
    /// `<tmp>/abs`: the victim of the absolute-path form (a name that is an absolute path).
    fn abs(&self) -> String {
        self.tmp.path().join("abs").display().to_string()
    }
    fn write(&self, rel: &str, text: &str) {
        let path = self.root().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    /// `gl --project-dir <proj> ARGS…` (global flags first, so `--` may end the options).
    fn gl(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(crate::common::gl_cli::bin())
            .arg("--project-dir")
            .arg(self.root())
            .args(args)
            .env_remove("GL_DATA_DIR")
            .output()
            .expect("starting gl");
        crate::common::gl_cli::collect(out)
    }
    /// Every file under the temporary directory with its bytes, but the catalogue (a failed
    /// stage is recorded there, which is the catalogue's job).
    fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let path = e.unwrap().path();
                let rel = path.strip_prefix(base).unwrap().display().to_string();
                if rel.starts_with("proj/data/catalog.duckdb") {
                    continue;
                }
                if path.is_dir() {
                    out.insert(format!("{rel}/"), Vec::new());
                    walk(base, &path, out);
                } else {
                    out.insert(rel, std::fs::read(&path).unwrap_or_default());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(self.tmp.path(), self.tmp.path(), &mut out);
        out
    }
}

/// What changed between two snapshots: paths added, removed or rewritten.
fn changes(before: &BTreeMap<String, Vec<u8>>, after: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    let mut out: Vec<String> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(v))
        .map(|(k, _)| format!("- {k}"))
        .collect();
    out.extend(
        after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(v))
            .map(|(k, _)| format!("+ {k}")),
    );
    out
}

/// An archive in the Stanford Online Products layout: 4 classes × 2 images.
fn sop_tar() -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, path, bytes).unwrap();
    };
    let head = "image_id class_id super_class_id path\n";
    let (mut train, mut test) = (head.to_string(), head.to_string());
    for c in 1..=4u8 {
        for k in 0..2u8 {
            let id = (c - 1) * 2 + k + 1;
            let rel = format!("bicycle_final/{c}_{k}.JPG");
            let list = if c <= 2 { &mut train } else { &mut test };
            list.push_str(&format!("{id} {c} 1 {rel}\n"));
            add(&format!("Stanford_Online_Products/{rel}"), &png(id));
        }
    }
    add("Stanford_Online_Products/Ebay_train.txt", train.as_bytes());
    add("Stanford_Online_Products/Ebay_test.txt", test.as_bytes());
    tar.into_inner().unwrap()
}

/// A registry entry `[datasets.<key>]` (`key` a TOML key, quoted as needed) for the SOP
/// archive at `tar`.
fn sop_entry(key: &str, tar: &Path) -> String {
    format!(
        "[datasets.{key}]\ntitle = \"t\"\nlicense = \"t\"\nroot = \"Stanford_Online_Products\"\n\
         layout = {{ kind = \"sop\" }}\nexpect = {{ images = 8, classes = 4 }}\n\
         [[datasets.{key}.files]]\nname = \"sop.tar\"\nurls = [\"file://{}\"]\n",
        tar.display()
    )
}

/// `s` as a TOML basic string (a JSON string is one: `\u0000` for NUL).
fn toml_key(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// The hostile forms, as (label, name); `abs` is the project's absolute victim.
fn hostile(abs: &str) -> Vec<(&'static str, String)> {
    vec![
        ("parent of parent", "../../victim".to_string()),
        ("absolute", abs.to_string()),
        ("nested", "a/b".to_string()),
        ("dot-dot", "..".to_string()),
        ("leading dash", "-rf".to_string()),
        ("empty", String::new()),
        ("NUL byte", "a\0b".to_string()),
        ("300 characters", "x".repeat(300)),
    ]
}

/// Runs `gl ARGS…` in `p` and checks that it fails, that its error contains each of `expect`,
/// and that no file changed (the catalogue aside); a description of what went wrong if not.
fn refused(p: &Project, args: &[&str], expect: &[&str]) -> Option<String> {
    let before = p.snapshot();
    let (code, out, err) = p.gl(args);
    let changed = changes(&before, &p.snapshot());
    let missing: Vec<&&str> = expect.iter().filter(|e| !err.contains(**e)).collect();
    (code == 0 || !missing.is_empty() || !changed.is_empty()).then(|| {
        format!(
            "gl {args:?}: exit {code}, error lacks {missing:?}\nchanged: {changed:#?}\n\
             stdout: {out}\nstderr: {err}"
        )
    })
}

/// Issue 36, fault 1: a registry entry whose name leaves `data/datasets/` — `gl fetch` of it
/// wrote `dataset.json` and `images.parquet` outside the data directory, and the staging swap
/// replaced (deleted) the directory the name resolved to. Now the registry is refused when it
/// is read, naming the file, the key and what is wrong with it, before anything is written;
/// in `pipeline/datasets.toml` and in `data/registry.d/`.
#[test]
fn a_registry_name_that_leaves_the_data_directory_is_refused_and_touches_nothing() {
    let archives = tempfile::tempdir().unwrap();
    let tar = archives.path().join("sop.tar");
    std::fs::write(&tar, sop_tar()).unwrap();
    let mut failures = Vec::new();
    for file in ["pipeline/datasets.toml", "data/registry.d/local.toml"] {
        for i in 0..hostile("/abs").len() {
            let p = Project::new(&sop_entry("fine", &tar));
            let (label, name) = hostile(&p.abs())[i].clone();
            let entry = sop_entry(&toml_key(&name), &tar);
            if file == "pipeline/datasets.toml" {
                p.write(file, &format!("{entry}\n{}", sop_entry("fine", &tar)));
            } else {
                p.write(file, &entry);
            }
            let shown = format!("{name:?}");
            // The fetch of the hostile name itself (a NUL cannot be an argument)…
            if !name.contains('\0') {
                let expect = ["dataset name", shown.as_str()];
                if let Some(f) = refused(&p, &["fetch", "--quiet", "--", &name], &expect) {
                    failures.push(format!("{file}, {label}: {f}"));
                }
            }
            // …and of its valid neighbour: the registry is read whole, and refused.
            let expect = [file, "dataset name", shown.as_str()];
            if let Some(f) = refused(&p, &["fetch", "--quiet", "fine"], &expect) {
                failures.push(format!("{file}, {label}, fetching `fine`: {f}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

/// Each command line with a name argument (`{}`: the hostile name) and the kind of name its
/// error must state. Options take the name after `=` and positionals after `--`, so a name
/// starting with `-` reaches the check instead of reading as an option.
const CLI_CASES: &[(&[&str], &str)] = &[
    (&["fetch", "--", "{}"], "dataset name"),
    (&["prepare", "--", "{}"], "dataset name"),
    (&["train", "--dataset={}"], "dataset name"),
    (&["train", "--dataset=fine", "--profile={}"], "profile name"),
    (&["train", "--dataset=fine", "--run-id={}"], "run id"),
    (
        &["synth", "--name={}", "--classes=2", "--per-class=1"],
        "synthetic set name",
    ),
    (&["weights", "--", "{}"], "weights entry name"),
    (
        &["embed", "r", "--weights={}", "--dataset=fine"],
        "weights entry name",
    ),
    (
        &["embed", "r", "--weights=w", "--dataset={}"],
        "dataset name",
    ),
    (
        &[
            "embed",
            "--model=untrained",
            "--weights=w",
            "--dataset=fine",
            "--",
            "{}",
        ],
        "run id",
    ),
    (&["ensemble", "--name=e", "--", "{}"], "run id"),
    (&["run", "--profile={}", "--dry-run"], "profile name"),
    (&["status", "--profile={}"], "profile name"),
    (&["report", "--profile={}"], "profile name"),
    (&["cancel", "--profile={}"], "profile name"),
];

/// Every command-line argument that is a name — `gl fetch`/`gl prepare` DATASET, `gl train
/// --dataset/--profile/--run-id`, `gl synth --name`, `gl weights NAME`, `gl embed RUN
/// --weights --dataset`, `gl ensemble RUNS`, `--profile` of `gl run/status/report/cancel` — is
/// refused in each hostile form before anything is written. (A NUL byte cannot be an argument:
/// the operating system's `execve` takes C strings; registry and profile files can hold one.)
#[test]
fn hostile_names_on_the_command_line_are_refused_before_anything_is_written() {
    let p = Project::new("[datasets.fine]\ntitle = \"t\"\nlicense = \"t\"\nlocal_root = \"x\"\nlayout = { kind = \"image_folder\" }\n");
    let mut failures = Vec::new();
    for (label, name) in hostile(&p.abs()) {
        if name.contains('\0') {
            continue;
        }
        let shown = format!("{name:?}");
        for (args, kind) in CLI_CASES {
            let args: Vec<String> = args.iter().map(|a| a.replace("{}", &name)).collect();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            if let Some(f) = refused(&p, &args, &[kind, &shown]) {
                failures.push(format!("{label}: {f}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

/// A profile's `datasets`, `weights` and `[released]` names, and the keys of
/// `pipeline/weights.toml`, in each hostile form: refused naming the file, the key and the name.
#[test]
fn hostile_names_in_a_profile_or_the_weights_registry_are_refused_naming_the_file() {
    let p = Project::new("[datasets.fine]\ntitle = \"t\"\nlicense = \"t\"\nlocal_root = \"x\"\nlayout = { kind = \"image_folder\" }\n");
    let weights = |key: &str| {
        format!(
            "[weights.{key}]\ntitle = \"t\"\nlicense = \"t\"\nbackbone = \"tiny_cnn\"\nfile = \"w.pth\"\n"
        )
    };
    let mut failures = Vec::new();
    for (label, name) in hostile(&p.abs()) {
        let (shown, key) = (format!("{name:?}"), toml_key(&name));
        let profiles = [
            (format!("datasets = [{key}]\nseeds = [0]\n[train]\nrecipe = \"r\"\n"), "dataset name"),
            (format!("datasets = [\"fine\"]\nweights = [{key}]\nseeds = [0]\n[train]\nrecipe = \"r\"\n"), "weights entry name"),
            (format!("datasets = [\"fine\"]\n[released]\nfine = {key}\n"), "weights entry name"),
            (format!("datasets = [\"fine\"]\nseeds = [0]\n[train]\nrecipe = \"r\"\n[released]\n{key} = \"w\"\n"), "dataset name"),
        ];
        for (text, kind) in profiles {
            p.write("pipeline/profiles/p.toml", &text);
            let expect = ["profiles/p.toml", kind, shown.as_str()];
            if let Some(f) = refused(&p, &["run", "--profile=p", "--dry-run"], &expect) {
                failures.push(format!("profile, {label}: {f}"));
            }
        }
        p.write(
            "pipeline/weights.toml",
            &format!("{}\n{}", weights(&key), weights("fine")),
        );
        let expect = ["weights.toml", "weights entry name", shown.as_str()];
        for args in [&["weights", "fine"][..], &["weights", "--list"]] {
            if let Some(f) = refused(&p, args, &expect) {
                failures.push(format!("weights.toml, {label}: {f}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}
