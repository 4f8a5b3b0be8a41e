/**
 * Throughput of verify-style scoring (full next-token distributions at every scored position) of the onnx
 * engine on one or more ONNX model files next to the llamacpp engine on a GGUF, same threads, same token
 * windows, in one run (issue #9's speed acceptance: the 3.8b q4 ONNX vs the 3.8b q4_0 GGUF). Each engine
 * is warmed up with one untimed window; the rate is scored tokens over the wall time of the timed windows.
 *
 *   npx tsx bench/onnx-engine.ts --onnx DIR[:type,type…] [--onnx DIR2:type] [--gguf FILE] [--text FILE]
 *                                [--ctx 512] [--windows 2] [--threads 2]
 *
 * Without --onnx/--gguf it converts ../shared's polyglot-ko-tiny to ONNX q4 and q8 (both q8 formats) and
 * GGUF q4_0 in a temp folder first.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { convertToGguf } from '../src/converters/gguf/convert.js';
import { convertToOnnx } from '../src/converters/onnx/convert.js';
import type { OnnxTypeName } from '../src/converters/onnx/types.js';
import type { Engine } from '../src/verify/engine.js';
import { createLlamaCppEngine } from '../src/verify/engines/llamacpp.js';
import { createOnnxEngine } from '../src/verify/engines/onnx.js';

function argument(name: string, fallback: string): string {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? (process.argv[index + 1] ?? fallback) : fallback;
}
function all(name: string): string[] {
  return process.argv.flatMap((value, index) => (value === `--${name}` && process.argv[index + 1] !== undefined ? [process.argv[index + 1] as string] : []));
}

const shared = resolve(import.meta.dirname, '..', '..', 'shared');
const text = argument('text', resolve(shared, 'data', 'korean-text', 'valid.txt'));
const ctx = Number(argument('ctx', '512'));
const windows = Number(argument('windows', '2'));
const threads = Number(argument('threads', '2'));

let scratch: string | undefined;
let onnxModels = all('onnx').map((spec) => {
  const [dir, types] = spec.split(':') as [string, string | undefined];
  return { dir: resolve(dir), types: (types ?? 'q4').split(',') as OnnxTypeName[] };
});
let gguf = argument('gguf', '');
if (onnxModels.length === 0 && gguf === '') {
  scratch = mkdtempSync(join(tmpdir(), 'polyquant-bench-onnx-'));
  const model = resolve(shared, 'fixtures', 'polyglot-ko-tiny');
  await convertToOnnx(model, { types: ['q4', 'q8'], out: join(scratch, 'nbits'), q8Format: 'nbits' });
  await convertToOnnx(model, { types: ['q8'], out: join(scratch, 'integer'), q8Format: 'integer' });
  onnxModels = [
    { dir: join(scratch, 'nbits'), types: ['q4', 'q8'] },
    { dir: join(scratch, 'integer'), types: ['q8'] },
  ];
  gguf = join(scratch, 'q4_0.gguf');
  await convertToGguf(model, { type: 'q4_0', out: gguf });
}

console.log(`${cpus()[0]?.model ?? 'cpu'} × ${cpus().length}, load ${loadavg()[0]?.toFixed(2)}, ${new Date().toISOString()}`);
console.log(`ctx ${ctx}, ${windows} timed windows, ${threads} threads, full distributions`);

async function measure(label: string, open: () => Promise<Engine>): Promise<void> {
  const started = performance.now();
  const engine = await open();
  const ready = (performance.now() - started) / 1000;
  try {
    const tokens = engine.tokenize(readFileSync(text, 'utf8'));
    const into = new Float32Array((ctx - 1) * engine.vocabSize);
    await engine.score(tokens.subarray(0, ctx), { distributions: 'full', into });
    const begin = performance.now();
    let scored = 0;
    for (let window = 1; window <= windows; window++) {
      const result = await engine.score(tokens.subarray(window * ctx, (window + 1) * ctx), { distributions: 'full', into });
      scored += result.tokenLogProbs.length;
    }
    const seconds = (performance.now() - begin) / 1000;
    console.log(`${label.padEnd(48)} ready ${ready.toFixed(1)} s   ${(scored / seconds).toFixed(1).padStart(8)} tokens/s`);
  } finally {
    await engine.close();
  }
}

try {
  for (const { dir, types } of onnxModels) {
    for (const onnxType of types) await measure(`onnx ${dir.split('/').pop()} ${onnxType}`, () => createOnnxEngine(dir, { onnxType, threads, device: 'cpu' }));
  }
  if (gguf !== '') await measure(`llamacpp ${gguf.split('/').pop()}`, () => createLlamaCppEngine(gguf, { threads, device: 'cpu' }));
} finally {
  if (scratch !== undefined) rmSync(scratch, { recursive: true, force: true });
}
