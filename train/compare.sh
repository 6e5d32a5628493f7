#!/usr/bin/env bash
# The paper's comparison at small scale (docs/training.md): four models with the same physical
# weights shape (equal parameter count, up to the PLT gate's H*(Dh+1) per layer) trained on the
# same number of tokens with the same seed and data order.
#   non-looped (L=1) | vanilla looped L=2 | PLT-2 | PLT-2 shared-KV only (no local branch)
# Usage: train/compare.sh [TOKENS] [SEED]    (results in train/runs/compare/*/result.json)
set -euo pipefail
cd "$(dirname "$0")/.."
TOKENS="${1:-256000}"
SEED="${2:-0}"
COMMON=(--data train/data --hidden 128 --layers 4 --heads 4 --kv-heads 2 --window 32 --ctx 128
        --batch 16 --lr 3e-3 --warmup 15 --tokens "$TOKENS" --seed "$SEED" --time-limit 25)
for v in plt vanilla base shared-kv; do
    python3 train/train.py "${COMMON[@]}" --variant "$v" --loops 2 --out "train/runs/compare/$v" \
        > "train/runs/compare-$v.log" 2>&1
    tail -1 "train/runs/compare-$v.log"
done
