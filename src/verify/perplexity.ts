/**
 * Perplexity of an engine on a text, under the three window protocols of specs/eval.md §6. The whole text
 * is tokenized at once with the model's tokenizer (no BOS/EOS), cut into windows by the protocol, and
 * each window scored from a fresh context:
 *
 * - `windows` (default): non-overlapping windows of ctx tokens from the start; every token but each
 *   window's first is scored; the tail that does not fill a window is dropped. This is how
 *   polyglot-ko-tiny's reference.json was computed.
 * - `strided`: transformers' "Perplexity of fixed-length models": windows of max_length = ctx starting
 *   every `stride` tokens; each scores only the tokens the previous one did not (its last
 *   end − previous end), the first all but its own first token; the last window may be short. With
 *   stride < ctx every token but the text's first is scored exactly once; with stride = ctx each window's
 *   first token has no context and goes unscored, as in transformers. (The doc's loop counts trg_len − 1
 *   tokens per window, "num_valid_tokens − batch_size", which undercounts every window after the first by
 *   one; we count the tokens actually scored.)
 * - `llamacpp`: llama-perplexity's chunks: n_chunk = ⌊tokens / ctx⌋ non-overlapping chunks (at least 2),
 *   each scoring only its second half, tokens first + 1 … ctx − 1 with first = ⌊ctx/2⌋. (llama.cpp would
 *   put BOS at each chunk's start if the vocab said add_bos; polyglot-ko's does not.)
 *
 * Windows are scored through `scoreWindows`, an async iterator that yields each window's ScoreResult in
 * order as soon as it is ready while keeping the engine's `parallelism` windows in flight, so a caller
 * (the baseline-vs-candidate comparison) can stream KL divergence without holding all logits.
 */
import { ERROR_CODES, PolyquantError } from '../errors.js';
import type { DistributionMode, Engine, ScoreResult } from './engine.js';
import { readTextFile, utf8ByteLength } from './text.js';

export const PERPLEXITY_PROTOCOLS = ['windows', 'strided', 'llamacpp'] as const;
export type PerplexityProtocol = (typeof PERPLEXITY_PROTOCOLS)[number];

/** One window: tokens[start … start + length), scoring its tokens from index `from` on (≥ 1). */
export interface WindowPlan {
  readonly index: number;
  readonly start: number;
  readonly length: number;
  readonly from: number;
}

export interface WindowPlanOptions {
  readonly protocol?: PerplexityProtocol;
  /** Window (chunk) length in tokens. */
  readonly ctx: number;
  /** `strided` only: tokens between window starts (default ⌊ctx/2⌋, the doc's 512 for 1024). */
  readonly stride?: number;
  /** Names the text in errors (a file path). */
  readonly source?: string;
}

export function planWindows(tokenCount: number, options: WindowPlanOptions): WindowPlan[] {
  const protocol = options.protocol ?? 'windows';
  const { ctx, source } = options;
  if (!(PERPLEXITY_PROTOCOLS as readonly string[]).includes(protocol)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `perplexity protocol ${JSON.stringify(protocol)} is not one of ${PERPLEXITY_PROTOCOLS.join(', ')}`);
  }
  const minimumCtx = protocol === 'llamacpp' ? 3 : 2;
  if (!Number.isSafeInteger(ctx) || ctx < minimumCtx) {
    throw new PolyquantError(ERROR_CODES.USAGE, `ctx is ${ctx}; expected an integer of at least ${minimumCtx} for the ${protocol} protocol`);
  }
  if (options.stride !== undefined && protocol !== 'strided') {
    throw new PolyquantError(ERROR_CODES.USAGE, `stride applies only to the strided protocol, not ${protocol}`);
  }
  const needed = protocol === 'llamacpp' ? 2 * ctx : ctx;
  if (tokenCount < needed) {
    const what = protocol === 'llamacpp' ? `2 chunks of ${ctx}` : `one window of ${ctx}`;
    throw new PolyquantError(ERROR_CODES.USAGE, `the text has ${tokenCount} tokens, fewer than ${what} tokens (${needed})`, {
      file: source,
      hint: 'use a longer text or a smaller ctx',
    });
  }
  const windows: WindowPlan[] = [];
  if (protocol === 'strided') {
    const stride = options.stride ?? Math.max(1, Math.floor(ctx / 2));
    if (!Number.isSafeInteger(stride) || stride < 1 || stride > ctx) {
      throw new PolyquantError(ERROR_CODES.USAGE, `stride is ${stride}; expected an integer from 1 to ctx (${ctx})`);
    }
    let previousEnd = 0;
    for (let start = 0; start < tokenCount; start += stride) {
      const end = Math.min(start + ctx, tokenCount);
      const from = Math.max(1, previousEnd - start);
      if (from < end - start) windows.push({ index: windows.length, start, length: end - start, from });
      previousEnd = end;
      if (end === tokenCount) break;
    }
    return windows;
  }
  const count = Math.floor(tokenCount / ctx);
  const from = protocol === 'llamacpp' ? Math.floor(ctx / 2) + 1 : 1;
  for (let index = 0; index < count; index += 1) windows.push({ index, start: index * ctx, length: ctx, from });
  return windows;
}

export interface WindowScore {
  readonly window: WindowPlan;
  /** The window's tokens (a copy). */
  readonly tokens: Int32Array;
  readonly score: ScoreResult;
  /** −Σ log p over the window's scored tokens. */
  readonly nll: number;
}

export interface ScoreWindowsOptions {
  /** Next-token distributions to request with each window (for KL divergence / top-1 agreement). */
  readonly distributions?: DistributionMode;
  readonly topK?: number;
  /** Windows in flight at once. Default: the engine's `parallelism` if it has one, else 1. */
  readonly concurrency?: number;
  /**
   * With `full` distributions: reuse the rows' buffers. A yielded window's `score.full` is then valid only
   * until the loop asks for the next window (its buffer goes to a later window: the engine may write into
   * it, see ScoreOptions.into). For consumers that reduce each window's rows at once, as verify does.
   */
  readonly recycle?: boolean;
}

/**
 * How many windows to keep in flight: the engine's `windowParallelism` when it has one (an engine that
 * batches short requests but decodes a whole window alone says 1 there), else its `parallelism`.
 */
function engineParallelism(engine: Engine): number {
  const declared = engine as Partial<{ parallelism: unknown; windowParallelism: unknown }>;
  const value: unknown = declared.windowParallelism ?? declared.parallelism;
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 1 ? value : 1;
}

/**
 * Scores `windows` of `tokens` in order, yielding each as soon as it and all before it are done, with up
 * to `concurrency` windows in flight. Breaking out of the loop early waits for the windows in flight.
 */
export async function* scoreWindows(
  engine: Engine,
  tokens: Int32Array,
  windows: readonly WindowPlan[],
  options: ScoreWindowsOptions = {},
): AsyncGenerator<WindowScore> {
  const concurrency = options.concurrency ?? engineParallelism(engine);
  if (!Number.isSafeInteger(concurrency) || concurrency < 1) {
    throw new PolyquantError(ERROR_CODES.USAGE, `concurrency is ${concurrency}; expected a positive integer`);
  }
  const scoreOptions = {
    ...(options.distributions !== undefined && { distributions: options.distributions }),
    ...(options.topK !== undefined && { topK: options.topK }),
  };
  const pending: Promise<WindowScore>[] = [];
  /** Row buffers of windows the consumer is done with (recycle). */
  const spare: Float32Array[] = [];
  let next = 0;
  const launch = (): void => {
    const window = windows[next] as WindowPlan;
    next += 1;
    // A compact copy: a subarray would carry (and a worker would clone) the whole text's buffer.
    const slice = tokens.slice(window.start, window.start + window.length);
    const into = options.recycle === true ? spare.pop() : undefined;
    const promise = engine.score(slice, { ...scoreOptions, from: window.from, ...(into !== undefined && { into }) }).then((score) => {
      let logLikelihood = 0;
      for (const value of score.tokenLogProbs) logLikelihood += value;
      return { window, tokens: slice, score, nll: -logLikelihood };
    });
    // Handled now, so a failure while an earlier window is awaited is not an unhandled rejection.
    promise.catch(() => undefined);
    pending.push(promise);
  };
  try {
    while (next < windows.length && pending.length < concurrency) launch();
    let previous: Float32Array | undefined;
    while (pending.length > 0) {
      const result = await (pending.shift() as Promise<WindowScore>);
      // The consumer has finished with the window yielded before this one: its rows may be reused.
      if (previous !== undefined) spare.push(previous);
      previous = options.recycle === true ? result.score.full : undefined;
      // Refill before yielding, so the engine works while the consumer does.
      if (next < windows.length) launch();
      yield result;
    }
  } finally {
    await Promise.allSettled(pending);
  }
}

export interface PerplexityOptions extends WindowPlanOptions, ScoreWindowsOptions {
  /** Score only the first N windows (a quick estimate); the report counts what was scored. */
  readonly maxWindows?: number;
  /** Called with each window's result, in order, as it is computed. */
  readonly onWindow?: (window: WindowScore) => void | Promise<void>;
}

export interface PerplexityWindowSummary {
  readonly start: number;
  readonly scored: number;
  readonly nll: number;
}

export interface PerplexityReport {
  readonly protocol: PerplexityProtocol;
  readonly ctx: number;
  readonly stride?: number;
  /** exp(nllSum / scoredTokens). */
  readonly ppl: number;
  /** Σ −log p over every scored token, in nats. */
  readonly nllSum: number;
  readonly scoredTokens: number;
  /** Tokens in the whole text. */
  readonly tokens: number;
  /** UTF-8 bytes of the whole text. */
  readonly bytes: number;
  /**
   * Mean NLL per token × tokens / bytes / ln 2 (specs/eval.md §6): tokenizer-independent, comparable
   * across models, unlike ppl.
   */
  readonly bitsPerByte: number;
  readonly windows: readonly PerplexityWindowSummary[];
}

/** Perplexity over already-tokenized text; `bytes` is the text's UTF-8 length (for bits per byte). */
export async function perplexityOfTokens(engine: Engine, tokens: Int32Array, bytes: number, options: PerplexityOptions): Promise<PerplexityReport> {
  const protocol = options.protocol ?? 'windows';
  if (options.ctx > engine.contextLength) {
    throw new PolyquantError(ERROR_CODES.USAGE, `ctx ${options.ctx} is longer than the ${engine.name} engine's context length ${engine.contextLength}`, {
      file: options.source,
    });
  }
  let windows = planWindows(tokens.length, options);
  if (options.maxWindows !== undefined) {
    if (!Number.isSafeInteger(options.maxWindows) || options.maxWindows < 1) {
      throw new PolyquantError(ERROR_CODES.USAGE, `maxWindows is ${options.maxWindows}; expected a positive integer`);
    }
    windows = windows.slice(0, options.maxWindows);
  }
  const summaries: PerplexityWindowSummary[] = [];
  let nllSum = 0;
  let scoredTokens = 0;
  for await (const result of scoreWindows(engine, tokens, windows, options)) {
    const scored = result.score.tokenLogProbs.length;
    nllSum += result.nll;
    scoredTokens += scored;
    summaries.push({ start: result.window.start, scored, nll: result.nll });
    await options.onWindow?.(result);
  }
  const meanNll = nllSum / scoredTokens;
  return {
    protocol,
    ctx: options.ctx,
    ...(protocol === 'strided' && { stride: options.stride ?? Math.max(1, Math.floor(options.ctx / 2)) }),
    ppl: Math.exp(meanNll),
    nllSum,
    scoredTokens,
    tokens: tokens.length,
    bytes,
    bitsPerByte: (meanNll * tokens.length) / bytes / Math.LN2,
    windows: summaries,
  };
}

/** Perplexity over a text, tokenized whole with the engine's tokenizer. */
export async function perplexity(engine: Engine, text: string, options: PerplexityOptions): Promise<PerplexityReport> {
  return perplexityOfTokens(engine, engine.tokenize(text), utf8ByteLength(text), options);
}

/** Perplexity over a UTF-8 text file (errors name the file). */
export async function perplexityOfFile(engine: Engine, path: string, options: PerplexityOptions): Promise<PerplexityReport> {
  const { file, text, bytes } = await readTextFile(path);
  return perplexityOfTokens(engine, engine.tokenize(text), bytes, { ...options, source: options.source ?? file });
}
