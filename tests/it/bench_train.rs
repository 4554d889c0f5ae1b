//! `gl bench train` end to end on the small registered backbone: it checks that both sides
//! compute the same first step, prints the loader comparison and a SPEEDUP line; and a reference
//! that computes another loss (τ changed on its side only) fails the command before any timing.

use crate::common::gl_cli;

use std::path::Path;
use std::process::Command;

fn bench_train(env: &[(&str, &str)]) -> (i32, String, String) {
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference");
    let out = Command::new(crate::common::gl_cli::bin())
        .args([
            "bench",
            "train",
            "--backbones",
            "tiny_cnn",
            "--device",
            "cpu",
            "--steps",
            "2",
            "--rounds",
            "2",
            "--loader-batches",
            "1",
        ])
        .arg("--reference-dir")
        .arg(reference)
        .envs(env.iter().copied())
        .output()
        .expect("starting gl");
    gl_cli::collect(out)
}

#[test]
fn tiny_cnn_step_agrees_and_ends_with_a_speedup_line() {
    let (code, out, err) = bench_train(&[]);
    assert_eq!(
        code, 0,
        "set GL_PYTHON to a python with torch (just does)\n{out}\n{err}"
    );
    let loss_line = out
        .lines()
        .find(|l| l.contains("check step: loss"))
        .unwrap_or_else(|| panic!("no check-step line:\n{out}"));
    assert!(loss_line.starts_with("tiny_cnn 32×32"), "{loss_line}");
    let loader = out
        .lines()
        .find(|l| l.starts_with("loader "))
        .unwrap_or_else(|| panic!("no loader line:\n{out}"));
    assert!(
        loader.contains(" img/s vs train step ") && loader.contains("(ratio "),
        "{loader}"
    );
    // Two rounds, taking turns with one long-lived reference: a ratio per round.
    let rounds = out
        .lines()
        .find_map(|l| l.strip_prefix("tiny_cnn: per round, reference / gl: "))
        .unwrap_or_else(|| panic!("no per-round line:\n{out}"));
    let ratios: Vec<f64> = rounds.split(' ').map(|r| r.parse().unwrap()).collect();
    assert!(
        ratios.len() == 2 && ratios.iter().all(|r| r.is_finite() && *r > 0.0),
        "{rounds}"
    );
    let last = out.lines().last().unwrap_or_default();
    let parts: Vec<&str> = last.split(' ').collect();
    assert_eq!(parts.len(), 3, "{last}");
    assert_eq!(
        (parts[0], parts[1]),
        ("SPEEDUP", "train_step_tiny_cnn"),
        "{last}"
    );
    let x: f64 = parts[2].parse().unwrap();
    assert!(x.is_finite() && x > 0.0, "{last}");
}

#[test]
fn a_reference_computing_another_loss_fails_before_timing() {
    let (code, out, err) = bench_train(&[("GL_FAULT_REFERENCE_TAU", "1")]);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        err.contains("tiny_cnn: first-step loss") && err.contains("nothing was timed"),
        "{err}"
    );
    assert!(!out.contains("SPEEDUP"), "{out}");
}
