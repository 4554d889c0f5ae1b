"""PyTorch reference of one RAdam step: the other side of ``gl bench optimizer``.

``python optimizer_ref.py bench --tensors T --steps S --warmup W --check-steps C …`` reads the
parameters ``p<i>`` and their fixed gradients ``g<i>`` that ``gl`` wrote (a safetensors file,
f32), and for ``foreach`` in (True, False): copies them to the device, builds
``torch.optim.RAdam(params, lr, weight_decay=λ, foreach=foreach)`` (L2 weight decay), runs C
steps on the fixed gradients and measures the norm of the update ‖θ_C − θ_0‖ (float64 sums per
tensor, added in order, as ``gl`` does), then W untimed and S timed steps (the device
synchronised before and after each). It prints one JSON object: the torch version and, under
``foreach`` and ``single`` (foreach=False), ``update_norm`` and ``step_s`` (median seconds).
``serve`` (what ``gl`` runs) prints the update norms once, then the ``step_s`` of a round per
``round`` line on stdin (``serve.py``), the optimisers continuing from round to round.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from group_loss_ref import _sync  # noqa: E402
from serve import serve  # noqa: E402
from train_step_ref import read_safetensors  # noqa: E402


def load(path: Path) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The parameters ``p<i>`` and gradients ``g<i>``, in index order."""
    t = read_safetensors(path)
    n = sum(1 for k in t if k.startswith("p"))
    return [t[f"p{i:04d}"] for i in range(n)], [t[f"g{i:04d}"] for i in range(n)]


class Side:
    """One ``torch.optim.RAdam`` (foreach on or off) on its own copy of the parameters, its
    check steps taken."""

    def __init__(self, params0, grads0, device, foreach: bool, a):
        self.a, self.device = a, device
        self.params = [p.to(device).requires_grad_(True) for p in params0]
        for p, g in zip(self.params, grads0):
            p.grad = g.to(device)
        start = [p.detach().clone() for p in self.params]
        self.opt = torch.optim.RAdam(self.params, lr=a.lr, weight_decay=a.weight_decay, foreach=foreach)
        for _ in range(a.check_steps):
            self.opt.step()
        self.update_norm = math.sqrt(
            sum(((p.detach().double() - q.double()) ** 2).sum().item() for p, q in zip(self.params, start))
        )

    def round(self) -> float:
        """``warmup`` untimed and ``steps`` timed steps; the median seconds."""
        times = []
        for i in range(self.a.warmup + self.a.steps):
            _sync(self.device)
            t0 = time.perf_counter()
            self.opt.step()
            _sync(self.device)
            if i >= self.a.warmup:
                times.append(time.perf_counter() - t0)
        return statistics.median(times)


SIDES = (("foreach", True), ("single", False))


def setup(a) -> tuple[dict, dict]:
    """Both sides with their check steps taken, and the ready reply (their update norms)."""
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    params, grads = load(a.tensors)
    sides = {name: Side(params, grads, device, foreach, a) for name, foreach in SIDES}
    ready = {"torch": torch.__version__, "threads": a.threads, "device": a.device}
    ready.update({name: {"update_norm": side.update_norm} for name, side in sides.items()})
    return sides, ready


def timed_round(sides: dict) -> dict:
    return {name: {"step_s": side.round()} for name, side in sides.items()}


def bench(a) -> dict:
    """The check and one round in one reply."""
    sides, ready = setup(a)
    r = timed_round(sides)
    return {**ready, **{name: {**ready[name], **r[name]} for name in sides}}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, help in (
        ("bench", "time torch.optim.RAdam (foreach on and off), print JSON"),
        ("serve", "the check, then a timed round per 'round' line on stdin (serve.py)"),
    ):
        add_arguments(sub.add_parser(name, help=help))
    a = p.parse_args(argv)
    if a.cmd == "serve":
        sides, ready = setup(a)
        return serve(ready, lambda: timed_round(sides))
    print(json.dumps(bench(a)))
    return 0


def add_arguments(b: argparse.ArgumentParser) -> None:
    b.add_argument("--tensors", type=Path, required=True, help="p<i>, g<i> (safetensors, f32)")
    b.add_argument("--steps", type=int, default=10, help="timed steps")
    b.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    b.add_argument("--check-steps", type=int, default=6, help="steps before the update norm")
    b.add_argument("--threads", type=int, default=torch.get_num_threads())
    b.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    b.add_argument("--lr", type=float, default=1.563663718906821e-4)
    b.add_argument("--weight-decay", type=float, default=6.059722614369727e-6)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
