"""PyTorch checkpoint -> safetensors, for `gl weights` (src/model/weights/convert.rs).

Usage:  python torch_to_safetensors.py SRC DST
   or:  python - SRC DST < torch_to_safetensors.py      (how `gl` runs its embedded copy)

Why Python: the checkpoints are pickles, and the official BN-Inception weights use the legacy
(PyTorch < 1.6) serialisation, which libtorch's C++ loader cannot read. torch is already a
dependency (libtorch comes from its wheel), so its own `torch.load` reads both formats.

What it does, and nothing more (key mapping and the comparison with the backbone are in Rust):
* `torch.load(SRC, map_location="cpu", weights_only=True)`: tensors and plain containers only,
  never arbitrary pickled objects;
* unwraps `{"state_dict": sd}` (also `model_state_dict`, `model`) when that entry is a dict;
* skips non-tensor entries (listed in the summary), strips a `module.` prefix that every key
  carries (DataParallel);
* writes DST in the safetensors format directly: 8-byte little-endian header length, a JSON
  header (space-padded to a multiple of 8), then the raw little-endian data; floating tensors
  as float32, integer and bool tensors unchanged; written to DST.tmp, fsynced, renamed;
* prints one JSON object on stdout: tensors, wrapper, stripped_prefix, non_tensor, dtypes.
Exit status 1 with a message on stderr when SRC is not a state dict.
"""

import json
import os
import struct
import sys

import torch

WRAPPERS = ("state_dict", "model_state_dict", "model")
DTYPES = {
    torch.float32: "F32",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def fail(message):
    print(f"torch_to_safetensors: {message}", file=sys.stderr)
    sys.exit(1)


def state_dict(obj):
    """(the state dict, the wrapper key it came from or None)."""
    if not isinstance(obj, dict):
        fail(f"expected a state dict (a dict of tensors), found {type(obj).__name__}")
    for key in WRAPPERS:
        inner = obj.get(key)
        if isinstance(inner, dict) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner, key
    return obj, None


def to_saveable(t):
    t = t.detach().cpu()
    if t.is_floating_point():
        t = t.to(torch.float32)
    if t.dtype not in DTYPES:
        return None
    return t.contiguous()


def write_safetensors(tensors, dst):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name]
        arr = t.numpy()
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {
            "dtype": DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for blob in blobs:
            f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, dst)


def main(src, dst):
    try:
        obj = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - reported to the user with the file named
        fail(f"torch.load({src!r}, weights_only=True) failed: {type(e).__name__}: {e}")
    sd, wrapper = state_dict(obj)
    tensors, non_tensor, dtypes = {}, [], {}
    for key, value in sd.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            non_tensor.append(str(key))
            continue
        dtype = str(value.dtype).removeprefix("torch.")
        dtypes[dtype] = dtypes.get(dtype, 0) + 1
        t = to_saveable(value)
        if t is None:
            fail(f"{key}: unsupported dtype {value.dtype}")
        tensors[key] = t
    if not tensors:
        fail(f"{src} holds no tensors (entries: {', '.join(map(str, list(sd)[:10]))})")
    stripped = None
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
        stripped = "module."
    write_safetensors(tensors, dst)
    print(json.dumps({
        "tensors": len(tensors),
        "wrapper": wrapper,
        "stripped_prefix": stripped,
        "non_tensor": non_tensor,
        "dtypes": dtypes,
    }))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        fail("usage: torch_to_safetensors.py SRC DST")
    main(sys.argv[1], sys.argv[2])
