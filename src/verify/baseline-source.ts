/**
 * The baseline's side of a comparison, as `verify` consumes it: its tokenizer, its scored windows (target
 * log-probabilities, argmax and, for KL divergence, full rows) and its KOBEST results. `verify` gets them
 * from a freshly loaded engine (`engineBaselineSource`); a sweep gets them from a BaselineSession
 * (baseline-session.ts) that scored the baseline once and replays it for every candidate. Both yield the
 * same numbers for the same windows, so a comparison cannot tell where its baseline came from. A saved
 * baseline file (saved-baseline.ts, `verify --baseline FILE`) yields the same numbers too, except that its
 * full rows are 16-bit log-probabilities (KL divergence within the tolerance documented there).
 */
import type { Engine } from './engine.js';
import type { ModelDescription } from './report.js';
import { type KobestReport, type KobestRunOptions, runKobest } from './kobest/index.js';
import { type ScoreWindowsOptions, scoreWindows, type WindowPlan, type WindowScore } from './perplexity.js';

export interface BaselineSource {
  /** Rows of the output head (the width of each full row). */
  readonly vocabSize: number;
  /** Longest window the baseline engine takes. */
  readonly contextLength: number;
  /** The baseline's tokens for a text (no BOS/EOS). */
  tokenize(text: string): Promise<Int32Array>;
  /** The windows of `tokens`, scored in order, as perplexity.ts `scoreWindows` yields them from an engine. */
  scoreWindows(tokens: Int32Array, windows: readonly WindowPlan[], options: ScoreWindowsOptions): AsyncGenerator<WindowScore>;
  /** The baseline's KOBEST run, as kobest/run.ts `runKobest` returns it from an engine. */
  runKobest(options: KobestRunOptions): Promise<KobestReport>;
}

/** A baseline ready for one comparison: its side, how the report describes it, and how to release it. */
export interface OpenedBaseline {
  readonly source: BaselineSource;
  readonly description: ModelDescription;
  close(): Promise<void>;
}

/** The baseline as a loaded engine: every call goes to the engine. */
export function engineBaselineSource(engine: Engine): BaselineSource {
  return {
    vocabSize: engine.vocabSize,
    contextLength: engine.contextLength,
    tokenize: async (text) => engine.tokenize(text),
    scoreWindows: (tokens, windows, options) => scoreWindows(engine, tokens, windows, options),
    runKobest: (options) => runKobest(engine, options),
  };
}
