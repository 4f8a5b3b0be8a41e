import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ERROR_CODES, type ErrorCode, PolyquantError } from '../src/errors.js';
import {
  compareCodePoints,
  encodeSafetensors,
  MAX_HEADER_BYTES,
  MAX_RANK,
  parseSafetensorsBytes,
  readSafetensors,
  SAFETENSORS_DTYPE_ORDER,
  type SafetensorsFile,
  writeSafetensors,
} from '../src/readers/safetensors.js';
import { bytesToWrite, type TensorToWrite } from '../src/readers/tensor-ref.js';
import { DTYPE_NAMES, DTYPES, type DType } from '../src/tensor/dtype.js';
import {
  buildSafetensors,
  fuzzSeedFile,
  mulberry32,
  mutateSafetensors,
  patternBytes,
  SMALL_DATA_BYTES,
  smallHeader,
  smallHeaderWith,
} from './helpers/safetensors-fixtures.js';
import { expectPolyquantError } from './helpers/errors.js';

const FILE = 'fixture.safetensors';
const scratch = mkdtempSync(join(tmpdir(), 'polyquant-safetensors-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

let scratchCount = 0;
/** A fresh empty directory for one test, so that "nothing left behind" can be checked by listing it. */
function freshDir(): string {
  scratchCount += 1;
  return mkdtempSync(join(scratch, `case-${scratchCount}-`));
}

function caught(body: () => unknown): unknown {
  try {
    body();
  } catch (error) {
    return error;
  }
  throw new Error('expected the call to throw');
}

/** Parses `bytes` in memory and asserts the typed error: its code, the file and each fragment in its message. */
function expectRejected(bytes: Uint8Array, code: ErrorCode, ...fragments: string[]): PolyquantError {
  const error = caught(() => parseSafetensorsBytes(FILE, bytes));
  expect(error).toBeInstanceOf(PolyquantError);
  const typed = error as PolyquantError;
  expect(typed.code).toBe(code);
  expect(typed.message).toContain(FILE);
  for (const fragment of fragments) expect(typed.message).toContain(fragment);
  return typed;
}

const expectRejectedAsync = expectPolyquantError;

async function* inPieces(bytes: Uint8Array, pieceLength: number): AsyncIterable<Uint8Array> {
  for (let offset = 0; offset < bytes.length; offset += pieceLength) yield bytes.subarray(offset, offset + pieceLength);
}

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const chunk of chunks) parts.push(chunk);
  return Uint8Array.from(parts.flatMap((part) => [...part]));
}

async function firstChunk(chunks: AsyncIterable<Uint8Array>): Promise<Uint8Array | undefined> {
  for await (const chunk of chunks) return chunk;
  return undefined;
}

describe('writeSafetensors and readSafetensors', () => {
  // One tensor per dtype in the table, plus a scalar and zero-size tensors; some streamed in odd pieces.
  const tensors = [
    ...DTYPE_NAMES.map((dtype, index) => ({
      name: `t.${dtype.toLowerCase()}`,
      dtype,
      shape: [3, 2],
      data: patternBytes(6 * DTYPES[dtype].bytes, index),
    })),
    { name: 'scalar', dtype: 'F32' as DType, shape: [], data: patternBytes(4, 99) },
    { name: 'empty', dtype: 'F16' as DType, shape: [0, 4], data: new Uint8Array(0) },
    { name: 'empty.inner', dtype: 'U8' as DType, shape: [4, 0, 2], data: new Uint8Array(0) },
  ];
  const toWrite = (): TensorToWrite[] =>
    tensors.map((tensor, index) =>
      index % 2 === 0
        ? bytesToWrite(tensor.name, tensor.dtype, tensor.shape, tensor.data)
        : { ...tensor, chunks: () => inPieces(tensor.data, 5) },
    );

  it('round-trips names, dtypes, shapes and bytes for every dtype, a scalar and zero-size tensors', async () => {
    const path = join(freshDir(), 'model.safetensors');
    const { bytes } = await writeSafetensors(path, toWrite(), { format: 'pt' });
    const file = await readSafetensors(path);

    expect(file.fileSize).toBe(bytes);
    expect(readFileSync(path).length).toBe(bytes);
    expect(file.metadata).toEqual({ format: 'pt' });
    expect(file.tensors.map((tensor) => tensor.name).sort()).toEqual(tensors.map((tensor) => tensor.name).sort());
    for (const expected of tensors) {
      const tensor = file.tensors.find((candidate) => candidate.name === expected.name);
      expect(tensor?.dtype).toBe(expected.dtype);
      expect(tensor?.shape).toEqual(expected.shape);
      // Compared as plain Uint8Arrays: read() may hand back a Buffer, which toEqual tells apart.
      expect(new Uint8Array((await tensor?.read()) ?? [])).toEqual(expected.data);
      if (tensor !== undefined) expect(await collect(tensor.rows(2))).toEqual(expected.data);
    }
  });

  it('writes byte-identical files for the same input and the same bytes as encodeSafetensors', async () => {
    const dir = freshDir();
    await writeSafetensors(join(dir, 'a.safetensors'), toWrite(), { b: '2', a: '1' });
    await writeSafetensors(join(dir, 'b.safetensors'), toWrite().reverse(), { a: '1', b: '2' });
    const first = readFileSync(join(dir, 'a.safetensors'));
    expect(readFileSync(join(dir, 'b.safetensors')).equals(first)).toBe(true);
    expect(Buffer.from(encodeSafetensors(tensors, { a: '1', b: '2' })).equals(first)).toBe(true);
  });

  it('pads the header with spaces to a multiple of 8 bytes and puts __metadata__ first with sorted keys', async () => {
    const path = join(freshDir(), 'model.safetensors');
    await writeSafetensors(path, toWrite(), { zeta: 'z', alpha: 'a' });
    const file = await readSafetensors(path);
    expect(file.headerLength % 8).toBe(0);
    expect(file.dataOffset).toBe(8 + file.headerLength);
    const header = readFileSync(path).subarray(8, file.dataOffset).toString('utf8');
    expect(header).toMatch(/^\{"__metadata__":\{"alpha":"a","zeta":"z"\},"t\.i64":\{"dtype":"I64","shape":\[3,2\]/);
    expect(header).toMatch(/\} *$/);
    expect(header.trimEnd().length).toBeGreaterThan(header.length - 8);
  });

  it("orders tensors like the crate's prepare: dtype descending in the crate's enum order, then name by code point", async () => {
    const path = join(freshDir(), 'ordered.safetensors');
    await writeSafetensors(path, toWrite());
    const written = await readSafetensors(path);
    expect(written.tensors.map((tensor) => tensor.name)).toEqual([
      't.i64', 't.f64', 'scalar', 't.f32', 't.i32', 't.bf16', 'empty', 't.f16', 't.i16', 't.i8',
      'empty.inner', 't.u8', 't.bool',
    ]);

    // Rust compares names as UTF-8 bytes: U+E000 sorts before U+1F600, though JS's `<` says otherwise.
    const names = ['\u{1F600}', '\uE000', 'b', 'a'];
    const bytes = encodeSafetensors(names.map((name) => ({ name, dtype: 'U8' as DType, shape: [1], data: new Uint8Array(1) })));
    expect(parseSafetensorsBytes(FILE, bytes).tensors.map((tensor) => tensor.name)).toEqual(['a', 'b', '\uE000', '\u{1F600}']);
    expect(['\uE000', '\u{1F600}'].sort()).toEqual(['\u{1F600}', '\uE000']);
    expect(['\uE000', '\u{1F600}'].sort(compareCodePoints)).toEqual(['\uE000', '\u{1F600}']);
  });

  it("keeps SAFETENSORS_DTYPE_ORDER in step with the crate's Dtype enum for every dtype in the table", () => {
    // safetensors/src/tensor.rs `pub enum Dtype`, in declaration order (its derived Ord).
    const crateEnum = ['BOOL', 'F4', 'F6_E2M3', 'F6_E3M2', 'U8', 'I8', 'F8_E5M2', 'F8_E4M3', 'F8_E8M0', 'I16', 'U16', 'F16', 'BF16', 'I32', 'U32', 'F32', 'C64', 'F64', 'I64', 'U64'];
    const ours = crateEnum.filter((name): name is DType => DTYPE_NAMES.includes(name as DType));
    expect(ours.sort((a, b) => SAFETENSORS_DTYPE_ORDER[a] - SAFETENSORS_DTYPE_ORDER[b])).toEqual(ours);
    expect([...ours].sort()).toEqual([...DTYPE_NAMES].sort());
    expect(Object.values(SAFETENSORS_DTYPE_ORDER).sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it("encodes exactly the bytes of the crate's own serialization tests", () => {
    const floats = new Uint8Array(Float32Array.from([0, 1, 2, 3, 4, 5]).buffer);
    const header = (json: string, length: number) => {
      const bytes = new Uint8Array(8 + length).fill(0x20, 8);
      new DataView(bytes.buffer).setBigUint64(0, BigInt(length), true);
      bytes.set(new TextEncoder().encode(json), 8);
      return bytes;
    };
    // test_serialization: 64 header bytes, no padding needed.
    expect(encodeSafetensors([{ name: 'attn.0', dtype: 'F32', shape: [1, 2, 3], data: floats }])).toEqual(
      Uint8Array.from([...header('{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}', 64), ...floats]),
    );
    // test_serialization_forced_alignement: 65 bytes of JSON padded to 72.
    expect(encodeSafetensors([{ name: 'attn0', dtype: 'F32', shape: [1, 1, 2, 3], data: floats }])).toEqual(
      Uint8Array.from([...header('{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}', 72), ...floats]),
    );
    // test_empty, without and with metadata.
    expect(encodeSafetensors([])).toEqual(header('{}', 8));
    expect(encodeSafetensors([], { framework: 'pt' })).toEqual(header('{"__metadata__":{"framework":"pt"}}', 40));
  });
});

describe('writeSafetensors refusals', () => {
  it('refuses two tensors with the same name and writes nothing', async () => {
    const dir = freshDir();
    const tensor = bytesToWrite('w', 'U8', [1], new Uint8Array(1));
    await expectRejectedAsync(writeSafetensors(join(dir, 'out.safetensors'), [tensor, tensor]), ERROR_CODES.USAGE, 'tensor "w"');
    expect(readdirSync(dir)).toEqual([]);
  });

  it('refuses a tensor named __metadata__', async () => {
    const dir = freshDir();
    const tensor = bytesToWrite('__metadata__', 'U8', [1], new Uint8Array(1));
    await expectRejectedAsync(writeSafetensors(join(dir, 'out.safetensors'), [tensor]), ERROR_CODES.USAGE, 'reserved');
    expect(readdirSync(dir)).toEqual([]);
  });

  it('leaves no file and no temp file behind when a tensor comes up short', async () => {
    const dir = freshDir();
    const short = bytesToWrite('short', 'F32', [4], new Uint8Array(12));
    await expectRejectedAsync(
      writeSafetensors(join(dir, 'out.safetensors'), [bytesToWrite('ok', 'F32', [1], new Uint8Array(4)), short]),
      ERROR_CODES.MALFORMED,
      'out.safetensors',
      'tensor "short"',
      'holds only 12 bytes but shape [4] of F32 needs exactly 16',
    );
    expect(readdirSync(dir)).toEqual([]);
  });

  it('stops at the first chunk that would go past the planned bytes', async () => {
    const dir = freshDir();
    const long = bytesToWrite('long', 'U8', [2], new Uint8Array(3));
    await expectRejectedAsync(writeSafetensors(join(dir, 'out.safetensors'), [long]), ERROR_CODES.MALFORMED, 'tensor "long"', 'more than 2');
    expect(readdirSync(dir)).toEqual([]);
  });

  it('leaves no file behind and passes the error on when a chunk iterator throws', async () => {
    const dir = freshDir();
    const failing: TensorToWrite = {
      name: 'failing',
      dtype: 'U8',
      shape: [8],
      async *chunks() {
        yield new Uint8Array(4);
        throw new Error('source went away');
      },
    };
    await expect(writeSafetensors(join(dir, 'out.safetensors'), [failing])).rejects.toThrow('source went away');
    expect(readdirSync(dir)).toEqual([]);
  });

  it('keeps the previous file intact when a rewrite fails', async () => {
    const dir = freshDir();
    const path = join(dir, 'out.safetensors');
    await writeSafetensors(path, [bytesToWrite('w', 'U8', [2], Uint8Array.of(1, 2))]);
    const before = readFileSync(path);
    await expectRejectedAsync(writeSafetensors(path, [bytesToWrite('w', 'U8', [2], Uint8Array.of(1))]), ERROR_CODES.MALFORMED);
    expect(readFileSync(path).equals(before)).toBe(true);
    expect(readdirSync(dir)).toEqual(['out.safetensors']);
  });
});

const SHARDS = resolve(import.meta.dirname, '../../shared/fixtures/polyglot-ko-tiny');

describe.skipIf(!existsSync(SHARDS))('the polyglot-ko-tiny shards', () => {
  const shard = (index: number) => readSafetensors(join(SHARDS, `model-0000${index}-of-00002.safetensors`));
  const byName = (file: SafetensorsFile, name: string) => file.tensors.find((tensor) => tensor.name === name);

  it('reads shard 1 with its embedding and the per-layer buffers', async () => {
    const file = await shard(1);
    expect(file.fileSize).toBe(26_952_168);
    expect(file.headerLength).toBe(3480);
    expect(file.metadata).toEqual({ format: 'pt' });
    expect(file.tensors).toHaveLength(31);
    const embedding = byName(file, 'gpt_neox.embed_in.weight');
    expect([embedding?.dtype, embedding?.shape, embedding?.offset]).toEqual(['F16', [30080, 256], file.dataOffset]);
    // First four f16 values of row 0, as Python's safetensors reads them.
    const firstRow = embedding === undefined ? undefined : await firstChunk(embedding.rows(1));
    expect(firstRow?.length).toBe(256 * 2);
    expect(Buffer.from(firstRow?.subarray(0, 8) ?? []).toString('hex')).toBe('19a1292295955220');

    const mask = byName(file, 'gpt_neox.layers.0.attention.bias');
    expect([mask?.dtype, mask?.shape]).toEqual(['BOOL', [1, 1, 2048, 2048]]);
    // A causal mask: the lower triangle of 2048 × 2048 is set.
    expect((await mask?.read())?.reduce((sum, value) => sum + value, 0)).toBe((2048 * 2049) / 2);

    const maskedBias = byName(file, 'gpt_neox.layers.0.attention.masked_bias');
    expect([maskedBias?.dtype, maskedBias?.shape]).toEqual(['F32', []]);
    const maskedBiasBytes = (await maskedBias?.read()) ?? new Uint8Array(4);
    expect(new DataView(maskedBiasBytes.buffer, maskedBiasBytes.byteOffset).getFloat32(0, true)).toBe(-1e9);

    const invFreq = byName(file, 'gpt_neox.layers.0.attention.rotary_emb.inv_freq');
    expect([invFreq?.dtype, invFreq?.shape]).toEqual(['F32', [8]]);
    const invFreqBytes = (await invFreq?.read()) ?? new Uint8Array(32);
    const values = new Float32Array(invFreqBytes.buffer, invFreqBytes.byteOffset, 8);
    expect(values[0]).toBe(1);
    expect(values[2]).toBeCloseTo(0.1, 7);
  });

  it('reads shard 2, whose header keys are neither name- nor dtype-sorted, in offset order', async () => {
    const file = await shard(2);
    expect(file.tensors).toHaveLength(33);
    expect(file.tensors[0]?.name).toBe('gpt_neox.layers.2.input_layernorm.weight');
    expect(file.tensors.at(-1)?.name).toBe('embed_out.weight');
    expect(byName(file, 'embed_out.weight')?.shape).toEqual([30080, 256]);
    // Offset order, contiguous, and ending exactly at the end of the file.
    let next = file.dataOffset;
    for (const tensor of file.tensors) {
      expect(tensor.offset).toBe(next);
      next += tensor.byteLength;
    }
    expect(next).toBe(file.fileSize);
  });
});

describe('parseSafetensorsBytes on malformed input', () => {
  const valid = () => buildSafetensors(smallHeader(), SMALL_DATA_BYTES);

  it('accepts the small valid file the variants below break', () => {
    const file = parseSafetensorsBytes(FILE, valid());
    expect(file.tensors.map((tensor) => [tensor.name, tensor.offset, tensor.byteLength])).toEqual([
      ['v', file.dataOffset, 16],
      ['w', file.dataOffset + 16, 8],
    ]);
  });

  it('rejects a file shorter than the 8-byte header length', () => {
    expectRejected(new Uint8Array(5), ERROR_CODES.MALFORMED, 'file is 5 bytes');
  });

  it('rejects a truncated file on disk with the same message as in memory', async () => {
    const path = join(freshDir(), 'short.safetensors');
    writeFileSync(path, new Uint8Array(5));
    await expectRejectedAsync(readSafetensors(path), ERROR_CODES.MALFORMED, path, 'file is 5 bytes');
  });

  it('rejects a header length that runs past the end of the file', () => {
    expectRejected(buildSafetensors(smallHeader(), SMALL_DATA_BYTES, { headerLength: 10_000n }), ERROR_CODES.MALFORMED, 'header length 10000 runs past the end');
  });

  it('rejects a header length over MAX_HEADER_BYTES before reading it', () => {
    expectRejected(buildSafetensors('{}', 0, { headerLength: BigInt(MAX_HEADER_BYTES + 1) }), ERROR_CODES.LIMIT, '100000001', 'MAX_HEADER_BYTES');
    expectRejected(buildSafetensors('{}', 0, { headerLength: 2n ** 64n - 1n }), ERROR_CODES.LIMIT, '18446744073709551615');
  });

  it('rejects a header truncated mid-file on disk', async () => {
    const path = join(freshDir(), 'cut.safetensors');
    writeFileSync(path, valid().subarray(0, 30));
    await expectRejectedAsync(readSafetensors(path), ERROR_CODES.MALFORMED, path, 'runs past the end of the file');
  });

  it('rejects overlapping data_offsets', () => {
    expectRejected(
      buildSafetensors(smallHeaderWith('w', 'data_offsets', [8, 16]), SMALL_DATA_BYTES),
      ERROR_CODES.MALFORMED,
      'tensor "w": data_offsets [8, 16] overlap the previous tensor "v" which ends at 16',
    );
  });

  it('rejects a gap between data_offsets', () => {
    expectRejected(
      buildSafetensors(smallHeaderWith('w', 'data_offsets', [20, 28]), 28),
      ERROR_CODES.MALFORMED,
      'tensor "w": data_offsets [20, 28] leave a gap of 4 bytes after the previous tensor "v"',
    );
  });

  it('rejects a first tensor that does not start at 0', () => {
    const header = { v: { dtype: 'U8', shape: [2], data_offsets: [1, 3] } };
    expectRejected(buildSafetensors(header, 3), ERROR_CODES.MALFORMED, 'tensor "v"', 'after the start of the data buffer');
  });

  it('rejects trailing bytes after the last tensor', () => {
    expectRejected(buildSafetensors(smallHeader(), SMALL_DATA_BYTES + 8), ERROR_CODES.MALFORMED, '8 trailing bytes', 'last tensor "w" ends at 24');
  });

  it('rejects data_offsets that run past the data buffer', () => {
    expectRejected(buildSafetensors(smallHeader(), 20), ERROR_CODES.MALFORMED, 'tensor "w"', 'data_offsets [16, 24] run past the end of the 20-byte data buffer');
  });

  it('rejects duplicate tensor keys, which JSON.parse would silently collapse', () => {
    const entry = '{"dtype":"U8","shape":[1],"data_offsets":[0,1]}';
    expectRejected(buildSafetensors(`{"v":${entry},"v":${entry}}`, 1), ERROR_CODES.MALFORMED, 'tensor "v"', 'appears twice');
  });

  it('rejects duplicate keys spelled with escapes', () => {
    const entry = '{"dtype":"U8","shape":[1],"data_offsets":[0,1]}';
    expectRejected(buildSafetensors(`{"v":${entry},"\\u0076":${entry}}`, 1), ERROR_CODES.MALFORMED, 'tensor "v"', 'appears twice');
  });

  it('rejects a duplicate field inside a tensor entry', () => {
    const header = '{"v":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"dtype":"I8"}}';
    expectRejected(buildSafetensors(header, 1), ERROR_CODES.MALFORMED, 'tensor "v"', 'the key "dtype" appears twice');
  });

  it('rejects a duplicate key inside __metadata__', () => {
    expectRejected(buildSafetensors('{"__metadata__":{"a":"1","a":"2"}}'), ERROR_CODES.MALFORMED, '__metadata__ has the key "a" twice');
  });

  it('rejects a shape whose element count × dtype bytes differs from end − begin', () => {
    expectRejected(
      buildSafetensors(smallHeaderWith('w', 'shape', [5]), SMALL_DATA_BYTES),
      ERROR_CODES.MALFORMED,
      'tensor "w": shape [5] of F16 needs 10 bytes but data_offsets [16, 24] span 8',
    );
  });

  it('rejects a header that is not valid UTF-8', () => {
    const header = new TextEncoder().encode(JSON.stringify(smallHeader()));
    header[header.indexOf(0x70)] = 0xff; // the "p" of "pt"
    expectRejected(buildSafetensors(header, SMALL_DATA_BYTES), ERROR_CODES.MALFORMED, 'not valid UTF-8');
  });

  it('rejects a header that starts with a byte-order mark, as the crate does', () => {
    expectRejected(buildSafetensors(`\uFEFF${JSON.stringify(smallHeader())}`, SMALL_DATA_BYTES), ERROR_CODES.MALFORMED, 'not valid JSON');
  });

  it('rejects a header that is not JSON', () => {
    expectRejected(buildSafetensors('{"v": ', SMALL_DATA_BYTES), ERROR_CODES.MALFORMED, 'not valid JSON');
  });

  it('rejects JSON that is not an object', () => {
    expectRejected(buildSafetensors('[1, 2]'), ERROR_CODES.MALFORMED, 'must be a JSON object', 'an array of 2 items');
    expectRejected(buildSafetensors('null'), ERROR_CODES.MALFORMED, 'must be a JSON object', 'null');
    expectRejected(buildSafetensors('"v"'), ERROR_CODES.MALFORMED, 'must be a JSON object');
  });

  it('rejects an unknown dtype as unsupported and lists the supported ones', () => {
    expectRejected(
      buildSafetensors(smallHeaderWith('w', 'dtype', 'F8_E4M3'), SMALL_DATA_BYTES),
      ERROR_CODES.UNSUPPORTED,
      'tensor "w"',
      'dtype "F8_E4M3" is not supported; supported dtypes: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL',
    );
  });

  it('rejects a negative dimension', () => {
    expectRejected(buildSafetensors(smallHeaderWith('w', 'shape', [-4]), SMALL_DATA_BYTES), ERROR_CODES.MALFORMED, 'tensor "w"', 'number -4 in shape');
  });

  it('rejects a fractional dimension', () => {
    expectRejected(buildSafetensors(smallHeaderWith('w', 'shape', [4.5]), SMALL_DATA_BYTES), ERROR_CODES.MALFORMED, 'tensor "w"', 'number 4.5 in shape');
  });

  it('rejects integers written as floats or exponents, which serde_json refuses for usize', () => {
    const header = JSON.stringify(smallHeader());
    expectRejected(buildSafetensors(header.replace('[4]', '[4.0]'), SMALL_DATA_BYTES), ERROR_CODES.MALFORMED, 'tensor "w"', 'number 4.0 in shape');
    expectRejected(buildSafetensors(header.replace('[16,24]', '[16,2.4e1]'), SMALL_DATA_BYTES), ERROR_CODES.MALFORMED, 'tensor "w"', 'number 2.4e1 in data_offsets');
  });

  it('rejects a dimension beyond 2^53 − 1 as over the limit', () => {
    const header = JSON.stringify(smallHeader()).replace('[4]', '[18446744073709551616]');
    expectRejected(buildSafetensors(header, SMALL_DATA_BYTES), ERROR_CODES.LIMIT, 'tensor "w"', 'shape[0] is 18446744073709552000');
  });

  it('rejects a zero-size tensor whose other dimensions multiply past 2^53 − 1', () => {
    const header = { v: { dtype: 'U8', shape: [0, 2 ** 30, 2 ** 30], data_offsets: [0, 0] } };
    expectRejected(buildSafetensors(header), ERROR_CODES.LIMIT, 'tensor "v"', 'more than polyquant can address');
  });

  it(`rejects a rank over MAX_RANK (${MAX_RANK})`, () => {
    const header = { v: { dtype: 'U8', shape: new Array(MAX_RANK + 1).fill(1), data_offsets: [0, 1] } };
    expectRejected(buildSafetensors(header, 1), ERROR_CODES.LIMIT, 'tensor "v"', `rank ${MAX_RANK + 1}`);
  });

  it('rejects data_offsets that are not a [begin, end] pair of byte offsets', () => {
    expectRejected(buildSafetensors(smallHeaderWith('w', 'data_offsets', [16]), SMALL_DATA_BYTES), ERROR_CODES.MALFORMED, 'tensor "w"', 'an array of 1 items');
    expectRejected(buildSafetensors(smallHeaderWith('w', 'data_offsets', [24, 16]), SMALL_DATA_BYTES), ERROR_CODES.MALFORMED, 'tensor "w"', 'end before they begin');
    expectRejected(buildSafetensors(smallHeaderWith('w', 'data_offsets', [16, 2 ** 60]), SMALL_DATA_BYTES), ERROR_CODES.MALFORMED, 'tensor "w"', 'not a byte offset');
  });

  it('rejects a tensor entry with a missing, extra or mistyped field', () => {
    const { shape: _dropped, ...noShape } = smallHeader().w ?? {};
    expectRejected(buildSafetensors({ ...smallHeader(), w: noShape }, SMALL_DATA_BYTES), ERROR_CODES.MALFORMED, 'tensor "w"', 'missing the field "shape"');
    expectRejected(buildSafetensors(smallHeaderWith('w', 'offsets', [16, 24]), SMALL_DATA_BYTES), ERROR_CODES.MALFORMED, 'tensor "w"', 'unexpected field "offsets"');
    expectRejected(buildSafetensors(smallHeaderWith('w', 'dtype', 16), SMALL_DATA_BYTES), ERROR_CODES.MALFORMED, 'tensor "w"', 'dtype must be a string');
    expectRejected(buildSafetensors(smallHeaderWith('w', 'shape', '4'), SMALL_DATA_BYTES), ERROR_CODES.MALFORMED, 'tensor "w"', 'shape must be an array');
    expectRejected(buildSafetensors({ ...smallHeader(), w: [1] }, SMALL_DATA_BYTES), ERROR_CODES.MALFORMED, 'tensor "w"', 'entry must be an object');
  });

  it('rejects an empty tensor name', () => {
    expectRejected(buildSafetensors({ '': { dtype: 'U8', shape: [1], data_offsets: [0, 1] } }, 1), ERROR_CODES.MALFORMED, 'tensor name is empty');
  });

  it('rejects a tensor name with an unpaired surrogate escape, which serde_json refuses', () => {
    expectRejected(buildSafetensors('{"\\ud800":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', 1), ERROR_CODES.MALFORMED, 'unpaired');
  });

  it('rejects a __metadata__ that is not an object of strings', () => {
    expectRejected(buildSafetensors({ ...smallHeader(), __metadata__: ['pt'] }, SMALL_DATA_BYTES), ERROR_CODES.MALFORMED, '__metadata__ must be an object');
    expectRejected(buildSafetensors({ ...smallHeader(), __metadata__: { epoch: 3 } }, SMALL_DATA_BYTES), ERROR_CODES.MALFORMED, '__metadata__ value for key "epoch" must be a string');
    expectRejected(buildSafetensors({ ...smallHeader(), __metadata__: { nested: {} } }, SMALL_DATA_BYTES), ERROR_CODES.MALFORMED, 'an object');
  });

  it('accepts a null __metadata__ as no metadata, like the crate', () => {
    expect(parseSafetensorsBytes(FILE, buildSafetensors({ ...smallHeader(), __metadata__: null }, SMALL_DATA_BYTES)).metadata).toBeUndefined();
  });

  it('accepts zero-size tensors that share an offset and a header with no tensors at all', () => {
    const header = {
      b: { dtype: 'F32', shape: [0], data_offsets: [0, 0] },
      a: { dtype: 'U8', shape: [2, 0], data_offsets: [0, 0] },
      c: { dtype: 'U8', shape: [1], data_offsets: [0, 1] },
    };
    expect(parseSafetensorsBytes(FILE, buildSafetensors(header, 1)).tensors.map((tensor) => tensor.name)).toEqual(['a', 'b', 'c']);
    expect(parseSafetensorsBytes(FILE, buildSafetensors('{}      ')).tensors).toEqual([]);
  });

  it('keeps a "__proto__" metadata key as plain data', () => {
    const file = parseSafetensorsBytes(FILE, buildSafetensors('{"__metadata__":{"__proto__":"x"}}'));
    expect(Object.getPrototypeOf(file.metadata)).toBe(Object.prototype);
    expect(Object.entries(file.metadata ?? {})).toEqual([['__proto__', 'x']]);
  });
});

describe('fuzzing the reader', () => {
  const CASES = 10_000;
  const ON_DISK = 300;

  it(`only ever throws PolyquantError on ${CASES} seeded mutations of a valid file, in memory and on disk`, async () => {
    const seed = fuzzSeedFile();
    expect(parseSafetensorsBytes(FILE, seed).tensors).toHaveLength(6);
    const random = mulberry32(0x5afe_7e45);
    const dir = freshDir();
    let accepted = 0;
    let rejected = 0;
    const codes = new Set<string>();
    // Each header check the mutations must reach at least once, so that the fuzz test cannot quietly
    // degrade into testing only the length prefix.
    const checks = [
      'too short', 'over the 100000000-byte limit', 'runs past the end of the file', 'not valid UTF-8',
      'not valid JSON', 'appears twice', 'plain digits', 'unexpected field',
      'is not supported', 'needs', 'overlap', 'leave a gap', 'trailing bytes', 'run past the end of the',
    ];
    const reached = new Set<string>();

    for (let index = 0; index < CASES; index += 1) {
      const bytes = mutateSafetensors(seed, random);
      const path = join(dir, `case-${index}.safetensors`);
      let memoryOutcome: string;
      try {
        const file = parseSafetensorsBytes(path, bytes);
        // "Read" every tensor from the in-memory file: each range must lie inside it.
        for (const tensor of file.tensors) {
          expect(tensor.offset + tensor.byteLength).toBeLessThanOrEqual(bytes.length);
          expect(bytes.subarray(tensor.offset, tensor.offset + tensor.byteLength).length).toBe(tensor.byteLength);
        }
        accepted += 1;
        memoryOutcome = `ok ${file.tensors.length}`;
      } catch (error) {
        if (!(error instanceof PolyquantError)) {
          throw new Error(`case ${index} threw a raw ${String(error)}; bytes: ${Buffer.from(bytes).toString('base64')}`);
        }
        rejected += 1;
        codes.add(error.code);
        for (const check of checks) if (error.detail.includes(check)) reached.add(check);
        memoryOutcome = error.message;
      }

      if (index < ON_DISK) {
        writeFileSync(path, bytes);
        let diskOutcome: string;
        try {
          const file = await readSafetensors(path);
          for (const tensor of file.tensors) {
            expect((await tensor.read()).length).toBe(tensor.byteLength);
            expect((await collect(tensor.rows(3))).length).toBe(tensor.byteLength);
          }
          diskOutcome = `ok ${file.tensors.length}`;
        } catch (error) {
          if (!(error instanceof PolyquantError)) throw new Error(`case ${index} threw a raw ${String(error)} on disk`);
          diskOutcome = error.message;
        }
        expect(diskOutcome).toBe(memoryOutcome);
        rmSync(path);
      }
    }

    expect(accepted).toBeGreaterThan(0);
    expect(rejected).toBeGreaterThan(0);
    expect(accepted + rejected).toBe(CASES);
    expect([...codes].sort()).toEqual([ERROR_CODES.LIMIT, ERROR_CODES.MALFORMED, ERROR_CODES.UNSUPPORTED].sort());
    expect(checks.filter((check) => !reached.has(check))).toEqual([]);
  });
});
