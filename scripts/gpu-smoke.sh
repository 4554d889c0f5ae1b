#!/usr/bin/env bash
# GPU smoke test for a `gl` built elsewhere (see README "Running on a GPU").
#
#   scripts/gpu-smoke.sh [GL_BINARY] [GOLDEN_DIR]      (defaults: dist/gl dist/golden; `just dist` makes both)
#
# Needs an NVIDIA GPU and PyTorch 2.11 in a Python found as $GL_PYTHON, /opt/torch/.venv/bin/python
# or python3. gl is pointed at that PyTorch's torch/lib with LD_LIBRARY_PATH (it takes precedence
# over the RUNPATH baked in at build time). Checks: CUDA is seen and libtorch_cuda is mapped,
# the golden vectors pass on cuda (f64 and f32) and cpu, and the loss benchmark on cuda and cpu.
set -euo pipefail
gl=${1:-dist/gl}
golden=${2:-dist/golden}
if [ -z "${GL_PYTHON:-}" ]; then
    if [ -x /opt/torch/.venv/bin/python ]; then GL_PYTHON=/opt/torch/.venv/bin/python; else GL_PYTHON=python3; fi
fi
export GL_PYTHON
torchlib=$("$GL_PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torchlib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
step() { printf '\n== %s\n' "$*"; }

step "nvidia-smi"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
step "gl env"
"$gl" env | tee /tmp/gl-env.txt
grep -qx 'libtorch_cuda: loaded' /tmp/gl-env.txt || { echo "FAIL: libtorch_cuda.so is not loaded"; exit 1; }
devices=$(sed -n 's/^cuda_devices: //p' /tmp/gl-env.txt)
[ "${devices:-0}" -ge 1 ] || { echo "FAIL: libtorch sees no CUDA device"; exit 1; }
step "verify-loss on cuda (f64, tolerance 1e-9)"
"$gl" verify-loss "$golden" --device cuda
step "verify-loss on cuda (f32, tolerance 1e-4)"
"$gl" verify-loss "$golden" --device cuda --dtype f32
step "verify-loss on cpu (f64)"
"$gl" verify-loss "$golden" --device cpu | tail -1
step "bench loss on cuda"
"$gl" bench loss --device cuda --reference-dir "${GL_REFERENCE_DIR:-tests/reference}"
step "bench loss on cpu"
"$gl" bench loss --device cpu --rounds 3 --reference-dir "${GL_REFERENCE_DIR:-tests/reference}"
echo; echo "gpu-smoke: all checks passed"
