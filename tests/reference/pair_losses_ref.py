"""Golden cases of the pair losses (contrastive, triplet with a semi-hard or a batch-hard miner,
multi-similarity with or without its miner), computed by pytorch-metric-learning 2.9.0 in float64.

Regenerate (deterministic, about a second):

    python tests/reference/pair_losses_ref.py tests/fixtures/pair_losses

Each case is one objective on one batch; ``cases.json`` lists ``name``, ``objective``
(``contrastive``, ``triplet``, ``multi_similarity``), ``options`` (spelled as the Rust option
structs deserialize them), ``batch``, ``n``, ``d``; ``<name>.npz`` holds ``embeddings`` (n×d,
raw, not normalised), ``labels`` (n, int64), ``loss`` (0-d) and ``grad_embeddings`` (d loss /
d raw embeddings), plus ``loss_pml_default`` where PML's defaults define a different loss than
the paper, and ``loss_pml_reducer`` (batch-hard only) where PML's default AvgNonZero reducer
gives another value than the paper's mean over all anchors.

Every objective is configured to the paper through PML's own knobs (distance power, margins,
reducer). The one exception is Hadsell et al.'s squared hinge, for which ``ContrastiveLoss`` has
no knob: ``HadsellContrastiveLoss`` below subclasses it and replaces only the two per-pair
hinges, so pairs, distance (``LpDistance``) and reduction (``AvgNonZeroReducer`` per positive and
negative part, summed) are PML's own machinery.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytorch_metric_learning
import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances, losses, miners, reducers

assert pytorch_metric_learning.__version__ == "2.9.0", pytorch_metric_learning.__version__
torch.set_default_dtype(torch.float64)


class HadsellContrastiveLoss(losses.ContrastiveLoss):
    """Hadsell, Chopra, LeCun 2006, eq. 4: ½·D² for similar pairs, ½·max(0, m − D)² for dissimilar."""

    def pos_calc(self, pos_pair_dist, margin):
        return 0.5 * F.relu(self.distance.margin(pos_pair_dist, margin)) ** 2

    def neg_calc(self, neg_pair_dist, margin):
        return 0.5 * F.relu(self.distance.margin(margin, neg_pair_dist)) ** 2


# --- the paper defaults (the Rust `Default`s / named constructors) -------------------------
OBJECTIVES = {
    "contrastive_paper": ("contrastive", {"neg_margin": 1.0, "squared": True}),
    "contrastive_pml": ("contrastive", {"neg_margin": 1.0, "squared": False}),
    "triplet_semi_hard": ("triplet", {"margin": 0.2, "mining": "semi_hard", "squared": True}),
    "triplet_batch_hard": ("triplet", {"margin": 0.2, "mining": "batch_hard", "squared": False}),
    "ms_mined": (
        "multi_similarity",
        {"alpha": 2.0, "beta": 50.0, "base": 1.0, "epsilon": 0.1, "mine": True},
    ),
    "ms_all": (
        "multi_similarity",
        {"alpha": 2.0, "beta": 50.0, "base": 1.0, "epsilon": 0.1, "mine": False},
    ),
}

# The keys whose ×1.01 change must move at least one case (the Rust test asserts it does).
PERTURBED = {
    "contrastive_paper": ["neg_margin"],
    "contrastive_pml": ["neg_margin"],
    "triplet_semi_hard": ["margin"],
    "triplet_batch_hard": ["margin"],
    "ms_mined": ["alpha", "beta", "base", "epsilon"],
    "ms_all": ["alpha", "beta", "base"],
}


def loss_fn(objective: str, o: dict):
    """PML configured to `o`: a function (embeddings, labels) -> 0-d loss."""
    if objective == "contrastive":
        cls = HadsellContrastiveLoss if o["squared"] else losses.ContrastiveLoss
        loss = cls(pos_margin=0.0, neg_margin=o["neg_margin"], distance=distances.LpDistance())
        return lambda e, y: loss(e, y)
    if objective == "triplet":
        dist = distances.LpDistance(power=2 if o["squared"] else 1)
        if o["mining"] == "semi_hard":
            miner = miners.TripletMarginMiner(
                margin=o["margin"], type_of_triplets="semihard", distance=dist
            )
            loss = losses.TripletMarginLoss(margin=o["margin"], distance=dist)
        else:
            miner = miners.BatchHardMiner(distance=dist)
            loss = losses.TripletMarginLoss(
                margin=o["margin"], distance=dist, reducer=reducers.MeanReducer()
            )
        return lambda e, y: loss(e, y, miner(e, y))
    loss = losses.MultiSimilarityLoss(alpha=o["alpha"], beta=o["beta"], base=o["base"])
    if o["mine"]:
        miner = miners.MultiSimilarityMiner(epsilon=o["epsilon"])
        return lambda e, y: loss(e, y, miner(e, y))
    return lambda e, y: loss(e, y)


def pml_default_fn(key: str):
    """PML with its own defaults where they define another loss than the paper; else None."""
    if key == "contrastive_paper":
        loss = losses.ContrastiveLoss()  # non-squared hinges, no ½
        return lambda e, y: loss(e, y)
    if key == "triplet_semi_hard":
        # LpDistance power 1 (not squared) and TripletMarginLoss margin 0.05 (miner margin 0.2)
        miner, loss = miners.TripletMarginMiner(type_of_triplets="semihard"), losses.TripletMarginLoss()
        return lambda e, y: loss(e, y, miner(e, y))
    if key == "triplet_batch_hard":
        # margin 0.05 and the AvgNonZero reducer
        miner, loss = miners.BatchHardMiner(), losses.TripletMarginLoss()
        return lambda e, y: loss(e, y, miner(e, y))
    if key == "ms_mined":
        miner, loss = miners.MultiSimilarityMiner(), losses.MultiSimilarityLoss()  # base 0.5
        return lambda e, y: loss(e, y, miner(e, y))
    if key == "ms_all":
        loss = losses.MultiSimilarityLoss()
        return lambda e, y: loss(e, y)
    return None


# --- the batches ---------------------------------------------------------------------------
def batches() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(20240611)
    out = {}

    # P×K: 6 classes × 4, d = 8, rows of random norm (the gradient sees the normalisation).
    x = torch.randn(24, 8, generator=g) * (0.5 + 1.5 * torch.rand(24, 1, generator=g))
    out["pk"] = (x, torch.arange(6).repeat_interleave(4))

    # Ties: exact duplicates (same and other class), scaled copies (same direction, other
    # norm) and basis vectors whose distances are all exactly √2.
    e = torch.eye(6)
    rows = [e[0], e[0], 2 * e[1], e[2], e[3], 3 * e[0], e[4], e[5], e[4] + e[5], -e[0], -e[1], 0.5 * e[1]]
    out["ties"] = (torch.stack(rows), torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]))

    # A class with a single sample (no positive) among classes of 4, 3 and 2.
    x = torch.randn(14, 8, generator=g)
    out["singleton"] = (x, torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 3, 3, 3, 4, 4]))

    # All easy: each class one direction (positives at distance 0), classes orthogonal
    # (negatives at √2 > every margin): every mined objective is 0 with a zero gradient.
    norms = 0.5 + torch.rand(12, 1, generator=g)
    y = torch.arange(4).repeat_interleave(3)
    out["easy"] = (torch.eye(8)[y] * norms, y)

    # Mixed: two compact well-separated classes (zero loss per anchor) and two overlapping.
    y = torch.arange(4).repeat_interleave(4)
    x = torch.eye(8)[y] * 3 + 0.05 * torch.randn(16, 8, generator=g)
    x[8:] = torch.randn(8, 8, generator=g) + torch.eye(8)[4]
    out["mixed"] = (x, y)

    # Near a miner boundary (2-D, unit circle): for anchor 0 the hardest negative has S = 0.5
    # and positive 2 has S = 0.6005, so it is mined iff ε > 0.1005 — not at ε = 0.1, yes at
    # ε = 0.101. Positive 1 (S = 0.3) keeps the anchor's negative mined either way.
    ang = [0.0, math.acos(0.3), -math.acos(0.6005), math.acos(0.5), math.pi, 2.5]
    x = torch.tensor([[math.cos(a), math.sin(a)] for a in ang]) * torch.tensor(
        [[1.0], [2.0], [0.7], [1.3], [1.0], [0.9]]
    )
    out["boundary"] = (x, torch.tensor([0, 0, 0, 1, 1, 2]))
    return out


def evaluate(fn, x: torch.Tensor, y: torch.Tensor):
    e = x.clone().requires_grad_(True)
    loss = fn(e, y)
    loss.backward()
    grad = e.grad if e.grad is not None else torch.zeros_like(e)
    return loss.detach(), grad.detach()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / max(float(b.abs().max()), 1e-12))


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = batches()
    index, moved, differs = [], {}, {}
    for key, (objective, opts) in OBJECTIVES.items():
        fn, default_fn = loss_fn(objective, opts), pml_default_fn(key)
        for batch, (x, y) in data.items():
            name = f"{key}__{batch}"
            loss, grad = evaluate(fn, x, y)
            arrays = {
                "embeddings": x.numpy(),
                "labels": y.numpy().astype(np.int64),
                "loss": loss.numpy(),
                "grad_embeddings": grad.numpy(),
            }
            if default_fn is not None:
                other = float(default_fn(x, y))
                if abs(other - float(loss)) > 1e-3 * max(abs(float(loss)), 1e-12):
                    arrays["loss_pml_default"] = np.array(other)
                    differs[key] = differs.get(key, 0) + 1
            if key == "triplet_batch_hard":
                avg = losses.TripletMarginLoss(margin=opts["margin"])  # AvgNonZero reducer
                miner = miners.BatchHardMiner()
                other = float(avg(x, y, miner(x, y)))
                if abs(other - float(loss)) > 1e-3 * max(abs(float(loss)), 1e-12):
                    arrays["loss_pml_reducer"] = np.array(other)
                    differs["reducer"] = differs.get("reducer", 0) + 1
            for k in PERTURBED[key]:
                l2, g2 = evaluate(loss_fn(objective, {**opts, k: opts[k] * 1.01}), x, y)
                if max(rel(l2, loss), rel(g2, grad)) > 1e-4:
                    moved.setdefault(key, set()).add(k)
            np.savez(out_dir / f"{name}.npz", **arrays)
            index.append(
                {
                    "name": name,
                    "objective": objective,
                    "options": opts,
                    "batch": batch,
                    "n": int(x.shape[0]),
                    "d": int(x.shape[1]),
                }
            )
            print(f"{name:40s} loss {float(loss):.10f}  |grad| {float(grad.abs().max()):.3e}")
    for key, keys in PERTURBED.items():
        missing = set(keys) - moved.get(key, set())
        assert not missing, f"{key}: a ×1.01 change of {missing} moves no case"
    for key in ["contrastive_paper", "triplet_semi_hard", "triplet_batch_hard", "ms_mined", "ms_all", "reducer"]:
        assert differs.get(key, 0) >= 1, f"{key}: PML's default never differs from the paper"
    easy = [c for c in index if c["batch"] == "easy" and not c["name"].startswith("ms_all")]
    for c in easy:
        z = np.load(out_dir / f"{c['name']}.npz")
        assert float(z["loss"]) == 0.0 and not z["grad_embeddings"].any(), c["name"]
    (out_dir / "cases.json").write_text(json.dumps(index, indent=1) + "\n")
    print(f"{len(index)} cases in {out_dir}; PML default differs: {differs}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
