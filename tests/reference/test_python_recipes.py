"""docs/python.md's recipes, run as they are written.

Every ```sh and ```python block of docs/python.md runs here, in the order of the page, in a
tiny project that `gl` itself made (the synthetic set and the `tiny` profile of the Rust tests,
tests/it/common/tiny_pipeline.rs): the shell blocks with this build's `gl` first on PATH, the
Python blocks of each `##` section in a fresh namespace, as a notebook cell would. What a
recipe leaves behind is then checked against `gl sql`, which reads the live catalogue through
gl's own code: a recipe that goes wrong, or a page that drifts from the code, fails here.
"""

import json
import os
import pathlib
import subprocess

import numpy as np
import pytest

from gl_tiny import REPO, gl_binary, tiny_project
from gl_tiny import gl as run_gl

DOC = REPO / "docs" / "python.md"


def blocks():
    """(section, language, first line, code) of every fenced sh/python block of the page."""
    out, section, fence = [], None, None
    for i, line in enumerate(DOC.read_text().splitlines(), 1):
        if fence is None and line.startswith("## "):
            section = line[3:].strip()
        elif fence is None and line.startswith("```"):
            fence = (line[3:].strip(), i + 1, [])
        elif fence is not None and line.startswith("```"):
            lang, start, body = fence
            if lang in ("sh", "python"):
                out.append((section, lang, start, "\n".join(body) + "\n"))
            fence = None
        elif fence is not None:
            fence[2].append(line)
    return out


def sections():
    """The `##` sections that hold Python, in page order."""
    seen = []
    for section, lang, _, _ in blocks():
        if lang == "python" and section not in seen:
            seen.append(section)
    return seen


def gl(project, *args):
    return run_gl(project, *args).stdout


def gl_sql(project, query):
    """Rows of `query` on the live catalogue, as `gl sql --format json` gives them."""
    return json.loads(gl(project, "sql", query, "--format", "json"))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The tiny pipeline run to its report, then the page's shell blocks run in it."""
    p = tiny_project(tmp_path_factory.mktemp("recipes"))
    gl(p, "run", "--profile", "tiny")
    env = dict(os.environ, PATH=f"{gl_binary().parent}:{os.environ['PATH']}",
               GL_PROJECT_DIR=str(p), GL_THREADS="1")
    for section, lang, start, code in blocks():
        if lang == "sh":
            run = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=p, env=env,
                                 capture_output=True, text=True)
            assert run.returncode == 0, f"docs/python.md:{start} ({section}):\n{run.stderr}"
    return p


def run_section(section, project, monkeypatch):
    """Runs the Python blocks of `section` in one fresh namespace in the project directory."""
    monkeypatch.chdir(project)
    ns = {"__name__": "__recipe__"}
    for sec, lang, start, code in blocks():
        if sec == section and lang == "python":
            exec(compile("\n" * (start - 1) + code, str(DOC), "exec"), ns)
    return ns


def check_duckdb(ns, project):
    want = gl_sql(project, "select run_id, objective, seed, status from runs order by run_id")
    assert [tuple(r.values()) for r in want] == ns["runs"]
    assert len(want) > 0


def check_polars(ns, project):
    want = gl_sql(
        project,
        "select r.objective, avg(m.value) as recall_at_1, count(*) as runs from runs r "
        "join metrics m on m.subject = r.run_id where m.model = 'selected' "
        "and m.split = 'test' and m.metric = 'recall@1' group by r.objective order by 1",
    )
    got = ns["by_objective"].to_dicts()
    assert [r["objective"] for r in got] == [r["objective"] for r in want]
    for g, w in zip(got, want):
        assert g["runs"] == w["runs"]
        assert g["recall@1"] == pytest.approx(w["recall_at_1"], abs=1e-12)


def check_pandas(ns, project):
    wide = ns["wide"]
    rows = gl_sql(
        project,
        "select subject, metric, value from metrics where model = 'selected' and split = 'test'",
    )
    assert len(rows) > 0
    assert wide.shape == (len({r["subject"] for r in rows}), len({r["metric"] for r in rows}))
    for r in rows:
        assert wide.loc[r["subject"], r["metric"]] == pytest.approx(r["value"], abs=1e-12)


def check_recipe_runs(ns, project):
    table = ns["table"]
    recipe = ns["recipe"]
    runs = gl_sql(project, f"select run_id from runs where profile = '{recipe}'")
    assert len(runs) > 0
    assert sorted(table["run_id"]) == sorted(r["run_id"] for r in runs)
    rows = gl_sql(
        project,
        "select run_id, metric, value from runs r join metrics m on m.subject = r.run_id "
        f"where r.profile = '{recipe}' and m.model = 'selected' and m.split = 'test'",
    )
    by_run = table.set_index("run_id")
    shown = {"recall@1", "map@r", "r_precision", "nmi"}
    assert shown <= set(by_run.columns)
    checked = 0
    for r in rows:
        if r["metric"] in shown:
            assert by_run.loc[r["run_id"], r["metric"]] == pytest.approx(r["value"], abs=1e-12)
            checked += 1
    assert checked == len(shown) * len(runs), "every run of the tiny recipe has its metrics"


def check_embeddings(ns, project):
    emb = gl_sql(
        project,
        f"select n_rows, dim from embeddings where subject = '{ns['run_id']}' "
        "and model = 'selected' and split = 'test'",
    )
    assert len(emb) == 1
    vectors = ns["vectors"]
    assert isinstance(vectors, np.ndarray) and vectors.dtype == np.float32
    assert vectors.shape == (emb[0]["n_rows"], emb[0]["dim"])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert ns["class_ids"].shape == (emb[0]["n_rows"],)
    (r1,) = gl_sql(
        project,
        f"select value from metrics where subject = '{ns['run_id']}' and model = 'selected' "
        "and split = 'test' and metric = 'recall@1'",
    )
    # Recall@1 recomputed in NumPy from the file equals gl's (a tie may rank one query apart).
    assert ns["recall_at_1"] == pytest.approx(r1["value"], abs=1.0 / len(vectors) + 1e-9)


CHECKS = {
    "The catalogue in DuckDB": check_duckdb,
    "In polars": check_polars,
    "In pandas": check_pandas,
    "Which runs of a recipe, with which metrics": check_recipe_runs,
    "A run's embeddings in NumPy": check_embeddings,
}


def test_the_pages_snapshot_is_one_read_only_file(project):
    snap = project / "notebooks" / "catalog.duckdb"
    assert snap.is_file() and not (snap.parent / (snap.name + ".wal")).exists()
    assert snap.stat().st_mode & 0o777 == 0o444
    assert sorted(f.name for f in snap.parent.iterdir()) == ["catalog.duckdb"]


def test_every_section_with_python_has_a_check():
    assert set(sections()) == set(CHECKS), "docs/python.md and CHECKS name other sections"


@pytest.mark.parametrize("section", sections())
def test_recipe(section, project, monkeypatch):
    ns = run_section(section, project, monkeypatch)
    CHECKS[section](ns, project)
