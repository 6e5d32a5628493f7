#!/usr/bin/env bash
# Builds the browser runtime: wasm/ (a wasm-bindgen crate over the plt library) compiled for
# wasm32-unknown-unknown, then wasm-bindgen's JS glue, into wasm/www/pkg/.
#
#   scripts/build-wasm.sh            # release build
#   scripts/build-wasm.sh --dev      # debug build (faster to compile, slow to run)
#
# Needs the wasm32-unknown-unknown target and wasm-bindgen-cli at exactly the version of the
# wasm-bindgen crate in wasm/Cargo.lock; both are installed here when missing (rustup, and
# `cargo install wasm-bindgen-cli`, which compiles it in a few minutes). Then
# scripts/serve-demo.sh serves the page.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
flag=--release
if [[ "${1:-}" == "--dev" ]]; then
    profile=debug
    flag=
fi

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    echo "build-wasm: adding the wasm32-unknown-unknown target" >&2
    rustup target add wasm32-unknown-unknown
fi

want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' wasm/Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)
if [[ "$have" != "$want" ]]; then
    echo "build-wasm: installing wasm-bindgen-cli $want (found: ${have:-none})" >&2
    cargo install wasm-bindgen-cli --version "$want"
fi

cargo build $flag --target wasm32-unknown-unknown --manifest-path wasm/Cargo.toml
rm -rf wasm/www/pkg
wasm-bindgen --target web --no-typescript --out-dir wasm/www/pkg \
    "wasm/target/wasm32-unknown-unknown/$profile/plt_wasm.wasm"
ls -l wasm/www/pkg
echo "build-wasm: built wasm/www/pkg ($profile); serve it with scripts/serve-demo.sh"
