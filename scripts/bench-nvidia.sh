#!/usr/bin/env bash
# `plt bench` on a lent NVIDIA GPU (an H100 here), prepared so that the GPU machine builds nothing.
#
#   1. Here, on the build machine:   scripts/bench-nvidia.sh prepare
#      builds target/release/plt and puts the Vulkan loader and ../shared/gpu/nvidia-vulkan.sh
#      into .gpu/ (ignored by git), as ../shared/gpu/README.md describes.
#   2. On the GPU machine, from the repository root, with target/release/plt and .gpu carried
#      along (device tool: carry ["target/release/plt", ".gpu"], timeout_s 540):
#          scripts/bench-nvidia.sh
#      A correctness check, two runs each cut off by --time-limit, and three short A/B runs, so
#      that the whole script ends within about eight minutes; results go to $OUT (the device tool's output folder) or target/bench-nvidia:
#        grid.{json,md,svg}  the default grid: sizes tiny, small, medium; f32 and f16; L 2, 3;
#                            B 1, 4, 16; T 128, 1024, 4096
#        big.{json,md,svg}   smollm2-135m and llama-850m in f16 (the shapes other runtimes were
#                            timed on: decode after a 512-token prompt, T = 640; and T = 4096),
#                            batch 1, per-kernel profile
#        ab-subgroupsoff.*, ab-fusenormsoff.*, ab-lanes8.*  big's smollm2-135m PLT-2 T = 640
#                            session with subgroup reductions off / norm folding off / 8 lanes
#                            per output everywhere (compare with big.md)
#        check-*.json, check.txt  the correctness check (score: GPU vs --cpu)
#        *.log, nvidia-smi.txt
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "prepare" ]]; then
    shared="${SHARED:-../shared}"
    cargo build --release --bin plt
    mkdir -p .gpu
    install -m 0755 "$shared/gpu/nvidia-vulkan.sh" .gpu/nvidia-vulkan.sh
    loader="$(ldconfig -p | awk '/libvulkan\.so\.1 .*x86-64/ {print $NF; exit}')"
    [[ -n "$loader" ]] || loader=/usr/lib/x86_64-linux-gnu/libvulkan.so.1
    install -m 0644 "$loader" .gpu/libvulkan.so.1
    ls -l target/release/plt .gpu
    echo "prepared: run scripts/bench-nvidia.sh on the GPU machine with target/release/plt and .gpu carried"
    exit 0
fi

out="${OUT:-target/bench-nvidia}"
mkdir -p "$out"
bin=target/release/plt
if [[ ! -x "$bin" || ! -f .gpu/nvidia-vulkan.sh ]]; then
    echo "missing $bin or .gpu/nvidia-vulkan.sh: run 'scripts/bench-nvidia.sh prepare' on the build machine first" >&2
    exit 2
fi
# shellcheck disable=SC1091
source .gpu/nvidia-vulkan.sh
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv || true) \
    > "$out/nvidia-smi.txt" 2>&1

# --adapter nvidia: fail rather than measure a software adapter by mistake.
start=$(date +%s)
# Correctness first: the GPU's kernel variants (32 lanes per output, subgroup shuffles of 32,
# norm folding) are not the ones the CI's software adapter runs by default. The shipped model's
# log-probabilities on the GPU (fused, sequential) against the CPU reference; |diff| < 1e-4.
text="ROMEO: What light through yonder window breaks? It is the east, and Juliet is the sun."
"$bin" score --model models/plt2-shakespeare --text "$text" --cpu > "$out/check-cpu.json"
for mode in parallel sequential; do
    "$bin" score --model models/plt2-shakespeare --text "$text" --mode $mode --adapter nvidia > "$out/check-$mode.json"
done
if command -v python3 >/dev/null; then
    python3 - "$out" <<'PY' | tee "$out/check.txt"
import json, sys
d = sys.argv[1]
want = json.load(open(f"{d}/check-cpu.json"))["logprobs"]
for mode in ("parallel", "sequential"):
    got = json.load(open(f"{d}/check-{mode}.json"))["logprobs"]
    worst = max(abs(g - w) for g, w in zip(got, want))
    print(f"check {mode}: {len(got)} log-probabilities, max |gpu - cpu| = {worst:.2e}", "ok" if worst < 1e-4 and len(got) == len(want) else "FAILED")
PY
fi
# The markdown goes to the .md files; progress and errors to the logs and this terminal.
"$bin" bench --adapter nvidia --time-limit 150 \
    --json "$out/grid.json" --markdown "$out/grid.md" --plot "$out/grid.svg" \
    2>&1 >/dev/null | tee "$out/grid.log"
"$bin" bench --adapter nvidia --time-limit 150 --profile \
    --preset smollm2-135m,llama-850m --dtype f16 --batch 1 --context 640,4096 --max-prefill-tokens 8192 \
    --json "$out/big.json" --markdown "$out/big.md" --plot "$out/big.svg" \
    2>&1 >/dev/null | tee "$out/big.log"
# A/B of the adapter-dependent kernel choices (GPU defaults, unmeasured on a GPU so far): the
# smollm2-135m shape, f16, B = 1, T = 640, PLT-2, with each one turned off.
for ab in "--subgroups off" "--fuse-norms off" "--lanes 8"; do
    tag=$(echo "$ab" | tr -d ' -')
    # shellcheck disable=SC2086
    "$bin" bench --adapter nvidia --time-limit 60 $ab --preset smollm2-135m --dtype f16 --loops 2 \
        --batch 1 --context 640 --steps 16 \
        --json "$out/ab-$tag.json" --markdown "$out/ab-$tag.md" \
        2>&1 >/dev/null | tee "$out/ab-$tag.log"
done
echo "bench-nvidia: done in $(( $(date +%s) - start )) s; results in $out" >&2
