#!/usr/bin/env bash
# Serves the browser demo on http://localhost:${PORT:-8080}/wasm/www/: the page (wasm/www/) and
# models/ of the repository, nothing else (more directories with --allow DIR, relative to the
# repository). Builds the wasm first when it is missing.
#
#   scripts/serve-demo.sh [PORT] [--allow DIR]...
#
# Open the printed address in a browser with WebGPU (Chrome/Edge/Chromium 113+; Chromium on
# Linux: --enable-unsafe-webgpu). ?model=URL-of-a-model-directory loads another model.
set -euo pipefail
cd "$(dirname "$0")/.."
port="${PORT:-8080}"
if [[ $# -gt 0 && $1 != --* ]]; then
    port="$1"
    shift
fi
if [[ ! -f wasm/www/pkg/plt_wasm_bg.wasm ]]; then
    scripts/build-wasm.sh
fi
exec node wasm/serve.mjs --root . --port "$port" "$@"
