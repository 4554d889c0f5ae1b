# grouploss task runner. `just --list` shows the recipes.
set shell := ["bash", "-euo", "pipefail", "-c"]

# The venv (torch==2.11.0 for libtorch, the Python references, just itself) lives outside the
# clone, like CARGO_TARGET_DIR, so every clone and CI run reuses it and the libtorch path baked
# into `gl` (RUNPATH) stays valid.
cache := env_var_or_default("GL_CACHE", home_directory() / ".cache/grouploss")
venv := env_var_or_default("GL_VENV", cache / "venv")
py := venv / "bin/python"

export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", cache / "target")
export PIP_CACHE_DIR := env_var_or_default("PIP_CACHE_DIR", cache / "pip")
export LIBTORCH_USE_PYTORCH := "1"
export GL_PYTHON := py
export DUCKDB_LIB_DIR := env_var_or_default("DUCKDB_LIB_DIR", cache / "duckdb-1.5.6")
export PATH := venv / "bin" + ":" + env_var("PATH")

# Build the tests and the `gl` binary (one shared dev profile) and run every test.
test: setup duckdb
    cargo test --locked --features test-slurm,test-golden
    {{py}} -m pytest -q tests/reference

# Create or refresh the venv from requirements-dev.txt (skipped when it is already current).
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    stamp="{{venv}}/.requirements.sha256"
    want=$(sha256sum requirements-dev.txt | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
    [ -x "{{py}}" ] || python3 -m venv "{{venv}}"
    "{{py}}" -m pip install -q -r requirements-dev.txt
    echo "$want" > "$stamp"

# Fetch the prebuilt libduckdb.so once (sha256-verified; GL_LIBDUCKDB_ZIP=… uses DuckDB's own zip).
duckdb:
    GL_DUCKDB_DIR="$DUCKDB_LIB_DIR" scripts/fetch-libduckdb.sh >/dev/null

# Build `gl` (dev profile, shared with the tests).
build: setup duckdb
    cargo build --locked --bin gl

# Run the CLI with any arguments, building it first if needed: `just gl verify-loss ../shared/golden/group_loss`.
gl *ARGS: build
    "$CARGO_TARGET_DIR/debug/gl" {{ARGS}}

# The main job on the embedded demo set: the `demo` profile of pipeline/profiles/ through the stage
# runner — fetch the set, convert EfficientNet-Lite0's ImageNet weights, prepare the crops, train
# the softmax baseline and Group Loss with two seeds, embed, evaluate (with the untrained
# baseline), ensemble — then every stage's state. Only what is stale runs: a second call is quick.
demo *ARGS: build
    "$CARGO_TARGET_DIR/debug/gl" run --profile demo {{ARGS}}
    "$CARGO_TARGET_DIR/debug/gl" status --profile demo

# Check that the committed reports/demo is what the code of this commit makes: the demo from a
# clone of HEAD into an empty data directory (both temporary), compared byte for byte with the
# committed report; prints what differs and fails then. ≈ 10 min on 2 cores.
verify-demo: build
    #!/usr/bin/env bash
    set -euo pipefail
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    [ -z "$(git status --porcelain --untracked-files=no)" ] || echo "verify-demo: note: uncommitted changes are not part of the check (it runs HEAD)"
    git clone -q --no-hardlinks . "$tmp/project"
    gl="$CARGO_TARGET_DIR/debug/gl"
    "$gl" --project-dir "$tmp/project" --data-dir "$tmp/data" run --profile demo
    if diff -r reports/demo "$tmp/project/reports/demo" >"$tmp/diff"; then
        echo "verify-demo: reports/demo is byte-identical to what HEAD makes from an empty data directory"
    elif diff -r -I 'from the code at ' reports/demo "$tmp/project/reports/demo" >/dev/null; then
        cat "$tmp/diff"
        echo "verify-demo: every number is identical; only the footer's code commit differs (the report was made before a later code commit): regenerate it to update its provenance" >&2
    else
        cat "$tmp/diff"
        echo "verify-demo: reports/demo differs from what HEAD makes (above)" >&2
        exit 1
    fi

# Refresh the golden numerics trajectory (tests/fixtures/numerics/trajectory.json) after a
# numerics version bump, once every committed report has been regenerated (docs/development.md).
numerics-fixture: build
    "$CARGO_TARGET_DIR/debug/gl" numerics-check --write tests/fixtures/numerics/trajectory.json

# The paper's tables (`just reproduce`), or any profile of pipeline/profiles/ (GPU expected for paper).
reproduce profile="paper" *ARGS: build
    "$CARGO_TARGET_DIR/debug/gl" run --profile {{profile}} {{ARGS}}
    "$CARGO_TARGET_DIR/debug/gl" status --profile {{profile}}

# Every benchmark; each ends with `SPEEDUP <name> <x>` lines (reference time / ours), and all of
# them are repeated at the end, training's last (the step per backbone, the optimiser, the epoch).
bench *ARGS: build
    #!/usr/bin/env bash
    set -euo pipefail
    gl="$CARGO_TARGET_DIR/debug/gl"
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    "{{py}}" -c "import faiss" 2>/dev/null || "{{py}}" -m pip install -q faiss-cpu==1.15.1
    "$gl" bench loss {{ARGS}} | tee -a "$log"
    "$gl" bench loader | tee -a "$log"
    "$gl" bench eval | tee -a "$log"
    "$gl" bench train --rounds 3 --steps 3 | tee -a "$log"
    "$gl" bench optimizer | tee -a "$log"
    "$gl" bench epoch | tee -a "$log"
    echo "== every SPEEDUP (reference time / gl's; above 1: gl is faster), and the CPU they ran on"
    grep '^CPU ' "$log" | sort -u
    grep '^SPEEDUP ' "$log"

# Time the PyTorch-eager reference loss alone (JSON on stdout).
bench-reference: setup
    {{py}} tests/reference/group_loss_ref.py bench

# The last-resort DuckDB build (compiles DuckDB's C++, ≈ 30 min cold on 2 cores) and the
# catalogue tests on it, Parquet round trip included. Not part of `test`: run it when touching
# the catalogue's DuckDB use.
test-bundled: setup
    env -u DUCKDB_LIB_DIR CARGO_TARGET_DIR="{{cache}}/target-bundled" cargo test --locked --features duckdb-bundled --test it catalog::

# Regenerate docs/cli.md from the clap definitions (a unit test fails when it is stale).
docs: build
    "$CARGO_TARGET_DIR/debug/gl" cli-reference > docs/cli.md

# Lints the CI does not run but every change should pass.
lint: setup duckdb
    cargo fmt --all -- --check
    cargo clippy --locked --all-targets --features test-slurm,test-golden -- -D warnings

# A `gl` without the catalogue (no libduckdb.so needed) and what the GPU smoke test reads, in
# dist/ (ignored), to carry to a GPU machine or cluster node.
# Everything a GPU box needs to train the demo: gl (debug info stripped), pipeline/, the demo
# archive, the smoke script; with `gl weights efficientnet_lite0_imagenet` done, its weights too.
dist: setup
    cargo build --locked --bin gl --no-default-features
    rm -rf dist && mkdir -p dist/golden dist/data/demo dist/scripts
    strip --strip-debug -o dist/gl "$CARGO_TARGET_DIR/debug/gl"
    cp ../shared/golden/group_loss/* dist/golden/
    cp -r pipeline dist/
    cp data/demo/glyphs.tar.gz dist/data/demo/
    cp scripts/gpu-smoke.sh dist/scripts/
    if [ -f data/weights/efficientnet_lite0_imagenet/weights.json ]; then mkdir -p dist/data/weights/efficientnet_lite0_imagenet && cp data/weights/efficientnet_lite0_imagenet/weights.* dist/data/weights/efficientnet_lite0_imagenet/; fi
    du -sh dist
