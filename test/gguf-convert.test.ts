import { existsSync, readdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToGguf, type GgufConversionPlan } from '../src/converters/gguf/convert.js';
import { type GgufHeader, readGgufHeader } from '../src/converters/gguf/format.js';
import {
  compareLlamaQuantizeOrder,
  ggufTensorName,
  qkvSourceRow,
  qkvTargetRow,
  reorderQkvRows,
  restoreQkvRows,
  roleOfGgufName,
} from '../src/converters/gguf/names.js';
import { storedQkvRowChunks, widenChunks } from '../src/converters/gguf/source-rows.js';
import { GGUF_TOKEN_TYPES, ggufTokenizerMetadata } from '../src/converters/gguf/tokenizer-metadata.js';
import { PolyquantError } from '../src/errors.js';
import { quantizeRows } from '../src/quant/api.js';
import { GGML_TYPES } from '../src/quant/ggml-types.js';
import { GGUF_FILE_TYPES, type GgufFileType, tensorTypeFor } from '../src/quant/policy.js';
import { readCheckpoint } from '../src/readers/checkpoint.js';
import type { TensorRef } from '../src/readers/tensor-ref.js';
import type { TokenizerFiles } from '../src/readers/tokenizer.js';
import { bf16ToF32, f16ToF32 } from '../src/tensor/float.js';
import { makeTinyModel, tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-gguf-convert-');
afterAll(() => scratch.remove());
const FIXTURE_DIR = join(import.meta.dirname, '..', 'fixtures', 'tiny-neox');

interface GgufFile {
  readonly header: GgufHeader;
  readonly bytes: Buffer;
  tensor(name: string): Uint8Array;
  floats(name: string): Float32Array;
  kv(key: string): unknown;
}

async function openGguf(path: string): Promise<GgufFile> {
  const bytes = readFileSync(path);
  const header = await readGgufHeader(path, bytes.length, async (n) => bytes.subarray(0, n));
  const tensor = (name: string): Uint8Array => {
    const info = header.tensors.find((candidate) => candidate.name === name);
    if (info === undefined) throw new Error(`no tensor ${name} in ${path}`);
    return bytes.subarray(header.dataStart + info.offset, header.dataStart + info.offset + info.bytes);
  };
  return {
    header,
    bytes,
    tensor,
    floats: (name) => new Float32Array(Uint8Array.from(tensor(name)).buffer),
    kv: (key) => header.kvs.get(key)?.value,
  };
}

/** The HF tensor as float32, widened element by element with the scalar helpers. */
async function hfFloats(tensor: TensorRef): Promise<Float32Array> {
  const raw = await tensor.read();
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  if (tensor.dtype === 'F32') return Float32Array.from({ length: raw.length / 4 }, (_, i) => view.getFloat32(4 * i, true));
  const widen = tensor.dtype === 'BF16' ? bf16ToF32 : f16ToF32;
  return Float32Array.from({ length: raw.length / 2 }, (_, i) => widen(view.getUint16(2 * i, true)));
}

/** conversion/gptneox.py's reshape (n_head, 3, head_dim, cols) + concat of [:,0], [:,1], [:,2], as plain loops. */
function reorderQkvByHand(values: Float32Array, numHeads: number, headDim: number, columns: number): Float32Array {
  const out = new Float32Array(values.length);
  let at = 0;
  for (let part = 0; part < 3; part += 1) {
    for (let head = 0; head < numHeads; head += 1) {
      for (let d = 0; d < headDim; d += 1) {
        const row = head * 3 * headDim + part * headDim + d;
        for (let column = 0; column < columns; column += 1) out[at++] = values[row * columns + column] as number;
      }
    }
  }
  return out;
}

function sameBits(actual: Float32Array, expected: Float32Array): boolean {
  return Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength).equals(Buffer.from(expected.buffer, expected.byteOffset, expected.byteLength));
}

async function conversionError(run: Promise<unknown>): Promise<PolyquantError> {
  try {
    await run;
  } catch (error) {
    if (error instanceof PolyquantError) return error;
    throw error;
  }
  throw new Error('expected the conversion to fail');
}

const TYPES: readonly GgufFileType[] = ['f32', 'f16', 'q8_0', 'q4_0', 'q4_k_m'];

describe('convertToGguf on a tiny GPT-NeoX (hidden 64, 2 layers, 4 heads, vocab 384)', () => {
  let model: string;
  const plans = new Map<GgufFileType, GgufConversionPlan>();
  const files = new Map<GgufFileType, GgufFile>();

  beforeAll(async () => {
    model = await makeTinyModel(scratch.path);
    for (const type of TYPES) {
      const out = join(scratch.path, `tiny-${type}.gguf`);
      plans.set(type, await convertToGguf(model, { type, out, workers: 0 }));
      files.set(type, await openGguf(out));
    }
  });

  it('writes f32, f16, q8_0, q4_0 and q4_k_m files whose headers read back exactly as planned', () => {
    for (const type of TYPES) {
      const plan = plans.get(type) as GgufConversionPlan;
      const file = files.get(type) as GgufFile;
      expect(file.bytes.length).toBe(plan.fileBytes);
      expect(file.header.dataStart).toBe(plan.dataStart);
      expect(file.header.tensors.map(({ name, type: ggml, ne, offset, bytes }) => ({ name, type: ggml, ne, offset, bytes }))).toEqual(
        plan.tensors.map(({ name, type: ggml, ne, offset, bytes }) => ({ name, type: ggml, ne, offset, bytes })),
      );
      expect(file.header.tensors).toHaveLength(4 + 12 * 2);
    }
  });

  it("gives every tensor the type llama-quantize's policy chooses, and F32 to norms and biases", () => {
    for (const type of TYPES) {
      for (const tensor of (plans.get(type) as GgufConversionPlan).tensors) {
        const expected = tensorTypeFor(type, tensor, { numLayers: 2, tiedEmbeddings: false, imatrix: false }) ?? 'F32';
        expect(tensor.type, `${type} ${tensor.name}`).toBe(expected);
        if (tensor.ne.length === 1) expect(tensor.type).toBe('F32');
      }
    }
    // Rows of 64 fit no 256-element K-quant block: llama-quantize's fallbacks (specs/gguf.md §5.4).
    const q4km = new Map((plans.get('q4_k_m') as GgufConversionPlan).tensors.map((tensor) => [tensor.name, tensor.type]));
    expect(q4km.get('output.weight')).toBe('Q8_0');
    expect(q4km.get('token_embd.weight')).toBe('Q5_0');
    expect(q4km.get('blk.0.attn_qkv.weight')).toBe('Q5_0');
    expect(q4km.get('blk.1.attn_qkv.weight')).toBe('Q8_0');
    // ffn_down rows are 256 wide: Q4_K fits, and use_more_bits(1, 2) lifts layer 1 to Q6_K.
    expect(q4km.get('blk.0.ffn_down.weight')).toBe('Q4_K');
    expect(q4km.get('blk.1.ffn_down.weight')).toBe('Q6_K');
    expect(plans.get('q4_k_m')?.warnings.some((warning) => /use llama-quantize's fallback types/.test(warning))).toBe(true);
    expect((plans.get('q8_0') as GgufConversionPlan).tensors.find((tensor) => tensor.name === 'output.weight')?.type).toBe('Q8_0');
    expect((plans.get('q4_0') as GgufConversionPlan).tensors.find((tensor) => tensor.name === 'output.weight')?.type).toBe('Q8_0');
  });

  it("orders tensors as llama-quantize writes them: whole-model tensors, then block by block, each by name", () => {
    const names = (plans.get('f32') as GgufConversionPlan).tensors.map((tensor) => tensor.name);
    const block = (layer: number): string[] =>
      ['attn_norm.bias', 'attn_norm.weight', 'attn_output.bias', 'attn_output.weight', 'attn_qkv.bias', 'attn_qkv.weight']
        .concat(['ffn_down.bias', 'ffn_down.weight', 'ffn_norm.bias', 'ffn_norm.weight', 'ffn_up.bias', 'ffn_up.weight'])
        .map((name) => `blk.${layer}.${name}`);
    expect(names).toEqual(['output.weight', 'output_norm.bias', 'output_norm.weight', 'token_embd.weight', ...block(0), ...block(1)]);
    expect(['blk.10.a', 'blk.9.a', 'token_embd.weight', 'blk.2.b', 'blk.2.a'].sort(compareLlamaQuantizeOrder)).toEqual([
      'token_embd.weight',
      'blk.2.a',
      'blk.2.b',
      'blk.9.a',
      'blk.10.a',
    ]);
  });

  it('stores the HF weights widened to f32, the fused QKV weight and bias reordered from [head][q,k,v] to [q,k,v][head]', async () => {
    const checkpoint = await readCheckpoint(model);
    const f32 = files.get('f32') as GgufFile;
    const plan = plans.get('f32') as GgufConversionPlan;
    for (const entry of plan.tensors) {
      const hf = checkpoint.tensors.get(entry.source);
      expect(hf, entry.source).toBeDefined();
      let expected = await hfFloats(hf as TensorRef);
      if (entry.name.endsWith('attn_qkv.weight')) expected = reorderQkvByHand(expected, 4, 16, 64);
      if (entry.name.endsWith('attn_qkv.bias')) expected = reorderQkvByHand(expected, 4, 16, 1);
      expect(sameBits(f32.floats(entry.name), expected), entry.name).toBe(true);
      expect(entry.ne).toEqual([...(hf as TensorRef).shape].reverse());
    }
    // The reorder really moves rows: K's first row is HF row head_dim (head 0's k).
    const qkv = f32.floats('blk.0.attn_qkv.weight');
    const hfQkv = await hfFloats(checkpoint.tensors.get('gpt_neox.layers.0.attention.query_key_value.weight') as TensorRef);
    expect(sameBits(qkv.subarray(64 * 64, 65 * 64), hfQkv.subarray(16 * 64, 17 * 64))).toBe(true);
    expect(sameBits(qkv.subarray(64 * 64, 65 * 64), hfQkv.subarray(64 * 64, 65 * 64))).toBe(false);
  });

  it('quantizes each tensor exactly as quantizeRows does on its f32 rows', () => {
    const f32 = files.get('f32') as GgufFile;
    for (const type of ['f16', 'q8_0', 'q4_0', 'q4_k_m'] as const) {
      const file = files.get(type) as GgufFile;
      for (const tensor of (plans.get(type) as GgufConversionPlan).tensors) {
        const expected = tensor.type === 'F32' ? f32.tensor(tensor.name) : quantizeRows(tensor.type, f32.floats(tensor.name), tensor.ne[0] as number);
        expect(Buffer.from(file.tensor(tensor.name)).equals(Buffer.from(expected)), `${type} ${tensor.name}`).toBe(true);
      }
    }
  });

  it('writes the gptneox hyper-parameters and general metadata with the KV types llama.cpp checks', () => {
    for (const type of TYPES) {
      const { header } = files.get(type) as GgufFile;
      const keys = [...header.kvs.keys()];
      expect(keys[0]).toBe('general.architecture');
      // Last, in this order, as llama-quantize leaves them.
      expect(keys.slice(-2)).toEqual(['general.quantization_version', 'general.file_type']);
      expect(header.kvs.get('general.file_type')).toEqual({ type: 'UINT32', value: GGUF_FILE_TYPES[type].id });
      expect(header.kvs.get('general.quantization_version')).toEqual({ type: 'UINT32', value: 2 });
    }
    const { header } = files.get('q4_0') as GgufFile;
    const kv = (key: string): unknown => header.kvs.get(key);
    expect(kv('general.architecture')).toEqual({ type: 'STRING', value: 'gptneox' });
    expect(kv('general.type')).toEqual({ type: 'STRING', value: 'model' });
    expect(kv('general.name')).toEqual({ type: 'STRING', value: model.split('/').at(-1) });
    expect(kv('gptneox.context_length')).toEqual({ type: 'UINT32', value: 128 });
    expect(kv('gptneox.embedding_length')).toEqual({ type: 'UINT32', value: 64 });
    expect(kv('gptneox.block_count')).toEqual({ type: 'UINT32', value: 2 });
    expect(kv('gptneox.feed_forward_length')).toEqual({ type: 'UINT32', value: 256 });
    expect(kv('gptneox.rope.dimension_count')).toEqual({ type: 'UINT32', value: 8 });
    expect(kv('gptneox.rope.freq_base')).toEqual({ type: 'FLOAT32', value: 10000 });
    expect(kv('gptneox.attention.head_count')).toEqual({ type: 'UINT32', value: 4 });
    expect(kv('gptneox.use_parallel_residual')).toEqual({ type: 'BOOL', value: true });
    expect(kv('gptneox.attention.layer_norm_epsilon')).toEqual({ type: 'FLOAT32', value: Math.fround(1e-5) });
    expect(header.kvs.has('general.alignment')).toBe(false);
  });

  it('pads the tokens to vocab_size with unused [PAD{id}] entries and marks the special added tokens CONTROL', async () => {
    const { header } = files.get('f32') as GgufFile;
    const tokenizer = JSON.parse(readFileSync(join(model, 'tokenizer.json'), 'utf8')) as {
      model: { vocab: Record<string, number>; merges: string[] };
    };
    const vocab = Object.entries(tokenizer.model.vocab);
    const tokens = header.kvs.get('tokenizer.ggml.tokens')?.value as string[];
    const types = header.kvs.get('tokenizer.ggml.token_type');
    expect(tokens).toHaveLength(384);
    for (const [token, id] of vocab) expect(tokens[id]).toBe(token);
    expect(vocab).toHaveLength(371);
    expect(tokens.slice(371)).toEqual(Array.from({ length: 13 }, (_, i) => `[PAD${371 + i}]`));
    expect(types?.type).toBe('INT32');
    const typeValues = types?.value as number[];
    expect(typeValues.slice(0, 5)).toEqual([3, 3, 3, 3, 1]);
    expect(typeValues.slice(370)).toEqual([1, ...Array(13).fill(GGUF_TOKEN_TYPES.unused)]);
    expect(header.kvs.get('tokenizer.ggml.merges')?.value).toEqual(tokenizer.model.merges);
    expect(header.kvs.get('tokenizer.ggml.model')).toEqual({ type: 'STRING', value: 'gpt2' });
    expect(header.kvs.get('tokenizer.ggml.pre')).toEqual({ type: 'STRING', value: 'gpt-2' });
    expect(header.kvs.get('tokenizer.ggml.bos_token_id')).toEqual({ type: 'UINT32', value: 0 });
    expect(header.kvs.get('tokenizer.ggml.eos_token_id')).toEqual({ type: 'UINT32', value: 2 });
    expect(header.kvs.get('tokenizer.ggml.padding_token_id')).toEqual({ type: 'UINT32', value: 2 });
    expect(header.kvs.get('tokenizer.ggml.add_bos_token')).toEqual({ type: 'BOOL', value: false });
    expect(header.kvs.get('tokenizer.ggml.add_eos_token')).toEqual({ type: 'BOOL', value: false });
    expect(header.kvs.has('tokenizer.ggml.unknown_token_id')).toBe(false);
  });

  it('writes byte-identical files every time, whatever the worker count', async () => {
    const again = join(scratch.path, 'tiny-q4_k_m-again.gguf');
    await convertToGguf(model, { type: 'q4_k_m', out: again, workers: 2 });
    expect(readFileSync(again).equals((files.get('q4_k_m') as GgufFile).bytes)).toBe(true);
  });

  it('plans a dry run exactly like the written file, without writing anything', async () => {
    const out = join(scratch.path, 'dry-run.gguf');
    const plan = await convertToGguf(model, { type: 'q4_k_m', out, dryRun: true });
    const written = plans.get('q4_k_m') as GgufConversionPlan;
    expect(plan.out).toBeUndefined();
    expect(plan.fileBytes).toBe(written.fileBytes);
    expect(plan.tensors).toEqual(written.tensors);
    expect(plan.kvs).toEqual(written.kvs);
    expect(existsSync(out)).toBe(false);
  });

  it('leaves no file behind when a weight file is cut short halfway through the conversion', async () => {
    const victim = await makeTinyModel(scratch.path);
    const out = join(scratch.path, 'cut-short.gguf');
    const shard = join(victim, 'model.safetensors');
    let cut = false;
    const error = await conversionError(
      convertToGguf(victim, {
        type: 'q8_0',
        out,
        workers: 0,
        onProgress: () => {
          if (!cut) truncateSync(shard, 4096);
          cut = true;
        },
      }),
    );
    expect(cut).toBe(true);
    expect(error.file).toBe(shard);
    expect(existsSync(out)).toBe(false);
    expect(readdirSync(scratch.path).filter((name) => name.startsWith('.cut-short'))).toEqual([]);
  });

  it('quantizes with importance weights when given them, and refuses weights of the wrong length', async () => {
    const importance = Float32Array.from({ length: 64 }, (_, i) => 1 + (i % 7));
    const out = join(scratch.path, 'imatrix.gguf');
    const plan = await convertToGguf(model, {
      type: 'q4_0',
      out,
      workers: 0,
      imatrix: new Map([['blk.0.attn_output.weight', importance]]),
    });
    const file = await openGguf(out);
    const f32 = files.get('f32') as GgufFile;
    expect(plan.tensors.find((tensor) => tensor.name === 'blk.0.attn_output.weight')?.type).toBe('Q4_0');
    const expected = quantizeRows('Q4_0', f32.floats('blk.0.attn_output.weight'), 64, { importance });
    expect(Buffer.from(file.tensor('blk.0.attn_output.weight')).equals(Buffer.from(expected))).toBe(true);
    expect(Buffer.from(file.tensor('blk.0.attn_output.weight')).equals(Buffer.from((files.get('q4_0') as GgufFile).tensor('blk.0.attn_output.weight')))).toBe(false);
    const error = await conversionError(
      convertToGguf(model, { type: 'q4_0', dryRun: true, imatrix: new Map([['blk.0.ffn_down.weight', importance]]) }),
    );
    expect(error.message).toMatch(/tensor "blk\.0\.ffn_down\.weight".*64 entries; the rows have 256 columns/);
  });

  it('refuses an unknown type, listing the choices, and a missing output path', async () => {
    const error = await conversionError(convertToGguf(model, { type: 'q4_k_x', out: join(scratch.path, 'x.gguf') }));
    expect(error.code).toBe('usage');
    expect(error.message).toContain('unknown GGUF type "q4_k_x"');
    expect(error.hint).toContain(Object.keys(GGUF_FILE_TYPES).join(', '));
    expect((await conversionError(convertToGguf(model, { type: 'q8_0' }))).code).toBe('usage');
  });
});

describe('GPT-NeoX variants llama.cpp loads differently', () => {
  it('writes a tied head as output.weight, a copy of the token embedding', async () => {
    const model = await makeTinyModel(scratch.path, { configPatch: { tie_word_embeddings: true } });
    const out = join(scratch.path, 'tied.gguf');
    const plan = await convertToGguf(model, { type: 'f32', out, workers: 0 });
    const file = await openGguf(out);
    expect(plan.tensors.find((tensor) => tensor.name === 'output.weight')?.source).toBe('gpt_neox.embed_in.weight');
    expect(Buffer.from(file.tensor('output.weight')).equals(Buffer.from(file.tensor('token_embd.weight')))).toBe(true);
    expect(plan.warnings).toContain('tie_word_embeddings: output.weight is written as a copy of the token embedding');
  });

  it('refuses a checkpoint without attention biases, which llama.cpp requires', async () => {
    const model = await makeTinyModel(scratch.path, { configPatch: { attention_bias: false } });
    const error = await conversionError(convertToGguf(model, { type: 'f16', dryRun: true }));
    expect(error.code).toBe('unsupported');
    expect(error.file).toBe(join(model, 'config.json'));
  });

  it("takes general.license from the model card's front matter and the name and source from the caller", async () => {
    const model = await makeTinyModel(scratch.path);
    writeFileSync(join(model, 'README.md'), '---\nlanguage:\n- ko\nlicense: apache-2.0\n---\n# A model\n');
    const card = await convertToGguf(model, { type: 'f16', dryRun: true });
    const chosen = await convertToGguf(model, { type: 'f16', dryRun: true, name: 'Polyglot Ko Tiny', sourceUrl: 'https://example.org/model' });
    const kv = (plan: GgufConversionPlan, key: string): unknown => plan.kvs.find((entry) => entry.key === key)?.value;
    expect(kv(card, 'general.license')).toBe('apache-2.0');
    expect(kv(card, 'general.source.url')).toBeUndefined();
    expect(kv(chosen, 'general.name')).toBe('Polyglot Ko Tiny');
    expect(kv(chosen, 'general.source.url')).toBe('https://example.org/model');
  });

  it('widens bf16 and f32 checkpoints exactly', async () => {
    for (const dtype of ['BF16', 'F32'] as const) {
      const model = await makeTinyModel(scratch.path, { dtype });
      const out = join(scratch.path, `widen-${dtype}.gguf`);
      await convertToGguf(model, { type: 'f32', out, workers: 0 });
      const file = await openGguf(out);
      const checkpoint = await readCheckpoint(model);
      const expected = await hfFloats(checkpoint.tensors.get('gpt_neox.layers.1.mlp.dense_4h_to_h.weight') as TensorRef);
      expect(sameBits(file.floats('blk.1.ffn_down.weight'), expected)).toBe(true);
    }
  });
});

describe('the bundled fixture fixtures/tiny-neox', () => {
  it('converts from the safetensors shards and from pytorch_model.bin to the same bytes', async () => {
    const fromSafetensors = join(scratch.path, 'fixture-safetensors.gguf');
    const fromBin = join(scratch.path, 'fixture-bin.gguf');
    const plan = await convertToGguf(FIXTURE_DIR, { type: 'q4_k_m', out: fromSafetensors, weights: 'safetensors', workers: 0 });
    await convertToGguf(FIXTURE_DIR, { type: 'q4_k_m', out: fromBin, weights: 'bin', workers: 0 });
    expect(readFileSync(fromSafetensors).equals(readFileSync(fromBin))).toBe(true);
    const file = await openGguf(fromSafetensors);
    expect(file.kv('general.name')).toBe('tiny-neox');
    expect(file.kv('general.file_type')).toBe(15);
    for (const tensor of plan.tensors) {
      expect(tensor.type).toBe(tensorTypeFor('q4_k_m', tensor, { numLayers: 2, tiedEmbeddings: false, imatrix: false }) ?? 'F32');
      // Every quantized type here is a fallback or fits: the GGUF reader's block rule holds.
      expect((tensor.ne[0] as number) % GGML_TYPES[tensor.type].blockElements).toBe(0);
    }
  });
});

describe('the QKV reorder', () => {
  const layout = { numHeads: 3, headDim: 4 };

  it('maps rows as conversion/gptneox.py does, and back', () => {
    const rows = Float32Array.from({ length: 36 * 2 }, (_, i) => i);
    const reordered = reorderQkvRows(rows, 2, layout, new Float32Array(rows.length));
    expect(sameBits(reordered, reorderQkvByHand(rows, 3, 4, 2))).toBe(true);
    expect(sameBits(restoreQkvRows(reordered, 2, layout, new Float32Array(rows.length)), rows)).toBe(true);
    for (let row = 0; row < 36; row += 1) expect(qkvTargetRow(qkvSourceRow(row, layout), layout)).toBe(row);
    // GGUF row 12 is K of head 0, which HF keeps at row 4.
    expect(qkvSourceRow(12, layout)).toBe(4);
  });

  it('streams the same rows by positioned block reads and by three passes over a non-contiguous tensor', async () => {
    const checkpoint = await readCheckpoint(FIXTURE_DIR);
    const tensor = checkpoint.tensors.get('gpt_neox.layers.1.attention.query_key_value.weight') as TensorRef;
    // The same tensor behind the plain TensorRef interface, as a strided .bin view presents itself.
    const opaque: TensorRef = {
      name: tensor.name,
      dtype: tensor.dtype,
      shape: tensor.shape,
      byteLength: tensor.byteLength,
      file: tensor.file,
      read: () => tensor.read(),
      rows: (rowsPerChunk, options) => tensor.rows(rowsPerChunk, options),
    };
    const collect = async (chunks: AsyncIterable<Float32Array>): Promise<{ values: Float32Array; sizes: number[] }> => {
      const parts: Float32Array[] = [];
      for await (const chunk of chunks) parts.push(chunk);
      const values = new Float32Array(parts.reduce((sum, part) => sum + part.length, 0));
      let at = 0;
      for (const part of parts) {
        values.set(part, at);
        at += part.length;
      }
      return { values, sizes: parts.map((part) => part.length) };
    };
    const expected = reorderQkvByHand(await hfFloats(tensor), 4, 16, 64);
    for (const blocks of [1, 5, 12, 100]) {
      const positioned = await collect(widenChunks(storedQkvRowChunks(tensor, { numHeads: 4, headDim: 16 }, blocks), tensor.name));
      const passes = await collect(widenChunks(storedQkvRowChunks(opaque, { numHeads: 4, headDim: 16 }, blocks), opaque.name));
      expect(sameBits(positioned.values, expected), `${blocks} blocks per chunk`).toBe(true);
      expect(sameBits(passes.values, expected), `${blocks} blocks per chunk`).toBe(true);
      expect(positioned.sizes).toEqual(passes.sizes);
      expect(Math.max(...positioned.sizes)).toBe(Math.min(blocks, 12) * 16 * 64);
    }
  });
});

describe('the GGUF name table', () => {
  it('round-trips every GPT-NeoX role through its GGUF name', () => {
    expect(ggufTensorName('qkv-weight', 7)).toBe('blk.7.attn_qkv.weight');
    expect(ggufTensorName('token-embedding', null)).toBe('token_embd.weight');
    expect(roleOfGgufName('blk.12.ffn_down.bias')).toEqual({ role: 'ffn-down-bias', layer: 12 });
    expect(roleOfGgufName('output_norm.weight')).toEqual({ role: 'final-norm-weight', layer: null });
    expect(roleOfGgufName('blk.0.attn_q.weight')).toBeUndefined();
  });
});

describe('tokenizer metadata', () => {
  const files = (tokenizer: Record<string, unknown>, tokenizerConfig?: Record<string, unknown>): TokenizerFiles => ({
    dir: '/model',
    tokenizer,
    tokenizerConfig,
    specialTokensMap: undefined,
    generationConfig: undefined,
  });
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };

  it('joins list-of-pairs merges with spaces inside a part written as U+0120, and reads a BOS template', () => {
    const metadata = ggufTokenizerMetadata(
      files({
        model: { type: 'BPE', vocab: { a: 0, b: 1, 'a b': 2, '<s>': 3 }, merges: [['a', 'b'], ['a b', 'b']] },
        added_tokens: [{ id: 3, content: '<s>', special: true }],
        pre_tokenizer: byteLevel,
        post_processor: { type: 'TemplateProcessing', single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }] },
        decoder: byteLevel,
      }, { bos_token: '<s>' }),
      {},
      6,
    );
    const kv = new Map(metadata.kvs.map((entry) => [entry.key, entry.value]));
    expect(kv.get('tokenizer.ggml.merges')).toEqual(['a b', 'a\u0120b b']);
    expect(kv.get('tokenizer.ggml.tokens')).toEqual(['a', 'b', 'a b', '<s>', '[PAD4]', '[PAD5]']);
    expect(kv.get('tokenizer.ggml.token_type')).toEqual([1, 1, 1, 3, 5, 5]);
    expect(kv.get('tokenizer.ggml.bos_token_id')).toBe(3);
    expect(metadata.addBos).toBe(true);
    expect(metadata.warnings).toEqual([]);
  });

  it('refuses tokenizers that are not byte-level BPE', () => {
    const unigram = { model: { type: 'Unigram', vocab: [['a', 0]] }, pre_tokenizer: byteLevel };
    expect(() => ggufTokenizerMetadata(files(unigram), {}, 4)).toThrow(/Unigram.*not supported/);
    const whitespace = { model: { type: 'BPE', vocab: { a: 0 }, merges: ['a a'] }, pre_tokenizer: { type: 'Whitespace' } };
    expect(() => ggufTokenizerMetadata(files(whitespace), {}, 4)).toThrow(/no ByteLevel pre-tokenizer/);
    const outOfRange = { model: { type: 'BPE', vocab: { a: 9 }, merges: ['a a'] }, pre_tokenizer: byteLevel };
    expect(() => ggufTokenizerMetadata(files(outOfRange), {}, 4)).toThrow(/id 9, outside 0\.\.3/);
  });
});
