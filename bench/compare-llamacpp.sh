#!/usr/bin/env bash
# Arwkv.Core against llama.cpp (node-llama-cpp's prebuilt CPU build) on the same weights, in one run:
# a random ARWKV of a real model's shape (default Qwen2.5-0.5B, BF16), exported to a BF16 GGUF for llama.cpp.
# Both engines run alternately ROUNDS times with the same prompt length, decode length and thread count; each run
# does the work once untimed first (JIT, first touch of the mapped weights, thread start-up), then times it.
#   bench/compare-llamacpp.sh                     # 128-token prefill, 32 decoded tokens, 2 threads, 5 rounds
#   PRESET=tiny ROUNDS=1 bench/compare-llamacpp.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${PRESET:-qwen2.5-0.5b}
THREADS=${THREADS:-2}
PROMPT=${PROMPT:-128}
NEW=${NEW:-32}
ROUNDS=${ROUNDS:-5}
DIR=${ARWKV_BENCH_DIR:-${TMPDIR:-/tmp}/arwkv-bench-$PRESET}

./build.sh build >/dev/null
ARWKV="dotnet src/Arwkv.Cli/bin/Release/net10.0/arwkv.dll"
[ -f "$DIR/model.safetensors" ] || $ARWKV make-random --preset "$PRESET" --dtype bf16 --out "$DIR"
[ -f "$DIR/model-bf16.gguf" ] || $ARWKV convert "$DIR" -o "$DIR/model-bf16.gguf" --type bf16
if [ ! -d tests/interop/llamacpp/node_modules ]; then (cd tests/interop/llamacpp && npm ci --no-audit --no-fund --loglevel=error); fi

results=$(mktemp)
for round in $(seq 1 "$ROUNDS"); do
  ours=$($ARWKV bench --model "$DIR" --prompt-tokens "$PROMPT" --new-tokens "$NEW" --threads "$THREADS" 2>/dev/null | tail -n 1)
  theirs=$(node tests/interop/llamacpp/bench.mjs "$DIR/model-bf16.gguf" "$PROMPT" "$NEW" "$THREADS" 2>/dev/null | tail -n 1)
  echo "round $round  arwkv: $ours" >&2
  echo "round $round  llama.cpp: $(echo "$theirs" | node -e 'const j=JSON.parse(require("fs").readFileSync(0,"utf8"));console.log(JSON.stringify({prefill_tokens_per_s:j.prefillTokensPerSecond,decode_tokens_per_s:j.decodeTokensPerSecond}))')" >&2
  echo "$ours|$theirs" >>"$results"
done

node - "$results" "$PRESET" "$THREADS" "$PROMPT" "$NEW" <<'JS'
const fs = require("fs");
const [file, preset, threads, prompt, nw] = process.argv.slice(2);
const rows = fs.readFileSync(file, "utf8").trim().split("\n").map(l => l.split("|").map(s => JSON.parse(s)));
const best = (xs) => Math.max(...xs);
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const ours = { prefill: best(rows.map(r => r[0].prefill_tokens_per_s)), decode: best(rows.map(r => r[0].decode_tokens_per_s)) };
const theirs = { prefill: best(rows.map(r => r[1].prefillTokensPerSecond)), decode: best(rows.map(r => r[1].decodeTokensPerSecond)) };
// Rounds alternate the engines, so the ratio within a round compares the two under the same machine load.
const ratios = {
  prefill: median(rows.map(r => r[0].prefill_tokens_per_s / r[1].prefillTokensPerSecond)),
  decode: median(rows.map(r => r[0].decode_tokens_per_s / r[1].decodeTokensPerSecond)),
};
console.log(`\n${preset}, BF16 weights, ${threads} threads, ${prompt}-token prefill, ${nw} decoded tokens (${rows.length} alternating rounds):\n`);
console.log("| engine | prefill tokens/s (best) | decode tokens/s (best) |");
console.log("|---|---|---|");
console.log(`| Arwkv.Core | ${ours.prefill.toFixed(1)} | ${ours.decode.toFixed(1)} |`);
console.log(`| llama.cpp (node-llama-cpp) | ${theirs.prefill.toFixed(1)} | ${theirs.decode.toFixed(1)} |`);
console.log(`| ratio of bests | ${(ours.prefill / theirs.prefill).toFixed(2)}x | ${(ours.decode / theirs.decode).toFixed(2)}x |`);
console.log(`| median of per-round ratios | ${ratios.prefill.toFixed(2)}x | ${ratios.decode.toFixed(2)}x |`);
console.log(JSON.stringify({ preset, threads: +threads, rounds: rows.length, ours, llama_cpp: theirs, median_round_ratio: ratios }));
JS
rm -f "$results"
