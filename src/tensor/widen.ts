/**
 * Stored checkpoint values → float32, exactly as ggml widens them (ggml_compute_fp16_to_fp32, the bf16
 * shift; F64 rounds to nearest even like numpy's astype(float32) in the stock converter).
 */
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { DTYPES, type DType } from './dtype.js';
import { bf16ToF32Array, f16ToF32Array } from './float.js';

/** Whole rows as the checkpoint stores them, to be widened where they are used (a quantizer thread). */
export interface StoredRows {
  readonly dtype: DType;
  readonly bytes: Uint8Array;
}

/** Widens raw little-endian `bytes` of `dtype` into `out` (at least bytes/size elements), returning that view. */
export function widenInto(bytes: Uint8Array, dtype: DType, out: Float32Array, tensor: string | undefined): Float32Array {
  const size = DTYPES[dtype].bytes;
  const count = bytes.length / size;
  // Typed-array views need aligned offsets; chunks of a reused buffer can start anywhere.
  const aligned = bytes.byteOffset % size === 0 ? bytes : new Uint8Array(bytes);
  switch (dtype) {
    case 'F16':
      return f16ToF32Array(new Uint16Array(aligned.buffer, aligned.byteOffset, count), out);
    case 'BF16':
      return bf16ToF32Array(new Uint16Array(aligned.buffer, aligned.byteOffset, count), out);
    case 'F32':
      out.set(new Float32Array(aligned.buffer, aligned.byteOffset, count));
      return out.subarray(0, count);
    case 'F64': {
      const view = out.subarray(0, count);
      view.set(new Float64Array(aligned.buffer, aligned.byteOffset, count));
      return view;
    }
    default:
      throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `dtype ${dtype} cannot be widened to float32 weights`, { tensor });
  }
}

/**
 * Rows as float32: a Float32Array as it is; stored rows widened into `scratch` when it is long enough
 * (a view of it), else into a fresh array.
 */
export function widenRows(rows: Float32Array | StoredRows, tensor: string | undefined, scratch?: Float32Array): Float32Array {
  if (rows instanceof Float32Array) return rows;
  const count = rows.bytes.length / DTYPES[rows.dtype].bytes;
  const out = scratch !== undefined && scratch.length >= count ? scratch.subarray(0, count) : new Float32Array(count);
  return widenInto(rows.bytes, rows.dtype, out, tensor);
}
