/**
 * Checkpoint rows for the GGUF converter, whole rows per chunk, either as stored (`StoredRows`, each in a
 * fresh buffer: the quantizer pool takes ownership and widens on its own threads) or widened to float32
 * (fp16/bf16 exactly, as ggml_compute_fp16_to_fp32 / bf16 widen; src/tensor/widen.ts). The fused QKV
 * weight is reordered on the way (names.ts), reading head_dim-row blocks where they lie in the input.
 */
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import { SyncFileReader } from '../../io/file.js';
import { FileRangeTensor, type RowsOptions, rowLayout, type TensorRef } from '../../readers/tensor-ref.js';
import { type StoredRows, widenRows } from '../../tensor/widen.js';
import { type QkvLayout, qkvSourceBlock } from './names.js';

/** The whole tensor as float32 (for 1-D tensors: norms and biases). */
export async function readAsF32(tensor: TensorRef): Promise<Float32Array> {
  return widenRows({ dtype: tensor.dtype, bytes: await tensor.read() }, tensor.name);
}

/**
 * Rows of `tensor` in order, `rowsPerChunk` at a time, as stored. Each chunk has a fresh buffer (from
 * `allocate` when given: the quantizer pool's shared slots) unless `reuseBuffer` (for a consumer that is
 * done with a chunk before asking for the next, as `widenChunks` is).
 */
export async function* storedRowChunks(tensor: TensorRef, rowsPerChunk: number, options: RowsOptions = {}): AsyncIterable<StoredRows> {
  for await (const bytes of tensor.rows(rowsPerChunk, options)) yield { dtype: tensor.dtype, bytes };
}

/** Chunks as fresh Float32Arrays (float32 chunks pass through as they are). */
export async function* widenChunks(chunks: AsyncIterable<Float32Array | StoredRows>, tensor: string): AsyncIterable<Float32Array> {
  for await (const chunk of chunks) yield widenRows(chunk, tensor);
}

/**
 * The fused QKV weight's rows in GGUF order ([q|k|v][head][dim]), as stored, `blocksPerChunk` head_dim-row
 * blocks per chunk, each chunk in a fresh buffer. A contiguous tensor (safetensors, a contiguous .bin
 * storage) is read block by block with positioned reads: GGUF block j = part·n_head + head comes from HF
 * block head·3 + part (names.ts), so memory holds one chunk, never the tensor. Other tensors (strided .bin
 * views) stream three times, once per part, keeping the blocks of that part — still one chunk in memory,
 * at three times the reads. `allocate` gives the chunks' buffers (RowsOptions).
 */
export function storedQkvRowChunks(
  tensor: TensorRef,
  layout: QkvLayout,
  blocksPerChunk: number,
  allocate?: (bytes: number) => Uint8Array,
): AsyncIterable<StoredRows> {
  const { rows, rowBytes } = rowLayout(tensor.dtype, tensor.shape);
  if (rows !== 3 * layout.numHeads * layout.headDim) {
    throw new PolyquantError(
      ERROR_CODES.CONFIG,
      `fused QKV has ${rows} rows; 3 × ${layout.numHeads} heads × ${layout.headDim} = ${3 * layout.numHeads * layout.headDim} expected`,
      { file: tensor.file, tensor: tensor.name },
    );
  }
  const blockBytes = layout.headDim * rowBytes;
  const chunkBlocks = Math.max(1, Math.floor(blocksPerChunk));
  return tensor instanceof FileRangeTensor
    ? qkvChunksByPosition(tensor, layout, blockBytes, chunkBlocks, allocate)
    : qkvChunksByPass(tensor, layout, blockBytes, chunkBlocks);
}

async function* qkvChunksByPosition(
  tensor: FileRangeTensor,
  layout: QkvLayout,
  blockBytes: number,
  blocksPerChunk: number,
  allocate: ((bytes: number) => Uint8Array) | undefined,
): AsyncIterable<StoredRows> {
  const blocks = 3 * layout.numHeads;
  const file = SyncFileReader.open(tensor.file);
  try {
    for (let first = 0; first < blocks; first += blocksPerChunk) {
      const count = Math.min(blocksPerChunk, blocks - first);
      const bytes = allocate?.(count * blockBytes) ?? new Uint8Array(count * blockBytes);
      for (let i = 0; i < count; i += 1) {
        const source = qkvSourceBlock(first + i, layout);
        file.readInto(tensor.offset + source * blockBytes, blockBytes, bytes.subarray(i * blockBytes));
      }
      yield { dtype: tensor.dtype, bytes };
    }
  } finally {
    file.close();
  }
}

async function* qkvChunksByPass(tensor: TensorRef, layout: QkvLayout, blockBytes: number, blocksPerChunk: number): AsyncIterable<StoredRows> {
  const rowsPerBlock = layout.headDim;
  let chunk = new Uint8Array(blocksPerChunk * blockBytes);
  let filled = 0;
  for (let part = 0; part < 3; part += 1) {
    let block = 0;
    for await (const bytes of tensor.rows(rowsPerBlock, { reuseBuffer: true })) {
      // HF block index = head·3 + part: keep this pass's part, in head order.
      if (block % 3 === part) {
        chunk.set(bytes, filled * blockBytes);
        filled += 1;
        if (filled === blocksPerChunk) {
          yield { dtype: tensor.dtype, bytes: chunk };
          chunk = new Uint8Array(blocksPerChunk * blockBytes);
          filled = 0;
        }
      }
      block += 1;
    }
  }
  if (filled > 0) yield { dtype: tensor.dtype, bytes: chunk.slice(0, filled * blockBytes) };
}
