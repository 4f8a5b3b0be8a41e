import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, type ErrorCode, PolyquantError } from '../src/errors.js';
import { ReadableFile } from '../src/io/file.js';
import { MemorySource, readZip, readZipEntry } from '../src/io/zip.js';
import { ALLOWED_PICKLE_GLOBALS, unpickleStateDict } from '../src/readers/pickle.js';
import { FileRangeTensor, type TensorRef, type TensorToWrite, bytesToWrite, tensorToWrite } from '../src/readers/tensor-ref.js';
import {
  StridedTensor,
  parseTorchBin,
  readTensorBytes,
  readTorchBin,
  tensorRowChunks,
  writeTorchBin,
} from '../src/readers/torch-bin.js';
import {
  type HandTensor,
  PickleBytes,
  buildTorchZip,
  pickleTensor,
  buildZip,
  concat,
  handPickle,
  mutate,
  pickleWithValue,
  seededRandom,
  withTempDir,
} from './helpers/torch-fixtures.js';
import { expectPolyquantError } from './helpers/errors.js';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const fixtureDir = join(repoRoot, '..', 'shared', 'fixtures', 'polyglot-ko-tiny');
const fixture = join(fixtureDir, 'pytorch_model.bin');

const expectError = expectPolyquantError;

async function allRows(tensor: TensorRef, rowsPerChunk: number): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of tensor.rows(rowsPerChunk)) chunks.push(chunk);
  return concat(chunks);
}

const f32 = (values: readonly number[]) => new Uint8Array(Float32Array.from(values).buffer);

describe('writeTorchBin → readTorchBin', () => {
  const tensors: { name: string; dtype: TensorToWrite['dtype']; shape: number[]; bytes: Uint8Array }[] = [
    { name: 'layer.weight', dtype: 'F32', shape: [2, 3], bytes: f32([1, -2, 3.5, 4, 5, 6]) },
    { name: 'layer.half', dtype: 'F16', shape: [4], bytes: Uint8Array.from([0x00, 0x3c, 0x00, 0xc0, 0x00, 0x7c, 0x01, 0x00]) },
    { name: 'layer.bf16', dtype: 'BF16', shape: [2, 2], bytes: Uint8Array.from([0x80, 0x3f, 0x00, 0x40, 0x40, 0x40, 0x80, 0xbf]) },
    { name: 'mask', dtype: 'BOOL', shape: [1, 3], bytes: Uint8Array.from([1, 0, 1]) },
    { name: 'ids', dtype: 'I64', shape: [2], bytes: new Uint8Array(BigInt64Array.from([-1n, 2n ** 40n]).buffer) },
    { name: 'scale', dtype: 'F32', shape: [], bytes: f32([0.125]) },
    { name: 'empty', dtype: 'F16', shape: [0, 4], bytes: new Uint8Array(0) },
  ];
  const toWrite = () => tensors.map((tensor) => bytesToWrite(tensor.name, tensor.dtype, tensor.shape, tensor.bytes));

  it('round-trips F32, F16, BF16, BOOL and I64 tensors, a 0-d scalar and an empty tensor', async () => {
    await withTempDir(async (dir) => {
      const path = join(dir, 'model.bin');
      const { bytes } = await writeTorchBin(path, toWrite());
      expect((await readFile(path)).length).toBe(bytes);
      const file = await readTorchBin(path);
      expect(file.archivePrefix).toBe('archive/');
      expect(file.tensors.map((tensor) => [tensor.name, tensor.dtype, tensor.shape])).toEqual(
        tensors.map((tensor) => [tensor.name, tensor.dtype, tensor.shape]),
      );
      for (const [index, tensor] of file.tensors.entries()) {
        expect(tensor).toBeInstanceOf(FileRangeTensor);
        expect(tensor.byteLength).toBe(tensors[index]!.bytes.length);
        // Plain copies: ReadableFile hands out Buffers, which toEqual tells apart from Uint8Arrays.
        expect(new Uint8Array(await tensor.read())).toEqual(tensors[index]!.bytes);
        expect(await allRows(tensor, 1)).toEqual(tensors[index]!.bytes);
      }
      const scalar = file.tensors.find((tensor) => tensor.name === 'scale')!;
      expect(new Float32Array((await scalar.read()).slice().buffer)[0]).toBe(0.125);
    });
  });

  it('writes the archive records torch 2.x writes, with storages in torch’s sorted-key order', async () => {
    await withTempDir(async (dir) => {
      const path = join(dir, 'model.bin');
      const many = Array.from({ length: 12 }, (_, index) => bytesToWrite(`t${index}`, 'U8', [1], Uint8Array.from([index])));
      await writeTorchBin(path, many);
      const text = new TextDecoder('latin1').decode(await readFile(path));
      const names = [...text.matchAll(/archive\/[a-z./0-9]+/g)].map((match) => match[0]);
      const order = names.slice(0, names.length / 2); // local headers; the central directory repeats them
      expect(order).toEqual([
        'archive/data.pkl',
        'archive/byteorder',
        ...['0', '1', '10', '11', '2', '3', '4', '5', '6', '7', '8', '9'].map((key) => `archive/data/${key}`),
        'archive/version',
      ]);
      const file = await readTorchBin(path);
      expect(await Promise.all(file.tensors.map(async (tensor) => (await tensor.read())[0]))).toEqual(
        Array.from({ length: 12 }, (_, index) => index),
      );
    });
  });

  it('writes byte-identical files when run twice', async () => {
    await withTempDir(async (dir) => {
      await writeTorchBin(join(dir, 'a.bin'), toWrite());
      await writeTorchBin(join(dir, 'b.bin'), toWrite());
      expect(Buffer.compare(await readFile(join(dir, 'a.bin')), await readFile(join(dir, 'b.bin')))).toBe(0);
    });
  });

  it('refuses a tensor whose stream is shorter than its shape, leaving no file behind', async () => {
    await withTempDir(async (dir) => {
      const path = join(dir, 'short.bin');
      const short = bytesToWrite('w', 'F32', [4], f32([1, 2, 3]));
      await expectError(writeTorchBin(path, [short]), ERROR_CODES.MALFORMED, path, 'tensor "w"', 'is 12 bytes, but 16 were declared');
      expect(existsSync(path)).toBe(false);
    });
  });
});

describe('views of shared and strided storages', () => {
  async function withBin<T>(bytes: Uint8Array, body: (path: string) => Promise<T>): Promise<T> {
    return withTempDir(async (dir) => {
      const path = join(dir, 'hand.bin');
      await writeFile(path, bytes);
      return body(path);
    });
  }
  const counting = (count: number) => f32(Array.from({ length: count }, (_, index) => index));
  const floats = (bytes: Uint8Array) => [...new Float32Array(bytes.slice().buffer)];

  it('reads two tensors that share one storage at different offsets, under any top folder', async () => {
    const pickle = handPickle([
      { name: 'a', storageClass: 'FloatStorage', key: '0', numel: 10, offset: 0, shape: [4], stride: [1] },
      { name: 'b', storageClass: 'FloatStorage', key: '0', numel: 10, offset: 4, shape: [2, 3], stride: [3, 1] },
      { name: 'c', storageClass: 'LongStorage', key: '1', numel: 1, offset: 0, shape: [], stride: [] },
    ]);
    const bytes = buildTorchZip({
      prefix: 'pytorch_model/',
      pickle,
      storages: { '0': counting(10), '1': new Uint8Array(BigInt64Array.from([7n]).buffer) },
    });
    await withBin(bytes, async (path) => {
      const file = await readTorchBin(path);
      expect(file.archivePrefix).toBe('pytorch_model/');
      const [a, b, c] = file.tensors as [FileRangeTensor, FileRangeTensor, FileRangeTensor];
      expect(floats(await a.read())).toEqual([0, 1, 2, 3]);
      expect(floats(await b.read())).toEqual([4, 5, 6, 7, 8, 9]);
      expect(b.offset - a.offset).toBe(16);
      expect(floats(await allRows(b, 1))).toEqual([4, 5, 6, 7, 8, 9]);
      expect(new BigInt64Array((await c.read()).slice().buffer)[0]).toBe(7n);
    });
  });

  it('reads tied weights: one tensor object under two names, the second fetched from the pickle memo', async () => {
    const shared: HandTensor = { name: 'embed', storageClass: 'HalfStorage', key: '0', numel: 4, offset: 0, shape: [2, 2], stride: [2, 1] };
    const pickle = new PickleBytes().proto(2).global('collections', 'OrderedDict').emptyTuple().reduce().mark().unicode('embed');
    pickleTensor(pickle, shared).binput(200).unicode('lm_head').binget(200).setitems().stop();
    const storage = Uint8Array.from([0x00, 0x3c, 0x00, 0x40, 0x00, 0x42, 0x00, 0x44]);
    await withBin(buildTorchZip({ pickle: pickle.bytes(), storages: { '0': storage } }), async (path) => {
      const file = await readTorchBin(path);
      expect(file.tensors.map((tensor) => [tensor.name, tensor.dtype, tensor.shape])).toEqual([
        ['embed', 'F16', [2, 2]],
        ['lm_head', 'F16', [2, 2]],
      ]);
      expect(new Uint8Array(await file.tensors[1]!.read())).toEqual(storage);
    });
  });

  it('gathers a transposed (non-contiguous) view into row-major order', async () => {
    // The storage is M = [[0,1,2,3],[4,5,6,7],[8,9,10,11]]; the tensor is M.T: shape [4,3], stride [1,4].
    const pickle = handPickle([{ name: 'mt', storageClass: 'FloatStorage', key: '0', numel: 12, offset: 0, shape: [4, 3], stride: [1, 4] }]);
    await withBin(buildTorchZip({ pickle, storages: { '0': counting(12) } }), async (path) => {
      const [tensor] = (await readTorchBin(path)).tensors;
      expect(tensor).toBeInstanceOf(StridedTensor);
      const expected = [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11];
      expect(floats(await tensor!.read())).toEqual(expected);
      for (const rowsPerChunk of [1, 2, 3, 4, 10]) expect(floats(await allRows(tensor!, rowsPerChunk))).toEqual(expected);
    });
  });

  it('gathers a 3-d permutation, a column slice and a strided 1-d slice', async () => {
    const views: HandTensor[] = [
      // base [2,3,4] contiguous, permuted (2,0,1): shape [4,2,3], stride [1,12,4]
      { name: 'permuted', storageClass: 'FloatStorage', key: '0', numel: 24, offset: 0, shape: [4, 2, 3], stride: [1, 12, 4] },
      // M[:, 1:3] of the [6,4] view of the same storage
      { name: 'columns', storageClass: 'FloatStorage', key: '0', numel: 24, offset: 1, shape: [6, 2], stride: [4, 1] },
      // every other element starting at 1
      { name: 'odd', storageClass: 'FloatStorage', key: '0', numel: 24, offset: 1, shape: [3], stride: [2] },
    ];
    await withBin(buildTorchZip({ pickle: handPickle(views), storages: { '0': counting(24) } }), async (path) => {
      const [permuted, columns, odd] = (await readTorchBin(path)).tensors;
      const expectedPermuted: number[] = [];
      for (let i = 0; i < 4; i++) for (let j = 0; j < 2; j++) for (let k = 0; k < 3; k++) expectedPermuted.push(12 * j + 4 * k + i);
      expect(floats(await permuted!.read())).toEqual(expectedPermuted);
      expect(floats(await allRows(permuted!, 3))).toEqual(expectedPermuted);
      const expectedColumns = [1, 2, 5, 6, 9, 10, 13, 14, 17, 18, 21, 22];
      expect(floats(await columns!.read())).toEqual(expectedColumns);
      expect(floats(await allRows(columns!, 4))).toEqual(expectedColumns);
      expect(floats(await odd!.read())).toEqual([1, 3, 5]);
    });
  });

  it('refuses an overlapping (stride 0) view, naming the tensor and its stride', async () => {
    const pickle = handPickle([{ name: 'broadcast', storageClass: 'FloatStorage', key: '0', numel: 4, offset: 0, shape: [3, 4], stride: [0, 1] }]);
    await withBin(buildTorchZip({ pickle, storages: { '0': counting(4) } }), async (path) => {
      await expectError(readTorchBin(path), ERROR_CODES.UNSUPPORTED, path, 'tensor "broadcast"', 'stride [0, 1]');
    });
  });

  it('refuses a view that reaches past the end of its storage', async () => {
    const pickle = handPickle([{ name: 'over', storageClass: 'FloatStorage', key: '0', numel: 4, offset: 2, shape: [3], stride: [1] }]);
    await withBin(buildTorchZip({ pickle, storages: { '0': counting(4) } }), async (path) => {
      await expectError(readTorchBin(path), ERROR_CODES.MALFORMED, path, 'tensor "over"', 'reaches element 4 of a 4-element storage');
    });
  });
});

describe.skipIf(!existsSync(fixture))('the real torch.save file (PyTorch 1.13, polyglot-ko-tiny)', () => {
  /** Tensors of the safetensors shards next to it, parsed ad hoc: 8-byte header length, JSON header. */
  async function safetensorsTensors(): Promise<Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>> {
    const tensors = new Map<string, { dtype: string; shape: number[]; bytes: Uint8Array }>();
    for (const shard of ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']) {
      const bytes = new Uint8Array(await readFile(join(fixtureDir, shard)));
      const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
      const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength))) as Record<
        string,
        { dtype: string; shape: number[]; data_offsets: [number, number] }
      >;
      for (const [name, info] of Object.entries(header)) {
        if (name === '__metadata__') continue;
        const start = 8 + headerLength + info.data_offsets[0];
        tensors.set(name, { dtype: info.dtype, shape: info.shape, bytes: bytes.subarray(start, 8 + headerLength + info.data_offsets[1]) });
      }
    }
    return tensors;
  }

  it('loads all 64 tensors with their buffers, dtypes and shapes', async () => {
    const file = await readTorchBin(fixture);
    expect(file.archivePrefix).toBe('pytorch_model/');
    expect(file.tensors.length).toBe(64);
    const byName = new Map(file.tensors.map((tensor) => [tensor.name, tensor]));
    expect(file.tensors[0]!.name).toBe('gpt_neox.embed_in.weight');
    const embed = byName.get('gpt_neox.embed_in.weight')!;
    expect([embed.dtype, embed.shape]).toEqual(['F16', [30080, 256]]);
    for (let layer = 0; layer < 4; layer++) {
      const bias = byName.get(`gpt_neox.layers.${layer}.attention.bias`)!;
      expect([bias.dtype, bias.shape]).toEqual(['BOOL', [1, 1, 2048, 2048]]);
      const masked = byName.get(`gpt_neox.layers.${layer}.attention.masked_bias`)!;
      expect([masked.dtype, masked.shape]).toEqual(['F32', []]);
      const invFreq = byName.get(`gpt_neox.layers.${layer}.attention.rotary_emb.inv_freq`)!;
      expect([invFreq.dtype, invFreq.shape]).toEqual(['F32', [8]]);
    }
    // The causal mask buffer is lower-triangular: row 1 is [1, 1, 0, …].
    const mask = await byName.get('gpt_neox.layers.0.attention.bias')!.read();
    expect([...mask.subarray(2048, 2051)]).toEqual([1, 1, 0]);
    // masked_bias is -1e9 in GPT-NeoX.
    expect(new Float32Array((await byName.get('gpt_neox.layers.0.attention.masked_bias')!.read()).slice().buffer)[0]).toBe(-1e9);
  });

  it('holds the same bytes as the safetensors shards next to it for every shared tensor', async () => {
    const file = await readTorchBin(fixture);
    const reference = await safetensorsTensors();
    let compared = 0;
    for (const tensor of file.tensors) {
      const other = reference.get(tensor.name);
      if (other === undefined) continue;
      expect([tensor.dtype, tensor.shape], tensor.name).toEqual([other.dtype, other.shape]);
      expect(Buffer.compare(Buffer.from(await tensor.read()), Buffer.from(other.bytes)), tensor.name).toBe(0);
      compared += 1;
    }
    expect(compared).toBeGreaterThanOrEqual(52);
  });

  it('is rewritten byte for byte by writeTorchBin with torch 1.13’s options', async () => {
    await withTempDir(async (dir) => {
      const file = await readTorchBin(fixture);
      const path = join(dir, 'pytorch_model.bin');
      await writeTorchBin(
        path,
        file.tensors.map((tensor) => tensorToWrite(tensor, 4096)),
        { archiveName: 'pytorch_model', container: 'dict', byteorderRecord: false },
      );
      expect(Buffer.compare(await readFile(path), await readFile(fixture))).toBe(0);
    });
  });
});

describe('the pickle allow list', () => {
  it('holds exactly OrderedDict, the torch rebuild functions and one storage class per dtype', () => {
    expect([...ALLOWED_PICKLE_GLOBALS.keys()].sort()).toEqual(
      [
        'collections.OrderedDict',
        'torch._utils._rebuild_parameter',
        'torch._utils._rebuild_parameter_with_state',
        'torch._utils._rebuild_tensor_v2',
        'torch.BFloat16Storage',
        'torch.BoolStorage',
        'torch.ByteStorage',
        'torch.CharStorage',
        'torch.DoubleStorage',
        'torch.FloatStorage',
        'torch.HalfStorage',
        'torch.IntStorage',
        'torch.LongStorage',
        'torch.ShortStorage',
      ].sort(),
    );
    expect(ALLOWED_PICKLE_GLOBALS.get('torch.HalfStorage')).toEqual({ role: 'storage', dtype: 'F16' });
  });

  it('reads an nn.Parameter saved through _rebuild_parameter as its data', () => {
    const weight: HandTensor = { name: 'p', storageClass: 'FloatStorage', key: '0', numel: 2, offset: 0, shape: [2], stride: [1] };
    const pickle = new PickleBytes().proto(2).emptyDict().unicode('p').global('torch._utils', '_rebuild_parameter').mark();
    pickleTensor(pickle, weight).raw(0x88).global('collections', 'OrderedDict').emptyTuple().reduce().tuple().reduce().setitem().stop();
    const [tensor] = unpickleStateDict(pickle.bytes(), 'param.bin');
    expect(tensor).toEqual({
      name: 'p',
      storage: { dtype: 'F32', key: '0', location: 'cpu', numel: 2 },
      storageOffset: 0,
      shape: [2],
      stride: [1],
    });
  });
});

describe('malformed and hostile .bin files', () => {
  async function expectBinError(bytes: Uint8Array, code: ErrorCode, ...fragments: string[]): Promise<PolyquantError> {
    return withTempDir(async (dir) => {
      const path = join(dir, 'bad.bin');
      await writeFile(path, bytes);
      return expectError(readTorchBin(path), code, path, ...fragments);
    });
  }
  const weight: HandTensor = { name: 'w', storageClass: 'FloatStorage', key: '0', numel: 2, offset: 0, shape: [2], stride: [1] };
  const goodStorages = { '0': f32([1, 2]) };
  const withPickle = (pickle: Uint8Array, storages: Record<string, Uint8Array> = goodStorages) => buildTorchZip({ pickle, storages });

  it('refuses a pickle GLOBAL os.system by name, before anything else', async () => {
    const pickle = pickleWithValue((p) => p.global('os', 'system').unicode('echo pwned').raw(0x85).reduce());
    await expectBinError(withPickle(pickle), ERROR_CODES.UNSAFE, 'refusing pickle GLOBAL os.system');
  });

  it('refuses builtins.eval and __builtin__.getattr, and os.system through STACK_GLOBAL and INST', async () => {
    await expectBinError(
      withPickle(pickleWithValue((p) => p.global('builtins', 'eval').unicode('1+1').raw(0x85).reduce())),
      ERROR_CODES.UNSAFE,
      'refusing pickle GLOBAL builtins.eval',
    );
    await expectBinError(
      withPickle(pickleWithValue((p) => p.global('__builtin__', 'getattr'))),
      ERROR_CODES.UNSAFE,
      'refusing pickle GLOBAL __builtin__.getattr',
    );
    await expectBinError(
      withPickle(pickleWithValue((p) => p.shortUnicode('os').shortUnicode('system').stackGlobal())),
      ERROR_CODES.UNSAFE,
      'refusing pickle GLOBAL os.system',
    );
    await expectBinError(
      withPickle(pickleWithValue((p) => p.mark().unicode('ls').raw(0x69, ...new TextEncoder().encode('os\nsystem\n')))),
      ERROR_CODES.UNSAFE,
      'refusing pickle GLOBAL os.system',
    );
  });

  it('refuses a storage type outside the dtype table as unsupported, not unsafe', async () => {
    const pickle = handPickle([{ ...weight, storageClass: 'ComplexFloatStorage' }]);
    await expectBinError(withPickle(pickle), ERROR_CODES.UNSUPPORTED, 'torch.ComplexFloatStorage');
  });

  it('names the missing storage record and its tensor', async () => {
    const pickle = handPickle([weight, { ...weight, name: 'v', key: '1' }]);
    await expectBinError(withPickle(pickle), ERROR_CODES.MALFORMED, 'tensor "v"', '"archive/data/1" is missing');
  });

  it('rejects a storage record whose size disagrees with the pickle’s element count', async () => {
    const pickle = handPickle([{ ...weight, numel: 3 }]);
    await expectBinError(withPickle(pickle), ERROR_CODES.MALFORMED, 'tensor "w"', 'is 8 bytes, but the pickle declares 3 F32 elements (12 bytes)');
  });

  it('rejects truncated archives and a bad end of central directory record', async () => {
    const good = withPickle(handPickle([weight]));
    await expectBinError(good.subarray(0, good.length - 10), ERROR_CODES.MALFORMED);
    await expectBinError(good.subarray(0, 40), ERROR_CODES.MALFORMED);
    const badEnd = good.slice();
    new DataView(badEnd.buffer).setUint32(badEnd.length - 22 + 12, 5, true); // central directory size
    await expectBinError(badEnd, ERROR_CODES.MALFORMED, 'central directory');
  });

  it('rejects an entry whose data range runs beyond the file', async () => {
    const good = withPickle(handPickle([weight]));
    const view = new DataView(good.buffer);
    const directoryOffset = view.getUint32(good.length - 22 + 16, true);
    // The second central directory entry is archive/data/0; claim it holds 1 MB.
    const second = directoryOffset + 46 + 'archive/data.pkl'.length;
    view.setUint32(second + 20, 1 << 20, true);
    view.setUint32(second + 24, 1 << 20, true);
    await expectBinError(good, ERROR_CODES.MALFORMED, '"archive/data/0"');
  });

  it('refuses the legacy non-zip format with a hint on re-saving', async () => {
    const legacy = Uint8Array.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e]);
    const error = await expectBinError(legacy, ERROR_CODES.UNSUPPORTED, 'legacy');
    expect(error.hint).toContain('_use_new_zipfile_serialization=True');
    expect(error.hint).toContain('safetensors');
  });

  it('refuses a deflated storage record', async () => {
    const bytes = buildZip([
      { name: 'archive/data.pkl', data: handPickle([weight]) },
      { name: 'archive/data/0', data: f32([1, 2]), method: 8 },
    ]);
    await expectBinError(bytes, ERROR_CODES.UNSUPPORTED, '"archive/data/0"', 'deflate');
  });

  it('rejects a file that is not a zip archive, and one without data.pkl', async () => {
    await expectBinError(new TextEncoder().encode('{"not": "a checkpoint"}'), ERROR_CODES.MALFORMED, 'not a zip archive');
    await expectBinError(buildZip([{ name: 'archive/other', data: f32([1]) }]), ERROR_CODES.MALFORMED, 'data.pkl');
  });

  it('refuses a checkpoint saved on a big-endian machine', async () => {
    const bytes = buildTorchZip({
      pickle: handPickle([weight]),
      storages: goodStorages,
      extra: [{ name: 'archive/byteorder', data: new TextEncoder().encode('big') }],
    });
    await expectBinError(bytes, ERROR_CODES.UNSUPPORTED, 'big-endian');
  });

  it('refuses pickles that are not state dicts of tensors', async () => {
    await expectBinError(
      withPickle(pickleWithValue((p) => p.unicode('not a tensor'))),
      ERROR_CODES.UNSUPPORTED,
      '"weight" is a str, not a tensor',
    );
    await expectBinError(withPickle(new PickleBytes().proto(2).emptyList().stop().bytes()), ERROR_CODES.UNSUPPORTED, 'not a state dict');
  });

  it('rejects a data.pkl whose CRC-32 does not match', async () => {
    const bytes = buildZip([
      { name: 'archive/data.pkl', data: handPickle([weight]), crc: 12345 },
      { name: 'archive/data/0', data: f32([1, 2]) },
    ]);
    await expectBinError(bytes, ERROR_CODES.MALFORMED, 'CRC-32');
  });

  it('bounds hostile pickles: huge declared lengths, deep MARK nesting, wide integers, no STOP', async () => {
    const file = 'hostile.bin';
    const huge = new PickleBytes().proto(2).raw(0x58, 0xf0, 0xff, 0xff, 0xff).bytes();
    expect(() => unpickleStateDict(huge, file)).toThrow(/ends inside an opcode/);
    const deep = new PickleBytes().proto(2).raw(...new Array(100).fill(0x28)).bytes();
    expect(() => unpickleStateDict(deep, file)).toThrow(expect.objectContaining({ code: ERROR_CODES.LIMIT }));
    const wide = new PickleBytes().proto(2).raw(0x8b, 0x00, 0x00, 0x00, 0x01).bytes();
    expect(() => unpickleStateDict(wide, file)).toThrow(expect.objectContaining({ code: ERROR_CODES.LIMIT }));
    const endless = new PickleBytes().proto(2).emptyDict().bytes();
    expect(() => unpickleStateDict(endless, file)).toThrow(/without STOP/);
    const unknownMemo = new PickleBytes().proto(2).binget(7).stop().bytes();
    expect(() => unpickleStateDict(unknownMemo, file)).toThrow(/memo entry 7/);
    const selfAppend = new PickleBytes().proto(2).emptyList().binput(0).binget(0).raw(0x61).stop().bytes();
    expect(() => unpickleStateDict(selfAppend, file)).toThrow(expect.objectContaining({ code: ERROR_CODES.UNSUPPORTED }));
    const unknownOpcode = new PickleBytes().proto(2).raw(0xff).bytes();
    expect(() => unpickleStateDict(unknownOpcode, file)).toThrow(/unknown pickle opcode 0xff/);
  });
});

describe('fuzzing the .bin reader', () => {
  async function baseFiles(): Promise<Uint8Array[]> {
    return withTempDir(async (dir) => {
      const path = join(dir, 'base.bin');
      await writeTorchBin(path, [
        bytesToWrite('w', 'F16', [3, 4], Uint8Array.from({ length: 24 }, (_, index) => index)),
        bytesToWrite('b', 'F32', [5], f32([1, 2, 3, 4, 5])),
        bytesToWrite('flag', 'BOOL', [], Uint8Array.from([1])),
      ]);
      const written = new Uint8Array(await readFile(path));
      // A second base exercises shared storages and the strided gather.
      const hand = buildTorchZip({
        pickle: handPickle([
          { name: 't', storageClass: 'FloatStorage', key: '0', numel: 12, offset: 0, shape: [4, 3], stride: [1, 4] },
          { name: 'row', storageClass: 'FloatStorage', key: '0', numel: 12, offset: 4, shape: [4], stride: [1] },
          { name: 'ids', storageClass: 'LongStorage', key: '1', numel: 2, offset: 0, shape: [2], stride: [1] },
        ]),
        storages: { '0': f32(Array.from({ length: 12 }, (_, index) => index)), '1': new Uint8Array(16) },
      });
      return [written, hand];
    });
  }

  /** Parses and reads every tensor; returns 'accepted', or the error (which must be ours). */
  async function attempt(bytes: Uint8Array): Promise<unknown> {
    const source = new MemorySource('fuzz.bin', bytes);
    try {
      const layout = await parseTorchBin(source);
      for (const tensor of layout.tensors) {
        const whole = await readTensorBytes(source, tensor);
        if (whole.length !== tensor.byteLength) throw new Error(`read ${whole.length} of ${tensor.byteLength} bytes`);
        for await (const _chunk of tensorRowChunks(source, tensor, 2)) {
          // drain
        }
      }
      return 'accepted';
    } catch (error) {
      return error;
    }
  }

  function isOurs(error: unknown): boolean {
    // Our code sets `cause` only for OS errors; a cause that is a native error means a guard was missing.
    return error instanceof PolyquantError && !(error.cause instanceof Error);
  }

  it('only ever throws PolyquantErrors on 10,000 seeded mutations, in memory', async () => {
    const bases = await baseFiles();
    for (const base of bases) expect(await attempt(base)).toBe('accepted');
    const random = seededRandom(0x5eed);
    let accepted = 0;
    let rejected = 0;
    const foreign: string[] = [];
    for (let iteration = 0; iteration < 10_000; iteration++) {
      const mutated = mutate(bases[iteration % bases.length]!, random);
      const outcome = await attempt(mutated);
      if (outcome === 'accepted') accepted += 1;
      else if (isOurs(outcome)) rejected += 1;
      else if (foreign.length < 5) foreign.push(`iteration ${iteration}: ${String(outcome)} ${(outcome as Error)?.stack ?? ''}`);
    }
    expect(foreign).toEqual([]);
    expect(accepted).toBeGreaterThan(0);
    expect(rejected).toBeGreaterThan(0);
  });

  it('only ever throws PolyquantErrors on 10,000 seeded mutations of data.pkl alone', async () => {
    const [written] = await baseFiles();
    const source = new MemorySource('base.bin', written!);
    const archive = await readZip(source);
    const pickle = await readZipEntry(source, archive.byName.get('archive/data.pkl')!, 1 << 20);
    const random = seededRandom(0xfeed);
    let accepted = 0;
    let rejected = 0;
    const foreign: string[] = [];
    for (let iteration = 0; iteration < 10_000; iteration++) {
      try {
        unpickleStateDict(mutate(pickle, random), 'fuzz.bin');
        accepted += 1;
      } catch (error) {
        if (isOurs(error)) rejected += 1;
        else if (foreign.length < 5) foreign.push(`iteration ${iteration}: ${String(error)}`);
      }
    }
    expect(foreign).toEqual([]);
    expect(accepted).toBeGreaterThan(0);
    expect(rejected).toBeGreaterThan(0);
  });

  it('only ever throws PolyquantErrors on 300 mutated files read through readTorchBin', async () => {
    const bases = await baseFiles();
    const random = seededRandom(0xf11e);
    let accepted = 0;
    let rejected = 0;
    const foreign: string[] = [];
    await withTempDir(async (dir) => {
      for (let iteration = 0; iteration < 300; iteration++) {
        const path = join(dir, `m${iteration}.bin`);
        await writeFile(path, mutate(bases[iteration % bases.length]!, random));
        try {
          const file = await readTorchBin(path);
          for (const tensor of file.tensors) {
            await tensor.read();
            await allRows(tensor, 2);
          }
          accepted += 1;
        } catch (error) {
          if (isOurs(error)) rejected += 1;
          else if (foreign.length < 5) foreign.push(`iteration ${iteration}: ${String(error)}`);
        }
      }
    });
    expect(foreign).toEqual([]);
    expect(accepted).toBeGreaterThan(0);
    expect(rejected).toBeGreaterThan(0);
  });
});

// Writes and reads a real > 4 GB checkpoint (ZIP64 sizes and offsets, as torch writes them). Needs ~5 GB
// of disk and a minute; run with POLYQUANT_BIG_TESTS=1.
describe.skipIf(process.env.POLYQUANT_BIG_TESTS !== '1')('a checkpoint larger than 4 GB', () => {
  it('round-trips a 4.5 GB tensor and a tensor stored after it', async () => {
    await withTempDir(async (dir) => {
      const path = join(dir, 'big.bin');
      const chunk = new Uint8Array(64 * 1024 * 1024).fill(7);
      const rows = 2;
      const columns = 4.5e9 / 2 / rows; // F16 elements per row
      const big: TensorToWrite = {
        name: 'big',
        dtype: 'F16',
        shape: [rows, columns],
        async *chunks() {
          let left = rows * columns * 2;
          while (left > 0) {
            const size = Math.min(left, chunk.length);
            const piece = chunk.subarray(0, size);
            if (size === left) {
              const last = piece.slice();
              last.set([1, 2, 3, 4], size - 4);
              yield last;
            } else yield piece;
            left -= size;
          }
        },
      };
      const after = bytesToWrite('after', 'F32', [3], f32([1.5, 2.5, 3.5]));
      const { bytes } = await writeTorchBin(path, [big, after]);
      expect(bytes).toBeGreaterThan(4.5e9);
      const file = await readTorchBin(path);
      const [bigRef, afterRef] = file.tensors as [FileRangeTensor, FileRangeTensor];
      expect(bigRef.byteLength).toBe(4.5e9);
      expect(afterRef.offset).toBeGreaterThan(2 ** 32);
      expect(floatsOf(await afterRef.read())).toEqual([1.5, 2.5, 3.5]);
      const handle = await ReadableFile.open(path);
      try {
        expect([...(await handle.read(bigRef.offset + bigRef.byteLength - 6, 6))]).toEqual([7, 7, 1, 2, 3, 4]);
      } finally {
        await handle.close();
      }
    });
  }, 600_000);
});

function floatsOf(bytes: Uint8Array): number[] {
  return [...new Float32Array(bytes.slice().buffer)];
}
