/**
 * The llamacpp engine's fast path: our own small addon (native/llama-scorer.cc, built on install by
 * scripts/build-native.mjs) over the libllama node-llama-cpp has loaded. llama_decode and, per scored
 * position, the log-softmax, the target's log-probability, the argmax and (when asked) the full
 * log-probability row run on a worker thread and land in typed arrays; no vocabulary-sized JS array is
 * ever built, so the engine runs at llama.cpp's own speed (BENCHMARKS.md).
 *
 * Batching: one llama.cpp context with a unified KV cache and up to `sequences` sequences. Requests are
 * queued; each decode takes as many queued requests as fit in one batch (`contextLength` tokens, one
 * sequence each, a KOBEST document one sequence per continuation: its context is decoded once, tagged
 * with every continuation's sequence, and the continuations beside it in the same batch). A perplexity
 * window is decoded alone, so its numbers never depend on what else is queued. KOBEST documents do: a
 * document's log-likelihoods move by ~1e-5 per token with its batch neighbours (the matrix kernels'
 * blocking depends on the batch size, the KV cells' order on the packing), as with any batched evaluator;
 * the same run gives the same batches. Nothing
 * survives a decode in the KV cache: it is cleared before each batch. A document too long to share one
 * batch runs alone, context first, then each continuation on top of it, as the other paths do.
 *
 * Decodes of every native context in the process are serialised: two llama.cpp thread pools on the same
 * cores make each op barrier wait on a descheduled thread (the 25× slowdown in llamacpp.ts's notes).
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ERROR_CODES, PolyquantError } from '../../errors.js';

/** An opaque handle the addon hands out (a napi external). */
type Handle = { readonly __brand: 'polyquant-llama-handle' };

export interface NativeModelInfo {
  readonly vocab: number;
  readonly ctxTrain: number;
  readonly layers: number;
  readonly params: number;
  readonly gpuLayers: number;
  /** llama.cpp's registered devices, as `name: description`. */
  readonly devices: readonly string[];
}

/** A device llama.cpp registered. */
export interface NativeDevice {
  readonly name: string;
  readonly description: string;
  readonly type: 'cpu' | 'gpu' | 'igpu' | 'accel' | 'other';
}

/** The addon's functions (native/llama-scorer.cc); every argument is checked here before it is called. */
export interface NativeAddon {
  devices(): NativeDevice[];
  /** Only messages at this ggml log level or above reach stderr (ggml.h: 2 info, 3 warn, 4 error). */
  quietLogs(level: number): void;
  /** Zeroed memory for `floats` row values on transparent huge pages (fewer first-touch faults). */
  allocateRows(floats: number): Float32Array;
  loadModel(path: string, gpuLayers: number, cpuOnly: boolean): Promise<Handle>;
  freeModel(model: Handle): void;
  modelInfo(model: Handle): NativeModelInfo;
  tokenize(model: Handle, text: string, parseSpecial: boolean): Int32Array;
  /** `imatrix` 1 or 2: collect an importance matrix as llama-imatrix does (2: output.weight too), read with imatrixEntries. */
  createContext(model: Handle, nCtx: number, nBatch: number, nSeqMax: number, threads: number, cpuOnly: boolean, flashAttention: boolean, imatrix?: 0 | 1 | 2): Handle;
  /** The importance matrix collected so far (sums in double), and the first tensor whose sums are not finite. */
  imatrixEntries(context: Handle): { entries: { name: string; sums: Float64Array; count: number }[]; nonFinite: string | null };
  freeContext(context: Handle): void;
  contextInfo(context: Handle): { nCtx: number; nBatch: number; nSeqMax: number; threads: number };
  seqRemove(context: Handle, seq: number, p0: number, p1: number): boolean;
  memoryClear(context: Handle): void;
  decode(
    context: Handle,
    tokens: Int32Array,
    positions: Int32Array,
    seqMasks: Uint32Array,
    logits: Uint8Array,
    outIndex: Int32Array,
    outTarget: Int32Array,
    outLogProb: Float64Array,
    outArgmax: Int32Array,
    outFullRow: Int32Array,
    full: Float32Array | null,
  ): Promise<void>;
  klDivergence(base: Float32Array, candidate: Float32Array, vocab: number, rows: number, out: Float64Array, threads: number): Promise<void>;
}

/** Where the build script puts the addon (src/… and dist/… sit at the same depth below the package root). */
export const NATIVE_ADDON_PATH = fileURLToPath(new URL('../../../native/build/polyquant-llama.node', import.meta.url));

/**
 * Which llama.cpp the addon was linked to (native/build/build-info.json, written by the build script):
 * node-llama-cpp's prebuilt libraries, which node-llama-cpp must load first, or llama.cpp built from
 * source for this machine, which is found through the addon's RUNPATH and must be the only one loaded.
 */
export type NativeLlamaBuild = 'node-llama-cpp' | 'source';

export function nativeAddonBuild(path = process.env['POLYQUANT_NATIVE_ADDON'] ?? NATIVE_ADDON_PATH): NativeLlamaBuild | undefined {
  if (!existsSync(path)) return undefined;
  try {
    const info: unknown = JSON.parse(readFileSync(join(dirname(path), 'build-info.json'), 'utf8'));
    return typeof info === 'object' && info !== null && (info as { llama?: unknown }).llama === 'source' ? 'source' : 'node-llama-cpp';
  } catch {
    return 'node-llama-cpp';
  }
}

let addonState: { addon: NativeAddon } | { reason: string } | undefined;
/** ggml.h's GGML_LOG_LEVEL_ERROR. */
const GGML_LOG_LEVEL_ERROR = 4;

/**
 * The addon, or why it is not available (not built, or it failed to load). Linked to node-llama-cpp's
 * prebuilt (nativeAddonBuild), it must be loaded after node-llama-cpp's getLlama(): its libllama
 * dependency resolves to the library node-llama-cpp loaded.
 */
export function loadNativeAddon(): { addon: NativeAddon } | { reason: string } {
  if (addonState !== undefined) return addonState;
  const path = process.env['POLYQUANT_NATIVE_ADDON'] ?? NATIVE_ADDON_PATH;
  if (!existsSync(path)) {
    addonState = { reason: `the native addon is not built (${path}; run node scripts/build-native.mjs)` };
    return addonState;
  }
  try {
    const addon = createRequire(import.meta.url)(path) as NativeAddon;
    addonState = typeof addon.decode === 'function' ? { addon } : { reason: `${path} is not polyquant's addon` };
    // A llama.cpp built for the addon logs everything unless told; node-llama-cpp's prebuilt is quieted by node-llama-cpp.
    if ('addon' in addonState && nativeAddonBuild(path) === 'source') addon.quietLogs(GGML_LOG_LEVEL_ERROR);
  } catch (error) {
    addonState = { reason: `the native addon failed to load: ${error instanceof Error ? error.message : String(error)}` };
  }
  return addonState;
}

/**
 * KL(base ‖ candidate) for `rows` rows of `vocab` log-probabilities — klDivergenceRow's formula and
 * summation order, in C++ on `threads` threads — when the addon is loaded in this process (a native engine
 * exists), else undefined. It waits its turn in the decode queue: run beside a decode it would stall
 * llama.cpp's thread pool.
 */
export function nativeKlDivergence(base: Float32Array, candidate: Float32Array, vocab: number, rows: number, threads: number): Promise<Float64Array> | undefined {
  if (addonState === undefined || !('addon' in addonState)) return undefined;
  const { addon } = addonState;
  const out = new Float64Array(rows);
  return serialised(() => addon.klDivergence(base, candidate, vocab, rows, out, threads)).then(() => out);
}

/** One queue for every native context in the process (see the header). */
let decodeChain: Promise<unknown> = Promise.resolve();
function serialised<T>(work: () => Promise<T>): Promise<T> {
  const result = decodeChain.then(work);
  decodeChain = result.catch(() => undefined);
  return result;
}

/** What one request puts into a batch, and how it reads its results back. */
interface Unit {
  /** Tokens it adds to the batch. */
  readonly tokens: number;
  /** Sequences it needs. */
  readonly sequences: number;
  /** Decoded alone (its full rows go to its own array, or it needs several decodes). */
  readonly alone: boolean;
  readonly fill?: (batch: BatchBuilder, firstSequence: number) => (read: OutputReader) => void;
  readonly run?: (scorer: NativeScorer) => Promise<void>;
  readonly reject: (error: unknown) => void;
}

/** Outputs of a decode, by the output slot a unit was given. */
interface OutputReader {
  logProb(slot: number): number;
  argmax(slot: number): number;
}

/** The typed arrays of one llama_batch and its requested outputs, filled by units. */
class BatchBuilder implements OutputReader {
  readonly tokens: Int32Array;
  readonly positions: Int32Array;
  readonly masks: Uint32Array;
  readonly logits: Uint8Array;
  outIndex: Int32Array;
  outTarget: Int32Array;
  outFullRow: Int32Array;
  outLogProb: Float64Array;
  outArgmax: Int32Array;
  full: Float32Array | null = null;
  size = 0;
  outputs = 0;

  constructor(readonly capacity: number) {
    this.tokens = new Int32Array(capacity);
    this.positions = new Int32Array(capacity);
    this.masks = new Uint32Array(capacity);
    this.logits = new Uint8Array(capacity);
    const outputs = capacity + 32;
    this.outIndex = new Int32Array(outputs);
    this.outTarget = new Int32Array(outputs);
    this.outFullRow = new Int32Array(outputs);
    this.outLogProb = new Float64Array(outputs);
    this.outArgmax = new Int32Array(outputs);
  }

  reset(): void {
    this.size = 0;
    this.outputs = 0;
    this.full = null;
  }

  /** Adds a token; returns its index in the batch. */
  add(token: number, position: number, sequenceMask: number, keepLogits: boolean): number {
    const index = this.size;
    this.tokens[index] = token;
    this.positions[index] = position;
    this.masks[index] = sequenceMask >>> 0;
    this.logits[index] = keepLogits ? 1 : 0;
    this.size += 1;
    return index;
  }

  /** Asks for the statistics of token `index`'s next-token distribution; returns the output slot. */
  output(index: number, target: number, fullRow = -1): number {
    if (this.outputs === this.outIndex.length) this.grow();
    const slot = this.outputs;
    this.outIndex[slot] = index;
    this.outTarget[slot] = target;
    this.outFullRow[slot] = fullRow;
    this.outputs += 1;
    return slot;
  }

  logProb(slot: number): number {
    return this.outLogProb[slot] as number;
  }

  argmax(slot: number): number {
    return this.outArgmax[slot] as number;
  }

  private grow(): void {
    const size = this.outIndex.length * 2;
    const grown = <T extends Int32Array | Float64Array>(array: T, make: (n: number) => T): T => {
      const next = make(size);
      next.set(array);
      return next;
    };
    this.outIndex = grown(this.outIndex, (n) => new Int32Array(n));
    this.outTarget = grown(this.outTarget, (n) => new Int32Array(n));
    this.outFullRow = grown(this.outFullRow, (n) => new Int32Array(n));
    this.outLogProb = new Float64Array(size);
    this.outArgmax = new Int32Array(size);
  }
}

export interface NativeScorerOptions {
  readonly contextLength: number;
  readonly threads: number;
  /** Sequences per batch (KOBEST documents decoded together); 1 … 32. */
  readonly sequences: number;
  /** The GPU backend to put every layer on (its name, for the report), or undefined for the CPU alone. */
  readonly gpu: string | undefined;
  /** llama.cpp's flash attention where the backend has it (its tools' default, `auto`), or never. */
  readonly flashAttention: boolean;
}

/**
 * A GGUF loaded by the addon, with one context and its request queue: the llamacpp engine's `native`
 * backend (llamacpp.ts `Backend`).
 */
export class NativeScorer {
  readonly kind = 'native';
  readonly vocabSize: number;
  readonly sequences: number;
  private readonly batch: BatchBuilder;
  private readonly queue: Unit[] = [];
  private pumping = false;
  private closed = false;

  private constructor(
    private readonly addon: NativeAddon,
    private readonly model: Handle,
    private readonly context: Handle,
    contextLength: number,
    readonly gpu: string | undefined,
  ) {
    this.vocabSize = addon.modelInfo(model).vocab;
    this.sequences = addon.contextInfo(context).nSeqMax;
    this.batch = new BatchBuilder(contextLength);
  }

  static async open(addon: NativeAddon, file: string, options: NativeScorerOptions): Promise<NativeScorer> {
    let model: Handle;
    try {
      model = await addon.loadModel(file, -1, options.gpu === undefined);
    } catch (error) {
      throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `llama.cpp could not load the model: ${error instanceof Error ? error.message : String(error)}`, { file, cause: error });
    }
    let context: Handle;
    try {
      context = addon.createContext(model, options.contextLength, options.contextLength, options.sequences, options.threads, options.gpu === undefined, options.flashAttention);
    } catch (error) {
      addon.freeModel(model);
      throw new PolyquantError(ERROR_CODES.LIMIT, `llama.cpp could not create a context of ${options.contextLength} tokens: ${error instanceof Error ? error.message : String(error)}`, {
        file,
        hint: 'use a smaller context length (--ctx) or free memory',
        cause: error,
      });
    }
    const info = addon.contextInfo(context);
    if (info.nCtx < options.contextLength || info.nBatch < options.contextLength) {
      addon.freeContext(context);
      addon.freeModel(model);
      throw new PolyquantError(ERROR_CODES.LIMIT, `llama.cpp gave a context of ${info.nCtx} tokens (batch ${info.nBatch}) for the ${options.contextLength} asked for`, { file });
    }
    return new NativeScorer(addon, model, context, options.contextLength, options.gpu);
  }

  /** Requests worth having in flight: one per sequence a batch holds. */
  get parallelism(): number {
    return this.sequences;
  }

  /** A zeroed buffer for `floats` row values (huge pages where the kernel allows). */
  allocateRows(floats: number): Float32Array {
    return this.addon.allocateRows(floats);
  }

  tokenize(text: string): Int32Array {
    // parse_special: `<|endoftext|>` etc. become their ids, as tokenizer.json's added tokens do; no BOS/EOS.
    return this.addon.tokenize(this.model, text, true);
  }

  /**
   * Scores a window: inputs tokens[0 … n − 2], the distribution after input i predicting tokens[i + 1],
   * for i ≥ from − 1. Writes each target's log-probability and each argmax, and the full rows into `full`.
   */
  scoreWindow(tokens: Int32Array, from: number, tokenLogProbs: Float64Array, argmax: Int32Array, full: Float32Array | undefined): Promise<void> {
    const inputs = tokens.length - 1;
    return this.submit<void>((resolve, reject) => ({
      tokens: inputs,
      sequences: 1,
      // Alone, so a window's numbers never depend on what else was queued (matrix kernels differ in the
      // last bits with the batch size); a window fills most of a batch anyway.
      alone: true,
      reject,
      fill: (batch, sequence) => {
        const mask = 1 << sequence;
        if (full !== undefined) batch.full = full;
        const first = batch.outputs;
        for (let i = 0; i < inputs; i += 1) {
          const wanted = i >= from - 1;
          const index = batch.add(tokens[i] as number, i, mask, wanted);
          if (wanted) batch.output(index, tokens[i + 1] as number, full === undefined ? -1 : i - (from - 1));
        }
        return (read) => {
          for (let s = 0; s < tokenLogProbs.length; s += 1) {
            tokenLogProbs[s] = read.logProb(first + s);
            argmax[s] = read.argmax(first + s);
          }
          resolve();
        };
      },
    }));
  }

  /** Summed log-likelihood of each continuation after `context` (lengths already checked by the engine). */
  scoreContinuations(context: Int32Array, continuations: readonly Int32Array[]): Promise<number[]> {
    const live = continuations.map((continuation, index) => ({ continuation, index })).filter(({ continuation }) => continuation.length > 0);
    const tokens = context.length + live.reduce((sum, { continuation }) => sum + continuation.length - 1, 0);
    if (live.length === 0) return Promise.resolve(continuations.map(() => 0));
    if (live.length <= this.sequences && tokens <= this.batch.capacity) {
      return this.submit<number[]>((resolve, reject) => ({
        tokens,
        sequences: live.length,
        alone: false,
        reject,
        fill: (batch, firstSequence) => {
          let contextMask = 0;
          live.forEach((_, k) => {
            contextMask |= 1 << (firstSequence + k);
          });
          let last = -1;
          for (let i = 0; i < context.length; i += 1) last = batch.add(context[i] as number, i, contextMask, i === context.length - 1);
          // Slots per continuation: its first token (predicted after the context), then one per later token.
          const slots = live.map(({ continuation }, k) => {
            const own: number[] = [batch.output(last, continuation[0] as number)];
            for (let j = 0; j < continuation.length - 1; j += 1) {
              const index = batch.add(continuation[j] as number, context.length + j, 1 << (firstSequence + k), true);
              own.push(batch.output(index, continuation[j + 1] as number));
            }
            return own;
          });
          return (read) => {
            const sums = continuations.map(() => 0);
            live.forEach(({ index }, k) => {
              let sum = 0;
              for (const slot of slots[k] as number[]) sum += read.logProb(slot);
              sums[index] = sum;
            });
            resolve(sums);
          };
        },
      }));
    }
    // Too long to share one batch: the context, then each continuation on top of it, one decode each.
    return this.submit<number[]>((resolve, reject) => ({
      tokens: this.batch.capacity,
      sequences: 1,
      alone: true,
      reject,
      run: async (scorer) => resolve(await scorer.continuationsOneByOne(context, continuations)),
    }));
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    while (this.pumping || this.queue.length > 0) await new Promise((resolve) => setImmediate(resolve));
    this.addon.freeContext(this.context);
    this.addon.freeModel(this.model);
  }

  private submit<T>(make: (resolve: (value: T) => void, reject: (error: unknown) => void) => Unit): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push(make(resolve, reject));
      this.pump();
    });
  }

  /** Starts a decode of what is queued, unless one is running; the next starts when it ends. */
  private pump(): void {
    if (this.pumping || this.queue.length === 0) return;
    this.pumping = true;
    // setImmediate, not a microtask: requests that callers issue as earlier ones resolve join this batch.
    setImmediate(() => {
      serialised(() => this.decodeQueued())
        .catch(() => undefined)
        .finally(() => {
          this.pumping = false;
          this.pump();
        });
    });
  }

  private async decodeQueued(): Promise<void> {
    const first = this.queue.shift();
    if (first === undefined) return;
    if (first.run !== undefined) {
      try {
        await first.run(this);
      } catch (error) {
        first.reject(error);
      }
      return;
    }
    const units: Unit[] = [first];
    let tokens = first.tokens;
    let sequences = first.sequences;
    if (!first.alone) {
      for (let i = 0; i < this.queue.length; ) {
        const unit = this.queue[i] as Unit;
        if (!unit.alone && tokens + unit.tokens <= this.batch.capacity && sequences + unit.sequences <= this.sequences) {
          units.push(unit);
          tokens += unit.tokens;
          sequences += unit.sequences;
          this.queue.splice(i, 1);
        } else {
          i += 1;
        }
      }
    }
    const batch = this.batch;
    batch.reset();
    const readers: ((read: OutputReader) => void)[] = [];
    let sequence = 0;
    for (const unit of units) {
      readers.push((unit.fill as NonNullable<Unit['fill']>)(batch, sequence));
      sequence += unit.sequences;
    }
    try {
      await this.decodeBatch();
    } catch (error) {
      for (const unit of units) unit.reject(error);
      return;
    }
    for (const read of readers) read(batch);
  }

  /** Decodes the batch (after clearing the KV cache, unless `clear` is false) and its outputs' statistics. */
  private async decodeBatch(clear = true): Promise<void> {
    const batch = this.batch;
    if (clear) this.addon.memoryClear(this.context);
    try {
      await this.addon.decode(
        this.context,
        batch.tokens.subarray(0, batch.size),
        batch.positions.subarray(0, batch.size),
        batch.masks.subarray(0, batch.size),
        batch.logits.subarray(0, batch.size),
        batch.outIndex.subarray(0, batch.outputs),
        batch.outTarget.subarray(0, batch.outputs),
        batch.outLogProb.subarray(0, batch.outputs),
        batch.outArgmax.subarray(0, batch.outputs),
        batch.outFullRow.subarray(0, batch.outputs),
        batch.full,
      );
    } catch (error) {
      throw new PolyquantError(ERROR_CODES.IO, `llama.cpp failed to decode ${batch.size} tokens: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
    }
  }

  /** The long-document path: context once, then each continuation decoded on top of it and removed again. */
  private async continuationsOneByOne(context: Int32Array, continuations: readonly Int32Array[]): Promise<number[]> {
    const batch = this.batch;
    batch.reset();
    let last = -1;
    for (let i = 0; i < context.length; i += 1) last = batch.add(context[i] as number, i, 1, i === context.length - 1);
    const firstTokens = continuations.map((continuation) => (continuation.length > 0 ? batch.output(last, continuation[0] as number) : -1));
    await this.decodeBatch();
    const sums = firstTokens.map((slot) => (slot < 0 ? 0 : batch.logProb(slot)));
    for (const [k, continuation] of continuations.entries()) {
      if (continuation.length < 2) continue;
      // The context's cells stay; only this continuation's are decoded and then removed.
      batch.reset();
      for (let j = 0; j < continuation.length - 1; j += 1) {
        const index = batch.add(continuation[j] as number, context.length + j, 1, true);
        batch.output(index, continuation[j + 1] as number);
      }
      await this.decodeBatch(false);
      for (let slot = 0; slot < batch.outputs; slot += 1) sums[k] = (sums[k] as number) + batch.logProb(slot);
      this.addon.seqRemove(this.context, 0, context.length, -1);
    }
    return sums;
  }
}
