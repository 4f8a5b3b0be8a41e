/**
 * A streaming zip writer that lays records out exactly as torch.save does (PyTorchStreamWriter in
 * caffe2/serialize/inline_container.cc over miniz's mz_zip_writer_add_mem_ex_v2 and
 * mz_zip_writer_finalize_archive), so that our .bin files are structurally the files torch writes:
 *
 * - every record STORED, data aligned to 64 bytes (torch's kFieldAlignment) by an extra field with id
 *   "FB" filled with 'Z' in the local header only;
 * - local header CRC and sizes zero, general purpose bit 3 set, and a signed data descriptor after the data
 *   (APPNOTE 4.3.9) — miniz's default, and what lets us stream a tensor whose CRC is known only at its end
 *   without seeking back; empty records have neither bit 3 nor a descriptor (miniz writes one only when
 *   the size is non-zero);
 * - DOS time and date zero, version fields zero, UTF-8 name flag (bit 11);
 * - a ZIP64 extra field (APPNOTE 4.5.3) on an entry whose size or local header offset reaches
 *   0xFFFFFFFF, with a 64-bit data descriptor; a ZIP64 end of central directory record and locator always
 *   (torch opens its writer with MZ_ZIP_FLAG_WRITE_ZIP64), followed by the classic EOCD.
 *
 * The layout is computed by pure functions (planZip, layoutEntry, encode*) so that writers can plan a whole
 * archive before writing a byte (STYLE.md §6) and tests can check ZIP64 encodings at forged >4 GB offsets.
 */
import { crc32 } from 'node:zlib';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import {
  CENTRAL_DIRECTORY_HEADER_BYTES,
  CENTRAL_DIRECTORY_HEADER_SIGNATURE,
  DATA_DESCRIPTOR_SIGNATURE,
  END_OF_CENTRAL_DIRECTORY_BYTES,
  END_OF_CENTRAL_DIRECTORY_SIGNATURE,
  LOCAL_FILE_HEADER_BYTES,
  LOCAL_FILE_HEADER_SIGNATURE,
  ZIP64_END_OF_CENTRAL_DIRECTORY_BYTES,
  ZIP64_END_OF_CENTRAL_DIRECTORY_LOCATOR_BYTES,
  ZIP64_END_OF_CENTRAL_DIRECTORY_LOCATOR_SIGNATURE,
  ZIP64_END_OF_CENTRAL_DIRECTORY_SIGNATURE,
  ZIP64_EXTRA_FIELD_ID,
  ZIP64_SENTINEL_16,
  ZIP64_SENTINEL_32,
} from './zip.js';

/** torch's kFieldAlignment (caffe2/serialize/inline_container.h): record data starts on this boundary. */
export const ZIP_DATA_ALIGNMENT = 64;
/** The extra field torch pads with: id bytes 'F','B' (0x4246 little-endian), data of 'Z' (getPadding). */
const PADDING_EXTRA_FIELD_ID = 0x4246;
const PADDING_FILL = 0x5a;
/** General purpose flag bits (APPNOTE 4.4.4). */
const FLAG_DATA_DESCRIPTOR = 1 << 3;
const FLAG_UTF8_NAME = 1 << 11;
/** Signed data descriptor: signature, CRC, 32-bit or 64-bit sizes (APPNOTE 4.3.9; miniz DATA_DESCRIPTER_SIZE32/64). */
const DATA_DESCRIPTOR_BYTES = 16;
const ZIP64_DATA_DESCRIPTOR_BYTES = 24;
/** miniz's ZIP64 end record fields: version made by 0x031E (Unix, 3.0) and needed 0x002D (4.5, ZIP64). */
const ZIP64_VERSION_MADE_BY = 0x031e;
const ZIP64_VERSION_NEEDED = 0x002d;
/** The ZIP64 EOCD "size of record" excludes its leading signature and size field (APPNOTE 4.3.14.1). */
const ZIP64_END_RECORD_SIZE_FIELD = ZIP64_END_OF_CENTRAL_DIRECTORY_BYTES - 12;
/** A name's length is a 16-bit field. */
const MAX_NAME_BYTES = 0xffff;

const encoder = new TextEncoder();

/** Where one entry's bytes go, computed before anything is written. */
export interface ZipEntryLayout {
  readonly name: string;
  readonly nameBytes: Uint8Array;
  readonly size: number;
  readonly headerOffset: number;
  /** miniz's rule: a ZIP64 extra field when the size or the header offset reaches 0xFFFFFFFF. */
  readonly sizeNeedsZip64: boolean;
  readonly offsetNeedsZip64: boolean;
  /** 'Z' bytes in the FB extra field that bring dataOffset to a multiple of ZIP_DATA_ALIGNMENT. */
  readonly paddingBytes: number;
  readonly headerBytes: number;
  readonly dataOffset: number;
  readonly descriptorBytes: number;
  /** Offset just past the entry (data and descriptor): where the next entry's header goes. */
  readonly endOffset: number;
}

export interface ZipPlan {
  readonly entries: readonly ZipEntryLayout[];
  readonly centralDirectoryOffset: number;
  readonly centralDirectoryBytes: number;
  readonly totalBytes: number;
}

function entryNeedsZip64(layout: Pick<ZipEntryLayout, 'sizeNeedsZip64' | 'offsetNeedsZip64'>): boolean {
  return layout.sizeNeedsZip64 || layout.offsetNeedsZip64;
}

function zip64ExtraBytes(sizeNeedsZip64: boolean, offsetNeedsZip64: boolean): number {
  if (!sizeNeedsZip64 && !offsetNeedsZip64) return 0;
  return 4 + (sizeNeedsZip64 ? 16 : 0) + (offsetNeedsZip64 ? 8 : 0);
}

/** The layout of one entry whose local header starts at `headerOffset` (torch's getPadding + miniz). */
export function layoutEntry(name: string, size: number, headerOffset: number): ZipEntryLayout {
  if (!Number.isSafeInteger(size) || size < 0 || !Number.isSafeInteger(headerOffset) || headerOffset < 0) {
    throw new PolyquantError(ERROR_CODES.USAGE, `invalid zip entry size ${size} or offset ${headerOffset}`, {
      tensor: name,
    });
  }
  const nameBytes = encoder.encode(name);
  if (nameBytes.length === 0 || nameBytes.length > MAX_NAME_BYTES || name.startsWith('/')) {
    throw new PolyquantError(ERROR_CODES.USAGE, `invalid zip entry name ${JSON.stringify(name)}`);
  }
  const sizeNeedsZip64 = size >= ZIP64_SENTINEL_32;
  const offsetNeedsZip64 = headerOffset >= ZIP64_SENTINEL_32;
  const beforePadding =
    LOCAL_FILE_HEADER_BYTES + nameBytes.length + zip64ExtraBytes(sizeNeedsZip64, offsetNeedsZip64) + 4;
  const paddingBytes = (ZIP_DATA_ALIGNMENT - ((headerOffset + beforePadding) % ZIP_DATA_ALIGNMENT)) % ZIP_DATA_ALIGNMENT;
  const headerBytes = beforePadding + paddingBytes;
  const dataOffset = headerOffset + headerBytes;
  const descriptorBytes =
    size === 0 ? 0 : sizeNeedsZip64 || offsetNeedsZip64 ? ZIP64_DATA_DESCRIPTOR_BYTES : DATA_DESCRIPTOR_BYTES;
  return {
    name,
    nameBytes,
    size,
    headerOffset,
    sizeNeedsZip64,
    offsetNeedsZip64,
    paddingBytes,
    headerBytes,
    dataOffset,
    descriptorBytes,
    endOffset: dataOffset + size + descriptorBytes,
  };
}

function centralDirectoryHeaderBytes(layout: ZipEntryLayout): number {
  return (
    CENTRAL_DIRECTORY_HEADER_BYTES +
    layout.nameBytes.length +
    zip64ExtraBytes(layout.sizeNeedsZip64, layout.offsetNeedsZip64)
  );
}

/** Bytes after the central directory: ZIP64 EOCD record, its locator and the EOCD record. */
export const END_RECORDS_BYTES =
  ZIP64_END_OF_CENTRAL_DIRECTORY_BYTES + ZIP64_END_OF_CENTRAL_DIRECTORY_LOCATOR_BYTES + END_OF_CENTRAL_DIRECTORY_BYTES;

/** Lays out a whole archive of entries written in the given order. */
export function planZip(entries: readonly { readonly name: string; readonly size: number }[]): ZipPlan {
  const layouts: ZipEntryLayout[] = [];
  const names = new Set<string>();
  let offset = 0;
  let centralDirectoryBytes = 0;
  for (const { name, size } of entries) {
    if (names.has(name)) {
      throw new PolyquantError(ERROR_CODES.USAGE, `zip entry ${JSON.stringify(name)} is written twice`);
    }
    names.add(name);
    const layout = layoutEntry(name, size, offset);
    layouts.push(layout);
    offset = layout.endOffset;
    centralDirectoryBytes += centralDirectoryHeaderBytes(layout);
  }
  return {
    entries: layouts,
    centralDirectoryOffset: offset,
    centralDirectoryBytes,
    totalBytes: offset + centralDirectoryBytes + END_RECORDS_BYTES,
  };
}

/** A little-endian record builder. 64-bit fields take safe integers. */
class RecordBytes {
  readonly bytes: Uint8Array;
  private readonly view: DataView;
  private at = 0;

  constructor(length: number) {
    this.bytes = new Uint8Array(length);
    this.view = new DataView(this.bytes.buffer);
  }

  u16(value: number): this {
    this.view.setUint16(this.at, value, true);
    this.at += 2;
    return this;
  }

  u32(value: number): this {
    this.view.setUint32(this.at, value >>> 0, true);
    this.at += 4;
    return this;
  }

  u64(value: number): this {
    this.view.setBigUint64(this.at, BigInt(value), true);
    this.at += 8;
    return this;
  }

  raw(bytes: Uint8Array): this {
    this.bytes.set(bytes, this.at);
    this.at += bytes.length;
    return this;
  }

  fill(count: number, value: number): this {
    this.bytes.fill(value, this.at, this.at + count);
    this.at += count;
    return this;
  }

  done(): Uint8Array {
    if (this.at !== this.bytes.length) {
      throw new Error(`zip record builder wrote ${this.at} of ${this.bytes.length} bytes`);
    }
    return this.bytes;
  }
}

function flagsOf(layout: ZipEntryLayout): number {
  return FLAG_UTF8_NAME | (layout.size > 0 ? FLAG_DATA_DESCRIPTOR : 0);
}

/**
 * Local file header (APPNOTE 4.3.7) with CRC and sizes zero (they follow in the data descriptor), then the
 * ZIP64 extra field if needed — uncompressed size and a zero compressed size, as miniz writes it before the
 * data exists, then the local header offset — then torch's FB padding field.
 */
export function encodeLocalHeader(layout: ZipEntryLayout): Uint8Array {
  const zip64Extra = zip64ExtraBytes(layout.sizeNeedsZip64, layout.offsetNeedsZip64);
  const record = new RecordBytes(layout.headerBytes)
    .u32(LOCAL_FILE_HEADER_SIGNATURE)
    .u16(0) // version needed: miniz writes 0 for stored entries
    .u16(flagsOf(layout))
    .u16(0) // method: stored
    .u16(0) // DOS time
    .u16(0) // DOS date
    .u32(0) // CRC-32: in the data descriptor
    .u32(0) // compressed size: in the data descriptor
    .u32(0) // uncompressed size: in the data descriptor
    .u16(layout.nameBytes.length)
    .u16(layout.headerBytes - LOCAL_FILE_HEADER_BYTES - layout.nameBytes.length)
    .raw(layout.nameBytes);
  if (zip64Extra > 0) {
    record.u16(ZIP64_EXTRA_FIELD_ID).u16(zip64Extra - 4);
    if (layout.sizeNeedsZip64) record.u64(layout.size).u64(0);
    if (layout.offsetNeedsZip64) record.u64(layout.headerOffset);
  }
  return record.u16(PADDING_EXTRA_FIELD_ID).u16(layout.paddingBytes).fill(layout.paddingBytes, PADDING_FILL).done();
}

/** Data descriptor with signature (APPNOTE 4.3.9); 64-bit sizes when the entry has a ZIP64 extra field. */
export function encodeDataDescriptor(layout: ZipEntryLayout, crc: number): Uint8Array {
  if (layout.descriptorBytes === 0) return new Uint8Array(0);
  const record = new RecordBytes(layout.descriptorBytes).u32(DATA_DESCRIPTOR_SIGNATURE).u32(crc);
  if (entryNeedsZip64(layout)) return record.u64(layout.size).u64(layout.size).done();
  return record.u32(layout.size).u32(layout.size).done();
}

/** Central directory file header (APPNOTE 4.3.12); no padding here, torch pads the local header only. */
export function encodeCentralDirectoryHeader(layout: ZipEntryLayout, crc: number): Uint8Array {
  const zip64Extra = zip64ExtraBytes(layout.sizeNeedsZip64, layout.offsetNeedsZip64);
  const size32 = layout.sizeNeedsZip64 ? ZIP64_SENTINEL_32 : layout.size;
  const record = new RecordBytes(centralDirectoryHeaderBytes(layout))
    .u32(CENTRAL_DIRECTORY_HEADER_SIGNATURE)
    .u16(0) // version made by
    .u16(0) // version needed
    .u16(flagsOf(layout))
    .u16(0) // method: stored
    .u16(0) // DOS time
    .u16(0) // DOS date
    .u32(crc)
    .u32(size32)
    .u32(size32)
    .u16(layout.nameBytes.length)
    .u16(zip64Extra)
    .u16(0) // comment length
    .u16(0) // disk number start
    .u16(0) // internal attributes
    .u32(0) // external attributes
    .u32(layout.offsetNeedsZip64 ? ZIP64_SENTINEL_32 : layout.headerOffset)
    .raw(layout.nameBytes);
  if (zip64Extra > 0) {
    record.u16(ZIP64_EXTRA_FIELD_ID).u16(zip64Extra - 4);
    if (layout.sizeNeedsZip64) record.u64(layout.size).u64(layout.size);
    if (layout.offsetNeedsZip64) record.u64(layout.headerOffset);
  }
  return record.done();
}

/**
 * ZIP64 end of central directory record (4.3.14) and locator (4.3.15), then the end of central directory
 * record (4.3.16) whose fields saturate at their sentinels, as miniz's finalize writes them.
 */
export function encodeEndRecords(entryCount: number, centralDirectoryOffset: number, centralDirectoryBytes: number): Uint8Array {
  const zip64RecordOffset = centralDirectoryOffset + centralDirectoryBytes;
  return new RecordBytes(END_RECORDS_BYTES)
    .u32(ZIP64_END_OF_CENTRAL_DIRECTORY_SIGNATURE)
    .u64(ZIP64_END_RECORD_SIZE_FIELD)
    .u16(ZIP64_VERSION_MADE_BY)
    .u16(ZIP64_VERSION_NEEDED)
    .u32(0) // this disk
    .u32(0) // disk with the central directory
    .u64(entryCount)
    .u64(entryCount)
    .u64(centralDirectoryBytes)
    .u64(centralDirectoryOffset)
    .u32(ZIP64_END_OF_CENTRAL_DIRECTORY_LOCATOR_SIGNATURE)
    .u32(0) // disk with the ZIP64 end record
    .u64(zip64RecordOffset)
    .u32(1) // total disks
    .u32(END_OF_CENTRAL_DIRECTORY_SIGNATURE)
    .u16(0)
    .u16(0)
    .u16(Math.min(entryCount, ZIP64_SENTINEL_16))
    .u16(Math.min(entryCount, ZIP64_SENTINEL_16))
    .u32(Math.min(centralDirectoryBytes, ZIP64_SENTINEL_32))
    .u32(Math.min(centralDirectoryOffset, ZIP64_SENTINEL_32))
    .u16(0) // comment length
    .done();
}

/** Where the writer's bytes go: an AtomicFile, or anything that appends and counts. */
export interface ZipSink {
  readonly bytesWritten: number;
  write(bytes: Uint8Array): Promise<void>;
}

interface WrittenEntry {
  readonly layout: ZipEntryLayout;
  readonly crc: number;
}

/**
 * Appends entries one after the other, streaming each entry's bytes and computing its CRC-32 as they
 * pass, then writes the central directory and end records. Each entry's size is declared up front and the
 * streamed byte count is checked against it; the sink's count is checked against the layout after every
 * entry, so what is written is exactly what planZip() predicts for the same entries.
 */
export class ZipWriter {
  private readonly written: WrittenEntry[] = [];
  private readonly names = new Set<string>();
  private finished = false;

  constructor(
    private readonly sink: ZipSink,
    /** The output path, named in errors. */
    private readonly file: string,
  ) {}

  /** The offset the next entry's local header will be written at. */
  get offset(): number {
    return this.sink.bytesWritten;
  }

  /**
   * Writes one entry of exactly `size` bytes from `data`. `label` (a tensor name) is named in the error
   * when the stream's length is wrong.
   */
  async add(
    name: string,
    size: number,
    data: Uint8Array | AsyncIterable<Uint8Array>,
    label?: string,
  ): Promise<ZipEntryLayout> {
    if (this.finished) throw new PolyquantError(ERROR_CODES.USAGE, 'zip archive already finished', { file: this.file });
    if (this.names.has(name)) {
      throw new PolyquantError(ERROR_CODES.USAGE, `zip entry ${JSON.stringify(name)} is written twice`, {
        file: this.file,
      });
    }
    this.names.add(name);
    const layout = layoutEntry(name, size, this.sink.bytesWritten);
    await this.sink.write(encodeLocalHeader(layout));
    let crc = 0;
    let streamed = 0;
    const wrongLength = (count: string) =>
      new PolyquantError(
        ERROR_CODES.MALFORMED,
        `the data for zip entry ${JSON.stringify(name)} is ${count} bytes, but ${size} were declared`,
        { file: this.file, tensor: label },
      );
    const chunks = data instanceof Uint8Array ? [data] : data;
    for await (const chunk of chunks) {
      if (chunk.length === 0) continue;
      if (streamed + chunk.length > size) throw wrongLength(`at least ${streamed + chunk.length}`);
      crc = crc32(chunk, crc);
      streamed += chunk.length;
      await this.sink.write(chunk);
    }
    if (streamed !== size) throw wrongLength(String(streamed));
    crc >>>= 0;
    if (layout.descriptorBytes > 0) await this.sink.write(encodeDataDescriptor(layout, crc));
    this.checkPosition(layout.endOffset, name);
    this.written.push({ layout, crc });
    return layout;
  }

  /** Writes the central directory and end records; returns the archive's total size. */
  async finish(): Promise<number> {
    if (this.finished) throw new PolyquantError(ERROR_CODES.USAGE, 'zip archive already finished', { file: this.file });
    this.finished = true;
    const centralDirectoryOffset = this.sink.bytesWritten;
    const headers = this.written.map(({ layout, crc }) => encodeCentralDirectoryHeader(layout, crc));
    const centralDirectoryBytes = headers.reduce((sum, header) => sum + header.length, 0);
    const directory = new Uint8Array(centralDirectoryBytes);
    let at = 0;
    for (const header of headers) {
      directory.set(header, at);
      at += header.length;
    }
    await this.sink.write(directory);
    await this.sink.write(encodeEndRecords(this.written.length, centralDirectoryOffset, centralDirectoryBytes));
    this.checkPosition(centralDirectoryOffset + centralDirectoryBytes + END_RECORDS_BYTES, 'the end records');
    return this.sink.bytesWritten;
  }

  private checkPosition(expected: number, what: string): void {
    if (this.sink.bytesWritten !== expected) {
      throw new PolyquantError(
        ERROR_CODES.IO,
        `after ${what} the output holds ${this.sink.bytesWritten} bytes where ${expected} were planned`,
        { file: this.file },
      );
    }
  }
}
