/**
 * Runs the WebAssembly quantization kernels (assembly/*.ts, compiled by scripts/build-wasm.ts into
 * <entry>.generated.ts). Each thread instantiates a module the first time one of its kernels is used,
 * with its own memory: [module statics | importance (n floats) | input staging | output staging].
 * Rows are copied in, quantized and copied out in chunks of at most STAGING_BYTES of input, so memory
 * stays bounded whatever the tensor size.
 *
 * Kernel ABI (one per ggml type that has a port): `quantize_<TYPE>(src, dst, rows, n, importance)` with
 * importance 0 for none, and `dequantize_<TYPE>(src, dst, rows, n)`. A type without an export runs
 * its TypeScript kernel; both give identical bytes (test/quant-wasm.test.ts).
 *
 * The ONNX MatMulNBits quantizer has its own export, `quantize_matmulnbits` (assembly/onnx.ts), staged
 * the same way with three outputs (B, scales, zero points); see `wasmMatMulNBitsQuantizer`. The WebGPU
 * group-quant layouts have `quantize_webgpu` (assembly/webgpu.ts), with two (q_weight, q_scale); see
 * `wasmWebGpuQuantizer`.
 *
 * `POLYQUANT_KERNELS=js` (or `setKernelBackend('js')`) forces the TypeScript kernels everywhere.
 */

import type { GgmlTypeInfo } from '../ggml-types.js';
import { WASM_BASE64 as KQUANTS } from './kquants.generated.js';
import { WASM_BASE64 as LEGACY } from './legacy.generated.js';
import { WASM_BASE64 as ONNX } from './onnx.generated.js';
import { WASM_BASE64 as WEBGPU } from './webgpu.generated.js';

/** The kernel modules (scripts/build-wasm.ts's entries), base64-encoded. */
const WASM_MODULES: Readonly<Record<string, string>> = { legacy: LEGACY, kquants: KQUANTS, onnx: ONNX, webgpu: WEBGPU };

export type KernelBackend = 'wasm' | 'js';

/**
 * The slice of the WebAssembly JS API used here, typed locally: tsconfig's lib (ES2023, no DOM) declares
 * no WebAssembly globals, and a global augmentation would leak into every module (as in
 * src/verify/engines/reference-wasm.ts).
 */
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmModule {
  readonly kind?: 'module';
}
interface WasmApi {
  readonly Memory: new (descriptor: { initial: number }) => WasmMemory;
  readonly Module: (new (bytes: Uint8Array) => WasmModule) & {
    exports(module: WasmModule): { readonly name: string; readonly kind: string }[];
  };
  readonly Instance: new (module: WasmModule, imports: Record<string, Record<string, unknown>>) => { readonly exports: Record<string, unknown> };
}
const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

const PAGE = 65536;
/** Float32 input bytes per kernel call; whole rows, at least one. */
const STAGING_BYTES = 1 << 20;

let backend: KernelBackend = process.env['POLYQUANT_KERNELS'] === 'js' ? 'js' : 'wasm';

/** Chooses the kernels for this thread (tests, benchmarks). */
export function setKernelBackend(next: KernelBackend): void {
  backend = next;
}

export function kernelBackend(): KernelBackend {
  return backend;
}

type QuantizeExport = (src: number, dst: number, rows: number, n: number, importance: number) => void;
type DequantizeExport = (src: number, dst: number, rows: number, n: number) => void;

interface KernelModule {
  readonly memory: WasmMemory;
  readonly heapBase: number;
  readonly exports: Record<string, unknown>;
}

const compiled = new Map<string, WasmModule>();
const instances = new Map<string, KernelModule>();
let exportIndex: Map<string, string> | undefined;

function compiledModule(name: string): WasmModule {
  let module = compiled.get(name);
  if (module === undefined) {
    const base64 = WASM_MODULES[name];
    if (base64 === undefined) throw new Error(`no WebAssembly kernel module ${name}`);
    module = new wasm.Module(Buffer.from(base64, 'base64'));
    compiled.set(name, module);
  }
  return module;
}

/** Kernel export name → module name, from the modules' export lists (no instantiation). */
function moduleOfExport(exportName: string): string | undefined {
  if (exportIndex === undefined) {
    exportIndex = new Map();
    for (const name of Object.keys(WASM_MODULES)) {
      for (const entry of wasm.Module.exports(compiledModule(name))) {
        if (entry.kind === 'function') exportIndex.set(entry.name, name);
      }
    }
  }
  return exportIndex.get(exportName);
}

function instance(name: string): KernelModule {
  let loaded = instances.get(name);
  if (loaded === undefined) {
    const module = compiledModule(name);
    const memory = new wasm.Memory({ initial: 4 });
    const created = new wasm.Instance(module, { env: { memory } });
    const exports = created.exports;
    const heapBase = (exports['heapBase'] as () => number)();
    loaded = { memory, heapBase: alignUp(heapBase, 16), exports };
    instances.set(name, loaded);
  }
  return loaded;
}

function alignUp(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}

function reserve(module: KernelModule, end: number): void {
  const have = module.memory.buffer.byteLength;
  if (end > have) module.memory.grow(Math.ceil((end - have) / PAGE));
}

/** Quantizes `rows` rows of `src` (from float `srcOffset`) into `out` at byte `outOffset`. */
export type RowsQuantizer = (
  src: Float32Array,
  srcOffset: number,
  rows: number,
  nPerRow: number,
  out: Uint8Array,
  outOffset: number,
  importance: Float32Array | null,
) => void;

/** Dequantizes `rows` rows of `bytes` (from byte `srcOffset`) into `out` at float `outOffset`. */
export type RowsDequantizer = (bytes: Uint8Array, srcOffset: number, rows: number, nPerRow: number, out: Float32Array, outOffset: number) => void;

const quantizers = new Map<string, RowsQuantizer | null>();
const dequantizers = new Map<string, RowsDequantizer | null>();

/** The WebAssembly quantizer for a type, or undefined (no port, or the JS backend is chosen). */
export function wasmQuantizer(info: GgmlTypeInfo): RowsQuantizer | undefined {
  return kernelFor(quantizers, `quantize_${info.name}`, info, makeQuantizer);
}

/**
 * The function `make` builds over a module's export `exportName`, made once per type and thread; undefined
 * when no module exports it or the JS backend is chosen.
 */
function kernelFor<Kernel>(
  cache: Map<string, Kernel | null>,
  exportName: string,
  info: GgmlTypeInfo,
  make: (moduleName: string, exportName: string, info: GgmlTypeInfo) => Kernel,
): Kernel | undefined {
  if (backend !== 'wasm') return undefined;
  let kernel = cache.get(info.name);
  if (kernel === undefined) {
    const moduleName = moduleOfExport(exportName);
    kernel = moduleName === undefined ? null : make(moduleName, exportName, info);
    cache.set(info.name, kernel);
  }
  return kernel ?? undefined;
}

/** The WebAssembly dequantizer for a type, or undefined. */
export function wasmDequantizer(info: GgmlTypeInfo): RowsDequantizer | undefined {
  return kernelFor(dequantizers, `dequantize_${info.name}`, info, makeDequantizer);
}

function makeQuantizer(moduleName: string, exportName: string, info: GgmlTypeInfo): RowsQuantizer {
  return (src, srcOffset, rows, nPerRow, out, outOffset, importance) => {
    const module = instance(moduleName);
    const kernel = module.exports[exportName] as QuantizeExport;
    const bytesPerRow = (nPerRow / info.blockElements) * info.blockBytes;
    const chunkRows = Math.max(1, Math.floor(STAGING_BYTES / (nPerRow * 4)));
    const importancePtr = module.heapBase;
    const srcPtr = alignUp(importancePtr + nPerRow * 4, 16);
    const dstPtr = alignUp(srcPtr + chunkRows * nPerRow * 4, 16);
    reserve(module, dstPtr + chunkRows * bytesPerRow);
    const buffer = module.memory.buffer;
    const floats = new Float32Array(buffer);
    const bytes = new Uint8Array(buffer);
    if (importance !== null) floats.set(importance.subarray(0, nPerRow), importancePtr >>> 2);
    for (let row = 0; row < rows; row += chunkRows) {
      const count = Math.min(chunkRows, rows - row);
      const from = srcOffset + row * nPerRow;
      floats.set(src.subarray(from, from + count * nPerRow), srcPtr >>> 2);
      kernel(srcPtr, dstPtr, count, nPerRow, importance === null ? 0 : importancePtr);
      out.set(bytes.subarray(dstPtr, dstPtr + count * bytesPerRow), outOffset + row * bytesPerRow);
    }
  };
}

/**
 * Little-endian f16/bf16 `bytes` widened to float32 into `out` by the kernels' SIMD `widen_f16` /
 * `widen_bf16` (what the stored-rows quantizers run first); the same bits as src/tensor/widen.ts.
 */
export function wasmWiden(bytes: Uint8Array, dtype: 'F16' | 'BF16', out: Float32Array): Float32Array {
  const module = instance('legacy');
  const widen = module.exports[dtype === 'F16' ? 'widen_f16' : 'widen_bf16'] as (src: number, dst: number, count: number) => void;
  const count = bytes.length >>> 1;
  const chunk = STAGING_BYTES >>> 2;
  const halfPtr = module.heapBase;
  const floatPtr = alignUp(halfPtr + chunk * 2, 16);
  reserve(module, floatPtr + chunk * 4);
  const memory = new Uint8Array(module.memory.buffer);
  const floats = new Float32Array(module.memory.buffer);
  for (let first = 0; first < count; first += chunk) {
    const n = Math.min(chunk, count - first);
    memory.set(bytes.subarray(first * 2, (first + n) * 2), halfPtr);
    widen(halfPtr, floatPtr, n);
    out.set(floats.subarray(floatPtr >>> 2, (floatPtr >>> 2) + n), first);
  }
  return out.subarray(0, count);
}

/** Quantizes `rows` rows stored as little-endian f16 or bf16 `bytes` into `out` at byte `outOffset`. */
export type StoredRowsQuantizer = (
  bytes: Uint8Array,
  dtype: 'F16' | 'BF16',
  rows: number,
  nPerRow: number,
  out: Uint8Array,
  outOffset: number,
  importance: Float32Array | null,
) => void;

const storedQuantizers = new Map<string, StoredRowsQuantizer | null>();

/**
 * The WebAssembly quantizer for a type that takes rows as a checkpoint stores them (f16/bf16): the halves
 * are copied in (half the bytes of float32) and widened by the module's SIMD `widen_f16`/`widen_bf16`,
 * exactly as src/tensor/widen.ts widens them, then quantized as `wasmQuantizer`'s kernel does. Undefined
 * where `wasmQuantizer` is.
 */
export function wasmStoredQuantizer(info: GgmlTypeInfo): StoredRowsQuantizer | undefined {
  return kernelFor(storedQuantizers, `quantize_${info.name}`, info, makeStoredQuantizer);
}

function makeStoredQuantizer(moduleName: string, exportName: string, info: GgmlTypeInfo): StoredRowsQuantizer {
  return (source, dtype, rows, nPerRow, out, outOffset, importance) => {
    const module = instance(moduleName);
    const kernel = module.exports[exportName] as QuantizeExport;
    const widen = module.exports[dtype === 'F16' ? 'widen_f16' : 'widen_bf16'] as (src: number, dst: number, count: number) => void;
    const bytesPerRow = (nPerRow / info.blockElements) * info.blockBytes;
    const chunkRows = Math.max(1, Math.floor(STAGING_BYTES / (nPerRow * 4)));
    const importancePtr = module.heapBase;
    const halfPtr = alignUp(importancePtr + nPerRow * 4, 16);
    const srcPtr = alignUp(halfPtr + chunkRows * nPerRow * 2, 16);
    const dstPtr = alignUp(srcPtr + chunkRows * nPerRow * 4, 16);
    reserve(module, dstPtr + chunkRows * bytesPerRow);
    const buffer = module.memory.buffer;
    const bytes = new Uint8Array(buffer);
    if (importance !== null) new Float32Array(buffer).set(importance.subarray(0, nPerRow), importancePtr >>> 2);
    for (let row = 0; row < rows; row += chunkRows) {
      const count = Math.min(chunkRows, rows - row);
      const from = row * nPerRow * 2;
      bytes.set(source.subarray(from, from + count * nPerRow * 2), halfPtr);
      widen(halfPtr, srcPtr, count * nPerRow);
      kernel(srcPtr, dstPtr, count, nPerRow, importance === null ? 0 : importancePtr);
      out.set(bytes.subarray(dstPtr, dstPtr + count * bytesPerRow), outOffset + row * bytesPerRow);
    }
  };
}

function makeDequantizer(moduleName: string, exportName: string, info: GgmlTypeInfo): RowsDequantizer {
  return (source, srcOffset, rows, nPerRow, out, outOffset) => {
    const module = instance(moduleName);
    const kernel = module.exports[exportName] as DequantizeExport;
    const bytesPerRow = (nPerRow / info.blockElements) * info.blockBytes;
    const chunkRows = Math.max(1, Math.floor(STAGING_BYTES / (nPerRow * 4)));
    const srcPtr = alignUp(module.heapBase, 16);
    const dstPtr = alignUp(srcPtr + chunkRows * bytesPerRow, 16);
    reserve(module, dstPtr + chunkRows * nPerRow * 4);
    const buffer = module.memory.buffer;
    const floats = new Float32Array(buffer);
    const bytes = new Uint8Array(buffer);
    for (let row = 0; row < rows; row += chunkRows) {
      const count = Math.min(chunkRows, rows - row);
      const from = srcOffset + row * bytesPerRow;
      bytes.set(source.subarray(from, from + count * bytesPerRow), srcPtr);
      kernel(srcPtr, dstPtr, count, nPerRow);
      out.set(floats.subarray(dstPtr >>> 2, (dstPtr >>> 2) + count * nPerRow), outOffset + row * nPerRow);
    }
  };
}

/** The layout fields the MatMulNBits kernel takes (onnx-layouts.ts `MatMulNBitsLayout`). */
export interface MatMulNBitsKernelLayout {
  readonly bits: 4 | 8;
  readonly blockSize: number;
  readonly symmetric: boolean;
  readonly scaleType: 'f32' | 'f16';
}

/** Bytes of each output part per row of K elements (from onnx-layouts.ts's table). */
export interface MatMulNBitsRowBytes {
  readonly B: number;
  readonly scales: number;
  readonly zeroPoints: number;
}

/**
 * Quantizes `rows` rows of K floats (from float `srcOffset`; K a multiple of the block size) into the
 * three parts, each written from its array's start: B, the scales' bytes, the zero points (empty when
 * symmetric).
 */
export type MatMulNBitsRowsQuantizer = (
  layout: MatMulNBitsKernelLayout,
  rowBytes: MatMulNBitsRowBytes,
  src: Float32Array,
  srcOffset: number,
  rows: number,
  K: number,
  B: Uint8Array,
  scales: Uint8Array,
  zeroPoints: Uint8Array,
) => void;

type MatMulNBitsExport = (
  src: number,
  B: number,
  scales: number,
  zeroPoints: number,
  rows: number,
  K: number,
  bits: number,
  blockSize: number,
  symmetric: number,
  halfScales: number,
) => void;

let matMulNBitsQuantizer: MatMulNBitsRowsQuantizer | undefined;

/**
 * The WebAssembly MatMulNBits quantizer (assembly/onnx.ts, byte-identical to onnx-layouts.ts's
 * TypeScript kernel for K a multiple of the block size), or undefined under the JS backend. Memory:
 * [statics | input staging | B | scales | zero points], at most STAGING_BYTES of input per call; the
 * kernel may overwrite its staged input (fp16 rounding in place).
 */
export function wasmMatMulNBitsQuantizer(): MatMulNBitsRowsQuantizer | undefined {
  if (backend !== 'wasm') return undefined;
  matMulNBitsQuantizer ??= (layout, rowBytes, src, srcOffset, rows, K, B, scales, zeroPoints) => {
    const module = instance('onnx');
    const kernel = module.exports['quantize_matmulnbits'] as MatMulNBitsExport;
    const chunkRows = Math.max(1, Math.floor(STAGING_BYTES / (K * 4)));
    const srcPtr = module.heapBase;
    const bPtr = alignUp(srcPtr + chunkRows * K * 4, 16);
    const scalesPtr = alignUp(bPtr + chunkRows * rowBytes.B, 16);
    const zeroPointsPtr = alignUp(scalesPtr + chunkRows * rowBytes.scales, 16);
    reserve(module, zeroPointsPtr + chunkRows * rowBytes.zeroPoints);
    const buffer = module.memory.buffer;
    const floats = new Float32Array(buffer);
    const bytes = new Uint8Array(buffer);
    const symmetric = layout.symmetric ? 1 : 0;
    const halfScales = layout.scaleType === 'f16' ? 1 : 0;
    for (let row = 0; row < rows; row += chunkRows) {
      const count = Math.min(chunkRows, rows - row);
      const from = srcOffset + row * K;
      floats.set(src.subarray(from, from + count * K), srcPtr >>> 2);
      kernel(srcPtr, bPtr, scalesPtr, zeroPointsPtr, count, K, layout.bits, layout.blockSize, symmetric, halfScales);
      B.set(bytes.subarray(bPtr, bPtr + count * rowBytes.B), row * rowBytes.B);
      scales.set(bytes.subarray(scalesPtr, scalesPtr + count * rowBytes.scales), row * rowBytes.scales);
      if (rowBytes.zeroPoints > 0) {
        zeroPoints.set(bytes.subarray(zeroPointsPtr, zeroPointsPtr + count * rowBytes.zeroPoints), row * rowBytes.zeroPoints);
      }
    }
  };
  return matMulNBitsQuantizer;
}

/** The layout fields the WebGPU group-quant kernel takes (webgpu-layouts.ts `WebGpuLayout`, resolved). */
export interface WebGpuKernelLayout {
  /** polyquant int8 (q8f*_pq) rather than MLC int4 (q4f*_1). */
  readonly int8: boolean;
  /** MLC int4 computed in fp16 (q4f16_1): every operation rounded to fp16. */
  readonly halfArithmetic: boolean;
  /** How q_scale is written: fp16 bits, float32, or the tensor cache's bf16 of the float32 scale. */
  readonly scaleEncoding: 'f16' | 'f32' | 'bf16';
}

/**
 * Quantizes `rows` rows of K floats (from float `srcOffset`) into q_weight bytes and q_scale bytes, each
 * written from its array's start (ceil(K/32) groups per row: 16 or 32 bytes of words, 2 or 4 bytes of scale).
 */
export type WebGpuRowsQuantizer = (layout: WebGpuKernelLayout, src: Float32Array, srcOffset: number, rows: number, K: number, qWeight: Uint8Array, qScale: Uint8Array) => void;

type WebGpuExport = (
  src: number,
  qWeight: number,
  qScale: number,
  rows: number,
  K: number,
  int8: number,
  halfArithmetic: number,
  scaleEncoding: number,
) => void;

const SCALE_ENCODINGS: Readonly<Record<WebGpuKernelLayout['scaleEncoding'], { readonly code: number; readonly bytes: number }>> = {
  f16: { code: 0, bytes: 2 },
  f32: { code: 1, bytes: 4 },
  bf16: { code: 2, bytes: 2 },
};

let webGpuQuantizer: WebGpuRowsQuantizer | undefined;

/**
 * The WebAssembly WebGPU group quantizer (assembly/webgpu.ts, byte-identical to webgpu-layouts.ts's
 * TypeScript kernels for every K), or undefined under the JS backend. Memory: [statics | input staging |
 * q_weight | q_scale], at most STAGING_BYTES of input per call (one row at least).
 */
export function wasmWebGpuQuantizer(): WebGpuRowsQuantizer | undefined {
  if (backend !== 'wasm') return undefined;
  webGpuQuantizer ??= (layout, src, srcOffset, rows, K, qWeight, qScale) => {
    const module = instance('webgpu');
    const kernel = module.exports['quantize_webgpu'] as WebGpuExport;
    const groups = Math.ceil(K / 32);
    const weightRowBytes = groups * (layout.int8 ? 32 : 16);
    const encoding = SCALE_ENCODINGS[layout.scaleEncoding];
    const scaleRowBytes = groups * encoding.bytes;
    const chunkRows = Math.max(1, Math.floor(STAGING_BYTES / (K * 4)));
    const srcPtr = module.heapBase;
    const weightPtr = alignUp(srcPtr + chunkRows * K * 4, 16);
    const scalePtr = alignUp(weightPtr + chunkRows * weightRowBytes, 16);
    reserve(module, scalePtr + chunkRows * scaleRowBytes);
    const buffer = module.memory.buffer;
    const floats = new Float32Array(buffer);
    const bytes = new Uint8Array(buffer);
    const int8 = layout.int8 ? 1 : 0;
    const halfArithmetic = layout.halfArithmetic ? 1 : 0;
    for (let row = 0; row < rows; row += chunkRows) {
      const count = Math.min(chunkRows, rows - row);
      const from = srcOffset + row * K;
      floats.set(src.subarray(from, from + count * K), srcPtr >>> 2);
      kernel(srcPtr, weightPtr, scalePtr, count, K, int8, halfArithmetic, encoding.code);
      qWeight.set(bytes.subarray(weightPtr, weightPtr + count * weightRowBytes), row * weightRowBytes);
      qScale.set(bytes.subarray(scalePtr, scalePtr + count * scaleRowBytes), row * scaleRowBytes);
    }
  };
  return webGpuQuantizer;
}
