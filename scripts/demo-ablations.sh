#!/usr/bin/env bash
# The demo's ablations (docs/demo.md): one `gl train` per row on the embedded glyph set, each the
# recipe of the row above it or of the named base with one change, judged on validation R@1
# (27 training classes held out, class-disjoint from the test classes); test R@1 is printed
# beside it afterwards and decided nothing.
#
#   scripts/demo-ablations.sh [GL] [DATA_DIR] [SEEDS] [JOBS]
#
# GL defaults to $CARGO_TARGET_DIR/debug/gl, DATA_DIR to /tmp/gl-ablations (kept apart from
# data/), SEEDS to "0", JOBS (runs at once, each with GL_THREADS = 2 / JOBS) to 2. Runs already
# finished are reused (`--resume`), so the script can be stopped and started again. Output: one
# TSV line per row and seed on stdout, then `ablations.tsv` in DATA_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
gl="${1:-${CARGO_TARGET_DIR:-$HOME/.cache/grouploss/target}/debug/gl}"
data="${2:-/tmp/gl-ablations}"
seeds="${3:-0}"
jobs="${4:-2}"
export GL_DATA_DIR="$data" GL_CATALOG=off GL_THREADS=$((2 / jobs > 0 ? 2 / jobs : 1))
mkdir -p "$data"

# name | --set overrides on top of the `demo` recipe as it was before tuning (the `demo_untuned`
# profile of pipeline/train.toml pins those values, so the rows stay comparable when the tuned
# recipe changes).
PROTO='optimizer="adam" lr=1e-4 classifier_lr=1e-3 augment="random_crop"'
rows=(
    "base (RAdam, lr 3e-5 / head 3e-3, resized crop ≥ 0.5)|"
    "Adam instead of RAdam|optimizer=\"adam\""
    "Adam, lr 1e-4 / head 1e-3|optimizer=\"adam\" lr=1e-4 classifier_lr=1e-3"
    "prototype: Adam, lr 1e-4 / head 1e-3, shift-only crop|$PROTO"
    "prototype, no augmentation (crop scale 1.0)|optimizer=\"adam\" lr=1e-4 classifier_lr=1e-3 crop_scale_min=1.0"
    "prototype, BatchNorm train|$PROTO batchnorm=\"train\""
    "prototype, τ = 3|$PROTO tau=3.0"
    "prototype, 12 images per class|$PROTO train_images_per_class=12"
    "prototype, cross-entropy only|$PROTO objective=\"cross_entropy\""
    "prototype, 2 epochs, no lr drop|$PROTO epochs=2 lr_milestones=[]"
)

"$gl" fetch demo --quiet >&2
"$gl" weights efficientnet_lite0_imagenet --quiet >&2
"$gl" prepare demo --resize 72 --quiet >&2

run_one() {
    local i="$1" seed="$2" spec="$3"
    local name="${spec%%|*}" sets="${spec#*|}"
    local id="ablate-$(printf %02d "$i")-s$seed"
    local args=()
    [ "$i" -eq 0 ] || args+=("--set=eval_untrained=false")
    for s in $sets; do args+=("--set=$s"); done
    "$gl" train --dataset demo --profile demo_untuned --seed "$seed" --run-id "$id" \
        --device cpu --resume --quiet "${args[@]}" >"$data/$id.log" 2>&1 || {
        echo "row $i seed $seed failed: see $data/$id.log" >&2
        return 1
    }
}

pids=()
for seed in $seeds; do
    for i in "${!rows[@]}"; do
        run_one "$i" "$seed" "${rows[$i]}" &
        pids+=($!)
        while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    done
done
wait || true

out="$data/ablations.tsv"
python3 - "$data" "$seeds" "${rows[@]}" >"$out" <<'EOF'
import json, pathlib, sys
data, seeds, rows = pathlib.Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3:]
print("row\tname\tseed\tselected_epoch\tval_r1\ttest_r1\tval_r1_untrained\ttest_r1_untrained\tseconds")
for i, spec in enumerate(rows):
    name = spec.split("|")[0]
    for seed in seeds:
        run = data / "runs" / f"ablate-{i:02d}-s{seed}"
        try:
            s = json.loads((run / "run.json").read_text())
        except FileNotFoundError:
            print(f"{i}\t{name}\t{seed}\t—\t—\t—\t—\t—\t—")
            continue
        e = s["selected_epoch"]
        ep = [json.loads(l) for l in (run / "epochs.jsonl").read_text().splitlines() if l.strip()]
        val = next(r["val_recall"][0] for r in ep if r["epoch"] == e)
        test = s["test_recall_val_selected"][0]
        u = run / "untrained.json"
        u = json.loads(u.read_text()) if u.exists() else {}
        vu = (u.get("val_recall") or [float("nan")])[0]
        tu = (u.get("test_recall") or [float("nan")])[0]
        print(f"{i}\t{name}\t{seed}\t{e}\t{100*val:.2f}\t{100*test:.2f}\t{100*vu:.2f}\t{100*tu:.2f}\t{s['seconds']:.0f}")
EOF
cat "$out"
