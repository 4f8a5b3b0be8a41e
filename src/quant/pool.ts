/**
 * A worker pool that quantizes row chunks in parallel (worker_threads via piscina). Results come back in
 * input order, so the bytes are identical for any worker count; at most `maxInFlight` chunks are queued
 * or running, so memory is bounded by chunk size × maxInFlight — never by tensor or model size. With
 * `workers: 0` the work runs inline on the calling thread (same bytes, no threads), for debugging.
 */
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { type StoredRows, widenRows } from '../tensor/widen.js';
import type { GgmlTypeName } from './ggml-types.js';
import { type QuantTask, type QuantTaskFailure, quantizeChunk, type RecycledResult } from './pool-worker.js';

/**
 * A chunk of whole rows: float32, or as the checkpoint stores them (fp16/bf16/…), which the worker widens
 * on its own thread — half the bytes to move and no widening on the thread that reads and writes.
 */
export type RowChunk = Float32Array | StoredRows;

export interface QuantPoolOptions {
  /** Worker threads; 0 runs inline. Default: the machine's available parallelism. */
  readonly workers?: number;
  /** Chunks queued or running at once (back-pressure). Default: 2 per worker, so none idles between tasks. */
  readonly maxInFlight?: number;
}

export interface QuantChunkJob {
  /** A ggml type, an ONNX layout id (onnx-layouts.ts `isOnnxChunkLayout`: MatMulNBits, per-channel MatMulInteger) or a WebGPU one (webgpu-layouts.ts `webGpuChunkLayoutId`). */
  readonly scheme: GgmlTypeName | string;
  readonly nPerRow: number;
  readonly importance?: Float32Array | undefined;
  readonly tensor?: string | undefined;
}

/** Running from TypeScript sources (tests, tsx) the worker is the .ts file and needs tsx's loader. */
const HERE = import.meta.url;
const FROM_SOURCE = HERE.endsWith('.ts');
const WORKER_FILE = fileURLToPath(new URL(`./pool-worker.${FROM_SOURCE ? 'ts' : 'js'}`, HERE));

export class QuantPool {
  readonly workers: number;
  readonly maxInFlight: number;
  private readonly piscina: Piscina | undefined;
  /** Input buffers the threads handed back, for `buffer()`. */
  private readonly free: Uint8Array[] = [];

  constructor(options: QuantPoolOptions = {}) {
    const workers = options.workers ?? availableParallelism();
    if (!Number.isSafeInteger(workers) || workers < 0 || workers > 256) {
      throw new PolyquantError(ERROR_CODES.USAGE, `worker count ${workers} is not an integer from 0 to 256`);
    }
    this.workers = workers;
    this.maxInFlight = Math.max(1, options.maxInFlight ?? 2 * Math.max(1, workers));
    this.piscina =
      workers === 0
        ? undefined
        : new Piscina({
            filename: WORKER_FILE,
            minThreads: workers,
            maxThreads: workers,
            execArgv: FROM_SOURCE ? ['--import', 'tsx'] : [],
            // Each task is a whole chunk; more than one queued per thread only adds latency.
            concurrentTasksPerWorker: 1,
          });
  }

  /** Quantizes one chunk of whole rows. The chunk's buffer is transferred to the worker (do not reuse it). */
  async quantize(job: QuantChunkJob, src: RowChunk): Promise<Uint8Array> {
    if (this.piscina === undefined) {
      return quantizeChunk(job.scheme, widenRows(src, job.tensor), job.nPerRow, job.importance, job.tensor);
    }
    const task: QuantTask = {
      scheme: job.scheme,
      src,
      nPerRow: job.nPerRow,
      importance: job.importance,
      tensor: job.tensor,
    };
    const view = src instanceof Float32Array ? src : src.bytes;
    const transfer = view.byteOffset === 0 && view.byteLength === view.buffer.byteLength ? [view.buffer as ArrayBuffer] : [];
    const result: unknown = await this.piscina.run(task, { transferList: transfer });
    if (result instanceof Uint8Array) return result;
    if (isRecycledResult(result)) {
      this.recycle(result.input);
      return result.out;
    }
    const { failure } = result as QuantTaskFailure;
    throw new PolyquantError(failure.code, failure.message, { file: failure.file, tensor: failure.tensor, hint: failure.hint });
  }

  /**
   * Quantizes a stream of row chunks, yielding each chunk's bytes in input order while keeping at most
   * `maxInFlight` chunks outstanding. The input iterator is only advanced when there is room.
   */
  async *quantizeStream(job: QuantChunkJob, chunks: AsyncIterable<RowChunk> | Iterable<RowChunk>): AsyncIterable<Uint8Array> {
    const pending: Promise<Uint8Array>[] = [];
    try {
      for await (const chunk of chunks) {
        const promise = this.quantize(job, chunk);
        // Attach a handler now so that a failure while we wait on an earlier chunk is not "unhandled".
        promise.catch(() => undefined);
        pending.push(promise);
        if (pending.length >= this.maxInFlight) yield await (pending.shift() as Promise<Uint8Array>);
      }
      while (pending.length > 0) yield await (pending.shift() as Promise<Uint8Array>);
    } finally {
      // On an early exit or error, let the outstanding tasks settle before the caller moves on.
      await Promise.allSettled(pending);
    }
  }

  /**
   * A buffer of exactly `bytes` bytes for a chunk that will be quantized by this pool (RowsOptions
   * `allocate`): one the threads handed back when there is one, else a new one. Reading a model through
   * it allocates about maxInFlight buffers instead of one per chunk, and gives the collector nothing to do.
   */
  buffer(bytes: number): Uint8Array {
    const index = this.free.findIndex((buffer) => buffer.byteLength === bytes);
    if (index < 0) return new Uint8Array(new ArrayBuffer(bytes));
    return this.free.splice(index, 1)[0] as Uint8Array;
  }

  private recycle(buffer: Uint8Array): void {
    // Enough for every chunk in flight and the one being read; older sizes (another tensor's) go first.
    this.free.push(buffer);
    if (this.free.length > this.maxInFlight + 2) this.free.shift();
  }

  async close(): Promise<void> {
    await this.piscina?.destroy();
  }
}

function isRecycledResult(value: unknown): value is RecycledResult {
  return typeof value === 'object' && value !== null && (value as RecycledResult).out instanceof Uint8Array && (value as RecycledResult).input instanceof Uint8Array;
}
