#!/usr/bin/env node
// Builds polyquant's scoring addon (native/llama-scorer.cc → native/build/polyquant-llama.node) against
// the llama.cpp that node-llama-cpp ships. Runs on install (npm's postinstall) and by hand:
//
//   node scripts/build-native.mjs [--from-source [--gpu cuda|vulkan] [--tools]] [--strict] [--force] [--quiet]
//
// Default: link node-llama-cpp's prebuilt shared libraries (by soname; at run time the addon binds to the
// build node-llama-cpp loads, CPU or GPU) with the headers of its bundled source
// (node-llama-cpp/llama/gitRelease.bundle, read with git). Seconds to build.
// --from-source (or POLYQUANT_LLAMA_FROM_SOURCE=1): build llama.cpp itself from that bundle, as shared
// libraries for this machine (GGML_NATIVE), into native/build/llama.cpp, and link the addon to it; with
// --gpu cuda|vulkan (or POLYQUANT_LLAMA_GPU) its CUDA or Vulkan backend too (nvcc / the Vulkan SDK needed).
// Minutes to build (about 10 on two cores), and the generic prebuilt's decode is slower: BENCHMARKS.md.
// Node-API headers come from the node-api-headers package.
//
// Plain JavaScript on purpose: it runs at install time, before (and without) the dev dependencies.
// Where something is missing (no C++ compiler, no git, a platform without a prebuilt) it says so and exits
// 0: the llamacpp engine then uses node-llama-cpp's own (slower) path. `--strict` exits 1 instead.
import { execFileSync, spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');
const source = join(root, 'native', 'llama-scorer.cc');
const outDir = join(root, 'native', 'build');
const output = join(outDir, 'polyquant-llama.node');
const infoFile = join(outDir, 'build-info.json');
const strict = process.argv.includes('--strict');
const force = process.argv.includes('--force');
const quiet = process.argv.includes('--quiet');
const gpuIndex = process.argv.indexOf('--gpu');
const gpu = gpuIndex >= 0 ? process.argv[gpuIndex + 1] : process.env.POLYQUANT_LLAMA_GPU || undefined;
const fromSource = process.argv.includes('--from-source') || process.env.POLYQUANT_LLAMA_FROM_SOURCE === '1' || gpu !== undefined;
if (gpu !== undefined && gpu !== 'cuda' && gpu !== 'vulkan') {
  console.log(`polyquant native addon: --gpu ${gpu}: expected cuda or vulkan`);
  process.exit(2);
}
// --tools: also llama-perplexity beside the libraries (for bench/ comparisons on the same build).
const tools = process.argv.includes('--tools');
const sourceDir = join(outDir, 'llama.cpp');
const sourceBuild = join(sourceDir, 'build');

function say(message) {
  if (!quiet) console.log(`polyquant native addon: ${message}`);
}

function giveUp(message) {
  console.log(`polyquant native addon: not built: ${message}; the llamacpp engine will use node-llama-cpp's slower path`);
  process.exit(strict ? 1 : 0);
}

if (process.env.POLYQUANT_SKIP_NATIVE === '1') giveUp('POLYQUANT_SKIP_NATIVE=1');
if (process.platform !== 'linux') giveUp(`the build script supports Linux only (this is ${process.platform})`);

const require = createRequire(join(root, 'package.json'));

/** A package's root folder, found from its resolvable entry point (package.json is not always exported). */
function packageRoot(name) {
  let entry;
  try {
    entry = require.resolve(name);
  } catch {
    try {
      entry = require.resolve(`${name}/package.json`);
    } catch {
      return undefined;
    }
  }
  for (let folder = dirname(entry); folder !== dirname(folder); folder = dirname(folder)) {
    const manifest = join(folder, 'package.json');
    if (existsSync(manifest) && JSON.parse(readFileSync(manifest, 'utf8')).name === name) return folder;
  }
  return undefined;
}

// From source with a checkout already in native/build/llama.cpp (carried to a machine without
// node-llama-cpp, say), nothing of node-llama-cpp is needed; otherwise its bundled source is.
const haveSource = fromSource && existsSync(join(sourceDir, 'CMakeLists.txt'));
const nodeLlamaCpp = packageRoot('node-llama-cpp');
if (nodeLlamaCpp === undefined && !haveSource) giveUp('node-llama-cpp is not installed');
const nodeLlamaCppVersion = nodeLlamaCpp === undefined ? 'none' : JSON.parse(readFileSync(join(nodeLlamaCpp, 'package.json'), 'utf8')).version;
const bundle = nodeLlamaCpp === undefined ? '' : join(nodeLlamaCpp, 'llama', 'gitRelease.bundle');
if (!haveSource && !existsSync(bundle)) giveUp(`node-llama-cpp ${nodeLlamaCppVersion} has no bundled llama.cpp source (${bundle})`);

/**
 * node-llama-cpp's CPU prebuilt for this platform: the libraries the default build links against. At run
 * time the addon binds to the libllama node-llama-cpp has loaded (same soname), CPU or GPU build alike.
 */
function prebuiltLibraries() {
  const platformPackage = `@node-llama-cpp/${process.platform}-${process.arch}`;
  const prebuilt = packageRoot(platformPackage) ?? join(dirname(nodeLlamaCpp), ...platformPackage.split('/'));
  const binsRoot = join(prebuilt, 'bins');
  const bins = existsSync(binsRoot) ? readdirSync(binsRoot).map((name) => join(binsRoot, name)).find((folder) => readdirSync(folder).some((file) => /^libllama\.v.*\.so$/.test(file))) : undefined;
  if (bins === undefined) giveUp(`no prebuilt libllama in ${platformPackage}`);
  const libraries = readdirSync(bins);
  const linkName = (pattern) => libraries.find((file) => pattern.test(file));
  const libllama = linkName(/^libllama\.v.*\.so$/);
  const libggml = linkName(/^libggml\.v.*\.so$/) ?? linkName(/^libggml\.so$/);
  const libggmlBase = linkName(/^libggml-base.*\.so$/);
  if (libllama === undefined || libggml === undefined || libggmlBase === undefined) giveUp(`libllama/libggml/libggml-base not all found in ${bins}`);
  return { dir: bins, link: [`-l:${libllama}`, `-l:${libggml}`, `-l:${libggmlBase}`], stamp: readFileSync(join(bins, libllama)).subarray(0, 1 << 16) };
}
const prebuilt = fromSource ? undefined : prebuiltLibraries();

const napiHeaders = packageRoot('node-api-headers');
if (napiHeaders === undefined) giveUp('the node-api-headers package is not installed');
const compiler = process.env.CXX ?? 'c++';
if (spawnSync(compiler, ['--version'], { stdio: 'ignore' }).status !== 0) giveUp(`no C++ compiler (${compiler}); set CXX to one`);
if (!haveSource && spawnSync('git', ['--version'], { stdio: 'ignore' }).status !== 0) giveUp('git is needed to read llama.cpp from node-llama-cpp\'s source bundle');

// Rebuild only when something that goes into the binary changed.
const fingerprint = createHash('sha256')
  .update(readFileSync(source))
  .update(nodeLlamaCppVersion)
  .update(fromSource ? `source:${gpu ?? 'cpu'}` : prebuilt.dir)
  .update(process.versions.napi ?? '')
  .update(prebuilt?.stamp ?? '')
  .digest('hex');
if (!force && existsSync(output) && existsSync(infoFile)) {
  try {
    if (JSON.parse(readFileSync(infoFile, 'utf8')).fingerprint === fingerprint) {
      say(`up to date (${output})`);
      process.exit(0);
    }
  } catch {
    // rebuild
  }
}

mkdirSync(outDir, { recursive: true });
const scratch = mkdtempSync(join(outDir, '.build-'));
try {
  const started = Date.now();
  // The libraries to link — node-llama-cpp's prebuilt ones, or llama.cpp built here from the same source —
  // and the headers (llama.h and the ggml headers it includes) of exactly that source.
  let libDir;
  let linkLibraries;
  let headers;
  if (fromSource) {
    buildLlamaFromSource();
    libDir = join(sourceBuild, 'bin');
    linkLibraries = ['-lllama', '-lggml', '-lggml-base'];
    headers = sourceDir;
  } else {
    libDir = prebuilt.dir;
    linkLibraries = prebuilt.link;
    const git = join(scratch, 'bundle.git');
    execFileSync('git', ['init', '--quiet', '--bare', git]);
    execFileSync('git', ['-C', git, 'fetch', '--quiet', bundle, 'HEAD']);
    headers = join(scratch, 'llama.cpp');
    mkdirSync(headers);
    const archive = execFileSync('git', ['-C', git, 'archive', 'FETCH_HEAD', 'include', 'ggml/include'], { maxBuffer: 1 << 28 });
    execFileSync('tar', ['-x', '-C', headers], { input: archive });
  }
  const temporary = join(scratch, 'polyquant-llama.node');
  const args = [
    '-O3', '-ffp-contract=off', '-std=c++17', '-fPIC', '-shared', '-fvisibility=hidden', '-Wall', '-Wextra', '-Wno-unused-parameter', '-Wno-psabi',
    '-DNAPI_VERSION=8',
    '-I', join(napiHeaders, 'include'),
    '-I', join(headers, 'include'),
    '-I', join(headers, 'ggml', 'include'),
    source,
    '-o', temporary,
    '-L', libDir,
    ...linkLibraries,
    // Prebuilt: a fallback only (node-llama-cpp has already loaded the libllama it chose). From source: how the library is found.
    `-Wl,-rpath,${libDir}`,
    '-pthread',
  ];
  const result = spawnSync(compiler, args, { encoding: 'utf8' });
  if (result.status !== 0) giveUp(`${compiler} failed:\n${result.stderr}`);
  renameSync(temporary, output);
  // `llama` tells the engine whether node-llama-cpp must load its library first (prebuilt) or must not (source).
  const info = { fingerprint, llama: fromSource ? 'source' : 'node-llama-cpp', gpu: fromSource ? (gpu ?? null) : null, libDir, nodeLlamaCpp: nodeLlamaCppVersion, compiler, built: new Date().toISOString() };
  writeFileSync(infoFile, `${JSON.stringify(info, null, 2)}\n`);
  say(`built ${output} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} catch (error) {
  giveUp(error instanceof Error ? error.message : String(error));
} finally {
  rmSync(scratch, { recursive: true, force: true });
}

/** Clones the bundled llama.cpp (once) and builds its shared libraries for this machine into native/build/llama.cpp/build. */
function buildLlamaFromSource() {
  if (spawnSync('cmake', ['--version'], { stdio: 'ignore' }).status !== 0) giveUp('--from-source needs cmake');
  if (!existsSync(join(sourceDir, 'CMakeLists.txt'))) {
    rmSync(sourceDir, { recursive: true, force: true });
    execFileSync('git', ['-c', 'advice.detachedHead=false', 'clone', '--quiet', bundle, sourceDir]);
  }
  const options = [
    '-S', sourceDir, '-B', sourceBuild, '-DCMAKE_BUILD_TYPE=Release', '-DBUILD_SHARED_LIBS=ON', '-DGGML_NATIVE=ON',
    // ggml's own thread pool, as node-llama-cpp's builds: no libgomp beside Node's threads.
    '-DGGML_OPENMP=OFF', '-DLLAMA_CURL=OFF', '-DLLAMA_OPENSSL=OFF', '-DLLAMA_BUILD_TESTS=OFF', '-DLLAMA_BUILD_EXAMPLES=OFF',
    `-DLLAMA_BUILD_TOOLS=${tools ? 'ON' : 'OFF'}`, '-DLLAMA_BUILD_SERVER=OFF',
    ...(gpu === 'cuda' ? ['-DGGML_CUDA=ON', '-DCMAKE_CUDA_ARCHITECTURES=native'] : []),
    ...(gpu === 'vulkan' ? ['-DGGML_VULKAN=ON'] : []),
  ];
  say(`building llama.cpp from node-llama-cpp's bundled source${gpu ? ` with ${gpu}` : ''} (minutes)`);
  for (const args of [options, ['--build', sourceBuild, '--target', 'llama', ...(tools ? ['llama-perplexity'] : []), '-j', String(availableParallelism())]]) {
    // Compiler warnings from llama.cpp's sources are not ours to show; the tail of the log is, on failure.
    const run = spawnSync('cmake', args, { encoding: 'utf8', stdio: 'pipe', maxBuffer: 1 << 30 });
    if (run.status !== 0) giveUp(`cmake ${args.slice(0, 2).join(' ')} failed${run.stderr ? `:\n${run.stderr.slice(-4000)}` : ''}`);
  }
}
