/**
 * A zip reader for torch.save archives: central directory (with ZIP64), local headers, STORED entries read
 * by positional reads through a ByteSource, so that a 7.6 GB checkpoint is never loaded whole.
 *
 * Source of truth: PKWARE APPNOTE.TXT 6.3.x; section numbers are cited next to each record. Everything
 * read is checked before it is used (STYLE.md §8): sizes before reads, ranges inside the file, names valid
 * UTF-8 and unique, entries not overlapping each other or the central directory. Anything wrong is a
 * MALFORMED PolyquantError naming the file (and the entry); nothing here throws a RangeError.
 */
import { crc32 } from 'node:zlib';
import { ERROR_CODES, PolyquantError, malformed } from '../errors.js';

/** Anything that can serve positional reads: a ReadableFile, or bytes in memory (tests, fuzzing). */
export interface ByteSource {
  /** Named in every error. */
  readonly path: string;
  readonly size: number;
  /** Exactly `length` bytes at `offset`; a range past the end is a MALFORMED error. */
  read(offset: number, length: number): Promise<Uint8Array>;
}

/** A ByteSource over bytes in memory. read() returns copies, so callers may keep or modify them. */
export class MemorySource implements ByteSource {
  readonly size: number;

  constructor(
    readonly path: string,
    private readonly bytes: Uint8Array,
  ) {
    this.size = bytes.length;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw malformed(this.path, `invalid byte range ${offset}+${length}`);
    }
    if (offset + length > this.size) {
      throw malformed(
        this.path,
        `byte range ${offset}..${offset + length} runs past the end of the file (${this.size} bytes); the file is truncated`,
      );
    }
    return this.bytes.slice(offset, offset + length);
  }
}

// Record signatures and fixed sizes (APPNOTE 4.3.7, 4.3.9, 4.3.12, 4.3.14, 4.3.15, 4.3.16, 4.5.3).
export const LOCAL_FILE_HEADER_SIGNATURE = 0x04034b50;
export const DATA_DESCRIPTOR_SIGNATURE = 0x08074b50;
export const CENTRAL_DIRECTORY_HEADER_SIGNATURE = 0x02014b50;
export const ZIP64_END_OF_CENTRAL_DIRECTORY_SIGNATURE = 0x06064b50;
export const ZIP64_END_OF_CENTRAL_DIRECTORY_LOCATOR_SIGNATURE = 0x07064b50;
export const END_OF_CENTRAL_DIRECTORY_SIGNATURE = 0x06054b50;
export const ZIP64_EXTRA_FIELD_ID = 0x0001;
export const LOCAL_FILE_HEADER_BYTES = 30;
export const CENTRAL_DIRECTORY_HEADER_BYTES = 46;
export const ZIP64_END_OF_CENTRAL_DIRECTORY_BYTES = 56;
export const ZIP64_END_OF_CENTRAL_DIRECTORY_LOCATOR_BYTES = 20;
export const END_OF_CENTRAL_DIRECTORY_BYTES = 22;
/** A 16/32-bit field holding this value means "see the ZIP64 record / extra field" (APPNOTE 4.4.1.4). */
export const ZIP64_SENTINEL_16 = 0xffff;
export const ZIP64_SENTINEL_32 = 0xffffffff;

/** Compression methods (APPNOTE 4.4.5). torch.save writes every record STORED. */
export const ZIP_METHOD_STORED = 0;
const METHOD_NAMES: ReadonlyMap<number, string> = new Map([
  [0, 'stored'],
  [8, 'deflate'],
  [9, 'deflate64'],
  [12, 'bzip2'],
  [14, 'lzma'],
  [93, 'zstd'],
]);

/** General purpose flag bits (APPNOTE 4.4.4). */
const FLAG_ENCRYPTED = 1 << 0;

// Limits. Each bounds the memory or work a hostile archive can make us spend before we notice.
/** The EOCD comment is at most 65535 bytes, so the EOCD starts within this many bytes of the end (4.3.16). */
const MAX_END_OF_CENTRAL_DIRECTORY_SEARCH = END_OF_CENTRAL_DIRECTORY_BYTES + 0xffff;
/** torch.save writes one entry per storage plus 2–6 records; a 12.8B model has ~600. */
export const MAX_ZIP_ENTRIES = 1 << 20;
/** The central directory is read in one piece; ~80 bytes per entry makes this ~800k entries. */
export const MAX_CENTRAL_DIRECTORY_BYTES = 64 * 1024 * 1024;

export interface ZipEntry {
  /** Full name inside the archive, e.g. `archive/data/0`. */
  readonly name: string;
  /** Compression method (0 = STORED). Only STORED entries can be read. */
  readonly method: number;
  readonly flags: number;
  readonly crc32: number;
  readonly compressedSize: number;
  /** Uncompressed size; equals compressedSize for STORED entries (checked on open). */
  readonly size: number;
  readonly localHeaderOffset: number;
  /** Absolute offset of the entry's first data byte in the file. */
  readonly dataOffset: number;
}

export interface ZipArchive {
  readonly path: string;
  /** In central-directory order. */
  readonly entries: readonly ZipEntry[];
  readonly byName: ReadonlyMap<string, ZipEntry>;
  /** Whether the archive has a ZIP64 end of central directory record. */
  readonly zip64: boolean;
  readonly centralDirectoryOffset: number;
}

/** Where the central directory is, from the EOCD (and ZIP64 EOCD) records. */
export interface CentralDirectoryLocation {
  readonly entryCount: number;
  readonly offset: number;
  readonly size: number;
  readonly zip64: boolean;
  /** Offset of the first end-of-central-directory structure: the central directory must end exactly there. */
  readonly endOffset: number;
}

/** Little-endian field reads over a buffer, bounds-checked so that short buffers give MALFORMED errors. */
class Fields {
  private readonly view: DataView;

  constructor(
    readonly bytes: Uint8Array,
    private readonly file: string,
    private readonly what: string,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  private check(offset: number, length: number): void {
    if (offset < 0 || offset + length > this.bytes.length) {
      throw malformed(this.file, `${this.what} is cut short: needs bytes ${offset}..${offset + length} of ${this.bytes.length}`);
    }
  }

  u16(offset: number): number {
    this.check(offset, 2);
    return this.view.getUint16(offset, true);
  }

  u32(offset: number): number {
    this.check(offset, 4);
    return this.view.getUint32(offset, true);
  }

  /** A 64-bit field as a safe integer; larger values cannot be offsets into any real file. */
  u64(offset: number, field: string): number {
    this.check(offset, 8);
    const value = this.view.getBigUint64(offset, true);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw malformed(this.file, `${this.what}: ${field} ${value} is larger than 2^53`);
    }
    return Number(value);
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function decodeName(file: string, bytes: Uint8Array, index: number): string {
  try {
    return utf8.decode(bytes);
  } catch {
    throw malformed(file, `central directory entry ${index} has a name that is not valid UTF-8`);
  }
}

function quote(name: string): string {
  return JSON.stringify(name.length > 200 ? `${name.slice(0, 200)}…` : name);
}

/**
 * Finds the end of central directory record (APPNOTE 4.3.16) by scanning back from the end of the file
 * over at most the largest possible comment, and follows the ZIP64 locator (4.3.15) to the ZIP64 EOCD
 * record (4.3.14) when there is one.
 */
export async function locateCentralDirectory(source: ByteSource): Promise<CentralDirectoryLocation> {
  const file = source.path;
  if (source.size < END_OF_CENTRAL_DIRECTORY_BYTES) {
    throw malformed(file, `${source.size} bytes is too small to be a zip archive (the end record alone is 22)`);
  }
  // Read the search window plus room for the ZIP64 locator that sits just before the EOCD.
  const tailLength = Math.min(
    source.size,
    MAX_END_OF_CENTRAL_DIRECTORY_SEARCH + ZIP64_END_OF_CENTRAL_DIRECTORY_LOCATOR_BYTES,
  );
  const tailStart = source.size - tailLength;
  const tail = await source.read(tailStart, tailLength);
  const fields = new Fields(tail, file, 'end of central directory');

  // The EOCD is the last signature whose comment length reaches exactly to the end of the file; requiring
  // that equality stops a signature-like byte run inside the comment or the data from being taken for it.
  let eocd = -1;
  const lowest = Math.max(0, tailLength - MAX_END_OF_CENTRAL_DIRECTORY_SEARCH);
  for (let at = tailLength - END_OF_CENTRAL_DIRECTORY_BYTES; at >= lowest; at--) {
    if (tail[at] !== 0x50 || fields.u32(at) !== END_OF_CENTRAL_DIRECTORY_SIGNATURE) continue;
    if (fields.u16(at + 20) === tailLength - at - END_OF_CENTRAL_DIRECTORY_BYTES) {
      eocd = at;
      break;
    }
  }
  if (eocd < 0) {
    throw malformed(file, 'no end of central directory record: not a zip archive, or the file is truncated');
  }

  const diskNumber = fields.u16(eocd + 4);
  const centralDirectoryDisk = fields.u16(eocd + 6);
  const entriesOnDisk = fields.u16(eocd + 8);
  const entryCount16 = fields.u16(eocd + 10);
  const size32 = fields.u32(eocd + 12);
  const offset32 = fields.u32(eocd + 16);
  const eocdOffset = tailStart + eocd;

  const locatorAt = eocd - ZIP64_END_OF_CENTRAL_DIRECTORY_LOCATOR_BYTES;
  const hasLocator = locatorAt >= 0 && fields.u32(locatorAt) === ZIP64_END_OF_CENTRAL_DIRECTORY_LOCATOR_SIGNATURE;
  if (!hasLocator) {
    if (entryCount16 === ZIP64_SENTINEL_16 || size32 === ZIP64_SENTINEL_32 || offset32 === ZIP64_SENTINEL_32) {
      throw malformed(file, 'the end of central directory record defers to a ZIP64 record that is missing');
    }
    if (diskNumber !== 0 || centralDirectoryDisk !== 0) {
      throw new PolyquantError(ERROR_CODES.UNSUPPORTED, 'split (multi-disk) zip archives are not supported', { file });
    }
    if (entriesOnDisk !== entryCount16) {
      throw malformed(file, `end of central directory: ${entriesOnDisk} entries on this disk but ${entryCount16} in all`);
    }
    return { entryCount: entryCount16, offset: offset32, size: size32, zip64: false, endOffset: eocdOffset };
  }

  // ZIP64 locator (4.3.15): disk with the ZIP64 EOCD (4), its offset (8), total disks (4).
  const zip64Disk = fields.u32(locatorAt + 4);
  const recordOffset = fields.u64(locatorAt + 8, 'ZIP64 end of central directory offset');
  const totalDisks = fields.u32(locatorAt + 16);
  if (zip64Disk !== 0 || totalDisks > 1) {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, 'split (multi-disk) zip archives are not supported', { file });
  }
  const locatorOffset = tailStart + locatorAt;
  if (recordOffset + ZIP64_END_OF_CENTRAL_DIRECTORY_BYTES > locatorOffset) {
    throw malformed(
      file,
      `ZIP64 end of central directory offset ${recordOffset} does not leave room for the record before its locator at ${locatorOffset}`,
    );
  }
  const record = new Fields(
    await source.read(recordOffset, ZIP64_END_OF_CENTRAL_DIRECTORY_BYTES),
    file,
    'ZIP64 end of central directory',
  );
  if (record.u32(0) !== ZIP64_END_OF_CENTRAL_DIRECTORY_SIGNATURE) {
    throw malformed(file, `no ZIP64 end of central directory record at offset ${recordOffset}`);
  }
  // "Size of zip64 end of central directory record" excludes the leading 12 bytes (4.3.14.1). The record
  // must end at the locator: no extensible data sector (torch never writes one; we do not read one).
  const recordSize = record.u64(4, 'record size');
  if (recordOffset + 12 + recordSize !== locatorOffset) {
    throw malformed(
      file,
      `ZIP64 end of central directory record at ${recordOffset} claims ${recordSize + 12} bytes but the locator is at ${locatorOffset}`,
    );
  }
  if (record.u32(16) !== 0 || record.u32(20) !== 0) {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, 'split (multi-disk) zip archives are not supported', { file });
  }
  const zip64EntriesOnDisk = record.u64(24, 'entries on this disk');
  const entryCount = record.u64(32, 'entry count');
  const size = record.u64(40, 'central directory size');
  const offset = record.u64(48, 'central directory offset');
  if (zip64EntriesOnDisk !== entryCount) {
    throw malformed(file, `ZIP64 end of central directory: ${zip64EntriesOnDisk} entries on this disk but ${entryCount} in all`);
  }
  // The 16/32-bit copies must agree with the 64-bit ones unless they hold the sentinel (4.4.1.4).
  if (
    (entryCount16 !== ZIP64_SENTINEL_16 && entryCount16 !== entryCount) ||
    (size32 !== ZIP64_SENTINEL_32 && size32 !== size) ||
    (offset32 !== ZIP64_SENTINEL_32 && offset32 !== offset)
  ) {
    throw malformed(file, 'the end of central directory record disagrees with the ZIP64 record');
  }
  return { entryCount, offset, size, zip64: true, endOffset: recordOffset };
}

/**
 * Reads a zip archive's directory: every entry's name, method, sizes, CRC and the absolute offset of its
 * data (from its local header). No entry data is read.
 */
export async function readZip(source: ByteSource): Promise<ZipArchive> {
  const file = source.path;
  const location = await locateCentralDirectory(source);
  const { entryCount, offset, size } = location;

  // Checks in an order where each guards the next: counts and sizes before the read.
  if (entryCount > MAX_ZIP_ENTRIES) {
    throw new PolyquantError(ERROR_CODES.LIMIT, `${entryCount} zip entries is more than the limit of ${MAX_ZIP_ENTRIES}`, {
      file,
    });
  }
  if (size > MAX_CENTRAL_DIRECTORY_BYTES) {
    throw new PolyquantError(
      ERROR_CODES.LIMIT,
      `the central directory is ${size} bytes, more than the limit of ${MAX_CENTRAL_DIRECTORY_BYTES}`,
      { file },
    );
  }
  if (offset + size !== location.endOffset) {
    throw malformed(
      file,
      `the central directory (${offset}+${size}) does not end where the end records start (${location.endOffset})`,
    );
  }
  if (entryCount * CENTRAL_DIRECTORY_HEADER_BYTES > size) {
    throw malformed(file, `a ${size}-byte central directory cannot hold ${entryCount} entries`);
  }

  const directory = await source.read(offset, size);
  const fields = new Fields(directory, file, 'central directory');
  const entries: PendingEntry[] = [];
  const byName = new Map<string, PendingEntry>();
  let at = 0;
  for (let index = 0; index < entryCount; index++) {
    // Central directory file header (4.3.12).
    if (at + CENTRAL_DIRECTORY_HEADER_BYTES > size || fields.u32(at) !== CENTRAL_DIRECTORY_HEADER_SIGNATURE) {
      throw malformed(file, `central directory entry ${index} at offset ${offset + at} has no valid header`);
    }
    const flags = fields.u16(at + 8);
    const method = fields.u16(at + 10);
    const crc = fields.u32(at + 16);
    const compressedSize32 = fields.u32(at + 20);
    const size32 = fields.u32(at + 24);
    const nameLength = fields.u16(at + 28);
    const extraLength = fields.u16(at + 30);
    const commentLength = fields.u16(at + 32);
    const diskStart = fields.u16(at + 34);
    const localHeaderOffset32 = fields.u32(at + 42);
    const nameStart = at + CENTRAL_DIRECTORY_HEADER_BYTES;
    const extraStart = nameStart + nameLength;
    const next = extraStart + extraLength + commentLength;
    if (next > size) {
      throw malformed(file, `central directory entry ${index} runs past the end of the central directory`);
    }
    const name = decodeName(file, directory.subarray(nameStart, extraStart), index);
    if (byName.has(name)) throw malformed(file, `the zip archive has two entries named ${quote(name)}`);

    const zip64 = readZip64ExtraField(file, name, directory.subarray(extraStart, extraStart + extraLength), {
      size: size32,
      compressedSize: compressedSize32,
      localHeaderOffset: localHeaderOffset32,
      diskStart,
    });
    if (zip64.diskStart !== 0) {
      throw new PolyquantError(ERROR_CODES.UNSUPPORTED, 'split (multi-disk) zip archives are not supported', { file });
    }
    if (method === ZIP_METHOD_STORED && zip64.compressedSize !== zip64.size) {
      throw malformed(
        file,
        `entry ${quote(name)} is stored (uncompressed) but its sizes differ: ${zip64.compressedSize} vs ${zip64.size}`,
      );
    }
    if (zip64.localHeaderOffset + LOCAL_FILE_HEADER_BYTES > offset) {
      throw malformed(
        file,
        `entry ${quote(name)}: local header offset ${zip64.localHeaderOffset} is not before the central directory at ${offset}`,
      );
    }
    const entry: PendingEntry = {
      name,
      method,
      flags,
      crc32: crc,
      compressedSize: zip64.compressedSize,
      size: zip64.size,
      localHeaderOffset: zip64.localHeaderOffset,
      dataOffset: -1,
      nameBytes: directory.slice(nameStart, extraStart),
    };
    entries.push(entry);
    byName.set(name, entry);
    at = next;
  }
  if (at !== size) {
    throw malformed(file, `the central directory has ${size - at} bytes after its ${entryCount} entries`);
  }

  // Local file headers (4.3.7) give each entry's data offset. Only the name and extra lengths are used:
  // torch (miniz) zeroes the local CRC and sizes and puts them in a data descriptor (4.3.9).
  for (const entry of entries) {
    const header = new Fields(
      await source.read(entry.localHeaderOffset, LOCAL_FILE_HEADER_BYTES),
      file,
      `local header of ${quote(entry.name)}`,
    );
    if (header.u32(0) !== LOCAL_FILE_HEADER_SIGNATURE) {
      throw malformed(file, `entry ${quote(entry.name)} has no local header at offset ${entry.localHeaderOffset}`);
    }
    if (header.u16(8) !== entry.method) {
      throw malformed(file, `entry ${quote(entry.name)}: the local header and the central directory disagree on the method`);
    }
    const nameLength = header.u16(26);
    const extraLength = header.u16(28);
    const nameAt = entry.localHeaderOffset + LOCAL_FILE_HEADER_BYTES;
    const dataOffset = nameAt + nameLength + extraLength;
    if (dataOffset + entry.compressedSize > offset) {
      throw malformed(
        file,
        `entry ${quote(entry.name)}: data ${dataOffset}+${entry.compressedSize} runs into the central directory at ${offset}`,
      );
    }
    const localName = await source.read(nameAt, nameLength);
    if (!sameBytes(localName, entry.nameBytes)) {
      throw malformed(file, `entry ${quote(entry.name)}: the local header names a different file`);
    }
    entry.dataOffset = dataOffset;
  }

  // No two entries may share bytes: every byte of data belongs to one entry (the zip-bomb-style overlap
  // that some readers fall for; safetensors proves its offsets contiguous for the same reason).
  const byOffset = [...entries].sort((a, b) => a.localHeaderOffset - b.localHeaderOffset);
  for (let index = 1; index < byOffset.length; index++) {
    const previous = byOffset[index - 1]!;
    const current = byOffset[index]!;
    if (previous.dataOffset + previous.compressedSize > current.localHeaderOffset) {
      throw malformed(file, `entries ${quote(previous.name)} and ${quote(current.name)} overlap`);
    }
  }

  const finished: ZipEntry[] = entries.map(({ nameBytes: _nameBytes, ...entry }) => entry);
  return {
    path: file,
    entries: finished,
    byName: new Map(finished.map((entry) => [entry.name, entry])),
    zip64: location.zip64,
    centralDirectoryOffset: offset,
  };
}

/** An entry while the directory is read: its data offset comes from the local header, read afterwards. */
type PendingEntry = { -readonly [Key in keyof ZipEntry]: ZipEntry[Key] } & { nameBytes: Uint8Array };

interface Zip64Fields {
  size: number;
  compressedSize: number;
  localHeaderOffset: number;
  diskStart: number;
}

/**
 * Applies a central directory entry's ZIP64 extended information extra field (APPNOTE 4.5.3): each
 * 64-bit value is present only when its 32-bit field holds the sentinel, in the order uncompressed size,
 * compressed size, local header offset, disk start number. Exported for the zip64 tests.
 */
export function readZip64ExtraField(file: string, name: string, extra: Uint8Array, fields32: Zip64Fields): Zip64Fields {
  const needSize = fields32.size === ZIP64_SENTINEL_32;
  const needCompressed = fields32.compressedSize === ZIP64_SENTINEL_32;
  const needOffset = fields32.localHeaderOffset === ZIP64_SENTINEL_32;
  const needDisk = fields32.diskStart === ZIP64_SENTINEL_16;
  if (!needSize && !needCompressed && !needOffset && !needDisk) return fields32;

  const fields = new Fields(extra, file, `extra field of ${quote(name)}`);
  let at = 0;
  while (at + 4 <= extra.length) {
    const id = fields.u16(at);
    const length = fields.u16(at + 2);
    const start = at + 4;
    if (start + length > extra.length) break;
    if (id === ZIP64_EXTRA_FIELD_ID) {
      const wanted = (needSize ? 8 : 0) + (needCompressed ? 8 : 0) + (needOffset ? 8 : 0) + (needDisk ? 4 : 0);
      if (length < wanted) {
        throw malformed(file, `entry ${quote(name)}: the ZIP64 extra field has ${length} bytes but ${wanted} are needed`);
      }
      let cursor = start;
      const result = { ...fields32 };
      if (needSize) {
        result.size = fields.u64(cursor, 'uncompressed size');
        cursor += 8;
      }
      if (needCompressed) {
        result.compressedSize = fields.u64(cursor, 'compressed size');
        cursor += 8;
      }
      if (needOffset) {
        result.localHeaderOffset = fields.u64(cursor, 'local header offset');
        cursor += 8;
      }
      if (needDisk) result.diskStart = fields.u32(cursor);
      return result;
    }
    at = start + length;
  }
  throw malformed(file, `entry ${quote(name)} needs a ZIP64 extra field and has none`);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let index = 0; index < a.length; index++) if (a[index] !== b[index]) return false;
  return true;
}

/** Refuses entries we cannot read in place: compressed or encrypted ones. */
export function requireStored(file: string, entry: ZipEntry): void {
  if (entry.flags & FLAG_ENCRYPTED) {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `zip entry ${quote(entry.name)} is encrypted`, { file });
  }
  if (entry.method !== ZIP_METHOD_STORED) {
    const method = METHOD_NAMES.get(entry.method) ?? `method ${entry.method}`;
    throw new PolyquantError(
      ERROR_CODES.UNSUPPORTED,
      `zip entry ${quote(entry.name)} is compressed (${method}); only stored (uncompressed) entries can be read in place`,
      { file, hint: 'torch.save writes uncompressed archives; re-save the checkpoint with torch.save' },
    );
  }
}

/**
 * Reads a whole STORED entry (for small records such as `data.pkl`) and checks its CRC-32, as miniz does
 * when torch.load extracts a record. Entries larger than `maxBytes` are a LIMIT error.
 */
export async function readZipEntry(source: ByteSource, entry: ZipEntry, maxBytes: number): Promise<Uint8Array> {
  requireStored(source.path, entry);
  if (entry.size > maxBytes) {
    throw new PolyquantError(
      ERROR_CODES.LIMIT,
      `zip entry ${quote(entry.name)} is ${entry.size} bytes, more than the limit of ${maxBytes} for this record`,
      { file: source.path },
    );
  }
  const bytes = await source.read(entry.dataOffset, entry.size);
  const actual = crc32(bytes) >>> 0;
  if (actual !== entry.crc32) {
    throw malformed(
      source.path,
      `zip entry ${quote(entry.name)} fails its CRC-32 check (stored ${hex32(entry.crc32)}, computed ${hex32(actual)})`,
    );
  }
  return bytes;
}

function hex32(value: number): string {
  return `0x${value.toString(16).padStart(8, '0')}`;
}
