import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PolyquantError } from '../src/errors.js';
import { readCheckpoint } from '../src/readers/checkpoint.js';
import { loadTokenizer } from '../src/readers/tokenizer.js';
import type { Engine, ScoreOptions, ScoreResult } from '../src/verify/engine.js';
import { createReferenceEngine, type ReferenceEngine } from '../src/verify/engines/reference.js';
import {
  perplexity,
  perplexityOfFile,
  perplexityOfTokens,
  planWindows,
  scoreWindows,
  type WindowPlan,
  type WindowScore,
} from '../src/verify/perplexity.js';
import { readTextFile } from '../src/verify/text.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, sharedPath } from './helpers/shared.js';
import { makeTinyModel, tempDir } from './helpers/tiny-model.js';

/**
 * An engine whose log-probabilities are a closed-form function of the token and its index in the window,
 * answering after a delay that shrinks with each call so later windows finish first.
 */
class FakeEngine implements Engine {
  readonly name = 'fake';
  readonly device = 'cpu';
  readonly vocabSize = 1 << 16;
  readonly calls: { tokens: number[]; from: number }[] = [];
  inFlight = 0;
  maxInFlight = 0;

  constructor(
    readonly contextLength: number,
    readonly parallelism = 1,
  ) {}

  static logProb(token: number, index: number): number {
    return -(1 + (token % 5) + 1 / (1 + index));
  }

  tokenize(text: string): Int32Array {
    return Int32Array.from(text, (character) => character.charCodeAt(0));
  }

  async score(tokens: Int32Array, options: ScoreOptions = {}): Promise<ScoreResult> {
    const from = options.from ?? 1;
    this.calls.push({ tokens: [...tokens], from });
    this.inFlight += 1;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, 12 - 3 * this.calls.length)));
    this.inFlight -= 1;
    const tokenLogProbs = Float64Array.from({ length: tokens.length - from }, (_, i) => FakeEngine.logProb(tokens[from + i] as number, from + i));
    return { tokenLogProbs, argmax: new Int32Array(tokenLogProbs.length) };
  }

  async scoreContinuations(): Promise<number[]> {
    throw new Error('not used');
  }

  async close(): Promise<void> {}
}

function ramp(count: number): Int32Array {
  return Int32Array.from({ length: count }, (_, i) => (i * 7919) % 1000);
}

function expectUsageError(action: () => unknown): PolyquantError {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(PolyquantError);
    expect((error as PolyquantError).code).toBe('usage');
    return error as PolyquantError;
  }
  throw new Error('expected a usage error');
}

/** Which token indices a plan scores, and how often. */
function coverage(tokenCount: number, windows: readonly WindowPlan[]): number[] {
  const counts = new Array<number>(tokenCount).fill(0);
  for (const window of windows) {
    expect(window.length).toBeGreaterThan(window.from);
    for (let i = window.from; i < window.length; i += 1) counts[window.start + i] = (counts[window.start + i] as number) + 1;
  }
  return counts;
}

describe('window plans', () => {
  it('cuts non-overlapping windows from the start, scores all but each first token, and drops the tail', () => {
    const windows = planWindows(1000, { ctx: 128 });
    expect(windows).toHaveLength(7);
    expect(windows.map((window) => window.start)).toEqual([0, 128, 256, 384, 512, 640, 768]);
    expect(windows.every((window) => window.length === 128 && window.from === 1)).toBe(true);
    const counts = coverage(1000, windows);
    expect(counts.filter((count) => count === 1)).toHaveLength(7 * 127);
    expect(counts.slice(896).every((count) => count === 0)).toBe(true);
  });

  it('strides like transformers: every token but the first scored exactly once when stride < ctx', () => {
    for (const [tokens, ctx, stride] of [
      [1000, 128, 64],
      [1000, 128, 1],
      [1001, 100, 33],
      [130, 128, 64],
      [128, 128, 127],
    ] as const) {
      const windows = planWindows(tokens, { protocol: 'strided', ctx, stride });
      expect(windows[0]).toEqual({ index: 0, start: 0, length: Math.min(ctx, tokens), from: 1 });
      expect(windows.every((window, index) => window.start === index * stride && window.length <= ctx)).toBe(true);
      const last = windows.at(-1) as WindowPlan;
      expect(last.start + last.length).toBe(tokens);
      expect(coverage(tokens, windows)).toEqual([0, ...new Array<number>(tokens - 1).fill(1)]);
    }
    // The doc's 1024/512: the second window scores its last 512 tokens.
    expect(planWindows(4096, { protocol: 'strided', ctx: 1024, stride: 512 })[1]).toEqual({ index: 1, start: 512, length: 1024, from: 512 });
  });

  it('with stride = ctx scores what the windows protocol does, plus the tail as a short window', () => {
    const strided = planWindows(1000, { protocol: 'strided', ctx: 128, stride: 128 });
    expect(strided.slice(0, 7)).toEqual(planWindows(1000, { ctx: 128 }));
    expect(strided[7]).toEqual({ index: 7, start: 896, length: 104, from: 1 });
  });

  it('scores only the second half of each llama-perplexity chunk', () => {
    const chunks = planWindows(1100, { protocol: 'llamacpp', ctx: 512 });
    expect(chunks).toEqual([
      { index: 0, start: 0, length: 512, from: 257 },
      { index: 1, start: 512, length: 512, from: 257 },
    ]);
    // n_ctx − first − 1 tokens per chunk: 255 at 512, 1023 at 2048.
    expect(chunks.map((chunk) => chunk.length - chunk.from)).toEqual([255, 255]);
    expect(planWindows(4096, { protocol: 'llamacpp', ctx: 2048 }).map((chunk) => chunk.length - chunk.from)).toEqual([1023, 1023]);
  });

  it('refuses a text shorter than one window (two chunks for llamacpp), naming the file, its tokens and the window', () => {
    const short = expectUsageError(() => planWindows(100, { ctx: 128, source: '/data/valid.txt' }));
    expect(short.message).toContain('/data/valid.txt');
    expect(short.message).toMatch(/100 tokens/);
    expect(short.message).toMatch(/128/);
    expect(expectUsageError(() => planWindows(1000, { protocol: 'llamacpp', ctx: 512 })).message).toMatch(/2 chunks of 512/);
    expectUsageError(() => planWindows(1000, { ctx: 128, stride: 64 }));
    expectUsageError(() => planWindows(1000, { protocol: 'strided', ctx: 128, stride: 129 }));
    expectUsageError(() => planWindows(1000, { ctx: 1 }));
    expectUsageError(() => planWindows(1000, { protocol: 'bogus' as 'windows', ctx: 16 }));
  });
});

describe('perplexity over an engine', () => {
  it('sums window NLLs into ppl and bits per byte, with a per-window summary', async () => {
    const engine = new FakeEngine(64);
    const tokens = ramp(300);
    const report = await perplexityOfTokens(engine, tokens, 1234, { ctx: 64 });
    let expected = 0;
    for (let w = 0; w < 4; w += 1) {
      for (let i = 1; i < 64; i += 1) expected -= FakeEngine.logProb(tokens[w * 64 + i] as number, i);
    }
    expect(report).toMatchObject({ protocol: 'windows', ctx: 64, scoredTokens: 4 * 63, tokens: 300, bytes: 1234 });
    expect(report.stride).toBeUndefined();
    expect(report.nllSum).toBeCloseTo(expected, 9);
    expect(report.ppl).toBeCloseTo(Math.exp(expected / (4 * 63)), 9);
    expect(report.bitsPerByte).toBeCloseTo(((expected / (4 * 63)) * 300) / 1234 / Math.LN2, 12);
    expect(report.windows.map((window) => window.start)).toEqual([0, 64, 128, 192]);
    expect(report.windows.reduce((sum, window) => sum + window.nll, 0)).toBeCloseTo(expected, 9);
    expect(engine.calls.map((call) => [call.tokens.length, call.from])).toEqual(new Array(4).fill([64, 1]));
    expect(engine.calls[1]?.tokens).toEqual([...tokens.subarray(64, 128)]);
  });

  it('hands each window to onWindow in order while keeping the engine parallelism windows in flight', async () => {
    const engine = new FakeEngine(32, 3);
    const seen: number[] = [];
    const report = await perplexityOfTokens(engine, ramp(1000), 1000, {
      protocol: 'strided',
      ctx: 32,
      stride: 20,
      onWindow: (window: WindowScore) => {
        seen.push(window.window.index);
        expect(window.tokens).toHaveLength(window.window.length);
        expect(window.nll).toBeCloseTo(-window.score.tokenLogProbs.reduce((sum, value) => sum + value, 0), 12);
      },
    });
    expect(seen).toEqual(report.windows.map((_, index) => index));
    expect(report.scoredTokens).toBe(999);
    expect(report.stride).toBe(20);
    expect(engine.maxInFlight).toBe(3);
  });

  it('stops after maxWindows and lets a consumer break out of the stream early', async () => {
    const engine = new FakeEngine(16, 2);
    const report = await perplexityOfTokens(engine, ramp(500), 500, { ctx: 16, maxWindows: 3 });
    expect(report.windows).toHaveLength(3);
    expect(report.scoredTokens).toBe(45);
    const windows = planWindows(500, { ctx: 16 });
    let taken = 0;
    for await (const result of scoreWindows(engine, ramp(500), windows, { concurrency: 4 })) {
      expect(result.window.index).toBe(taken);
      taken += 1;
      if (taken === 2) break;
    }
    expect(engine.inFlight).toBe(0);
  });

  it('refuses a ctx longer than the engine accepts', async () => {
    const error = await perplexityOfTokens(new FakeEngine(64), ramp(500), 500, { ctx: 128 }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(PolyquantError);
    expect((error as PolyquantError).message).toMatch(/ctx 128 is longer than the fake engine's context length 64/);
  });
});

describe('perplexity with the reference engine on a tiny synthetic model', () => {
  const scratch = tempDir('polyquant-perplexity-');
  let engine: ReferenceEngine;
  beforeAll(async () => {
    engine = await createReferenceEngine(await makeTinyModel(scratch.path), { threads: 2 });
  });
  afterAll(async () => {
    await engine?.close();
    scratch.remove();
  });

  it('tokenizes the whole file once and scores each window as engine.score does', async () => {
    const text = 'The quick brown fox jumps over the lazy dog. 다람쥐 헌 쳇바퀴에 타고파.\n'.repeat(12);
    const file = join(scratch.path, 'text.txt');
    writeFileSync(file, text);
    const tokens = engine.tokenize(text);
    const report = await perplexityOfFile(engine, file, { ctx: 48 });
    expect(report.tokens).toBe(tokens.length);
    expect(report.bytes).toBe(Buffer.byteLength(text));
    let expected = 0;
    for (const window of planWindows(tokens.length, { ctx: 48 })) {
      const score = await engine.score(tokens.slice(window.start, window.start + window.length));
      let logLikelihood = 0;
      for (const value of score.tokenLogProbs) logLikelihood += value;
      expected += -logLikelihood;
    }
    expect(report.nllSum).toBe(expected);
    expect(await perplexity(engine, text, { ctx: 48 })).toEqual(report);
  });

  it('names the file when it is too short for one window', async () => {
    const file = join(scratch.path, 'short.txt');
    writeFileSync(file, 'tiny');
    const error = await perplexityOfFile(engine, file, { ctx: 64 }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(PolyquantError);
    expect((error as PolyquantError).file).toBe(file);
    expect((error as PolyquantError).message).toMatch(/fewer than one window of 64 tokens/);
  });
});

interface ReferencePerplexity {
  windows: number;
  scored_tokens: number;
  nll_sum: number;
  ppl: number;
}

const referenceJson = (): Record<string, ReferencePerplexity> =>
  (JSON.parse(readFileSync(join(POLYGLOT_TINY_DIR, 'reference', 'reference.json'), 'utf8')) as { perplexity: Record<string, ReferencePerplexity> })
    .perplexity;
const VALID_TEXT = sharedPath('data', 'korean-text', 'valid.txt');

describe.skipIf(!HAS_SHARED)('valid.txt with the polyglot-ko tokenizer', () => {
  it('has 40,089 tokens, cut into the reference window and scored-token counts at ctx 128 and 512', async () => {
    const tokenizer = loadTokenizer((await readCheckpoint(POLYGLOT_TINY_DIR)).tokenizer);
    const { text, bytes } = await readTextFile(VALID_TEXT);
    expect(bytes).toBe(166_281);
    const tokens = tokenizer.encode(text);
    expect(tokens.length).toBe(40_089);
    for (const ctx of [128, 512]) {
      const expected = referenceJson()[`valid_ctx${ctx}`] as ReferencePerplexity;
      const windows = planWindows(tokens.length, { ctx });
      expect(windows).toHaveLength(expected.windows);
      expect(windows.reduce((sum, window) => sum + window.length - window.from, 0)).toBe(expected.scored_tokens);
    }
  });
});

/**
 * The whole file through polyglot-ko-tiny: ~40k tokens per ctx, about 50–110 s each on two shared cores
 * (bench/reference-engine.ts), so outside the default suite: POLYQUANT_BIG_TESTS=1 runs them.
 */
describe.skipIf(!HAS_SHARED || process.env.POLYQUANT_BIG_TESTS !== '1')('perplexity of polyglot-ko-tiny on valid.txt', () => {
  let engine: ReferenceEngine;
  beforeAll(async () => {
    engine = await createReferenceEngine(POLYGLOT_TINY_DIR, { threads: 2 });
  });
  afterAll(async () => engine?.close());

  it.each([128, 512])('matches the PyTorch reference at ctx %i within 0.1%', { timeout: 600_000 }, async (ctx) => {
    const expected = referenceJson()[`valid_ctx${ctx}`] as ReferencePerplexity;
    const started = performance.now();
    const report = await perplexityOfFile(engine, VALID_TEXT, { ctx });
    const seconds = (performance.now() - started) / 1000;
    console.log(`ctx ${ctx}: ppl ${report.ppl} (reference ${expected.ppl}), nll ${report.nllSum}, ${seconds.toFixed(1)} s`);
    expect(report.windows).toHaveLength(expected.windows);
    expect(report.scoredTokens).toBe(expected.scored_tokens);
    expect(Math.abs(report.ppl / expected.ppl - 1)).toBeLessThan(1e-3);
    expect(Math.abs(report.nllSum / expected.nll_sum - 1)).toBeLessThan(1e-3);
  });
});
