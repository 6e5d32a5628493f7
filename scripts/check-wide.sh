#!/usr/bin/env bash
# The LoopCoder-V2 width on this machine: random 2-layer models of the real shape (hidden 5120,
# FFN 27648, vocab 76800, 40 query / 8 KV heads of 128, 2 loops) in each storage type, scored on
# the GPU (fused PLT decode after a prefill; the embedding, lm_head and gate/up matrices are
# past a 128 MiB binding limit, so they run in windows) and on the CPU reference (the same
# dequantised weights, f64 sums); prints the largest |log-probability difference|, the time and
# the peak resident memory of each run.
# Usage: scripts/check-wide.sh [DIR] [TYPES]   (default: /tmp/plt-wide, "q4_k q8_0 f16")
# Needs ~7 GB of free memory for the CPU reference and ~5 GB of disk.
set -euo pipefail
cd "$(dirname "$0")/.."
plt=${PLT_BIN:-target/release/plt}
dir=${1:-/tmp/plt-wide}
types=${2:-q4_k q8_0 f16}
tokens=1,200,3000,45,76000,17,9
mkdir -p "$dir"
peak() { grep -E "Maximum resident" "$1" | awk '{print $6}'; }
wall() { grep -E "Elapsed" "$1" | awk '{print $8}'; }
for t in $types; do
    f="$dir/lc2-$t.gguf"
    [ -f "$f" ] || /usr/bin/time -v "$plt" init "$f" --preset loopcoder-v2 --layers 2 --dtype "$t" 2> "$dir/init-$t.log" >/dev/null
    /usr/bin/time -v "$plt" score --model "$f" --tokens $tokens --backend gpu > "$dir/gpu-$t.json" 2> "$dir/gpu-$t.log"
    /usr/bin/time -v "$plt" score --model "$f" --tokens $tokens --backend reference > "$dir/cpu-$t.json" 2> "$dir/cpu-$t.log"
    python3 - "$dir/gpu-$t.json" "$dir/cpu-$t.json" "$t" "$(peak "$dir/gpu-$t.log")" "$(wall "$dir/gpu-$t.log")" "$(stat -c %s "$f")" <<'PY'
import json, sys
g, c = (json.load(open(p))["logprobs"] for p in sys.argv[1:3])
d = max(abs(a - b) for a, b in zip(g, c))
print(f"{sys.argv[3]}: file {int(sys.argv[6]):,} bytes; GPU wall {sys.argv[5]}, peak {int(sys.argv[4]):,} KB; "
      f"max |logprob GPU - CPU| = {d:.2e} over {len(g)} positions")
sys.exit(0 if d < 1e-3 else 1)
PY
done
