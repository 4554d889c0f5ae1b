"""Reference training loader for `gl bench loader`: PIL + NumPy doing what the Rust loader does.

Reads the crop cache (Parquet, column `jpeg`) with pyarrow, then for every image: decode with
PIL, convert to RGB, torchvision's RandomResizedCrop(227, scale=(0.08, 1), ratio=(3/4, 4/3))
parameters (10 attempts, then the central fallback), bilinear resize of the crop
(`Image.resize(..., box=crop)`), horizontal flip with p = 0.5, BN-Inception normalisation (BGR,
0–255, minus [104, 117, 128]) into a CHW float32 array; images are stacked into batches. Threads
come from a ThreadPoolExecutor (PIL releases the GIL while decoding and resizing).

    python loader_ref.py bench CACHE.parquet --threads 2 --batch 54 --images 540   # JSON on stdout
"""
from __future__ import annotations

import argparse
import io
import json
import math
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

MEAN_BGR = np.array([104.0, 117.0, 128.0], dtype=np.float32).reshape(3, 1, 1)


def rrc_params(w: int, h: int, rng: random.Random, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    area = w * h
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.randint(0, w - cw), rng.randint(0, h - ch), cw, ch
    in_ratio = w / h
    if in_ratio < ratio[0]:
        cw, ch = w, int(round(w / ratio[0]))
    elif in_ratio > ratio[1]:
        ch, cw = h, int(round(h * ratio[1]))
    else:
        cw, ch = w, h
    return (w - cw) // 2, (h - ch) // 2, cw, ch


def train_image(jpeg: bytes, seed: int, size: int = 227) -> np.ndarray:
    rng = random.Random(seed)
    img = Image.open(io.BytesIO(jpeg)).convert("RGB")
    x, y, cw, ch = rrc_params(img.width, img.height, rng)
    out = img.resize((size, size), Image.BILINEAR, box=(x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    a = np.asarray(out, dtype=np.float32)[:, :, ::-1].transpose(2, 0, 1)  # HWC RGB → CHW BGR
    return a - MEAN_BGR


def bench(cache: str, threads: int, batch: int, images: int) -> dict:
    jpegs = pq.read_table(cache, columns=["jpeg"]).column("jpeg").to_pylist()
    jpegs = [jpegs[i % len(jpegs)] for i in range(images)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(train_image, jpegs[:batch], range(batch)))  # warm-up
        t0 = time.perf_counter()
        for b in range(0, images, batch):
            chunk = jpegs[b : b + batch]
            np.stack(list(pool.map(train_image, chunk, range(b, b + len(chunk)))))
        dt = time.perf_counter() - t0
    return {"images": images, "threads": threads, "seconds": dt, "images_per_s": images / dt}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench")
    b.add_argument("cache")
    b.add_argument("--threads", type=int, default=1)
    b.add_argument("--batch", type=int, default=54)
    b.add_argument("--images", type=int, default=540)
    a = p.parse_args(argv)
    print(json.dumps(bench(a.cache, a.threads, a.batch, a.images)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
