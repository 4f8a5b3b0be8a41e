import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { GGUF_ALIGNMENT, type GgufKV, planGguf, readGgufHeader, writeGguf } from '../src/converters/gguf/format.js';
import { PolyquantError } from '../src/errors.js';
import { withFile } from '../src/io/file.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir();
afterAll(() => scratch.remove());

const KVS: GgufKV[] = [
  { key: 'general.architecture', type: 'STRING', value: 'gptneox' },
  { key: 'gptneox.block_count', type: 'UINT32', value: 2 },
  { key: 'gptneox.attention.layer_norm_epsilon', type: 'FLOAT32', value: 1e-5 },
  { key: 'gptneox.use_parallel_residual', type: 'BOOL', value: true },
  { key: 'tokenizer.ggml.tokens', type: 'STRING', array: true, value: ['a', '한', '<|endoftext|>'] },
  { key: 'tokenizer.ggml.token_type', type: 'INT32', array: true, value: [1, 1, 3] },
  { key: 'general.size', type: 'UINT64', value: 2n ** 40n },
];

describe('the GGUF v3 container', () => {
  it('lays out the header, 32-byte aligned tensor offsets and padding exactly', () => {
    const plan = planGguf(KVS, [
      { name: 'a', type: 'F32', ne: [3] },
      { name: 'b', type: 'Q8_0', ne: [64, 2] },
    ]);
    expect(new TextDecoder().decode(plan.header.subarray(0, 4))).toBe('GGUF');
    expect(new DataView(plan.header.buffer).getUint32(4, true)).toBe(3);
    expect(plan.dataStart % GGUF_ALIGNMENT).toBe(0);
    expect(plan.tensors.map((tensor) => [tensor.offset, tensor.bytes])).toEqual([
      [0, 12],
      [32, 2 * 2 * 34],
    ]);
    expect(plan.fileBytes).toBe(plan.dataStart + 32 + 160);
  });

  it('writes a file whose header reads back with every key, type and tensor', async () => {
    const path = join(scratch.path, 'round-trip.gguf');
    const data = new Uint8Array(2 * 2 * 34).map((_, i) => i & 0xff);
    await writeGguf(path, KVS, [
      { name: 'a', type: 'F32', ne: [3], chunks: async function* () { yield new Uint8Array(Float32Array.of(1, 2, 3).buffer); } },
      { name: 'b', type: 'Q8_0', ne: [64, 2], chunks: async function* () { yield data.subarray(0, 100); yield data.subarray(100); } },
    ]);
    const header = await withFile(path, (file) => readGgufHeader(path, file.size, (n) => file.read(0, n)));
    expect(header.version).toBe(3);
    expect(header.kvs.get('general.architecture')).toEqual({ type: 'STRING', value: 'gptneox' });
    expect(header.kvs.get('tokenizer.ggml.tokens')?.value).toEqual(['a', '한', '<|endoftext|>']);
    expect(header.kvs.get('gptneox.use_parallel_residual')?.value).toBe(true);
    expect(header.kvs.get('general.size')?.value).toBe(2n ** 40n);
    expect(header.kvs.get('gptneox.attention.layer_norm_epsilon')?.value).toBeCloseTo(1e-5, 10);
    const b = header.tensors.find((tensor) => tensor.name === 'b');
    expect(b).toMatchObject({ type: 'Q8_0', ne: [64, 2], bytes: 136 });
    const bytes = readFileSync(path);
    expect(bytes.subarray(header.dataStart + (b?.offset ?? 0), header.dataStart + (b?.offset ?? 0) + 136).equals(Buffer.from(data))).toBe(true);
    expect(bytes.length % GGUF_ALIGNMENT).toBe(0);
  });

  it('refuses a tensor whose stream is short, leaving no file behind', async () => {
    const path = join(scratch.path, 'short.gguf');
    const attempt = writeGguf(path, KVS, [{ name: 'a', type: 'F32', ne: [4], chunks: async function* () { yield new Uint8Array(8); } }]);
    await expect(attempt).rejects.toBeInstanceOf(PolyquantError);
    await expect(attempt).rejects.toThrow(/tensor "a"/);
    expect(() => readFileSync(path)).toThrow();
  });

  it('refuses rows that are not whole blocks, repeated keys and over-long names', () => {
    expect(() => planGguf(KVS, [{ name: 'w', type: 'Q4_K', ne: [100, 2] }])).toThrow(/multiple of Q4_K's block size 256/);
    expect(() => planGguf([...KVS, KVS[0] as GgufKV], [])).toThrow(/repeated/);
    expect(() => planGguf(KVS, [{ name: 'x'.repeat(64), type: 'F32', ne: [1] }])).toThrow(PolyquantError);
  });

  it('rejects a file that is not GGUF, naming it', async () => {
    const path = join(scratch.path, 'not.gguf');
    await writeGguf(path, KVS, []);
    const bytes = readFileSync(path);
    bytes[0] = 0x58;
    const bad = join(scratch.path, 'bad.gguf');
    (await import('node:fs')).writeFileSync(bad, bytes);
    const attempt = withFile(bad, (file) => readGgufHeader(bad, file.size, (n) => file.read(0, n)));
    await expect(attempt).rejects.toThrow(/bad\.gguf: not a GGUF file/);
  });
});
