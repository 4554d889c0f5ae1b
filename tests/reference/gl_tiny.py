"""What the pytest files that drive `gl` share: this build's binary, the tiny recipe and profile
of the Rust tests (read from tests/it/common/tiny_pipeline.rs, so the two never drift apart),
and a project with the repository's pipeline files and the tiny synthetic set."""

import os
import pathlib
import re
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY_RS = REPO / "tests" / "it" / "common" / "tiny_pipeline.rs"


def gl_binary() -> pathlib.Path:
    """This build's `gl`: GL_TEST_BIN, else $CARGO_TARGET_DIR/debug/gl (what `just test` built
    before running pytest), else the shared target directory's."""
    target = os.environ.get("CARGO_TARGET_DIR") or str(
        pathlib.Path.home() / ".cache" / "grouploss" / "target"
    )
    for cand in (os.environ.get("GL_TEST_BIN"), os.path.join(target, "debug", "gl")):
        if cand and os.access(cand, os.X_OK):
            return pathlib.Path(cand)
    pytest.fail(
        f"no gl binary (GL_TEST_BIN, {target}/debug/gl): build it first with "
        "`cargo build --bin gl` (`just test` does)"
    )


def rust_str(name: str) -> str:
    """The raw string constant `name` of tests/it/common/tiny_pipeline.rs."""
    text = TINY_RS.read_text()
    m = re.search(rf'pub const {name}: &str = r#"(.*?)"#;', text, re.S)
    assert m, f"{TINY_RS}: no constant {name}"
    return m.group(1)


def gl(project, *args, env=None, ok=True) -> subprocess.CompletedProcess:
    """`gl --threads 1 ARGS --project-dir PROJECT`; asserts success unless `ok` is false."""
    run = subprocess.run(
        [str(gl_binary()), "--threads", "1", *args, "--project-dir", str(project)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )
    if ok:
        assert run.returncode == 0, f"gl {' '.join(args)}:\n{run.stdout}{run.stderr}"
    return run


def tiny_project(p: pathlib.Path, recipe: str = None) -> pathlib.Path:
    """`p` made a project: the repository's pipeline files, the tiny recipe (or `recipe`, in
    its place), the `tiny` profile, and the tiny synthetic set made by `gl synth` (not
    fetched)."""
    (p / "pipeline" / "profiles").mkdir(parents=True)
    for f in ("datasets.toml", "stages.toml", "published.toml"):
        shutil.copy(REPO / "pipeline" / f, p / "pipeline" / f)
    recipe = rust_str("TINY_RECIPE") if recipe is None else recipe
    (p / "pipeline" / "train.toml").write_text((REPO / "pipeline" / "train.toml").read_text() + recipe)
    (p / "pipeline" / "profiles" / "tiny.toml").write_text(rust_str("TINY_PROFILE"))
    gl(p, "synth", "--name", "tiny_synth", "--classes", "48", "--per-class", "8",
       "--size", "16", "--jitter", "60")
    return p
