#!/usr/bin/env bash
# CI smoke test of the trainer (docs/training.md): install the pinned CPU requirements, fetch and
# prepare the data, train each variant a few steps on a tiny config, export (F16), write golden
# outputs, and when a plt binary is at hand ($PLT_BIN, default target/debug/plt, which `cargo test`
# builds) check that the Rust CPU reference reproduces the trainer's log-probabilities.
set -euo pipefail
cd "$(dirname "$0")/.."
W="$(mktemp -d)"
trap 'rm -rf "$W"' EXIT
# A virtual environment (Debian's system Python refuses pip installs, PEP 668); set
# PLT_TRAIN_PYTHON to use an interpreter that already has train/requirements.txt.
if [ -n "${PLT_TRAIN_PYTHON:-}" ]; then
    PY="$PLT_TRAIN_PYTHON"
else
    python3 -m venv "$W/venv"
    PY="$W/venv/bin/python"
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q -r train/requirements.txt
fi
"$PY" train/prepare_data.py --out "$W/data" --vocab 512
PLT="${PLT_BIN:-target/debug/plt}"
for v in plt vanilla base shared-kv; do
    "$PY" train/train.py --data "$W/data" --out "$W/$v" --variant "$v" --loops 2 --hidden 32 \
        --layers 2 --heads 4 --kv-heads 2 --window 8 --ctx 32 --batch 4 --tokens 512 --warmup 2 \
        --eval-windows 4 --dtype f16 | tail -1
    "$PY" train/golden.py "$W/$v" --prompts 1 --min-margin 0
    if [ -x "$PLT" ]; then
        "$PY" train/check_runtime.py "$W/$v" --plt "$PLT" --cpu --tol 1e-3
    else
        echo "no plt binary at $PLT: runtime check skipped"
    fi
done
echo "trainer smoke test passed"
