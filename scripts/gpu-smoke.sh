#!/usr/bin/env bash
# GPU smoke test for a `gl` built elsewhere (see docs/training.md "Running on a GPU").
#
#   scripts/gpu-smoke.sh [GL_BINARY] [GOLDEN_DIR]      (defaults: dist/gl dist/golden; `just dist` makes both)
#
# Needs an NVIDIA GPU and PyTorch 2.11 in a Python found as $GL_PYTHON, /opt/torch/.venv/bin/python
# or python3. gl is pointed at that PyTorch's torch/lib with LD_LIBRARY_PATH (it takes precedence
# over the RUNPATH baked in at build time). Checks: CUDA is seen and libtorch_cuda is mapped,
# the golden vectors pass on cuda (f64 and f32) and cpu, the loss benchmark on cuda and cpu, and
# one epoch of demo training on cuda and on cpu.
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
step "demo training: 1 epoch on cuda, then on cpu (images/s side by side)"
# Needs the project's pipeline/ and data/demo/ (run from the repository root); uses the
# pretrained EfficientNet-Lite0 when data/weights/ has it converted (`gl weights
# efficientnet_lite0_imagenet`, carried over), else the tiny CNN from random init.
export GL_DATA_DIR=${GL_DATA_DIR:-/tmp/gl-smoke-data}
mkdir -p "$GL_DATA_DIR"
if [ -f data/weights/efficientnet_lite0_imagenet/weights.safetensors ]; then
    mkdir -p "$GL_DATA_DIR/weights" && cp -r data/weights/efficientnet_lite0_imagenet "$GL_DATA_DIR/weights/"
    model=()
else
    model=(--set 'backbone="tiny_cnn"' --set 'init="none"' --set input_size=32 --set resize=36)
fi
"$gl" fetch demo --quiet
for dev in cuda cpu; do
    rm -rf "$GL_DATA_DIR/runs/gpu-smoke-$dev"
    "$gl" train --dataset demo --profile demo --device "$dev" --run-id "gpu-smoke-$dev" --quiet \
        --set epochs=1 --set 'lr_milestones=[]' --set loader_threads=8 "${model[@]}"
done
for dev in cuda cpu; do
    printf '%s: ' "$dev"
    "$GL_PYTHON" -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1])][-1]; print("%.0f img/s training, %.1f s train + %.1f s eval, test R@1 %.2f" % (r["images_per_second"], r["train_seconds"], r["eval_seconds"], 100*r["test_recall"][0]))' "$GL_DATA_DIR/runs/gpu-smoke-$dev/epochs.jsonl"
done
step "evaluate the cuda run on cuda (blocked top-k search) and on cpu (triangle): same numbers"
for dev in cuda cpu; do
    "$gl" evaluate gpu-smoke-cuda --device "$dev" --format json > "$GL_DATA_DIR/eval-$dev.json"
done
cmp "$GL_DATA_DIR/eval-cuda.json" "$GL_DATA_DIR/eval-cpu.json" && echo "identical" \
    || { echo "differ:"; cat "$GL_DATA_DIR/eval-cuda.json" "$GL_DATA_DIR/eval-cpu.json"; }
step "bench eval at SOP scale on cuda (ours only: no faiss on this machine), with k-means for NMI"
"$gl" bench eval --device cuda --no-reference --kmeans-iters 20

echo; echo "gpu-smoke: all checks passed"
