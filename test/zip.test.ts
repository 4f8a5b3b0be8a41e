import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, } from '../src/errors.js';
import {
  ZIP_DATA_ALIGNMENT,
  ZipWriter,
  encodeCentralDirectoryHeader,
  encodeDataDescriptor,
  encodeEndRecords,
  encodeLocalHeader,
  planZip,
} from '../src/io/zip-writer.js';
import { MemorySource, type ZipEntry, readZip, readZip64ExtraField, readZipEntry } from '../src/io/zip.js';
import { MemorySink, SparseSource, buildZip, concat } from './helpers/torch-fixtures.js';
import { expectPolyquantError } from './helpers/errors.js';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const fixture = join(repoRoot, '..', 'shared', 'fixtures', 'polyglot-ko-tiny', 'pytorch_model.bin');
const encoder = new TextEncoder();

const expectError = expectPolyquantError;

async function writeZip(entries: readonly { name: string; data: Uint8Array }[]): Promise<Uint8Array> {
  const sink = new MemorySink();
  const writer = new ZipWriter(sink, 'out.zip');
  for (const entry of entries) await writer.add(entry.name, entry.data.length, entry.data);
  await writer.finish();
  return sink.bytes();
}

function setU32(bytes: Uint8Array, offset: number, value: number): Uint8Array {
  const copy = bytes.slice();
  new DataView(copy.buffer).setUint32(offset, value, true);
  return copy;
}

describe('zip writer and reader', () => {
  const entries = [
    { name: 'archive/data.pkl', data: encoder.encode('pickle bytes') },
    { name: 'archive/data/0', data: Uint8Array.from({ length: 1000 }, (_, index) => index % 251) },
    { name: 'archive/empty', data: new Uint8Array(0) },
    { name: 'archive/data/1', data: Uint8Array.from([1, 2, 3]) },
  ];

  it('reads back every entry the writer wrote, with data aligned to 64 bytes', async () => {
    const bytes = await writeZip(entries);
    const source = new MemorySource('out.zip', bytes);
    const archive = await readZip(source);
    expect(archive.entries.map((entry) => entry.name)).toEqual(entries.map((entry) => entry.name));
    expect(archive.zip64).toBe(true);
    for (const [index, entry] of archive.entries.entries()) {
      expect(entry.dataOffset % ZIP_DATA_ALIGNMENT).toBe(0);
      expect(entry.size).toBe(entries[index]!.data.length);
      expect(await readZipEntry(source, entry, 1 << 20)).toEqual(entries[index]!.data);
    }
  });

  it('writes exactly what planZip predicts', async () => {
    const bytes = await writeZip(entries);
    const plan = planZip(entries.map((entry) => ({ name: entry.name, size: entry.data.length })));
    expect(bytes.length).toBe(plan.totalBytes);
    const archive = await readZip(new MemorySource('out.zip', bytes));
    expect(archive.entries.map((entry) => entry.dataOffset)).toEqual(plan.entries.map((layout) => layout.dataOffset));
    expect(archive.centralDirectoryOffset).toBe(plan.centralDirectoryOffset);
  });

  it('writes byte-identical archives for the same entries', async () => {
    expect(await writeZip(entries)).toEqual(await writeZip(entries));
  });

  it('puts a data descriptor after non-empty entries and none after empty ones, as miniz does', async () => {
    const bytes = await writeZip(entries);
    const archive = await readZip(new MemorySource('out.zip', bytes));
    const view = new DataView(bytes.buffer);
    const data0 = archive.byName.get('archive/data/0')!;
    expect(view.getUint32(data0.dataOffset + data0.size, true)).toBe(0x08074b50);
    expect(view.getUint32(data0.dataOffset + data0.size + 4, true)).toBe(crc32(entries[1]!.data) >>> 0);
    const empty = archive.byName.get('archive/empty')!;
    expect(empty.flags).toBe(0x0800);
    expect(view.getUint32(empty.dataOffset, true)).toBe(0x04034b50);
  });

  it('refuses a streamed entry whose length differs from the declared size, naming the entry', async () => {
    const writer = new ZipWriter(new MemorySink(), 'out.zip');
    async function* chunks() {
      yield new Uint8Array(4);
      yield new Uint8Array(4);
    }
    await expectError(writer.add('archive/data/0', 6, chunks(), 'layer.weight'), ERROR_CODES.MALFORMED, 'archive/data/0', 'layer.weight');
    const short = new ZipWriter(new MemorySink(), 'out.zip');
    await expectError(short.add('archive/data/0', 9, chunks()), ERROR_CODES.MALFORMED, 'is 8 bytes, but 9 were declared');
  });

  it('reads archives from other writers: no alignment, no descriptors, a trailing comment', async () => {
    const bytes = buildZip(
      [
        { name: 'a.txt', data: encoder.encode('hello') },
        { name: 'dir/b.bin', data: Uint8Array.from([9, 8, 7]) },
      ],
      'a comment with PK\u0005\u0006 inside it',
    );
    const source = new MemorySource('other.zip', bytes);
    const archive = await readZip(source);
    expect(archive.zip64).toBe(false);
    expect(archive.entries.map((entry) => entry.name)).toEqual(['a.txt', 'dir/b.bin']);
    expect(new TextDecoder().decode(await readZipEntry(source, archive.byName.get('a.txt')!, 100))).toBe('hello');
    expect(await readZipEntry(source, archive.byName.get('dir/b.bin')!, 100)).toEqual(Uint8Array.from([9, 8, 7]));
  });

  it('reads the ZIP64 end record when there are more than 65535 entries', async () => {
    // Built from the writer's encoders directly: 65540 awaited writes would dominate the test's time.
    const plan = planZip(Array.from({ length: 65_540 }, (_, index) => ({ name: `e${index}`, size: 0 })));
    const bytes = concat([
      ...plan.entries.map((layout) => encodeLocalHeader(layout)),
      ...plan.entries.map((layout) => encodeCentralDirectoryHeader(layout, 0)),
      encodeEndRecords(plan.entries.length, plan.centralDirectoryOffset, plan.centralDirectoryBytes),
    ]);
    expect(bytes.length).toBe(plan.totalBytes);
    const tail = new DataView(bytes.buffer, bytes.length - 22);
    expect(tail.getUint16(10, true)).toBe(0xffff);
    const archive = await readZip(new MemorySource('many.zip', bytes));
    expect(archive.entries.length).toBe(65_540);
    expect(archive.entries.at(-1)!.name).toBe('e65539');
  });
});

describe('ZIP64 past 4 GB (forged offsets, nothing large on disk)', () => {
  const GiB = 1024 ** 3;
  const plan = planZip([
    { name: 'archive/data.pkl', size: 100 },
    { name: 'archive/data/0', size: 5 * GiB },
    { name: 'archive/data/1', size: 12 },
    { name: 'archive/version', size: 2 },
  ]);

  it('plans ZIP64 extra fields for an entry of 5 GiB and for entries that start past 4 GiB', () => {
    const [pickle, big, after, version] = plan.entries;
    expect(pickle!.sizeNeedsZip64 || pickle!.offsetNeedsZip64).toBe(false);
    expect(big!.sizeNeedsZip64).toBe(true);
    expect(big!.offsetNeedsZip64).toBe(false);
    expect(after!.sizeNeedsZip64).toBe(false);
    expect(after!.offsetNeedsZip64).toBe(true);
    expect(version!.headerOffset).toBeGreaterThan(5 * GiB);
    // torch's getPadding counts the ZIP64 extra field: data still lands on a 64-byte boundary.
    for (const layout of plan.entries) expect(layout.dataOffset % 64).toBe(0);
    expect(big!.descriptorBytes).toBe(24);
    expect(after!.descriptorBytes).toBe(24);
    expect(pickle!.descriptorBytes).toBe(16);
  });

  it('encodes headers and end records that the reader decodes back to the planned sizes and offsets', async () => {
    const crcs = [0x11111111, 0x22222222, 0x33333333, 0x44444444];
    const runs = plan.entries.flatMap((layout, index) => [
      { offset: layout.headerOffset, bytes: encodeLocalHeader(layout) },
      { offset: layout.dataOffset + layout.size, bytes: encodeDataDescriptor(layout, crcs[index]!) },
    ]);
    const directory = concat(plan.entries.map((layout, index) => encodeCentralDirectoryHeader(layout, crcs[index]!)));
    expect(directory.length).toBe(plan.centralDirectoryBytes);
    runs.push({ offset: plan.centralDirectoryOffset, bytes: directory });
    runs.push({
      offset: plan.centralDirectoryOffset + directory.length,
      bytes: encodeEndRecords(plan.entries.length, plan.centralDirectoryOffset, directory.length),
    });
    const source = new SparseSource('huge.bin', plan.totalBytes, runs);
    const archive = await readZip(source);
    expect(archive.zip64).toBe(true);
    expect(archive.centralDirectoryOffset).toBe(plan.centralDirectoryOffset);
    expect(archive.entries.map((entry: ZipEntry) => [entry.name, entry.size, entry.localHeaderOffset, entry.dataOffset, entry.crc32])).toEqual(
      plan.entries.map((layout, index) => [layout.name, layout.size, layout.headerOffset, layout.dataOffset, crcs[index]]),
    );
    // The classic EOCD saturates: its central directory offset is the 0xFFFFFFFF sentinel.
    const tail = await source.read(plan.totalBytes - 22, 22);
    expect(new DataView(tail.buffer).getUint32(16, true)).toBe(0xffffffff);
  });

  it('decodes a ZIP64 extra field holding only the fields whose 32-bit copies are sentinels', () => {
    const extra = new Uint8Array(4 + 4 + 16);
    const view = new DataView(extra.buffer);
    view.setUint16(0, 0x5455, true); // an unrelated extra field first (extended timestamp)
    view.setUint16(2, 0, true);
    view.setUint16(4, 0x0001, true);
    view.setUint16(6, 16, true);
    view.setBigUint64(8, 6_000_000_000n, true); // uncompressed size
    view.setBigUint64(16, 7_000_000_000n, true); // local header offset
    const fields = readZip64ExtraField('x.zip', 'big', extra, {
      size: 0xffffffff,
      compressedSize: 1234,
      localHeaderOffset: 0xffffffff,
      diskStart: 0,
    });
    expect(fields).toEqual({ size: 6_000_000_000, compressedSize: 1234, localHeaderOffset: 7_000_000_000, diskStart: 0 });
    expect(() =>
      readZip64ExtraField('x.zip', 'big', new Uint8Array(0), { size: 0xffffffff, compressedSize: 0, localHeaderOffset: 0, diskStart: 0 }),
    ).toThrow(/needs a ZIP64 extra field/);
  });
});

describe('malformed zip archives', () => {
  const good = buildZip([
    { name: 'a', data: encoder.encode('first') },
    { name: 'b', data: encoder.encode('second entry') },
  ]);
  const eocd = good.length - 22;

  it('rejects a file too small to hold an end record', async () => {
    await expectError(readZip(new MemorySource('tiny.zip', Uint8Array.from([0x50, 0x4b]))), ERROR_CODES.MALFORMED, 'tiny.zip', 'too small');
  });

  it('rejects a truncated archive', async () => {
    await expectError(readZip(new MemorySource('cut.zip', good.subarray(0, good.length - 30))), ERROR_CODES.MALFORMED, 'cut.zip');
  });

  it('rejects an end record whose central directory offset is wrong', async () => {
    await expectError(readZip(new MemorySource('eocd.zip', setU32(good, eocd + 16, 3))), ERROR_CODES.MALFORMED, 'eocd.zip', 'central directory');
  });

  it('rejects an entry whose data runs past the central directory', async () => {
    const firstCentral = good.length - 22 - (46 + 1) * 2;
    const bad = setU32(setU32(good, firstCentral + 20, 1_000_000), firstCentral + 24, 1_000_000);
    await expectError(readZip(new MemorySource('range.zip', bad)), ERROR_CODES.MALFORMED, 'range.zip', '"a"', 'runs into the central directory');
  });

  it('rejects two entries with the same name', async () => {
    const twice = buildZip([
      { name: 'same', data: encoder.encode('1') },
      { name: 'same', data: encoder.encode('2') },
    ]);
    await expectError(readZip(new MemorySource('dup.zip', twice)), ERROR_CODES.MALFORMED, 'dup.zip', 'two entries named "same"');
  });

  it('rejects an entry name that is not UTF-8', async () => {
    const bad = buildZip([{ name: Uint8Array.from([0x61, 0xff, 0x62]), data: encoder.encode('x') }]);
    await expectError(readZip(new MemorySource('utf8.zip', bad)), ERROR_CODES.MALFORMED, 'utf8.zip', 'not valid UTF-8');
  });

  it('rejects entries that overlap', async () => {
    const firstCentral = good.length - 22 - (46 + 1) * 2;
    const secondCentral = firstCentral + 47;
    const bad = setU32(good, secondCentral + 42, 0); // b's local header offset now points at a's
    await expectError(readZip(new MemorySource('overlap.zip', bad)), ERROR_CODES.MALFORMED, 'overlap.zip');
  });

  it('refuses to read a deflated entry, naming it', async () => {
    const deflated = buildZip([{ name: 'packed', data: encoder.encode('xx'), method: 8 }]);
    const source = new MemorySource('deflate.zip', deflated);
    const archive = await readZip(source);
    await expectError(readZipEntry(source, archive.entries[0]!, 100), ERROR_CODES.UNSUPPORTED, 'deflate.zip', '"packed"', 'deflate');
  });

  it('rejects an entry whose CRC-32 does not match its bytes', async () => {
    const bad = buildZip([{ name: 'sum', data: encoder.encode('abc'), crc: 1 }]);
    const source = new MemorySource('crc.zip', bad);
    const archive = await readZip(source);
    await expectError(readZipEntry(source, archive.entries[0]!, 100), ERROR_CODES.MALFORMED, 'crc.zip', 'CRC-32');
  });

  it('refuses to read a record larger than the caller allows', async () => {
    const source = new MemorySource('big.zip', good);
    const archive = await readZip(source);
    await expectError(readZipEntry(source, archive.byName.get('b')!, 4), ERROR_CODES.LIMIT, 'big.zip', 'limit');
  });
});

describe.skipIf(!existsSync(fixture))('the real torch.save file (PyTorch 1.13)', () => {
  it('is rebuilt byte for byte by the zip writer from its own entries', async () => {
    const original = new Uint8Array(await readFile(fixture));
    const source = new MemorySource(fixture, original);
    const archive = await readZip(source);
    expect(archive.entries.length).toBe(66);
    const sink = new MemorySink();
    const writer = new ZipWriter(sink, 'rebuilt.bin');
    for (const entry of archive.entries) {
      await writer.add(entry.name, entry.size, await readZipEntry(source, entry, 1 << 30));
    }
    await writer.finish();
    const rebuilt = sink.bytes();
    expect(rebuilt.length).toBe(original.length);
    expect(Buffer.compare(Buffer.from(rebuilt), Buffer.from(original))).toBe(0);
  });
});
