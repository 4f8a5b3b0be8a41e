/**
 * Calibration Hessians (src/calibrate/hessian.ts) for GPTQ: the diagonal against computeImatrix and the
 * engine's own squares, the off-diagonal entries of layer 0's query_key_value input against a plain
 * double-precision LayerNorm of the embeddings, symmetry, thread-count independence, the head, and the
 * refusals (memory limit, short text, non-finite activations).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { computeHessians, HESSIAN_DEFAULT_MAX_BYTES, type HessianResult, hessianBytes, hessianImatrix } from '../src/calibrate/hessian.js';
import { computeImatrix, cutChunks, type ImatrixResult, prepareCalibration } from '../src/calibrate/imatrix.js';
import { ERROR_CODES, PolyquantError } from '../src/errors.js';
import { type Checkpoint, readCheckpoint } from '../src/readers/checkpoint.js';
import type { TensorRef } from '../src/readers/tensor-ref.js';
import { createReferenceEngine } from '../src/verify/engines/reference.js';
import { readAsFloat32 } from '../src/verify/engines/reference-layout.js';
import { HAS_SHARED, REPO_ROOT, sharedPath } from './helpers/shared.js';
import { makeTinyModel, tempDir } from './helpers/tiny-model.js';

const TINY = join(REPO_ROOT, 'fixtures', 'tiny-neox');
const scratch = tempDir('polyquant-hessian-');
afterAll(() => scratch.remove());

/** Korean-ish text that the tiny byte-level tokenizer turns into a few thousand tokens. */
const TEXT = `${Array.from({ length: 60 }, (_, i) => `문장 ${i}: 한국어 모델을 양자화합니다. The quick brown fox ${i * 7}.`).join('\n')}\n`;

const LAYER_KINDS = ['attention.query_key_value', 'attention.dense', 'mlp.dense_h_to_4h', 'mlp.dense_4h_to_h'];

function bytesOf(array: Float64Array | Float32Array): Buffer {
  return Buffer.from(array.buffer, array.byteOffset, array.byteLength);
}

/**
 * H of layer 0's query_key_value from first principles: its input is input_layernorm(embed_in(token)), in
 * double from the checkpoint's weights, summed over every token of every chunk and divided by the count.
 */
async function layerZeroHessian(checkpoint: Checkpoint, windows: readonly Int32Array[]): Promise<Float64Array> {
  const read = async (name: string): Promise<Float32Array> => readAsFloat32(checkpoint.tensors.get(name) as TensorRef);
  const embed = await read('gpt_neox.embed_in.weight');
  const weight = await read('gpt_neox.layers.0.input_layernorm.weight');
  const bias = await read('gpt_neox.layers.0.input_layernorm.bias');
  const { hiddenSize: K, layerNormEps: eps } = checkpoint.config;
  const sums = new Float64Array(K * K);
  const x = new Float64Array(K);
  let count = 0;
  for (const window of windows) {
    for (const token of window) {
      const row = embed.subarray(token * K, (token + 1) * K);
      let mean = 0;
      for (const v of row) mean += v;
      mean /= K;
      let variance = 0;
      for (const v of row) variance += (v - mean) ** 2;
      const scale = 1 / Math.sqrt(variance / K + eps);
      for (let i = 0; i < K; i += 1) x[i] = ((row[i] as number) - mean) * scale * (weight[i] as number) + (bias[i] as number);
      for (let i = 0; i < K; i += 1) for (let j = 0; j < K; j += 1) sums[i * K + j] = (sums[i * K + j] as number) + (x[i] as number) * (x[j] as number);
      count += 1;
    }
  }
  return sums.map((value) => value / count);
}

/** The chunks imatrix (and so computeHessians) cuts from `texts`, BOS rule included. */
async function chunksOf(checkpoint: Checkpoint, texts: string[], ctx: number, chunks: number): Promise<Int32Array[]> {
  const { bos } = await prepareCalibration(checkpoint, { texts, ctx, chunks });
  return (await cutChunks(checkpoint, texts, ctx, chunks, bos)).windows;
}

/** The largest |ours − reference| over the largest |reference| (the diagonal's scale). */
function worstRelative(ours: Float64Array, reference: Float64Array): number {
  let worst = 0;
  let scale = 0;
  for (let i = 0; i < reference.length; i += 1) {
    worst = Math.max(worst, Math.abs((ours[i] as number) - (reference[i] as number)));
    scale = Math.max(scale, Math.abs(reference[i] as number));
  }
  return worst / scale;
}

function expectSymmetric(result: HessianResult): void {
  for (const [name, { columns: K, matrix }] of result.entries) {
    let asymmetric = 0;
    for (let i = 0; i < K; i += 1) for (let j = 0; j < i; j += 1) if (matrix[i * K + j] !== matrix[j * K + i]) asymmetric += 1;
    expect(asymmetric, name).toBe(0);
  }
}

/** hessianImatrix equals computeImatrix's float32 sums byte for byte, under the same names, with the same counts. */
function expectSameImatrix(hessians: HessianResult, imatrix: ImatrixResult): void {
  const derived = hessianImatrix(hessians);
  expect([...derived.keys()]).toEqual([...imatrix.entries.keys()]);
  for (const [name, entry] of imatrix.entries) {
    const ours = derived.get(name);
    expect(ours?.count, name).toBe(entry.count);
    expect(bytesOf(ours?.sums as Float32Array).equals(bytesOf(entry.sums)), name).toBe(true);
  }
}

describe('calibration Hessians on the bundled tiny model', () => {
  let text: string;
  let checkpoint: Checkpoint;
  let result: HessianResult;
  const options = { ctx: 32, chunks: 8 } as const;
  beforeAll(async () => {
    text = join(scratch.path, 'text.txt');
    writeFileSync(text, TEXT);
    checkpoint = await readCheckpoint(TINY);
    result = await computeHessians(checkpoint, { texts: [text], ...options, threads: 2, head: true });
  }, 60_000);

  it('holds a full symmetric K × K matrix per linear layer input, keyed by HF name in model order, the head last', () => {
    const names = [0, 1].flatMap((layer) => LAYER_KINDS.map((kind) => `gpt_neox.layers.${layer}.${kind}.weight`));
    expect([...result.entries.keys()]).toEqual([...names, 'embed_out.weight']);
    for (const [name, entry] of result.entries) {
      expect(entry.columns, name).toBe(name.endsWith('dense_4h_to_h.weight') ? 256 : 64);
      expect(entry.matrix.length).toBe(entry.columns ** 2);
      expect(entry.count).toBe(8 * 32);
    }
    expect(result).toMatchObject({ chunkCount: 8, chunkSize: 32, tokens: 256, engine: { name: 'reference', threads: 2 }, warnings: [] });
    expectSymmetric(result);
  });

  it("has the importance matrix as its diagonal: × count equals computeImatrix's sums exactly and the engine's double squares to 1e-12", async () => {
    const imatrix = await computeImatrix(checkpoint, { texts: [text], ...options, threads: 2, processOutput: true });
    expectSameImatrix(result, imatrix);
    // The same chunks through squaredInputs, summed in chunk order in double.
    const windows = await chunksOf(checkpoint, [text], 32, 8);
    const engine = await createReferenceEngine(checkpoint, { threads: 0, contextLength: 32 });
    try {
      let totals: Float64Array | undefined;
      for (const window of windows) {
        const squares = await engine.squaredInputs(window, { head: true });
        totals ??= new Float64Array(squares.length);
        for (let i = 0; i < squares.length; i += 1) totals[i] = (totals[i] as number) + (squares[i] as number);
      }
      const entries = [...result.entries.values()];
      for (const [index, slot] of engine.activationSlots(true).entries()) {
        const { columns: K, matrix, count } = entries[index] as (typeof entries)[number];
        for (let i = 0; i < K; i += 1) {
          const expected = (totals as Float64Array)[slot.offset + i] as number;
          expect(Math.abs((matrix[i * K + i] as number) * count - expected) / expected).toBeLessThanOrEqual(1e-12);
        }
      }
    } finally {
      await engine.close();
    }
  }, 60_000);

  it("matches a double-precision LayerNorm of the embeddings off the diagonal too (layer 0's query_key_value input)", async () => {
    const windows = await chunksOf(checkpoint, [text], 32, 8);
    const reference = await layerZeroHessian(checkpoint, windows);
    const ours = result.entries.get('gpt_neox.layers.0.attention.query_key_value.weight')?.matrix as Float64Array;
    // float32 activations, float32 products summed in float32 over a step: a few float32 ulps (2e-8 measured).
    expect(worstRelative(ours, reference)).toBeLessThan(1e-6);
  });

  it('gives the same bytes on 0 and 2 threads, and the same matrices with and without the head', async () => {
    const inline = await computeHessians(checkpoint, { texts: [text], ...options, threads: 0, head: true });
    expect(inline.engine.threads).toBe(1);
    for (const [name, entry] of result.entries) expect(bytesOf(inline.entries.get(name)?.matrix as Float64Array).equals(bytesOf(entry.matrix)), name).toBe(true);
    const headless = await computeHessians(checkpoint, { texts: [text], ...options, threads: 2 });
    expect(headless.entries.has('embed_out.weight')).toBe(false);
    expect(headless.entries.size).toBe(result.entries.size - 1);
    for (const [name, entry] of headless.entries) expect(bytesOf(entry.matrix).equals(bytesOf(result.entries.get(name)?.matrix as Float64Array)), name).toBe(true);
    // The head's input is the final LayerNorm's output: every diagonal entry positive.
    const head = result.entries.get('embed_out.weight');
    expect(head?.columns).toBe(64);
    for (let i = 0; i < 64; i += 1) expect(head?.matrix[i * 65]).toBeGreaterThan(0);
  }, 60_000);

  it('reports progress as chunks done of all chunks, in order', async () => {
    const seen: string[] = [];
    await computeHessians(checkpoint, { texts: [text], ctx: 32, chunks: 3, threads: 2, onProgress: (done, total) => seen.push(`${done}/${total}`) });
    expect(seen).toEqual(['0/3', '1/3', '2/3', '3/3']);
  }, 60_000);
});

describe('refusals', () => {
  let text: string;
  beforeAll(() => {
    text = join(scratch.path, 'refusal-text.txt');
    writeFileSync(text, TEXT);
  });

  it('counts K² doubles per matrix plus the packed totals and one chunk per thread in flight', () => {
    // polyglot-ko-1.3b: 24 blocks of hidden 2048, intermediate 8192: 15 GiB of matrices alone.
    const large = hessianBytes({ hiddenSize: 2048, intermediateSize: 8192, numLayers: 24 }, false, 1);
    expect(large.matrices).toBe(24 * (3 * 2048 ** 2 + 8192 ** 2) * 8);
    expect(large.total).toBeGreaterThan(HESSIAN_DEFAULT_MAX_BYTES);
    const tiny = hessianBytes({ hiddenSize: 64, intermediateSize: 256, numLayers: 2 }, true, 2);
    const packed = 2 * (3 * ((64 * 65) / 2) + (256 * 257) / 2) + (64 * 65) / 2;
    expect(tiny).toEqual({ matrices: (2 * (3 * 64 * 64 + 256 * 256) + 64 * 64) * 8, working: packed * 8 * 3, total: (2 * (3 * 64 * 64 + 256 * 256) + 64 * 64) * 8 + packed * 8 * 3 });
  });

  it('refuses a model whose Hessians pass maxBytes with a LIMIT error naming the model, the bytes and the limit, before loading anything', async () => {
    const error = await computeHessians(TINY, { texts: ['/nonexistent/never-read.txt'], ctx: 32, threads: 1, maxBytes: 100_000 }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(PolyquantError);
    const { code, message, file, hint } = error as PolyquantError;
    expect(code).toBe(ERROR_CODES.LIMIT);
    const needed = hessianBytes({ hiddenSize: 64, intermediateSize: 256, numLayers: 2 }, false, 1).total;
    expect(message).toContain(`(${needed} bytes:`);
    expect((error as PolyquantError).detail).toMatch(/^the calibration Hessians of 2 layers \(hidden 64, intermediate 256\) need \d+\.\d\d MiB \(\d+ bytes: /);
    expect(message).toContain('over the limit of 0.10 MiB (100000 bytes)');
    expect(file).toBe(TINY);
    expect(hint).toMatch(/raise maxBytes/);
  });

  it('gives the same typed error as imatrix for a text shorter than one chunk', async () => {
    const short = join(scratch.fresh(), 'short.txt');
    writeFileSync(short, '짧은 글.\n');
    const ours = await computeHessians(TINY, { texts: [short], ctx: 64 }).catch((caught: unknown) => caught);
    const theirs = await computeImatrix(TINY, { texts: [short], ctx: 64 }).catch((caught: unknown) => caught);
    expect(ours).toBeInstanceOf(PolyquantError);
    expect((ours as PolyquantError).code).toBe(ERROR_CODES.USAGE);
    expect((ours as PolyquantError).message).toBe((theirs as PolyquantError).message);
    expect((ours as PolyquantError).message).toMatch(/shorter than one chunk of 64 tokens.*short\.txt: \d+ tokens/);
  });

  it('stops with CHECK_FAILED naming the first tensor whose input is not finite', async () => {
    const checkpoint = await readCheckpoint(TINY);
    const name = 'gpt_neox.embed_in.weight';
    const embedding = checkpoint.tensors.get(name) as TensorRef;
    // Every embedding NaN (F16 0xffff): layer 0's LayerNorm, the QKV input, is the first to see it.
    const poisoned: TensorRef = {
      name,
      dtype: embedding.dtype,
      shape: embedding.shape,
      byteLength: embedding.byteLength,
      file: embedding.file,
      read: async () => new Uint8Array(embedding.byteLength).fill(0xff),
      rows: (rowsPerChunk, rowsOptions) => embedding.rows(rowsPerChunk, rowsOptions),
    };
    const tensors = new Map(checkpoint.tensors);
    tensors.set(name, poisoned);
    const error = await computeHessians({ ...checkpoint, tensors }, { texts: [text], ctx: 32, chunks: 2, threads: 1 }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(PolyquantError);
    expect((error as PolyquantError).code).toBe(ERROR_CODES.CHECK_FAILED);
    expect((error as PolyquantError).message).toMatch(/non-finite activations in chunk 1/);
    expect((error as PolyquantError).tensor).toBe('gpt_neox.layers.0.attention.query_key_value.weight');
  }, 60_000);

  it('leaves the head out of a model with tied embeddings, and says so', async () => {
    const dir = await makeTinyModel(scratch.fresh(), { configPatch: { tie_word_embeddings: true } });
    const result = await computeHessians(dir, { texts: [text], ctx: 32, chunks: 1, threads: 1, head: true });
    expect(result.entries.has('embed_out.weight')).toBe(false);
    expect(result.warnings).toEqual(['the output head is tied to the token embedding: no Hessian for it']);
  }, 60_000);
});

describe('the reference engine with inputProducts', () => {
  it('scores exactly as without it, and refuses inputProducts when created without it', async () => {
    const tokens = Int32Array.from({ length: 90 }, (_, i) => (i * 29 + 3) % 384);
    const scores: Buffer[] = [];
    for (const inputProducts of [false, true]) {
      const engine = await createReferenceEngine(TINY, { threads: 0, contextLength: 128, inputProducts });
      try {
        scores.push(bytesOf((await engine.score(tokens, { distributions: 'full' })).full as Float32Array));
        if (inputProducts) {
          // A products request in between leaves scoring as it was.
          await engine.inputProducts(tokens, { head: true });
          scores.push(bytesOf((await engine.score(tokens, { distributions: 'full' })).full as Float32Array));
        } else {
          await expect(engine.inputProducts(tokens)).rejects.toThrow(/created with inputProducts: true/);
        }
      } finally {
        await engine.close();
      }
    }
    expect(scores[0]?.equals(scores[1] as Buffer)).toBe(true);
    expect(scores[0]?.equals(scores[2] as Buffer)).toBe(true);
  }, 60_000);
});

describe.skipIf(!HAS_SHARED)('calibration Hessians on polyglot-ko-tiny', () => {
  it("agree with computeImatrix on the diagonal and with a double-precision LayerNorm on layer 0's QKV input", async () => {
    const model = sharedPath('fixtures', 'polyglot-ko-tiny');
    // A slice of the Korean training text: a few chunks of 128 tokens.
    const slice = join(scratch.fresh(), 'train-slice.txt');
    writeFileSync(slice, readFileSync(sharedPath('data', 'korean-text', 'train.txt'), 'utf8').slice(0, 6000));
    const checkpoint = await readCheckpoint(model);
    const options = { texts: [slice], ctx: 128, chunks: 4, threads: 2 };
    const result = await computeHessians(checkpoint, options);
    expect(result.chunkCount).toBe(4);
    expectSymmetric(result);
    expectSameImatrix(result, await computeImatrix(checkpoint, options));
    const windows = await chunksOf(checkpoint, [slice], 128, 4);
    const reference = await layerZeroHessian(checkpoint, windows);
    expect(worstRelative(result.entries.get('gpt_neox.layers.0.attention.query_key_value.weight')?.matrix as Float64Array, reference)).toBeLessThan(1e-6);
  }, 120_000);
});
