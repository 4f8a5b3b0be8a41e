#!/usr/bin/env bash
# Issue #9's scale acceptance, in one run on one machine: `convert --to onnx --type q4` next to
# `convert --to gguf --type q4_0` of the same synth polyglot-ko-3.8b folder (wall time, peak RSS), then
# `--type fp16,q8,q4` in one run (one checkpoint read), then the onnx engine on the q4 file next to the
# llamacpp engine on the q4_0 GGUF (bench/onnx-engine.ts). Needs ~30 GB of free disk under WORK.
#
#   npm run build && bash bench/onnx-scale.sh [WORK]     (WORK default: /tmp/polyquant-onnx-scale)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/polyquant-onnx-scale}
mkdir -p "$work"
cli=(node bin/polyquant.js)

measure() { # label, command…: prints label, wall seconds and peak RSS (GNU time)
  local label=$1
  shift
  local log="$work/time.log"
  /usr/bin/time -v "$@" >/dev/null 2>"$log"
  local wall rss
  wall=$(grep 'Elapsed (wall clock)' "$log" | awk '{print $NF}')
  rss=$(grep 'Maximum resident set size' "$log" | awk '{print $NF}')
  printf '| %s | %s | %.0f MB |\n' "$label" "$wall" "$((rss / 1024))"
}

echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) × $(nproc), $(date -u +%F), load $(cut -d' ' -f1 /proc/loadavg)"
[ -f "$work/synth-3.8b/config.json" ] || "${cli[@]}" synth --preset polyglot-ko-3.8b --out "$work/synth-3.8b" >/dev/null
rm -rf "$work/q4_0.gguf" "$work/onnx-q4" "$work/onnx-all"
echo '| run | wall | peak RSS |'
echo '|---|---:|---:|'
measure 'convert --to gguf --type q4_0' "${cli[@]}" convert "$work/synth-3.8b" --to gguf --type q4_0 --out "$work/q4_0.gguf"
measure 'convert --to onnx --type q4' "${cli[@]}" convert "$work/synth-3.8b" --to onnx --type q4 --out "$work/onnx-q4" --force
measure 'convert --to onnx --type fp16,q8,q4' "${cli[@]}" convert "$work/synth-3.8b" --to onnx --type fp16,q8,q4 --out "$work/onnx-all" --force
rm -rf "$work/onnx-all"
npx tsx bench/onnx-engine.ts --onnx "$work/onnx-q4:q4" --gguf "$work/q4_0.gguf" --ctx 512 --windows 2 --threads 2
