#!/usr/bin/env bash
# `plt quantize` against llama-quantize: for each type, quantise SRC with both, check that
# llama.cpp loads plt's file, and compare the perplexity of both files on a fixed text with
# llama-perplexity and with `plt perplexity`. Prints a Markdown table.
#
# Usage: scripts/compare-quantize.sh [TYPES...]      (default: q8_0 q4_0 q4_k_m q6_k)
# Environment:
#   LLAMA_BIN  llama.cpp's build/bin (llama-quantize, llama-perplexity and their libraries)
#   SRC        the source model (default: models/smollm2-135m-instruct-q4_1.gguf)
#   CHUNKS     chunks of 128 tokens scored by llama-perplexity (default 40)
#   PLT_CHUNKS chunks of 128 tokens scored by plt perplexity (default 40)
#   THREADS    threads (default 2)
#   WORK       scratch directory (default /tmp/plt-compare-quantize)
#
# The text: every regular file in /usr/share/common-licenses (Debian's licence texts), sorted
# by name and concatenated (about 240 kB of English).
set -euo pipefail
cd "$(dirname "$0")/.."
LLAMA_BIN=${LLAMA_BIN:-/work/llama/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin}
SRC=${SRC:-models/smollm2-135m-instruct-q4_1.gguf}
CHUNKS=${CHUNKS:-40}
PLT_CHUNKS=${PLT_CHUNKS:-40}
THREADS=${THREADS:-2}
WORK=${WORK:-/tmp/plt-compare-quantize}
TYPES=("$@")
[ ${#TYPES[@]} -gt 0 ] || TYPES=(q8_0 q4_0 q4_k_m q6_k)
export LD_LIBRARY_PATH="$LLAMA_BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
PLT=${PLT:-target/release/plt}
mkdir -p "$WORK"
TEXT="$WORK/text.txt"
find /usr/share/common-licenses -maxdepth 1 -type f | LC_ALL=C sort | xargs cat > "$TEXT"
echo "text: $(wc -c < "$TEXT") bytes, sha256 $(sha256sum "$TEXT" | cut -c1-16)" >&2

# llama-perplexity's final estimate of FILE.
llama_ppl() {
  local log="$WORK/$(basename "$1").ppl.log"
  nice -n 19 "$LLAMA_BIN/llama-perplexity" -m "$1" -f "$TEXT" -c 128 --chunks "$CHUNKS" -t "$THREADS" 2> "$log" >/dev/null || { echo "llama-perplexity failed on $1 (see $log)" >&2; echo "fail"; return; }
  grep -o 'Final estimate: PPL = [0-9.]*' "$log" | awk '{print $NF}'
}
# plt perplexity of FILE (CPU backend).
plt_ppl() {
  nice -n 19 "$PLT" perplexity --model "$1" --file "$TEXT" --context 128 --max-chunks "$PLT_CHUNKS" --backend cpu --threads "$THREADS" 2> "$WORK/$(basename "$1").plt.log" \
    | grep -o "\"perplexity\":[0-9.]*" | cut -d: -f2 || echo "fail"
}

echo "| type | plt quantize bytes | llama-quantize bytes | plt quantize s | llama-quantize s | llama-perplexity (plt file) | llama-perplexity (llama file) | ratio | plt perplexity (plt file) | plt perplexity (llama file) | ratio |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
src_l=$(llama_ppl "$SRC"); src_p=$(plt_ppl "$SRC")
echo "| source | $(stat -c %s "$SRC") | | | | $src_l | | | $src_p | | |"
for t in "${TYPES[@]}"; do
  ours="$WORK/plt-$t.gguf"; ref="$WORK/llama-$t.gguf"
  s=$(date +%s.%N)
  nice -n 19 "$PLT" quantize "$SRC" "$ours" --type "$t" --allow-requantize --threads "$THREADS" 2> "$ours.log"
  ts=$(echo "$(date +%s.%N) - $s" | bc)
  s=$(date +%s.%N)
  nice -n 19 "$LLAMA_BIN/llama-quantize" --allow-requantize "$SRC" "$ref" "$(echo "$t" | tr a-z A-Z)" "$THREADS" > "$ref.log" 2>&1
  tr=$(echo "$(date +%s.%N) - $s" | bc)
  ol=$(llama_ppl "$ours"); rl=$(llama_ppl "$ref")
  op=$(plt_ppl "$ours"); rp=$(plt_ppl "$ref")
  ratio() { if [ "$1" = fail ] || [ "$2" = fail ]; then echo "-"; else echo "scale=4; $1 / $2" | bc; fi; }
  printf '| %s | %s | %s | %.1f | %.1f | %s | %s | %s | %s | %s | %s |\n' "$t" "$(stat -c %s "$ours")" "$(stat -c %s "$ref")" "$ts" "$tr" \
    "$ol" "$rl" "$(ratio "$ol" "$rl")" "$op" "$rp" "$(ratio "$op" "$rp")"
done
