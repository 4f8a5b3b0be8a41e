/**
 * The public quantize/dequantize entry points: one wrapper checks shapes for every type (STYLE.md §5)
 * and then runs the type's WebAssembly kernel (src/quant/wasm) where it has one, else its TypeScript row
 * kernel from the table over each row; both give the same bytes. Output equals what ggml's
 * `ggml_quantize_chunk` writes (llama-quantize), with and without importance weights.
 */

import { ERROR_CODES, PolyquantError } from '../errors.js';
import { GGML_TYPE_NAMES, GGML_TYPES, type GgmlTypeInfo, type GgmlTypeName, isGgmlTypeName } from './ggml-types.js';
import { wasmDequantizer, wasmQuantizer } from './wasm/runtime.js';

export interface QuantizeOptions {
  /**
   * Importance weights (llama.cpp imatrix), one per column: length must equal `nPerRow`. Types whose
   * ggml quantizer ignores them (F32, F16, BF16, Q8_0) give the same bytes with or without.
   */
  importance?: Float32Array | undefined;
  /** The tensor being quantized, named in error messages. */
  tensor?: string | undefined;
}

export interface DequantizeOptions {
  /** The tensor being dequantized, named in error messages. */
  tensor?: string | undefined;
}

/**
 * A ggml type name in any case: `q4_k`, `Q4_K` and `q4_K` all name Q4_K, as llama-quantize's
 * `parse_ggml_type` reads them (case-insensitive `striequals`). The canonical spelling is ggml's own.
 */
export type GgmlTypeNameAnyCase = GgmlTypeName | Lowercase<GgmlTypeName>;

/** The canonical ggml name (`Q4_K`) of a type named in any case, or undefined for a name that is none. */
export function canonicalGgmlTypeName(name: string): GgmlTypeName | undefined {
  if (typeof name !== 'string') return undefined;
  const upper = name.trim().toUpperCase();
  return isGgmlTypeName(upper) ? upper : undefined;
}

function lookUp(scheme: string, tensor: string | undefined): GgmlTypeInfo {
  const name = canonicalGgmlTypeName(scheme);
  if (name === undefined) {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `unknown ggml type ${JSON.stringify(scheme)}`, {
      tensor,
      hint: `use one of ${GGML_TYPE_NAMES.join(', ')} (any case)`,
    });
  }
  return GGML_TYPES[name];
}

function checkRowLength(info: GgmlTypeInfo, nPerRow: number, tensor: string | undefined): void {
  if (!Number.isSafeInteger(nPerRow) || nPerRow <= 0) {
    throw new PolyquantError(ERROR_CODES.USAGE, `row length ${nPerRow} is not a positive integer`, { tensor });
  }
  if (nPerRow % info.blockElements !== 0) {
    throw new PolyquantError(
      ERROR_CODES.LIMIT,
      `${info.name} needs rows that are a multiple of its block size ${info.blockElements}, but the row length is ${nPerRow}`,
      { tensor, hint: 'choose a type whose block size divides the row length (llama-quantize falls back to Q5_0/Q5_1/Q8_0 or F16)' },
    );
  }
}

/** Bytes of one row of `nPerRow` elements in `scheme` (`ggml_row_size`). */
export function rowBytes(scheme: GgmlTypeNameAnyCase, nPerRow: number): number {
  const info = lookUp(scheme, undefined);
  checkRowLength(info, nPerRow, undefined);
  return (nPerRow / info.blockElements) * info.blockBytes;
}

/** Bytes of a tensor of `elements` values stored as rows of `nPerRow` in `scheme`. */
export function tensorBytes(scheme: GgmlTypeNameAnyCase, elements: number, nPerRow: number): number {
  const perRow = rowBytes(scheme, nPerRow);
  if (!Number.isSafeInteger(elements) || elements < 0 || elements % nPerRow !== 0) {
    throw new PolyquantError(ERROR_CODES.USAGE, `${elements} elements do not form whole rows of ${nPerRow}`);
  }
  return (elements / nPerRow) * perRow;
}

/**
 * Quantizes `src` (whole rows of `nPerRow` floats) into `out` and returns the written bytes (a view of
 * `out`). For the streaming converter: `out` can be reused across chunks.
 */
export function quantizeRowsInto(
  scheme: GgmlTypeNameAnyCase,
  src: Float32Array,
  nPerRow: number,
  out: Uint8Array,
  options: QuantizeOptions = {},
): Uint8Array {
  const { importance, tensor } = options;
  const info = lookUp(scheme, tensor);
  checkRowLength(info, nPerRow, tensor);
  if (src.length % nPerRow !== 0) {
    throw new PolyquantError(ERROR_CODES.USAGE, `${src.length} values are not whole rows of ${nPerRow}`, { tensor });
  }
  if (importance !== undefined && importance.length !== nPerRow) {
    throw new PolyquantError(
      ERROR_CODES.USAGE,
      `the importance weights have ${importance.length} entries but rows have ${nPerRow} columns`,
      { tensor, hint: 'pass one weight per column (the imatrix entry of this tensor)' },
    );
  }
  const rows = src.length / nPerRow;
  const bytesPerRow = (nPerRow / info.blockElements) * info.blockBytes;
  const total = rows * bytesPerRow;
  if (out.length < total) {
    throw new PolyquantError(ERROR_CODES.USAGE, `the output buffer holds ${out.length} bytes but ${total} are needed`, { tensor });
  }
  const weights = importance === undefined || info.importance === 'ignored' ? null : importance;
  const fast = wasmQuantizer(info);
  if (fast !== undefined) {
    fast(src, 0, rows, nPerRow, out, 0, weights);
    return out.subarray(0, total);
  }
  const kernel = info.quantizeRow;
  for (let row = 0; row < rows; row++) kernel(src, row * nPerRow, out, row * bytesPerRow, nPerRow, weights);
  return out.subarray(0, total);
}

/** Quantizes whole rows of `nPerRow` floats to ggml `scheme` blocks, byte-identical to ggml. */
export function quantizeRows(scheme: GgmlTypeNameAnyCase, src: Float32Array, nPerRow: number, options: QuantizeOptions = {}): Uint8Array {
  const info = lookUp(scheme, options.tensor);
  checkRowLength(info, nPerRow, options.tensor);
  const rows = Math.floor(src.length / nPerRow);
  return quantizeRowsInto(scheme, src, nPerRow, new Uint8Array(rows * (nPerRow / info.blockElements) * info.blockBytes), options);
}

/**
 * Dequantizes whole rows of `scheme` blocks into `out` (at least rows·nPerRow floats) and returns the
 * written values (a view of `out`).
 */
export function dequantizeRowsInto(
  scheme: GgmlTypeNameAnyCase,
  bytes: Uint8Array,
  nPerRow: number,
  out: Float32Array,
  options: DequantizeOptions = {},
): Float32Array {
  const { tensor } = options;
  const info = lookUp(scheme, tensor);
  checkRowLength(info, nPerRow, tensor);
  const bytesPerRow = (nPerRow / info.blockElements) * info.blockBytes;
  if (bytes.length % bytesPerRow !== 0) {
    throw new PolyquantError(
      ERROR_CODES.USAGE,
      `${bytes.length} bytes are not whole ${info.name} rows of ${nPerRow} elements (${bytesPerRow} bytes each)`,
      { tensor },
    );
  }
  const rows = bytes.length / bytesPerRow;
  const total = rows * nPerRow;
  if (out.length < total) {
    throw new PolyquantError(ERROR_CODES.USAGE, `the output buffer holds ${out.length} values but ${total} are needed`, { tensor });
  }
  const fast = wasmDequantizer(info);
  if (fast !== undefined) {
    fast(bytes, 0, rows, nPerRow, out, 0);
    return out.subarray(0, total);
  }
  const kernel = info.dequantizeRow;
  for (let row = 0; row < rows; row++) kernel(bytes, row * bytesPerRow, out, row * nPerRow, nPerRow);
  return out.subarray(0, total);
}

/** Dequantizes whole rows of ggml `scheme` blocks to floats, bit-identical to ggml's `to_float`. */
export function dequantizeRows(scheme: GgmlTypeNameAnyCase, bytes: Uint8Array, nPerRow: number, options: DequantizeOptions = {}): Float32Array {
  const info = lookUp(scheme, options.tensor);
  checkRowLength(info, nPerRow, options.tensor);
  const bytesPerRow = (nPerRow / info.blockElements) * info.blockBytes;
  return dequantizeRowsInto(scheme, bytes, nPerRow, new Float32Array(Math.floor(bytes.length / bytesPerRow) * nPerRow), options);
}
