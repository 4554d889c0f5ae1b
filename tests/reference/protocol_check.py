"""Checks of the benchmarks' timing protocol with the reference alone on both sides.

``python protocol_check.py aa --backbone B --size S --rounds R``: two long-lived
``train_step_ref.py serve`` sessions of the same network take turns, who goes first alternating,
exactly as ``gl bench train`` runs ours against the reference. Ratios near 1 mean the protocol
favours neither side.

``python protocol_check.py fresh --order after|before …``: a fresh ``train_step_ref.py bench``
process per round beside one long-lived session timed right *after* the fresh process exits, or
right *before* it starts: the old protocol's situation, and its control.

Both write their own random initial weights and batch (m = 100 classes, the CUB batch) to a
temporary directory and print one line of step times and per-round ratios (medians of 3 steps).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import train_step_ref as ref


def problem(backbone: str, size: int, out: Path) -> list[str]:
    """Initial weights and a batch for ``backbone``; the reference's arguments for them."""
    torch.manual_seed(0)
    module, features, dim = ref.build_backbone(backbone)
    net = ref.Net(module, features, dim, 100)
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    ref.write_safetensors(out / "w.safetensors", state)
    labels = torch.tensor([3, 17, 42, 55, 70, 99]).repeat_interleave(9)
    ref.write_safetensors(out / "i.safetensors", {"images": torch.randn(54, 3, size, size), "labels": labels})
    return [f"--backbone={backbone}", f"--weights={out / 'w.safetensors'}", f"--inputs={out / 'i.safetensors'}",
            f"--threads={torch.get_num_threads()}", "--steps=3"]


class Session:
    """A ``train_step_ref.py serve`` process."""

    def __init__(self, args: list[str]):
        self.p = subprocess.Popen([sys.executable, ref.__file__, "serve", *args],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        json.loads(self.p.stdout.readline())

    def round(self) -> float:
        self.p.stdin.write("round\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())["step_s"]

    def close(self) -> None:
        self.p.stdin.close()
        self.p.wait()


def fresh_round(args: list[str]) -> float:
    out = subprocess.run([sys.executable, ref.__file__, "bench", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["step_s"]


def report(name_a: str, a: list[float], name_b: str, b: list[float]) -> str:
    ratios = [x / y for x, y in zip(a, b)]
    return (f"{name_a} {[round(x, 3) for x in a]} {name_b} {[round(x, 3) for x in b]} "
            f"per round {name_a}/{name_b} {[round(r, 3) for r in ratios]} "
            f"ratio of medians {statistics.median(a) / statistics.median(b):.3f}")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("aa", "fresh"))
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--order", choices=("after", "before"), default="after",
                   help="fresh: time the session after the fresh process exits, or before it starts")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        args = problem(a.backbone, a.size, Path(d))
        first = Session(args)
        xs, ys = [], []
        if a.mode == "aa":
            second = Session(args)
            for r in range(a.rounds):
                pair = (first, second) if r % 2 == 0 else (second, first)
                times = {id(s): s.round() for s in pair}
                xs.append(times[id(first)])
                ys.append(times[id(second)])
            second.close()
            print(report("A", xs, "B", ys))
        else:
            for _ in range(a.rounds):
                if a.order == "after":
                    xs.append(fresh_round(args))
                    ys.append(first.round())
                else:
                    ys.append(first.round())
                    xs.append(fresh_round(args))
            print(report("fresh", xs, f"session-{a.order}", ys))
        first.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
