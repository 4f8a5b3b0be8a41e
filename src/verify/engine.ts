/**
 * The Engine interface every verification backend implements (DESIGN.md): the reference TypeScript
 * forward pass, llama.cpp (node-llama-cpp), onnxruntime and our WebGPU runtime. Metrics (perplexity, KL
 * divergence, top-1 agreement, KOBEST log-likelihoods) are computed from what `score` returns, so every
 * engine is measured the same way on identical token windows.
 */

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
