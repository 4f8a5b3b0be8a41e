/** The worker side of QuantPool: one task = whole rows of float32 in, their quantized bytes out. */
import { Piscina } from 'piscina';
import { PolyquantError } from '../errors.js';
import { quantizeRows } from './api.js';
import { type StoredRows, widenRows } from '../tensor/widen.js';
import { GGML_TYPES, type GgmlTypeName } from './ggml-types.js';
import { wasmStoredQuantizer } from './wasm/runtime.js';
import { isOnnxChunkLayout, quantizeOnnxRows } from './onnx-layouts.js';
import { isWebGpuChunkLayout, quantizeWebGpuChunk } from './webgpu-layouts.js';

export interface QuantTask {
  /** A ggml type, an ONNX layout id (onnx-layouts.ts `isOnnxChunkLayout`) or a WebGPU one (webgpu-layouts.ts `webGpuChunkLayoutId`). */
  readonly scheme: GgmlTypeName | string;
  /** Float32 rows, or stored rows this thread widens first. */
  readonly src: Float32Array | StoredRows;
  readonly nPerRow: number;
  readonly importance: Float32Array | undefined;
  readonly tensor: string | undefined;
}

/** A task's output with its input buffer, handed back to the pool for reuse. */
export interface RecycledResult {
  readonly out: Uint8Array;
  readonly input: Uint8Array;
}

/** A PolyquantError crossing the thread boundary as data (class identity does not survive cloning). */
export interface QuantTaskFailure {
  readonly failure: ReturnType<PolyquantError['toJSON']>;
}

/** This thread's widening buffer, reused across tasks (grown to the largest chunk seen). */
let widened: Float32Array = new Float32Array(0);

function floatsOf(src: Float32Array | StoredRows, tensor: string | undefined): Float32Array {
  const floats = widenRows(src, tensor, widened);
  if (floats !== src && floats.buffer !== widened.buffer) widened = floats;
  return floats;
}

export default function quantizeTask(task: QuantTask): unknown {
  try {
    const out =
      quantizeStoredChunk(task) ?? quantizeChunk(task.scheme, floatsOf(task.src, task.tensor), task.nPerRow, task.importance, task.tensor);
    // Hand the output buffer back without a copy, and the input's too when it was a whole buffer of its own:
    // the pool recycles it for a later chunk (QuantPool.buffer) instead of allocating one per chunk.
    const input = task.src instanceof Float32Array ? undefined : task.src.bytes;
    if (input === undefined || input.byteOffset !== 0 || input.byteLength !== input.buffer.byteLength || out.byteLength !== out.buffer.byteLength) {
      return Piscina.move(out);
    }
    const value: RecycledResult = { out, input };
    // Piscina's Transferable interface: the buffers to transfer, and the value the pool receives.
    const transferable = { [Piscina.transferableSymbol]: [out.buffer, input.buffer], [Piscina.valueSymbol]: value };
    return Piscina.move(transferable as unknown as Parameters<typeof Piscina.move>[0]);
  } catch (error) {
    if (error instanceof PolyquantError) return { failure: error.toJSON() } satisfies QuantTaskFailure;
    throw error;
  }
}

/**
 * A chunk of f16/bf16 rows in a ggml type with a WebAssembly kernel, widened inside WebAssembly (SIMD)
 * rather than in JavaScript: half the bytes copied in and no float32 array here. Undefined when the task
 * does not fit that path; the general path then handles it (and reports any error in it).
 */
export function quantizeStoredChunk(task: QuantTask): Uint8Array | undefined {
  const { src, nPerRow, importance } = task;
  if (src instanceof Float32Array || (src.dtype !== 'F16' && src.dtype !== 'BF16')) return undefined;
  const info = Object.hasOwn(GGML_TYPES, task.scheme) ? GGML_TYPES[task.scheme as GgmlTypeName] : undefined;
  const quantizer = info === undefined ? undefined : wasmStoredQuantizer(info);
  if (info === undefined || quantizer === undefined || !Number.isSafeInteger(nPerRow) || nPerRow <= 0 || nPerRow % info.blockElements !== 0) return undefined;
  if (src.bytes.length % (2 * nPerRow) !== 0 || (importance !== undefined && importance.length !== nPerRow)) return undefined;
  const rows = src.bytes.length / (2 * nPerRow);
  const out = new Uint8Array(rows * (nPerRow / info.blockElements) * info.blockBytes);
  quantizer(src.bytes, src.dtype, rows, nPerRow, out, 0, importance === undefined || info.importance === 'ignored' ? null : importance);
  return out;
}

/** One chunk in a ggml type, an ONNX layout or a WebGPU layout (the pool's inline path calls this too). */
export function quantizeChunk(
  scheme: GgmlTypeName | string,
  rows: Float32Array,
  nPerRow: number,
  importance: Float32Array | undefined,
  tensor: string | undefined,
): Uint8Array {
  if (isOnnxChunkLayout(scheme)) return quantizeOnnxRows(scheme, rows, nPerRow);
  if (isWebGpuChunkLayout(scheme)) return quantizeWebGpuChunk(scheme, rows, nPerRow);
  return quantizeRows(scheme as GgmlTypeName, rows, nPerRow, { importance, tensor });
}
