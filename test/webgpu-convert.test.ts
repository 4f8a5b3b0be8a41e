import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { convertToWebGpu } from '../src/converters/webgpu/convert.js';
import { f32ToTensorCacheBf16Array } from '../src/quant/webgpu-layouts.js';
import { PolyquantError } from '../src/errors.js';
import { runCli } from './helpers/cli.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, REPO_ROOT } from './helpers/shared.js';
import { makeTinyModel, tempDir } from './helpers/tiny-model.js';
import {
  expectedRecords,
  expectedVectorBytes,
  expectedWeightBytes,
  expectSameBytes,
  hfTensor,
  mlcBf16Bytes,
  mlcQkvReorder,
  readTinyConfig,
  simulateSharding,
  TYPE_NAMES,
  type TypeName,
  writtenRecordBytes,
} from './helpers/webgpu-expected.js';

const scratch = tempDir('polyquant-webgpu-convert-');
afterAll(() => scratch.remove());
const FIXTURE_DIR = join(REPO_ROOT, 'fixtures', 'tiny-neox');
const MIB_32 = 32 * 2 ** 20;

interface ManifestJson {
  metadata: Record<string, number>;
  records: {
    dataPath: string;
    format: string;
    nbytes: number;
    md5sum: string;
    sha256: string;
    records: { name: string; shape: number[]; dtype: string; format: string; nbytes: number; byteOffset: number }[];
  }[];
}

function manifestOf(dir: string, file = 'tensor-cache.json'): ManifestJson {
  return JSON.parse(readFileSync(join(dir, file), 'utf8')) as ManifestJson;
}

const hash = (algorithm: 'md5' | 'sha256', bytes: Uint8Array): string => createHash(algorithm).update(bytes).digest('hex');

/** The layout checks one converted folder must pass, against the independent model in helpers/webgpu-expected.ts. */
async function checkFolder(model: string, out: string, type: TypeName, storage: 'raw' | 'bf16', cap: number): Promise<void> {
  const config = readTinyConfig(model);
  const manifest = manifestOf(out);
  const expected = expectedRecords(config, type, storage);

  // Records: names, order, shapes, dtypes, sizes, and the key order MLC's dumper writes.
  const records = manifest.records.flatMap((shard) => shard.records);
  const inFileOrder = records.map((record) => record.name);
  const simulated = simulateSharding(expected, cap);
  expect(manifest.records.map((shard) => shard.dataPath)).toEqual(simulated.map((shard) => shard.dataPath));
  expect(inFileOrder).toEqual(simulated.flatMap((shard) => shard.records.map((record) => record.name)));
  for (const [index, shard] of manifest.records.entries()) {
    const plan = simulated[index];
    expect(Object.keys(shard)).toEqual(['dataPath', 'format', 'nbytes', 'records', 'md5sum', 'sha256']);
    expect(shard.format).toBe('raw-shard');
    expect(shard.nbytes).toBe(plan?.nbytes);
    expect(shard.records.map((record) => [record.name, record.byteOffset])).toEqual(plan?.records.map((record) => [record.name, record.byteOffset]));
    const bytes = readFileSync(join(out, shard.dataPath));
    expect(bytes.length).toBe(shard.nbytes);
    expect(shard.md5sum).toBe(hash('md5', bytes));
    expect(shard.sha256).toBe(hash('sha256', bytes));
  }
  const byName = new Map(records.map((record) => [record.name, record]));
  for (const record of expected) {
    const written = byName.get(record.name);
    expect(written, record.name).toBeDefined();
    expect(Object.keys(written ?? {})).toEqual(['name', 'shape', 'dtype', 'format', 'nbytes', 'byteOffset']);
    expect(written?.shape, record.name).toEqual(record.shape);
    expect(written?.dtype, record.name).toBe(record.dtype);
    expect(written?.nbytes, record.name).toBe(record.nbytes);
    // raw storage: "raw" everywhere; bf16: "f32-to-bf16" everywhere as MLC writes it, except float32 kept raw.
    const format = storage === 'raw' || (record.dtype === 'float32' && !record.bf16) ? 'raw' : 'f32-to-bf16';
    expect(written?.format, record.name).toBe(format);
  }
  expect(records.length).toBe(expected.length);

  // MLC's metadata.
  const parameters = config.vocab * config.hidden * 2 + config.hidden * 2 + config.layers * (4 * config.hidden + 3 * config.hidden * (config.hidden + 1) + config.hidden * (config.hidden + 1) + config.ffn * (config.hidden + 1) + config.hidden * (config.ffn + 1));
  const paramBytes = expected.reduce((sum, record) => sum + record.memoryBytes, 0);
  expect(Object.keys(manifest.metadata)).toEqual(['ParamSize', 'ParamBytes', 'BitsPerParam']);
  expect(manifest.metadata).toEqual({ ParamSize: expected.length, ParamBytes: paramBytes, BitsPerParam: (paramBytes * 8) / parameters });
  expect(readFileSync(join(out, 'tensor-cache.json'), 'utf8')).toContain(`"ParamBytes": ${paramBytes}.0,`);

  // The old WebLLM name holds the same bytes; the b16 twin exactly when a float32 record was encoded.
  expect(readFileSync(join(out, 'ndarray-cache.json')).equals(readFileSync(join(out, 'tensor-cache.json')))).toBe(true);
  const encoded = expected.some((record) => record.bf16);
  expect(existsSync(join(out, 'tensor-cache-b16.json'))).toBe(encoded);
  if (encoded) {
    const twin = manifestOf(out, 'tensor-cache-b16.json').records.flatMap((shard) => shard.records);
    for (const record of expected) {
      const entry = twin.find((candidate) => candidate.name === record.name);
      expect([entry?.dtype, entry?.format], record.name).toEqual(record.bf16 ? ['bfloat16', 'raw'] : [record.dtype, storage === 'raw' || record.dtype === 'float32' ? 'raw' : 'f32-to-bf16']);
    }
  }

  // Bytes of a few tensors, recomputed from the HF checkpoint in the test.
  const { hidden: H, heads, ffn: F, vocab: V } = config;
  const headDim = H / heads;
  const modelDType = type.includes('f16') ? 'float16' : 'float32';
  const weightRecords = (base: string): string[] => (type.startsWith('q0') ? [`${base}.weight`] : [`${base}.q_weight`, `${base}.q_scale`]);
  const checkWeight = async (hfName: string, base: string, N: number, K: number, reorder: boolean): Promise<void> => {
    let values = await hfTensor(model, hfName);
    if (reorder) values = mlcQkvReorder(values, heads, headDim, K);
    const parts = expectedWeightBytes(values, N, K, type, storage);
    for (const [index, name] of weightRecords(base).entries()) expectSameBytes(writtenRecordBytes(out, name), parts[index] as Uint8Array, `${type} ${name}`);
  };
  const checkVector = async (name: string, dtype: 'float16' | 'float32', reorder: boolean): Promise<void> => {
    let values = await hfTensor(model, name);
    if (reorder) values = mlcQkvReorder(values, heads, headDim, 1);
    expectSameBytes(writtenRecordBytes(out, name), expectedVectorBytes(values, dtype, storage), `${type} ${name}`);
  };
  const last = config.layers - 1;
  await checkWeight(`gpt_neox.layers.${last}.attention.query_key_value.weight`, `gpt_neox.layers.${last}.attention.query_key_value`, 3 * H, H, true);
  await checkVector(`gpt_neox.layers.${last}.attention.query_key_value.bias`, modelDType, true);
  await checkWeight('gpt_neox.layers.0.mlp.dense_4h_to_h.weight', 'gpt_neox.layers.0.mlp.dense_4h_to_h', H, F, false);
  await checkVector('gpt_neox.layers.0.mlp.dense_h_to_4h.bias', 'float32', false);
  await checkVector('gpt_neox.layers.0.mlp.dense_4h_to_h.bias', 'float32', false);
  await checkVector('gpt_neox.layers.0.input_layernorm.weight', modelDType, false);
  await checkVector('gpt_neox.final_layer_norm.bias', modelDType, false);
  await checkWeight('gpt_neox.embed_in.weight', 'gpt_neox.embed_in', V, H, false);
  await checkWeight('embed_out.weight', 'embed_out', V, H, false);

  // mlc-chat-config.json.
  const chat = JSON.parse(readFileSync(join(out, 'mlc-chat-config.json'), 'utf8'));
  const hf = JSON.parse(readFileSync(join(model, 'config.json'), 'utf8'));
  expect(chat).toMatchObject({ model_type: 'gpt_neox', quantization: type, vocab_size: V, context_window_size: hf.max_position_embeddings, bos_token_id: hf.bos_token_id, eos_token_id: hf.eos_token_id });
  expect(chat.model_config).toEqual({
    use_parallel_residual: hf.use_parallel_residual,
    hidden_size: H,
    intermediate_size: F,
    num_attention_heads: heads,
    num_hidden_layers: config.layers,
    layer_norm_eps: hf.layer_norm_eps,
    vocab_size: V,
    rotary_pct: hf.rotary_pct,
    position_embedding_base: hf.rotary_emb_base,
    context_window_size: hf.max_position_embeddings,
    head_dim: headDim,
    prefill_chunk_size: Math.min(hf.max_position_embeddings, 8192),
    tensor_parallel_shards: 1,
    ffn_out_dtype: 'float32',
    max_batch_size: 1,
  });
  expect(typeof chat.pad_token_id).toBe('number');
  expect(chat.conv_template.stop_token_ids).toEqual([hf.eos_token_id]);
  expect(chat.tokenizer_files).toContain('tokenizer.json');
  for (const name of chat.tokenizer_files as string[]) expect(readFileSync(join(out, name)).equals(readFileSync(join(model, name)))).toBe(true);
}

describe('convert --to webgpu on the bundled tiny model', () => {
  for (const type of TYPE_NAMES) {
    it(`writes ${type} byte for byte as MLC lays it out`, async () => {
      const out = join(scratch.path, `tiny-${type}`);
      const plan = await convertToWebGpu(FIXTURE_DIR, { types: [type], out, workers: 0 });
      expect(plan.models[0]?.records.length).toBe(expectedRecords(readTinyConfig(FIXTURE_DIR), type, 'raw').length);
      expect(readdirSync(out).sort()).toEqual(['mlc-chat-config.json', 'ndarray-cache.json', 'params_shard_0.bin', 'tensor-cache.json', 'tokenizer.json', 'tokenizer_config.json']);
      await checkFolder(FIXTURE_DIR, out, type, 'raw', MIB_32);
    });
  }

  it('shards by the tvmjs rule: out-of-band tensors of half the cap or more take the next counter', async () => {
    const cap = 24 * 1024;
    for (const type of ['q0f32', 'q4f16_1'] as const) {
      const out = join(scratch.path, `tiny-small-shards-${type}`);
      const plan = await convertToWebGpu(FIXTURE_DIR, { types: [type], out, workers: 0, shardCapBytes: cap });
      const shards = plan.models[0]?.shards ?? [];
      expect(shards.length).toBeGreaterThan(3);
      // Some tensor went out of band while a pending shard stayed open (a lower counter holds a later record).
      if (type === 'q0f32') expect(shards.some((shard) => shard.records.length === 1 && shard.nbytes * 2 >= cap)).toBe(true);
      await checkFolder(FIXTURE_DIR, out, type, 'raw', cap);
    }
  });

  for (const type of ['q4f32_1', 'q0f32', 'q8f32_pq', 'q4f16_1'] as const) {
    it(`writes mlc_llm convert_weight's bf16 storage for ${type} with --f32-storage bf16`, async () => {
      const out = join(scratch.path, `tiny-bf16-${type}`);
      await convertToWebGpu(FIXTURE_DIR, { types: [type], out, workers: 0, f32Storage: 'bf16' });
      await checkFolder(FIXTURE_DIR, out, type, 'bf16', MIB_32);
    });
  }

  it('casts a float32 checkpoint to the model dtype before quantizing (q4f16_1)', async () => {
    const model = await makeTinyModel(scratch.fresh(), { dtype: 'F32' });
    const out = join(scratch.path, 'f32-source-q4f16_1');
    await convertToWebGpu(model, { types: ['q4f16_1', 'q8f16_pq'], out, workers: 0 });
    await checkFolder(model, join(out, 'q4f16_1'), 'q4f16_1', 'raw', MIB_32);
    await checkFolder(model, join(out, 'q8f16_pq'), 'q8f16_pq', 'raw', MIB_32);
  });

  it('writes the same bytes whatever the worker count, and several types from one read into sub-folders', async () => {
    const together = join(scratch.path, 'together');
    const plan = await convertToWebGpu(FIXTURE_DIR, { types: ['q4f16_1', 'q8f32_pq', 'q0f16'], out: together, workers: 2, shardCapBytes: 24 * 1024 });
    expect(plan.models.map((model) => model.folder)).toEqual(['q4f16_1', 'q8f32_pq', 'q0f16']);
    expect(readdirSync(together).sort()).toEqual(['q0f16', 'q4f16_1', 'q8f32_pq']);
    for (const type of ['q4f16_1', 'q8f32_pq', 'q0f16'] as const) {
      const alone = join(scratch.path, `alone-${type}`);
      await convertToWebGpu(FIXTURE_DIR, { types: [type], out: alone, workers: 0, shardCapBytes: 24 * 1024 });
      const files = readdirSync(alone).sort();
      expect(readdirSync(join(together, type)).sort()).toEqual(files);
      for (const file of files) expect(readFileSync(join(together, type, file)).equals(readFileSync(join(alone, file))), `${type}/${file}`).toBe(true);
    }
  });
});

describe.skipIf(!HAS_SHARED)('convert --to webgpu on polyglot-ko-tiny', () => {
  for (const type of TYPE_NAMES) {
    it(`writes ${type} byte for byte as MLC lays it out`, async () => {
      const out = join(scratch.path, `polyglot-${type}`);
      await convertToWebGpu(POLYGLOT_TINY_DIR, { types: [type], out });
      await checkFolder(POLYGLOT_TINY_DIR, out, type, 'raw', MIB_32);
    }, 120_000);
  }

  it('gives q0f32 an out-of-band embedding shard under MLC\'s 32 MiB cap, and bf16 storage halves it', async () => {
    const out = join(scratch.path, 'polyglot-q0f32-bf16');
    const plan = await convertToWebGpu(POLYGLOT_TINY_DIR, { types: ['q0f32'], out, f32Storage: 'bf16' });
    await checkFolder(POLYGLOT_TINY_DIR, out, 'q0f32', 'bf16', MIB_32);
    const raw = await convertToWebGpu(POLYGLOT_TINY_DIR, { types: ['q0f32'], dryRun: true });
    // 30080 × 256 float32 = 30.8 MB: embed_in opens the first shard and the small records after it fill it
    // up to the cap; embed_out (≥ 16 MiB) no longer fits the pending shard and goes out of band.
    const shards = raw.models[0]?.shards ?? [];
    expect(shards[0]?.records[0]?.name).toBe('gpt_neox.embed_in.weight');
    expect(shards[0]?.records.length).toBeGreaterThan(1);
    expect(shards.find((shard) => shard.records.some((record) => record.name === 'embed_out.weight'))?.records.length).toBe(1);
    expect(plan.models[0]?.diskBytes).toBeLessThan((raw.models[0]?.diskBytes ?? 0) / 1.9);
  }, 120_000);
});

describe("the tensor cache's f32-to-bf16 encoding", () => {
  it('rounds to nearest even inside ±bf16_limit and truncates outside, NaN and infinities included (tvmjs.py)', () => {
    const bits = [0x3f800000, 0x3f808000, 0x3f818000, 0x3f80ffff, 0x7f7effff, 0x7f7f0000, 0x7f7fffff, 0xff7fffff, 0x7f800000, 0xff800000, 0x7fc00001, 0x7f800001, 0x80000000, 0x00000001, 0x807fffff];
    let seed = 12345;
    for (let i = 0; i < 4000; i++) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      bits.push(seed);
    }
    const values = new Float32Array(Uint32Array.from(bits).buffer);
    const actual = f32ToTensorCacheBf16Array(values);
    expectSameBytes(new Uint8Array(actual.buffer), mlcBf16Bytes(values), 'f32-to-bf16');
    // Past the limit the value is truncated (never rounded up to infinity), and NaN keeps its payload's top bits.
    expect(Array.from(actual.subarray(4, 12), (half) => half.toString(16))).toEqual(['7f7f', '7f7f', '7f7f', 'ff7f', '7f80', 'ff80', '7fc0', '7f80']);
  });
});

describe('bad input', () => {
  it('refuses a type of another format with a usage error (exit 2), naming the right flag', async () => {
    const out = join(scratch.path, 'never');
    const run = await runCli('convert', FIXTURE_DIR, '--to', 'webgpu', '--type', 'q4_0', '--out', out);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('"q4_0" is not a WebGPU type');
    expect(run.stderr).toContain('--to gguf');
    const gguf = await runCli('convert', FIXTURE_DIR, '--type', 'q4f16_1', '--out', join(scratch.path, 'never.gguf'));
    expect(gguf.code).toBe(2);
    expect(gguf.stderr).toContain('add --to webgpu');
    const storage = await runCli('convert', FIXTURE_DIR, '--to', 'onnx', '--type', 'q4', '--f32-storage', 'bf16', '--out', out);
    expect(storage.code).toBe(2);
    expect(storage.stderr).toContain('--f32-storage applies to --to webgpu only');
    expect(existsSync(out)).toBe(false);
  });

  it('refuses an existing folder without --force (exit 2), and replaces only a folder of its own files with it', async () => {
    const out = join(scratch.path, 'existing');
    expect((await runCli('convert', FIXTURE_DIR, '--to', 'webgpu', '--type', 'q4f16_1', '--out', out, '--workers', '1')).code).toBe(0);
    const before = readFileSync(join(out, 'params_shard_0.bin'));
    const again = await runCli('convert', FIXTURE_DIR, '--to', 'webgpu', '--type', 'q0f16', '--out', out);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('output folder exists');
    expect(readFileSync(join(out, 'params_shard_0.bin')).equals(before)).toBe(true);
    const forced = await runCli('convert', FIXTURE_DIR, '--to', 'webgpu', '--type', 'q0f16', '--out', out, '--force', '--workers', '1');
    expect(forced.code).toBe(0);
    expect(JSON.parse(readFileSync(join(out, 'mlc-chat-config.json'), 'utf8')).quantization).toBe('q0f16');
    writeFileSync(join(out, 'notes.txt'), 'mine');
    const refused = await runCli('convert', FIXTURE_DIR, '--to', 'webgpu', '--type', 'q0f16', '--out', out, '--force');
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('notes.txt');
    expect(readFileSync(join(out, 'notes.txt'), 'utf8')).toBe('mine');
  });

  it('leaves nothing behind when the conversion fails half-way', async () => {
    const out = join(scratch.path, 'half');
    let calls = 0;
    const error = await convertToWebGpu(FIXTURE_DIR, {
      types: ['q4f16_1', 'q0f32'],
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
  });

  it('prints the plan with --dry-run and writes nothing', async () => {
    const out = join(scratch.path, 'dry');
    const run = await runCli('convert', FIXTURE_DIR, '--to', 'webgpu', '--type', 'q4f16_1,q8f16_pq', '--dry-run', '--out', out);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('params_shard_0.bin');
    expect(run.stdout).toMatch(/q4f16_1 +q4f16_1\/ +38 +1 /);
    expect(run.stdout).toContain('(dry run)');
    expect(existsSync(out)).toBe(false);
    const json = await runCli('convert', FIXTURE_DIR, '--to', 'webgpu', '--type', 'q8f16_pq', '--dry-run', '--json');
    const plan = JSON.parse(json.stdout);
    expect(plan.schema).toBe('polyquant.convert/1');
    expect(plan.models[0].records[0]).toMatchObject({ name: 'gpt_neox.embed_in.q_weight', dtype: 'uint32', data_path: 'params_shard_0.bin', byte_offset: 0 });
    expect(plan.models[0].bits_per_param).toBeGreaterThan(8);
  });
});
