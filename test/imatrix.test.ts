/**
 * polyquant imatrix without llama.cpp: the reference engine's squared matmul inputs against a plain
 * double-precision GPT-NeoX written out from modeling_gpt_neox.py, chunking as llama-imatrix chunks, the
 * GGUF imatrix file round trip through our reader, and the command line (imatrix, convert --calibrate).
 * The comparison with llama-imatrix itself is imatrix-llama.test.ts.
 */
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkImatrixOptions, chunkStarts, computeImatrix, IMATRIX_MIN_CTX, type ImatrixResult, importanceOf } from '../src/calibrate/imatrix.js';
import { writeImatrixGguf } from '../src/calibrate/imatrix-file.js';
import { readGgufHeader } from '../src/converters/gguf/format.js';
import { readImatrix } from '../src/converters/gguf/imatrix.js';
import { PolyquantError } from '../src/errors.js';
import { readCheckpoint } from '../src/readers/checkpoint.js';
import { loadTokenizer } from '../src/readers/tokenizer.js';
import { createReferenceEngine } from '../src/verify/engines/reference.js';
import { activationSlots, readAsFloat32 } from '../src/verify/engines/reference-layout.js';
import { geluErf } from '../src/verify/engines/reference-math.js';
import { runCli } from './helpers/cli.js';
import { REPO_ROOT } from './helpers/shared.js';
import { makeTinyModel, tempDir } from './helpers/tiny-model.js';

const TINY = join(REPO_ROOT, 'fixtures', 'tiny-neox');
const scratch = tempDir('polyquant-imatrix-');
afterAll(() => scratch.remove());

/** Korean-ish text that the tiny byte-level tokenizer turns into a few hundred tokens. */
const TEXT = `${Array.from({ length: 60 }, (_, i) => `문장 ${i}: 한국어 모델을 양자화합니다. The quick brown fox ${i * 7}.`).join('\n')}\n`;

// ------------------------------------------------------------------------------------------ oracle

type Weights = Map<string, Float64Array>;

async function loadWeights(dir: string): Promise<{ weights: Weights; config: Awaited<ReturnType<typeof readCheckpoint>>['config'] }> {
  const checkpoint = await readCheckpoint(dir);
  const weights: Weights = new Map();
  for (const [name, tensor] of checkpoint.tensors) weights.set(name, Float64Array.from(await readAsFloat32(tensor)));
  return { weights, config: checkpoint.config };
}

function layerNorm(x: Float64Array, weight: Float64Array, bias: Float64Array, eps: number): Float64Array {
  let mean = 0;
  for (const v of x) mean += v;
  mean /= x.length;
  let variance = 0;
  for (const v of x) variance += (v - mean) ** 2;
  variance /= x.length;
  const scale = 1 / Math.sqrt(variance + eps);
  return x.map((v, i) => (v - mean) * scale * (weight[i] as number) + (bias[i] as number));
}

/** y = x·Wᵀ + b for W [out, in]. */
function linear(x: Float64Array, weight: Float64Array, bias: Float64Array, out: number): Float64Array {
  const inFeatures = x.length;
  const y = new Float64Array(out);
  for (let o = 0; o < out; o += 1) {
    let sum = bias[o] as number;
    for (let i = 0; i < inFeatures; i += 1) sum += (x[i] as number) * (weight[o * inFeatures + i] as number);
    y[o] = sum;
  }
  return y;
}

/**
 * GPTNeoXForCausalLM's layers in double over one chunk from position 0, returning Σ x² per column of the
 * inputs of query_key_value, dense, dense_h_to_4h and dense_4h_to_h per layer (activationSlots order).
 */
function oracleSquares(weights: Weights, config: Awaited<ReturnType<typeof loadWeights>>['config'], tokens: Int32Array): Float64Array {
  const { hiddenSize: hidden, intermediateSize: intermediate, numLayers: layers, numHeads: heads, headDim, rotaryDims, rotaryBase, layerNormEps: eps } = config;
  const w = (name: string): Float64Array => weights.get(name) as Float64Array;
  const squares = new Float64Array(layers * (3 * hidden + intermediate));
  const add = (at: number, x: Float64Array): void => {
    for (let j = 0; j < x.length; j += 1) squares[at + j] = (squares[at + j] as number) + (x[j] as number) ** 2;
  };
  const embed = w('gpt_neox.embed_in.weight');
  let states = Array.from(tokens, (token) => embed.slice(token * hidden, (token + 1) * hidden));
  const half = rotaryDims / 2;
  const rotate = (v: Float64Array, offset: number, position: number): void => {
    const rotated = new Float64Array(rotaryDims);
    for (let i = 0; i < rotaryDims; i += 1) {
      const frequency = 1 / rotaryBase ** ((2 * (i % half)) / rotaryDims);
      const angle = position * frequency;
      const partner = i < half ? -(v[offset + i + half] as number) : (v[offset + i - half] as number);
      rotated[i] = (v[offset + i] as number) * Math.cos(angle) + partner * Math.sin(angle);
    }
    v.set(rotated, offset);
  };
  for (let layer = 0; layer < layers; layer += 1) {
    const p = `gpt_neox.layers.${layer}.`;
    const base = layer * (3 * hidden + intermediate);
    const normed = states.map((x) => layerNorm(x, w(`${p}input_layernorm.weight`), w(`${p}input_layernorm.bias`), eps));
    for (const x of normed) add(base, x);
    // HF's fused projection is [heads, 3, headDim] per row.
    const qkv = normed.map((x) => linear(x, w(`${p}attention.query_key_value.weight`), w(`${p}attention.query_key_value.bias`), 3 * hidden));
    const q = qkv.map(() => new Float64Array(hidden));
    const k = qkv.map(() => new Float64Array(hidden));
    const v = qkv.map(() => new Float64Array(hidden));
    qkv.forEach((row, position) => {
      for (let head = 0; head < heads; head += 1) {
        for (let d = 0; d < headDim; d += 1) {
          (q[position] as Float64Array)[head * headDim + d] = row[head * 3 * headDim + d] as number;
          (k[position] as Float64Array)[head * headDim + d] = row[head * 3 * headDim + headDim + d] as number;
          (v[position] as Float64Array)[head * headDim + d] = row[head * 3 * headDim + 2 * headDim + d] as number;
        }
        rotate(q[position] as Float64Array, head * headDim, position);
        rotate(k[position] as Float64Array, head * headDim, position);
      }
    });
    const context = states.map((_, position) => {
      const out = new Float64Array(hidden);
      for (let head = 0; head < heads; head += 1) {
        const scores = Array.from({ length: position + 1 }, (_, key) => {
          let dot = 0;
          for (let d = 0; d < headDim; d += 1) dot += (q[position] as Float64Array)[head * headDim + d] as number * ((k[key] as Float64Array)[head * headDim + d] as number);
          return dot / Math.sqrt(headDim);
        });
        const max = Math.max(...scores);
        const exps = scores.map((s) => Math.exp(s - max));
        const total = exps.reduce((a, b) => a + b, 0);
        exps.forEach((e, key) => {
          for (let d = 0; d < headDim; d += 1) out[head * headDim + d] = (out[head * headDim + d] as number) + (e / total) * ((v[key] as Float64Array)[head * headDim + d] as number);
        });
      }
      return out;
    });
    for (const x of context) add(base + hidden, x);
    const attention = context.map((x) => linear(x, w(`${p}attention.dense.weight`), w(`${p}attention.dense.bias`), hidden));
    const mlp = (x: Float64Array): Float64Array => {
      add(base + 2 * hidden, x);
      const up = linear(x, w(`${p}mlp.dense_h_to_4h.weight`), w(`${p}mlp.dense_h_to_4h.bias`), intermediate).map(geluErf);
      add(base + 3 * hidden, up);
      return linear(up, w(`${p}mlp.dense_4h_to_h.weight`), w(`${p}mlp.dense_4h_to_h.bias`), hidden);
    };
    const post = (x: Float64Array): Float64Array => layerNorm(x, w(`${p}post_attention_layernorm.weight`), w(`${p}post_attention_layernorm.bias`), eps);
    states = states.map((x, position) => {
      const a = attention[position] as Float64Array;
      if (config.useParallelResidual) {
        const m = mlp(post(x));
        return x.map((value, i) => value + (a[i] as number) + (m[i] as number));
      }
      const residual = x.map((value, i) => value + (a[i] as number));
      const m = mlp(post(residual));
      return residual.map((value, i) => value + (m[i] as number));
    });
  }
  return squares;
}

function relativeError(ours: ArrayLike<number>, reference: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < reference.length; i += 1) {
    num += ((ours[i] as number) - (reference[i] as number)) ** 2;
    den += (reference[i] as number) ** 2;
  }
  return Math.sqrt(num / den);
}

// ------------------------------------------------------------------------------------------ engine

describe('the reference engine reports squared matmul inputs', () => {
  for (const parallel of [true, false]) {
    it(`sums x² per input column of QKV, dense, dense_h_to_4h and dense_4h_to_h as a double-precision GPT-NeoX does (use_parallel_residual ${parallel})`, async () => {
      const dir = parallel ? TINY : await makeTinyModel(scratch.fresh(), { configPatch: { use_parallel_residual: false } });
      const { weights, config } = await loadWeights(dir);
      const engine = await createReferenceEngine(dir, { threads: 1, contextLength: 64 });
      try {
        const tokens = Int32Array.from({ length: 48 }, (_, i) => (i * 37 + 11) % config.vocabSize);
        const ours = await engine.squaredInputs(tokens);
        const expected = oracleSquares(weights, config, tokens);
        expect(ours.length).toBe(expected.length);
        for (const slot of engine.activationSlots(false)) {
          const error = relativeError(ours.subarray(slot.offset, slot.offset + slot.columns), expected.subarray(slot.offset, slot.offset + slot.columns));
          expect(error, `${slot.role} of layer ${slot.layer}`).toBeLessThan(1e-5);
        }
      } finally {
        await engine.close();
      }
    }, 60_000);
  }

  it('lays the slots out per layer (qkv, dense, up, down) and the head last, and returns the same numbers on any thread count', async () => {
    const slots = activationSlots({ hidden: 64, intermediate: 256, layers: 2 }, true);
    expect(slots.map((slot) => [slot.role, slot.layer, slot.offset, slot.columns])).toEqual([
      ['qkv-weight', 0, 0, 64],
      ['attn-output-weight', 0, 64, 64],
      ['ffn-up-weight', 0, 128, 64],
      ['ffn-down-weight', 0, 192, 256],
      ['qkv-weight', 1, 448, 64],
      ['attn-output-weight', 1, 512, 64],
      ['ffn-up-weight', 1, 576, 64],
      ['ffn-down-weight', 1, 640, 256],
      ['output-head', null, 896, 64],
    ]);
    const tokens = Int32Array.from({ length: 100 }, (_, i) => (i * 13 + 5) % 384);
    const results: Float64Array[] = [];
    for (const threads of [0, 2]) {
      const engine = await createReferenceEngine(TINY, { threads, contextLength: 128 });
      try {
        results.push(await engine.squaredInputs(tokens, { head: true }));
        // Scoring still works after (and is unaffected by) a squares request.
        expect((await engine.score(tokens.subarray(0, 20))).tokenLogProbs.every(Number.isFinite)).toBe(true);
      } finally {
        await engine.close();
      }
    }
    expect(results[0]?.length).toBe(960);
    expect(Buffer.from((results[0] as Float64Array).buffer).equals(Buffer.from((results[1] as Float64Array).buffer))).toBe(true);
    // The head's input is the final LayerNorm's output: every position contributes, all positive.
    expect((results[0] as Float64Array).subarray(896).every((value) => value > 0)).toBe(true);
  }, 60_000);
});

// ------------------------------------------------------------------------------------------ chunks

describe('chunking as llama-imatrix chunks', () => {
  it('cuts ⌊tokens / ctx⌋ chunks from the start, at most the limit, dropping the tail', () => {
    expect(chunkStarts(1100, 512, Number.POSITIVE_INFINITY)).toEqual([0, 512]);
    expect(chunkStarts(1100, 512, 1)).toEqual([0]);
    expect(chunkStarts(511, 512, 5)).toEqual([]);
    expect(chunkStarts(1024, 512, 0)).toEqual([]);
  });

  it(`refuses a ctx under ${IMATRIX_MIN_CTX} or past the model's positions, a chunk limit under 1 and no text`, () => {
    expect(() => checkImatrixOptions({ texts: ['a'], ctx: 8 }, 128)).toThrow(/--ctx 8 is out of range: expected an integer from 16 to 128/);
    expect(() => checkImatrixOptions({ texts: ['a'], ctx: 129 }, 128)).toThrow(/--ctx 129/);
    expect(() => checkImatrixOptions({ texts: ['a'], chunks: 0 }, 128)).toThrow(/--chunks 0 must be a positive integer/);
    expect(() => checkImatrixOptions({ texts: [] }, 128)).toThrow(/no calibration text/);
    expect(checkImatrixOptions({ texts: ['a'] }, 2048)).toEqual({ ctx: 512, chunks: undefined });
    expect(checkImatrixOptions({ texts: ['a'], chunks: 3 }, 128)).toEqual({ ctx: 128, chunks: 3 });
  });

  /** What computeImatrix should add up: the engine's squares over the chunks cut by hand. */
  async function byHand(dir: string, texts: readonly string[], ctx: number, limit: number, bos: number | undefined): Promise<{ sums: Float64Array; chunks: number }> {
    const checkpoint = await readCheckpoint(dir);
    const tokenizer = loadTokenizer(checkpoint.tokenizer);
    const engine = await createReferenceEngine(dir, { threads: 1, contextLength: ctx });
    try {
      let sums: Float64Array | undefined;
      let chunks = 0;
      for (const path of texts) {
        const text = readFileSync(path, 'utf8').replace(/\n$/, '');
        const encoded = tokenizer.encode(text);
        const tokens = bos === undefined ? encoded : Int32Array.from([bos, ...encoded]);
        for (let start = 0; start + ctx <= tokens.length && chunks < limit; start += ctx, chunks += 1) {
          const window = tokens.slice(start, start + ctx);
          if (bos !== undefined) window[0] = bos;
          const squares = await engine.squaredInputs(window);
          sums ??= new Float64Array(squares.length);
          for (let i = 0; i < squares.length; i += 1) sums[i] = (sums[i] as number) + (squares[i] as number);
        }
      }
      return { sums: sums as Float64Array, chunks };
    } finally {
      await engine.close();
    }
  }

  function flatten(result: ImatrixResult, layers: number): Float64Array {
    const parts: number[] = [];
    for (let layer = 0; layer < layers; layer += 1) {
      for (const kind of ['attn_qkv', 'attn_output', 'ffn_up', 'ffn_down']) parts.push(...(result.entries.get(`blk.${layer}.${kind}.weight`)?.sums ?? []));
    }
    return Float64Array.from(parts);
  }

  for (const addBos of [false, true]) {
    it(`tokenizes each text whole (one trailing newline dropped${addBos ? ', a BOS in front and at the start of each chunk, as the vocabulary says add_bos' : ''}) and sums its chunks`, async () => {
      let dir = TINY;
      if (addBos) {
        dir = join(scratch.fresh(), 'bos-model');
        cpSync(TINY, dir, { recursive: true });
        const config = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
        writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, add_bos_token: true, bos_token: '<|unused1|>' }));
      }
      const first = join(scratch.fresh(), 'first.txt');
      const second = join(scratch.fresh(), 'second.txt');
      writeFileSync(first, TEXT);
      writeFileSync(second, TEXT.slice(0, 900));
      const result = await computeImatrix(dir, { texts: [first, second], ctx: 32, chunks: 40, threads: 2 });
      // tokenizer_config.json names the BOS by its text: <|unused1|> is id 1 of the tiny vocabulary.
      const bos = addBos ? 1 : undefined;
      const expected = await byHand(dir, [first, second], 32, 40, bos);
      expect(result.chunkCount).toBe(expected.chunks);
      expect(result.texts.map((text) => text.chunks)).toEqual([Math.min(40, Math.floor((result.texts[0]?.tokens ?? 0) / 32)), expected.chunks - Math.min(40, Math.floor((result.texts[0]?.tokens ?? 0) / 32))]);
      expect(result.tokens).toBe(expected.chunks * 32);
      for (const entry of result.entries.values()) expect(entry.count).toBe(expected.chunks * 32);
      expect(relativeError(flatten(result, 2), expected.sums)).toBeLessThan(1e-7);
      expect(result.datasets).toEqual([first, second]);
      expect([...result.entries.keys()]).toEqual([...result.entries.keys()].sort());
    }, 60_000);
  }

  it('refuses a text shorter than one chunk, naming the token count, before loading the weights', async () => {
    const short = join(scratch.fresh(), 'short.txt');
    writeFileSync(short, '짧은 글.\n');
    const error = await computeImatrix(TINY, { texts: [short], ctx: 64 }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(PolyquantError);
    expect((error as PolyquantError).message).toMatch(/shorter than one chunk of 64 tokens.*short\.txt: \d+ tokens/);
  });
});

// ------------------------------------------------------------------------------------------ file

describe('the GGUF imatrix file', () => {
  let result: ImatrixResult;
  let path: string;
  beforeAll(async () => {
    const text = join(scratch.path, 'text.txt');
    writeFileSync(text, TEXT);
    result = await computeImatrix(TINY, { texts: [text], ctx: 64, threads: 2, processOutput: true });
    path = join(scratch.path, 'tiny-imatrix.gguf');
    await writeImatrixGguf(path, result);
  }, 60_000);

  it('is laid out as llama-imatrix writes it: its KVs in order, then in_sum2 and counts per weight in name order, 1-D F32', async () => {
    const bytes = readFileSync(path);
    const header = await readGgufHeader(path, bytes.length, async (n) => bytes.subarray(0, n));
    expect([...header.kvs.keys()]).toEqual(['general.type', 'imatrix.datasets', 'imatrix.chunk_count', 'imatrix.chunk_size']);
    expect(header.kvs.get('general.type')?.value).toBe('imatrix');
    expect(header.kvs.get('imatrix.chunk_count')).toMatchObject({ type: 'UINT32', value: result.chunkCount });
    expect(header.kvs.get('imatrix.chunk_size')).toMatchObject({ type: 'UINT32', value: 64 });
    const names = [...result.entries.keys()];
    expect(names).toContain('output.weight');
    expect(names[0]).toBe('blk.0.attn_output.weight');
    expect(header.tensors.map((tensor) => tensor.name)).toEqual(names.flatMap((name) => [`${name}.in_sum2`, `${name}.counts`]));
    for (const tensor of header.tensors) {
      expect(tensor.type).toBe('F32');
      expect(tensor.ne).toEqual(tensor.name.endsWith('.counts') ? [1] : [tensor.name.includes('ffn_down') ? 256 : 64]);
    }
  });

  it('reads back through convert --imatrix\'s reader as exactly the importance convert --calibrate uses', async () => {
    const read = await readImatrix(path);
    expect(read.format).toBe('gguf');
    expect(read.chunkCount).toBe(result.chunkCount);
    expect(read.datasets).toEqual(result.datasets);
    const importance = importanceOf(result);
    expect([...read.entries.keys()].sort()).toEqual([...importance.keys()].sort());
    for (const [name, values] of importance) {
      expect(Buffer.from((read.entries.get(name) as Float32Array).buffer).equals(Buffer.from(values.buffer)), name).toBe(true);
    }
  });
});

// ------------------------------------------------------------------------------------------ CLI

describe('polyquant imatrix and convert --calibrate on the command line', () => {
  let text: string;
  beforeAll(() => {
    text = join(scratch.path, 'cli-text.txt');
    writeFileSync(text, TEXT);
  });

  it('writes the file and reports it, as text and as JSON', async () => {
    const out = join(scratch.fresh(), 'ours.gguf');
    const run = await runCli('imatrix', TINY, '--text', text, '--ctx', '64', '--chunks', '3', '--threads', '1', '--out', out, '--json');
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const report = JSON.parse(run.stdout) as Record<string, unknown>;
    expect(report).toMatchObject({ schema: 'polyquant.imatrix/1', out, chunk_count: 3, chunk_size: 64, tokens: 192, datasets: [text] });
    expect((report.entries as unknown[]).length).toBe(8);
    expect((await readImatrix(out)).entries.size).toBe(8);
    const plain = await runCli('imatrix', TINY, '--text', text, '--ctx', '64', '--chunks', '2', '--out', out);
    expect(plain.code).toBe(0);
    expect(plain.stdout).toMatch(/wrote +.*ours\.gguf[\s\S]*chunks +2 × 64 tokens[\s\S]*tokens\/s/);
  }, 60_000);

  it.each([
    [['--text', '/nonexistent/calibration.txt'], /calibration\.txt/],
    [['--text', ''], /--text needs a file name/],
    [['--ctx', 'abc'], /--ctx "abc" is not an integer/],
    [['--ctx', '8'], /--ctx 8 is out of range/],
    [['--ctx', '-5'], /--ctx -5 is out of range/],
    [['--ctx', '100000'], /--ctx 100000 is out of range/],
    [['--chunks', '0'], /--chunks 0 is out of range/],
  ])('exits 2 on bad input: %j', async (flags, message) => {
    const args = flags.includes('--text') ? flags : ['--text', text, ...flags];
    const run = await runCli('imatrix', TINY, ...args, '--out', join(scratch.fresh(), 'x.gguf'));
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(message);
  });

  it('exits 2 for a missing --text, a GGUF model, and an --out that is the text', async () => {
    expect((await runCli('imatrix', TINY)).code).toBe(2);
    const gguf = join(scratch.fresh(), 'model.gguf');
    writeFileSync(gguf, Buffer.from('GGUF\x03\x00\x00\x00'));
    const onGguf = await runCli('imatrix', gguf, '--text', text);
    expect(onGguf.code).toBe(2);
    expect(onGguf.stderr).toMatch(/GGUF file.*llama-imatrix/);
    const over = await runCli('imatrix', TINY, '--text', text, '--out', text);
    expect(over.code).toBe(2);
    expect(over.stderr).toMatch(/would overwrite/);
  });

  it('convert --calibrate quantizes exactly as convert --imatrix of the file polyquant imatrix writes, and says so', async () => {
    const dir = scratch.fresh();
    const matrix = join(dir, 'imatrix.gguf');
    // Default ctx on both sides: 512, cut to the tiny model's 128 positions.
    expect((await runCli('imatrix', TINY, '--text', text, '--out', matrix, '--quiet')).code).toBe(0);
    const fromFile = join(dir, 'from-file.gguf');
    const calibrated = join(dir, 'calibrated.gguf');
    expect((await runCli('convert', TINY, '--type', 'q4_k_m', '--imatrix', matrix, '--out', fromFile, '--quiet')).code).toBe(0);
    const run = await runCli('convert', TINY, '--type', 'q4_k_m', '--calibrate', text, '--out', calibrated);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/imatrix +calibrated on .*cli-text\.txt \(\d+ chunks\): 8 matrices, .*used as --imatrix/);
    const open = async (file: string) => {
      const bytes = readFileSync(file);
      return { bytes, header: await readGgufHeader(file, bytes.length, async (n) => bytes.subarray(0, n)) };
    };
    const [a, b] = [await open(fromFile), await open(calibrated)];
    // Same tensors byte for byte; the header differs only in quantize.imatrix.file.
    expect(a.bytes.subarray(a.header.dataStart).equals(b.bytes.subarray(b.header.dataStart))).toBe(true);
    expect(b.header.kvs.get('quantize.imatrix.file')?.value).toBe('polyquant convert --calibrate');
    expect(b.header.kvs.get('quantize.imatrix.dataset')?.value).toBe(text);
    expect(a.header.kvs.get('quantize.imatrix.chunks_count')?.value).toBe(b.header.kvs.get('quantize.imatrix.chunks_count')?.value);
  }, 120_000);

  it.each([
    // ONNX and WebGPU calibrate with GPTQ (test/calibrate-int4.test.ts), only types quantized in blocks.
    [['--to', 'onnx', '--type', 'fp16'], /--calibrate needs a type whose weights are quantized in blocks/],
    [['--to', 'webgpu', '--type', 'q0f16'], /--calibrate needs a type whose weights are quantized in blocks/],
    [['--type', 'q4_k_m', '--imatrix', 'x.gguf'], /give one of them/],
  ])('convert --calibrate exits 2 with %j', async (flags, message) => {
    const run = await runCli('convert', TINY, '--calibrate', text, ...flags, '--out', join(scratch.fresh(), 'out'));
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(message);
  });

  it('convert --calibrate-chunks needs --calibrate', async () => {
    const run = await runCli('convert', TINY, '--type', 'q4_k_m', '--calibrate-chunks', '2', '--dry-run');
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/--calibrate-chunks needs --calibrate/);
  });
});
