/** The worker side of QuantPool: one task = whole rows of float32 in, their quantized bytes out. */
import { Piscina } from 'piscina';
import { PolyquantError } from '../errors.js';
import { quantizeRows } from './api.js';
import { type StoredRows, widenRows } from '../tensor/widen.js';
import { GGML_TYPES, type GgmlTypeName } from './ggml-types.js';
import { wasmStoredQuantizer } from './wasm/runtime.js';
import { isOnnxChunkLayout, quantizeOnnxRows } from './onnx-layouts.js';
import { isWebGpuChunkLayout, quantizeWebGpuChunk } from './webgpu-layouts.js';
import { type GptqFactor, type GptqFactorOptions, gptqFactor } from './gptq.js';
import { gptqQuantizeGgmlRows, isGptqGgmlType } from './gptq-ggml.js';
import { gptqQuantizeChunk, isGptqChunkLayout } from './gptq-layouts.js';
import { ERROR_CODES } from '../errors.js';

export interface QuantTask {
  /** A ggml type, an ONNX layout id (onnx-layouts.ts `isOnnxChunkLayout`) or a WebGPU one (webgpu-layouts.ts `webGpuChunkLayoutId`). */
  readonly scheme: GgmlTypeName | string;
  /** Float32 rows, or stored rows this thread widens first. */
  readonly src: Float32Array | StoredRows;
  readonly nPerRow: number;
  readonly importance: Float32Array | undefined;
  readonly tensor: string | undefined;
  /** Quantize with GPTQ error feedback through this factor (its feedback matrix is shared, not copied). */
  readonly gptq?: GptqFactor | undefined;
  /** Where to write the output, in shared memory (a QuantPool slot); the task then returns its length. */
  readonly out?: { readonly memory: SharedArrayBuffer; readonly offset: number; readonly bytes: number } | undefined;
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
    if (task.out !== undefined) {
      // A slot of shared memory: the output goes after the rows, and only its length comes back.
      const target = new Uint8Array(task.out.memory, task.out.offset, task.out.bytes);
      const direct = task.gptq === undefined ? quantizeStoredChunk(task, target) : undefined;
      if (direct !== undefined) return direct.length;
      const out = quantizeChunk(task.scheme, floatsOf(task.src, task.tensor), task.nPerRow, task.importance, task.tensor, task.gptq);
      target.set(out);
      return out.length;
    }
    const out =
      (task.gptq === undefined ? quantizeStoredChunk(task) : undefined) ??
      quantizeChunk(task.scheme, floatsOf(task.src, task.tensor), task.nPerRow, task.importance, task.tensor, task.gptq);
    // Hand the output buffer back without a copy.
    return Piscina.move(out);
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
export function quantizeStoredChunk(task: QuantTask, target?: Uint8Array): Uint8Array | undefined {
  const { src, nPerRow, importance } = task;
  if (src instanceof Float32Array || (src.dtype !== 'F16' && src.dtype !== 'BF16')) return undefined;
  const info = Object.hasOwn(GGML_TYPES, task.scheme) ? GGML_TYPES[task.scheme as GgmlTypeName] : undefined;
  const quantizer = info === undefined ? undefined : wasmStoredQuantizer(info);
  if (info === undefined || quantizer === undefined || !Number.isSafeInteger(nPerRow) || nPerRow <= 0 || nPerRow % info.blockElements !== 0) return undefined;
  if (src.bytes.length % (2 * nPerRow) !== 0 || (importance !== undefined && importance.length !== nPerRow)) return undefined;
  const rows = src.bytes.length / (2 * nPerRow);
  const outBytes = rows * (nPerRow / info.blockElements) * info.blockBytes;
  if (target !== undefined && target.length < outBytes) return undefined;
  const out = target === undefined ? new Uint8Array(outBytes) : target.subarray(0, outBytes);
  quantizer(src.bytes, src.dtype, rows, nPerRow, out, 0, importance === undefined || info.importance === 'ignored' ? null : importance);
  return out;
}

/**
 * One chunk in a ggml type, an ONNX layout or a WebGPU layout (the pool's inline path calls this too); with
 * `gptq`, by GPTQ through that factor (gptq-ggml.ts for the ggml types it covers, gptq-layouts.ts for the
 * MatMulNBits and WebGPU group layouts).
 */
export function quantizeChunk(
  scheme: GgmlTypeName | string,
  rows: Float32Array,
  nPerRow: number,
  importance: Float32Array | undefined,
  tensor: string | undefined,
  gptq?: GptqFactor | undefined,
): Uint8Array {
  if (gptq !== undefined) {
    if (isGptqGgmlType(scheme)) return gptqQuantizeGgmlRows(scheme, rows, nPerRow, gptq, { importance, tensor });
    if (isGptqChunkLayout(scheme)) return gptqQuantizeChunk(scheme, rows, nPerRow, gptq);
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `GPTQ has no quantizer for ${scheme}`, { tensor });
  }
  if (isOnnxChunkLayout(scheme)) return quantizeOnnxRows(scheme, rows, nPerRow);
  if (isWebGpuChunkLayout(scheme)) return quantizeWebGpuChunk(scheme, rows, nPerRow);
  return quantizeRows(scheme as GgmlTypeName, rows, nPerRow, { importance, tensor });
}

/** A calibration Hessian to factor for GPTQ on a pool thread (QuantPool.gptqFactor). */
export interface FactorTask extends GptqFactorOptions {
  readonly hessian: Float64Array;
  readonly columns: number;
}

/** Runs gptqFactor (piscina calls it by name): the factor, or a PolyquantError as data. */
export function factorTask(task: FactorTask): GptqFactor | QuantTaskFailure {
  try {
    return gptqFactor(task.hessian, task.columns, { dampening: task.dampening, tensor: task.tensor });
  } catch (error) {
    if (error instanceof PolyquantError) return { failure: error.toJSON() } satisfies QuantTaskFailure;
    throw error;
  }
}
