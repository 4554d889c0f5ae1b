//! The `gl` binary end to end: it starts without LD_LIBRARY_PATH (RUNPATH from build.rs), links
//! libtorch_cuda when the wheel has it, audits the golden vectors, rejects bad input with errors
//! that name the file and key, and its benchmark ends with SPEEDUP lines.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gl() -> Command {
    let mut c = Command::new(crate::common::gl_cli::bin());
    c.env_remove("LD_LIBRARY_PATH");
    c
}

fn run(c: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = c.output().expect("starting gl");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn golden() -> PathBuf {
    std::env::var_os("GL_GOLDEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/golden/group_loss")
        })
}

fn copy_golden(to: &Path) {
    for e in std::fs::read_dir(golden()).unwrap() {
        let p = e.unwrap().path();
        let dst = to.join(p.file_name().unwrap());
        std::fs::copy(&p, &dst).unwrap();
        let mut perm = std::fs::metadata(&dst).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
        std::fs::set_permissions(&dst, perm).unwrap();
    }
}

#[test]
fn help_lists_the_subcommands() {
    let (code, out, _) = run(gl().arg("--help"));
    assert_eq!(code, 0);
    for sub in ["env", "verify-loss", "bench"] {
        assert!(out.contains(sub), "`gl --help` does not list {sub}:\n{out}");
    }
}

#[test]
fn verify_loss_passes_all_six_official_cases() {
    let (code, out, err) = run(gl().arg("verify-loss").arg(golden()));
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let pass: Vec<&str> = out.lines().filter(|l| l.ends_with("PASS")).collect();
    assert_eq!(pass.len(), 6, "{out}");
    for name in [
        "cub",
        "cars",
        "sop_m2000",
        "cub_T3",
        "shuffled_T2",
        "no_anchors",
    ] {
        assert!(
            pass.iter().any(|l| l.starts_with(name)),
            "no line for {name}:\n{out}"
        );
    }
}

#[test]
fn verify_loss_fails_on_a_tampered_case() {
    let dir = tempfile::tempdir().unwrap();
    copy_golden(dir.path());
    let index = dir.path().join("cases.json");
    let text = std::fs::read_to_string(&index).unwrap();
    let mut cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    cases[1]["tau"] = serde_json::json!(70.0); // cars was made with τ = 79
    std::fs::write(&index, serde_json::to_string(&cases).unwrap()).unwrap();
    let (code, out, _) = run(gl().arg("verify-loss").arg(dir.path()));
    assert_eq!(code, 1, "{out}");
    let fail: Vec<&str> = out.lines().filter(|l| l.ends_with("FAIL")).collect();
    assert_eq!(fail.len(), 1, "{out}");
    assert!(fail[0].starts_with("cars"), "{out}");
}

#[test]
fn verify_loss_names_the_missing_file_and_key() {
    let (code, _, err) = run(gl().args(["verify-loss", "/nonexistent/golden"]));
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/golden"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("cases.json"),
        r#"[{"name":"tiny","anchors":1,"tau":2.0,"T":1,"m":3,"n":2}]"#,
    )
    .unwrap();
    let fc7 = tch::Tensor::zeros([2, 4], (tch::Kind::Double, tch::Device::Cpu));
    tch::Tensor::write_npz(&[("fc7", &fc7)], dir.path().join("tiny.npz")).unwrap();
    let (code, _, err) = run(gl().arg("verify-loss").arg(dir.path()));
    assert_eq!(code, 2);
    assert!(
        err.contains("tiny.npz") && err.contains("`logits` missing"),
        "{err}"
    );

    std::fs::write(dir.path().join("cases.json"), "[{").unwrap();
    let (code, _, err) = run(gl().arg("verify-loss").arg(dir.path()));
    assert_eq!(code, 2);
    assert!(err.contains("cases.json"), "{err}");
}

/// NEEDED entries and RUNPATH of an ELF file, via binutils' readelf.
fn dynamic_section(bin: &std::path::Path) -> Option<String> {
    let out = Command::new("readelf").arg("-d").arg(bin).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn binary_has_runpath_and_links_libtorch_cuda_when_the_wheel_has_it() {
    let bin = crate::common::gl_cli::bin();
    let dynamic = dynamic_section(&bin).expect("readelf (binutils) is needed for this check");
    let (code, env_out, err) = run(gl().arg("env"));
    assert_eq!(code, 0, "{err}");
    let dir_line = env_out
        .lines()
        .find(|l| l.starts_with("libtorch_dir: "))
        .unwrap();
    let libdir = dir_line.trim_start_matches("libtorch_dir: ");
    assert!(
        dynamic.contains("RUNPATH") && dynamic.contains(libdir),
        "{dynamic}\n{env_out}"
    );
    let wheel_has_cuda = Path::new(libdir).join("libtorch_cuda.so").exists();
    assert_eq!(
        dynamic.contains("[libtorch_cuda.so]"),
        wheel_has_cuda,
        "{dynamic}"
    );
    let want = if wheel_has_cuda {
        "libtorch_cuda: loaded"
    } else {
        "libtorch_cuda: absent"
    };
    assert!(env_out.lines().any(|l| l == want), "{env_out}");
}

#[test]
fn bench_loss_ends_with_two_speedup_lines() {
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference");
    let (code, out, err) = run(gl()
        .args([
            "bench",
            "loss",
            "--device",
            "cpu",
            "--repeats",
            "2",
            "--rounds",
            "1",
        ])
        .arg("--reference-dir")
        .arg(reference));
    assert_eq!(
        code, 0,
        "set GL_PYTHON to a python with torch (just does)\n{out}\n{err}"
    );
    let cpu = out
        .lines()
        .find(|l| l.starts_with("CPU "))
        .unwrap_or_default();
    assert!(
        cpu.contains("ATen") && cpu.contains("kernels"),
        "no CPU line:\n{out}"
    );
    let tail: Vec<&str> = out.lines().rev().take(2).collect();
    for (line, name) in tail.iter().rev().zip(["loss_cub", "loss_sop"]) {
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 3, "{line}");
        assert_eq!((parts[0], parts[1]), ("SPEEDUP", name), "{line}");
        let x: f64 = parts[2].parse().unwrap();
        assert!(x.is_finite() && x > 0.0, "{line}");
    }
}
