"""Independent PyTorch-eager reference of the Group Loss (Elezi et al., ECCV 2020).

Written from the method description (not copied from the official code) so that it can
serve two purposes:

* an audit of the golden vectors in ``../shared/golden/group_loss`` (``test_golden.py``);
* the PyTorch-eager side of ``gl bench loss`` (``python group_loss_ref.py bench``), which
  times forward+backward at the CUB and SOP shapes and prints one JSON object.

Symbols follow the paper: features f (n×d), logits z (n×m), similarity W (n×n),
probabilities X (n×m), temperature τ, T replicator steps.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F

LOG_EPS = 1e-12  # the official code's NLL(log(X + 1e-12))


def pearson_relu(f: torch.Tensor, zero_diagonal: bool = False) -> torch.Tensor:
    """W = ReLU(Pearson correlation of the rows of f).

    Rows are centred, scaled to unit norm and multiplied. A zero-variance row has no
    defined correlation: its norm is clamped, so its off-diagonal similarities are 0.
    The diagonal is set explicitly: 1 (official code) or 0 (paper text, ``zero_diagonal``).
    """
    fc = f - f.mean(dim=1, keepdim=True)
    norm = fc.norm(dim=1, keepdim=True).clamp_min(torch.finfo(f.dtype).tiny)
    u = fc / norm
    w = F.relu(u @ u.t())
    eye = torch.eye(f.shape[0], dtype=f.dtype, device=f.device)
    diag = 0.0 if zero_diagonal else 1.0
    return w * (1 - eye) + diag * eye


def priors(z: torch.Tensor, labels: torch.Tensor, anchor_mask: torch.Tensor, tau: float) -> torch.Tensor:
    """softmax(z/τ) for every sample, replaced by one-hot rows for the anchors."""
    x = F.softmax(z / tau, dim=1)
    onehot = F.one_hot(labels, z.shape[1]).to(z.dtype)
    a = anchor_mask.to(torch.bool).unsqueeze(1)
    return torch.where(a, onehot, x)


def replicator(w: torch.Tensor, x: torch.Tensor, steps: int) -> torch.Tensor:
    """T steps of X ← X⊙(WX), each row renormalised to the simplex.

    A row whose new mass is exactly 0 (possible only with a zero diagonal) keeps its
    previous value instead of becoming 0/0.
    """
    for _ in range(steps):
        num = x * (w @ x)
        s = num.sum(dim=1, keepdim=True)
        ok = s > 0
        x = torch.where(ok, num / torch.where(ok, s, torch.ones_like(s)), x)
    return x


def first_k_anchor_mask(labels: torch.Tensor, k: int) -> torch.Tensor:
    """1 for the first k samples of each class in batch order."""
    seen: dict[int, int] = {}
    out = torch.zeros_like(labels)
    for i, c in enumerate(labels.tolist()):
        if seen.get(c, 0) < k:
            out[i] = 1
        seen[c] = seen.get(c, 0) + 1
    return out


def group_loss(f, z, labels, anchor_mask, tau, steps, ce_weight=1.0, zero_diagonal=False):
    """Returns (loss_group, loss_ce, loss_total, X)."""
    w = pearson_relu(f, zero_diagonal)
    x = replicator(w, priors(z, labels, anchor_mask, tau), steps)
    lg = F.nll_loss(torch.log(x + LOG_EPS), labels)
    lce = F.cross_entropy(z, labels)
    return lg, lce, lg + ce_weight * lce, x


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(repeats: int, threads: int, device: str = "cpu") -> dict:
    """Median forward+backward seconds at the CUB and SOP shapes, f32, on ``device``.

    The device is synchronised before and after each timed run (same protocol as
    ``gl bench loss``); labels and the anchor mask are built once, outside the clock.
    """
    torch.set_num_threads(threads)
    dev = torch.device(device)
    shapes = {"cub": (6, 9, 1024, 100, 2, 24.0), "sop": (10, 6, 1024, 11318, 2, 54.0)}
    out = {"torch": torch.__version__, "threads": threads, "repeats": repeats, "device": device}
    for name, (ncls, per, d, m, k, tau) in shapes.items():
        g = torch.Generator().manual_seed(0)
        n = ncls * per
        f = torch.relu(torch.randn(n, d, generator=g)).to(dev).requires_grad_()
        z = torch.randn(n, m, generator=g).to(dev).requires_grad_()
        labels = torch.arange(ncls).repeat_interleave(per)
        mask = first_k_anchor_mask(labels, k).to(dev)
        labels = labels.to(dev)
        times = []
        for i in range(repeats + 3):
            _sync(dev)
            t0 = time.perf_counter()
            _, _, loss, _ = group_loss(f, z, labels, mask, tau, 1)
            loss.backward()
            _sync(dev)
            dt = time.perf_counter() - t0
            f.grad = None
            z.grad = None
            if i >= 3:
                times.append(dt)
        out[name] = statistics.median(times)
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench", help="time forward+backward, print JSON")
    b.add_argument("--repeats", type=int, default=50)
    b.add_argument("--threads", type=int, default=torch.get_num_threads())
    b.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    a = p.parse_args(argv)
    if a.cmd == "bench":
        print(json.dumps(bench(a.repeats, a.threads, a.device)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
