/**
 * `convert model.gguf --type T`: requantizing a GGUF as llama-quantize does, with its options
 * (--output-tensor-type, --token-embedding-type, --pure, --tensor-type, --allow-requantize, --imatrix),
 * for GGUF and HF input. Hermetic tests use the bundled tiny model (an f16 checkpoint, so its f16 GGUF
 * widens back to exactly the checkpoint's floats: requantizing it must give the direct conversion's bytes);
 * the byte-identity tests against llama-quantize itself need vendor-build (bench/build-llama.sh) and
 * ../shared, and skip without them.
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToGguf } from '../src/converters/gguf/convert.js';
import { type GgufKV, readGgufHeader, writeGguf } from '../src/converters/gguf/format.js';
import { ERROR_CODES, PolyquantError } from '../src/errors.js';
import { parseTensorTypeOverride, planTensorTypes, tensorTypeFor } from '../src/quant/policy.js';
import { runCli } from './helpers/cli.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, REPO_ROOT } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-requantize-');
afterAll(() => scratch.remove());
const TINY = join(REPO_ROOT, 'fixtures', 'tiny-neox');
const LLAMA_QUANTIZE = join(REPO_ROOT, 'vendor-build', 'llama.cpp', 'build', 'bin', 'llama-quantize');
const HAS_LLAMA_QUANTIZE = existsSync(LLAMA_QUANTIZE);
const run = promisify(execFile);

async function headerOf(path: string) {
  const bytes = readFileSync(path);
  return readGgufHeader(path, bytes.length, async (n) => bytes.subarray(0, n));
}

/** name → type and bytes of every tensor. */
async function tensorsOf(path: string): Promise<Map<string, { type: string; bytes: Buffer }>> {
  const bytes = readFileSync(path);
  const header = await headerOf(path);
  return new Map(
    header.tensors.map((tensor) => [tensor.name, { type: tensor.type, bytes: bytes.subarray(header.dataStart + tensor.offset, header.dataStart + tensor.offset + tensor.bytes) }]),
  );
}

/** The first tensor whose type or bytes differ, in words (STYLE §12), or undefined. */
async function firstDifference(ours: string, theirs: string): Promise<string | undefined> {
  const [a, b] = [await tensorsOf(ours), await tensorsOf(theirs)];
  if ([...a.keys()].join() !== [...b.keys()].join()) return `tensor lists differ: ${[...a.keys()].join()} vs ${[...b.keys()].join()}`;
  for (const [name, tensor] of a) {
    const other = b.get(name) as { type: string; bytes: Buffer };
    if (tensor.type !== other.type) return `${name}: ${tensor.type} vs ${other.type}`;
    if (!tensor.bytes.equals(other.bytes)) {
      let at = 0;
      while (tensor.bytes[at] === other.bytes[at]) at += 1;
      return `${name} (${tensor.type}): first difference at byte ${at}: ${tensor.bytes.subarray(at, at + 8).toString('hex')} vs ${other.bytes.subarray(at, at + 8).toString('hex')}`;
    }
  }
  return undefined;
}

describe('requantizing the bundled tiny model\'s f16 GGUF', () => {
  let f16: string;
  beforeAll(async () => {
    f16 = join(scratch.path, 'tiny-f16.gguf');
    await convertToGguf(TINY, { type: 'f16', out: f16, workers: 0 });
  });

  for (const type of ['q4_k_m', 'q8_0', 'q4_0', 'q6_k', 'bf16', 'f32']) {
    it(`gives the same file, byte for byte, as converting the f16 checkpoint to ${type} directly`, async () => {
      const direct = join(scratch.path, `direct-${type}.gguf`);
      const requantized = join(scratch.path, `requantized-${type}.gguf`);
      await convertToGguf(TINY, { type, out: direct, workers: 0 });
      const plan = await convertToGguf(f16, { type, out: requantized, workers: 0 });
      expect(plan.inputFormat).toBe('gguf');
      expect(await firstDifference(requantized, direct)).toBeUndefined();
      expect(readFileSync(requantized).equals(readFileSync(direct))).toBe(true);
    });
  }

  it('gives the same file as the direct conversion with every llama-quantize option, and the options change the types', async () => {
    const options = { outputTensorType: 'Q8_0', tokenEmbeddingType: 'q5_0', tensorTypes: ['blk\\.0\\.ffn_(up|down)=Q8_0', 'attn_qkv=f16'] };
    const direct = join(scratch.path, 'direct-options.gguf');
    const requantized = join(scratch.path, 'requantized-options.gguf');
    await convertToGguf(TINY, { type: 'q4_0', out: direct, workers: 0, ...options });
    const plan = await convertToGguf(f16, { type: 'Q4_0', out: requantized, workers: 0, ...options });
    expect(readFileSync(requantized).equals(readFileSync(direct))).toBe(true);
    const types = new Map(plan.tensors.map((tensor) => [tensor.name, tensor.type]));
    expect(types.get('output.weight')).toBe('Q8_0');
    expect(types.get('token_embd.weight')).toBe('Q5_0');
    expect(types.get('blk.0.ffn_up.weight')).toBe('Q8_0');
    expect(types.get('blk.0.ffn_down.weight')).toBe('Q8_0');
    expect(types.get('blk.1.ffn_up.weight')).toBe('Q4_0');
    expect(types.get('blk.1.attn_qkv.weight')).toBe('F16');
    expect(types.get('blk.1.attn_qkv.bias')).toBe('F32');
    const pure = await convertToGguf(f16, { type: 'q4_k_m', dryRun: true, pure: true });
    // No mixture: Q4_K for every matrix (no Q6_K for output or ffn_down); rows of 64 fall back to Q5_0, ffn_down's 256 fit.
    const pureTypes = new Map(pure.tensors.map((tensor) => [tensor.name, tensor.type]));
    expect(new Set(pure.tensors.filter((tensor) => tensor.ne.length > 1).map((tensor) => tensor.type))).toEqual(new Set(['Q5_0', 'Q4_K']));
    expect([pureTypes.get('output.weight'), pureTypes.get('blk.1.ffn_down.weight'), pureTypes.get('blk.1.attn_qkv.weight')]).toEqual(['Q5_0', 'Q4_K', 'Q5_0']);
    expect(pure.warnings.some((warning) => /fallback types: .*Q4_K → Q5_0/.test(warning))).toBe(true);
  });

  it('copies the input KVs in order and sets general.quantization_version and general.file_type last', async () => {
    const out = join(scratch.path, 'kv-order.gguf');
    await convertToGguf(f16, { type: 'q8_0', out, workers: 0 });
    const input = [...(await headerOf(f16)).kvs.keys()];
    const output = await headerOf(out);
    const keys = [...output.kvs.keys()];
    expect(keys.slice(-2)).toEqual(['general.quantization_version', 'general.file_type']);
    expect(keys.filter((key) => !key.startsWith('general.quantization_version') && key !== 'general.file_type')).toEqual(
      input.filter((key) => key !== 'general.quantization_version' && key !== 'general.file_type'),
    );
    expect(output.kvs.get('general.file_type')?.value).toBe(7);
    expect(output.kvs.get('tokenizer.ggml.tokens')?.value).toEqual((await headerOf(f16)).kvs.get('tokenizer.ggml.tokens')?.value);
  });

  it('copies a quantized file whose types do not change without --allow-requantize, byte for byte', async () => {
    const q4 = join(scratch.path, 'copy-in.gguf');
    const again = join(scratch.path, 'copy-out.gguf');
    await convertToGguf(TINY, { type: 'q4_k_m', out: q4, workers: 0 });
    await convertToGguf(q4, { type: 'Q4_K_M', out: again, workers: 0 });
    expect(readFileSync(again).equals(readFileSync(q4))).toBe(true);
  });

  it('refuses to requantize quantized tensors without --allow-requantize (exit 2), and with it dequantizes and quantizes, saying so', async () => {
    const q8 = join(scratch.path, 'quantized-in.gguf');
    await convertToGguf(TINY, { type: 'q8_0', out: q8, workers: 0 });
    const out = join(scratch.path, 'allowed-q4_0.gguf');
    const refused = await runCli('convert', q8, '--type', 'q4_0', '--out', out);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('already quantized');
    expect(refused.stderr).toContain('Q8_0 → Q4_0');
    expect(refused.stderr).toContain('--allow-requantize');
    expect(existsSync(out)).toBe(false);
    const allowed = await runCli('convert', q8, '--type', 'q4_0', '--out', out, '--allow-requantize', '--workers', '1');
    expect(allowed.code, allowed.stderr).toBe(0);
    expect(allowed.stderr).toMatch(/warning: \d+ tensor\(s\) were dequantized and quantized again \(Q8_0 → Q4_0\)/);
    const types = new Map([...(await tensorsOf(out))].map(([name, tensor]) => [name, tensor.type]));
    expect(types.get('blk.0.ffn_up.weight')).toBe('Q4_0');
    // q4_0's output.weight is Q6_K, which rows of 64 cannot hold: its fallback Q8_0 is what the input has, so it is copied.
    expect(types.get('output.weight')).toBe('Q8_0');
  });

  it('converts from the command line, any case, naming the default output after the input', async () => {
    const result = await runCli('convert', f16, '--type', 'Q4_K_M', '--workers', '1');
    expect(result.code, result.stderr).toBe(0);
    const out = join(scratch.path, 'tiny-q4_k_m.gguf');
    expect(result.stdout).toContain(`wrote      ${out}`);
    expect(result.stdout).toContain('requantized from a GGUF');
    expect(readFileSync(out).equals(readFileSync(join(scratch.path, 'direct-q4_k_m.gguf')))).toBe(true);
  });

  it('reads the importance matrix for a GGUF input as for the HF folder', async () => {
    const path = join(scratch.path, 'tiny.imatrix.gguf');
    const columns: Record<string, number> = { 'output.weight': 64 };
    for (const layer of [0, 1]) {
      for (const name of ['attn_qkv', 'attn_output', 'ffn_up']) columns[`blk.${layer}.${name}.weight`] = 64;
      columns[`blk.${layer}.ffn_down.weight`] = 256;
    }
    await imatrixGguf(path, columns, 4);
    const direct = join(scratch.path, 'imatrix-direct.gguf');
    const requantized = join(scratch.path, 'imatrix-requantized.gguf');
    const plain = join(scratch.path, 'imatrix-plain.gguf');
    expect((await runCli('convert', TINY, '--type', 'q4_0', '--imatrix', path, '--out', direct, '--workers', '1')).code).toBe(0);
    expect((await runCli('convert', f16, '--type', 'q4_0', '--imatrix', path, '--out', requantized, '--workers', '1')).code).toBe(0);
    expect((await runCli('convert', f16, '--type', 'q4_0', '--out', plain, '--workers', '1')).code).toBe(0);
    expect(readFileSync(requantized).equals(readFileSync(direct))).toBe(true);
    expect(readFileSync(requantized).equals(readFileSync(plain))).toBe(false);
    const header = await headerOf(requantized);
    expect(header.kvs.get('quantize.imatrix.file')?.value).toBe(path);
    expect(header.kvs.get('quantize.imatrix.dataset')?.value).toBe('test');
    expect(header.kvs.get('quantize.imatrix.entries_count')?.value).toBe(9);
    expect(header.kvs.get('quantize.imatrix.chunks_count')?.value).toBe(4);
    // With an imatrix, q4_0's first eighth of ffn_down goes to Q4_1 (2 layers: none), as llama-quantize's rule says.
    expect(header.tensors.find((tensor) => tensor.name === 'blk.0.ffn_down.weight')?.type).toBe('Q4_0');
  });

  it('refuses --to onnx and --to webgpu from a GGUF, HF-only flags and an --out that is the input, with exit 2', async () => {
    for (const to of ['onnx', 'webgpu']) {
      const result = await runCli('convert', f16, '--to', to, '--type', to === 'onnx' ? 'q4' : 'q4f16_1', '--out', join(scratch.path, `never-${to}`));
      expect(result.code).toBe(2);
      expect(result.stderr).toContain(`--to ${to} reads an HF model folder`);
    }
    const weights = await runCli('convert', f16, '--type', 'q8_0', '--weights', 'bin', '--dry-run');
    expect(weights.code).toBe(2);
    expect(weights.stderr).toContain('--weights applies to an HF model folder');
    const same = await runCli('convert', f16, '--type', 'f16', '--out', f16);
    expect(same.code).toBe(2);
    expect(same.stderr).toContain('which this command reads');
    const folder = await runCli('convert', TINY, '--type', 'q8_0', '--allow-requantize', '--dry-run');
    expect(folder.code).toBe(2);
    expect(folder.stderr).toContain('--allow-requantize applies to a GGUF input');
  });

  it('refuses a GGUF of another architecture (exit 2), naming it', async () => {
    const other = join(scratch.path, 'llama.gguf');
    const kvs: GgufKV[] = [
      { key: 'general.architecture', type: 'STRING', value: 'llama' },
      { key: 'llama.block_count', type: 'UINT32', value: 1 },
    ];
    await writeGguf(other, kvs, []);
    const result = await runCli('convert', other, '--type', 'q8_0', '--dry-run');
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('general.architecture is "llama"; polyquant requantizes gptneox files only');
  });
});

describe('--tensor-type, --output-tensor-type and --token-embedding-type syntax', () => {
  it('parses PATTERN=TYPE as llama-quantize does: split at the first "=", pattern lower-cased, type in any case', () => {
    expect(parseTensorTypeOverride('Blk\\.0\\.FFN_down=Q6_K')).toEqual({ pattern: 'blk\\.0\\.ffn_down', type: 'Q6_K' });
    // Only the first "=" splits: the rest is the type, as strchr finds it.
    expect(() => parseTensorTypeOverride('a=b=q8_0')).toThrow('type "b=q8_0" is not a ggml type');
  });

  for (const [spec, message] of [
    ['attn_qkv', 'has no "="'],
    ['=q8_0', 'has no tensor name pattern'],
    ['attn_qkv=', 'has no type after "="'],
    ['attn_qkv=q9_9', 'is not a ggml type polyquant writes'],
    ['(attn=q8_0', 'is not a valid regular expression'],
  ] as const) {
    it(`refuses --tensor-type ${spec} with exit 2, naming the flag and the value`, async () => {
      const library = (() => {
        try {
          parseTensorTypeOverride(spec);
        } catch (error) {
          return error;
        }
        return undefined;
      })();
      expect(library).toBeInstanceOf(PolyquantError);
      expect((library as PolyquantError).code).toBe(ERROR_CODES.USAGE);
      const result = await runCli('convert', TINY, '--type', 'q4_0', '--tensor-type', spec, '--dry-run');
      expect(result.code).toBe(2);
      expect(result.stderr).toContain(`--tensor-type ${JSON.stringify(spec)}`);
      expect(result.stderr).toContain(message);
    });
  }

  it('refuses an unknown --output-tensor-type or --token-embedding-type with exit 2, listing the types', async () => {
    for (const flag of ['--output-tensor-type', '--token-embedding-type']) {
      const result = await runCli('convert', TINY, '--type', 'q4_0', flag, 'q3_x', '--dry-run');
      expect(result.code).toBe(2);
      expect(result.stderr).toContain(`${flag} "q3_x" is not a ggml type polyquant writes`);
      expect(result.stderr).toContain('Q8_0');
    }
  });

  it('refuses an --output-tensor-type whose blocks do not divide the rows (no fallback, as llama-quantize), before any work', async () => {
    const result = await runCli('convert', TINY, '--type', 'q4_0', '--output-tensor-type', 'q6_k', '--dry-run');
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("--output-tensor-type Q6_K: output.weight's rows of 64 are not whole 256-element blocks");
  });

  it('warns about a --tensor-type that matches nothing, and one a float file type ignores', async () => {
    const none = await runCli('convert', TINY, '--type', 'q4_0', '--tensor-type', 'attn_v=q8_0', '--dry-run');
    expect(none.code).toBe(0);
    expect(none.stdout).toContain('--tensor-type attn_v=q8_0 matched no tensor');
    const shadowed = await runCli('convert', TINY, '--type', 'q4_0', '--tensor-type', 'ffn=q8_0', '--tensor-type', 'ffn_up=q5_0', '--dry-run', '--json');
    expect((JSON.parse(shadowed.stdout) as { warnings: string[] }).warnings.join('\n')).toContain(
      '--tensor-type ffn_up=q5_0 matched no tensor that an earlier --tensor-type had not already claimed',
    );
    const float = await runCli('convert', TINY, '--type', 'f16', '--pure', '--tensor-type', 'ffn=q8_0', '--dry-run');
    expect(float.code).toBe(0);
    expect(float.stdout).toContain('--tensor-type and --pure change nothing in a f16 file');
  });

  it('refuses the GGUF-only flags with --to onnx and --to webgpu', async () => {
    const result = await runCli('convert', TINY, '--to', 'onnx', '--type', 'q4', '--tensor-type', 'x=q8_0', '--dry-run');
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('--tensor-type applies to --to gguf only');
  });
});

describe('llama-quantize\'s counters', () => {
  const tensors = [0, 1, 2, 3, 4, 5, 6, 7].flatMap((layer) => [
    { name: `blk.${layer}.attn_qkv.weight`, ne: [256, 768] },
    { name: `blk.${layer}.ffn_down.weight`, ne: [1024, 256] },
  ]);
  const model = { numLayers: 8, tiedEmbeddings: false, imatrix: false };

  it('gives every tensor the one-tensor rule\'s type when no option is given', () => {
    const planned = planTensorTypes('q4_k_m', tensors, model).map((choice) => choice.type);
    expect(planned).toEqual(tensors.map((tensor) => tensorTypeFor('q4_k_m', tensor, model)));
  });

  it('advances only for tensors that take the mixture: an override of layer 0 moves the mixture of the later layers', () => {
    const overridden = planTensorTypes('q4_k_m', tensors, model, { tensorTypes: [{ pattern: 'blk\\.0\\.', type: 'Q8_0' }] });
    const qkv = overridden.filter((_, index) => index % 2 === 0).map((choice) => choice.type);
    // use_more_bits(i, 8) holds for i = 0, 3, 6, 7. Layer 0 is overridden, so layer L has counter L − 1.
    expect(qkv).toEqual(['Q8_0', 'Q6_K', 'Q4_K', 'Q4_K', 'Q6_K', 'Q4_K', 'Q4_K', 'Q6_K']);
    expect(planTensorTypes('q4_k_m', tensors, model).filter((_, index) => index % 2 === 0).map((choice) => choice.type)).toEqual([
      'Q6_K', 'Q4_K', 'Q4_K', 'Q6_K', 'Q4_K', 'Q4_K', 'Q6_K', 'Q6_K',
    ]);
    expect(overridden[0]).toMatchObject({ source: 'tensor-type', override: 0 });
  });
});

describe.skipIf(!HAS_LLAMA_QUANTIZE || !HAS_SHARED)('polyglot-ko-tiny\'s f16 GGUF against llama-quantize', () => {
  let f16: string;
  let f32: string;
  beforeAll(async () => {
    f16 = join(scratch.path, 'polyglot-ko-tiny-f16.gguf');
    f32 = join(scratch.path, 'polyglot-ko-tiny-f32.gguf');
    await convertToGguf(POLYGLOT_TINY_DIR, { type: 'f16', out: f16, workers: 2 });
    await convertToGguf(POLYGLOT_TINY_DIR, { type: 'f32', out: f32, workers: 2 });
  }, 120_000);

  // The acceptance cases run wherever llama-quantize is built; POLYQUANT_BIG_TESTS=1 adds more combinations.
  const CASES: readonly { name: string; type: string; flags: readonly string[] }[] = [
    { name: 'q4_k_m', type: 'Q4_K_M', flags: [] },
    { name: 'q8_0', type: 'Q8_0', flags: [] },
    { name: 'q4_0', type: 'Q4_0', flags: [] },
    {
      name: 'q4_k_m with overrides',
      type: 'Q4_K_M',
      flags: ['--tensor-type', 'blk\\.[0-1]\\.ffn_down=Q8_0', '--tensor-type', 'attn_output=q5_k', '--output-tensor-type', 'q8_0', '--token-embedding-type', 'Q5_0'],
    },
    { name: 'q4_k_m --pure', type: 'Q4_K_M', flags: ['--pure'] },
    ...(process.env.POLYQUANT_BIG_TESTS === '1'
      ? [
          { name: 'q4_k_m with --tensor-type', type: 'Q4_K_M', flags: ['--tensor-type', 'blk\\.[0-1]\\.ffn_down=Q8_0'] },
          { name: 'q5_k_s --pure with --tensor-type', type: 'Q5_K_S', flags: ['--pure', '--tensor-type', 'ffn_up=iq4_nl'] },
          { name: 'q3_k_m', type: 'Q3_K_M', flags: ['--token-embedding-type', 'q6_k'] },
        ]
      : []),
  ];
  for (const { name, type, flags } of CASES) {
    it(`writes the same file, byte for byte, as llama-quantize ${[...flags].join(' ')} F16 → ${type}`, async () => {
      const slug = name.replace(/\W+/g, '-');
      const ours = join(scratch.path, `ours-${slug}.gguf`);
      const theirs = join(scratch.path, `theirs-${slug}.gguf`);
      const [result] = await Promise.all([runCli('convert', f16, '--type', type, '--out', ours, '--workers', '2', ...flags), run(LLAMA_QUANTIZE, [...flags, f16, theirs, type, '1'])]);
      expect(result.code, result.stderr).toBe(0);
      expect(await firstDifference(ours, theirs)).toBeUndefined();
      expect([...(await headerOf(ours)).kvs.keys()]).toEqual([...(await headerOf(theirs)).kvs.keys()]);
      expect(readFileSync(ours).equals(readFileSync(theirs))).toBe(true);
    }, 180_000);
  }

  it('writes the same file as llama-quantize --imatrix, quantize.imatrix.* keys included', async () => {
    const path = join(scratch.path, 'polyglot.imatrix.gguf');
    const columns: Record<string, number> = { 'output.weight': 256 };
    for (let layer = 0; layer < 4; layer += 1) {
      for (const tensor of ['attn_qkv', 'attn_output', 'ffn_up']) columns[`blk.${layer}.${tensor}.weight`] = 256;
      columns[`blk.${layer}.ffn_down.weight`] = 1024;
    }
    await imatrixGguf(path, columns, 16);
    for (const type of ['Q4_K_M', ...(process.env.POLYQUANT_BIG_TESTS === '1' ? ['IQ4_XS', 'Q4_0'] : [])]) {
      const ours = join(scratch.path, `ours-imatrix-${type}.gguf`);
      const theirs = join(scratch.path, `theirs-imatrix-${type}.gguf`);
      const [result] = await Promise.all([
        runCli('convert', f16, '--type', type, '--imatrix', path, '--out', ours, '--workers', '2'),
        run(LLAMA_QUANTIZE, ['--imatrix', path, f16, theirs, type, '1']),
      ]);
      expect(result.code, result.stderr).toBe(0);
      expect(await firstDifference(ours, theirs)).toBeUndefined();
      expect(readFileSync(ours).equals(readFileSync(theirs))).toBe(true);
    }
  }, 300_000);

  it('gives the HF folder the same options: HF → q4_k_m with them equals llama-quantize of the f32 file with them', async () => {
    const flags = ['--tensor-type', 'blk\\.1\\.attn_qkv=q8_0', '--output-tensor-type', 'q5_k', '--token-embedding-type', 'q8_0'];
    const ours = join(scratch.path, 'ours-hf-options.gguf');
    const theirs = join(scratch.path, 'theirs-hf-options.gguf');
    const [result] = await Promise.all([
      runCli('convert', POLYGLOT_TINY_DIR, '--type', 'q4_k_m', '--out', ours, '--workers', '2', ...flags),
      run(LLAMA_QUANTIZE, [...flags, f32, theirs, 'Q4_K_M', '1']),
    ]);
    expect(result.code, result.stderr).toBe(0);
    expect(await firstDifference(ours, theirs)).toBeUndefined();
    expect(readFileSync(ours).equals(readFileSync(theirs))).toBe(true);
  }, 180_000);
});

/** An imatrix in llama-imatrix's GGUF form: in_sum2 and counts per weight, and the three metadata keys. */
async function imatrixGguf(path: string, columns: Record<string, number>, count: number): Promise<void> {
  const kvs: GgufKV[] = [
    { key: 'general.type', type: 'STRING', value: 'imatrix' },
    { key: 'imatrix.datasets', type: 'STRING', array: true, value: ['test'] },
    { key: 'imatrix.chunk_count', type: 'UINT32', value: count },
    { key: 'imatrix.chunk_size', type: 'UINT32', value: 512 },
  ];
  const f32 = (values: Float32Array) =>
    async function* () {
      yield new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    };
  await writeGguf(
    path,
    kvs,
    Object.entries(columns).flatMap(([name, n], t) => {
      const sums = Float32Array.from({ length: n }, (_, i) => 10 + ((i * 7 + t * 13) % 23) * 3.5 * count);
      return [
        { name: `${name}.in_sum2`, type: 'F32' as const, ne: [n, 1], chunks: f32(sums) },
        { name: `${name}.counts`, type: 'F32' as const, ne: [1, 1], chunks: f32(Float32Array.of(count)) },
      ];
    }),
  );
}
