/**
 * Throughput of verify-style scoring (full next-token distributions at every scored position) on one GGUF:
 * the llamacpp engine on each of its paths (native addon, node-llama-cpp internals, public API) vs
 * llama.cpp's own `llama-perplexity` on the same file, same threads, same windows, in one run; the reference
 * engine on the HF folder; and KOBEST scoring throughput (documents/s) per path. By default the GGUF is
 * polyglot-ko-tiny converted to f16 in a temp folder by our converter.
 *
 *   npx tsx bench/llamacpp-engine.ts [--gguf FILE] [--model DIR] [--text FILE] [--ctx 512] [--windows 2] [--threads 2]
 *                                    [--paths native,addon] [--kobest-limit 100] [--kobest-tasks copa,boolq] [--no-reference]
 *                                    [--device cpu|gpu|auto] [--perplexity FILE] [--flash-attention] [--protocol windows|llamacpp]
 *
 * llama-perplexity is vendor-build/llama.cpp/build/bin/llama-perplexity (bench/build-llama.sh); it is
 * skipped with a message when absent. It runs with `-b CTX` (one window per decode, as the engine), with
 * flash attention off (the engine's computation) and auto (its default); its throughput is taken from its
 * log's own clock over windows 2 … N (load, tokenization and the first window's warm-up excluded; the
 * engine is warmed up with one untimed window likewise). It scores llama.cpp's protocol
 * (log-softmax over the second half of each window); the engine scores every position.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { convertToGguf } from '../src/converters/gguf/convert.js';
import type { Engine } from '../src/verify/engine.js';
import { createLlamaCppEngine } from '../src/verify/engines/llamacpp.js';
import { createReferenceEngine } from '../src/verify/engines/reference.js';
import { type KobestTaskName, runKobest } from '../src/verify/kobest/index.js';
import { perplexityOfTokens } from '../src/verify/perplexity.js';

function argument(name: string, fallback: string): string {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? (process.argv[index + 1] ?? fallback) : fallback;
}

const root = resolve(import.meta.dirname, '..');
const shared = resolve(root, '..', 'shared');
const model = argument('model', resolve(shared, 'fixtures', 'polyglot-ko-tiny'));
const text = argument('text', resolve(shared, 'data', 'korean-text', 'valid.txt'));
const ctx = Number(argument('ctx', '512'));
const windows = Number(argument('windows', '2'));
const threads = Number(argument('threads', '2'));
const paths = argument('paths', 'native,addon').split(',') as ('native' | 'addon' | 'public')[];
const kobestLimit = Number(argument('kobest-limit', '100'));
const kobestTasks = argument('kobest-tasks', 'copa,boolq').split(',') as KobestTaskName[];
const kobestDir = resolve(shared, 'data', 'kobest');
const withReference = !process.argv.includes('--no-reference');
const device = argument('device', 'cpu') as 'cpu' | 'gpu' | 'auto';
/** --flash-attention: the engine with llama.cpp's flash attention (compare with llama-perplexity -fa auto). */
const flashAttention = process.argv.includes('--flash-attention');
/** --protocol llamacpp scores what llama-perplexity scores (the second half of each window); default windows (all but the first token). */
const protocol = argument('protocol', 'windows') as 'windows' | 'llamacpp';
// llama-perplexity: --perplexity FILE, else the one built beside the addon (build-native --tools), else bench/build-llama.sh's.
const perplexityBinary = argument(
  'perplexity',
  [resolve(root, 'native', 'build', 'llama.cpp', 'build', 'bin', 'llama-perplexity'), resolve(root, 'vendor-build', 'llama.cpp', 'build', 'bin', 'llama-perplexity')].find((file) =>
    existsSync(file),
  ) ?? resolve(root, 'vendor-build', 'llama.cpp', 'build', 'bin', 'llama-perplexity'),
);

let scratch: string | undefined;
let gguf = argument('gguf', '');
if (gguf === '') {
  scratch = mkdtempSync(join(tmpdir(), 'polyquant-bench-'));
  gguf = join(scratch, 'model-f16.gguf');
  const started = performance.now();
  await convertToGguf(model, { type: 'f16', out: gguf });
  console.log(`converted ${model} to f16 in ${((performance.now() - started) / 1000).toFixed(1)} s`);
}

console.log(`${cpus()[0]?.model ?? 'cpu'} × ${availableParallelism()}, load average ${loadavg().map((value) => value.toFixed(1)).join(' ')}`);
console.log(`ctx ${ctx}, ${windows} windows (${protocol} protocol), ${threads} threads, text ${text}`);

/** Process CPU time (all threads, workers included) since `since`, in seconds. */
function cpuSeconds(since: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(since);
  return (used.user + used.system) / 1e6;
}

const textBytes = readFileSync(text);

/**
 * Scoring throughput as verify scores: windows of ctx, rows reused between windows (verify reduces each
 * window's rows before the next), tokenization outside the timed part (as llama-perplexity's clock).
 */
async function timeEngine(label: string, engine: Engine, distributions: 'full' | 'none'): Promise<number> {
  const tokenized = engine.tokenize(textBytes.toString('utf8'));
  const cpu = process.cpuUsage();
  const begin = performance.now();
  const report = await perplexityOfTokens(engine, tokenized, textBytes.length, { ctx, protocol, maxWindows: windows, distributions, recycle: true });
  const seconds = (performance.now() - begin) / 1000;
  const tokens = report.windows.length * ctx;
  console.log(
    `${label.padEnd(34)} ${(tokens / seconds).toFixed(1).padStart(8)} tokens/s  (${report.windows.length} × ${ctx} tokens in ${seconds.toFixed(2)} s, ${(tokens / cpuSeconds(cpu)).toFixed(1)} per CPU-second, ppl ${report.ppl.toFixed(3)})`,
  );
  return tokens / seconds;
}

/** Sets POLYQUANT_LLAMACPP_PATH for the engines created inside `work`. */
async function onPath<T>(path: string, work: () => Promise<T>): Promise<T> {
  const previous = process.env['POLYQUANT_LLAMACPP_PATH'];
  process.env['POLYQUANT_LLAMACPP_PATH'] = path;
  try {
    return await work();
  } finally {
    if (previous === undefined) delete process.env['POLYQUANT_LLAMACPP_PATH'];
    else process.env['POLYQUANT_LLAMACPP_PATH'] = previous;
  }
}

const engineRates = new Map<string, number>();

try {
  for (const path of paths) {
    await onPath(path, async () => {
      const started = performance.now();
      const engine = await createLlamaCppEngine(gguf, { device, threads, contextLength: ctx, flashAttention });
      console.log(`llamacpp engine (${engine.distributionPath} path) ready in ${((performance.now() - started) / 1000).toFixed(2)} s (${engine.device})`);
      try {
        // Warm-up with a whole window, untimed (first touch of model pages and compute buffers), as
        // llama-perplexity's first window is left out of its rate below.
        await engine.score(engine.tokenize(textBytes.toString('utf8')).subarray(0, ctx), { distributions: 'full' });
        engineRates.set(path, await timeEngine(`llamacpp ${engine.distributionPath}, full distributions`, engine, 'full'));
        await timeEngine(`llamacpp ${engine.distributionPath}, target only`, engine, 'none');
      } finally {
        await engine.close();
      }
    });
  }

  if (existsSync(perplexityBinary)) {
    // Flash attention off is the engine's computation (its default); llama-perplexity's own default is auto (on).
    for (const flash of ['off', 'auto']) {
      const begin = performance.now();
      // One chunk per batch (-b ctx), one window per decode, as the engine scores windows.
      const run = spawnSync(
        perplexityBinary,
        ['-m', gguf, '-f', text, '-c', String(ctx), '-b', String(ctx), '-t', String(threads), '--chunks', String(windows), '-fa', flash, '-ngl', device === 'cpu' ? '0' : '999'],
        { encoding: 'utf8', maxBuffer: 64 << 20 },
      );
      const seconds = (performance.now() - begin) / 1000;
      const output = `${run.stdout}${run.stderr}`;
      const sequences = /n_seq=(\d+)/.exec(output);
      const estimate = /Final estimate: PPL = ([\d.]+)/.exec(output);
      // Its log's own clock (M.SS.mmm.uuu): from "calculating perplexity" to the final estimate is every
      // window's evaluation and log-softmax, with model load and tokenization excluded.
      const clock = (pattern: RegExp): number | undefined => {
        const match = pattern.exec(output);
        return match === null ? undefined : Number(match[1]) * 60 + Number(match[2]) + Number(match[3]) / 1e3 + Number(match[4]) / 1e6;
      };
      // Steady state: from the end of its first window (the "seconds per pass" line) to the final estimate.
      const start = clock(/(\d+)\.(\d+)\.(\d+)\.(\d+) I perplexity: [\d.]+ seconds per pass/);
      const end = clock(/(\d+)\.(\d+)\.(\d+)\.(\d+) I Final estimate/);
      if (run.status !== 0 || sequences === null || start === undefined || end === undefined || windows < 2) {
        console.log(`llama-perplexity failed (exit ${run.status}; needs --windows ≥ 2):\n${output.slice(-2000)}`);
        continue;
      }
      const tokensPerSecond = ((windows - 1) * ctx) / (end - start);
      console.log(
        `${`llama-perplexity -fa ${flash}`.padEnd(34)} ${tokensPerSecond.toFixed(1).padStart(8)} tokens/s  (windows 2-${windows} × ${ctx} tokens in ${(end - start).toFixed(2)} s; process ${seconds.toFixed(2)} s, ppl ${estimate?.[1] ?? '?'} on its own protocol)`,
      );
      for (const [path, rate] of engineRates) console.log(`ratio llamacpp ${path} / llama-perplexity -fa ${flash}: ${((rate / tokensPerSecond) * 100).toFixed(1)} %`);
    }
  } else {
    console.log(`llama-perplexity skipped: ${perplexityBinary} not found (bash bench/build-llama.sh builds it)`);
  }

  if (existsSync(kobestDir) && kobestLimit > 0) {
    for (const path of paths) {
      await onPath(path, async () => {
        const engine = await createLlamaCppEngine(gguf, { device, threads });
        try {
          const begin = performance.now();
          const report = await runKobest(engine, { dir: kobestDir, tasks: kobestTasks, shots: [0], split: 'validation', limit: kobestLimit });
          const seconds = (performance.now() - begin) / 1000;
          const documents = report.results.reduce((total, result) => total + result.n, 0);
          const accuracy = report.results.map((result) => `${result.task} acc ${result.acc.toFixed(3)}`).join(', ');
          console.log(`KOBEST ${kobestTasks.join('+')} 0-shot validation, ${engine.distributionPath} path (parallelism ${engine.parallelism}): ${(documents / seconds).toFixed(1)} documents/s (${documents} in ${seconds.toFixed(2)} s; ${accuracy})`);
        } finally {
          await engine.close();
        }
      });
    }
  }

  if (withReference) try {
    const engine = await createReferenceEngine(model, { threads, contextLength: ctx });
    try {
      await engine.score(engine.tokenize('워밍업 문장입니다.'), { distributions: 'full' });
      await timeEngine(`reference (${threads} workers), full`, engine, 'full');
    } finally {
      await engine.close();
    }
  } catch (error) {
    // Models above ~1 B parameters do not fit the reference engine's float32 WebAssembly memory.
    console.log(`reference engine skipped: ${error instanceof Error ? error.message : String(error)}`);
  }
} finally {
  if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
}
