#!/usr/bin/env bash
# Issue #12's numbers: `sweep --preset quick` on polyglot-ko-tiny, wall time with the baseline scored once
# and replayed (default) and with it rescored in every cell (--no-baseline-cache), on the same evaluation;
# then the same command again on the finished folder (every cell skipped). Prints a Markdown table.
#
#   bash bench/sweep.sh [WORK] [CTX] [WINDOWS]     (defaults: /tmp/polyquant-sweep-bench, 512, 4)
#   FORMATS=gguf,onnx REPEAT=2 bash bench/sweep.sh …   (a part of the grid; the pair of runs alternated REPEAT times)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/polyquant-sweep-bench}
ctx=${2:-512}
windows=${3:-4}
model=../shared/fixtures/polyglot-ko-tiny
text=../shared/data/korean-text/valid.txt
mkdir -p "$work"
cli=(node --import tsx src/cli/bin.ts)
formats=${FORMATS:-gguf,onnx,webgpu}
repeat=${REPEAT:-1}
common=(sweep "$model" --preset quick --formats "$formats" --ppl "$text" --ctx "$ctx" --max-windows "$windows" --cache-dir "$work/cache" --max-kld 0.01)

measure() { # label, out folder, extra flags…: one table row (wall, peak RSS, the sweep's own summary line)
  local label=$1 out=$2
  shift 2
  /usr/bin/time -v "${cli[@]}" "${common[@]}" --out "$out" "$@" >"$work/stdout.log" 2>"$work/time.log" || true
  local wall rss summary
  wall=$(grep 'Elapsed (wall clock)' "$work/time.log" | awk '{print $NF}')
  rss=$(grep 'Maximum resident set size' "$work/time.log" | awk '{print $NF}')
  summary=$(grep -E '^sweep: ' "$work/stdout.log" | sed 's/; \/.*$//')
  printf '| %s | %s | %.0f MB | %s |\n' "$label" "$wall" "$((rss / 1024))" "$summary"
}

echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) × $(nproc), $(date -u +%F), load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "polyglot-ko-tiny, quick preset, formats $formats, valid.txt, ctx $ctx, $windows windows, --max-kld 0.01"
echo '| run | wall | peak RSS | summary |'
echo '|---|---:|---:|---|'
for _ in $(seq "$repeat"); do
  rm -rf "$work/cached" "$work/uncached"
  measure 'baseline scored once, replayed' "$work/cached"
  measure 'baseline rescored in every cell (--no-baseline-cache)' "$work/uncached" --no-baseline-cache
done
measure 'rerun of the finished sweep (all skipped)' "$work/cached"
du -sh "$work/cached/baseline" | awk '{print "DIR/baseline: " $1}'
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
