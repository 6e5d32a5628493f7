#!/usr/bin/env bash
# Serves the browser demo on http://localhost:${PORT:-8080}/wasm/www/ (the repo root is served,
# so the page finds models/ at ../../models/). Builds the wasm first when it is missing.
#
#   scripts/serve-demo.sh [PORT]
#
# Open the printed address in a browser with WebGPU (Chrome/Edge/Chromium 113+; Chromium on
# Linux: --enable-unsafe-webgpu). ?model=URL-of-a-model-directory loads another model.
set -euo pipefail
cd "$(dirname "$0")/.."
port="${1:-${PORT:-8080}}"
if [[ ! -f wasm/www/pkg/plt_wasm_bg.wasm ]]; then
    scripts/build-wasm.sh
fi
exec node wasm/serve.mjs --root . --port "$port"
