import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToGguf } from '../src/converters/gguf/convert.js';
import type { Engine } from '../src/verify/engine.js';
import { createLlamaCppEngine, type LlamaCppEngine } from '../src/verify/engines/llamacpp.js';
import { NATIVE_ADDON_PATH, nativeKlDivergence } from '../src/verify/engines/llamacpp-native.js';
import { klDivergenceRow } from '../src/verify/stats.js';
import { REPO_ROOT } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

/** The bundled tiny GPT-NeoX (hidden 64, 2 layers, vocab 384, context 128): hermetic and fast. */
const TINY_NEOX = join(REPO_ROOT, 'fixtures', 'tiny-neox');
const SAMPLE = '서울은 한강을 끼고 있는 큰 도시이다. The quick brown fox jumps over the lazy dog. 오늘은 날씨가 맑다. 1234 부산은 바다가 보이는 항구 도시이다.';
const HAS_ADDON = existsSync(NATIVE_ADDON_PATH);

function maxAbsDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i += 1) max = Math.max(max, Math.abs((a[i] as number) - (b[i] as number)));
  return max;
}

/** Every continuation's summed log-likelihood the slow way: context + continuation scored as one window. */
async function continuationsByScore(engine: Engine, context: Int32Array, continuations: readonly Int32Array[]): Promise<number[]> {
  const sums: number[] = [];
  for (const continuation of continuations) {
    if (continuation.length === 0) {
      sums.push(0);
      continue;
    }
    const window = new Int32Array([...context, ...continuation]);
    let sum = 0;
    for (const value of (await engine.score(window, { from: context.length })).tokenLogProbs) sum += value;
    sums.push(sum);
  }
  return sums;
}

describe('the native addon is built where CI runs', () => {
  // npm ci runs scripts/build-native.mjs (postinstall); CI has g++ and git, so a missing addon there is a
  // broken build step, not a machine without a toolchain.
  it.skipIf(process.env['CI'] === undefined)('exists after npm ci', () => {
    expect(existsSync(NATIVE_ADDON_PATH)).toBe(true);
  });
});

describe.skipIf(!HAS_ADDON)('the llamacpp engine on its native path (bundled tiny GPT-NeoX, f32 GGUF)', () => {
  const scratch = tempDir('polyquant-llamacpp-native-');
  let gguf: string;
  let packed: LlamaCppEngine;
  let single: LlamaCppEngine;

  beforeAll(async () => {
    gguf = join(scratch.path, 'tiny-neox-f32.gguf');
    await convertToGguf(TINY_NEOX, { type: 'f32', out: gguf, workers: 1 });
    packed = await createLlamaCppEngine(gguf, { device: 'cpu', threads: 1, sequences: 8 });
    single = await createLlamaCppEngine(gguf, { device: 'cpu', threads: 1, sequences: 1 });
  });
  afterAll(async () => {
    await Promise.all([packed?.close(), single?.close()]);
    scratch.remove();
  });

  it('runs on the native path, with one request per sequence in flight', () => {
    expect(packed.distributionPath).toBe('native');
    expect(packed.nativeUnavailable).toBeUndefined();
    expect(packed.parallelism).toBe(8);
    expect(single.parallelism).toBe(1);
    expect(packed.windowParallelism).toBe(1);
  });

  it('scores KOBEST documents decoded together in one batch as it scores them one by one', async () => {
    const tokens = packed.tokenize(SAMPLE);
    expect(tokens.length).toBeGreaterThan(60);
    const documents = Array.from({ length: 10 }, (_, d) => ({
      context: tokens.subarray(d, d + 20 + d),
      continuations: [tokens.subarray(40, 44), tokens.subarray(44 + (d % 3), 45 + (d % 3)), tokens.subarray(50, 58), new Int32Array(0)],
    }));
    // All ten at once: the engine packs up to eight sequences (two documents of four continuations) per decode.
    const together = await Promise.all(documents.map((document) => packed.scoreContinuations(document.context, document.continuations)));
    for (const [d, document] of documents.entries()) {
      const alone = await single.scoreContinuations(document.context, document.continuations);
      const byScore = await continuationsByScore(single, document.context, document.continuations);
      // The same numbers up to what the batch layout moves (matrix blocking, the KV cells' order): ~1e-5 per token.
      expect(maxAbsDifference(together[d] as number[], alone)).toBeLessThan(1e-4);
      expect(maxAbsDifference(alone, byScore)).toBeLessThan(1e-4);
      expect(together[d]?.[3]).toBe(0);
    }
  });

  it('scores a document too long to share one batch, and one with more continuations than sequences, context first', async () => {
    const tokens = packed.tokenize(`${SAMPLE} ${SAMPLE} ${SAMPLE}`);
    expect(tokens.length).toBeGreaterThan(128);
    // 100 + 2 × 19 shared cells > the 128 of one batch: the context, then each continuation on top of it.
    const context = tokens.subarray(0, 100);
    const long = [tokens.subarray(100, 120), tokens.subarray(105, 125)];
    expect(maxAbsDifference(await packed.scoreContinuations(context, long), await continuationsByScore(packed, context, long))).toBeLessThan(1e-4);
    // Three continuations, one sequence.
    const short = tokens.subarray(0, 30);
    const many = [tokens.subarray(30, 33), tokens.subarray(33, 34), tokens.subarray(34, 40)];
    expect(maxAbsDifference(await single.scoreContinuations(short, many), await continuationsByScore(single, short, many))).toBeLessThan(1e-4);
  });

  it('gives a window the same numbers alone, beside queued requests, and written into a reused buffer', async () => {
    const tokens = packed.tokenize(SAMPLE);
    const alone = await packed.score(tokens, { distributions: 'full' });
    const [busy] = await Promise.all([
      packed.score(tokens, { distributions: 'full' }),
      packed.scoreContinuations(tokens.subarray(0, 10), [tokens.subarray(10, 14)]),
      packed.score(tokens.subarray(0, 30)),
    ]);
    expect(Buffer.from(busy.full!.buffer).equals(Buffer.from(alone.full!.buffer))).toBe(true);
    expect(Array.from(busy.tokenLogProbs)).toEqual(Array.from(alone.tokenLogProbs));
    const into = new Float32Array(alone.full!.length + 100).fill(7);
    const reused = await packed.score(tokens, { distributions: 'full', into });
    expect(reused.full!.buffer).toBe(into.buffer);
    expect(reused.full!.length).toBe(alone.full!.length);
    expect(Buffer.from(reused.full!.buffer, 0, alone.full!.byteLength).equals(Buffer.from(alone.full!.buffer))).toBe(true);
    // Too small a buffer is not used.
    const small = await packed.score(tokens, { distributions: 'full', into: new Float32Array(10) });
    expect(small.full!.length).toBe(alone.full!.length);
  });

  it('serialises decodes of two engines in one process and gives each the numbers it gives alone', async () => {
    const tokens = packed.tokenize(SAMPLE);
    const [a, b] = await Promise.all([packed.score(tokens, { distributions: 'full' }), single.score(tokens, { distributions: 'full' })]);
    expect(Buffer.from(a.full!.buffer).equals(Buffer.from((await single.score(tokens, { distributions: 'full' })).full!.buffer))).toBe(true);
    expect(Array.from(a.argmax)).toEqual(Array.from(b.argmax));
  });

  it('computes KL divergences in C++ as klDivergenceRow does in JS', async () => {
    const tokens = packed.tokenize(SAMPLE);
    const a = await packed.score(tokens.subarray(0, 40), { distributions: 'full' });
    const b = await packed.score(tokens.subarray(1, 41), { distributions: 'full' });
    const vocab = packed.vocabSize;
    const rows = a.argmax.length;
    const native = await nativeKlDivergence(a.full!, b.full!, vocab, rows, 2);
    expect(native).toBeInstanceOf(Float64Array);
    for (let r = 0; r < rows; r += 1) {
      const js = klDivergenceRow(a.full!, b.full!, r * vocab, vocab);
      expect(js).toBeGreaterThan(0);
      expect(Math.abs((native![r] as number) - js)).toBeLessThanOrEqual(1e-12 * js);
    }
    // Identical rows: exactly 0, never a negative rounding residue.
    expect(Array.from((await nativeKlDivergence(a.full!, a.full!, vocab, rows, 1))!)).toEqual(new Array(rows).fill(0));
  });

  it('reports log-probabilities that sum to one at every position, the target equal to its row entry', async () => {
    const tokens = packed.tokenize(SAMPLE);
    const { full, tokenLogProbs, argmax } = await packed.score(tokens, { distributions: 'full' });
    const vocab = packed.vocabSize;
    for (let p = 0; p < tokenLogProbs.length; p += 1) {
      const row = full!.subarray(p * vocab, (p + 1) * vocab);
      let total = 0;
      let best = 0;
      for (let v = 0; v < vocab; v += 1) {
        total += Math.exp(row[v] as number);
        if ((row[v] as number) > (row[best] as number)) best = v;
      }
      expect(Math.abs(total - 1)).toBeLessThan(1e-6);
      expect(argmax[p]).toBe(best);
      expect(tokenLogProbs[p]).toBe(row[tokens[p + 1] as number]);
    }
  });
});
