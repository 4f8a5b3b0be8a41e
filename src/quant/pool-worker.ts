/** The worker side of QuantPool: one task = whole rows of float32 in, their quantized bytes out. */
import { Piscina } from 'piscina';
import { PolyquantError } from '../errors.js';
import { quantizeRows } from './api.js';
import { type StoredRows, widenRows } from '../tensor/widen.js';
import type { GgmlTypeName } from './ggml-types.js';
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
    const out = quantizeChunk(task.scheme, floatsOf(task.src, task.tensor), task.nPerRow, task.importance, task.tensor);
    // Hand the output buffer back without a copy.
    return Piscina.move(out);
  } catch (error) {
    if (error instanceof PolyquantError) return { failure: error.toJSON() } satisfies QuantTaskFailure;
    throw error;
  }
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
