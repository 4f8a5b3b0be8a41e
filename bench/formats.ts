/**
 * One table across formats: each output of one HF model (GGUF q8_0 / q4_0 / q4_k_m in llama.cpp; ONNX
 * fp32 / fp16 / q8 in both weight formats / q4 / q4f16 in onnxruntime) verified against the HF folder in
 * the reference engine, on the same text and windows: size, bits per weight, perplexity, ΔPPL, mean KL
 * divergence and top-1 agreement. Prints a Markdown table for BENCHMARKS.md.
 *
 *   npx tsx bench/formats.ts [--model DIR] [--text FILE] [--ctx 512] [--windows 8] [--threads 2]
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { convertToGguf } from '../src/converters/gguf/convert.js';
import { convertToOnnx, type OnnxPlannedModel } from '../src/converters/onnx/convert.js';
import { parameterCount, readCheckpoint } from '../src/readers/checkpoint.js';
import { verify } from '../src/verify/verify.js';

function argument(name: string, fallback: string): string {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? (process.argv[index + 1] ?? fallback) : fallback;
}

const shared = resolve(import.meta.dirname, '..', '..', 'shared');
const model = resolve(argument('model', join(shared, 'fixtures', 'polyglot-ko-tiny')));
const text = resolve(argument('text', join(shared, 'data', 'korean-text', 'valid.txt')));
const ctx = Number(argument('ctx', '512'));
const windows = Number(argument('windows', '8'));
const threads = Number(argument('threads', '2'));
const scratch = mkdtempSync(join(tmpdir(), 'polyquant-bench-formats-'));

interface Row {
  readonly format: string;
  readonly type: string;
  readonly bytes: number;
  readonly ppl: number;
  readonly baselinePpl: number;
  readonly deltaPct: number;
  readonly kld: number;
  readonly top1: number;
}

const rows: Row[] = [];
async function measure(format: string, type: string, candidate: string, bytes: number, onnxType?: OnnxPlannedModel['type']): Promise<void> {
  const report = await verify({ candidate, baseline: model, pplFiles: [text], ctx, maxWindows: windows, threads, device: 'cpu', ...(onnxType && { onnxType }) });
  const section = report.perplexity[0];
  if (section === undefined) throw new Error('no perplexity section');
  rows.push({
    format,
    type,
    bytes,
    ppl: section.candidate.ppl,
    baselinePpl: section.baseline.ppl,
    deltaPct: section.comparison.delta_ppl_pct,
    kld: section.comparison.kld?.mean ?? Number.NaN,
    top1: section.comparison.top1_agreement,
  });
  console.error(`${format} ${type}: done`);
}

try {
  const parameters = parameterCount(await readCheckpoint(model));
  for (const type of ['q8_0', 'q4_0', 'q4_k_m']) {
    const file = join(scratch, `${type}.gguf`);
    await convertToGguf(model, { type, out: file });
    await measure('GGUF', type, file, statSync(file).size);
  }
  // Every type with the default q8 (MatMulNBits 8-bit), then q8 as MatMulInteger (--q8-format integer).
  for (const q8Format of ['nbits', 'integer'] as const) {
    const folder = join(scratch, `onnx-${q8Format}`);
    const types = q8Format === 'nbits' ? ['fp32', 'fp16', 'q8', 'q4', 'q4f16'] : ['q8'];
    const plan = await convertToOnnx(model, { types, out: folder, q8Format });
    for (const planned of plan.models) {
      const bytes = planned.dataFiles.reduce((sum, file) => sum + file.bytes, 0);
      const name = planned.type === 'q8' ? `q8 (${q8Format === 'integer' ? 'MatMulInteger' : 'MatMulNBits 8-bit'})` : planned.type;
      await measure('ONNX', name, folder, bytes, planned.type);
    }
  }
  console.log(`${cpus()[0]?.model ?? 'cpu'} × ${cpus().length}, ${new Date().toISOString().slice(0, 10)}; ${model.split('/').pop()}, ${text.split('/').pop()}, ctx ${ctx}, ${windows} windows, baseline: HF folder in the reference engine (PPL ${rows[0]?.baselinePpl.toFixed(3)})`);
  console.log('');
  console.log('| format | type | size | bits/weight | PPL | ΔPPL | mean KLD | top-1 |');
  console.log('|---|---|---:|---:|---:|---:|---:|---:|');
  for (const row of rows) {
    console.log(
      `| ${row.format} | ${row.type} | ${(row.bytes / 1e6).toFixed(1)} MB | ${((8 * row.bytes) / parameters).toFixed(2)} | ${row.ppl.toFixed(3)} | ${row.deltaPct >= 0 ? '+' : ''}${row.deltaPct.toFixed(3)}% | ${row.kld.toExponential(2)} | ${(100 * row.top1).toFixed(2)}% |`,
    );
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
