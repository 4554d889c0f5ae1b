"""Checks of the reference training step that ``gl bench train`` times against: the safetensors
reader, the models' variable names (gl's), and one bench run end to end."""
from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys

import pytest
import torch

import serve
import train_step_ref as ref


@pytest.fixture(autouse=True)
def float32_default():
    """pair_losses_ref and proxy_losses_ref make float64 torch's default when imported (the
    golden tests collect them first); gl writes f32 weights and batches, and a reference
    subprocess starts at torch's own default, so these tests run at float32."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(old)


def test_safetensors_round_trip(tmp_path):
    tensors = {
        "a": torch.randn(3, 4),
        "b.c": torch.arange(5, dtype=torch.int64),
        "d": torch.randn(2, 1, 3, dtype=torch.float64),
    }
    ref.write_safetensors(tmp_path / "x.safetensors", tensors)
    back = ref.read_safetensors(tmp_path / "x.safetensors")
    assert set(back) == set(tensors)
    for k, t in tensors.items():
        assert back[k].dtype == t.dtype and torch.equal(back[k], t)


def test_tiny_cnn_has_gl_variable_names():
    keys = {k for k in ref.TinyCnn().state_dict() if not k.endswith("num_batches_tracked")}
    want = {f"s{i}.conv.weight" for i in range(4)} | {
        f"s{i}.bn.{p}" for i in range(4) for p in ("weight", "bias", "running_mean", "running_var")
    }
    assert keys == want


@pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite_pytorch") is None,
    reason="efficientnet-lite-pytorch not installed",
)
def test_efficientnet_lite0_features_without_the_imagenet_head():
    module, features, dim = ref.build_backbone("efficientnet_lite0")
    assert dim == 1280
    assert not any(k.startswith("_fc.") for k in module.state_dict())
    module.eval()
    with torch.no_grad():
        f = features(module, torch.randn(2, 3, 64, 64))
    assert f.shape == (2, 1280)


def _tiny_problem(tmp_path, m=100):
    torch.manual_seed(0)
    net = ref.Net(ref.TinyCnn(), lambda mod, x: mod(x), 128, m)
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    ref.write_safetensors(tmp_path / "w.safetensors", state)
    labels = torch.tensor([3, 17, 42, 55, 70, 99]).repeat_interleave(9)
    ref.write_safetensors(tmp_path / "i.safetensors", {"images": torch.randn(54, 3, 32, 32), "labels": labels})
    return ["bench", "--backbone=tiny_cnn", f"--weights={tmp_path / 'w.safetensors'}",
            f"--inputs={tmp_path / 'i.safetensors'}", "--threads=1", "--steps=2"]


def test_bench_is_deterministic_and_learns(tmp_path, capsys):
    args = _tiny_problem(tmp_path)
    runs = []
    for _ in range(2):
        assert ref.main(args) == 0
        runs.append(json.loads(capsys.readouterr().out))
    a, b = runs
    assert a["losses"] == b["losses"] and a["first_update_norm"] == b["first_update_norm"]
    assert len(a["losses"]) == 3 and a["first_loss"] == a["losses"][0]
    assert a["first_update_norm"] > 0 and a["step_s"] > 0
    assert a["losses"][-1] < a["losses"][0]


def test_weights_of_another_model_are_refused(tmp_path):
    args = _tiny_problem(tmp_path)
    state = ref.read_safetensors(tmp_path / "w.safetensors")
    state["backbone.s9.conv.weight"] = state.pop("backbone.s3.conv.weight")
    ref.write_safetensors(tmp_path / "w.safetensors", state)
    with pytest.raises(SystemExit, match="missing.*s3.conv.weight.*unexpected.*s9.conv.weight"):
        ref.main(args)


def test_a_backbone_without_a_model_is_skipped(tmp_path, capsys):
    args = _tiny_problem(tmp_path)
    args[1] = "--backbone=no_such_net"
    assert ref.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert "no_such_net" in out["skipped"]


def test_serve_continues_the_same_run_round_after_round(tmp_path, capsys):
    """Serve mode: the check step's reply, then one reply per 'round'; the steps continue one
    training run, so two rounds of one step equal one bench of two steps."""
    args = _tiny_problem(tmp_path)
    assert ref.main(args) == 0
    once = json.loads(capsys.readouterr().out)
    serve_args = ["serve", *args[1:-1], "--steps=1"]
    proc = subprocess.run(
        [sys.executable, ref.__file__, *serve_args],
        input="round\nnonsense\nround\nquit\nround\n",
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    replies = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(replies) == 4, proc.stdout
    ready, first, error, second = replies
    assert ready["first_loss"] == once["first_loss"]
    assert ready["first_update_norm"] == once["first_update_norm"]
    assert "nonsense" in error["error"]
    assert [ready["first_loss"], *first["losses"], *second["losses"]] == once["losses"]
    assert len(first["times_s"]) == 1 and first["step_s"] == first["times_s"][0] > 0


def test_serve_protocol_answers_each_round_and_stops_at_quit():
    out, calls = io.StringIO(), []
    serve.serve({"ready": True}, lambda: calls.append(1) or {"n": len(calls)}, io.StringIO("round\n\nround\nquit\nround\n"), out)
    assert [json.loads(line) for line in out.getvalue().splitlines()] == [{"ready": True}, {"n": 1}, {"n": 2}]
