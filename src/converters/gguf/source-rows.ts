/**
 * Checkpoint rows as float32 chunks for the GGUF converter: each chunk is whole rows, widened from the
 * stored dtype (fp16/bf16 exactly, as ggml_compute_fp16_to_fp32 / bf16 widen; src/tensor/float.ts) into a
 * fresh Float32Array, because the quantizer pool takes ownership of each chunk's buffer. The fused QKV
 * weight is reordered on the way (names.ts), reading head_dim-row blocks where they lie in the input.
 */
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import { SyncFileReader } from '../../io/file.js';
import { acquireScratch, releaseScratch } from '../../io/scratch.js';
import { FileRangeTensor, rowLayout, type TensorRef } from '../../readers/tensor-ref.js';
import { DTYPES, type DType } from '../../tensor/dtype.js';
import { bf16ToF32Array, f16ToF32Array } from '../../tensor/float.js';
import { type QkvLayout, qkvSourceBlock } from './names.js';

/** Widens raw little-endian `bytes` of `dtype` into `out` (at least bytes/size elements), returning that view. */
export function widenInto(bytes: Uint8Array, dtype: DType, out: Float32Array, tensor: string): Float32Array {
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
      // Rounds to nearest even, as numpy's astype(float32) does in the stock converter.
      const view = out.subarray(0, count);
      view.set(new Float64Array(aligned.buffer, aligned.byteOffset, count));
      return view;
    }
    default:
      throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `dtype ${dtype} cannot be converted to GGUF float weights`, { tensor });
  }
}

/** The whole tensor as float32 (for 1-D tensors: norms and biases). */
export async function readAsF32(tensor: TensorRef): Promise<Float32Array> {
  const bytes = await tensor.read();
  const out = new Float32Array(bytes.length / DTYPES[tensor.dtype].bytes);
  widenInto(bytes, tensor.dtype, out, tensor.name);
  return out;
}

/** Rows of `tensor` in order, `rowsPerChunk` at a time, each chunk a fresh Float32Array. */
export async function* floatRowChunks(tensor: TensorRef, rowsPerChunk: number): AsyncIterable<Float32Array> {
  const elementBytes = DTYPES[tensor.dtype].bytes;
  for await (const bytes of tensor.rows(rowsPerChunk, { reuseBuffer: true })) {
    yield widenInto(bytes, tensor.dtype, new Float32Array(bytes.length / elementBytes), tensor.name);
  }
}

/**
 * The fused QKV weight's rows in GGUF order ([q|k|v][head][dim]), `blocksPerChunk` head_dim-row blocks per
 * chunk. A contiguous tensor (safetensors, a contiguous .bin storage) is read block by block with
 * positioned reads: GGUF block j = part·n_head + head comes from HF block head·3 + part (names.ts), so
 * memory holds one chunk, never the tensor. Other tensors (strided .bin views) stream three times, once
 * per part, keeping the blocks of that part — still one chunk in memory, at three times the reads.
 */
export function qkvRowChunks(tensor: TensorRef, layout: QkvLayout, blocksPerChunk: number): AsyncIterable<Float32Array> {
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
    ? qkvChunksByPosition(tensor, layout, blockBytes, chunkBlocks)
    : qkvChunksByPass(tensor, layout, blockBytes, chunkBlocks);
}

async function* qkvChunksByPosition(
  tensor: FileRangeTensor,
  layout: QkvLayout,
  blockBytes: number,
  blocksPerChunk: number,
): AsyncIterable<Float32Array> {
  const blocks = 3 * layout.numHeads;
  const elementBytes = DTYPES[tensor.dtype].bytes;
  const file = SyncFileReader.open(tensor.file);
  const scratch = acquireScratch(blocksPerChunk * blockBytes);
  try {
    for (let first = 0; first < blocks; first += blocksPerChunk) {
      const count = Math.min(blocksPerChunk, blocks - first);
      for (let i = 0; i < count; i += 1) {
        const source = qkvSourceBlock(first + i, layout);
        file.readInto(tensor.offset + source * blockBytes, blockBytes, scratch.subarray(i * blockBytes));
      }
      const bytes = scratch.subarray(0, count * blockBytes);
      yield widenInto(bytes, tensor.dtype, new Float32Array(bytes.length / elementBytes), tensor.name);
    }
  } finally {
    releaseScratch(scratch);
    file.close();
  }
}

async function* qkvChunksByPass(tensor: TensorRef, layout: QkvLayout, blockBytes: number, blocksPerChunk: number): AsyncIterable<Float32Array> {
  const blockElements = blockBytes / DTYPES[tensor.dtype].bytes;
  const rowsPerBlock = layout.headDim;
  let chunk = new Float32Array(blocksPerChunk * blockElements);
  let filled = 0;
  for (let part = 0; part < 3; part += 1) {
    let block = 0;
    for await (const bytes of tensor.rows(rowsPerBlock, { reuseBuffer: true })) {
      // HF block index = head·3 + part: keep this pass's part, in head order.
      if (block % 3 === part) {
        widenInto(bytes, tensor.dtype, chunk.subarray(filled * blockElements), tensor.name);
        filled += 1;
        if (filled === blocksPerChunk) {
          yield chunk;
          chunk = new Float32Array(blocksPerChunk * blockElements);
          filled = 0;
        }
      }
      block += 1;
    }
  }
  if (filled > 0) yield chunk.subarray(0, filled * blockElements).slice();
}
