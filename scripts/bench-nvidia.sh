#!/usr/bin/env bash
# Measures plt on an NVIDIA GPU (through Vulkan): first a correctness check of the GPU kernels
# against the CPU reference, then `plt bench` over the default grid, the two large model shapes
# with a per-kernel profile, the same shapes with quantised weights, A/B runs of the kernel
# choices that depend on the adapter, and the machine's CPUs through the CPU backend. Each bench run stops itself at a time limit, so the whole
# script takes about ten minutes.
# docs/benchmarks.md ("NVIDIA GPU") says how to read the results.
#
# Usage (from any directory; it runs in the repository root):
#   scripts/bench-nvidia.sh [OUT_DIR]   # results in OUT_DIR, else $OUT, else target/bench-nvidia
#   scripts/bench-nvidia.sh prepare     # only build and bundle (see "No toolchain" below)
#
# Needs the NVIDIA driver (with its Vulkan driver), a Vulkan loader (libvulkan.so.1; Debian:
# libvulkan1) and target/release/plt, which is built with cargo when it is missing. python3, when
# present, summarises the correctness check.
#
# Headless servers: the driver's Vulkan ICD file may name libGLX_nvidia.so.0, which fails without
# an X server (the loader says "Could not get 'vkCreateInstance' via 'vk_icdGetInstanceProcAddr'"
# and wgpu finds no adapter). libEGL_nvidia.so.0 carries the same Vulkan driver and works
# headless. PLT_NVIDIA_ICD=egl makes the script write an ICD file that names it and point
# VK_ICD_FILENAMES there; PLT_NVIDIA_ICD=system keeps the system's ICD files. The default is egl
# when none of DISPLAY, WAYLAND_DISPLAY, VK_ICD_FILENAMES and VK_DRIVER_FILES is set, else system.
#
# No toolchain on the GPU machine: run `scripts/bench-nvidia.sh prepare` on an x86-64 Linux build
# machine (it builds target/release/plt and copies that machine's libvulkan.so.1 into .gpu/,
# which git ignores), copy the repository with target/release/plt and .gpu/ to the GPU machine,
# and run `scripts/bench-nvidia.sh` there: .gpu/ goes on LD_LIBRARY_PATH, so a machine without a
# Vulkan loader uses the copied one.
#
# Output (OUT_DIR):
#   nvidia-smi.txt            the GPU, driver, memory, clocks and power limit
#   check-*.json, check.txt   correctness: `plt score` of the shipped model on the GPU (fused and
#                             sequential schedules) against the CPU reference; every |difference| of a
#                             log-probability must be below 1e-4
#   grid.{json,md,svg}        the default grid on a GPU: sizes tiny, small, medium; f32 and f16;
#                             L 2, 3; B 1, 4, 16; T 128, 1024, 4096
#   big.{json,md,svg}         smollm2-135m and llama-850m in f16, batch 1, decoding at T = 640
#                             (after a 512-token prompt) and T = 4096, with a per-kernel profile
#   quant.{json,md,svg}       smollm2-135m and llama-850m with Q8_0, Q4_K and Q6_K blocks kept on
#                             the device (bits per weight, weight GB/s), batch 1, T = 640
#   cpu.{json,md}             the CPU backend on the same machine: smollm2-135m and medium, f16,
#                             Q8_0 and Q4_K, PLT-2, T = 640 (compare with `plt bench compare`)
#   ab-subgroupsoff.*, ab-fusenormsoff.*, ab-lanes8.*
#                             the smollm2-135m PLT-2 session of big (f16, B = 1, T = 640) with
#                             subgroup reductions off / RMSNorm folding off / 8 lanes per output;
#                             compare each with big.md
#   *.log                     progress and errors of each bench run
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/plt

if [[ "${1:-}" == "prepare" ]]; then
    cargo build --release --bin plt
    mkdir -p .gpu
    loader="$(ldconfig -p | awk '/libvulkan\.so\.1 .*x86-64/ {print $NF; exit}')"
    [[ -n "$loader" ]] || loader=/usr/lib/x86_64-linux-gnu/libvulkan.so.1
    install -m 0644 "$loader" .gpu/libvulkan.so.1
    ls -l "$bin" .gpu
    echo "prepared: copy the repository with $bin and .gpu/ to the GPU machine and run scripts/bench-nvidia.sh there"
    exit 0
fi

out="${1:-${OUT:-target/bench-nvidia}}"
mkdir -p "$out"
if [[ ! -x "$bin" ]]; then
    if command -v cargo >/dev/null; then
        cargo build --release --bin plt
    else
        echo "bench-nvidia: $bin is missing and there is no cargo here: build it elsewhere ('scripts/bench-nvidia.sh prepare') and copy it" >&2
        exit 2
    fi
fi

# Vulkan set-up (see "Headless servers" above).
if [[ -f .gpu/libvulkan.so.1 ]]; then
    export LD_LIBRARY_PATH="$PWD/.gpu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
icd_mode="${PLT_NVIDIA_ICD:-}"
if [[ -z "$icd_mode" ]]; then
    if [[ -z "${DISPLAY:-}${WAYLAND_DISPLAY:-}${VK_ICD_FILENAMES:-}${VK_DRIVER_FILES:-}" ]]; then
        icd_mode=egl
    else
        icd_mode=system
    fi
fi
if [[ "$icd_mode" == egl ]]; then
    # The Vulkan version the driver declares, from its own ICD file when there is one.
    api=$(sed -n 's/.*"api_version" *: *"\([0-9.]*\)".*/\1/p' \
        /usr/share/vulkan/icd.d/nvidia_icd*.json /etc/vulkan/icd.d/nvidia_icd*.json 2>/dev/null | head -n1 || true)
    icd="${TMPDIR:-/tmp}/plt-nvidia-egl-icd.json"
    printf '{"file_format_version":"1.0.1","ICD":{"library_path":"libEGL_nvidia.so.0","api_version":"%s"}}\n' \
        "${api:-1.3.0}" > "$icd"
    export VK_ICD_FILENAMES="$icd"
fi
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
echo "bench-nvidia: Vulkan ICD: $icd_mode${VK_ICD_FILENAMES:+ ($VK_ICD_FILENAMES)}; results in $out" >&2
(nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv || true) \
    > "$out/nvidia-smi.txt" 2>&1

# Every GPU run passes --adapter nvidia: it fails rather than measure a software adapter.
start=$(date +%s)
# Correctness first: on a GPU the kernels take variants that the software adapter of the CI does
# not run by default (32 lanes per output, subgroup shuffles over 32 lanes, RMSNorm folded into
# the matmuls). The shipped model's log-probabilities on the GPU, under both schedules, against
# the CPU reference.
text="ROMEO: What light through yonder window breaks? It is the east, and Juliet is the sun."
"$bin" score --model models/plt2-shakespeare --text "$text" --backend reference > "$out/check-cpu.json"
for schedule in fused sequential; do
    "$bin" score --model models/plt2-shakespeare --text "$text" --schedule $schedule --adapter nvidia \
        > "$out/check-$schedule.json"
done
if command -v python3 >/dev/null; then
    python3 - "$out" <<'PY' | tee "$out/check.txt"
import json, sys
d = sys.argv[1]
want = json.load(open(f"{d}/check-cpu.json"))["logprobs"]
for schedule in ("fused", "sequential"):
    got = json.load(open(f"{d}/check-{schedule}.json"))["logprobs"]
    worst = max(abs(g - w) for g, w in zip(got, want))
    ok = worst < 1e-4 and len(got) == len(want)
    print(f"check {schedule}: {len(got)} log-probabilities, max |gpu - cpu| = {worst:.2e}", "ok" if ok else "FAILED")
PY
fi

# The markdown goes to the .md files; progress and errors to the logs and this terminal.
"$bin" bench --adapter nvidia --time-limit 150 \
    --json "$out/grid.json" --markdown "$out/grid.md" --plot "$out/grid.svg" \
    2>&1 >/dev/null | tee "$out/grid.log"
"$bin" bench --adapter nvidia --time-limit 120 --profile \
    --preset smollm2-135m,llama-850m --dtype f16 --batch 1 --context 640,4096 --max-prefill-tokens 8192 \
    --json "$out/big.json" --markdown "$out/big.md" --plot "$out/big.svg" \
    2>&1 >/dev/null | tee "$out/big.log"
# Quantised weights (the random models written as GGUF blocks and kept as blocks on the device):
# bytes per weight read and weight bandwidth of the decode step.
"$bin" bench --adapter nvidia --time-limit 90 \
    --preset smollm2-135m,llama-850m --dtype q8_0,q4_k,q6_k --batch 1 --context 640 \
    --json "$out/quant.json" --markdown "$out/quant.md" --plot "$out/quant.svg" \
    2>&1 >/dev/null | tee "$out/quant.log"
# A/B of the kernel choices a GPU gets by default (subgroup reductions, RMSNorm folding, 32 lanes
# per output for narrow matrices): the smollm2-135m shape, f16, B = 1, T = 640, PLT-2, with each
# choice turned off in turn.
for ab in "--subgroups off" "--fuse-norms off" "--lanes 8"; do
    tag=$(echo "$ab" | tr -d ' -')
    # shellcheck disable=SC2086
    "$bin" bench --adapter nvidia --time-limit 60 $ab --preset smollm2-135m --dtype f16 --loops 2 \
        --batch 1 --context 640 --steps 16 \
        --json "$out/ab-$tag.json" --markdown "$out/ab-$tag.md" \
        2>&1 >/dev/null | tee "$out/ab-$tag.log"
done
# The same machine's CPUs through the CPU backend (one thread per physical core): the PLT
# ratios in f16 and the quantised formats, for `plt bench compare` against the GPU.
"$bin" bench --backend cpu --time-limit 45 --preset smollm2-135m,medium --loops 2 --dtype f16,q8_0,q4_k \
    --context 640 --steps 12 \
    --json "$out/cpu.json" --markdown "$out/cpu.md" \
    2>&1 >/dev/null | tee "$out/cpu.log"
echo "bench-nvidia: done in $(( $(date +%s) - start )) s; results in $out" >&2
