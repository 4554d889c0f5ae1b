"""Golden cases of the proxy/classifier losses, made with pytorch-metric-learning 2.9.0.

Regenerate (from the repository root, with the project's venv python)::

    python tests/reference/proxy_losses_ref.py tests/fixtures/proxy_losses

Writes ``cases.json`` and one ``<name>.npz`` per case, everything float64 (labels int64):
``embeddings`` (n×d), ``labels`` (n), ``proxies`` (m×d: the proxies, or the class weights in
the Rust layout), ``loss`` (0-d), ``grad_embeddings`` (n×d), ``grad_proxies`` (m×d).

``cases.json`` lists ``name``, ``objective`` (``proxy_anchor`` | ``normalized_softmax`` |
``arcface``), ``options`` (as the Rust ``*Options`` spell them), ``pml_args`` (what PML was
built with), ``source`` and ``n``, ``m``, ``d``.

``source`` is ``"pml"`` where PML follows the paper: the arrays are PML's, and the script
checks that its own paper-formula implementation below agrees at 1e-12. Where PML departs
from the paper (ArcFace beyond θ > π − m, see ``arcface_paper``), ``source`` is ``"paper"``:
``loss``/``grad_*`` come from the paper formula and PML's values are kept as
``pml_loss``/``pml_grad_embeddings``/``pml_grad_proxies`` so the Rust test can show the
difference.

PML layouts: ProxyAnchorLoss.proxies is m×d; NormalizedSoftmaxLoss.W and ArcFaceLoss.W are
d×m (normalised along dim 0), so the script stores their transpose. PML's ArcFace margin is
in degrees: the script passes ``degrees(margin)``.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses

torch.set_default_dtype(torch.float64)
M, D = 10, 8  # classes in all, embedding size


# ---- the papers' formulas, written independently of PML (m×d rows, float64) ----


def proxy_anchor_paper(x, y, p, alpha, delta):
    """Kim et al. 2020, Eq. 4: positives averaged over P⁺ (proxies with a positive in the
    batch), negatives over all of P."""
    s = F.normalize(x, dim=1) @ F.normalize(p, dim=1).t()  # n×m
    pos = F.one_hot(y, p.shape[0]).bool()
    e_pos = torch.where(pos, torch.exp(-alpha * (s - delta)), torch.zeros_like(s)).sum(0)
    e_neg = torch.where(~pos, torch.exp(alpha * (s + delta)), torch.zeros_like(s)).sum(0)
    n_pos = pos.any(0).sum()
    return torch.log1p(e_pos).sum() / n_pos + torch.log1p(e_neg).sum() / p.shape[0]


def normalized_softmax_paper(x, y, w, temperature):
    """Zhai & Wu 2019: softmax cross-entropy over xᵀp_z/σ with x and every p_z unit."""
    logits = F.normalize(x, dim=1) @ F.normalize(w, dim=1).t() / temperature
    return F.cross_entropy(logits, y)


def arcface_paper(x, y, w, margin, scale):
    """Deng et al. 2019, Eq. 3 / Algorithm 1: the target logit is s·cos(θ_y + m) for every θ;
    PML (like insightface) switches to cos θ − m·sin m once θ > π − m."""
    cos = F.normalize(x, dim=1) @ F.normalize(w, dim=1).t()
    target = cos.gather(1, y[:, None])
    theta = torch.acos(target.clamp(-1, 1))
    logits = cos.scatter(1, y[:, None], torch.cos(theta + margin))
    return F.cross_entropy(scale * logits, y)


# ---- PML ----


def run_pml(objective, x, y, p, pml_args):
    m, d = p.shape
    if objective == "proxy_anchor":
        fn = losses.ProxyAnchorLoss(num_classes=m, embedding_size=d, **pml_args)
        param = fn.proxies
        param.data = p.clone()
    else:
        cls = {
            "normalized_softmax": losses.NormalizedSoftmaxLoss,
            "arcface": losses.ArcFaceLoss,
        }[objective]
        fn = cls(num_classes=m, embedding_size=d, **pml_args)
        param = fn.W
        param.data = p.t().contiguous()  # PML: d×m
    x = x.clone().requires_grad_(True)
    loss = fn(x, y)
    loss.backward()
    g_p = param.grad if objective == "proxy_anchor" else param.grad.t()
    return loss.detach(), x.grad, g_p.contiguous()


def run_paper(objective, x, y, p, options):
    x = x.clone().requires_grad_(True)
    p = p.clone().requires_grad_(True)
    f = {
        "proxy_anchor": lambda: proxy_anchor_paper(x, y, p, options["alpha"], options["delta"]),
        "normalized_softmax": lambda: normalized_softmax_paper(
            x, y, p, options["temperature"]
        ),
        "arcface": lambda: arcface_paper(x, y, p, options["margin"], options["scale"]),
    }[objective]
    loss = f()
    loss.backward()
    return loss.detach(), x.grad, p.grad


# ---- batches ----


def pk_batch(seed, classes=(1, 3, 4, 7, 9), k=4, m=M, d=D):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.array(classes, dtype=np.int64), k)
    x = rng.standard_normal((len(y), d))
    p = rng.standard_normal((m, d))
    return x, y, p


def at_angle(p, v, theta):
    """The unit vector at angle θ from p, in the plane of p and v."""
    p = p / np.linalg.norm(p)
    u = v - (v @ p) * p
    return math.cos(theta) * p + math.sin(theta) * u / np.linalg.norm(u)


def batches(objective):
    """name → (embeddings, labels, proxies) for one loss (its own seeds)."""
    base = {"proxy_anchor": 100, "normalized_softmax": 200, "arcface": 300}[objective]
    out = {"pk": pk_batch(base)}
    # ties: a duplicated sample within its class, the same vector in another class, and two
    # classes sharing one proxy
    x, y, p = pk_batch(base + 1)
    x[1] = x[0]
    x[5] = x[0]
    p[3] = p[4]
    out["ties"] = (x, y, p)
    # a class with a single sample (3), next to classes of 2 and 5
    rng = np.random.default_rng(base + 2)
    y = np.array([0, 0, 3, 6, 6, 6, 6, 6, 8, 8], dtype=np.int64)
    out["singleton"] = (rng.standard_normal((10, D)), y, rng.standard_normal((M, D)))
    # confident: proxies on a simplex (cos = -1/(m-1) between them), each sample close to its
    # proxy, so every negative is easy; the noise keeps the loss well above round-off
    rng = np.random.default_rng(base + 3)
    m = 4
    simplex = np.eye(m) - 1.0 / m
    p = np.zeros((m, D))
    p[:, :m] = simplex
    p *= rng.uniform(0.5, 2.0, (m, 1))  # the loss must not depend on the proxies' norms
    y = np.repeat(np.arange(m, dtype=np.int64), 2)
    noise = {"proxy_anchor": 0.05, "normalized_softmax": 0.25, "arcface": 0.22}[objective]
    x = F.normalize(torch.from_numpy(p[y]), dim=1).numpy()
    x = x + noise * rng.standard_normal((len(y), D))
    out["confident"] = (x * rng.uniform(0.1, 10.0, (len(y), 1)), y, p)
    return out


def cases():
    """(name, objective, options, pml_args, (x, y, p))"""
    out = []
    pa = {"alpha": 32.0, "delta": 0.1}
    for name, b in batches("proxy_anchor").items():
        out.append((f"proxy_anchor_{name}", "proxy_anchor", pa, {"alpha": 32.0, "margin": 0.1}, b))
    b = pk_batch(110, classes=(0, 2, 5))
    out.append(
        ("proxy_anchor_pk_a16_d02", "proxy_anchor", {"alpha": 16.0, "delta": 0.2},
         {"alpha": 16.0, "margin": 0.2}, b)
    )
    for name, b in batches("normalized_softmax").items():
        out.append((f"normalized_softmax_{name}", "normalized_softmax", {"temperature": 0.05},
                    {"temperature": 0.05}, b))
    out.append(("normalized_softmax_pk_t01", "normalized_softmax", {"temperature": 0.1},
                {"temperature": 0.1}, pk_batch(210)))
    af = {"margin": 0.5, "scale": 64.0}
    af_pml = {"margin": math.degrees(0.5), "scale": 64.0}
    for name, b in batches("arcface").items():
        out.append((f"arcface_{name}", "arcface", af, af_pml, b))
    out.append(("arcface_pk_m03_s30", "arcface", {"margin": 0.3, "scale": 30.0},
                {"margin": math.degrees(0.3), "scale": 30.0}, pk_batch(310)))
    # PML's default margin, 28.6°, is not the paper's 0.5 rad
    out.append(("arcface_pml_default_margin", "arcface",
                {"margin": math.radians(28.6), "scale": 64.0}, {}, pk_batch(311)))
    # two samples at 175° and 160° from their own class weight, beyond π − m = 151.4°, where
    # PML's fallback applies (not at 180°, where d acos is infinite)
    x, y, p = pk_batch(312)
    for i, degrees in [(0, 175.0), (6, 160.0)]:
        x[i] = 2.0 * at_angle(p[y[i]], x[i], math.radians(degrees))
    out.append(("arcface_wide_angle", "arcface", af, af_pml, (x, y, p)))
    return out


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    index = []
    for name, objective, options, pml_args, (x, y, p) in cases():
        x, y, p = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(p)
        pml = run_pml(objective, x, y, p, pml_args)
        paper = run_paper(objective, x, y, p, options)
        if not all(bool(t.isfinite().all()) for t in (*pml, *paper)):
            sys.exit(f"{name}: a loss or gradient is not finite")
        scale = [max(t.abs().max().item(), 1e-12) for t in pml]
        agree = all((a - b).abs().max().item() / s <= 1e-12 for a, b, s in zip(pml, paper, scale))
        arrays = {"embeddings": x.numpy(), "labels": y.numpy(), "proxies": p.numpy()}
        if agree:
            source = "pml"
            chosen = pml
        else:
            if objective != "arcface":
                sys.exit(f"{name}: PML and the paper formula disagree where they should not")
            source = "paper"
            chosen = paper
            arrays.update(pml_loss=pml[0].numpy(), pml_grad_embeddings=pml[1].numpy(),
                          pml_grad_proxies=pml[2].numpy())
        arrays.update(loss=chosen[0].numpy(), grad_embeddings=chosen[1].numpy(),
                      grad_proxies=chosen[2].numpy())
        np.savez(out_dir / f"{name}.npz", **arrays)
        n, d = x.shape
        index.append({"name": name, "objective": objective, "options": options,
                      "pml_args": pml_args, "source": source, "n": n, "m": p.shape[0], "d": d})
        print(f"{name:34s} source={source:5s} loss={chosen[0].item():.6g}")
    (out_dir / "cases.json").write_text(json.dumps(index, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
