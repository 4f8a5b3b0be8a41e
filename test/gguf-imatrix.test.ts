import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { convertToGguf } from '../src/converters/gguf/convert.js';
import { type GgufKV, readGgufHeader, writeGguf } from '../src/converters/gguf/format.js';
import { readImatrix } from '../src/converters/gguf/imatrix.js';
import { PolyquantError } from '../src/errors.js';
import { withFile } from '../src/io/file.js';
import { runCli } from './helpers/cli.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, REPO_ROOT } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir();
afterAll(() => scratch.remove());
const TINY = join(REPO_ROOT, 'fixtures', 'tiny-neox');
const LLAMA_QUANTIZE = join(REPO_ROOT, 'vendor-build', 'llama.cpp', 'build', 'bin', 'llama-quantize');

/** Importance sums for every matrix of a model, as llama-imatrix would collect them (deterministic). */
function sumsFor(columns: Record<string, number>): Map<string, Float32Array> {
  return new Map(
    Object.entries(columns).map(([name, n], t) => [name, Float32Array.from({ length: n }, (_, i) => 10 + ((i * 7 + t * 13) % 23) * 3.5)]),
  );
}

function legacyFile(path: string, sums: Map<string, Float32Array>, ncall: number): void {
  const parts: Buffer[] = [];
  const i32 = (value: number) => {
    const b = Buffer.alloc(4);
    b.writeInt32LE(value);
    parts.push(b);
  };
  i32(sums.size);
  for (const [name, values] of sums) {
    i32(Buffer.byteLength(name));
    parts.push(Buffer.from(name));
    i32(ncall);
    i32(values.length);
    parts.push(Buffer.from(values.buffer, values.byteOffset, values.byteLength));
  }
  i32(ncall);
  i32(4);
  parts.push(Buffer.from('test'));
  writeFileSync(path, Buffer.concat(parts));
}

async function ggufFile(path: string, sums: Map<string, Float32Array>, count: number): Promise<void> {
  const kvs: GgufKV[] = [
    { key: 'general.type', type: 'STRING', value: 'imatrix' },
    { key: 'imatrix.datasets', type: 'STRING', array: true, value: ['test'] },
    { key: 'imatrix.chunk_count', type: 'UINT32', value: count },
    { key: 'imatrix.chunk_size', type: 'UINT32', value: 512 },
  ];
  const f32 = (values: Float32Array) => async function* () {
    yield new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  };
  await writeGguf(path, kvs, [...sums].flatMap(([name, values]) => [
    { name: `${name}.in_sum2`, type: 'F32' as const, ne: [values.length, 1], chunks: f32(values) },
    { name: `${name}.counts`, type: 'F32' as const, ne: [1, 1], chunks: f32(Float32Array.of(count)) },
  ]));
}

const TINY_COLUMNS = {
  'blk.0.attn_qkv.weight': 64,
  'blk.0.attn_output.weight': 64,
  'blk.0.ffn_up.weight': 64,
  'blk.0.ffn_down.weight': 256,
  'blk.1.attn_qkv.weight': 64,
  'blk.1.attn_output.weight': 64,
  'blk.1.ffn_up.weight': 64,
  'blk.1.ffn_down.weight': 256,
  'output.weight': 64,
};

describe('llama.cpp importance matrix files', () => {
  it('reads the legacy .dat form and divides the sums by the call count', async () => {
    const sums = sumsFor(TINY_COLUMNS);
    const path = join(scratch.path, 'legacy.dat');
    legacyFile(path, sums, 4);
    const imatrix = await readImatrix(path);
    expect(imatrix.format).toBe('legacy');
    expect(imatrix.datasets).toEqual(['test']);
    expect(imatrix.chunkCount).toBe(4);
    const raw = sums.get('blk.0.ffn_down.weight') as Float32Array;
    expect([...(imatrix.entries.get('blk.0.ffn_down.weight') ?? [])].slice(0, 3)).toEqual([0, 1, 2].map((i) => Math.fround((raw[i] as number) / 4)));
  });

  it('reads the GGUF form and divides in_sum2 by the counts', async () => {
    const sums = sumsFor(TINY_COLUMNS);
    const path = join(scratch.path, 'imatrix.gguf');
    await ggufFile(path, sums, 8);
    const imatrix = await readImatrix(path);
    expect(imatrix.format).toBe('gguf');
    expect(imatrix.entries.size).toBe(9);
    expect(imatrix.entries.get('output.weight')?.[0]).toBe(Math.fround((sums.get('output.weight')?.[0] as number) / 8));
  });

  it('refuses a file that is neither form, naming it', async () => {
    const path = join(scratch.path, 'junk.dat');
    writeFileSync(path, Buffer.from([1, 0, 0, 0, 255, 255, 255, 127]));
    await expect(readImatrix(path)).rejects.toBeInstanceOf(PolyquantError);
    await expect(readImatrix(path)).rejects.toThrow(/junk\.dat: not a GGUF or legacy imatrix file/);
  });

  it('changes the quantized bytes of the tensors it covers when converting', async () => {
    const path = join(scratch.path, 'for-convert.dat');
    legacyFile(path, sumsFor(TINY_COLUMNS), 2);
    const plain = join(scratch.path, 'plain.gguf');
    const weighted = join(scratch.path, 'weighted.gguf');
    expect((await runCli('convert', TINY, '--type', 'q4_0', '--out', plain, '--workers', '1')).code).toBe(0);
    const run = await runCli('convert', TINY, '--type', 'q4_0', '--out', weighted, '--workers', '1', '--imatrix', path);
    expect(run.stderr).not.toContain('internal error');
    expect(run.code).toBe(0);
    expect(readFileSync(plain).equals(readFileSync(weighted))).toBe(false);
  });
});

async function tensorsOf(path: string): Promise<Map<string, { type: string; bytes: Buffer }>> {
  return withFile(path, async (file) => {
    const header = await readGgufHeader(path, file.size, (n) => file.read(0, n));
    const out = new Map<string, { type: string; bytes: Buffer }>();
    for (const tensor of header.tensors) {
      out.set(tensor.name, { type: tensor.type, bytes: Buffer.from(await file.read(header.dataStart + tensor.offset, tensor.bytes)) });
    }
    return out;
  });
}

describe.skipIf(!existsSync(LLAMA_QUANTIZE) || !HAS_SHARED)('imatrix conversions against llama-quantize', () => {
  // llama-quantize also records the imatrix file name and counts as quantize.imatrix.* metadata, so the
  // comparison is per tensor: same types, same bytes.
  it('writes the same q4_k_m and iq4_xs tensors as llama-quantize --imatrix', async () => {
    const columns: Record<string, number> = { 'output.weight': 256 };
    for (let layer = 0; layer < 4; layer += 1) {
      columns[`blk.${layer}.attn_qkv.weight`] = 256;
      columns[`blk.${layer}.attn_output.weight`] = 256;
      columns[`blk.${layer}.ffn_up.weight`] = 256;
      columns[`blk.${layer}.ffn_down.weight`] = 1024;
    }
    const imatrixPath = join(scratch.path, 'polyglot.imatrix.gguf');
    await ggufFile(imatrixPath, sumsFor(columns), 16);
    const imatrix = await readImatrix(imatrixPath);
    const f32 = join(scratch.path, 'polyglot-f32.gguf');
    await convertToGguf(POLYGLOT_TINY_DIR, { type: 'f32', out: f32, workers: 0 });
    for (const [type, llamaType] of [['q4_k_m', 'Q4_K_M'], ['iq4_xs', 'IQ4_XS']] as const) {
      const ours = join(scratch.path, `ours-${type}.gguf`);
      const theirs = join(scratch.path, `theirs-${type}.gguf`);
      await convertToGguf(POLYGLOT_TINY_DIR, { type, out: ours, imatrix: imatrix.entries });
      const run = spawnSync(LLAMA_QUANTIZE, ['--imatrix', imatrixPath, f32, theirs, llamaType, '1'], { encoding: 'utf8' });
      expect(run.status, run.stderr.slice(-2000)).toBe(0);
      const [a, b] = [await tensorsOf(ours), await tensorsOf(theirs)];
      expect([...a.keys()].sort()).toEqual([...b.keys()].sort());
      for (const [name, tensor] of a) {
        expect(tensor.type, `${type} ${name}`).toBe(b.get(name)?.type);
        expect(tensor.bytes.equals(b.get(name)?.bytes ?? Buffer.alloc(0)), `${type} ${name} differs from llama-quantize`).toBe(true);
      }
    }
  }, 300_000);
});
