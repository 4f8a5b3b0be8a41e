/**
 * Single-thread throughput of every ggml quantizer and dequantizer on a normal(0, 0.02) matrix (the
 * shape of a 3.8B GPT-NeoX weight row: 4096 columns). Prints MB/s of float32 input and ns per parameter,
 * with llama-quantize's per-thread figures for comparison where known.
 *
 *   npx tsx bench/quant-kernels.ts [--rows 4096] [--cols 4096] [--types Q8_0,Q4_K] [--importance]
 *     [--budget-ms 1500] [--warm-up-ms 400] [--backend wasm|js|both] [--onnx onnx-q4-b32-sym-f32,…|none]
 *     [--webgpu webgpu:q4f16_1:raw,…|none]
 *
 * Slow types run on fewer rows (a time budget per type) so the whole run stays short; the rate is per
 * parameter either way. Times are process CPU time. `--backend` picks the kernels (src/quant/wasm: the
 * WebAssembly ports where a type has one, else TypeScript); `both` prints a row for each. `--onnx` adds
 * the ONNX MatMulNBits layouts (default: those the converter writes, q4/q8/q4f16 with block 32, and an
 * asymmetric one), quantized through the pool's entry point (`quantizeOnnxRows`). `--webgpu` adds the
 * WebGPU layouts as the pool's chunk ids (default: the group layouts, q4f32_1 also with bf16 scales, and
 * q0f16), quantized through `quantizeWebGpuChunk`.
 */

import { parseArgs } from 'node:util';
import {
  dequantizeRowsInto,
  GGML_TYPE_NAMES,
  GGML_TYPES,
  type GgmlTypeName,
  isGgmlTypeName,
  type KernelBackend,
  quantizeRowsInto,
  rowBytes,
  setKernelBackend,
} from '../src/quant/index.js';
import { MATMULNBITS_LAYOUT_BY_ID, quantizeOnnxRows } from '../src/quant/onnx-layouts.js';
import { isWebGpuChunkLayout, quantizeWebGpuChunk } from '../src/quant/webgpu-layouts.js';

/**
 * llama-quantize's single-thread speed (ns/param of float32 input), for the ratio column: Q8_0 and Q4_0
 * as measured on the development machine (442 and 968 MB/s), Q4_K as quoted in the task brief.
 */
const LLAMA_QUANTIZE_NS_PER_PARAM: Partial<Record<GgmlTypeName, number>> = { Q8_0: 4000 / 442, Q4_0: 4000 / 968, Q4_K: 70 };

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '4096' },
    cols: { type: 'string', default: '4096' },
    types: { type: 'string' },
    importance: { type: 'boolean', default: false },
    'budget-ms': { type: 'string', default: '1500' },
    'warm-up-ms': { type: 'string', default: '400' },
    backend: { type: 'string', default: 'wasm' },
    onnx: { type: 'string', default: 'onnx-q4-b32-sym-f32,onnx-q8-b32-sym-f32,onnx-q4-b32-sym-f16,onnx-q4-b32-asym-f32' },
    webgpu: { type: 'string', default: 'webgpu:q4f16_1:raw,webgpu:q4f32_1:raw,webgpu:q4f32_1:bf16,webgpu:q8f16_pq:raw,webgpu:q8f32_pq:raw,webgpu:q0f16:raw' },
  },
});

const rows = Number(values.rows);
const cols = Number(values.cols);
const budgetMs = Number(values['budget-ms']);
const warmUpMs = Number(values['warm-up-ms']);
const backends: KernelBackend[] = values.backend === 'both' ? ['js', 'wasm'] : values.backend === 'js' ? ['js'] : ['wasm'];
const schemes = (values.types?.split(',') ?? GGML_TYPE_NAMES).filter((name): name is GgmlTypeName => {
  if (!isGgmlTypeName(name)) throw new Error(`unknown type ${name}`);
  return true;
});
const onnxLayouts = values.onnx === 'none' ? [] : values.onnx.split(',');
for (const id of onnxLayouts) if (!MATMULNBITS_LAYOUT_BY_ID.has(id)) throw new Error(`unknown MatMulNBits layout ${id}`);
const webGpuLayouts = values.webgpu === 'none' ? [] : values.webgpu.split(',');
for (const id of webGpuLayouts) if (!isWebGpuChunkLayout(id)) throw new Error(`unknown WebGPU chunk layout ${id} (webgpu:LAYOUT:raw|bf16)`);

/** A deterministic normal(0, 0.02) matrix (xorshift32 + Box–Muller); no Math.random so runs compare. */
function normalMatrix(count: number): Float32Array {
  const out = new Float32Array(count);
  let state = 0x12345678;
  const uniform = (): number => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return ((state >>> 0) + 1) / 4294967297;
  };
  for (let i = 0; i < count; i += 2) {
    const radius = Math.sqrt(-2 * Math.log(uniform())) * 0.02;
    const angle = 2 * Math.PI * uniform();
    out[i] = radius * Math.cos(angle);
    if (i + 1 < count) out[i + 1] = radius * Math.sin(angle);
  }
  return out;
}

const matrix = normalMatrix(rows * cols);
const importanceWeights = values.importance ? normalMatrix(cols).map((value) => Math.exp(value * 50)) : undefined;

/** Milliseconds of CPU time this process has used: steadier than wall time on a shared machine. */
function cpuMs(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1000;
}

/**
 * Runs `body` over chunks of `chunkRows` rows until `budgetMs` of CPU time passes or the matrix is
 * done, after a warm-up of `warmUpMs` (so that V8's optimizing compiler, whose background thread counts
 * as CPU time too, has finished). Returns the rows timed and the CPU nanoseconds per parameter of the
 * fastest chunk (single thread: CPU time = wall time on an idle machine; the minimum, as ggml's
 * test-quantize-perf reports it, filters out other processes' interference on a shared machine).
 */
function measure(body: (start: number, count: number) => void, chunkRows: number): { rowsDone: number; nsPerParam: number } {
  const warmUpStart = cpuMs();
  while (cpuMs() - warmUpStart < warmUpMs) body(0, Math.min(chunkRows, rows));
  const perChunk: number[] = [];
  let rowsDone = 0;
  const started = cpuMs();
  while (rowsDone < rows) {
    const count = Math.min(chunkRows, rows - rowsDone);
    const chunkStart = cpuMs();
    body(rowsDone, count);
    perChunk.push(((cpuMs() - chunkStart) * 1e6) / (count * cols));
    rowsDone += count;
    if (cpuMs() - started > budgetMs) break;
  }
  return { rowsDone, nsPerParam: Math.min(...perChunk) };
}

console.log(`ggml quantizers, single thread, ${rows}×${cols} normal(0, 0.02)${importanceWeights ? ', with importance weights' : ''}`);
console.log('type     kernels  quantize MB/s  ns/param  vs llama-quantize | dequantize MB/s  ns/param | rows timed');
for (const scheme of schemes) {
  for (const backend of backends) {
    setKernelBackend(backend);
    benchmark(scheme, backend);
  }
}

if (onnxLayouts.length > 0) {
  console.log(`\nONNX MatMulNBits quantizers, single thread, ${rows}×${cols} normal(0, 0.02)`);
  console.log('layout                 kernels  quantize MB/s  ns/param | rows timed');
  for (const id of onnxLayouts) {
    for (const backend of backends) {
      setKernelBackend(backend);
      benchmarkOnnx(id, backend);
    }
  }
}

if (webGpuLayouts.length > 0) {
  console.log(`\nWebGPU layouts, single thread, ${rows}×${cols} normal(0, 0.02)`);
  console.log('layout                 kernels  quantize MB/s  ns/param | rows timed');
  for (const id of webGpuLayouts) {
    for (const backend of backends) {
      setKernelBackend(backend);
      benchmarkWebGpu(id, backend);
    }
  }
}

function benchmarkWebGpu(id: string, backend: KernelBackend): void {
  const quantized = measure((start, count) => {
    quantizeWebGpuChunk(id, matrix.subarray(start * cols, (start + count) * cols), cols);
  }, 16);
  const ns = quantized.nsPerParam;
  console.log(`${id.padEnd(22)} ${backend.padEnd(8)} ${(4000 / ns).toFixed(1).padStart(13)} ${ns.toFixed(2).padStart(9)} | ${quantized.rowsDone}`);
}

function benchmarkOnnx(id: string, backend: KernelBackend): void {
  const layout = MATMULNBITS_LAYOUT_BY_ID.get(id)!;
  if (cols % layout.blockSize !== 0) return;
  const chunkRows = 16;
  const quantized = measure((start, count) => {
    quantizeOnnxRows(id, matrix.subarray(start * cols, (start + count) * cols), cols);
  }, chunkRows);
  const ns = quantized.nsPerParam;
  console.log(`${id.padEnd(22)} ${backend.padEnd(8)} ${(4000 / ns).toFixed(1).padStart(13)} ${ns.toFixed(2).padStart(9)} | ${quantized.rowsDone}`);
}

function benchmark(scheme: GgmlTypeName, backend: KernelBackend): void {
  const info = GGML_TYPES[scheme];
  if (cols % info.blockElements !== 0) return;
  const bytesPerRow = rowBytes(scheme, cols);
  // Chunks of 16 rows for the cheap types, 2 for the K/IQ searches (more chunks to take the best of).
  const chunkRows = info.blockElements === 256 || scheme.startsWith('IQ') ? 2 : 16;
  const out = new Uint8Array(bytesPerRow * chunkRows);
  const floats = new Float32Array(cols * chunkRows);
  const options = { importance: importanceWeights };
  const quantized = measure((start, count) => {
    quantizeRowsInto(scheme, matrix.subarray(start * cols, (start + count) * cols), cols, out, options);
  }, chunkRows);
  const encoded = quantizeRowsInto(scheme, matrix.subarray(0, cols * chunkRows), cols, out, options).slice();
  const dequantized = measure(() => {
    dequantizeRowsInto(scheme, encoded, cols, floats);
  }, chunkRows);
  const quantizeNs = quantized.nsPerParam;
  const dequantizeNs = dequantized.nsPerParam;
  const reference = LLAMA_QUANTIZE_NS_PER_PARAM[scheme];
  const ratio = reference === undefined ? '' : `${((100 * reference) / quantizeNs).toFixed(0)}%`;
  console.log(
    `${scheme.padEnd(8)} ${backend.padEnd(8)} ${(4000 / quantizeNs).toFixed(1).padStart(13)} ${quantizeNs.toFixed(1).padStart(9)} ${ratio.padStart(18)} | ${(4000 / dequantizeNs).toFixed(1).padStart(15)} ${dequantizeNs.toFixed(2).padStart(9)} | ${quantized.rowsDone}`,
  );
}
