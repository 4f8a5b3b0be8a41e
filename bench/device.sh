#!/usr/bin/env bash
# Throughput of the verify engines on this machine, one prepared run: on its GPU when it has one
# (nvidia-smi answers), on its CPU otherwise or with --cpu. Writes OUT/device.md (the table, with the
# machine and date) and OUT/device.log (everything printed).
#
#   bash bench/device.sh [--cpu] [--sizes tiny,1.3b,3.8b] [--ctx 512] [--windows 4] [--threads N] [--out DIR]
#   bash bench/device.sh --pack      # here, before a device run: .device/ with Node and the runtime packages
#
# Per size (tiny = ../shared/fixtures/polyglot-ko-tiny; 1.3b / 3.8b = `polyquant synth`, random weights with
# the real shapes): convert to GGUF f16 and q4_k_m, then bench/llamacpp-engine.ts on each file — the
# llamacpp engine with full distributions (native path; node-llama-cpp's addon path too on the CPU),
# llama-perplexity on the same file, same threads and windows where it is built, KOBEST documents/s on
# tiny, and the reference engine where the model fits it (tiny). Sized to finish in under 8 minutes on a
# 16-core GPU machine with the default sizes (GPU: tiny,1.3b,3.8b; CPU: tiny).
#
# GPU: the native addon is linked to llama.cpp built from node-llama-cpp's bundled source with CUDA
# (`node scripts/build-native.mjs --gpu cuda`, nvcc; node-llama-cpp's CUDA prebuilts are 181-357 MB and
# do not travel), built into native/build/llama.cpp unless a build is already there (carry it).
# The device machine has no Node.js: `--pack` puts an xz'd copy of this machine's `node` (the official
# static-libc build) and the runtime node_modules into .device/ (ignored by git; carry `.device`), and this
# script unpacks them there when `node` is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

mode=auto sizes='' ctx=512 windows=4 threads='' out="$root/bench/out/device"
pack=false
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) mode=cpu ;;
    --sizes) sizes=$2; shift ;;
    --ctx) ctx=$2; shift ;;
    --windows) windows=$2; shift ;;
    --threads) threads=$2; shift ;;
    --out) out=$2; shift ;;
    --pack) pack=true ;;
    *) echo "bench/device.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

if $pack; then
  mkdir -p .device
  grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
  xz -T0 -c "$(command -v node)" > .device/node.xz
  # Runtime packages only: no linters, compilers, test runners, nor node-llama-cpp (on the device the addon is
  # linked to a llama.cpp built there, --gpu cuda, and node-llama-cpp is never loaded).
  tar -C node_modules -cJf .device/node_modules.tar.xz \
    --exclude='./@biomejs' --exclude='./binaryen' --exclude='./assemblyscript' --exclude='./typescript' \
    --exclude='./@rolldown' --exclude='./rolldown' --exclude='./lightningcss*' --exclude='./vitest' \
    --exclude='./@vitest' --exclude='./vite' --exclude='./@node-llama-cpp' --exclude='./@types' \
    --exclude='./node-llama-cpp' --exclude='./@huggingface/gguf' --exclude='./cmake-js' --exclude='./octokit' \
    --exclude='./@octokit' .
  # llama.cpp's source, as node-llama-cpp bundles it (its 35 MB git bundle does not fit beside Node), without
  # documentation, tests, examples and vocabulary files: the device builds the CUDA backend from it.
  bundle=node_modules/node-llama-cpp/llama/gitRelease.bundle
  scratch=$(mktemp -d)
  git init -q --bare "$scratch/g" && git -C "$scratch/g" fetch -q "$PWD/$bundle" HEAD
  git -C "$scratch/g" archive --format=tar FETCH_HEAD | tar -x -C "$scratch" --exclude='docs' --exclude='examples' \
    --exclude='models/*.gguf*' --exclude='gguf-py' --exclude='tests' --exclude='media' --exclude='tools/server' \
    --exclude='.github' 2>/dev/null || true
  rm -rf "$scratch/g"
  tar -C "$scratch" -cJf .device/llama.cpp.tar.xz .
  rm -rf "$scratch"
  du -sh .device/*
  exit 0
fi

if ! command -v node >/dev/null && [ -f .device/node.xz ]; then
  mkdir -p /tmp/polyquant-node/bin
  xz -dc .device/node.xz > /tmp/polyquant-node/bin/node && chmod +x /tmp/polyquant-node/bin/node
  export PATH="/tmp/polyquant-node/bin:$PATH"
  [ -d node_modules ] || { mkdir -p node_modules && tar -C node_modules -xJf .device/node_modules.tar.xz; }
fi
if [ ! -f native/build/llama.cpp/CMakeLists.txt ] && [ -f .device/llama.cpp.tar.xz ]; then
  mkdir -p native/build/llama.cpp && tar -C native/build/llama.cpp -xJf .device/llama.cpp.tar.xz
fi
command -v node >/dev/null || { echo "bench/device.sh: no node (run --pack on a machine with one and carry .device)" >&2; exit 2; }

if [ "$mode" = auto ]; then
  if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then mode=gpu; else mode=cpu; fi
fi
[ -n "$sizes" ] || { [ "$mode" = gpu ] && sizes=tiny,1.3b,3.8b || sizes=tiny; }
[ -n "$threads" ] || threads=$(node -e "const os=require('os');console.log(Math.max(1,Math.min(os.availableParallelism(),16)))")
mkdir -p "$out"
log="$out/device.log"
: > "$log"
say() { echo "$*" | tee -a "$log"; }

started=$(date +%s)
say "# polyquant device bench — $(date -u '+%Y-%m-%d %H:%M UTC'), mode $mode"
say "- machine: $(uname -m), $(node -p "require('os').cpus()[0]?.model + ' × ' + require('os').availableParallelism()"), $(free -g | awk '/Mem:/{print $2}') GiB"
[ "$mode" = gpu ] && say "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"
say "- node $(node --version), threads $threads, ctx $ctx, $windows windows per file"

if [ "$mode" = gpu ]; then
  node scripts/build-native.mjs --gpu cuda --tools --strict 2>&1 | tee -a "$log"
else
  node scripts/build-native.mjs --quiet 2>&1 | tee -a "$log"
fi
say "- native addon: $(node -p "const i=require('./native/build/build-info.json'); i.llama + (i.gpu ? ' + ' + i.gpu : '')" 2>/dev/null || echo 'not built')"

tsx() { node --import tsx "$@"; }
models="$out/models"
mkdir -p "$models"
for size in ${sizes//,/ }; do
  if [ "$size" = tiny ]; then
    model="$root/../shared/fixtures/polyglot-ko-tiny"
    [ -d "$model" ] || { say "skip tiny: $model not found"; continue; }
  else
    model="$models/polyglot-ko-$size"
    [ -d "$model" ] || tsx src/cli/bin.ts synth --preset "polyglot-ko-$size" --out "$model" >> "$log" 2>&1
  fi
  for type in f16 q4_k_m; do
    gguf="$models/$size-$type.gguf"
    [ -f "$gguf" ] || tsx src/cli/bin.ts convert "$model" --to gguf --type "$type" --out "$gguf" >> "$log" 2>&1
    say ""
    say "## polyglot-ko-$size $type ($(du -h "$gguf" | cut -f1))"
    paths=native
    [ "$mode" = cpu ] && paths=native,addon
    extra=()
    [ "$size" = tiny ] || extra+=(--no-reference --kobest-limit 0)
    [ "$type" = q4_k_m ] && extra+=(--kobest-limit 0 --no-reference)
    device_flag=()
    [ "$mode" = cpu ] && device_flag+=(--device cpu) || device_flag+=(--device gpu)
    tsx bench/llamacpp-engine.ts --gguf "$gguf" --model "$model" --ctx "$ctx" --windows "$windows" --threads "$threads" --paths "$paths" "${device_flag[@]}" "${extra[@]}" 2>&1 \
      | grep -vE '^(llama_|load|print_info|ggml_|\s*$)' | tee -a "$log" || say "(bench failed; see $log)"
  done
done

say ""
say "total $(( $(date +%s) - started )) s"
# The table: one row per measured rate, as Markdown, under the machine lines.
node - "$log" "$out/device.md" <<'JS'
const [log, md] = process.argv.slice(2);
const lines = require('fs').readFileSync(log, 'utf8').split('\n');
const rows = [];
let file = '';
for (const line of lines) {
  if (line.startsWith('## ')) file = line.slice(3);
  let m = /^(.+?)\s+([\d.]+) (tokens\/s|documents\/s)/.exec(line) ?? /^(KOBEST .+?): ([\d.]+) (documents\/s)/.exec(line);
  if (m) rows.push(`| ${file} | ${m[1].trim()} | ${m[2]} ${m[3]} |`);
  m = /^ratio (.+): ([\d.]+ %)$/.exec(line);
  if (m) rows.push(`| ${file} | ratio ${m[1]} | ${m[2]} |`);
}
const head = lines.filter((line) => line.startsWith('# ') || line.startsWith('- ')).join('\n');
require('fs').writeFileSync(md, `${head}\n\n| file | measurement | rate |\n|---|---|---|\n${rows.join('\n')}\n`);
JS
say "wrote $out/device.md"
