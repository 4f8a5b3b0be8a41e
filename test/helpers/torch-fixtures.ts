/**
 * Fixture builders for the zip and torch .bin tests (STYLE.md §13): a plain zip writer and a pickle opcode
 * builder written independently of src/, so the reader is tested against bytes it did not produce, plus a
 * seeded PRNG for the fuzz tests. Opcode bytes: CPython Lib/pickletools.py.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import type { ByteSource } from '../../src/io/zip.js';
import type { ZipSink } from '../../src/io/zip-writer.js';
import { seededUniform } from '../../src/verify/stats.js';

/** Seeded mutations: the library's mulberry32 (verify/stats.ts) with integer and byte helpers. */
export function seededRandom(seed: number) {
  const next = seededUniform(seed);
  const int = (below: number): number => Math.floor(next() * below);
  return {
    next,
    int,
    bytes(count: number): Uint8Array {
      const out = new Uint8Array(count);
      for (let index = 0; index < count; index++) out[index] = int(256);
      return out;
    },
  };
}
export type SeededRandom = ReturnType<typeof seededRandom>;

/** One seeded mutation of `input`: byte flips, interesting values, truncation, splices, duplication. */
export function mutate(input: Uint8Array, random: SeededRandom): Uint8Array {
  const bytes = input.slice();
  const at = () => random.int(Math.max(bytes.length, 1));
  switch (random.int(6)) {
    case 0: {
      const flips = 1 + random.int(4);
      for (let index = 0; index < flips; index++) bytes[at()]! ^= 1 << random.int(8);
      return bytes;
    }
    case 1: {
      // Values that break length and offset fields: 0, 0xff…, sign bits.
      const interesting = [0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe];
      const position = at();
      const width = 1 + random.int(4);
      const value = interesting[random.int(interesting.length)]!;
      for (let index = 0; index < width && position + index < bytes.length; index++) bytes[position + index] = value;
      return bytes;
    }
    case 2:
      return bytes.slice(0, at());
    case 3: {
      // Splice: copy a random segment over another place.
      const from = at();
      const length = 1 + random.int(64);
      const segment = bytes.slice(from, from + length);
      bytes.set(segment, random.int(bytes.length - segment.length + 1));
      return bytes;
    }
    case 4: {
      // Delete a range: shifts every later offset.
      const from = at();
      const length = 1 + random.int(32);
      return concat([bytes.subarray(0, from), bytes.subarray(from + length)]);
    }
    default: {
      // Insert random bytes.
      const from = at();
      return concat([bytes.subarray(0, from), random.bytes(1 + random.int(16)), bytes.subarray(from)]);
    }
  }
}

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

export async function withTempDir<T>(body: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'polyquant-torch-'));
  try {
    return await body(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A ZipSink that keeps everything in memory. */
export class MemorySink implements ZipSink {
  private readonly parts: Uint8Array[] = [];
  bytesWritten = 0;

  async write(bytes: Uint8Array): Promise<void> {
    this.parts.push(bytes.slice());
    this.bytesWritten += bytes.length;
  }

  bytes(): Uint8Array {
    return concat(this.parts);
  }
}

/**
 * A huge virtual file made of a few forged byte runs at given offsets, zeros elsewhere: lets a zip reader
 * walk a >4 GB ZIP64 layout without 4 GB on disk.
 */
export class SparseSource implements ByteSource {
  constructor(
    readonly path: string,
    readonly size: number,
    private readonly runs: readonly { offset: number; bytes: Uint8Array }[],
  ) {}

  async read(offset: number, length: number): Promise<Uint8Array> {
    if (offset < 0 || length < 0 || offset + length > this.size) throw new Error(`sparse read ${offset}+${length} out of range`);
    const out = new Uint8Array(length);
    for (const run of this.runs) {
      const start = Math.max(offset, run.offset);
      const end = Math.min(offset + length, run.offset + run.bytes.length);
      if (start < end) out.set(run.bytes.subarray(start - run.offset, end - run.offset), start - offset);
    }
    return out;
  }
}

const encoder = new TextEncoder();

export interface PlainZipEntry {
  readonly name: string | Uint8Array;
  readonly data: Uint8Array;
  /** Written as the method field (the data is not actually compressed). */
  readonly method?: number;
  readonly crc?: number;
}

/**
 * A minimal, independent zip writer (APPNOTE 4.3.7, 4.3.12, 4.3.16): local headers with real sizes and
 * CRCs, no alignment, no data descriptors, no ZIP64, an optional archive comment.
 */
export function buildZip(entries: readonly PlainZipEntry[], comment = ''): Uint8Array {
  const locals: Uint8Array[] = [];
  const centrals: Uint8Array[] = [];
  let offset = 0;
  for (const entry of entries) {
    const name = typeof entry.name === 'string' ? encoder.encode(entry.name) : entry.name;
    const crc = entry.crc ?? crc32(entry.data) >>> 0;
    const method = entry.method ?? 0;
    const local = new Uint8Array(30 + name.length);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(4, 20, true);
    lv.setUint16(8, method, true);
    lv.setUint32(14, crc, true);
    lv.setUint32(18, entry.data.length, true);
    lv.setUint32(22, entry.data.length, true);
    lv.setUint16(26, name.length, true);
    local.set(name, 30);
    const central = new Uint8Array(46 + name.length);
    const cv = new DataView(central.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(4, 20, true);
    cv.setUint16(6, 20, true);
    cv.setUint16(10, method, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, entry.data.length, true);
    cv.setUint32(24, entry.data.length, true);
    cv.setUint16(28, name.length, true);
    cv.setUint32(42, offset, true);
    central.set(name, 46);
    locals.push(local, entry.data);
    centrals.push(central);
    offset += local.length + entry.data.length;
  }
  const directory = concat(centrals);
  const commentBytes = encoder.encode(comment);
  const end = new Uint8Array(22 + commentBytes.length);
  const ev = new DataView(end.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, entries.length, true);
  ev.setUint16(10, entries.length, true);
  ev.setUint32(12, directory.length, true);
  ev.setUint32(16, offset, true);
  ev.setUint16(20, commentBytes.length, true);
  end.set(commentBytes, 22);
  return concat([...locals, directory, end]);
}

/** A torch-style archive: `<prefix>data.pkl`, `<prefix>data/<key>` storages, `<prefix>version`. */
export function buildTorchZip(options: {
  pickle: Uint8Array;
  storages: Readonly<Record<string, Uint8Array>>;
  prefix?: string;
  extra?: readonly PlainZipEntry[];
}): Uint8Array {
  const prefix = options.prefix ?? 'archive/';
  return buildZip([
    { name: `${prefix}data.pkl`, data: options.pickle },
    ...Object.entries(options.storages).map(([key, data]) => ({ name: `${prefix}data/${key}`, data })),
    { name: `${prefix}version`, data: encoder.encode('3\n') },
    ...(options.extra ?? []),
  ]);
}

/** Writes pickle opcodes by hand (CPython Lib/pickletools.py), for pickles our pickler would never emit. */
export class PickleBytes {
  private readonly parts: number[] = [];

  private op(...bytes: number[]): this {
    this.parts.push(...bytes);
    return this;
  }

  proto(version = 2) {
    return this.op(0x80, version);
  }
  global(module: string, name: string) {
    return this.op(0x63, ...encoder.encode(`${module}\n${name}\n`));
  }
  stackGlobal() {
    return this.op(0x93);
  }
  mark() {
    return this.op(0x28);
  }
  unicode(text: string) {
    const bytes = encoder.encode(text);
    return this.op(0x58, ...u32(bytes.length), ...bytes);
  }
  shortUnicode(text: string) {
    const bytes = encoder.encode(text);
    return this.op(0x8c, bytes.length, ...bytes);
  }
  int(value: number) {
    if (value >= 0 && value < 256) return this.op(0x4b, value);
    return this.op(0x4a, ...u32(value));
  }
  emptyTuple() {
    return this.op(0x29);
  }
  tuple() {
    return this.op(0x74);
  }
  /** A tuple of small non-negative integers. */
  ints(values: readonly number[]) {
    if (values.length === 0) return this.emptyTuple();
    this.mark();
    for (const value of values) this.int(value);
    return this.tuple();
  }
  emptyDict() {
    return this.op(0x7d);
  }
  emptyList() {
    return this.op(0x5d);
  }
  binput(index: number) {
    return this.op(0x71, index);
  }
  binget(index: number) {
    return this.op(0x68, index);
  }
  persid() {
    return this.op(0x51);
  }
  reduce() {
    return this.op(0x52);
  }
  build() {
    return this.op(0x62);
  }
  setitem() {
    return this.op(0x73);
  }
  setitems() {
    return this.op(0x75);
  }
  newFalse() {
    return this.op(0x89);
  }
  none() {
    return this.op(0x4e);
  }
  stop() {
    return this.op(0x2e);
  }
  raw(...bytes: number[]) {
    return this.op(...bytes);
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

function u32(value: number): number[] {
  return [value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, (value >>> 24) & 0xff];
}

export interface HandTensor {
  readonly name: string;
  /** torch storage class name, e.g. `FloatStorage`. */
  readonly storageClass: string;
  readonly key: string;
  readonly numel: number;
  readonly offset: number;
  readonly shape: readonly number[];
  readonly stride: readonly number[];
}

/** Appends `_rebuild_tensor_v2(('storage', torch.<class>, key, 'cpu', numel), offset, shape, stride, False, OrderedDict())`. */
export function pickleTensor(pickle: PickleBytes, tensor: HandTensor): PickleBytes {
  return pickle
    .global('torch._utils', '_rebuild_tensor_v2')
    .mark()
    .mark()
    .unicode('storage')
    .global('torch', tensor.storageClass)
    .unicode(tensor.key)
    .unicode('cpu')
    .int(tensor.numel)
    .tuple()
    .persid()
    .int(tensor.offset)
    .ints(tensor.shape)
    .ints(tensor.stride)
    .newFalse()
    .global('collections', 'OrderedDict')
    .emptyTuple()
    .reduce()
    .tuple()
    .reduce();
}

/** A whole state dict pickle, written opcode by opcode, without memoization. */
export function handPickle(tensors: readonly HandTensor[]): Uint8Array {
  const pickle = new PickleBytes().proto(2).global('collections', 'OrderedDict').emptyTuple().reduce().mark();
  for (const tensor of tensors) pickleTensor(pickle.unicode(tensor.name), tensor);
  return pickle.setitems().stop().bytes();
}

/** A state dict pickle whose single value is `evil` (opcodes that should be refused), for the UNSAFE tests. */
export function pickleWithValue(build: (pickle: PickleBytes) => PickleBytes): Uint8Array {
  const pickle = new PickleBytes().proto(2).emptyDict().unicode('weight');
  return build(pickle).setitem().stop().bytes();
}
