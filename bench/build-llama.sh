#!/usr/bin/env bash
# Builds llama.cpp's tools (llama-quantize, llama-perplexity) from the git bundle that ships in
# the node-llama-cpp npm package, for side-by-side benchmarks. Source and binaries go to vendor-build/,
# which git ignores: never commit them.
#   bash bench/build-llama.sh            # → vendor-build/llama.cpp/build/bin/llama-quantize
set -euo pipefail
cd "$(dirname "$0")/.."
version=3.21.1   # the node-llama-cpp version polyquant pins (ships llama.cpp tag v0.4.0)
root=vendor-build
mkdir -p "$root"
if [ ! -f "$root/package/llama/gitRelease.bundle" ]; then
  (cd "$root" && npm pack "node-llama-cpp@$version" --silent >/dev/null && tar xzf "node-llama-cpp-$version.tgz" package/llama)
fi
if [ ! -d "$root/llama.cpp/.git" ]; then
  git clone --quiet "$root/package/llama/gitRelease.bundle" "$root/llama.cpp"
fi
cd "$root/llama.cpp"
cmake -S . -B build -G "$(command -v ninja >/dev/null && echo Ninja || echo 'Unix Makefiles')" \
  -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DGGML_CUDA=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_TOOLS=ON >/dev/null
cmake --build build -j"$(nproc)" --target llama-quantize llama-perplexity llama-imatrix
ls -la build/bin/
