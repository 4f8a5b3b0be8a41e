/**
 * Lazy tensors: a name, dtype, shape and where its bytes live. Nothing is read until read() or rows() is
 * called, and rows() streams whole rows in chunks so that no stage needs a whole tensor (let alone a whole
 * model) in memory. (gguf-py's `LazyTensor` thunks; tinygrad's disk tensors.)
 */
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { ReadableFile, withFile } from '../io/file.js';
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
  rows(rowsPerChunk: number): AsyncIterable<Uint8Array>;
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

  async *rows(rowsPerChunk: number): AsyncIterable<Uint8Array> {
    checkRowsPerChunk(this.name, rowsPerChunk);
    const { rows, rowBytes } = rowLayout(this.dtype, this.shape);
    if (rows === 0 || rowBytes === 0) return;
    const file = await ReadableFile.open(this.file);
    try {
      for (let row = 0; row < rows; row += rowsPerChunk) {
        const count = Math.min(rowsPerChunk, rows - row);
        yield await file.read(this.offset + row * rowBytes, count * rowBytes);
      }
    } finally {
      await file.close();
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
  return { name: tensor.name, dtype: tensor.dtype, shape: tensor.shape, chunks: () => tensor.rows(rowsPerChunk) };
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
