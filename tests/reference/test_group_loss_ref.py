"""Checks of the PyTorch reference Group Loss: golden vectors of the official code and
properties that any faithful implementation has. The Rust loss will be held to the same."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch

from group_loss_ref import first_k_anchor_mask, group_loss, pearson_relu, priors, replicator

GOLDEN = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "golden" / "group_loss"
CASES = json.loads((GOLDEN / "cases.json").read_text()) if GOLDEN.is_dir() else []


def max_rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def test_golden_dir_present():
    assert CASES, f"no golden cases under {GOLDEN}"
    assert len(CASES) == 6


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
@pytest.mark.parametrize("which", ["group", "total"])
def test_golden_f64(case, which):
    g = np.load(GOLDEN / f"{case['name']}.npz")
    f = torch.tensor(g["fc7"], requires_grad=True)
    z = torch.tensor(g["logits"], requires_grad=True)
    y = torch.tensor(g["labels"])
    mask = first_k_anchor_mask(y, case["anchors"])
    assert torch.equal(mask, torch.tensor(g["anchor_mask"])), "anchor rule differs from official"
    lg, lce, lt, x = group_loss(f, z, y, mask, case["tau"], case["T"])
    (lg if which == "group" else lt).backward()
    assert max_rel(lg.item(), g["loss_group"]) <= 1e-12
    assert max_rel(lce.item(), g["loss_ce"]) <= 1e-12
    assert max_rel(lt.item(), g["loss_total"]) <= 1e-12
    assert max_rel(pearson_relu(f).detach(), g["W"]) <= 1e-12
    assert max_rel(x.detach(), g["X"]) <= 1e-12
    assert max_rel(f.grad, g[f"grad_fc7_{which}"]) <= 1e-12
    assert max_rel(z.grad, g[f"grad_logits_{which}"]) <= 1e-12


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_golden_f32(case):
    g = np.load(GOLDEN / f"{case['name']}.npz")
    f = torch.tensor(g["fc7"], dtype=torch.float32)
    z = torch.tensor(g["logits"], dtype=torch.float32)
    y = torch.tensor(g["labels"])
    _, _, lt, x = group_loss(f, z, y, torch.tensor(g["anchor_mask"]), case["tau"], case["T"])
    assert max_rel(lt.item(), g["loss_total"]) <= 1e-4
    assert max_rel(x, g["X"]) <= 1e-4


def batch(seed=0, ncls=4, per=5, d=16, m=10, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    f = torch.relu(torch.randn(ncls * per, d, generator=gen, dtype=dtype))
    z = torch.randn(ncls * per, m, generator=gen, dtype=dtype)
    y = torch.arange(ncls).repeat_interleave(per)
    return f, z, y


def test_rows_on_simplex_and_anchors_one_hot():
    f, z, y = batch()
    mask = first_k_anchor_mask(y, 2)
    _, _, _, x = group_loss(f, z, y, mask, 5.0, 3)
    assert torch.all(x >= 0)
    torch.testing.assert_close(x.sum(1), torch.ones(len(y), dtype=x.dtype))
    a = mask.bool()
    torch.testing.assert_close(x[a], torch.nn.functional.one_hot(y[a], z.shape[1]).to(x.dtype))


def test_permutation_equivariance():
    f, z, y = batch(seed=1)
    mask = first_k_anchor_mask(y, 1)
    _, _, l0, x0 = group_loss(f, z, y, mask, 3.0, 2)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(7))
    _, _, l1, x1 = group_loss(f[perm], z[perm], y[perm], mask[perm], 3.0, 2)
    torch.testing.assert_close(x1, x0[perm])
    torch.testing.assert_close(l1, l0)


def test_zero_diagonal_differs():
    f, z, y = batch(seed=2)
    mask = first_k_anchor_mask(y, 1)
    _, _, a, _ = group_loss(f, z, y, mask, 3.0, 1)
    _, _, b, _ = group_loss(f, z, y, mask, 3.0, 1, zero_diagonal=True)
    assert abs(a.item() - b.item()) > 1e-6
    assert torch.all(pearson_relu(f, zero_diagonal=True).diagonal() == 0)


def test_zero_variance_row_is_finite():
    f, z, y = batch(seed=3)
    f[0] = 0.7  # constant row: Pearson undefined
    f.requires_grad_()
    z.requires_grad_()
    w = pearson_relu(f)
    assert torch.isfinite(w).all()
    assert w[0, 0] == 1 and torch.all(w[0, 1:] == 0)
    _, _, lt, x = group_loss(f, z, y, first_k_anchor_mask(y, 1), 3.0, 2, zero_diagonal=True)
    lt.backward()
    assert torch.isfinite(x).all() and torch.isfinite(f.grad).all() and torch.isfinite(z.grad).all()


def test_isolated_row_keeps_prior_under_zero_diagonal():
    # a row with no positive similarity and a zero diagonal gets no mass from WX:
    # the documented policy keeps its previous probabilities instead of 0/0
    w = torch.zeros(3, 3, dtype=torch.float64)
    w[1, 2] = w[2, 1] = 1.0
    x0 = torch.tensor([[0.2, 0.8], [0.5, 0.5], [0.9, 0.1]], dtype=torch.float64)
    x = replicator(w, x0, 1)
    torch.testing.assert_close(x[0], x0[0])


def test_gradcheck_small_f64():
    f, z, y = batch(seed=4, ncls=3, per=3, d=6, m=5)
    mask = first_k_anchor_mask(y, 1)
    f.requires_grad_()
    z.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: group_loss(a, b, y, mask, 2.0, 2)[2], (f, z), eps=1e-6, atol=1e-7
    )


def test_priors_anchor_rows_carry_no_gradient():
    f, z, y = batch(seed=5)
    z.requires_grad_()
    mask = first_k_anchor_mask(y, 2)
    priors(z, y, mask, 4.0).sum(1).pow(2).sum().backward()
    assert torch.all(z.grad[mask.bool()] == 0)
