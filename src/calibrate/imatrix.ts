/**
 * Importance matrices from calibration text (`polyquant imatrix`, `convert --calibrate`), defined as
 * llama.cpp's llama-imatrix defines them (tools/imatrix/imatrix.cpp, the version node-llama-cpp bundles):
 *
 * - Which matrices: every weight that is the first operand of a mul_mat over the activations and whose
 *   name starts with `blk.` — for GPT-NeoX per block `attn_qkv`, `attn_output`, `ffn_up`, `ffn_down`
 *   (the fused QKV is one matmul, so one entry; its GGUF row reorder does not touch input columns). The
 *   output head (`output.weight`) only with `processOutput`, as `llama-imatrix --process-output`; the
 *   token embedding is a row lookup, never a mul_mat.
 * - What is summed: Σ x² per input column over every token position of every chunk (all positions, not
 *   llama-perplexity's second half), and the count of positions (`counts`); importance = sum / count.
 * - Chunks: the whole text file tokenized once (one trailing newline dropped, as `-f` reads it; a BOS in
 *   front only if the vocabulary adds one), cut into ⌊tokens / ctx⌋ chunks of ctx tokens, at most
 *   `chunks` of them; each runs from position 0 on an empty cache, its first token replaced by BOS when
 *   the vocabulary adds one. chunk_count = count / ctx, chunk_size = ctx.
 *
 * Where we differ, on purpose: several text files are tokenized each on its own, and each gives its
 * own chunks (llama-imatrix reads one file); a text of one chunk (ctx tokens) is enough (llama-imatrix
 * wants 2·ctx, for its perplexity printout, which we do not compute); every token counts (llama-imatrix
 * skips mul_mat calls of fewer than 16 rows, which only bites when a physical batch ends in a sliver);
 * and squares are summed in double per chunk, then over chunks in chunk order — not in float32 — so the
 * result is the same whatever the thread count.
 *
 * The engine is the reference engine (float32 GPT-NeoX equal to transformers), whose float32 weights must
 * fit one 4 GiB WebAssembly memory: about a billion parameters. Larger HF models (`engine` auto or
 * llamacpp) run in llama.cpp on their f16 GGUF, converted once into the baseline cache, with the native
 * addon collecting what llama-imatrix collects (imatrix-llamacpp.ts): the same chunks, the same sums to
 * llama.cpp's f16 rounding. Memory beyond the engine's is a few values per column: nothing grows with the
 * text.
 */
import { basename } from 'node:path';
import { ggufTensorName } from '../converters/gguf/names.js';
import { ggufTokenizerMetadata } from '../converters/gguf/tokenizer-metadata.js';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { type Checkpoint, parameterCount, readCheckpoint, type WeightsPreference } from '../readers/checkpoint.js';
import { createReferenceEngine, type ReferenceEngine, type ReferenceEngineOptions, referenceEngineFits } from '../verify/engines/reference.js';
import { readTextFile } from '../verify/text.js';
import { llamaCppImatrix } from './imatrix-llamacpp.js';
import { loadTokenizer } from '../readers/tokenizer.js';

/** llama-imatrix's default context (its main(): `params.n_ctx = 512`). */
export const IMATRIX_DEFAULT_CTX = 512;
/**
 * The shortest chunk accepted: llama-imatrix ignores mul_mat calls over fewer than 16 tokens ("why are
 * small batches ignored (<16 tokens)?" in collect_imatrix), so shorter chunks would mean nothing there.
 */
export const IMATRIX_MIN_CTX = 16;

export interface ImatrixOptions {
  /** Calibration text files (UTF-8). Recorded as `imatrix.datasets` as given. */
  readonly texts: readonly string[];
  /** Tokens per chunk (llama-imatrix `-c`); default 512, or max_position_embeddings when that is less. */
  readonly ctx?: number;
  /** At most this many chunks, in file order (llama-imatrix `--chunks`); default all. */
  readonly chunks?: number;
  /** Reference-engine worker threads, one chunk each at a time; default the engine's default. */
  readonly threads?: number;
  /** Also the output head's input (`output.weight`), as `llama-imatrix --process-output`. */
  readonly processOutput?: boolean;
  readonly weights?: WeightsPreference;
  /**
   * `reference` (float32 HF model, up to ~1 B parameters), `llamacpp` (the model's f16 GGUF in llama.cpp,
   * imatrix-llamacpp.ts: any size), or `auto` (default): the reference engine when the model fits it.
   */
  readonly engine?: ImatrixEngineName | undefined;
  /** llamacpp: the cache folder its f16 GGUF is kept in (verify's baseline cache; default ~/.cache/polyquant). */
  readonly cacheDir?: string | undefined;
  /** llamacpp: the f16 GGUF conversion's bytes done of all, when it is not cached yet. */
  readonly onConvert?: ((done: number, total: number) => void) | undefined;
  /** Chunks done of all chunks (0 of N once the texts are tokenized). */
  readonly onProgress?: (done: number, total: number) => void;
}

export const IMATRIX_ENGINE_NAMES = ['auto', 'reference', 'llamacpp'] as const;
export type ImatrixEngineName = (typeof IMATRIX_ENGINE_NAMES)[number];

/** One matrix's statistics as llama-imatrix stores them: Σ x² per column (float32) and the positions counted. */
export interface ImatrixEntry {
  readonly sums: Float32Array;
  readonly count: number;
}

export interface ImatrixText {
  readonly file: string;
  /** Tokens the file gave (with the BOS, when one is added). */
  readonly tokens: number;
  /** Chunks taken from it. */
  readonly chunks: number;
}

export interface ImatrixResult {
  /** GGUF weight name → statistics, in name order (as llama-imatrix sorts them). */
  readonly entries: ReadonlyMap<string, ImatrixEntry>;
  /** imatrix.datasets: the text files as given. */
  readonly datasets: readonly string[];
  readonly chunkCount: number;
  readonly chunkSize: number;
  readonly texts: readonly ImatrixText[];
  /** Positions run through the model (chunkCount × chunkSize). */
  readonly tokens: number;
  readonly engine: { readonly name: 'reference' | 'llamacpp'; readonly threads: number };
  /** Seconds spent running chunks (tokenizing and loading excluded): tokens / seconds is the throughput. */
  readonly seconds: number;
  /** Things the caller should report (a text too short to give a chunk). */
  readonly warnings: readonly string[];
}

/** Validates ctx and chunks before any work; USAGE errors name the flag as the CLI spells it. */
export function checkImatrixOptions(options: Pick<ImatrixOptions, 'ctx' | 'chunks' | 'texts'>, maxCtx: number): { ctx: number; chunks: number | undefined } {
  // A model trained on fewer positions than the default gets chunks of its own length.
  const ctx = options.ctx ?? Math.min(IMATRIX_DEFAULT_CTX, maxCtx);
  if (!Number.isSafeInteger(ctx) || ctx < IMATRIX_MIN_CTX || ctx > maxCtx) {
    throw new PolyquantError(ERROR_CODES.USAGE, `--ctx ${ctx} is out of range: expected an integer from ${IMATRIX_MIN_CTX} to ${maxCtx}`, {
      hint: `${maxCtx} is the model's max_position_embeddings; llama-imatrix ignores matmuls over fewer than ${IMATRIX_MIN_CTX} tokens`,
    });
  }
  const { chunks } = options;
  if (chunks !== undefined && (!Number.isSafeInteger(chunks) || chunks < 1)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `--chunks ${chunks} must be a positive integer`, { hint: 'leave it out to use every chunk of the text' });
  }
  if (options.texts.length === 0) {
    throw new PolyquantError(ERROR_CODES.USAGE, 'no calibration text: give --text FILE', { hint: 'e.g. --text train.txt' });
  }
  return { ctx, chunks };
}

/** The chunks of one tokenized text: ⌊tokens / ctx⌋ windows of ctx tokens from the start, the tail dropped. */
export function chunkStarts(tokenCount: number, ctx: number, limit: number): number[] {
  const count = Math.min(Math.floor(tokenCount / ctx), Math.max(0, limit));
  return Array.from({ length: count }, (_, index) => index * ctx);
}

/** Computes an importance matrix of an HF GPT-NeoX folder (or an opened checkpoint) over calibration text. */
export async function computeImatrix(source: string | Checkpoint, options: ImatrixOptions): Promise<ImatrixResult> {
  const engineName = options.engine ?? 'auto';
  if (!(IMATRIX_ENGINE_NAMES as readonly string[]).includes(engineName)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `--engine ${JSON.stringify(engineName)} is not one of ${IMATRIX_ENGINE_NAMES.join(', ')}`);
  }
  const { checkpoint, ctx, chunkLimit, bos, engineOptions, fits } = await prepareCalibration(source, options, {}, undefined, engineName === 'reference');
  // With tied embeddings llama.cpp's head is token_embd.weight, which llama-imatrix never collects.
  const processOutput = options.processOutput === true && !checkpoint.config.tieWordEmbeddings;
  // The texts are read, tokenized and cut before the weights load, so a bad or short text fails at once.
  const { windows, texts, warnings } = await cutChunks(checkpoint, options.texts, ctx, chunkLimit, bos);
  if (engineName === 'llamacpp' || (engineName === 'auto' && !fits)) {
    const result = await llamaCppImatrix(checkpoint, windows, {
      ctx,
      processOutput,
      threads: options.threads,
      cacheDir: options.cacheDir,
      onConvert: options.onConvert,
      onProgress: options.onProgress,
    });
    const count = windows.length * ctx;
    for (const [name, entry] of result.entries) {
      if (entry.count !== count) throw new Error(`llama.cpp counted ${entry.count} positions for ${name}, not ${count}`);
    }
    return { ...passOf(options, windows, { ctx, texts, warnings }), entries: result.entries, engine: { name: 'llamacpp', threads: result.threads }, seconds: result.seconds };
  }
  const engine = await createReferenceEngine(checkpoint, engineOptions);
  try {
    return await runChunks(engine, checkpoint, options, windows, { ctx, processOutput, texts, warnings });
  } finally {
    await engine.close();
  }
}

/** What a calibration pass settles before any work (prepareCalibration). */
export interface CalibrationSetup {
  readonly checkpoint: Checkpoint;
  readonly ctx: number;
  readonly chunkLimit: number | undefined;
  /** The BOS put in front of each text and at the start of each chunk, when the vocabulary adds one. */
  readonly bos: number | undefined;
  /** What the reference engine is to be created with. */
  readonly engineOptions: ReferenceEngineOptions & { readonly contextLength: number };
  /** Whether the reference engine can hold the model (false only with `requireFit` false). */
  readonly fits: boolean;
}

/**
 * The checks every calibration pass over the reference engine shares (imatrix here, the GPTQ Hessians of
 * hessian.ts): the checkpoint opened, ctx and chunks validated, the model refused when the reference
 * engine cannot hold it (with `engine`'s extras, and `tooLargeHint` instead of the llama-imatrix route;
 * not with `requireFit` false, for a caller that runs llama.cpp then), and the vocabulary's BOS rule.
 */
export async function prepareCalibration(
  source: string | Checkpoint,
  options: Pick<ImatrixOptions, 'texts' | 'ctx' | 'chunks' | 'threads' | 'weights'>,
  engine: Pick<ReferenceEngineOptions, 'inputProducts'> = {},
  tooLargeHint?: (ctx: number) => string,
  requireFit = true,
): Promise<CalibrationSetup> {
  const checkpoint = typeof source === 'string' ? await readCheckpoint(source, { weights: options.weights ?? 'auto' }) : source;
  const { config } = checkpoint;
  const { ctx, chunks: chunkLimit } = checkImatrixOptions(options, config.maxPositionEmbeddings);
  const engineOptions = { contextLength: ctx, ...(options.threads !== undefined && { threads: options.threads }), ...engine };
  const fits = referenceEngineFits(config, engineOptions);
  if (!fits && requireFit) {
    throw new PolyquantError(ERROR_CODES.LIMIT, `the model has ${(parameterCount(checkpoint) / 1e9).toFixed(2)} B parameters: too many for the reference engine`, {
      file: checkpoint.dir,
      hint:
        tooLargeHint?.(ctx) ??
        'polyquant imatrix runs the reference engine, whose float32 weights must fit one 4 GiB WebAssembly memory (about 1 B parameters); ' +
          `larger models run in llama.cpp on their f16 GGUF: --engine llamacpp (or auto)`,
    });
  }
  // The vocabulary's BOS rule as the GGUF we would write states it, since llama-imatrix reads it from there.
  const vocabulary = ggufTokenizerMetadata(checkpoint.tokenizer, checkpoint.rawConfig, config.vocabSize);
  if (vocabulary.addEos) {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, 'the tokenizer appends EOS to every text, which llama-imatrix refuses (GGML_ASSERT !add_eos)', {
      file: checkpoint.dir,
    });
  }
  const bos = vocabulary.addBos ? vocabulary.specialIds.bos : undefined;
  if (vocabulary.addBos && bos === undefined) {
    throw new PolyquantError(ERROR_CODES.CONFIG, 'the tokenizer adds a BOS token but names none', { file: checkpoint.dir });
  }
  return { checkpoint, ctx, chunkLimit, bos, engineOptions, fits };
}

/** Each text read whole, tokenized and cut into chunks of ctx tokens, at most `chunkLimit` in all. */
export async function cutChunks(
  checkpoint: Checkpoint,
  paths: readonly string[],
  ctx: number,
  chunkLimit: number | undefined,
  bos: number | undefined,
): Promise<{ windows: Int32Array[]; texts: ImatrixText[]; warnings: string[] }> {
  const tokenizer = loadTokenizer(checkpoint.tokenizer);
  const warnings: string[] = [];
  const texts: ImatrixText[] = [];
  const windows: Int32Array[] = [];
  let left = chunkLimit ?? Number.POSITIVE_INFINITY;
  for (const path of paths) {
    const { file, text } = await readTextFile(path);
    // `llama-imatrix -f` drops one trailing newline (common/arg.cpp, "-f").
    const body = text.endsWith('\n') ? text.slice(0, -1) : text;
    const encoded = tokenizer.encode(body);
    const tokens = bos === undefined ? encoded : withBos(bos, encoded);
    const starts = left > 0 ? chunkStarts(tokens.length, ctx, left) : [];
    if (Math.floor(tokens.length / ctx) === 0) warnings.push(`${basename(file)} gives ${tokens.length} tokens, less than one chunk of ${ctx}: not used`);
    for (const start of starts) {
      const window = tokens.slice(start, start + ctx);
      if (bos !== undefined) window[0] = bos;
      windows.push(window);
    }
    left -= starts.length;
    texts.push({ file, tokens: tokens.length, chunks: starts.length });
  }
  if (windows.length === 0) {
    throw new PolyquantError(ERROR_CODES.USAGE, `the calibration text is shorter than one chunk of ${ctx} tokens`, {
      file: texts[0]?.file,
      hint: `give more text, or a smaller --ctx (${texts.map((text) => `${basename(text.file)}: ${text.tokens} tokens`).join(', ')})`,
    });
  }
  return { windows, texts, warnings };
}

interface ChunkPlan {
  readonly ctx: number;
  readonly processOutput: boolean;
  readonly texts: readonly ImatrixText[];
  readonly warnings: readonly string[];
}

async function runChunks(engine: ReferenceEngine, checkpoint: Checkpoint, options: ImatrixOptions, windows: readonly Int32Array[], plan: ChunkPlan): Promise<ImatrixResult> {
  const { ctx, processOutput } = plan;

  const slots = engine.activationSlots(processOutput);
  const width = slots.reduce((total, slot) => total + slot.columns, 0);
  const totals = new Float64Array(width);
  const started = performance.now();
  options.onProgress?.(0, windows.length);
  // Keep every worker busy, and add each chunk's sums in chunk order whatever order they finish in.
  const inFlight = new Map<number, Promise<Float64Array>>();
  let next = 0;
  const submit = (): void => {
    while (next < windows.length && inFlight.size < 2 * engine.parallelism) {
      inFlight.set(next, engine.squaredInputs(windows[next] as Int32Array, { head: processOutput }));
      next += 1;
    }
  };
  try {
    for (let index = 0; index < windows.length; index += 1) {
      submit();
      const squares = await (inFlight.get(index) as Promise<Float64Array>);
      inFlight.delete(index);
      for (let i = 0; i < width; i += 1) totals[i] = (totals[i] as number) + (squares[i] as number);
      const bad = squares.findIndex((value) => !Number.isFinite(value));
      if (bad >= 0) {
        const slot = slots.find((candidate) => bad >= candidate.offset && bad < candidate.offset + candidate.columns);
        throw new PolyquantError(ERROR_CODES.CHECK_FAILED, `non-finite activations in chunk ${index + 1}`, {
          file: checkpoint.dir,
          tensor: slot === undefined ? undefined : ggufTensorName(slot.role, slot.layer),
          hint: 'the model overflows float32 on this text (llama-imatrix stops the same way)',
        });
      }
      options.onProgress?.(index + 1, windows.length);
    }
  } finally {
    // On an error the engine is closed by the caller, which rejects what is still queued; nothing to await.
    for (const pending of inFlight.values()) pending.catch(() => {});
  }
  const seconds = (performance.now() - started) / 1000;

  const count = windows.length * ctx;
  const named = slots.map((slot) => ({ name: ggufTensorName(slot.role, slot.layer), slot }));
  named.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const entries = new Map<string, ImatrixEntry>();
  for (const { name, slot } of named) {
    entries.set(name, { sums: Float32Array.from(totals.subarray(slot.offset, slot.offset + slot.columns)), count });
  }
  return { ...passOf(options, windows, plan), entries, engine: { name: 'reference', threads: engine.parallelism }, seconds };
}

/** What an ImatrixResult says of the pass whatever the engine: texts, chunks, tokens, warnings. */
function passOf(
  options: ImatrixOptions,
  windows: readonly Int32Array[],
  plan: Pick<ChunkPlan, 'ctx' | 'texts' | 'warnings'>,
): Pick<ImatrixResult, 'datasets' | 'chunkCount' | 'chunkSize' | 'texts' | 'tokens' | 'warnings'> {
  return {
    datasets: [...options.texts],
    chunkCount: windows.length,
    chunkSize: plan.ctx,
    texts: plan.texts,
    tokens: windows.length * plan.ctx,
    warnings: plan.warnings,
  };
}

/** `common_tokenize(…, add_special = true)`: the BOS in front of the text. */
function withBos(bos: number, tokens: Int32Array): Int32Array {
  const out = new Int32Array(tokens.length + 1);
  out[0] = bos;
  out.set(tokens, 1);
  return out;
}

/**
 * The importance per column that `readImatrix` (and llama-quantize) derive from these statistics:
 * sum / count in float32, 1 where nothing was counted. `convert --calibrate` hands this to the quantizer,
 * so it quantizes exactly as `convert --imatrix` of the written file would.
 */
export function importanceOf(result: Pick<ImatrixResult, 'entries'>): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const [name, { sums, count }] of result.entries) {
    const divisor = Math.fround(count);
    out.set(name, Float32Array.from(sums, (sum) => (divisor > 0 ? sum / divisor : 1)));
  }
  return out;
}
