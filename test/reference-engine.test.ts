import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PolyquantError } from '../src/errors.js';
import { type Checkpoint, readCheckpoint } from '../src/readers/checkpoint.js';
import { type ReferenceEngine, createReferenceEngine } from '../src/verify/engines/reference.js';
import { readAsFloat32 } from '../src/verify/engines/reference-layout.js';
import { erf, geluErf, geluTanh, rowMaximum, topKOfRow } from '../src/verify/engines/reference-math.js';
import { MatrixKernels, sharedMemory } from '../src/verify/engines/reference-wasm.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR } from './helpers/shared.js';
import { makeTinyModel, tempDir } from './helpers/tiny-model.js';

// ------------------------------------------------------------------------------------------ oracles

/**
 * erf from its Maclaurin series for |x| ≤ 3 (terms peak near e^{x²}/√π·… ≈ 1e3 at x = 3, so double
 * keeps ~1e-13 absolute) and from erfc's continued fraction (modified Lentz) beyond, where it converges in
 * a few dozen terms. Independent of the fdlibm rational approximations under test.
 */
function erfOracle(x: number): number {
  const a = Math.abs(x);
  if (a <= 3) {
    let term = x;
    let sum = x;
    for (let n = 1; n < 200; n += 1) {
      term *= (-x * x) / n;
      const contribution = term / (2 * n + 1);
      sum += contribution;
      if (Math.abs(contribution) < 1e-18) break;
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc(a) = exp(−a²)/√π · 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + 2/(a + …)))))
  const tiny = 1e-300;
  let f = a;
  let c = a;
  let d = 0;
  for (let n = 1; n < 500; n += 1) {
    const numerator = n / 2;
    d = a + numerator * d;
    d = 1 / (Math.abs(d) < tiny ? tiny : d);
    c = a + numerator / c;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  const erfc = Math.exp(-a * a) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

/** A deterministic stream of token ids in [0, vocab). */
function tokenStream(count: number, vocab: number, seed: number): Int32Array {
  let state = seed >>> 0 || 1;
  return Int32Array.from({ length: count }, () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state % vocab;
  });
}

/**
 * GPTNeoXForCausalLM written out plainly from modeling_gpt_neox.py, in double precision, with no KV
 * cache, HF's own interleaved QKV layout and every position computed: the oracle the engine must match.
 */
interface PlainModel {
  readonly checkpoint: Checkpoint;
  readonly weights: Map<string, Float64Array>;
}

async function loadPlainModel(dir: string, transform?: (values: Float32Array) => Float32Array): Promise<PlainModel> {
  const checkpoint = await readCheckpoint(dir);
  const weights = new Map<string, Float64Array>();
  for (const [name, tensor] of checkpoint.tensors) {
    const values = await readAsFloat32(tensor);
    weights.set(name, Float64Array.from(transform !== undefined && tensor.shape.length === 2 ? transform(values) : values));
  }
  return { checkpoint, weights };
}

function plainLogits(model: PlainModel, tokens: ArrayLike<number>): Float64Array[] {
  const config = model.checkpoint.config;
  const { hiddenSize: hidden, numHeads: heads, headDim, rotaryDims, intermediateSize: inner, vocabSize: vocab } = config;
  const weight = (name: string): Float64Array => {
    const values = model.weights.get(name);
    if (values === undefined) throw new Error(`no ${name}`);
    return values;
  };
  const linear = (input: Float64Array, w: Float64Array, b: Float64Array | undefined, outFeatures: number): Float64Array => {
    const inFeatures = input.length;
    const out = new Float64Array(outFeatures);
    for (let o = 0; o < outFeatures; o += 1) {
      let sum = b === undefined ? 0 : (b[o] as number);
      for (let i = 0; i < inFeatures; i += 1) sum += (input[i] as number) * (w[o * inFeatures + i] as number);
      out[o] = sum;
    }
    return out;
  };
  const layerNorm = (input: Float64Array, w: Float64Array, b: Float64Array): Float64Array => {
    const mean = input.reduce((sum, value) => sum + value, 0) / input.length;
    const variance = input.reduce((sum, value) => sum + (value - mean) ** 2, 0) / input.length;
    return input.map((value, i) => ((value - mean) / Math.sqrt(variance + config.layerNormEps)) * (w[i] as number) + (b[i] as number));
  };
  const gelu = config.hiddenAct === 'gelu' ? (x: number) => 0.5 * x * (1 + erfOracle(x / Math.SQRT2)) : geluTanh;
  const rope = (vector: Float64Array, position: number): void => {
    const half = rotaryDims / 2;
    for (let i = 0; i < half; i += 1) {
      const angle = position / config.rotaryBase ** ((2 * i) / rotaryDims);
      const [first, second] = [vector[i] as number, vector[i + half] as number];
      vector[i] = first * Math.cos(angle) - second * Math.sin(angle);
      vector[i + half] = second * Math.cos(angle) + first * Math.sin(angle);
    }
  };
  let states = Array.from(tokens, (token) => weight('gpt_neox.embed_in.weight').slice(token * hidden, (token + 1) * hidden));
  for (let layer = 0; layer < config.numLayers; layer += 1) {
    const p = (suffix: string): Float64Array => weight(`gpt_neox.layers.${layer}.${suffix}`);
    const normed = states.map((state) => layerNorm(state, p('input_layernorm.weight'), p('input_layernorm.bias')));
    const qkv = normed.map((state) => linear(state, p('attention.query_key_value.weight'), p('attention.query_key_value.bias'), 3 * hidden));
    // HF: qkv.view(..., heads, 3·headDim): head h's q, k, v are consecutive headDim slices.
    const part = (position: number, head: number, which: number): Float64Array =>
      (qkv[position] as Float64Array).slice((head * 3 + which) * headDim, (head * 3 + which + 1) * headDim);
    const merged = states.map(() => new Float64Array(hidden));
    for (let head = 0; head < heads; head += 1) {
      const queries = states.map((_, position) => part(position, head, 0));
      const keys = states.map((_, position) => part(position, head, 1));
      const values = states.map((_, position) => part(position, head, 2));
      queries.forEach(rope);
      keys.forEach(rope);
      for (let position = 0; position < states.length; position += 1) {
        const scores = keys.slice(0, position + 1).map((key) => {
          let dot = 0;
          for (let d = 0; d < headDim; d += 1) dot += ((queries[position] as Float64Array)[d] as number) * (key[d] as number);
          return dot / Math.sqrt(headDim);
        });
        const max = Math.max(...scores);
        const exps = scores.map((score) => Math.exp(score - max));
        const total = exps.reduce((sum, value) => sum + value, 0);
        for (let d = 0; d < headDim; d += 1) {
          let sum = 0;
          for (let j = 0; j <= position; j += 1) sum += ((exps[j] as number) / total) * ((values[j] as Float64Array)[d] as number);
          (merged[position] as Float64Array)[head * headDim + d] = sum;
        }
      }
    }
    const attention = merged.map((state) => linear(state, p('attention.dense.weight'), p('attention.dense.bias'), hidden));
    const mlp = (state: Float64Array): Float64Array => {
      const up = linear(layerNorm(state, p('post_attention_layernorm.weight'), p('post_attention_layernorm.bias')), p('mlp.dense_h_to_4h.weight'), p('mlp.dense_h_to_4h.bias'), inner);
      return linear(up.map(gelu), p('mlp.dense_4h_to_h.weight'), p('mlp.dense_4h_to_h.bias'), hidden);
    };
    states = states.map((state, position) => {
      const attn = attention[position] as Float64Array;
      if (config.useParallelResidual) {
        const m = mlp(state);
        return state.map((value, i) => value + (attn[i] as number) + (m[i] as number));
      }
      const afterAttention = state.map((value, i) => value + (attn[i] as number));
      const m = mlp(afterAttention);
      return afterAttention.map((value, i) => value + (m[i] as number));
    });
  }
  const head = config.tieWordEmbeddings ? weight('gpt_neox.embed_in.weight') : weight('embed_out.weight');
  return states.map((state) =>
    linear(layerNorm(state, weight('gpt_neox.final_layer_norm.weight'), weight('gpt_neox.final_layer_norm.bias')), head, undefined, vocab),
  );
}

function logSoftmax(logits: Float64Array): Float64Array {
  const max = Math.max(...logits);
  const logSum = max + Math.log(logits.reduce((sum, value) => sum + Math.exp(value - max), 0));
  return logits.map((value) => value - logSum);
}

/** The plain forward's log p(tokens[i]) for i ≥ from. */
function plainTokenLogProbs(model: PlainModel, tokens: Int32Array, from = 1): number[] {
  const logits = plainLogits(model, tokens.subarray(0, tokens.length - 1));
  const out: number[] = [];
  for (let i = from; i < tokens.length; i += 1) out.push(logSoftmax(logits[i - 1] as Float64Array)[tokens[i] as number] as number);
  return out;
}

function maxAbsDifference(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i += 1) max = Math.max(max, Math.abs((a[i] as number) - (b[i] as number)));
  return max;
}

async function usageError(promise: Promise<unknown>): Promise<PolyquantError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof PolyquantError) return error;
    throw error;
  }
  throw new Error('expected a PolyquantError');
}

// ------------------------------------------------------------------------------------------ maths

describe('erf and GELU', () => {
  it('agrees with a series / continued-fraction oracle to 1e-12 over [-7, 7] (the limit of the oracle itself; float32 needs 6e-8)', () => {
    let worst = 0;
    for (let i = -7000; i <= 7000; i += 1) {
      const x = i / 1000 + 1e-4;
      worst = Math.max(worst, Math.abs(erf(x) - erfOracle(x)));
    }
    expect(worst).toBeLessThan(1e-12);
  });

  it('matches tabulated values, is odd, and saturates at ±1', () => {
    expect(erf(0.5)).toBeCloseTo(0.5204998778130465, 15);
    expect(erf(1)).toBeCloseTo(0.8427007929497149, 15);
    expect(erf(2)).toBeCloseTo(0.9953222650189527, 15);
    expect(erf(3)).toBeCloseTo(0.9999779095030014, 15);
    expect(erf(1e-12)).toBeCloseTo(1.1283791670955126e-12, 25);
    expect(erf(0)).toBe(0);
    for (const x of [0.1, 0.9, 1.3, 2.9, 4.5]) expect(erf(-x)).toBe(-erf(x));
    expect(erf(Number.POSITIVE_INFINITY)).toBe(1);
    expect(erf(Number.NEGATIVE_INFINITY)).toBe(-1);
    expect(erf(Number.NaN)).toBeNaN();
  });

  it('rounds the exact GELU to the same float32 as the oracle, and computes the tanh form', () => {
    let mismatches = 0;
    for (let i = -6000; i <= 6000; i += 1) {
      const x = Math.fround(i / 1000);
      const expected = Math.fround(0.5 * x * (1 + erfOracle(x / Math.SQRT2)));
      if (Math.fround(geluErf(x)) !== expected) mismatches += 1;
    }
    expect(mismatches).toBe(0);
    expect(geluTanh(1)).toBeCloseTo(0.8411919906082768, 15);
    expect(geluErf(1)).toBeCloseTo(0.8413447460685429, 15);
  });
});

describe('the WebAssembly kernels', () => {
  const memory = sharedMemory(16);
  const kernels = new MatrixKernels(memory);
  const floats = new Float32Array(memory.buffer);
  const fill = (offset: number, count: number, seed: number): void => {
    const ids = tokenStream(count, 2001, seed);
    for (let i = 0; i < count; i += 1) floats[offset / 4 + i] = ((ids[i] as number) - 1000) / 1000;
  };

  it('multiplies strided views exactly like a double dot product rounded once, for every edge shape', () => {
    for (const [rows, cols, depth] of [
      [1, 1, 1],
      [2, 4, 4],
      [3, 5, 7],
      [5, 9, 33],
      [8, 12, 64],
    ] as const) {
      const [ldx, ldw, ldy] = [depth + 3, depth + 1, cols + 2];
      const x = 64;
      const w = x + rows * ldx * 4 + 64;
      const y = w + cols * ldw * 4 + 64;
      fill(x, rows * ldx, rows);
      fill(w, cols * ldw, cols);
      floats.fill(123, y / 4, y / 4 + rows * ldy);
      kernels.matmul(x, ldx, w, ldw, y, ldy, rows, cols, depth);
      for (let t = 0; t < rows; t += 1) {
        for (let n = 0; n < cols; n += 1) {
          let dot = 0;
          for (let k = 0; k < depth; k += 1) dot += (floats[x / 4 + t * ldx + k] as number) * (floats[w / 4 + n * ldw + k] as number);
          expect(Math.abs((floats[y / 4 + t * ldy + n] as number) - dot)).toBeLessThan(1e-6 * Math.max(1, Math.sqrt(depth)));
        }
        // Columns past `cols` in Y are untouched.
        expect(floats[y / 4 + t * ldy + cols]).toBe(123);
      }
    }
  });

  it('sums exponentials in double to 1e-14 relative, including lengths that are not a multiple of the block', () => {
    for (const count of [1, 7, 8, 9, 1000, 30080]) {
      fill(64, count, count);
      for (let i = 0; i < count; i += 1) floats[16 + i] = (floats[16 + i] as number) * 30;
      let expected = 0;
      for (let i = 0; i < count; i += 1) expected += Math.exp((floats[16 + i] as number) - 5);
      expect(Math.abs(kernels.sumExp(64, count, 5) - expected) / expected).toBeLessThan(1e-14);
    }
  });
});

describe('row summaries', () => {
  it('picks the first maximum like torch.argmax and reports NaN rows', () => {
    expect(rowMaximum(Float32Array.of(1, 3, 3, 2), 0, 4)).toEqual({ max: 3, argmax: 1 });
    expect(rowMaximum(Float32Array.of(1, Number.NaN, 2), 0, 3).max).toBeNaN();
  });

  it('returns the top k most probable first, ties to the lower id, and the rest mass summed directly', () => {
    const logits = Float32Array.of(0.5, 2, -1, 2, 1.5, -3);
    const logSumExp = Math.log(logits.reduce((sum, value) => sum + Math.exp(value), 0));
    const ids = new Int32Array(3);
    const logProbs = new Float32Array(3);
    const kept = new Uint8Array(6);
    const rest = topKOfRow(logits, 0, 6, 3, logSumExp, ids, logProbs, 0, kept);
    expect([...ids]).toEqual([1, 3, 4]);
    expect(logProbs[0]).toBeCloseTo(2 - logSumExp, 6);
    expect(rest).toBeCloseTo(Math.log(Math.exp(0.5) + Math.exp(-1) + Math.exp(-3)) - logSumExp, 12);
    expect([...kept]).toEqual([0, 0, 0, 0, 0, 0]);
  });
});

// ------------------------------------------------------------------------------------------ tiny models

describe('the reference engine on tiny synthetic GPT-NeoX models', () => {
  const scratch = tempDir('polyquant-reference-');
  /** Weights ×6: the synthetic N(0, 0.02) weights give near-uniform outputs; this makes attention and the
   * MLP matter, so a misplaced rope, bias or norm moves the log-probabilities by far more than 1e-4. */
  const amplify = (values: Float32Array): Float32Array => values.map((value) => value * 6);
  let parallelDir = '';
  let parallel: PlainModel;
  let engine: ReferenceEngine;
  afterAll(async () => {
    await engine?.close();
    scratch.remove();
  });
  beforeAll(async () => {
    parallelDir = await makeTinyModel(scratch.path);
    parallel = await loadPlainModel(parallelDir, amplify);
    engine = await createReferenceEngine(parallelDir, { threads: 0, weightTransform: (_name, values) => amplify(values), contextLength: 300 });
  });

  it('scores every token as the plain double-precision forward pass does (parallel residual)', async () => {
    const tokens = tokenStream(40, 384, 7);
    const result = await engine.score(tokens);
    expect(maxAbsDifference(result.tokenLogProbs, plainTokenLogProbs(parallel, tokens))).toBeLessThan(2e-5);
    // The amplified model is far from uniform (log 384 ≈ 5.95), so this comparison has teeth.
    expect(Math.max(...result.tokenLogProbs) - Math.min(...result.tokenLogProbs)).toBeGreaterThan(1);
  });

  it('runs windows longer than one step and one query block through the KV cache unchanged', async () => {
    // contextLength 300 > max_position_embeddings 128 is allowed (HF extends rope); 299 inputs = 2 steps.
    const tokens = tokenStream(300, 384, 11);
    const result = await engine.score(tokens);
    expect(maxAbsDifference(result.tokenLogProbs, plainTokenLogProbs(parallel, tokens))).toBeLessThan(2e-5);
  });

  it('computes the sequential residual, tied embeddings and the tanh GELU', async () => {
    for (const configPatch of [{ use_parallel_residual: false }, { tie_word_embeddings: true }, { hidden_act: 'gelu_new' }]) {
      const dir = await makeTinyModel(scratch.path, { configPatch });
      const plain = await loadPlainModel(dir, amplify);
      const variant = await createReferenceEngine(dir, { threads: 0, weightTransform: (_name, values) => amplify(values) });
      try {
        const tokens = tokenStream(24, 384, 3);
        const result = await variant.score(tokens);
        expect(maxAbsDifference(result.tokenLogProbs, plainTokenLogProbs(plain, tokens)), JSON.stringify(configPatch)).toBeLessThan(2e-5);
      } finally {
        await variant.close();
      }
    }
  });

  it('gives the same bits whether a window is scored whole, from a later position, or as cached continuations', async () => {
    const tokens = tokenStream(90, 384, 5);
    const whole = await engine.score(tokens);
    const later = await engine.score(tokens, { from: 70 });
    expect(later.tokenLogProbs).toEqual(whole.tokenLogProbs.subarray(69));
    expect(later.argmax).toEqual(whole.argmax.subarray(69));

    const context = tokens.subarray(0, 61);
    const continuations = [tokens.subarray(61, 90), tokenStream(5, 384, 99), tokens.subarray(61, 62), tokenStream(17, 384, 98)];
    const sums = await engine.scoreContinuations(context, continuations);
    for (const [index, continuation] of continuations.entries()) {
      const joined = Int32Array.from([...context, ...continuation]);
      const direct = await engine.score(joined, { from: context.length });
      let expected = 0;
      for (const value of direct.tokenLogProbs) expected += value;
      expect(sums[index]).toBe(expected);
    }
    expect(await engine.scoreContinuations(context, [new Int32Array(0)])).toEqual([0]);
  });

  it('returns full and top-k distributions consistent with the token log-probabilities and argmax', async () => {
    const tokens = tokenStream(20, 384, 13);
    const from = 4;
    const full = await engine.score(tokens, { from, distributions: 'full' });
    const topk = await engine.score(tokens, { from, distributions: 'topk', topK: 5 });
    const vocab = engine.vocabSize;
    expect(full.full).toHaveLength((tokens.length - from) * vocab);
    expect(topk.tokenLogProbs).toEqual(full.tokenLogProbs);
    for (let i = 0; i < tokens.length - from; i += 1) {
      const row = (full.full as Float32Array).subarray(i * vocab, (i + 1) * vocab);
      expect(row[tokens[from + i] as number]).toBeCloseTo(full.tokenLogProbs[i] as number, 5);
      expect(Math.log(row.reduce((sum, value) => sum + Math.exp(value), 0))).toBeCloseTo(0, 5);
      expect(rowMaximum(row, 0, vocab).argmax).toBe(full.argmax[i]);
      const distributions = topk.topk as NonNullable<typeof topk.topk>;
      expect(distributions.k).toBe(5);
      const ids = [...distributions.ids.subarray(i * 5, i * 5 + 5)];
      const logProbs = [...distributions.logProbs.subarray(i * 5, i * 5 + 5)];
      expect(ids[0]).toBe(full.argmax[i]);
      expect(logProbs).toEqual([...logProbs].sort((a, b) => b - a));
      for (const [slot, id] of ids.entries()) expect(logProbs[slot]).toBeCloseTo(row[id] as number, 5);
      const keptMass = logProbs.reduce((sum, value) => sum + Math.exp(value), 0);
      expect(distributions.restLogMass[i]).toBeCloseTo(Math.log(1 - keptMass), 4);
    }
  });

  it('passes every 2-D weight, and only those, through weightTransform with its HF name and shape', async () => {
    const seen: string[] = [];
    const probe = await createReferenceEngine(parallelDir, {
      threads: 0,
      weightTransform: (name, values, shape) => {
        seen.push(`${name}:${shape.join('x')}`);
        expect(values).toHaveLength(shape.reduce((a, b) => a * b, 1));
        return values;
      },
    });
    await probe.close();
    expect(seen).toEqual([
      'gpt_neox.embed_in.weight:384x64',
      ...[0, 1].flatMap((layer) => [
        `gpt_neox.layers.${layer}.attention.query_key_value.weight:192x64`,
        `gpt_neox.layers.${layer}.attention.dense.weight:64x64`,
        `gpt_neox.layers.${layer}.mlp.dense_h_to_4h.weight:256x64`,
        `gpt_neox.layers.${layer}.mlp.dense_4h_to_h.weight:64x256`,
      ]),
      'embed_out.weight:384x64',
    ]);
    const bad = await usageError(createReferenceEngine(parallelDir, { threads: 0, weightTransform: () => new Float32Array(3) }));
    expect(bad.code).toBe('usage');
    expect(bad.message).toContain('gpt_neox.embed_in.weight');
  });

  it('refuses windows past the context length, ids outside the vocabulary, and a bad from', async () => {
    expect((await usageError(engine.score(new Int32Array(301)))).message).toMatch(/301 tokens, more than the context length 300/);
    expect((await usageError(engine.score(Int32Array.of(1, 384, 2)))).message).toMatch(/token id 384 at index 1/);
    expect((await usageError(engine.score(Int32Array.of(1, -1)))).code).toBe('usage');
    expect((await usageError(engine.score(Int32Array.of(1, 2), { from: 0 }))).code).toBe('usage');
    expect((await usageError(engine.scoreContinuations(new Int32Array(0), [Int32Array.of(1)]))).code).toBe('usage');
    expect((await usageError(engine.scoreContinuations(new Int32Array(250), [new Int32Array(51)]))).code).toBe('usage');
  });

  it('gives identical results with 0 (inline), 1 and 2 worker threads, windows in flight concurrently', async () => {
    const windows = [0, 1, 2, 3].map((seed) => tokenStream(64 + seed * 9, 384, 100 + seed));
    const results: number[][][] = [];
    for (const threads of [0, 1, 2]) {
      const candidate = await createReferenceEngine(parallelDir, { threads, weightTransform: (_name, values) => amplify(values) });
      try {
        expect(candidate.parallelism).toBe(Math.max(1, threads));
        const scores = await Promise.all(windows.map((window) => candidate.score(window, { distributions: 'topk', topK: 3 })));
        results.push(scores.map((score) => [...score.tokenLogProbs, ...score.argmax, ...(score.topk?.logProbs ?? [])]));
      } finally {
        await candidate.close();
      }
      expect((await usageError(candidate.score(windows[0] as Int32Array))).message).toMatch(/closed/);
    }
    expect(results[1]).toEqual(results[0]);
    expect(results[2]).toEqual(results[0]);
  });
});

// ------------------------------------------------------------------------------------------ polyglot-ko-tiny

describe.skipIf(!HAS_SHARED)('the reference engine on polyglot-ko-tiny', () => {
  const reference = HAS_SHARED
    ? (JSON.parse(readFileSync(`${POLYGLOT_TINY_DIR}/reference/reference.json`, 'utf8')) as {
        sequences: { token_ids: number[]; logits_file: string; shape: [number, number] }[];
      })
    : { sequences: [] };
  let engine: ReferenceEngine;
  beforeAll(async () => {
    engine = await createReferenceEngine(POLYGLOT_TINY_DIR, { threads: 1 });
  });
  afterAll(async () => engine?.close());

  it.each(reference.sequences.map((sequence, index) => [index, sequence] as const))(
    'reproduces the PyTorch logits of reference sequence %i within 1e-4',
    async (_index, sequence) => {
      const bytes = readFileSync(`${POLYGLOT_TINY_DIR}/reference/${sequence.logits_file}`);
      const expected = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
      const logits = await engine.logits(Int32Array.from(sequence.token_ids));
      expect(logits).toHaveLength(sequence.shape[0] * sequence.shape[1]);
      const worst = maxAbsDifference(logits, expected);
      console.log(`${sequence.logits_file}: max |Δ logit| = ${worst.toExponential(2)}`);
      expect(worst).toBeLessThanOrEqual(1e-4);
    },
  );
});
