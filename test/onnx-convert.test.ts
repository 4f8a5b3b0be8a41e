import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToOnnx, type OnnxConversionPlan } from '../src/converters/onnx/convert.js';
import { decodeModel, int64 } from '../src/converters/onnx/proto.js';
import { ONNX_TYPE_NAMES } from '../src/converters/onnx/types.js';
import { PolyquantError } from '../src/errors.js';
import { createReferenceEngine } from '../src/verify/engines/reference.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, sharedPath } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-onnx-convert-');
afterAll(() => scratch.remove());
const FIXTURE_DIR = join(import.meta.dirname, '..', 'fixtures', 'tiny-neox');
const TOKENS = [1, 17, 200, 33, 5, 90, 301, 12];

interface Logits {
  readonly data: Float32Array;
  readonly vocab: number;
}

/** One forward pass with an empty cache (batch 1), straight through onnxruntime-node. */
async function runLogits(file: string, ids: readonly number[]): Promise<Logits> {
  const session = await ort.InferenceSession.create(file);
  try {
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, ids.length]),
      attention_mask: new ort.Tensor('int64', BigInt64Array.from(ids.map(() => 1n)), [1, ids.length]),
    };
    if (session.inputNames.includes('position_ids')) {
      feeds.position_ids = new ort.Tensor('int64', BigInt64Array.from(ids.map((_, i) => BigInt(i))), [1, ids.length]);
    }
    const model = decodeModel(readFileSync(file));
    for (const input of model.graph?.input ?? []) {
      const name = input.name ?? '';
      if (!name.startsWith('past_key_values.')) continue;
      const dims = (input.type?.tensorType?.shape?.dim ?? []).map((dim) => int64(dim.dimValue));
      const half = input.type?.tensorType?.elemType === 10;
      feeds[name] = half
        ? new ort.Tensor('float16', new Uint16Array(0), [1, dims[1] as number, 0, dims[3] as number])
        : new ort.Tensor('float32', new Float32Array(0), [1, dims[1] as number, 0, dims[3] as number]);
    }
    const result = await session.run(feeds);
    const logits = result.logits as ort.Tensor;
    return { data: logits.data as Float32Array, vocab: logits.dims[2] as number };
  } finally {
    await session.release();
  }
}

function maxAbsDifference(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs((a[i] as number) - (b[i] as number)));
  return max;
}

describe('convert --to onnx on the bundled tiny model', () => {
  let out = '';
  let plan: OnnxConversionPlan;
  beforeAll(async () => {
    out = join(scratch.path, 'all-types');
    plan = await convertToOnnx(FIXTURE_DIR, { types: [...ONNX_TYPE_NAMES], out, workers: 2 });
  }, 120_000);

  it('lays the folder out as a transformers.js repository', () => {
    const root = readdirSync(out).sort();
    expect(root).toEqual(['config.json', 'genai_config.json', 'generation_config.json', 'onnx', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json']);
    expect(readdirSync(join(out, 'onnx')).sort()).toEqual(
      ['model.onnx', 'model.onnx_data', 'model_fp16.onnx', 'model_fp16.onnx_data', 'model_q4.onnx', 'model_q4.onnx_data', 'model_q4f16.onnx', 'model_q4f16.onnx_data', 'model_quantized.onnx', 'model_quantized.onnx_data'].sort(),
    );
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    expect(config.model_type).toBe('gpt_neox');
    expect(config['transformers.js_config'].use_external_data_format).toEqual({
      'model.onnx': 1,
      'model_fp16.onnx': 1,
      'model_quantized.onnx': 1,
      'model_q4.onnx': 1,
      'model_q4f16.onnx': 1,
    });
    const genai = JSON.parse(readFileSync(join(out, 'genai_config.json'), 'utf8'));
    expect(genai.model.decoder.filename).toBe('onnx/model_q4.onnx');
    expect(genai.model.decoder.inputs.position_ids).toBe('position_ids');
    expect(genai.search.past_present_share_buffer).toBe(false);
    expect(readFileSync(join(out, 'tokenizer.json'))).toEqual(readFileSync(join(FIXTURE_DIR, 'tokenizer.json')));
  });

  it('keeps every initializer in external data, at its planned offset, and the graph I/O as transformers.js resolves it', () => {
    for (const model of plan.models) {
      const proto = decodeModel(readFileSync(join(out, model.file)));
      expect(int64(proto.irVersion)).toBe(10);
      const external = (proto.graph?.initializer ?? []).filter((tensor) => tensor.dataLocation === 1);
      expect(external.length).toBe(model.initializers.length);
      for (const tensor of external) {
        const entry = Object.fromEntries((tensor.externalData ?? []).map((pair) => [pair.key, pair.value]));
        const planned = model.initializers.find((initializer) => initializer.name === tensor.name);
        expect(planned).toBeDefined();
        expect(entry.location).toBe(planned?.file);
        expect(Number(entry.offset)).toBe(planned?.offset);
        expect(Number(entry.length)).toBe(planned?.bytes);
      }
      for (const file of model.dataFiles) expect(statSync(join(out, 'onnx', file.name)).size).toBe(file.bytes);
      const inputs = (proto.graph?.input ?? []).map((input) => input.name);
      expect(inputs.slice(0, 3)).toEqual(['input_ids', 'attention_mask', 'position_ids']);
      const past = proto.graph?.input?.find((input) => input.name === 'past_key_values.0.key');
      const dims = past?.type?.tensorType?.shape?.dim ?? [];
      expect(dims.map((dim) => dim.dimParam || int64(dim.dimValue))).toEqual(['batch_size', 4, 'past_sequence_length', 16]);
      // The boundary is float32 for every type (transformers.js' keep_io_types recipe).
      expect(past?.type?.tensorType?.elemType).toBe(1);
    }
  });

  it('equals the reference engine in fp32 and degrades in the order fp32 < fp16 < q8 < q4', async () => {
    const reference = await createReferenceEngine(FIXTURE_DIR, { threads: 0 });
    let expected: Float32Array;
    try {
      const scored = await reference.score(Int32Array.from(TOKENS), { from: 1, distributions: 'full' });
      expected = scored.full as Float32Array;
    } finally {
      await reference.close();
    }
    const errors: Record<string, number> = {};
    for (const model of plan.models) {
      const { data, vocab } = await runLogits(join(out, model.file), TOKENS);
      // Log-softmax of positions 0 … n−2 to compare with the reference's log-probabilities.
      const logProbs = new Float32Array((TOKENS.length - 1) * vocab);
      for (let position = 0; position < TOKENS.length - 1; position++) {
        const row = data.subarray(position * vocab, (position + 1) * vocab);
        let max = Number.NEGATIVE_INFINITY;
        for (const value of row) max = Math.max(max, value);
        let sum = 0;
        for (const value of row) sum += Math.exp(value - max);
        const log = max + Math.log(sum);
        for (let i = 0; i < vocab; i++) logProbs[position * vocab + i] = (row[i] as number) - log;
      }
      errors[model.type] = maxAbsDifference(logProbs, expected);
    }
    expect(errors.fp32).toBeLessThan(1e-4);
    expect(errors.fp32).toBeLessThan(errors.fp16 as number);
    expect(errors.fp16).toBeLessThan(errors.q8 as number);
    expect(errors.q8).toBeLessThan(errors.q4 as number);
    expect(errors.q4f16).toBeLessThan(1);
  }, 60_000);

  it('writes the same bytes whatever the worker count', async () => {
    const again = join(scratch.path, 'inline');
    await convertToOnnx(FIXTURE_DIR, { types: ['q8', 'q4', 'fp16'], out: again, workers: 0 });
    for (const name of ['model_quantized.onnx', 'model_quantized.onnx_data', 'model_q4.onnx_data', 'model_fp16.onnx_data', 'model_q4.onnx']) {
      expect(readFileSync(join(again, 'onnx', name)).equals(readFileSync(join(out, 'onnx', name)))).toBe(true);
    }
  }, 60_000);
});

describe('external data chunks', () => {
  it('splits data into model.onnx_data, _data_1, … below the limit, never splitting a tensor, and loads the same', async () => {
    const whole = join(scratch.path, 'whole');
    const chunked = join(scratch.path, 'chunked');
    await convertToOnnx(FIXTURE_DIR, { types: ['fp32'], out: whole, workers: 0 });
    const plan = await convertToOnnx(FIXTURE_DIR, { types: ['fp32'], out: chunked, workers: 0, maxDataFileBytes: 1 << 17 });
    const model = plan.models[0];
    expect(model).toBeDefined();
    const files = model?.dataFiles ?? [];
    expect(files.length).toBeGreaterThan(2);
    expect(files.map((file) => file.name).slice(0, 3)).toEqual(['model.onnx_data', 'model.onnx_data_1', 'model.onnx_data_2']);
    for (const file of files) {
      const tensors = model?.initializers.filter((initializer) => initializer.file === file.name) ?? [];
      // Over the limit only when one tensor alone is larger.
      if (file.bytes > 1 << 17) expect(tensors.length).toBe(1);
      for (const tensor of tensors) expect(tensor.offset + tensor.bytes).toBeLessThanOrEqual(file.bytes);
    }
    const config = JSON.parse(readFileSync(join(chunked, 'config.json'), 'utf8'));
    expect(config['transformers.js_config'].use_external_data_format['model.onnx']).toBe(files.length);
    const a = await runLogits(join(whole, 'onnx', 'model.onnx'), TOKENS);
    const b = await runLogits(join(chunked, 'onnx', 'model.onnx'), TOKENS);
    expect(maxAbsDifference(a.data, b.data)).toBe(0);
  }, 60_000);
});

describe('bad input', () => {
  it('refuses a type of another format, naming the right flag', async () => {
    const out = join(scratch.path, 'never');
    const error = await convertToOnnx(FIXTURE_DIR, { types: ['q4_0'], out }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(PolyquantError);
    expect((error as PolyquantError).code).toBe('usage');
    expect((error as PolyquantError).message).toContain('q4_0');
    expect(existsSync(out)).toBe(false);
  });

  it('refuses an existing folder without --force and leaves it as it was', async () => {
    const out = join(scratch.path, 'existing');
    await convertToOnnx(FIXTURE_DIR, { types: ['q4'], out, workers: 0 });
    const before = readFileSync(join(out, 'onnx', 'model_q4.onnx_data'));
    const error = await convertToOnnx(FIXTURE_DIR, { types: ['fp32'], out }).catch((caught: unknown) => caught);
    expect((error as PolyquantError).code).toBe('usage');
    expect(readdirSync(join(out, 'onnx')).sort()).toEqual(['model_q4.onnx', 'model_q4.onnx_data']);
    expect(readFileSync(join(out, 'onnx', 'model_q4.onnx_data')).equals(before)).toBe(true);
    // --force replaces a folder of our own files, but not one holding anything else.
    await convertToOnnx(FIXTURE_DIR, { types: ['fp32'], out, force: true, workers: 0 });
    expect(readdirSync(join(out, 'onnx')).sort()).toEqual(['model.onnx', 'model.onnx_data']);
    writeFileSync(join(out, 'notes.txt'), 'mine');
    const refused = await convertToOnnx(FIXTURE_DIR, { types: ['fp32'], out, force: true }).catch((caught: unknown) => caught);
    expect((refused as PolyquantError).message).toContain('notes.txt');
    expect(readFileSync(join(out, 'notes.txt'), 'utf8')).toBe('mine');
  }, 60_000);

  it('leaves nothing behind when the conversion fails half-way', async () => {
    const out = join(scratch.path, 'half');
    let calls = 0;
    const error = await convertToOnnx(FIXTURE_DIR, {
      types: ['q4', 'fp32'],
      out,
      workers: 2,
      onProgress: (done, total) => {
        calls += 1;
        if (done > total / 2) throw new PolyquantError('io', 'disk full (simulated)');
      },
    }).catch((caught: unknown) => caught);
    expect(calls).toBeGreaterThan(1);
    expect((error as PolyquantError).message).toContain('simulated');
    expect(existsSync(out)).toBe(false);
    expect(readdirSync(scratch.path).filter((name) => name.includes('.partial'))).toEqual([]);
  }, 60_000);

  it('refuses GroupQueryAttention for heads its CPU kernel cannot run, before writing', async () => {
    const out = join(scratch.path, 'gqa-refused');
    const error = await convertToOnnx(FIXTURE_DIR, { types: ['q4'], out, attention: 'gqa' }).catch((caught: unknown) => caught);
    expect((error as PolyquantError).code).toBe('unsupported');
    expect((error as PolyquantError).hint).toContain('--attention plain');
    expect(existsSync(out)).toBe(false);
  });
});

describe.skipIf(!HAS_SHARED)('convert --to onnx on polyglot-ko-tiny (PyTorch reference logits)', () => {
  it('gives fp32 logits within 1e-4 of PyTorch', async () => {
    const out = join(scratch.path, 'polyglot-fp32');
    await convertToOnnx(POLYGLOT_TINY_DIR, { types: ['fp32'], out, workers: 0 });
    const reference = JSON.parse(readFileSync(sharedPath('fixtures', 'polyglot-ko-tiny', 'reference', 'reference.json'), 'utf8')) as {
      sequences: { token_ids: number[]; logits_file: string }[];
    };
    for (const sequence of reference.sequences) {
      const { data } = await runLogits(join(out, 'onnx', 'model.onnx'), sequence.token_ids);
      const bytes = readFileSync(sharedPath('fixtures', 'polyglot-ko-tiny', 'reference', sequence.logits_file));
      const expected = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
      expect(maxAbsDifference(data, expected)).toBeLessThan(1e-4);
    }
  }, 60_000);
});

describe.skipIf(!HAS_SHARED)('GroupQueryAttention form (polyglot-ko-tiny: head size 32)', () => {
  it('drops position_ids, keeps the cache in the activation dtype, and matches the plain graph', async () => {
    const plain = join(scratch.path, 'plain-q4');
    const gqa = join(scratch.path, 'gqa-q4');
    await convertToOnnx(POLYGLOT_TINY_DIR, { types: ['fp32', 'q4'], out: plain, workers: 0 });
    const plan = await convertToOnnx(POLYGLOT_TINY_DIR, { types: ['fp32', 'q4', 'q4f16'], out: gqa, workers: 0, attention: 'gqa' });
    expect(plan.warnings.some((warning) => warning.includes('right-padded'))).toBe(true);
    const proto = decodeModel(readFileSync(join(gqa, 'onnx', 'model_q4f16.onnx')));
    expect(proto.graph?.input?.map((input) => input.name)).not.toContain('position_ids');
    expect(proto.graph?.input?.find((input) => input.name === 'past_key_values.0.key')?.type?.tensorType?.elemType).toBe(10);
    expect(proto.graph?.node?.filter((node) => node.opType === 'GroupQueryAttention').length).toBe(4);
    const genai = JSON.parse(readFileSync(join(gqa, 'genai_config.json'), 'utf8'));
    expect(genai.search.past_present_share_buffer).toBe(true);
    expect(genai.model.decoder.inputs.position_ids).toBeUndefined();
    for (const name of ['model.onnx', 'model_q4.onnx']) {
      const a = await runLogits(join(plain, 'onnx', name), TOKENS);
      const b = await runLogits(join(gqa, 'onnx', name), TOKENS);
      expect(maxAbsDifference(a.data, b.data)).toBeLessThan(1e-4);
    }
  }, 60_000);
});

