"""PyTorch reference of one training epoch of the demo recipe: the other side of ``gl bench epoch``.

``python epoch_ref.py bench --plan PLAN.json --weights W.safetensors [--check CHECK.safetensors]``
trains the network ``gl`` built (``train_step_ref.load_net``: EfficientNet-Lite0 from
``efficientnet-lite-pytorch`` without ``_fc``, a linear classifier; the initial variables ``gl``
wrote) for the epochs the plan lists, as a PyTorch user writes it:

* a ``torch.utils.data.DataLoader`` over a ``Dataset`` that reads the same Parquet crop cache as
  ``gl`` (column ``jpeg``, rows found by ``image_id``) and decodes and augments each crop with PIL
  the way ``loader_ref.py`` does — for the demo ``Resize(72)`` is already in the cache and the
  augmentation is ``RandomCrop(64)`` (a shift; y drawn first, as torchvision), normalised
  ``(v − 127) / 128``; ``num_workers`` = the loader threads, ``batch_sampler`` = the epoch's batches
  exactly as ``gl`` drew them (the plan), ``pin_memory=False``, no persistent workers, a
  ``prefetch_factor`` giving the same number of batches in flight as ``gl``'s ``prefetch``, and a
  generator of its own (so the DataLoader's seed draw does not move the default generator's
  drop-connect masks away from ``gl``'s);
* ``torch.optim.Adam`` (``RAdam`` for a recipe with ``optimizer = "radam"``) with two parameter groups (backbone at ``lr``, classifier at
  ``classifier_lr``), BatchNorm frozen as ``gl``'s ``ForwardMode::TRAIN_FROZEN_BN``: the BatchNorm
  modules in eval mode (running statistics used, not updated) while drop-connect stays active and
  the BatchNorm affine parameters keep training;
* the recipe's ``memory_format`` (``channels_last``: ``net.to(memory_format=…)`` and each input
  batch) and ``autocast`` (``bf16``: the backbone under ``torch.autocast``, the features back in
  f32 for the classifier and the loss), as ``gl``'s ``model::execution``;
* per batch ``zero_grad`` / forward / ``group_loss_ref.group_loss`` / ``loss.item()`` /
  ``backward`` / ``step``.

Each epoch's wall time runs from creating the DataLoader's iterator (worker start-up included) to
the last step's end, the device synchronised; the time spent in ``next(iterator)`` (waiting for
the loader) is reported apart from the rest (the step). With ``--check``, instead, the sanity
check ``gl`` compares (in a process of its own, so that it cannot affect a timed epoch): the check batch (``gl``'s loader output of the first batch with the eval
transform, no augmentation) against this loader's own eval transform of the same images (max and
mean absolute difference), and one training step on ``gl``'s check images from the initial
weights (its loss and ‖θ₁ − θ₀‖).

Prints one JSON object. ``serve`` (what ``gl`` runs for the timed epochs) stays up and trains the
plan's epochs from the initial variables once per ``round`` line on stdin, one JSON object each
(``serve.py``), so that both sides are long-lived processes taking turns.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn as nn
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from group_loss_ref import _sync, first_k_anchor_mask, group_loss  # noqa: E402
from loader_ref import MEAN_BGR, rrc_params  # noqa: E402
from serve import serve  # noqa: E402
from train_step_ref import Skip, load_net, read_safetensors  # noqa: E402

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)


def normalise(rgb: np.ndarray, how: str) -> np.ndarray:
    """HWC uint8 RGB → CHW float32, as ``gl``'s ``Normalize``."""
    a = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1)
    if how == "efficientnet_lite":
        return (a - 127.0) / 128.0
    if how == "imagenet":
        return (a / np.float32(255.0) - IMAGENET_MEAN) / IMAGENET_STD
    if how == "bn_inception":
        return a[::-1] - MEAN_BGR  # RGB → BGR, 0–255, minus the mean
    raise SystemExit(f"unknown normalisation {how!r}")


class Crops(torch.utils.data.Dataset):
    """The crop cache's images by ``image_id``. An item is ``(image_id, epoch, batch, position)``
    in training mode (the per-image RNG is a function of those, as in ``gl``'s loader) or an
    ``image_id`` in eval mode; it becomes ``(CHW float32 tensor, classifier label)``."""

    def __init__(self, cache: str, labels: dict[int, int], t: dict, seed: int, train: bool):
        table = pq.read_table(cache, columns=["image_id", "jpeg"])
        ids = table.column("image_id").to_pylist()
        jpegs = table.column("jpeg").to_pylist()
        self.jpeg = dict(zip(ids, jpegs))
        self.labels = labels
        self.t = t
        self.seed = seed
        self.train = train

    def __len__(self):
        return len(self.jpeg)

    def __getitem__(self, item):
        image_id = item[0] if self.train else item
        img = Image.open(io.BytesIO(self.jpeg[image_id])).convert("RGB")
        t = self.t
        size = t["crop"]
        if self.train:
            rng = random.Random("/".join(str(v) for v in (self.seed, *item[1:])))
            if t["shift_only"]:  # Resize(resize) is the cache's; RandomCrop(size)
                y = rng.randint(0, img.height - size)
                x = rng.randint(0, img.width - size)
                out = img.crop((x, y, x + size, y + size))
            else:  # RandomResizedCrop(size, scale)
                x, y, cw, ch = rrc_params(img.width, img.height, rng, scale=tuple(t["scale"]))
                out = img.resize((size, size), Image.BILINEAR, box=(x, y, x + cw, y + ch))
            if t["hflip"] and rng.random() < 0.5:
                out = out.transpose(Image.FLIP_LEFT_RIGHT)
        else:  # Resize(resize) + CenterCrop(size), torchvision's rounding
            w, h = img.size
            short, long = min(w, h), max(w, h)
            if short != t["resize"]:
                new_long = int(t["resize"] * long / short)
                w, h = (t["resize"], new_long) if w <= h else (new_long, t["resize"])
                img = img.resize((w, h), Image.BILINEAR)
            x, y = int(round((w - size) / 2)), int(round((h - size) / 2))
            out = img.crop((x, y, x + size, y + size))
        a = normalise(out, t["normalize"])
        return torch.from_numpy(np.ascontiguousarray(a)), self.labels.get(image_id, -1)


def freeze_batchnorm(net: nn.Module) -> None:
    """``gl``'s frozen BatchNorm: eval-mode BatchNorm inside a network in training mode."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def build(plan: dict, weights: Path, dev):
    """The network with ``gl``'s initial variables, in training mode (in the recipe's memory
    format), and its optimiser."""
    net = load_net(plan["backbone"], weights).to(dev).train()
    if plan["memory_format"] == "channels_last":
        net = net.to(memory_format=torch.channels_last)
    elif plan["memory_format"] != "contiguous":
        raise SystemExit(f"memory_format {plan['memory_format']!r}: not in this reference")
    if plan["autocast"] not in ("off", "bf16"):
        raise SystemExit(f"autocast {plan['autocast']!r}: not in this reference")
    if plan["batchnorm"] == "frozen":
        freeze_batchnorm(net)
    o = plan["optimizer"]
    body = [p for n, p in net.named_parameters() if p.requires_grad and not n.startswith("classifier.")]
    head = [p for n, p in net.named_parameters() if p.requires_grad and n.startswith("classifier.")]
    kinds = {"adam": torch.optim.Adam, "radam": torch.optim.RAdam}
    if o["name"] not in kinds:
        raise SystemExit(f"optimizer {o['name']!r}: this reference has {sorted(kinds)}")
    opt = kinds[o["name"]](
        [{"params": body, "lr": o["lr"]}, {"params": head, "lr": o["classifier_lr"]}],
        lr=o["lr"],
        betas=tuple(o["betas"]),
        eps=o["eps"],
        weight_decay=o["weight_decay"],
    )
    return net, opt


def forward(net, xs, plan: dict):
    """Features and logits as ``gl``'s ``EmbeddingNet`` with the recipe's execution: the input
    in the network's memory format; with ``autocast = "bf16"`` the backbone under bfloat16
    autocast, its features back in f32 for the classifier and the loss."""
    if plan["memory_format"] == "channels_last":
        xs = xs.contiguous(memory_format=torch.channels_last)
    if plan["autocast"] == "bf16":
        with torch.autocast(xs.device.type, dtype=torch.bfloat16):
            f = net._features(net.backbone, xs)
        f = f.float()
    else:
        f = net._features(net.backbone, xs)
    return f, net.classifier(f)


def step(net, opt, images, labels, plan: dict, dev) -> tuple[float, float, float]:
    """One training step; returns (loss, group part, cross-entropy part)."""
    loss_cfg = plan["loss"]
    opt.zero_grad()
    xs = images.to(dev)
    f, z = forward(net, xs, plan)
    y = labels.to(dev)
    mask = first_k_anchor_mask(labels, loss_cfg["anchors"]).to(dev)
    lg, lce, loss, _ = group_loss(
        f, z, y, mask, loss_cfg["tau"], loss_cfg["replicator_steps"], loss_cfg["ce_weight"], loss_cfg["zero_diagonal"]
    )
    value = loss.item()
    if not math.isfinite(value):
        raise SystemExit(f"the loss is {value}")
    loss.backward()
    opt.step()
    return value, lg.item(), lce.item()


def check(plan: dict, weights: Path, check_file: Path, labels: dict[int, int], dev) -> dict:
    """The loader's eval transform against ``gl``'s, and one step on ``gl``'s check images."""
    batch = read_safetensors(check_file)
    ids = batch["image_ids"].tolist()
    ds = Crops(plan["cache"], labels, plan["transform"], plan["loader_seed"], train=False)
    ours = torch.stack([ds[i][0] for i in ids])
    diff = (ours - batch["images"]).abs()
    net, opt = build(plan, weights, dev)
    params = [p for p in net.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    torch.manual_seed(plan["check_seed"])
    loss, _, _ = step(net, opt, batch["images"], batch["labels"], plan, dev)
    with torch.no_grad():
        update = math.sqrt(sum(float((p.double() - q.double()).square().sum()) for p, q in zip(params, before)))
    return {
        "loss": loss,
        "update_norm": update,
        "pixel_max_abs": float(diff.max()),
        "pixel_mean_abs": float(diff.mean()),
    }


def epoch(plan: dict, ep: dict, net, opt, ds, dev) -> dict:
    """One timed epoch."""
    threads = plan["loader_threads"]
    batches = [[(i, ep["epoch"], b, pos) for pos, i in enumerate(ids)] for b, ids in enumerate(ep["batches"])]
    torch.manual_seed(ep["torch_seed"])
    _sync(dev)
    t0 = time.perf_counter()
    loader = torch.utils.data.DataLoader(
        ds,
        batch_sampler=batches,
        num_workers=threads,
        pin_memory=False,
        persistent_workers=False,
        prefetch_factor=max(1, -(-plan["prefetch"] // threads)),
        generator=torch.Generator(),
    )
    it = iter(loader)
    wait, first_batch, sums, n, images = 0.0, None, [0.0, 0.0, 0.0], 0, 0
    while True:
        t = time.perf_counter()
        try:
            xs, ys = next(it)
        except StopIteration:
            wait += time.perf_counter() - t
            break
        now = time.perf_counter()
        wait += now - t
        if first_batch is None:
            first_batch = now - t0
        for k, v in enumerate(step(net, opt, xs, ys, plan, dev)):
            sums[k] += v
        n += 1
        images += len(ys)
    _sync(dev)
    seconds = time.perf_counter() - t0
    return {
        "epoch": ep["epoch"],
        "seconds": seconds,
        "batches": n,
        "images": images,
        "loss": sums[0] / max(n, 1),
        "loss_group": sums[1] / max(n, 1),
        "loss_ce": sums[2] / max(n, 1),
        "wait_s": wait,
        "step_s": seconds - wait,
        "first_batch_s": first_batch,
    }


class Bench:
    """The plan, the device and the training crops, read once."""

    def __init__(self, a):
        self.a = a
        self.plan = plan = json.loads(Path(a.plan).read_text())
        torch.set_num_threads(plan["threads"])
        self.dev = torch.device(plan["device"])
        self.header = {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": plan["device"]}
        self.labels = {int(k): v for k, v in plan["labels"].items()}
        self.ds = Crops(plan["cache"], self.labels, plan["transform"], plan["loader_seed"], train=True)

    def check(self) -> dict:
        return {**self.header, "check": check(self.plan, self.a.weights, self.a.check, self.labels, self.dev)}

    def round(self) -> dict:
        """The plan's epochs, from a network built afresh from the initial variables."""
        net, opt = build(self.plan, self.a.weights, self.dev)
        return {**self.header, "epochs": [epoch(self.plan, ep, net, opt, self.ds, self.dev) for ep in self.plan["epochs"]]}


def bench(a) -> dict:
    """With ``--check``, the check alone; otherwise one round."""
    b = Bench(a)
    try:
        return b.check() if a.check is not None else b.round()
    except Skip as e:
        return {**b.header, "skipped": str(e)}


def serve_bench(a) -> int:
    """``serve``: the header as the ready reply, then one round per ``round`` line on stdin
    (``serve.py``). The check, and the reply ``skipped`` for a network this machine cannot
    build, stay with ``bench --check``, which ``gl`` runs first in a process of its own."""
    b = Bench(a)
    return serve(b.header, b.round)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, help in (
        ("bench", "train the plan's epochs, print JSON"),
        ("serve", "the plan's epochs per 'round' line on stdin, print JSON per round (serve.py)"),
    ):
        b = sub.add_parser(name, help=help)
        b.add_argument("--plan", type=Path, required=True, help="what gl wrote: data, batches, recipe")
        b.add_argument("--weights", type=Path, required=True, help="initial variables (safetensors)")
        if name == "bench":
            b.add_argument("--check", type=Path, help="gl's check batch (safetensors): run the sanity check instead")
    a = p.parse_args(argv)
    if a.cmd == "serve":
        return serve_bench(a)
    print(json.dumps(bench(a)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
