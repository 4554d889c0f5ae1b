//! What survives what (docs/reliability.md): each fault class a hostile test found, done for
//! real — processes killed with signals, bytes flipped in stored files, a reader holding the
//! catalogue — and what `gl` must do about it: refuse naming the file, rebuild, or carry on.
#![cfg(feature = "catalog")] // `gl run`, `gl status` and the catalogue

use std::path::Path;

use crate::common::processes::{
    alive, held, held_run_lock, holder, log, signal, spawn_gl, wait_for,
};
use crate::common::tiny_pipeline;

use tiny_pipeline::{
    crops_file, flip, gl, inside_first_jpeg, prepared, project, ran, status, train_args,
    SLOW_PROFILE, TINY_PROFILE,
};

/// Runs `gl run <stage> --profile tiny` and checks it succeeded.
fn run_stage(p: &Path, stage: &str, extra: &[&str]) -> String {
    let mut a = vec!["run", stage, "--profile", "tiny"];
    a.extend_from_slice(extra);
    let (code, out, err) = gl(p, &a);
    assert_eq!(code, 0, "{out}{err}");
    out
}

#[test]
fn a_damaged_crop_cache_is_seen_refused_and_rebuilt() {
    let dir = prepared("tiny", TINY_PROFILE);
    let p = dir.path();
    let file = crops_file(p);
    let good = std::fs::read(&file).unwrap();
    let prepare_task = "prepare:tiny_synth/r32";
    assert_eq!(status(p, &[])[prepare_task], "fresh");

    // JPEG bytes altered, the Parquet still valid: status sees it, reading refuses it.
    flip(&file, inside_first_jpeg(&good));
    assert_eq!(status(p, &[])[prepare_task], "stale");
    let e = grouploss::data::crop_cache::read(&file, None).unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("crops.parquet") && e.contains("damaged") && e.contains("sha256"),
        "{e}"
    );

    // `gl run prepare --force` rebuilds it, to the same bytes as before.
    let out = run_stage(p, "prepare", &["--force"]);
    assert_eq!(ran(&out), ["prepare"], "{out}");
    assert!(
        std::fs::read(&file).unwrap() == good,
        "rebuilt to the same bytes"
    );
    assert_eq!(status(p, &[])[prepare_task], "fresh");

    // The Parquet footer broken: `gl prepare` does not call it up to date, it rebuilds.
    flip(&file, good.len() - 12);
    let (code, out, err) = gl(p, &["prepare", "tiny_synth", "--resize", "32", "--quiet"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("images prepared"), "{out}{err}");
    assert!(std::fs::read(&file).unwrap() == good);

    // An intact cache is reused, and rebuilt only with --force.
    let args = ["prepare", "tiny_synth", "--resize", "32", "--quiet"];
    let (_, out, _) = gl(p, &args);
    assert!(out.contains("cache up to date"), "{out}");
    let (_, out, _) = gl(p, &[&args[..], &["--force"]].concat());
    assert!(out.contains("images prepared"), "{out}");
}

/// `runs.status` of every run after `gl index-runs`, as "run_id status" lines.
fn reindexed_statuses(p: &Path) -> String {
    let (code, out, err) = gl(p, &["index-runs"]);
    assert_eq!(code, 0, "{out}{err}");
    tiny_pipeline::run_statuses(p)
}

#[test]
fn a_killed_coordinator_takes_its_task_with_it_and_the_run_reads_interrupted() {
    for sig in ["KILL", "TERM"] {
        let dir = prepared("slow", SLOW_PROFILE);
        let p = dir.path();
        let mut coordinator = spawn_gl(p, &["run", "--profile", "slow"], "run.log");
        let lock = wait_for(120, "gl train to take its run directory", || {
            held_run_lock(p)
        });
        let task = holder(&lock).expect("the lock names its holder");
        assert_ne!(task, coordinator.id(), "the task is a process of its own");
        assert!(alive(task));

        signal(coordinator.id(), sig);
        coordinator.wait().unwrap();
        wait_for(
            30,
            &format!("gl train to die with gl run (SIG{sig})"),
            || (!alive(task)).then_some(()),
        );
        // (The thread group leader reads as a zombie while the last threads still exit.)
        wait_for(
            10,
            &format!("the run directory's lock to be free: {}", log(p, "run.log")),
            || (!held(&lock)).then_some(()),
        );
        let statuses = reindexed_statuses(p);
        assert!(statuses.contains(" interrupted"), "SIG{sig}: {statuses}");
    }
}

#[test]
fn a_run_directory_has_one_writer_and_a_damaged_checkpoint_is_refused() {
    let dir = prepared("tiny", TINY_PROFILE);
    let p = dir.path();
    let train = |extra: &[&'static str]| {
        let mut a = train_args("x", &["--device", "cpu", "--set=epochs=500"]);
        a.extend_from_slice(extra);
        a
    };
    let run = p.join("data/runs/x");
    let mut first = spawn_gl(p, &train(&[]), "first.log");
    let state = || tiny_pipeline::run_state(&run);
    wait_for(120, "the first checkpoint", || {
        state().filter(|s| s["epoch"].as_u64() >= Some(1))
    });

    // A second writer (as a second `gl run` would start) is refused, naming the first.
    let (code, out, err) = gl(p, &train(&["--resume"]));
    assert_ne!(code, 0, "{out}{err}");
    let first_pid = format!("pid {}", first.id());
    assert!(
        err.contains("writer.lock") && err.contains(&first_pid),
        "{err}"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(reindexed_statuses(p).contains("x interrupted"));

    // One flipped byte in the committed checkpoint: resuming refuses it, naming the file.
    let epoch = state().unwrap()["epoch"].as_u64().unwrap() as usize;
    let model = run
        .join(format!("checkpoint-e{epoch:03}"))
        .join("model.safetensors");
    let len = std::fs::metadata(&model).unwrap().len() as usize;
    flip(&model, len - 100);
    let (code, out, err) = gl(p, &train(&["--resume"]));
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("model.safetensors") && err.contains("sha256") && err.contains("state.json"),
        "{err}"
    );
    assert!(reindexed_statuses(p).contains("x failed"));
    assert!(run.join("failed.json").is_file());
}

/// A tar.gz at `path` holding `entries` (name, bytes).
fn tar_gz(path: &Path, entries: &[(&str, Vec<u8>)]) {
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::default(),
    );
    let mut tar = tar::Builder::new(gz);
    for (name, bytes) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, bytes.as_slice()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

/// Names under `data/datasets/` that a fetch stages in and must not leave behind.
fn leftovers(p: &Path) -> Vec<String> {
    std::fs::read_dir(p.join("data/datasets"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".staging-") || n.contains(".old-"))
        .collect()
}

#[test]
fn an_archive_bomb_is_stopped_and_a_failed_fetch_leaves_nothing_behind() {
    let dir = project();
    let p = dir.path();
    let (code, out, err) = gl(p, &["fetch", "tiny_synth", "--quiet"]);
    assert_eq!(code, 0, "{out}{err}");
    let before = tiny_pipeline::files(&p.join("data/datasets/tiny_synth"));

    // 100 MB of zeros in a ≈ 100 kB archive: over the default ratio limit (200×).
    let bomb = p.join("bomb.tar.gz");
    tar_gz(&bomb, &[("bomb/zeros.bin", vec![0; 100 << 20])]);
    // Three files where the dataset allows two: a per-dataset limit.
    let many = p.join("many.tar.gz");
    let three: Vec<_> = (0..3)
        .map(|i| (["many/a", "many/b", "many/c"][i], vec![1u8; 10]))
        .collect();
    tar_gz(&many, &three);
    let entry = |name: &str, extra: &str, file: &Path| {
        format!(
            "[datasets.{name}]\ntitle = \"t\"\nlicense = \"l\"\nroot = \"{name}\"\n\
             layout = {{ kind = \"sop\" }}\n{extra}\n[[datasets.{name}.files]]\n\
             name = \"{name}.tar.gz\"\nurls = [\"file://{}\"]\n",
            file.display()
        )
    };
    let reg = p.join("data/registry.d");
    std::fs::write(reg.join("bomb.toml"), entry("bomb", "", &bomb)).unwrap();
    let limits = "limits = { max_files = 2 }";
    std::fs::write(reg.join("many.toml"), entry("many", limits, &many)).unwrap();
    for (name, says) in [("bomb", "zeros.bin"), ("many", "many/c")] {
        let (code, out, err) = gl(p, &["fetch", name, "--quiet"]);
        assert_ne!(code, 0, "{out}{err}");
        assert!(err.contains(says) && err.contains("limit"), "{name}: {err}");
        assert!(!p.join("data/datasets").join(name).exists());
        assert_eq!(leftovers(p), Vec::<String>::new());
    }

    // A new source archive whose lists do not parse.
    let archive = p.join("data/synth/tiny_synth.tar");
    let mut tar = tar::Builder::new(std::fs::File::create(&archive).unwrap());
    for name in ["Ebay_train.txt", "Ebay_test.txt"] {
        let bytes = b"not an index\n";
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(
            &mut h,
            format!("Stanford_Online_Products/{name}"),
            &bytes[..],
        )
        .unwrap();
    }
    tar.into_inner().unwrap();
    // The archive was pinned at its first fetch: the changed one is refused by its checksum…
    std::fs::remove_dir_all(p.join("data/downloads/tiny_synth")).unwrap();
    let fetch = ["fetch", "tiny_synth", "--force", "--quiet"];
    let (code, out, err) = gl(p, &fetch);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("checksum mismatch"), "{err}");
    // …and once the pin is dropped (a new release accepted), its lists fail to parse in
    // staging: the fetched dataset stays as it was and nothing is left behind.
    std::fs::remove_file(p.join("pipeline/datasets.lock")).unwrap();
    let (code, out, err) = gl(p, &fetch);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("parsing") && err.contains("Ebay_train.txt"),
        "{err}"
    );
    assert!(tiny_pipeline::files(&p.join("data/datasets/tiny_synth")) == before);
    assert_eq!(leftovers(p), Vec::<String>::new());
}

/// A reader of the catalogue (a long `gl sql`) never makes a writer fail, and a writer that
/// finds the catalogue held waits, saying so, instead of failing.
#[test]
fn a_long_reader_does_not_break_writers_and_a_held_catalogue_is_waited_for() {
    let dir = project();
    let p = dir.path();
    run_stage(p, "fetch", &[]);
    let q =
        "select count(*) from range(100000000) a, range(100000000) b where a.range = b.range + 1";
    let mut reader = spawn_gl(p, &["sql", q], "sql.log");
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(
        reader.try_wait().unwrap().is_none(),
        "{}",
        log(p, "sql.log")
    );
    let out = run_stage(p, "fetch", &["--force"]);
    assert_eq!(ran(&out), ["fetch"], "{out}");
    assert!(
        reader.try_wait().unwrap().is_none(),
        "{}",
        log(p, "sql.log")
    );
    reader.kill().unwrap();
    reader.wait().unwrap();

    // Another writer (this test process) holds the catalogue: `gl run` waits, saying so, and
    // goes on once it is free.
    let catalogue = grouploss::catalog::Catalog::open(p.join("data/catalog.duckdb")).unwrap();
    let mut writer = spawn_gl(
        p,
        &["run", "fetch", "--profile", "tiny", "--force"],
        "run.log",
    );
    wait_for(30, "gl run to say it waits", || {
        log(p, "run.log")
            .contains("waiting for the catalogue")
            .then_some(())
    });
    assert!(
        writer.try_wait().unwrap().is_none(),
        "{}",
        log(p, "run.log")
    );
    drop(catalogue);
    assert!(writer.wait().unwrap().success(), "{}", log(p, "run.log"));
    assert_eq!(status(p, &[])["fetch:tiny_synth"], "fresh");
}

/// `n` PNG images of class `k` (a colour of its own, jittered) in `dir`.
fn class_folder(dir: &Path, k: u32, n: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        let img = image::RgbImage::from_fn(20, 20, |x, y| {
            let c = |s: u32| ((k * s + i * 7 + (x ^ y) * 3) % 256) as u8;
            image::Rgb([c(37), c(91), c(53)])
        });
        img.save(dir.join(format!("{i}.png"))).unwrap();
    }
}

/// The "Your own images" path of docs/datasets.md: a registry entry with its training values beside it,
/// a profile naming the dataset, the project's `train.toml` untouched.
const MINE_ENTRY: &str = r#"
[datasets.mine]
title = "my images"
license = "mine"
local_root = "ROOT"
layout = { kind = "image_folder", split = { rule = "class_halves" } }

[datasets.mine.train]
backbone = "tiny_cnn"
init = "none"
classes_per_batch = 4
samples_per_class = 3
input_size = 24
resize = 32
loader_threads = 1
eval_batch = 64
"#;

const MINE_PROFILE: &str = r#"
description = "my images, one quick run"
datasets = ["mine"]
seeds = [0]
device = "cpu"
ensemble = false

[train]
recipe = "demo"
set = ['epochs=1', 'val_fraction=0.25']
"#;

#[test]
fn own_images_go_from_a_folder_to_a_report_and_a_new_class_relabels_nothing() {
    let dir = tiny_pipeline::bare_project("");
    let p = dir.path();
    let images = p.join("photos");
    for k in 1..=16 {
        class_folder(&images.join(format!("class_{k:02}")), k, 5);
    }
    std::fs::create_dir_all(p.join("data/registry.d")).unwrap();
    let entry = MINE_ENTRY.replace("ROOT", &images.display().to_string());
    std::fs::write(p.join("data/registry.d/mine.toml"), entry).unwrap();
    std::fs::write(p.join("pipeline/profiles/mine.toml"), MINE_PROFILE).unwrap();

    // A file name that is not UTF-8 fails the fetch naming the file, not "images are missing".
    use std::os::unix::ffi::OsStrExt;
    let bad = images
        .join("class_03")
        .join(std::ffi::OsStr::from_bytes(b"caf\xe9.png"));
    std::fs::copy(images.join("class_03/0.png"), &bad).unwrap();
    let (code, out, err) = gl(p, &["fetch", "mine", "--quiet"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("class_03") && err.contains("UTF-8") && !err.contains("missing"),
        "{err}"
    );
    std::fs::remove_file(&bad).unwrap();
    // A directory named like an image is no image: skipped, with a warning naming it.
    std::fs::create_dir_all(images.join("class_04/x.jpg")).unwrap();
    let (code, out, err) = gl(p, &["fetch", "mine"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(format!("{out}{err}").contains("x.jpg"), "{out}{err}");

    // The whole pipeline and the report, with the project's train.toml as it came.
    let (code, out, err) = gl(p, &["run", "--profile", "mine"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(ran(&out).contains(&"train".to_string()), "{out}");
    let (code, out, err) = gl(p, &["report", "--profile", "mine"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(p.join("reports/mine").read_dir().unwrap().next().is_some());

    // A class folder that sorts first renumbers every class: the dataset and its crops are
    // rebuilt, and every crop carries the class id the index gives its image.
    class_folder(&images.join("class_00"), 0, 5);
    for stage in ["fetch", "prepare"] {
        let (code, out, err) = gl(p, &["run", stage, "--profile", "mine"]);
        assert_eq!(code, 0, "{out}{err}");
        assert_eq!(ran(&out), [stage], "{out}");
    }
    let index =
        grouploss::data::index_file::read(&p.join("data/datasets/mine/images.parquet")).unwrap();
    let class_of: std::collections::HashMap<i64, i64> = index
        .images
        .iter()
        .map(|e| (e.image_id, e.class_id))
        .collect();
    assert_eq!(class_of.len(), 17 * 5);
    // The cache of the dataset as it is now: the newest (the one before stays, keyed by the
    // old fingerprint).
    let newest = std::fs::read_dir(p.join("data/cache/mine"))
        .unwrap()
        .map(|e| e.unwrap().path().join("crops.parquet"))
        .max_by_key(|f| std::fs::metadata(f).unwrap().modified().unwrap())
        .unwrap();
    let crops = grouploss::data::crop_cache::read(&newest, None).unwrap();
    assert_eq!(crops.len(), 17 * 5);
    for c in &crops {
        assert_eq!(class_of[&c.image_id], c.class_id, "image {}", c.image_id);
    }
}
