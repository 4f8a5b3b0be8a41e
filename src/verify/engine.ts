/**
 * The Engine interface every verification backend implements (DESIGN.md): the reference TypeScript
 * forward pass, llama.cpp (node-llama-cpp), onnxruntime and our WebGPU runtime. Metrics (perplexity, KL
 * divergence, top-1 agreement, KOBEST log-likelihoods) are computed from what `score` returns, so every
 * engine is measured the same way on identical token windows.
 */

import { ERROR_CODES, PolyquantError } from '../errors.js';

export type DistributionMode = 'none' | 'topk' | 'full';

export interface ScoreOptions {
  /**
   * The first target token to score: log-probabilities are returned for tokens[from], …, tokens[n − 1],
   * each conditioned on everything before it. Default 1 (every token but the first). Engines need only
   * compute the vocabulary projection at positions from − 1 … n − 2.
   */
  readonly from?: number;
  /** Also return next-token distributions at the scored positions (for KL divergence / top-1). */
  readonly distributions?: DistributionMode;
  /** k for `topk` (default 32). */
  readonly topK?: number;
  /**
   * With `full`: a buffer of at least (n − from) × vocabSize floats the engine may fill and return as
   * `full` instead of allocating one (callers that drop a window's rows pass an earlier window's back: a
   * fresh 60 MB array per window costs more in page faults than llama.cpp takes to compute it on a small
   * model). An engine that cannot write into it returns a new array; either way the result says where.
   */
  readonly into?: Float32Array;
}

export interface TopKDistributions {
  readonly k: number;
  /** [positions × k] token ids, most probable first. */
  readonly ids: Int32Array;
  /** [positions × k] natural-log probabilities matching `ids`. */
  readonly logProbs: Float32Array;
  /** [positions] log of the probability mass outside the top k (−Infinity when none is left). */
  readonly restLogMass: Float32Array;
}

export interface ScoreResult {
  /** [n − from] natural-log probability of each target token. */
  readonly tokenLogProbs: Float64Array;
  /** With `full`: [positions × vocabSize] natural-log probabilities; row i predicts tokens[from + i]. */
  readonly full?: Float32Array;
  /** With `topk`. */
  readonly topk?: TopKDistributions;
  /** Index of the most probable next token at each scored position (always returned; top-1 agreement). */
  readonly argmax: Int32Array;
}

export interface Engine {
  readonly name: string;
  readonly device: 'cpu' | 'gpu';
  /** Longest token window `score` accepts. */
  readonly contextLength: number;
  /** Rows of the output head (≥ the tokenizer's ids). */
  readonly vocabSize: number;
  /** The model's tokenizer: no BOS/EOS added. */
  tokenize(text: string): Int32Array;
  score(tokens: Int32Array, options?: ScoreOptions): Promise<ScoreResult>;
  /**
   * Summed log-likelihood of each continuation after a shared context (KOBEST); engines with a KV cache
   * compute the context once. Same numbers as scoring context+continuation with `score`.
   */
  scoreContinuations(context: Int32Array, continuations: readonly Int32Array[]): Promise<number[]>;
  close(): Promise<void>;
}

/** k for `topk` distributions when the caller gives none. */
export const DEFAULT_TOP_K = 32;

export interface ResolvedScoreOptions {
  readonly from: number;
  readonly distributions: DistributionMode;
  readonly topK: number;
  readonly into: Float32Array | undefined;
}

/** Checks `score`'s options against a window of `length` tokens and fills in the defaults (every engine). */
export function resolveScoreOptions(options: ScoreOptions, length: number): ResolvedScoreOptions {
  const from = options.from ?? 1;
  if (!Number.isSafeInteger(from) || from < 1 || from > length) {
    throw new PolyquantError(ERROR_CODES.USAGE, `from is ${from}; expected an integer from 1 to the window length ${length}`, {
      hint: 'token 0 has no context to be predicted from; prepend a BOS token to score it',
    });
  }
  const distributions: DistributionMode = options.distributions ?? 'none';
  if (distributions !== 'none' && distributions !== 'topk' && distributions !== 'full') {
    throw new PolyquantError(ERROR_CODES.USAGE, `distributions is ${JSON.stringify(distributions)}; expected none, topk or full`);
  }
  const topK = options.topK ?? DEFAULT_TOP_K;
  if (!Number.isSafeInteger(topK) || topK < 1) {
    throw new PolyquantError(ERROR_CODES.USAGE, `topK is ${topK}; expected a positive integer`);
  }
  const into = options.into;
  if (into !== undefined && !(into instanceof Float32Array)) {
    throw new PolyquantError(ERROR_CODES.USAGE, 'into must be a Float32Array');
  }
  return { from, distributions, topK, into };
}

/** What a request is checked against: the engine's limits, and the file it runs (for messages). */
export interface EngineLimits {
  readonly contextLength: number;
  readonly vocabSize: number;
  readonly file?: string | undefined;
}

/** Checks a window of token ids (every engine): an Int32Array, no longer than the context, ids in the vocabulary. */
export function checkTokenIds(tokens: Int32Array, what: string, limits: EngineLimits): void {
  const { contextLength, vocabSize, file } = limits;
  if (!(tokens instanceof Int32Array)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `${what} must be an Int32Array of token ids`);
  }
  if (tokens.length > contextLength) {
    throw new PolyquantError(ERROR_CODES.USAGE, `${what} has ${tokens.length} tokens, more than the context length ${contextLength}`, {
      file,
      hint: 'use shorter windows or a larger contextLength',
    });
  }
  for (let index = 0; index < tokens.length; index += 1) {
    const id = tokens[index] as number;
    if (id < 0 || id >= vocabSize) {
      throw new PolyquantError(ERROR_CODES.USAGE, `${what} has token id ${id} at index ${index}, outside the vocabulary 0 … ${vocabSize - 1}`, { file });
    }
  }
}

/** Checks `scoreContinuations`' arguments (every engine): a non-empty context, and each continuation fitting after it. */
export function checkContinuations(context: Int32Array, continuations: readonly Int32Array[], limits: EngineLimits): void {
  checkTokenIds(context, 'the context', limits);
  if (context.length === 0) {
    throw new PolyquantError(ERROR_CODES.USAGE, 'the context is empty, so the first continuation token has nothing to be predicted from', {
      hint: 'prepend a BOS/EOS token, as lm-evaluation-harness does for empty contexts',
    });
  }
  continuations.forEach((continuation, index) => {
    checkTokenIds(continuation, `continuation ${index}`, limits);
    if (context.length + continuation.length > limits.contextLength) {
      throw new PolyquantError(
        ERROR_CODES.USAGE,
        `context (${context.length} tokens) + continuation ${index} (${continuation.length}) is longer than the context length ${limits.contextLength}`,
        { file: limits.file },
      );
    }
  });
}

/**
 * A ScoreResult's arrays for `scored` positions over `vocab` tokens, for an engine to fill: zeroed, except
 * that `full` is the front of `into` when that is given and large enough (its old contents left in place).
 */
export function allocateScoreResult(
  scored: number,
  vocab: number,
  distributions: DistributionMode,
  topK: number,
  into?: Float32Array,
): ScoreResult & { full?: Float32Array; topk?: TopKDistributions } {
  const tokenLogProbs = new Float64Array(scored);
  const argmax = new Int32Array(scored);
  const size = scored * vocab;
  const full = distributions !== 'full' ? undefined : into !== undefined && into.length >= size ? into.subarray(0, size) : new Float32Array(size);
  const k = Math.min(topK, vocab);
  const topk: TopKDistributions | undefined =
    distributions === 'topk'
      ? { k, ids: new Int32Array(scored * k), logProbs: new Float32Array(scored * k), restLogMass: new Float32Array(scored) }
      : undefined;
  return { tokenLogProbs, argmax, ...(full && { full }), ...(topk && { topk }) };
}
