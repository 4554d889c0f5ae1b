# grouploss task runner. `just --list` shows the recipes.
set shell := ["bash", "-euo", "pipefail", "-c"]

venv := ".venv"
py := venv / "bin/python"

# Create or refresh .venv from requirements-dev.txt (skipped when it is already current).
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    stamp="{{venv}}/.requirements.sha256"
    want=$(sha256sum requirements-dev.txt | cut -d' ' -f1)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
    [ -x "{{py}}" ] || python3 -m venv "{{venv}}"
    "{{py}}" -m pip install -q -r requirements-dev.txt
    echo "$want" > "$stamp"

# Run the tests: today the reference suite (tests/reference); see README "Status".
test: setup
    {{py}} -m pytest -q tests/reference

# Time the PyTorch-eager reference loss at the CUB and SOP shapes (JSON on stdout).
bench-reference: setup
    {{py}} tests/reference/group_loss_ref.py bench
