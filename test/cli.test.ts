import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { INSPECT_SCHEMA, type InspectReport } from '../src/inspect/hf.js';
import { runCli } from './helpers/cli.js';
import { buildSafetensors, smallHeader, smallHeaderWith, SMALL_DATA_BYTES } from './helpers/safetensors-fixtures.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, REPO_ROOT } from './helpers/shared.js';
import { makeTinyModel, tempDir } from './helpers/tiny-model.js';
import { buildTorchZip, handPickle, type HandTensor, pickleWithValue } from './helpers/torch-fixtures.js';

const scratch = tempDir();
afterAll(() => scratch.remove());

/** `inspect --json` as printed: the library's InspectReport in its documented snake_case shape (docs/schemas.md). */
type InspectJson = Omit<InspectReport, 'bytesByDtype' | 'config' | 'tokenizer'> & {
  readonly bytes_by_dtype: Readonly<Record<string, number>>;
  readonly config: Readonly<Record<string, unknown>> | null;
  readonly tokenizer: { readonly vocab_size: number } | null;
};

async function inspectJson(...args: string[]): Promise<InspectJson> {
  const run = await runCli('inspect', ...args, '--json');
  expect(run.stderr).not.toContain('internal error');
  expect(run.code).toBe(0);
  return JSON.parse(run.stdout) as InspectJson;
}

/** Tensor rows without the file column, which differs between weight formats by design. */
const withoutFile = (report: InspectJson) => report.tensors.map(({ file: _file, ...rest }) => rest);

describe.skipIf(!HAS_SHARED)('inspect on ../shared/fixtures/polyglot-ko-tiny', () => {
  it('reports the exact parameter count, the config and the 12 skipped buffers', async () => {
    const report = await inspectJson(POLYGLOT_TINY_DIR);
    expect(report.schema).toBe(INSPECT_SCHEMA);
    expect(report.parameters).toBe(18_560_512);
    expect(report.bytes).toBe(2 * 18_560_512);
    expect(report.bytes_by_dtype).toEqual({ F16: 2 * 18_560_512 });
    expect(report.config).toEqual({
      architecture: 'GPTNeoXForCausalLM',
      vocab_size: 30080,
      hidden_size: 256,
      num_layers: 4,
      num_heads: 8,
      head_dim: 32,
      intermediate_size: 1024,
      hidden_act: 'gelu',
      rotary_pct: 0.5,
      rotary_dims: 16,
      rotary_base: 10000,
      max_position_embeddings: 2048,
      layer_norm_eps: 1e-5,
      use_parallel_residual: true,
      tie_word_embeddings: false,
      attention_bias: true,
      bos_token_id: 0,
      eos_token_id: 2,
      torch_dtype: 'float16',
    });
    expect(report.skipped).toHaveLength(12);
    expect(new Set(report.skipped.map((entry) => entry.reason))).toEqual(
      new Set(['attention.bias', 'attention.masked_bias', 'attention.rotary_emb.inv_freq']),
    );
    expect(report.weights).toEqual({
      format: 'safetensors',
      index: 'model.safetensors.index.json',
      files: [
        { file: 'model-00001-of-00002.safetensors', bytes: 26_952_168 },
        { file: 'model-00002-of-00002.safetensors', bytes: 26_953_304 },
      ],
    });
    expect(report.tokenizer?.vocab_size).toBe(30003);
  });

  it('gives the same tensors and hashes with --weights bin, and 12 skipped buffers either way', async () => {
    const fromSafetensors = await inspectJson(POLYGLOT_TINY_DIR, '--hash');
    const fromBin = await inspectJson(POLYGLOT_TINY_DIR, '--hash', '--weights', 'bin');
    expect(fromBin.weights.format).toBe('bin');
    expect(fromBin.parameters).toBe(fromSafetensors.parameters);
    expect(withoutFile(fromBin)).toEqual(withoutFile(fromSafetensors));
    expect(fromSafetensors.tensors.every((tensor) => /^[0-9a-f]{64}$/.test(tensor.sha256 ?? ''))).toBe(true);
    expect(fromBin.skipped).toHaveLength(12);
    expect(fromBin.skipped.map((entry) => [entry.name, entry.sha256])).toEqual(
      expect.arrayContaining(fromSafetensors.skipped.map((entry) => [entry.name, entry.sha256])),
    );
  });

  it('inspects a single shard and the single .bin file', async () => {
    const shard = await inspectJson(join(POLYGLOT_TINY_DIR, 'model-00001-of-00002.safetensors'));
    expect(shard.kind).toBe('safetensors');
    expect(shard.architecture).toBe('GPTNeoXForCausalLM');
    const bin = await inspectJson(join(POLYGLOT_TINY_DIR, 'pytorch_model.bin'));
    expect(bin.kind).toBe('torch-bin');
    expect(bin.parameters).toBe(18_560_512);
    expect(bin.skipped).toHaveLength(12);
  });
});

describe('inspect on the bundled tiny model', () => {
  it('prints a readable summary with the tensor table', async () => {
    const run = await runCli('inspect', join(REPO_ROOT, 'fixtures', 'tiny-neox'), '--tensors');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('architecture  GPTNeoXForCausalLM');
    expect(run.stdout).toContain('parameters    149,248');
    expect(run.stdout).toContain('6 non-parameter tensors');
    expect(run.stdout).toMatch(/gpt_neox\.embed_in\.weight\s+F16\s+\[384, 64\]\s+49,152/);
  });
});

describe('bad input exits 2 and names the file', () => {
  const write = (name: string, bytes: Uint8Array): string => {
    const path = join(scratch.path, name);
    writeFileSync(path, bytes);
    return path;
  };
  const good = buildSafetensors(smallHeader(), SMALL_DATA_BYTES);
  const weight: HandTensor = { name: 'w', storageClass: 'FloatStorage', key: '0', numel: 2, offset: 0, shape: [2], stride: [1] };
  const f32 = new Uint8Array(Float32Array.of(1, 2).buffer);

  const cases: [string, () => Promise<string> | string, string][] = [
    ['a truncated file', () => write('truncated.safetensors', good.subarray(0, good.length - 5)), 'truncated'],
    ['a header length beyond the file', () => write('long.safetensors', buildSafetensors(smallHeader(), SMALL_DATA_BYTES, { headerLength: 10_000n })), 'header'],
    ['overlapping offsets', () => write('overlap.safetensors', buildSafetensors(smallHeaderWith('w', 'data_offsets', [8, 16]), 16)), 'overlap'],
    ['gapped offsets', () => write('gap.safetensors', buildSafetensors(smallHeaderWith('w', 'data_offsets', [20, 28]), 28)), 'gap'],
    ['trailing bytes', () => write('trailing.safetensors', buildSafetensors(smallHeader(), SMALL_DATA_BYTES + 4)), 'trailing'],
    ['duplicate keys', () => write('dup.safetensors', buildSafetensors(`{"v":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"v":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}`, 16)), 'appears twice'],
    ['a shape/offset mismatch', () => write('shape.safetensors', buildSafetensors(smallHeaderWith('v', 'shape', [3, 2]), SMALL_DATA_BYTES)), 'shape'],
    ['a non-UTF-8 header', () => write('utf8.safetensors', buildSafetensors(Uint8Array.of(0x7b, 0xff, 0xfe, 0x7d), 0)), 'UTF-8'],
    ['a pickle with an os.system GLOBAL', () => write('evil.bin', buildTorchZip({ pickle: pickleWithValue((p) => p.global('os', 'system').unicode('echo pwned').raw(0x85).reduce()), storages: { '0': f32 } })), 'os.system'],
    ['a zip missing a storage entry', () => write('nostorage.bin', buildTorchZip({ pickle: handPickle([weight, { ...weight, name: 'v', key: '1' }]), storages: { '0': f32 } })), 'archive/data/1'],
    ['an index naming a missing shard', async () => {
      const dir = await makeTinyModel(scratch.path, { shardBytes: 100_000 });
      rmSync(join(dir, 'model-00003-of-00004.safetensors'));
      return join(dir, 'model.safetensors.index.json');
    }, 'model-00003-of-00004.safetensors'],
  ];

  for (const [what, make, fragment] of cases) {
    it(`exits 2 for ${what}`, async () => {
      const path = await make();
      const target = path.endsWith('index.json') ? join(path, '..') : path;
      const run = await runCli('inspect', target);
      expect(run.code).toBe(2);
      expect(run.stdout).toBe('');
      expect(run.stderr).toContain(path);
      expect(run.stderr.toLowerCase()).toContain(fragment.toLowerCase());
      expect(run.stderr).not.toContain('internal error');
    });
  }

  it('exits 2 with usage help for an unknown flag or a bad choice', async () => {
    const unknown = await runCli('inspect', '.', '--frobnicate');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('frobnicate');
    const choice = await runCli('inspect', '.', '--weights', 'gguf');
    expect(choice.code).toBe(2);
    expect(choice.stderr).toContain('Choices');
  });

  it('exits 2 for a path that does not exist', async () => {
    const run = await runCli('inspect', join(scratch.path, 'nope'));
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(join(scratch.path, 'nope'));
  });
});

describe('synth', () => {
  it('writes the tiny preset in both formats with identical parameter hashes', async () => {
    const out = join(scratch.path, 'synth-both');
    const run = await runCli('synth', '--preset', 'tiny', '--out', out, '--format', 'both', '--seed', '3');
    expect(run.code).toBe(0);
    expect(readdirSync(out).sort()).toEqual(
      ['config.json', 'generation_config.json', 'model.safetensors', 'pytorch_model.bin', 'special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json'],
    );
    const a = await inspectJson(out, '--hash');
    const b = await inspectJson(out, '--hash', '--weights', 'bin');
    expect(withoutFile(b)).toEqual(withoutFile(a));
    expect(a.skipped).toHaveLength(6);
  });

  it('is deterministic for a seed and differs between seeds', async () => {
    const paths = ['s1', 's1-again', 's2'].map((name) => join(scratch.path, name));
    await runCli('synth', '--preset', 'tiny', '--out', paths[0] as string, '--seed', '1');
    await runCli('synth', '--preset', 'tiny', '--out', paths[1] as string, '--seed', '1');
    await runCli('synth', '--preset', 'tiny', '--out', paths[2] as string, '--seed', '2');
    const bytes = paths.map((path) => readFileSync(join(path, 'model.safetensors')));
    expect(bytes[0]?.equals(bytes[1] as Buffer)).toBe(true);
    expect(bytes[0]?.equals(bytes[2] as Buffer)).toBe(false);
  });

  it('refuses to overwrite a non-empty folder without --force, and replaces it with --force', async () => {
    const out = join(scratch.path, 'occupied');
    expect((await runCli('synth', '--preset', 'tiny', '--out', out)).code).toBe(0);
    const again = await runCli('synth', '--preset', 'tiny', '--out', out);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('--force');
    expect((await runCli('synth', '--preset', 'tiny', '--out', out, '--force', '--dtype', 'BF16')).code).toBe(0);
    expect((await inspectJson(out)).bytes_by_dtype).toEqual({ BF16: 2 * 149_248 });
    expect(readdirSync(scratch.path).some((name) => name.includes('partial'))).toBe(false);
  });
});

describe('convert and inspect GGUF', () => {
  it('converts the bundled model to q8_0 and inspects the file', async () => {
    const out = join(scratch.path, 'tiny-q8_0.gguf');
    const run = await runCli('convert', join(REPO_ROOT, 'fixtures', 'tiny-neox'), '--type', 'q8_0', '--out', out, '--workers', '1');
    expect(run.stderr).not.toContain('internal error');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('file type  q8_0 (general.file_type 7)');
    const inspected = await runCli('inspect', out, '--json');
    expect(inspected.code).toBe(0);
    const report = JSON.parse(inspected.stdout);
    expect(report.kind).toBe('gguf');
    expect(report.metadata['general.architecture']).toBe('gptneox');
    expect(report.metadata['general.file_type']).toBe(7);
    expect(report.types.Q8_0.tensors).toBe(10);
    expect(report.types.F32.tensors).toBe(18);
    expect(report.weights).toBe(149_248);
  });

  it('prints the plan without writing on --dry-run', async () => {
    const out = join(scratch.path, 'never.gguf');
    const run = await runCli('convert', join(REPO_ROOT, 'fixtures', 'tiny-neox'), '--type', 'q4_k_m', '--out', out, '--dry-run');
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/gpt_neox\.layers\.1\.mlp\.dense_4h_to_h\.weight\s+blk\.1\.ffn_down\.weight\s+Q6_K/);
    expect(run.stdout).toContain('(dry run)');
    expect(() => readFileSync(out)).toThrow();
  });

  it('exits 2 for an unknown type, listing the choices', async () => {
    const run = await runCli('convert', join(REPO_ROOT, 'fixtures', 'tiny-neox'), '--type', 'q3_k_xl');
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('q4_k_m');
  });
});
