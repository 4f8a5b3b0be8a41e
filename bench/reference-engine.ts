/**
 * Reference engine throughput on polyglot-ko-tiny (../shared) or any model folder: load time, the matrix
 * kernel's GFLOP/s, and perplexity tokens/s over valid.txt at ctx 128 and 512 for 0 (inline), 1 and 2
 * threads. Reports wall-clock tokens/s and tokens per CPU-second (process-wide, workers included), which
 * is the steadier number on a shared machine.
 *
 *   npx tsx bench/reference-engine.ts [--model DIR] [--text FILE] [--windows N] [--threads 0,1,2] [--ctx 128,512]
 */
import { availableParallelism, cpus, loadavg } from 'node:os';
import { resolve } from 'node:path';
import { createReferenceEngine } from '../src/verify/engines/reference.js';
import { MatrixKernels, sharedMemory } from '../src/verify/engines/reference-wasm.js';
import { perplexityOfFile } from '../src/verify/perplexity.js';

function argument(name: string, fallback: string): string {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? (process.argv[index + 1] ?? fallback) : fallback;
}

const shared = resolve(import.meta.dirname, '..', '..', 'shared');
const model = argument('model', resolve(shared, 'fixtures', 'polyglot-ko-tiny'));
const text = argument('text', resolve(shared, 'data', 'korean-text', 'valid.txt'));
const windows = Number(argument('windows', '24'));
const threadCounts = argument('threads', '0,1,2').split(',').map(Number);
const contexts = argument('ctx', '128,512').split(',').map(Number);

function cpuSeconds(since: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(since);
  return (used.user + used.system) / 1e6;
}

/** Y = X·Wᵀ at the output head's shape (64 positions × 30080 × 256) and an MLP shape. */
function kernelBench(): void {
  const memory = sharedMemory(2048);
  const kernels = new MatrixKernels(memory);
  const floats = new Float32Array(memory.buffer);
  for (let i = 0; i < floats.length; i += 1) floats[i] = ((i * 2654435761) % 1000) / 1000 - 0.5;
  for (const [rows, cols, depth] of [
    [64, 30080, 256],
    [128, 1024, 256],
    [128, 256, 1024],
  ] as const) {
    const x = 64;
    const w = x + rows * depth * 4 + 64;
    const y = w + cols * depth * 4 + 64;
    kernels.matmul(x, depth, w, depth, y, cols, rows, cols, depth);
    const repeats = 5;
    const started = performance.now();
    const cpu = process.cpuUsage();
    for (let r = 0; r < repeats; r += 1) kernels.matmul(x, depth, w, depth, y, cols, rows, cols, depth);
    const seconds = (performance.now() - started) / 1000 / repeats;
    const flops = 2 * rows * cols * depth;
    console.log(
      `kernel ${rows}×${depth} · (${cols}×${depth})ᵀ: ${(flops / seconds / 1e9).toFixed(1)} GFLOP/s wall, ${(flops / (cpuSeconds(cpu) / repeats) / 1e9).toFixed(1)} per CPU-second`,
    );
  }
}

console.log(`${cpus()[0]?.model ?? 'cpu'} × ${availableParallelism()}, load average ${loadavg().map((value) => value.toFixed(1)).join(' ')}`);
kernelBench();
for (const threads of threadCounts) {
  const started = performance.now();
  const engine = await createReferenceEngine(model, { threads });
  console.log(`threads ${threads}: engine ready in ${((performance.now() - started) / 1000).toFixed(2)} s`);
  try {
    for (const ctx of contexts) {
      // One warm-up window so the kernels are compiled by the optimising tier before timing.
      await perplexityOfFile(engine, text, { ctx, maxWindows: Math.max(1, engine.parallelism) });
      const cpu = process.cpuUsage();
      const begin = performance.now();
      const report = await perplexityOfFile(engine, text, { ctx, maxWindows: windows });
      const seconds = (performance.now() - begin) / 1000;
      const processed = report.windows.length * ctx;
      console.log(
        `  ctx ${ctx}: ${report.windows.length} windows, ${(processed / seconds).toFixed(0)} tokens/s wall, ${(processed / cpuSeconds(cpu)).toFixed(0)} tokens per CPU-second (ppl over them ${report.ppl.toFixed(2)})`,
      );
    }
  } finally {
    await engine.close();
  }
}
