/**
 * The converter against llama.cpp itself (the acceptance): polyquant's direct q8_0 / q4_0 / q4_k_m /
 * f16 conversions of polyglot-ko-tiny equal, tensor for tensor and byte for byte, what llama-quantize writes
 * from polyquant's own f32 GGUF. Needs the llama.cpp tools built by bench/build-llama.sh and ../shared;
 * skipped without them (CI has neither).
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToGguf, type GgufConversionPlan } from '../src/converters/gguf/convert.js';
import { type GgufHeader, readGgufHeader } from '../src/converters/gguf/format.js';
import { GGUF_TOKEN_TYPES } from '../src/converters/gguf/tokenizer-metadata.js';
import { type GgufFileType, tensorTypeFor } from '../src/quant/policy.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, REPO_ROOT } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const LLAMA_QUANTIZE = join(REPO_ROOT, 'vendor-build', 'llama.cpp', 'build', 'bin', 'llama-quantize');
const HAS_LLAMA_QUANTIZE = existsSync(LLAMA_QUANTIZE);
const run = promisify(execFile);

interface GgufFile {
  readonly header: GgufHeader;
  readonly bytes: Buffer;
  tensor(name: string): Buffer;
}

async function openGguf(path: string): Promise<GgufFile> {
  const bytes = readFileSync(path);
  const header = await readGgufHeader(path, bytes.length, async (n) => bytes.subarray(0, n));
  return {
    header,
    bytes,
    tensor: (name) => {
      const info = header.tensors.find((candidate) => candidate.name === name);
      if (info === undefined) throw new Error(`no tensor ${name} in ${path}`);
      return bytes.subarray(header.dataStart + info.offset, header.dataStart + info.offset + info.bytes);
    },
  };
}

/** The first differing byte of two tensors, with 16 bytes of each around it (STYLE §12). */
function firstDifference(name: string, ours: Buffer, theirs: Buffer): string | undefined {
  if (ours.equals(theirs)) return undefined;
  let at = 0;
  while (at < Math.min(ours.length, theirs.length) && ours[at] === theirs[at]) at += 1;
  const around = (bytes: Buffer): string => bytes.subarray(Math.max(0, at - 8), at + 8).toString('hex');
  return `${name}: ${ours.length} vs ${theirs.length} bytes, first difference at byte ${at}: ours ${around(ours)}, llama-quantize ${around(theirs)}`;
}

describe.skipIf(!HAS_LLAMA_QUANTIZE || !HAS_SHARED)('polyglot-ko-tiny against llama-quantize', () => {
  const scratch = tempDir('polyquant-gguf-llama-');
  afterAll(() => scratch.remove());
  let f32Path: string;
  let f32Plan: GgufConversionPlan;

  beforeAll(async () => {
    f32Path = join(scratch.path, 'polyglot-ko-tiny-f32.gguf');
    f32Plan = await convertToGguf(POLYGLOT_TINY_DIR, { type: 'f32', out: f32Path, workers: 2 });
  });

  const CASES: readonly [GgufFileType, string][] = [
    ['q8_0', 'Q8_0'],
    ['q4_0', 'Q4_0'],
    ['q4_k_m', 'Q4_K_M'],
    ['f16', 'F16'],
  ];
  for (const [type, llamaType] of CASES) {
    it(`converts to ${type} with the same tensor types and tensor data, byte for byte, as llama-quantize ${llamaType} of our f32 file`, async () => {
      const ours = join(scratch.path, `polyquant-${type}.gguf`);
      const theirs = join(scratch.path, `llama-quantize-${type}.gguf`);
      const plan = await convertToGguf(POLYGLOT_TINY_DIR, { type, out: ours, workers: 2 });
      await run(LLAMA_QUANTIZE, [f32Path, theirs, llamaType, '1']);
      const [mine, reference] = await Promise.all([openGguf(ours), openGguf(theirs)]);
      const shape = (file: GgufFile) => file.header.tensors.map(({ name, type: ggml, ne }) => ({ name, type: ggml, ne }));
      expect(shape(mine)).toEqual(shape(reference));
      const differences = mine.header.tensors
        .map((tensor) => firstDifference(tensor.name, mine.tensor(tensor.name), reference.tensor(tensor.name)))
        .filter((difference) => difference !== undefined);
      expect(differences).toEqual([]);
      // With the KVs in the order llama-quantize leaves them, the whole files are identical too.
      expect([...mine.header.kvs.keys()]).toEqual([...reference.header.kvs.keys()]);
      expect(mine.bytes.equals(reference.bytes)).toBe(true);
      expect(plan.fileBytes).toBe(reference.bytes.length);
    }, 180_000);
  }

  it('needs no fallback type: every row (256 and 1024 wide) is whole 256-element blocks', async () => {
    const plan = await convertToGguf(POLYGLOT_TINY_DIR, { type: 'q4_k_m', dryRun: true });
    expect(plan.warnings.some((warning) => /fallback/.test(warning))).toBe(false);
    const types = new Map(plan.tensors.map((tensor) => [tensor.name, tensor.type]));
    // specs/gguf.md §5.3 and §9.4 with 4 layers: use_more_bits = {2, 3}; output Q6_K; token_embd Q4_K.
    expect(types.get('output.weight')).toBe('Q6_K');
    expect(types.get('token_embd.weight')).toBe('Q4_K');
    for (const layer of [0, 1, 2, 3]) {
      const more = layer >= 2 ? 'Q6_K' : 'Q4_K';
      expect(types.get(`blk.${layer}.attn_qkv.weight`)).toBe(more);
      expect(types.get(`blk.${layer}.ffn_down.weight`)).toBe(more);
      expect(types.get(`blk.${layer}.ffn_up.weight`)).toBe('Q4_K');
      expect(types.get(`blk.${layer}.attn_output.weight`)).toBe('Q4_K');
    }
    for (const tensor of plan.tensors) {
      expect(tensor.type).toBe(tensorTypeFor('q4_k_m', tensor, { numLayers: 4, tiedEmbeddings: false, imatrix: false }) ?? 'F32');
    }
  });

  it('writes the real polyglot-ko vocabulary as specs/gguf.md §3.4 lays it out', async () => {
    const { header } = await openGguf(f32Path);
    const tokens = header.kvs.get('tokenizer.ggml.tokens')?.value as string[];
    const types = header.kvs.get('tokenizer.ggml.token_type')?.value as number[];
    expect(tokens).toHaveLength(30080);
    expect(tokens.slice(0, 4)).toEqual(['<|unused0|>', '<|unused1|>', '<|endoftext|>', '<|sep|>']);
    expect(tokens.slice(30000, 30004)).toEqual(['<|acc|>', '<|tel|>', '<|rrn|>', '[PAD30003]']);
    expect(tokens[30079]).toBe('[PAD30079]');
    const control = types.flatMap((type, id) => (type === GGUF_TOKEN_TYPES.control ? [id] : []));
    expect(control).toEqual([0, 1, 2, 3, 30000, 30001, 30002]);
    expect(types.filter((type) => type === GGUF_TOKEN_TYPES.unused)).toHaveLength(77);
    expect(types.filter((type) => type === GGUF_TOKEN_TYPES.normal)).toHaveLength(29996);
    const merges = header.kvs.get('tokenizer.ggml.merges')?.value as string[];
    expect(merges).toHaveLength(29740);
    expect(merges[0]).toBe('Ġ ì');
    expect(header.kvs.get('tokenizer.ggml.pre')?.value).toBe('gpt-2');
    expect(header.kvs.get('tokenizer.ggml.bos_token_id')?.value).toBe(0);
    expect(header.kvs.get('tokenizer.ggml.eos_token_id')?.value).toBe(2);
    expect(header.kvs.get('tokenizer.ggml.padding_token_id')?.value).toBe(2);
    expect(header.kvs.get('tokenizer.ggml.add_bos_token')?.value).toBe(false);
    expect(header.kvs.get('gptneox.rope.dimension_count')?.value).toBe(16);
    expect(f32Plan.warnings.filter((warning) => /U\+0CF1/.test(warning))).toHaveLength(1);
  });
});
