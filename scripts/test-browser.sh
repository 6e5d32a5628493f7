#!/usr/bin/env bash
# The browser test, end to end on a fresh Debian machine: installs Debian's Chromium when it is
# missing, Node >= 20 when the machine's is older (see below), builds the wasm (scripts/build-wasm.sh adds the wasm32 target and wasm-bindgen-cli
# when missing), installs playwright-core from package-lock.json, and runs
# tests/browser/server.test.mjs (the demo server against hostile requests) and
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
# Node >= 20 (playwright-core needs it; Debian 12's nodejs is 18): Debian's nodejs and npm when
# node is missing, then, when it is older than 20, Node 20 from the npm registry (the `node`
# package) in target/node, first on PATH for this script.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    step "installing nodejs and npm"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq nodejs npm >/dev/null
fi
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
    if [ ! -x target/node/node_modules/.bin/node ]; then
        step "node $(node --version) is older than 20: installing Node 20 from npm into target/node"
        npm install --no-audit --no-fund --loglevel=error --prefix target/node node@20 >/dev/null
    fi
    export PATH="$PWD/target/node/node_modules/.bin:$PATH"
fi
step "node $(node --version)"
step "building the wasm"
scripts/build-wasm.sh
step "installing playwright-core and typescript"
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
step "running the browser test"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
(cd tests/browser && npm test)
step "done"
