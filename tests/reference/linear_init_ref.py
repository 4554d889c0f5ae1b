"""PyTorch's side of ``tests/it/linear_init.rs``: ``torch.nn.Linear``'s initial values.

``python linear_init_ref.py OUT.npz`` writes, for each case ``i`` of ``CASES`` (seed, in, out),
``w_<i>`` (out×in) and ``b_<i>`` (out) of ``torch.manual_seed(seed); torch.nn.Linear(in, out)``
as float32, and ``w64_<i>``, ``b64_<i>`` for ``CASES64`` with float64 as the default dtype: the
weight ``kaiming_uniform_(a=√5)`` = U(−1/√in, 1/√in) drawn first, then the bias
U(−1/√in, 1/√in), both from the global CPU generator. The test runs it in the same run and
compares ``grouploss::model::linear::torch_linear`` with it bit for bit.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

# (seed, in_features, out_features); keep in step with CASES in tests/it/linear_init.rs.
CASES = [(0, 1280, 128), (1, 128, 107), (7, 3, 5), (42, 1024, 98)]
# The same in float64, where uniform_ keeps the bound's last f64 bit (kaiming_uniform_'s bound
# for in = 1024 and 1280 is 1 ulp below 1/√in); keep in step with CASES64.
CASES64 = [(5, 1024, 16), (6, 1280, 8)]


def main(out: str) -> None:
    arrays = {}
    for i, (seed, n_in, n_out) in enumerate(CASES):
        torch.manual_seed(seed)
        layer = torch.nn.Linear(n_in, n_out)
        arrays[f"w_{i}"] = layer.weight.detach().to(torch.float32).numpy()
        arrays[f"b_{i}"] = layer.bias.detach().to(torch.float32).numpy()
    torch.set_default_dtype(torch.float64)
    for i, (seed, n_in, n_out) in enumerate(CASES64):
        torch.manual_seed(seed)
        layer = torch.nn.Linear(n_in, n_out)
        arrays[f"w64_{i}"] = layer.weight.detach().numpy()
        arrays[f"b64_{i}"] = layer.bias.detach().numpy()
    np.savez(out, **arrays)


if __name__ == "__main__":
    main(sys.argv[1])
