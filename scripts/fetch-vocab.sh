#!/usr/bin/env bash
# Fetches llama.cpp's tokenizer test vectors: vocabulary-only GGUF files with their `.inp`
# (input strings separated by a line `__ggml_vocab_test__`) and `.out` (the token ids llama.cpp
# gives each string, one line per string, no BOS). They ship in the PyPI sdist
# `llama-cpp-python==0.3.36` (MIT) under vendor/llama.cpp/models/; the sdist is sha256-checked
# and only the files named below are extracted, into
#   target/vocab/
# Idempotent: does nothing when every file is there.
#
# Usage: scripts/fetch-vocab.sh [DEST_DIR]   (default: target/vocab in the repository)
set -euo pipefail
DEST="${1:+$(realpath -m "$1")}"
cd "$(dirname "$0")/.."
DEST="${DEST:-target/vocab}"

PKG="llama-cpp-python==0.3.36"
SDIST="llama_cpp_python-0.3.36.tar.gz"
SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
PREFIX="llama_cpp_python-0.3.36/vendor/llama.cpp/models"
VOCABS=(llama-spm phi-3 qwen2 llama-bpe)

die() { echo "fetch-vocab: error: $*" >&2; exit 1; }

files=()
for v in "${VOCABS[@]}"; do
    files+=("ggml-vocab-$v.gguf" "ggml-vocab-$v.gguf.inp" "ggml-vocab-$v.gguf.out")
done
missing=0
for f in "${files[@]}"; do
    [ -f "$DEST/$f" ] || missing=1
done
if [ "$missing" = 0 ]; then
    echo "fetch-vocab: $DEST has every vocabulary; nothing to do"
    exit 0
fi

. scripts/find-pip.sh sha256sum tar

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "fetch-vocab: downloading the $PKG sdist from PyPI (about 77 MB)"
$PIP download --quiet --no-deps --no-binary llama-cpp-python "$PKG" -d "$TMP" \
    || die "pip download of $PKG failed (is PyPI reachable?)"
[ -f "$TMP/$SDIST" ] || die "pip download of $PKG produced no $SDIST in $TMP"
GOT="$(sha256sum "$TMP/$SDIST" | cut -d' ' -f1)"
[ "$GOT" = "$SHA256" ] || die "sha256 mismatch for $SDIST: expected $SHA256, got $GOT; not extracting it"

members=()
for f in "${files[@]}"; do members+=("$PREFIX/$f"); done
mkdir -p "$TMP/x"
tar -xzf "$TMP/$SDIST" -C "$TMP/x" "${members[@]}" || die "$SDIST lacks some of: ${files[*]}"
mkdir -p "$DEST"
for f in "${files[@]}"; do
    # Into place atomically: an interrupted run never leaves a partial file.
    mv -f "$TMP/x/$PREFIX/$f" "$DEST/.$f.part.$$"
    mv -f "$DEST/.$f.part.$$" "$DEST/$f"
done
echo "fetch-vocab: wrote ${#files[@]} files to $DEST"
