/**
 * The importance matrix of a model too large for the reference engine: the same chunks (imatrix.ts
 * cutChunks) run through llama.cpp on the model's f16 GGUF (converted once into the baseline cache, as
 * verify does for large baselines), collected by polyquant's native addon exactly as llama-imatrix's
 * collect_imatrix does (native/llama-scorer.cc ImatrixCollector: every `blk.*` mul_mat's input, Σ x² per
 * column, the rows counted; `output.weight` with processOutput). Every position of a chunk is an output,
 * as llama-imatrix asks for them: otherwise llama.cpp computes the last block for the output rows alone.
 *
 * So a 3.8b model's imatrix needs the f16 GGUF on disk (7.6 GB, memory-mapped) and a few values per
 * column, never the model in JavaScript memory. It runs on the CPU. What it computes is llama-imatrix's
 * matrix on the same GGUF, up to summation order (double here, float there); against the reference
 * engine's float32 HF model it differs as llama-imatrix does (f16 weights, llama.cpp's tanh GELU): ~1e-4.
 */
import { availableParallelism } from 'node:os';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import type { Checkpoint } from '../readers/checkpoint.js';
import { cachedBaselineGguf } from '../verify/baseline-cache.js';
import { nativeAddonOnCpu } from '../verify/engines/llamacpp.js';
import type { ImatrixEntry } from './imatrix.js';

export interface LlamaCppImatrixOptions {
  readonly ctx: number;
  readonly processOutput: boolean;
  /** llama.cpp threads (default: the machine's cores). */
  readonly threads?: number | undefined;
  /** The baseline cache folder the f16 GGUF is kept in (default ~/.cache/polyquant). */
  readonly cacheDir?: string | undefined;
  /** The f16 GGUF conversion's bytes done of all, when it is not cached yet. */
  readonly onConvert?: ((done: number, total: number) => void) | undefined;
  readonly onProgress?: ((done: number, total: number) => void) | undefined;
}

export interface LlamaCppImatrix {
  /** GGUF weight name → statistics, in name order. */
  readonly entries: Map<string, ImatrixEntry>;
  readonly threads: number;
  /** Seconds running chunks (the conversion and the model load excluded). */
  readonly seconds: number;
  /** The f16 GGUF llama.cpp ran. */
  readonly gguf: string;
}

export async function llamaCppImatrix(checkpoint: Checkpoint, windows: readonly Int32Array[], options: LlamaCppImatrixOptions): Promise<LlamaCppImatrix> {
  const native = await nativeAddonOnCpu();
  if (!('addon' in native)) {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `the model is too large for the reference engine, and llama.cpp cannot collect it here: ${native.reason}`, {
      file: checkpoint.dir,
      hint: 'build the native addon (node scripts/build-native.mjs), or run llama-imatrix on an f16 GGUF and pass its output to convert --imatrix',
    });
  }
  const { addon } = native;
  const gguf = await cachedBaselineGguf(checkpoint, {
    type: 'f16',
    ...(options.cacheDir !== undefined && { dir: options.cacheDir }),
    ...(options.threads !== undefined && { workers: options.threads }),
    onProgress: (event) => {
      if (event.stage === 'convert') options.onConvert?.(event.done, event.total);
    },
  });
  const threads = options.threads ?? availableParallelism();
  let model: Awaited<ReturnType<typeof addon.loadModel>>;
  try {
    model = await addon.loadModel(gguf.file, 0, true);
  } catch (error) {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `llama.cpp could not load the model: ${error instanceof Error ? error.message : String(error)}`, { file: gguf.file, cause: error });
  }
  try {
    let context: ReturnType<typeof addon.createContext>;
    try {
      // One sequence, one physical batch per chunk (llama-imatrix's -c ctx -b ctx), flash attention where the CPU backend has it (llama-imatrix's default).
      context = addon.createContext(model, options.ctx, options.ctx, 1, threads, true, true, options.processOutput ? 2 : 1);
    } catch (error) {
      throw new PolyquantError(ERROR_CODES.LIMIT, `llama.cpp could not create a context of ${options.ctx} tokens: ${error instanceof Error ? error.message : String(error)}`, {
        file: gguf.file,
        hint: 'use a smaller --ctx or free memory',
        cause: error,
      });
    }
    try {
      const started = performance.now();
      const entries = await runChunks(addon, context, checkpoint, windows, options);
      return { entries, threads, seconds: (performance.now() - started) / 1000, gguf: gguf.file };
    } finally {
      addon.freeContext(context);
    }
  } finally {
    addon.freeModel(model);
  }
}

type Addon = Extract<Awaited<ReturnType<typeof nativeAddonOnCpu>>, { addon: unknown }>['addon'];

/** Each chunk decoded from position 0 on an empty cache, every position an output; the sums read at the end. */
async function runChunks(
  native: Addon,
  context: ReturnType<Addon['createContext']>,
  source: Checkpoint,
  chunks: readonly Int32Array[],
  settings: LlamaCppImatrixOptions,
): Promise<Map<string, ImatrixEntry>> {
  const n = settings.ctx;
    const positions = Int32Array.from({ length: n }, (_, i) => i);
    const masks = new Uint32Array(n).fill(1);
    const logits = new Uint8Array(n).fill(1);
    const none = new Int32Array(0);
    settings.onProgress?.(0, chunks.length);
    for (const [index, tokens] of chunks.entries()) {
      native.memoryClear(context);
      await native.decode(context, tokens, positions, masks, logits, none, none, new Float64Array(0), none, none, null);
      const { nonFinite } = native.imatrixEntries(context);
      if (nonFinite !== null) {
        throw new PolyquantError(ERROR_CODES.CHECK_FAILED, `non-finite activations in chunk ${index + 1}`, {
          file: source.dir,
          tensor: nonFinite,
          hint: 'the model overflows float32 on this text (llama-imatrix stops the same way)',
        });
      }
      settings.onProgress?.(index + 1, chunks.length);
    }
    const entries = new Map<string, ImatrixEntry>();
    const found = native.imatrixEntries(context).entries;
    found.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const { name, sums, count } of found) entries.set(name, { sums: Float32Array.from(sums), count });
    return entries;
}
