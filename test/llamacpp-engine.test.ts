import { copyFileSync, existsSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToGguf } from '../src/converters/gguf/convert.js';
import type { Engine, ScoreResult } from '../src/verify/engine.js';
import { createLlamaCppEngine, DEFAULT_SEQUENCES, type LlamaCppEngine } from '../src/verify/engines/llamacpp.js';
import { NATIVE_ADDON_PATH } from '../src/verify/engines/llamacpp-native.js';
import { createReferenceEngine, type ReferenceEngine } from '../src/verify/engines/reference.js';
import { expectPolyquantError } from './helpers/errors.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, REPO_ROOT, sharedPath } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-llamacpp-engine-');
afterAll(() => scratch.remove());
/** The bundled tiny GPT-NeoX (hidden 64, 2 layers, vocab 384, context 128): hermetic and fast. */
const TINY_NEOX = join(REPO_ROOT, 'fixtures', 'tiny-neox');
const SAMPLE = '서울은 한강을 끼고 있는 큰 도시이다. The quick brown fox jumps over the lazy dog. 오늘은 날씨가 맑다. 1234 ';

function maxAbsDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i += 1) max = Math.max(max, Math.abs((a[i] as number) - (b[i] as number)));
  return max;
}

function sum(values: ArrayLike<number>): number {
  let total = 0;
  for (let i = 0; i < values.length; i += 1) total += values[i] as number;
  return total;
}

/** Every continuation's summed log-likelihood, the slow way: score context + continuation from the context's end. */
async function continuationsByScore(engine: Engine, context: Int32Array, continuations: readonly Int32Array[]): Promise<number[]> {
  const sums: number[] = [];
  for (const continuation of continuations) {
    const window = new Int32Array([...context, ...continuation]);
    sums.push(sum((await engine.score(window, { from: context.length })).tokenLogProbs));
  }
  return sums;
}

describe('the llamacpp engine on the bundled tiny GPT-NeoX (f32 GGUF)', () => {
  let gguf: string;
  let engine: LlamaCppEngine;
  let reference: ReferenceEngine;

  beforeAll(async () => {
    gguf = join(scratch.path, 'tiny-neox-f32.gguf');
    await convertToGguf(TINY_NEOX, { type: 'f32', out: gguf, workers: 0 });
    engine = await createLlamaCppEngine(gguf, { device: 'cpu', threads: 1 });
    reference = await createReferenceEngine(TINY_NEOX, { threads: 0 });
  });
  afterAll(async () => {
    await engine?.close();
    await reference?.close();
  });

  it('describes itself: name, CPU device, the GGUF context length and vocabulary', () => {
    expect(engine.name).toBe('llamacpp');
    expect(engine.device).toBe('cpu');
    expect(engine.gpu).toBeUndefined();
    expect(engine.path).toBe(gguf);
    expect(engine.contextLength).toBe(128);
    expect(engine.trainContextLength).toBe(128);
    expect(engine.vocabSize).toBe(reference.vocabSize);
    expect(engine.parallelism).toBe(engine.distributionPath === 'native' ? DEFAULT_SEQUENCES : 1);
  });

  it('tokenizes like tokenizer.json, adding no BOS or EOS, and parses special tokens in the text', () => {
    const text = `${SAMPLE}<|endoftext|>끝`;
    expect(Array.from(engine.tokenize(text))).toEqual(Array.from(reference.tokenize(text)));
    expect(engine.tokenize('')).toEqual(new Int32Array(0));
  });

  it('gives the reference log-probabilities within 1e-2 and the same top-1 at every position', async () => {
    const tokens = engine.tokenize(SAMPLE);
    const ours = await engine.score(tokens, { distributions: 'full' });
    const theirs = await reference.score(tokens, { distributions: 'full' });
    expect(ours.full).toHaveLength((tokens.length - 1) * engine.vocabSize);
    expect(maxAbsDifference(ours.full as Float32Array, theirs.full as Float32Array)).toBeLessThan(1e-2);
    expect(maxAbsDifference(ours.tokenLogProbs, theirs.tokenLogProbs)).toBeLessThan(1e-2);
    expect(Array.from(ours.argmax)).toEqual(Array.from(theirs.argmax));
  });

  it('returns the same target log-probabilities whatever distributions are asked for, and scores from `from` on', async () => {
    const tokens = engine.tokenize(SAMPLE);
    const from = 7;
    const none = await engine.score(tokens, { from });
    const full = await engine.score(tokens, { from, distributions: 'full' });
    const topk = await engine.score(tokens, { from, distributions: 'topk', topK: 5 });
    expect(none.tokenLogProbs).toHaveLength(tokens.length - from);
    expect(none.full).toBeUndefined();
    expect(Array.from(topk.tokenLogProbs)).toEqual(Array.from(none.tokenLogProbs));
    expect(Array.from(full.tokenLogProbs)).toEqual(Array.from(none.tokenLogProbs));
    expect(Array.from(full.argmax)).toEqual(Array.from(none.argmax));
    const vocab = engine.vocabSize;
    const rows = full.full as Float32Array;
    const top = topk.topk as NonNullable<ScoreResult['topk']>;
    expect(top.k).toBe(5);
    for (let position = 0; position < none.tokenLogProbs.length; position += 1) {
      const row = rows.subarray(position * vocab, (position + 1) * vocab);
      expect(row[tokens[from + position] as number]).toBe(none.tokenLogProbs[position]);
      // A full distribution: probabilities sum to 1.
      expect(sum(Array.from(row, Math.exp))).toBeCloseTo(1, 4);
      expect(top.ids[position * 5]).toBe(none.argmax[position]);
      for (let j = 0; j < 5; j += 1) {
        expect(top.logProbs[position * 5 + j]).toBe(row[top.ids[position * 5 + j] as number]);
        if (j > 0) expect(top.logProbs[position * 5 + j] as number).toBeLessThanOrEqual(top.logProbs[position * 5 + j - 1] as number);
      }
      const kept = Array.from(top.logProbs.subarray(position * 5, position * 5 + 5), Math.exp);
      expect(Math.exp(top.restLogMass[position] as number) + sum(kept)).toBeCloseTo(1, 4);
    }
    expect((await engine.score(tokens, { from: tokens.length })).tokenLogProbs).toHaveLength(0);
  });

  it('scores continuations on a shared context exactly as scoring each concatenation', async () => {
    const context = engine.tokenize('서울은 한강을 끼고 있는');
    const continuations = [' 큰 도시이다.', ' 강', ' 산이 아니다. The fox'].map((text) => engine.tokenize(text));
    const shared = await engine.scoreContinuations(context, continuations);
    const separately = await continuationsByScore(engine, context, continuations);
    expect(shared).toHaveLength(3);
    expect(maxAbsDifference(shared, separately)).toBeLessThan(1e-4);
    expect(maxAbsDifference(shared, await reference.scoreContinuations(context, continuations))).toBeLessThan(2e-2);
    // Interleaved with window scoring, the KV cache is rebuilt, never reused stale.
    await engine.score(engine.tokenize(SAMPLE));
    expect(await engine.scoreContinuations(context, continuations)).toEqual(shared);
  });

  it('queues concurrent requests on its one sequence and gives each its own result', async () => {
    const a = engine.tokenize(SAMPLE);
    const b = engine.tokenize('오늘은 날씨가 맑고 바람이 시원하다. 서울은 큰 도시이다.');
    const [first, second] = await Promise.all([engine.score(a), engine.score(b)]);
    expect(Array.from(first.tokenLogProbs)).toEqual(Array.from((await engine.score(a)).tokenLogProbs));
    expect(Array.from(second.tokenLogProbs)).toEqual(Array.from((await engine.score(b)).tokenLogProbs));
  });

  it('refuses a window longer than the context, bad ids and bad options with errors naming the file and limit', async () => {
    const long = new Int32Array(129).fill(5);
    await expectPolyquantError(engine.score(long), 'usage', 'the window has 129 tokens, more than the context length 128', gguf);
    await expectPolyquantError(engine.score(new Int32Array([1, 384])), 'usage', 'token id 384 at index 1, outside the vocabulary 0 … 383');
    await expectPolyquantError(engine.score(new Int32Array([1, 2]), { from: 0 }), 'usage', 'from is 0');
    await expectPolyquantError(engine.score(new Int32Array([1, 2]), { distributions: 'all' as 'full' }), 'usage', 'distributions is "all"');
    await expectPolyquantError(engine.scoreContinuations(new Int32Array(0), [new Int32Array([1])]), 'usage', 'the context is empty');
    await expectPolyquantError(
      engine.scoreContinuations(new Int32Array(100).fill(5), [new Int32Array(29).fill(5)]),
      'usage',
      'context (100 tokens) + continuation 0 (29) is longer than the context length 128',
    );
  });

  it('refuses to work once closed', async () => {
    const closing = await createLlamaCppEngine(gguf, { device: 'cpu', contextLength: 32 });
    expect(closing.contextLength).toBe(32);
    await closing.close();
    await closing.close();
    await expectPolyquantError(closing.score(new Int32Array([1, 2])), 'usage', 'closed');
  });
});

describe('createLlamaCppEngine on bad input', () => {
  it('names a missing file', async () => {
    const missing = join(scratch.path, 'missing.gguf');
    const error = await expectPolyquantError(createLlamaCppEngine(missing), 'not-found', missing);
    expect(error.exitCode).toBe(2);
  });

  it('names a file that is not a GGUF, and a truncated GGUF, before llama.cpp ever reads them', async () => {
    const text = join(scratch.path, 'not-a-model.gguf');
    writeFileSync(text, 'this is not a GGUF file at all');
    await expectPolyquantError(createLlamaCppEngine(text), 'malformed', text, 'not a GGUF file (bad magic)');
    const good = join(scratch.path, 'whole.gguf');
    await convertToGguf(TINY_NEOX, { type: 'q8_0', out: good, workers: 0 });
    const cut = join(scratch.path, 'cut.gguf');
    copyFileSync(good, cut);
    truncateSync(cut, readFileSync(good).length - 1000);
    await expectPolyquantError(createLlamaCppEngine(cut), 'malformed', cut, 'runs past the end of the file');
    const header = join(scratch.path, 'header-only.gguf');
    copyFileSync(good, header);
    truncateSync(header, 200);
    await expectPolyquantError(createLlamaCppEngine(header), 'malformed', header);
  });

  it('refuses bad options: device, threads, context length', async () => {
    const gguf = join(scratch.path, 'options.gguf');
    await convertToGguf(TINY_NEOX, { type: 'f16', out: gguf, workers: 0 });
    await expectPolyquantError(createLlamaCppEngine(gguf, { device: 'tpu' as 'cpu' }), 'usage', 'device is "tpu"');
    await expectPolyquantError(createLlamaCppEngine(gguf, { threads: 0 }), 'usage', 'threads is 0');
    await expectPolyquantError(createLlamaCppEngine(gguf, { contextLength: 1 }), 'usage', 'contextLength is 1', gguf);
  });

  it('fails clearly when device gpu is asked for on a machine without a usable GPU backend', async () => {
    const gguf = join(scratch.path, 'gpu.gguf');
    await convertToGguf(TINY_NEOX, { type: 'f16', out: gguf, workers: 0 });
    let engine: LlamaCppEngine | undefined;
    try {
      engine = await createLlamaCppEngine(gguf, { device: 'gpu' });
    } catch (error) {
      await expectPolyquantError(Promise.reject(error), 'unsupported', 'the llamacpp engine found no usable GPU', gguf);
      return;
    }
    // A machine with a GPU prebuilt and a GPU: then it must say so.
    expect(engine.device).toBe('gpu');
    expect(engine.gpu).toBeDefined();
    await engine.close();
  });
});

describe.skipIf(!HAS_SHARED)('the llamacpp engine against the reference on polyglot-ko-tiny', () => {
  let reference: ReferenceEngine;
  let window: Int32Array;

  beforeAll(async () => {
    reference = await createReferenceEngine(POLYGLOT_TINY_DIR, { threads: 1, contextLength: 128 });
    const text = readFileSync(sharedPath('data', 'korean-text', 'valid.txt'), 'utf8');
    window = reference.tokenize(text.slice(0, 2000)).slice(0, 128);
    expect(window).toHaveLength(128);
  });
  afterAll(async () => {
    await reference?.close();
  });

  for (const type of ['f32', 'f16'] as const) {
    it(`${type}: log-probabilities within 1e-2 over a 128-token window, top-1 identical, continuations shared exactly`, async () => {
      const gguf = join(scratch.path, `polyglot-ko-tiny-${type}.gguf`);
      await convertToGguf(POLYGLOT_TINY_DIR, { type, out: gguf });
      const engine = await createLlamaCppEngine(gguf, { device: 'cpu', contextLength: 128 });
      try {
        expect(engine.vocabSize).toBe(reference.vocabSize);
        const ours = await engine.score(window, { distributions: 'full' });
        const theirs = await reference.score(window, { distributions: 'full' });
        const difference = maxAbsDifference(ours.full as Float32Array, theirs.full as Float32Array);
        expect(difference).toBeLessThan(1e-2);
        expect(maxAbsDifference(ours.tokenLogProbs, theirs.tokenLogProbs)).toBeLessThan(1e-2);
        expect(Array.from(ours.argmax)).toEqual(Array.from(theirs.argmax));
        console.log(`${type}: max |Δ log p| ${difference.toExponential(2)} over ${ours.argmax.length} positions × ${engine.vocabSize}`);

        const context = window.subarray(0, 60);
        const continuations = [window.slice(60, 61), window.slice(60, 70), window.slice(80, 100)];
        const shared = await engine.scoreContinuations(context, continuations);
        expect(maxAbsDifference(shared, await continuationsByScore(engine, context, continuations))).toBeLessThan(1e-4);
        expect(maxAbsDifference(shared, await reference.scoreContinuations(context, continuations))).toBeLessThan(5e-2);
      } finally {
        await engine.close();
      }
    });
  }
});

/** Opens the GGUF with POLYQUANT_LLAMACPP_PATH set to `path` (restored afterwards). */
async function openOnPath(file: string, path: 'native' | 'addon' | 'public', options: Parameters<typeof createLlamaCppEngine>[1] = {}): Promise<LlamaCppEngine> {
  const previous = process.env['POLYQUANT_LLAMACPP_PATH'];
  process.env['POLYQUANT_LLAMACPP_PATH'] = path;
  try {
    return await createLlamaCppEngine(file, { device: 'cpu', contextLength: 128, ...options });
  } finally {
    if (previous === undefined) delete process.env['POLYQUANT_LLAMACPP_PATH'];
    else process.env['POLYQUANT_LLAMACPP_PATH'] = previous;
  }
}

describe.skipIf(!HAS_SHARED)('the llamacpp engine gives the same numbers on its native, addon and public paths', () => {
  it('addon and public: identical log-probabilities, argmax and continuation sums on polyglot-ko-tiny f16', async () => {
    const dir = tempDir('polyquant-llamacpp-paths-');
    try {
      const file = join(dir.path, 'f16.gguf');
      await convertToGguf(POLYGLOT_TINY_DIR, { type: 'f16', out: file });
      const fast = await openOnPath(file, 'addon');
      const slow = await openOnPath(file, 'public');
      try {
        expect(fast.distributionPath).toBe('addon');
        expect(slow.distributionPath).toBe('public');
        const tokens = fast.tokenize('오늘은 아침부터 비가 내렸다. 우산을 챙겨 집을 나섰지만 바람이 세서 옷이 조금 젖었다.');
        const [a, b] = [await fast.score(tokens, { distributions: 'full' }), await slow.score(tokens, { distributions: 'full' })];
        expect(Buffer.from(a.full!.buffer).equals(Buffer.from(b.full!.buffer))).toBe(true);
        expect(Array.from(a.tokenLogProbs)).toEqual(Array.from(b.tokenLogProbs));
        expect(Array.from(a.argmax)).toEqual(Array.from(b.argmax));
        const continuations = [tokens.subarray(5, 9), tokens.subarray(9, 10)];
        expect(await fast.scoreContinuations(tokens.subarray(0, 5), continuations)).toEqual(await slow.scoreContinuations(tokens.subarray(0, 5), continuations));
      } finally {
        await Promise.all([fast.close(), slow.close()]);
      }
    } finally {
      dir.remove();
    }
  });

  it.skipIf(!existsSync(NATIVE_ADDON_PATH))(
    'native and addon: the same logits (node-llama-cpp rows are the native rows up to its float32 softmax normaliser), the same argmax, tokens and sums',
    async () => {
      const dir = tempDir('polyquant-llamacpp-native-');
      try {
        const file = join(dir.path, 'f16.gguf');
        await convertToGguf(POLYGLOT_TINY_DIR, { type: 'f16', out: file });
        const native = await openOnPath(file, 'native');
        const addon = await openOnPath(file, 'addon');
        try {
          expect(native.distributionPath).toBe('native');
          const text = readFileSync(sharedPath('data', 'korean-text', 'valid.txt'), 'utf8').slice(0, 4000);
          const tokens = native.tokenize(text).subarray(0, 128);
          expect(Array.from(tokens)).toEqual(Array.from(addon.tokenize(text).subarray(0, 128)));
          const [a, b] = [await native.score(tokens, { distributions: 'full' }), await addon.score(tokens, { distributions: 'full' })];
          expect(Array.from(a.argmax)).toEqual(Array.from(b.argmax));
          const vocab = native.vocabSize;
          let worstRenormalised = 0;
          let worstNormaliser = 0;
          let worstNativeSum = 0;
          for (let p = 0; p < a.argmax.length; p += 1) {
            const nativeRow = a.full!.subarray(p * vocab, (p + 1) * vocab);
            const addonRow = b.full!.subarray(p * vocab, (p + 1) * vocab);
            // node-llama-cpp's sampler soft-maxes in float32: its probabilities sum to 1 only within ~1e-4.
            const addonLogSum = Math.log(sum(Array.from(addonRow, Math.exp)));
            worstNormaliser = Math.max(worstNormaliser, Math.abs(addonLogSum));
            worstNativeSum = Math.max(worstNativeSum, Math.abs(sum(Array.from(nativeRow, Math.exp)) - 1));
            for (let v = 0; v < vocab; v += 1) {
              const theirs = addonRow[v] as number;
              // Below ~e-30 node-llama-cpp's float32 probabilities lose digits (and underflow to its floor).
              if (theirs < -30) continue;
              worstRenormalised = Math.max(worstRenormalised, Math.abs((nativeRow[v] as number) - (theirs - addonLogSum)));
            }
            expect(a.tokenLogProbs[p]).toBe(nativeRow[tokens[p + 1] as number]);
          }
          console.log(
            `native vs addon: node-llama-cpp normaliser off by ≤ ${worstNormaliser.toExponential(2)} nats; after renormalising, max |Δ log p| ${worstRenormalised.toExponential(2)}; native rows sum to 1 within ${worstNativeSum.toExponential(2)}`,
          );
          expect(worstRenormalised).toBeLessThan(1e-5);
          expect(worstNormaliser).toBeLessThan(2e-3);
          expect(worstNativeSum).toBeLessThan(1e-5);
          const context = tokens.subarray(0, 40);
          const continuations = [tokens.subarray(40, 44), tokens.subarray(44, 45), tokens.subarray(50, 70)];
          const nativeSums = await native.scoreContinuations(context, continuations);
          const addonSums = await addon.scoreContinuations(context, continuations);
          // Each token of the addon's sums carries its row's normaliser error (≤ 2e-3 per token).
          for (const [k, continuation] of continuations.entries()) {
            expect(Math.abs((nativeSums[k] as number) - (addonSums[k] as number))).toBeLessThan(2e-3 * continuation.length);
          }
          expect(maxAbsDifference(nativeSums, await continuationsByScore(native, context, continuations))).toBeLessThan(1e-4);
        } finally {
          await Promise.all([native.close(), addon.close()]);
        }
      } finally {
        dir.remove();
      }
    },
  );
});
