/**
 * Throughput of verify-style scoring (full next-token distributions at every scored position) on one GGUF:
 * the llamacpp engine (node-llama-cpp) vs llama.cpp's own `llama-perplexity` on the same file vs the
 * reference engine on the HF folder. By default the GGUF is polyglot-ko-tiny converted to f16 in a temp
 * folder by our converter. Scoring only the target token (distributions none) costs the same in the
 * llamacpp engine — the whole distribution is read either way (see the header of
 * src/verify/engines/llamacpp.ts) — so it is also timed, with the plain decode as the floor.
 *
 *   npx tsx bench/llamacpp-engine.ts [--gguf FILE] [--model DIR] [--text FILE] [--ctx 512] [--windows 2] [--threads 2]
 *
 * llama-perplexity is vendor-build/llama.cpp/build/bin/llama-perplexity (bench/build-llama.sh); it is
 * skipped with a message when absent. It scores llama.cpp's protocol (second half of each chunk) and
 * batches several chunks per decode, so compare its tokens/s as "tokens through the model per second".
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { convertToGguf } from '../src/converters/gguf/convert.js';
import type { Engine } from '../src/verify/engine.js';
import { createLlamaCppEngine } from '../src/verify/engines/llamacpp.js';
import { createReferenceEngine } from '../src/verify/engines/reference.js';
import { perplexityOfFile } from '../src/verify/perplexity.js';

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
const perplexityBinary = resolve(root, 'vendor-build', 'llama.cpp', 'build', 'bin', 'llama-perplexity');

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
console.log(`ctx ${ctx}, ${windows} windows, ${threads} threads, text ${text}`);

/** Process CPU time (all threads, workers included) since `since`, in seconds. */
function cpuSeconds(since: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(since);
  return (used.user + used.system) / 1e6;
}

async function timeEngine(label: string, engine: Engine, distributions: 'full' | 'none'): Promise<void> {
  const cpu = process.cpuUsage();
  const begin = performance.now();
  const report = await perplexityOfFile(engine, text, { ctx, maxWindows: windows, distributions });
  const seconds = (performance.now() - begin) / 1000;
  const tokens = report.windows.length * ctx;
  console.log(
    `${label.padEnd(34)} ${(tokens / seconds).toFixed(1).padStart(8)} tokens/s  (${report.windows.length} × ${ctx} tokens in ${seconds.toFixed(2)} s, ${(tokens / cpuSeconds(cpu)).toFixed(1)} per CPU-second, ppl ${report.ppl.toFixed(3)})`,
  );
}

try {
  {
    const started = performance.now();
    const engine = await createLlamaCppEngine(gguf, { device: 'cpu', threads, contextLength: ctx });
    console.log(`llamacpp engine ready in ${((performance.now() - started) / 1000).toFixed(2)} s (${engine.device})`);
    try {
      await engine.score(engine.tokenize('워밍업 문장입니다.'), { distributions: 'full' });
      await timeEngine('llamacpp, full distributions', engine, 'full');
      await timeEngine('llamacpp, target only', engine, 'none');
    } finally {
      await engine.close();
    }
  }

  if (existsSync(perplexityBinary)) {
    const begin = performance.now();
    // One chunk per batch (-b ctx) so "seconds per pass" is one window's time, as the engine's windows are.
    const run = spawnSync(perplexityBinary, ['-m', gguf, '-f', text, '-c', String(ctx), '-b', String(ctx), '-t', String(threads), '--chunks', String(windows)], {
      encoding: 'utf8',
      maxBuffer: 64 << 20,
    });
    const seconds = (performance.now() - begin) / 1000;
    const output = `${run.stdout}${run.stderr}`;
    const perPass = /([\d.]+) seconds per pass/.exec(output);
    const sequences = /n_seq=(\d+)/.exec(output);
    const estimate = /Final estimate: PPL = ([\d.]+)/.exec(output);
    if (run.status !== 0 || perPass === null || sequences === null) {
      console.log(`llama-perplexity failed (exit ${run.status}):\n${output.slice(-2000)}`);
    } else {
      const tokensPerSecond = (Number(sequences[1]) * ctx) / Number(perPass[1]);
      console.log(
        `${'llama-perplexity (all logits)'.padEnd(34)} ${tokensPerSecond.toFixed(1).padStart(8)} tokens/s  (${perPass[1]} s per pass of ${sequences[1]} × ${ctx}; process ${seconds.toFixed(2)} s, ppl ${estimate?.[1] ?? '?'} on its own protocol)`,
      );
    }
  } else {
    console.log(`llama-perplexity skipped: ${perplexityBinary} not found (bash bench/build-llama.sh builds it)`);
  }

  try {
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
