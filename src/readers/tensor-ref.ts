/**
 * Lazy tensors: a name, dtype, shape and where its bytes live. Nothing is read until read() or rows() is
 * called, and rows() streams whole rows in chunks so that no stage needs a whole tensor (let alone a whole
 * model) in memory. (gguf-py's `LazyTensor` thunks; tinygrad's disk tensors.)
 */
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { SyncFileReader, withFile } from '../io/file.js';
import { acquireScratch, releaseScratch } from '../io/scratch.js';
import { DTYPES, type DType, elementCount } from '../tensor/dtype.js';

export interface TensorRef {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** Bytes of the tensor as stored (elements × dtype bytes). */
  readonly byteLength: number;
  /** The file that holds the bytes. */
  readonly file: string;
  /** The whole tensor's bytes, row-major, as stored (little-endian). */
  read(): Promise<Uint8Array>;
  /**
   * The tensor's rows in chunks of `rowsPerChunk` rows (the last chunk may be shorter). A row is
   * everything under the first dimension; a tensor of rank 0 or 1 is a single row.
   */
  rows(rowsPerChunk: number, options?: RowsOptions): AsyncIterable<Uint8Array>;
}

export interface RowsOptions {
  /**
   * Yield every chunk in one reused buffer: a chunk is valid only until the next one is asked for, so the
   * consumer must copy what it keeps. Fresh memory costs page faults; reusing one cache-warm buffer roughly
   * doubles streaming throughput (BENCHMARKS.md). Default false: each chunk is its own buffer.
   */
  readonly reuseBuffer?: boolean;
  /**
   * Where each chunk's buffer comes from when buffers are not reused: the quantizer pool's shared-memory
   * slots (QuantPool.buffer), so that streaming a model does not allocate — and garbage-collect — one
   * buffer per chunk. Must return exactly `bytes` bytes.
   */
  readonly allocate?: ((bytes: number) => Uint8Array) | undefined;
}

/** Number of rows and bytes per row, as rows() sees the tensor. */
export function rowLayout(dtype: DType, shape: readonly number[]): { rows: number; rowBytes: number } {
  if (shape.length <= 1) return { rows: 1, rowBytes: elementCount(shape) * DTYPES[dtype].bytes };
  return { rows: shape[0] ?? 0, rowBytes: elementCount(shape.slice(1)) * DTYPES[dtype].bytes };
}

export function checkRowsPerChunk(name: string, rowsPerChunk: number): void {
  if (!Number.isSafeInteger(rowsPerChunk) || rowsPerChunk < 1) {
    throw new PolyquantError(ERROR_CODES.USAGE, `rowsPerChunk must be a positive integer, got ${rowsPerChunk}`, {
      tensor: name,
    });
  }
}

/** A tensor whose bytes are one contiguous range of a file (safetensors; a contiguous torch storage view). */
export class FileRangeTensor implements TensorRef {
  readonly byteLength: number;

  constructor(
    readonly name: string,
    readonly dtype: DType,
    readonly shape: readonly number[],
    readonly file: string,
    /** Absolute offset of the first byte in `file`. */
    readonly offset: number,
  ) {
    this.byteLength = elementCount(shape) * DTYPES[dtype].bytes;
  }

  read(): Promise<Uint8Array> {
    return withFile(this.file, (file) => file.read(this.offset, this.byteLength));
  }

  async *rows(rowsPerChunk: number, options: RowsOptions = {}): AsyncIterable<Uint8Array> {
    checkRowsPerChunk(this.name, rowsPerChunk);
    const { rows, rowBytes } = rowLayout(this.dtype, this.shape);
    if (rows === 0 || rowBytes === 0) return;
    const file = SyncFileReader.open(this.file);
    const shared = options.reuseBuffer ? acquireScratch(Math.min(rowsPerChunk, rows) * rowBytes) : undefined;
    try {
      for (let row = 0; row < rows; row += rowsPerChunk) {
        const length = Math.min(rowsPerChunk, rows - row) * rowBytes;
        yield file.readInto(this.offset + row * rowBytes, length, shared ?? options.allocate?.(length) ?? Buffer.allocUnsafeSlow(length));
      }
    } finally {
      if (shared !== undefined) releaseScratch(shared);
      file.close();
    }
  }
}

/**
 * A tensor handed to a writer: its bytes come from `chunks()`, in order, in any chunk sizes; writers check
 * that the total equals elements × dtype bytes. Writers never hold more than one chunk.
 */
export interface TensorToWrite {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  chunks(): AsyncIterable<Uint8Array>;
}

/** Adapts a TensorRef (or an in-memory array) to the writer input. */
export function tensorToWrite(tensor: TensorRef, rowsPerChunk = 1024): TensorToWrite {
  // Writers write each chunk before asking for the next, so one reused buffer is safe here.
  return {
    name: tensor.name,
    dtype: tensor.dtype,
    shape: tensor.shape,
    chunks: () => tensor.rows(rowsPerChunk, { reuseBuffer: true }),
  };
}

/** Rows per chunk so that a chunk is about `targetBytes` (at least one row). */
export function rowsForChunkBytes(tensor: Pick<TensorRef, 'dtype' | 'shape'>, targetBytes: number): number {
  const { rowBytes } = rowLayout(tensor.dtype, tensor.shape);
  return Math.max(1, Math.floor(targetBytes / Math.max(1, rowBytes)));
}

export function bytesToWrite(name: string, dtype: DType, shape: readonly number[], bytes: Uint8Array): TensorToWrite {
  return {
    name,
    dtype,
    shape,
    async *chunks() {
      yield bytes;
    },
  };
}
