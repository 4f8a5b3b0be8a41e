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
import { type GptqFactor, type GptqFactorOptions, gptqFactor } from './gptq.js';
import { type FactorTask, type QuantTask, type QuantTaskFailure, quantizeChunk } from './pool-worker.js';

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
  /** GPTQ: quantize with error feedback through this factor (QuantPool.gptqFactor); rows stay independent. */
  readonly gptq?: GptqFactor | undefined;
}

/** Running from TypeScript sources (tests, tsx) the worker is the .ts file and needs tsx's loader. */
const HERE = import.meta.url;
const FROM_SOURCE = HERE.endsWith('.ts');
const WORKER_FILE = fileURLToPath(new URL(`./pool-worker.${FROM_SOURCE ? 'ts' : 'js'}`, HERE));

export class QuantPool {
  readonly workers: number;
  readonly maxInFlight: number;
  private readonly piscina: Piscina | undefined;
  /** Shared buffers lent by `buffer()`. */
  private readonly slots: Slot[] = [];

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

  /**
   * Quantizes one chunk of whole rows. The chunk's buffer is transferred to the worker (do not reuse it);
   * a chunk read into a slot (`buffer()`) is shared instead, and its bytes come back as a view of the
   * slot, valid until `release()` (quantizeStream releases each when the consumer asks for the next).
   */
  async quantize(job: QuantChunkJob, src: RowChunk): Promise<Uint8Array> {
    if (this.piscina === undefined) {
      return quantizeChunk(job.scheme, widenRows(src, job.tensor), job.nPerRow, job.importance, job.tensor, job.gptq);
    }
    const view = src instanceof Float32Array ? src : src.bytes;
    const slot = view.buffer instanceof SharedArrayBuffer ? this.slots.find((candidate) => candidate.memory === view.buffer) : undefined;
    const task: QuantTask = {
      scheme: job.scheme,
      src,
      nPerRow: job.nPerRow,
      importance: job.importance,
      tensor: job.tensor,
      ...(job.gptq !== undefined && { gptq: job.gptq }),
      ...(slot !== undefined && { out: { memory: slot.memory, offset: slot.inputBytes, bytes: slot.memory.byteLength - slot.inputBytes } }),
    };
    const transfer = slot === undefined && view.byteOffset === 0 && view.byteLength === view.buffer.byteLength ? [view.buffer as ArrayBuffer] : [];
    let result: unknown;
    try {
      result = await this.piscina.run(task, { transferList: transfer });
    } catch (error) {
      if (slot !== undefined) slot.busy = false;
      throw error;
    }
    if (result instanceof Uint8Array) return result;
    if (typeof result === 'number' && slot !== undefined) return new Uint8Array(slot.memory, slot.inputBytes, result);
    if (slot !== undefined) slot.busy = false;
    const { failure } = result as QuantTaskFailure;
    throw new PolyquantError(failure.code, failure.message, { file: failure.file, tensor: failure.tensor, hint: failure.hint });
  }

  /**
   * Quantizes a stream of row chunks, yielding each chunk's bytes in input order while keeping at most
   * `maxInFlight` chunks outstanding. The input iterator is only advanced when there is room. A yielded
   * chunk is valid until the consumer asks for the next (its slot, if it has one, is then lent again).
   */
  async *quantizeStream(job: QuantChunkJob, chunks: AsyncIterable<RowChunk> | Iterable<RowChunk>): AsyncIterable<Uint8Array> {
    const pending: Promise<Uint8Array>[] = [];
    const yieldNext = async function* (pool: QuantPool): AsyncIterable<Uint8Array> {
      const out = await (pending.shift() as Promise<Uint8Array>);
      try {
        yield out;
      } finally {
        pool.release(out);
      }
    };
    try {
      for await (const chunk of chunks) {
        const promise = this.quantize(job, chunk);
        // Attach a handler now so that a failure while we wait on an earlier chunk is not "unhandled".
        promise.catch(() => undefined);
        pending.push(promise);
        if (pending.length >= this.maxInFlight) yield* yieldNext(this);
      }
      while (pending.length > 0) yield* yieldNext(this);
    } finally {
      // On an early exit or error, let the outstanding tasks settle (and free their slots) before the caller moves on.
      for (const settled of await Promise.allSettled(pending)) if (settled.status === 'fulfilled') this.release(settled.value);
    }
  }

  /**
   * Factors a calibration Hessian for GPTQ (gptq.ts gptqFactor) on a pool thread — so a converter can
   * factor the next tensor's Hessian while the threads quantize this one's rows — or inline without threads.
   * The Hessian is copied to the thread; the factor's feedback matrix comes back shared.
   */
  async gptqFactor(hessian: Float64Array, columns: number, options: GptqFactorOptions = {}): Promise<GptqFactor> {
    if (this.piscina === undefined) return gptqFactor(hessian, columns, options);
    const task: FactorTask = { hessian, columns, dampening: options.dampening, tensor: options.tensor };
    const result = (await this.piscina.run(task, { name: 'factorTask' })) as GptqFactor | QuantTaskFailure;
    if ('failure' in result) {
      const { failure } = result;
      throw new PolyquantError(failure.code, failure.message, { file: failure.file, tensor: failure.tensor, hint: failure.hint });
    }
    return result;
  }

  /**
   * A buffer of `bytes` bytes to read a chunk into that this pool will quantize (RowsOptions `allocate`):
   * a view of a free slot — shared memory the threads read and write their output into, so nothing is
   * transferred or allocated per chunk, and the collector has nothing to do — or, when every slot is busy,
   * an ordinary buffer (transferred as before). maxInFlight + 2 slots: the chunks in flight, the one the
   * consumer holds and the one being read.
   */
  buffer(bytes: number): Uint8Array {
    if (this.piscina === undefined) return new Uint8Array(bytes);
    let slot = this.slots.find((candidate) => !candidate.busy && candidate.inputBytes >= bytes);
    if (slot === undefined) {
      const free = this.slots.findIndex((candidate) => !candidate.busy);
      if (free < 0 && this.slots.length >= this.maxInFlight + 2) return new Uint8Array(bytes);
      // Input, then room for the output: at most 2 bytes per input byte (f16 rows to F32).
      const inputBytes = Math.max(bytes, MIN_SLOT_BYTES);
      slot = { memory: new SharedArrayBuffer(inputBytes * 3), inputBytes, busy: false };
      if (free >= 0) this.slots[free] = slot;
      else this.slots.push(slot);
    }
    slot.busy = true;
    return new Uint8Array(slot.memory, 0, bytes);
  }

  /** Lends the slot of a chunk's bytes out again (no-op for an ordinary buffer). */
  release(bytes: Uint8Array): void {
    if (!(bytes.buffer instanceof SharedArrayBuffer)) return;
    const slot = this.slots.find((candidate) => candidate.memory === bytes.buffer);
    if (slot !== undefined) slot.busy = false;
  }

  async close(): Promise<void> {
    await this.piscina?.destroy();
  }
}

/** A shared buffer: a chunk's rows at 0, its quantized bytes at `inputBytes`. */
interface Slot {
  readonly memory: SharedArrayBuffer;
  readonly inputBytes: number;
  busy: boolean;
}

/** Slots hold at least this many input bytes (2 MiB: a 1 M-element f16 chunk). */
const MIN_SLOT_BYTES = 1 << 21;
