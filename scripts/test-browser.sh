#!/usr/bin/env bash
# The browser test, end to end on a fresh Debian machine: installs Debian's Chromium when it is
# missing, builds the wasm (scripts/build-wasm.sh adds the wasm32 target and wasm-bindgen-cli
# when missing), installs playwright-core from package-lock.json, and runs
# tests/browser/demo.test.mjs (node's test runner) in headless Chromium on its software WebGPU
# adapter. Never runs `playwright install` (it downloads browsers) or wasm-pack.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "test-browser: $1 (${SECONDS}s)" >&2; }
if ! command -v chromium >/dev/null 2>&1; then
    step "installing chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi
step "building the wasm"
scripts/build-wasm.sh
step "installing playwright-core"
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
step "running the browser test"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
(cd tests/browser && npm test)
step "done"
