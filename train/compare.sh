#!/usr/bin/env bash
# The paper's comparison at small scale (docs/training.md): models with the same physical
# weights (equal parameter count, up to the PLT gate's H*(Dh+1) per layer), trained on the same
# number of tokens, with the same seed, initialisation and data order:
#   base       non-looped (L=1)
#   vanilla    vanilla looped L=2 (PLT-SPEC s6)
#   plt        PLT-2 (shared KV + gated sliding window), a = b = 1
#   shared-kv  PLT-2 ablation: shared loop-0 KV only, no local branch (g = 1)
#   plt-a, shared-kv-a   the same two with plt_emb_scale a = sqrt(hidden) (see docs/training.md)
# Data: train/data-v1k, the Shakespeare split with a 1024-token BPE
#   (python3 train/prepare_data.py --out train/data-v1k --vocab 1024), so that on 2 CPU cores most
#   of the compute is in the transformer layers that looping reuses, not in the vocabulary head.
# Usage: train/compare.sh [TOKENS] [SEED] [OUT] [VARIANTS...]   (OUT/<variant>/result.json)
set -euo pipefail
cd "$(dirname "$0")/.."
TOKENS="${1:-256000}"
SEED="${2:-0}"
OUT="${3:-train/runs/compare}"
shift $(( $# < 3 ? $# : 3 ))
VARIANTS=("${@:-plt vanilla base shared-kv plt-a shared-kv-a}")
COMMON=(--data "${DATA:-train/data-v1k}" --hidden 96 --layers 4 --heads 4 --kv-heads 2 --window 32
        --ctx 128 --batch 8 --lr 3e-3 --warmup 20 --tokens "$TOKENS" --seed "$SEED")
mkdir -p "$OUT"
for v in ${VARIANTS[@]}; do
    case "$v" in
        plt-a) extra=(--variant plt --emb-scale 0) ;;
        shared-kv-a) extra=(--variant shared-kv --emb-scale 0) ;;
        *) extra=(--variant "$v") ;;
    esac
    python3 train/train.py "${COMMON[@]}" "${extra[@]}" --loops 2 --out "$OUT/$v" > "$OUT/$v.log" 2>&1
    tail -1 "$OUT/$v.log"
done
