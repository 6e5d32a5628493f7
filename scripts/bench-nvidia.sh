#!/usr/bin/env bash
# `plt bench` on a lent NVIDIA GPU (an H100 here), prepared so that the GPU machine builds nothing.
#
#   1. Here, on the build machine:   scripts/bench-nvidia.sh prepare
#      builds target/release/plt and puts the Vulkan loader and ../shared/gpu/nvidia-vulkan.sh
#      into .gpu/ (ignored by git), as ../shared/gpu/README.md describes.
#   2. On the GPU machine, from the repository root, with target/release/plt and .gpu carried
#      along (device tool: carry ["target/release/plt", ".gpu"], timeout_s 540):
#          scripts/bench-nvidia.sh
#      Two runs, each cut off by --time-limit so that the whole script ends within about six
#      minutes; results go to $OUT (the device tool's output folder) or target/bench-nvidia:
#        grid.{json,md,svg}  the default grid: sizes tiny, small, medium; f32 and f16; L 2, 3;
#                            B 1, 4, 16; T 128, 1024, 4096
#        big.{json,md,svg}   smollm2-135m and llama-850m in f16 (the shapes other runtimes were
#                            timed on: decode after a 512-token prompt, T = 640; and T = 4096),
#                            batch 1, per-kernel profile
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
# The markdown goes to the .md files; progress and errors to the logs and this terminal.
"$bin" bench --adapter nvidia --time-limit 150 \
    --json "$out/grid.json" --markdown "$out/grid.md" --plot "$out/grid.svg" \
    2>&1 >/dev/null | tee "$out/grid.log"
"$bin" bench --adapter nvidia --time-limit 150 --profile \
    --preset smollm2-135m,llama-850m --dtype f16 --batch 1 --context 640,4096 --max-prefill-tokens 8192 \
    --json "$out/big.json" --markdown "$out/big.md" --plot "$out/big.svg" \
    2>&1 >/dev/null | tee "$out/big.log"
echo "bench-nvidia: done in $(( $(date +%s) - start )) s; results in $out" >&2
