/**
 * Writes an importance matrix in llama.cpp's GGUF imatrix form, laid out as llama-imatrix's
 * `IMatrixCollector::save_imatrix` writes it (tools/imatrix/imatrix.cpp), so llama-quantize --imatrix and
 * our own `convert --imatrix` (converters/gguf/imatrix.ts) read it:
 * - KVs in this order: `general.type` = "imatrix", `imatrix.datasets` (string array), `imatrix.chunk_count`
 *   and `imatrix.chunk_size` (u32);
 * - per weight, in byte order of the names (std::sort of std::string): `<name>.in_sum2` (F32, the raw
 *   Σ x² per column) then `<name>.counts` (F32, the positions counted). llama-imatrix makes them 2-D
 *   ([columns, 1] and [1, 1]) but gguf.cpp writes ggml_n_dims dimensions, dropping trailing 1s: 1-D here.
 * - 32-byte alignment, no general.alignment KV (gguf_init_empty's default).
 */
import { type GgufKV, type GgufPlan, type GgufTensorToWrite, writeGguf } from '../converters/gguf/format.js';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import type { ImatrixResult } from './imatrix.js';

export type ImatrixToWrite = Pick<ImatrixResult, 'entries' | 'datasets' | 'chunkCount' | 'chunkSize'>;

/** The KVs llama-imatrix writes, in its order. */
export function imatrixKvs(imatrix: Omit<ImatrixToWrite, 'entries'>): GgufKV[] {
  if (imatrix.datasets.length === 0) {
    throw new PolyquantError(ERROR_CODES.USAGE, 'an imatrix names at least one dataset (imatrix.datasets)');
  }
  return [
    { key: 'general.type', type: 'STRING', value: 'imatrix' },
    { key: 'imatrix.datasets', type: 'STRING', array: true, value: [...imatrix.datasets] },
    { key: 'imatrix.chunk_count', type: 'UINT32', value: imatrix.chunkCount },
    { key: 'imatrix.chunk_size', type: 'UINT32', value: imatrix.chunkSize },
  ];
}

/** Writes `path` atomically (temp file + rename); returns the plan (offsets, bytes). */
export async function writeImatrixGguf(path: string, imatrix: ImatrixToWrite): Promise<GgufPlan> {
  const names = [...imatrix.entries.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const tensors: GgufTensorToWrite[] = names.flatMap((name) => {
    const { sums, count } = imatrix.entries.get(name) as { sums: Float32Array; count: number };
    if (!Number.isSafeInteger(count) || count < 0) {
      throw new PolyquantError(ERROR_CODES.USAGE, `imatrix entry count ${count} is not a non-negative integer`, { tensor: name });
    }
    return [
      { name: `${name}.in_sum2`, type: 'F32' as const, ne: [sums.length], chunks: floatChunks(sums) },
      { name: `${name}.counts`, type: 'F32' as const, ne: [1], chunks: floatChunks(Float32Array.of(count)) },
    ];
  });
  return writeGguf(path, imatrixKvs(imatrix), tensors);
}

function floatChunks(values: Float32Array): () => AsyncIterable<Uint8Array> {
  return async function* () {
    yield new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  };
}
