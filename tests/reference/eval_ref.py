"""Independent reference for grouploss's retrieval metrics (NumPy brute force) and the faiss
side of `gl bench eval`.

Definitions (as src/eval/retrieval.rs documents them): every image is a query against all
others; neighbours are ranked by similarity, descending, ties to the lower index. Recall@K
counts every query; MAP@R and R-Precision average over queries with R >= 1 other images of
their class (Musgrave et al. 2020).

    python eval_ref.py bench --vectors V.f32 --labels L.i64 --n N --dim D --ks 1,10,100,1000
        faiss-cpu IndexFlatIP search + the same metrics in NumPy; prints one JSON object.
"""

import argparse
import json
import resource
import sys
import time

import numpy as np


def metrics_from_neighbours(nbr, labels, ks):
    """Recall@K, MAP@R, R-Precision from neighbour indices (N x k, self excluded, nearest
    first) and labels; k must cover max(K) (clamped to N - 1) and the largest R."""
    n, k = nbr.shape
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    r = counts[inverse] - 1
    same = labels[nbr] == labels[:, None]
    recall = {}
    for kk in ks:
        recall[kk] = float(same[:, : min(kk, k)].any(axis=1).mean())
    ranks = np.arange(1, k + 1)
    rel = same & (ranks[None, :] <= r[:, None])
    precision = np.cumsum(rel, axis=1) / ranks[None, :]
    valid = r > 0
    ap = (precision * rel).sum(axis=1)[valid] / r[valid]
    rp = rel.sum(axis=1)[valid] / r[valid]
    return {
        "recall": recall,
        "map_at_r": float(ap.mean()) if valid.any() else None,
        "r_precision": float(rp.mean()) if valid.any() else None,
        "queries_without_positives": int((~valid).sum()),
    }


def brute_force_neighbours(x, k):
    """Exact neighbours in float64 by cosine similarity, ties to the lower index."""
    x = x.astype(np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    order = np.argsort(-sim, axis=1, kind="stable")
    return order[:, :k], sim


def needed_k(labels, ks):
    n = len(labels)
    _, counts = np.unique(labels, return_counts=True)
    return max(1, min(n - 1, max(max(ks), counts.max() - 1)))


def bench(args):
    import faiss

    ks = [int(k) for k in args.ks.split(",")]
    x = np.fromfile(args.vectors, dtype=np.float32).reshape(args.n, args.dim)
    labels = np.fromfile(args.labels, dtype=np.int64)
    k = needed_k(labels, ks)
    t0 = time.perf_counter()
    index = faiss.IndexFlatIP(args.dim)
    index.add(x)
    _, nbr = index.search(x, k + 1)
    # Drop each query itself (faiss returns it first unless a duplicate ties with it).
    own = nbr == np.arange(args.n)[:, None]
    has_own = own.any(axis=1)
    nbr = np.where(
        has_own[:, None],
        nbr[np.arange(args.n)[:, None], np.argsort(own, axis=1, kind="stable")[:, :k]],
        nbr[:, :k],
    )
    m = metrics_from_neighbours(nbr, labels, ks)
    seconds = time.perf_counter() - t0
    m["seconds"] = seconds
    m["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    m["faiss"] = faiss.__version__
    m["threads"] = faiss.omp_get_max_threads()
    m["recall"] = {str(k): v for k, v in m["recall"].items()}
    print(json.dumps(m))


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--vectors", required=True)
    b.add_argument("--labels", required=True)
    b.add_argument("--n", type=int, required=True)
    b.add_argument("--dim", type=int, required=True)
    b.add_argument("--ks", default="1,10,100,1000")
    args = p.parse_args(argv)
    bench(args)


if __name__ == "__main__":
    main(sys.argv[1:])
