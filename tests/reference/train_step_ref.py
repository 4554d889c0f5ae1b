"""PyTorch-eager reference of one Group Loss training step: the other side of ``gl bench train``.

``python train_step_ref.py bench --backbone NAME --weights W --inputs I …`` builds the network
(backbone + linear classifier over m classes), loads the initial variables ``gl`` wrote (a
safetensors file with the keys ``backbone.<state-dict key>``, ``classifier.weight``,
``classifier.bias``), reads the batch (``images`` N×3×S×S f32, ``labels`` N i64), seeds torch's
generator, then runs one check step and ``warmup + steps`` training steps — ``zero_grad``, forward
with BatchNorm in training mode, the reference Group Loss (``group_loss_ref.group_loss``),
``loss.item()``, ``backward``, ``torch.optim.RAdam`` step — and prints one JSON object: the torch
version, the loss of every step, the check step's loss (``first_loss``, from the loaded weights)
and the norm of its parameter update (``first_update_norm``, ‖θ₁ − θ₀‖ over every trainable
tensor), which ``gl`` compares with its own, the median seconds of the timed steps
(``step_s``) and of each of their phases (``phases_s``: zero_grad, handoff, forward, loss,
backward, optimizer; the device synchronised at each boundary, as ``gl`` does).

Backbones, each an independent PyTorch model with ``gl``'s variable names:

* ``bn_inception``: the port in ``tests/fixtures/bn_inception/make_reference.py`` (imported);
* ``tiny_cnn``: the twin of ``src/model/tiny_cnn.rs`` (below);
* ``efficientnet_lite0``: ``efficientnet_lite_pytorch.EfficientNet.from_name('efficientnet-lite0')``
  without its ImageNet classifier ``_fc``, features = ``extract_features`` + average pooling.
  Imported only when asked for; without the package the reply is ``{"skipped": "…"}``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from group_loss_ref import _sync, first_k_anchor_mask, group_loss  # noqa: E402
from serve import serve  # noqa: E402

BN_INCEPTION_PORT = HERE.parent / "fixtures" / "bn_inception" / "make_reference.py"

SAFETENSORS_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


def read_safetensors(path) -> dict[str, torch.Tensor]:
    """A safetensors file: 8-byte little-endian header length, JSON header, raw data."""
    raw = Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES[info["dtype"]]
        start, end = info["data_offsets"]
        arr = np.frombuffer(raw, dtype=dtype, count=(end - start) // dtype.itemsize, offset=base + start)
        out[name] = torch.from_numpy(arr.reshape(info["shape"]).copy())
    return out


def write_safetensors(path, tensors: dict[str, torch.Tensor]) -> None:
    """The inverse of ``read_safetensors`` (tests write fixtures with it)."""
    names = {np.dtype(v): k for k, v in SAFETENSORS_DTYPES.items()}
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        a = np.ascontiguousarray(t.detach().cpu().numpy())
        b = a.tobytes()
        header[name] = {"dtype": names[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    Path(path).write_bytes(len(h).to_bytes(8, "little") + h + b"".join(blobs))


class TinyCnn(nn.Module):
    """src/model/tiny_cnn.rs: 4 × (conv 3×3/2 pad 1 no bias, BatchNorm, ReLU), 16/32/64/128
    channels, global average pooling; stages named s0…s3 with `conv` and `bn`."""

    def __init__(self):
        super().__init__()
        c_in = 3
        for i, c in enumerate((16, 32, 64, 128)):
            stage = nn.Module()
            stage.conv = nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=False)
            stage.bn = nn.BatchNorm2d(c)
            self.add_module(f"s{i}", stage)
            c_in = c

    def forward(self, x):
        for i in range(4):
            s = getattr(self, f"s{i}")
            x = F.relu(s.bn(s.conv(x)))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def _load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Skip(Exception):
    """The backbone cannot be built here (a missing optional package)."""


def build_backbone(name: str):
    """(module, features(module, x) → N×D, D)."""
    if name == "bn_inception":
        port = _load_module(BN_INCEPTION_PORT, "bn_inception_port")
        return port.BnInceptionRef(), lambda m, x: m(x), 1024
    if name == "tiny_cnn":
        return TinyCnn(), lambda m, x: m(x), 128
    if name == "efficientnet_lite0":
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as e:
            raise Skip(f"{e}; pip install efficientnet-lite-pytorch==0.1.0") from e
        m = EfficientNet.from_name("efficientnet-lite0")
        m._fc = None  # the ImageNet classifier: not part of gl's backbone

        def features(mod, x):
            return F.adaptive_avg_pool2d(mod.extract_features(x), 1).flatten(1)

        return m, features, 1280
    raise Skip(f"no PyTorch model for backbone {name!r} in {Path(__file__).name}")


class Net(nn.Module):
    """Backbone → pooled features f, linear classifier → logits z (gl's EmbeddingNet without an
    embedding layer)."""

    def __init__(self, backbone: nn.Module, features, dim: int, m: int):
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Linear(dim, m)
        self._features = features

    def forward(self, x):
        f = self._features(self.backbone, x)
        return f, self.classifier(f)


def load_net(backbone: str, weights: Path) -> Net:
    """The network with gl's initial variables; the key sets must match exactly (BatchNorm's
    ``num_batches_tracked`` aside, which gl does not have)."""
    state = read_safetensors(weights)
    module, features, dim = build_backbone(backbone)
    m = state["classifier.weight"].shape[0]
    net = Net(module, features, dim, m)
    want = {k for k in net.state_dict() if not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(want - set(state)), sorted(set(state) - want)
    if missing or unexpected:
        raise SystemExit(
            f"{weights}: variables differ from the {backbone} reference model: "
            f"missing {missing[:5]} ({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})"
        )
    net.load_state_dict(state, strict=False)
    return net


PHASES = ("zero_grad", "handoff", "forward", "loss", "backward", "optimizer")


class PhaseClock:
    """Wall seconds per phase of one step, the device synchronised at each boundary (as
    ``gl``'s ``StepPhases``); a no-op when ``out`` is None."""

    def __init__(self, out, dev):
        self.out, self.dev = out, dev
        if out is not None:
            _sync(dev)
        self.last = time.perf_counter()

    def lap(self, name):
        if self.out is not None:
            _sync(self.dev)
            now = time.perf_counter()
            self.out[name] = now - self.last
            self.last = now


def train_step(net, opt, images, labels: list[int], anchors: int, tau: float, steps: int, dev, phases=None) -> float:
    """One step as a PyTorch training loop runs it; returns the loss. With a dict ``phases``,
    the seconds of each of ``PHASES`` are written into it."""
    clock = PhaseClock(phases, dev)
    opt.zero_grad()
    clock.lap("zero_grad")
    xs = images.to(dev)
    clock.lap("handoff")
    f, z = net(xs)
    clock.lap("forward")
    y = torch.tensor(labels, device=dev)
    mask = first_k_anchor_mask(torch.tensor(labels), anchors).to(dev)
    lg, lce, loss, _ = group_loss(f, z, y, mask, tau, steps)
    value = loss.item()
    clock.lap("loss")
    if not math.isfinite(value):
        raise SystemExit(f"the loss is {value}")
    loss.backward()
    clock.lap("backward")
    opt.step()
    clock.lap("optimizer")
    lg.item()
    lce.item()
    return value


class Bench:
    """The reference side of ``gl bench train``: the network with gl's weights, the batch, the
    optimiser, and the check step from the loaded weights (set up once)."""

    def __init__(self, a):
        torch.set_num_threads(a.threads)
        self.a, self.dev = a, torch.device(a.device)
        self.header = {"torch": torch.__version__, "backbone": a.backbone, "threads": a.threads, "device": a.device}
        self.net = load_net(a.backbone, a.weights).to(self.dev).train()
        batch = read_safetensors(a.inputs)
        self.images = batch["images"].to(self.dev)
        self.labels = batch["labels"].tolist()
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.opt = torch.optim.RAdam(self.params, lr=a.lr, weight_decay=a.weight_decay)

    def step(self, phases=None) -> float:
        a = self.a
        return train_step(
            self.net, self.opt, self.images, self.labels, a.anchors, a.tau, a.replicator_steps, self.dev, phases
        )

    def check(self) -> dict:
        """The check step (untimed): the loss from the loaded weights and the size of its update."""
        torch.manual_seed(self.a.seed)
        before = [p.detach().clone() for p in self.params]
        loss = self.step()
        with torch.no_grad():
            update = math.sqrt(
                sum(float((p.double() - q.double()).square().sum()) for p, q in zip(self.params, before))
            )
        return {**self.header, "first_loss": loss, "first_update_norm": update}

    def round(self) -> dict:
        """``warmup`` untimed and ``steps`` timed steps: every step's loss and seconds, the median
        step and the median of each phase."""
        losses, times, profiles = [], [], []
        for i in range(self.a.warmup + self.a.steps):
            phases = {}
            _sync(self.dev)
            t0 = time.perf_counter()
            losses.append(self.step(phases))
            _sync(self.dev)
            if i >= self.a.warmup:
                times.append(time.perf_counter() - t0)
                profiles.append(phases)
        return {
            "losses": losses,
            "times_s": times,
            "step_s": statistics.median(times),
            "phases_s": {k: statistics.median(p[k] for p in profiles) for k in PHASES},
        }


def bench(a) -> dict:
    """The check step and one round, in one reply (``losses`` starts with the check step's)."""
    try:
        b = Bench(a)
    except Skip as e:
        return {"torch": torch.__version__, "backbone": a.backbone, "skipped": str(e)}
    ready = b.check()
    r = b.round()
    return {**ready, **r, "losses": [ready["first_loss"], *r["losses"]]}


def serve_bench(a) -> int:
    """``serve``: the check step's reply, then one reply per requested round (``serve.py``)."""
    try:
        b = Bench(a)
    except Skip as e:
        print(json.dumps({"torch": torch.__version__, "backbone": a.backbone, "skipped": str(e)}), flush=True)
        return 0
    return serve(b.check(), b.round)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, help in (
        ("bench", "the check step and one timed round, print JSON"),
        ("serve", "the check step, then a timed round per 'round' line on stdin (serve.py)"),
    ):
        add_arguments(sub.add_parser(name, help=help))
    a = p.parse_args(argv)
    if a.steps < 1 or a.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    if a.cmd == "serve":
        return serve_bench(a)
    print(json.dumps(bench(a)))
    return 0


def add_arguments(b: argparse.ArgumentParser) -> None:
    b.add_argument("--backbone", required=True)
    b.add_argument("--weights", type=Path, required=True, help="initial variables (safetensors)")
    b.add_argument("--inputs", type=Path, required=True, help="images and labels (safetensors)")
    b.add_argument("--steps", type=int, default=3, help="timed steps")
    b.add_argument("--warmup", type=int, default=0, help="untimed steps before them (after the check step)")
    b.add_argument("--threads", type=int, default=torch.get_num_threads())
    b.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    b.add_argument("--anchors", type=int, default=2)
    b.add_argument("--tau", type=float, default=24.0)
    b.add_argument("--replicator-steps", type=int, default=1)
    b.add_argument("--lr", type=float, default=1.563663718906821e-4)
    b.add_argument("--weight-decay", type=float, default=6.059722614369727e-6)
    b.add_argument("--seed", type=int, default=1, help="torch.manual_seed before the first step")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
