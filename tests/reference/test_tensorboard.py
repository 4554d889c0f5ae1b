"""The TensorBoard event files of a tiny ``gl train``, read back with the ``tensorboard``
package's own reader (``EventAccumulator``) and the HParams plugin's own parsers: every
per-epoch scalar equals its number in ``epochs.jsonl``, the per-step losses average to the
epoch's loss, the learning rates are the epoch's, and the HParams session start carries
``config.json``'s recipe (its end: success, or failure for a run that failed)."""

import json
import math
from pathlib import Path

import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import api_pb2, metadata

from gl_tiny import gl, rust_str, tiny_project


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The tiny project of the Rust tests, trained 2 epochs (a milestone at 2: two learning
    rates to log), its synthetic set fetched."""
    recipe = rust_str("TINY_RECIPE").replace("epochs = 1", "epochs = 2")
    recipe = recipe.replace("lr_milestones = []", "lr_milestones = [2]")
    p = tiny_project(tmp_path_factory.mktemp("tb"), recipe)
    gl(p, "fetch", "tiny_synth")
    return p


def train(project: Path, run_id: str, *extra: str, env=None, ok=True) -> Path:
    args = ["train", "--dataset", "tiny_synth", "--profile", "tiny", "--run-id", run_id,
            "--device", "cpu", "--quiet", *extra]
    gl(project, *args, env=env, ok=ok)
    return project / "data/runs" / run_id


def accumulator(run: Path, files: int = 1) -> event_accumulator.EventAccumulator:
    """Every event of the run's event files (`files` of them), through tensorboard's reader."""
    found = sorted((run / "tensorboard").iterdir())
    assert len(found) == files, found
    assert all("tfevents" in f.name for f in found), found
    acc = event_accumulator.EventAccumulator(str(run / "tensorboard"), size_guidance={
        event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0})
    acc.Reload()
    return acc


def scalars(acc, tag: str) -> dict:
    return {e.step: e.value for e in acc.Scalars(tag)}


def close(a: float, b: float) -> bool:
    """Equal as TensorBoard stores a scalar (float32)."""
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-7)


def epochs_of(run: Path) -> list:
    return [json.loads(l) for l in (run / "epochs.jsonl").read_text().splitlines()]


def hparams_of(acc) -> dict:
    """tag → HParamsPluginData content of the run, parsed by the plugin's own functions."""
    return acc.PluginTagToContent(metadata.PLUGIN_NAME)


def expected_hparams(config: dict) -> dict:
    """What the recipe of ``config.json`` becomes in the HParams tab."""
    out = {k: config[k] for k in ["dataset", "profile", "seed"]}
    for k, v in config["train"].items():
        if v is None:
            continue
        out[k] = json.dumps(v, separators=(",", ":")) if isinstance(v, (list, dict)) else v
    return out


def value_of(v):
    kind = v.WhichOneof("kind")
    return {"number_value": v.number_value, "string_value": v.string_value,
            "bool_value": v.bool_value}[kind]


def test_a_tiny_training_writes_the_scalars_of_epochs_jsonl(project):
    run = train(project, "tb")
    acc = accumulator(run)
    epochs = epochs_of(run)
    config = json.loads((run / "config.json").read_text())
    ks = config["train"]["recall_ks"]
    assert len(epochs) == 2
    tags = set(acc.Tags()["scalars"])
    for r in epochs:
        e = r["epoch"]
        for field in ["loss", "loss_group", "loss_ce", "lr", "images_per_second",
                      "train_seconds", "eval_seconds"]:
            got = scalars(acc, f"epoch/{field}")[e]
            assert close(got, r[field]), (field, e, got, r[field])
        for split in ["val", "test"]:
            assert r[f"{split}_recall"], r
            for k, x in zip(ks, r[f"{split}_recall"]):
                assert close(scalars(acc, f"{split}/recall@{k}")[e], x), (split, k, e)
            assert close(scalars(acc, f"{split}/map_at_r")[e], r[f"{split}_map_at_r"])
    # Per step: one point per batch, numbered across epochs; they average to the epoch's mean.
    steps = scalars(acc, "train/loss")
    assert sorted(steps) == list(range(1, sum(r["batches"] for r in epochs) + 1))
    first = 0
    for r in epochs:
        span = range(first + 1, first + r["batches"] + 1)
        first += r["batches"]
        for tag, field in [("train/loss", "loss"), ("train/loss_group", "loss_group"),
                           ("train/loss_ce", "loss_ce")]:
            mean = sum(scalars(acc, tag)[s] for s in span) / len(span)
            assert math.isclose(mean, r[field], rel_tol=1e-5), (tag, r["epoch"], mean)
        for s in span:
            assert close(scalars(acc, "lr/body")[s], r["lr"])
            assert scalars(acc, "time/step_seconds")[s] > 0
    lr_classifier = scalars(acc, "lr/classifier")
    assert len(lr_classifier) == len(steps) and all(v > 0 for v in lr_classifier.values())
    assert {"time/data_seconds", "train/loss_group", "train/loss_ce"} <= tags, tags


def test_the_hparams_are_the_recipe_of_config_json(project):
    run = project / "data/runs/tb"
    if not run.exists():
        run = train(project, "tb")
    acc = accumulator(run)
    content = hparams_of(acc)
    config = json.loads((run / "config.json").read_text())
    want = expected_hparams(config)

    start = metadata.parse_session_start_info_plugin_data(
        content[metadata.SESSION_START_INFO_TAG])
    got = {k: value_of(v) for k, v in start.hparams.items()}
    assert got == want

    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    assert {h.name for h in experiment.hparam_infos} == set(want)
    types = {h.name: h.type for h in experiment.hparam_infos}
    assert types["lr"] == api_pb2.DATA_TYPE_FLOAT64
    assert types["objective"] == api_pb2.DATA_TYPE_STRING
    assert types["hflip"] == api_pb2.DATA_TYPE_BOOL
    metric = experiment.metric_infos[0]
    assert metric.name.tag == "val/map_at_r"
    assert metric.dataset_type == api_pb2.DATASET_VALIDATION
    # Every metric of the experiment is a scalar series of the run.
    assert {m.name.tag for m in experiment.metric_infos} <= set(acc.Tags()["scalars"])

    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS
    assert end.end_time_secs >= start.start_time_secs > 0


def test_a_failed_run_keeps_its_committed_epochs_and_ends_no_session(project):
    """TensorBoard keeps the first session end of a run: a failed attempt writes none, so the
    resume that completes it can (next test)."""
    run = train(project, "nan", env={"GL_FAULT_NAN_AT_EPOCH": "2"}, ok=False)
    acc = accumulator(run)
    epochs = epochs_of(run)
    assert [r["epoch"] for r in epochs] == [1]
    assert sorted(scalars(acc, "epoch/loss")) == [1]
    assert close(scalars(acc, "epoch/loss")[1], epochs[0]["loss"])
    # The failed epoch's steps were logged up to the failing one (its first).
    assert sorted(scalars(acc, "train/loss")) == list(range(1, epochs[0]["batches"] + 1))
    content = hparams_of(acc)
    assert metadata.SESSION_START_INFO_TAG in content
    assert metadata.SESSION_END_INFO_TAG not in content, "no end for a failed run"


def test_a_resumed_run_writes_a_second_file_and_ends_its_session_as_completed(project):
    """A run that failed at epoch 2, resumed: its first file is kept, a second one holds the
    rest, and TensorBoard's reader sees every epoch once and the session's end as success."""
    env = {"GL_FAULT_NAN_AT_EPOCH": "2"}
    run = train(project, "resumed", env=env, ok=False)
    first = sorted((run / "tensorboard").iterdir())
    train(project, "resumed", "--resume")
    acc = accumulator(run, files=2)
    assert sorted((run / "tensorboard").iterdir())[0] == first[0], "the first file is kept"
    epochs = epochs_of(run)
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert [e.step for e in acc.Scalars("epoch/loss")] == [1, 2], "each epoch once"
    total = sum(r["batches"] for r in epochs)
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, total + 1))
    losses = scalars(acc, "epoch/loss")
    for r in epochs:
        assert close(losses[r["epoch"]], r["loss"])
    end = metadata.parse_session_end_info_plugin_data(
        hparams_of(acc)[metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_SUCCESS


def test_a_log_that_cannot_be_written_warns_and_training_goes_on(project):
    run = project / "data/runs/nolog"
    run.mkdir(parents=True)
    (run / "tensorboard").write_text("a file where the log directory would be\n")
    out = gl(project, "train", "--dataset", "tiny_synth", "--profile", "tiny", "--run-id",
             "nolog", "--device", "cpu", "--quiet")
    assert "TensorBoard log stopped" in out.stderr, out.stderr
    assert str(run / "tensorboard") in out.stderr, out.stderr
    assert [r["epoch"] for r in epochs_of(run)] == [1, 2]
    assert (run / "run.json").is_file()
    assert (run / "tensorboard").read_text() == "a file where the log directory would be\n"
