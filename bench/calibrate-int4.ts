/**
 * Calibrated int4 for ONNX and WebGPU (issue #13 item 3): round-to-nearest against GPTQ in the same file
 * layouts, each file verified in the engine that runs it (ONNX folders in onnxruntime, WebGPU folders in
 * the webgpu engine: Dawn, SwiftShader on a machine without a GPU) against the HF folder in the reference
 * engine, on the same windows of the validation text. Calibration uses the training text only. Prints a
 * Markdown table for BENCHMARKS.md.
 *
 *   VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json \
 *   npx tsx bench/calibrate-int4.ts [--model DIR] [--train FILE] [--valid FILE] [--chunks 64] [--ctx 512]
 *     [--windows 16] [--threads 2] [--formats onnx-sym,onnx-asym,webgpu] [--methods rtn,gptq]
 *     [--dampening 0.01] [--out bench/out/calibrate-int4]
 *
 * The baseline is scored once (verify --save-baseline) and replayed for every candidate.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { computeHessians } from '../src/calibrate/hessian.js';
import { convertToOnnx } from '../src/converters/onnx/convert.js';
import { convertToWebGpu } from '../src/converters/webgpu/convert.js';
import { verify } from '../src/verify/verify.js';

function argument(name: string, fallback: string): string {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? (process.argv[index + 1] ?? fallback) : fallback;
}

const root = resolve(import.meta.dirname, '..');
const shared = resolve(root, '..', 'shared');
const model = resolve(argument('model', join(shared, 'fixtures', 'polyglot-ko-tiny')));
const train = resolve(argument('train', join(shared, 'data', 'korean-text', 'train.txt')));
const valid = resolve(argument('valid', join(shared, 'data', 'korean-text', 'valid.txt')));
const chunks = Number(argument('chunks', '64'));
const ctx = Number(argument('ctx', '512'));
const windows = Number(argument('windows', '16'));
const threads = Number(argument('threads', '2'));
const dampening = Number(argument('dampening', '0.01'));
const formats = argument('formats', 'onnx-sym,onnx-asym,webgpu').split(',');
const methods = argument('methods', 'rtn,gptq').split(',');
const out = resolve(argument('out', join(root, 'bench', 'out', 'calibrate-int4')));
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
const savedBaseline = join(out, 'baseline.pqbase');

interface Row {
  readonly format: string;
  readonly method: string;
  readonly convertSeconds: number;
  readonly ppl: number;
  readonly kld: number;
  readonly top1: number;
}

const started = performance.now();
const hessians = await computeHessians(model, { texts: [train], chunks, ctx, threads, head: true });
console.error(`hessians: ${hessians.entries.size} matrices from ${hessians.chunkCount} chunks × ${hessians.chunkSize} tokens in ${hessians.seconds.toFixed(1)} s`);

let baselinePpl = Number.NaN;
let baselineSaved = false;
const rows: Row[] = [];

async function measure(format: string, method: string, candidate: string, convertSeconds: number, onnxType?: 'q4'): Promise<void> {
  const report = await verify({
    candidate,
    baseline: baselineSaved ? savedBaseline : model,
    ...(!baselineSaved && { saveBaseline: savedBaseline }),
    pplFiles: [valid],
    ctx,
    maxWindows: windows,
    threads,
    device: 'cpu',
    ...(onnxType && { onnxType }),
  });
  baselineSaved = true;
  const section = report.perplexity[0];
  if (section === undefined) throw new Error('no perplexity section');
  baselinePpl = section.baseline.ppl;
  const row = { format, method, convertSeconds, ppl: section.candidate.ppl, kld: section.comparison.kld?.mean ?? Number.NaN, top1: section.comparison.top1_agreement };
  rows.push(row);
  console.error(`${format} ${method}: KLD ${row.kld.toExponential(3)}, top-1 ${(100 * row.top1).toFixed(2)} %, convert ${convertSeconds.toFixed(1)} s`);
}

for (const format of formats) {
  for (const method of methods) {
    const calibrated = method === 'gptq';
    if (!calibrated && method !== 'rtn') throw new Error(`unknown method ${method} (rtn, gptq)`);
    const gptq = { dampening, provenance: { bench: 'calibrate-int4' } };
    const matrices = hessians.entries;
    const folder = join(out, `${format}-${method}`);
    const t0 = performance.now();
    if (format === 'webgpu') {
      await convertToWebGpu(model, { types: ['q4f16_1'], out: folder, workers: threads, ...(calibrated && { hessians: matrices, gptq }) });
      await measure('WebGPU q4f16_1', method, folder, (performance.now() - t0) / 1000);
    } else {
      const asymmetric = format === 'onnx-asym';
      await convertToOnnx(model, { types: ['q4'], out: folder, asymmetric, workers: threads, ...(calibrated && { hessians: matrices, gptq }) });
      await measure(`ONNX q4 b32 ${asymmetric ? 'asym' : 'sym'}`, method, folder, (performance.now() - t0) / 1000, 'q4');
    }
  }
}

const total = (performance.now() - started) / 1000;
console.log(
  `${cpus()[0]?.model ?? 'cpu'} × ${cpus().length} (load ${loadavg()[0]?.toFixed(1)}), ${new Date().toISOString().slice(0, 10)}; ${model.split('/').pop()}; ` +
    `calibration ${hessians.chunkCount} chunks × ${hessians.chunkSize} tokens of ${train.split('/').pop()} (Hessians ${hessians.seconds.toFixed(1)} s); ` +
    `measured on ${valid.split('/').pop()}, ctx ${ctx}, ${windows} windows; baseline HF folder in the reference engine (PPL ${baselinePpl.toFixed(3)}); dampening ${dampening}; ${total.toFixed(0)} s in all`,
);
console.log('');
console.log('| format | method | mean KLD | vs RTN | top-1 | PPL | convert |');
console.log('|---|---|---:|---:|---:|---:|---:|');
for (const row of rows) {
  const rtn = rows.find((candidate) => candidate.format === row.format && candidate.method === 'rtn');
  const change = rtn === undefined || row === rtn ? '' : `${(100 * (row.kld / rtn.kld - 1)).toFixed(1)} %`;
  console.log(
    `| ${row.format} | ${row.method} | ${row.kld.toExponential(3)} | ${change} | ${(100 * row.top1).toFixed(2)} % | ${row.ppl.toFixed(3)} | ${row.convertSeconds.toFixed(1)} s |`,
  );
}
