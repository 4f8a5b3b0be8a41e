/**
 * GGUF v3, the container llama.cpp loads (specs/gguf.md §1; ggml/src/gguf.cpp `gguf_write_out`,
 * gguf-py/gguf/gguf_writer.py). The writer plans the whole layout first (header, KVs, tensor infos, data
 * offsets), then streams each tensor's bytes, checking each against the plan, into a temp file renamed at
 * the end (STYLE §6).
 */
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import { type AtomicFile, writeAtomically } from '../../io/file.js';
import { GGML_TYPE_BY_ID, GGML_TYPES, type GgmlTypeName } from '../../quant/ggml-types.js';

export const GGUF_MAGIC = 'GGUF';
export const GGUF_VERSION = 3;
/** GGUF_DEFAULT_ALIGNMENT (gguf.h): we never write general.alignment, so readers use this. */
export const GGUF_ALIGNMENT = 32;
/** GGML_MAX_NAME (ggml.h): tensor names must be shorter than this many bytes. */
export const GGUF_MAX_NAME_BYTES = 64;
/** GGML_MAX_DIMS (ggml.h). */
export const GGUF_MAX_DIMS = 4;

/** gguf_type (gguf.h): id and fixed size in bytes (strings and arrays are variable). */
export const GGUF_VALUE_TYPES = {
  UINT8: { id: 0, bytes: 1 },
  INT8: { id: 1, bytes: 1 },
  UINT16: { id: 2, bytes: 2 },
  INT16: { id: 3, bytes: 2 },
  UINT32: { id: 4, bytes: 4 },
  INT32: { id: 5, bytes: 4 },
  FLOAT32: { id: 6, bytes: 4 },
  BOOL: { id: 7, bytes: 1 },
  STRING: { id: 8, bytes: 0 },
  ARRAY: { id: 9, bytes: 0 },
  UINT64: { id: 10, bytes: 8 },
  INT64: { id: 11, bytes: 8 },
  FLOAT64: { id: 12, bytes: 8 },
} as const;
export type GgufScalarType = Exclude<keyof typeof GGUF_VALUE_TYPES, 'ARRAY'>;
export const GGUF_VALUE_TYPE_BY_ID: ReadonlyMap<number, keyof typeof GGUF_VALUE_TYPES> = new Map(
  (Object.keys(GGUF_VALUE_TYPES) as (keyof typeof GGUF_VALUE_TYPES)[]).map((name) => [GGUF_VALUE_TYPES[name].id, name]),
);

export type GgufScalar = number | bigint | boolean | string;

/** One metadata key/value: a scalar of `type`, or (with `array`) an array of `type` elements. */
export interface GgufKV {
  readonly key: string;
  readonly type: GgufScalarType;
  readonly value: GgufScalar | readonly GgufScalar[];
  readonly array?: boolean;
  /**
   * Copied as it was from an input GGUF (requantizing): an empty array, which gguf.cpp reads and
   * llama-quantize copies, is then written too.
   */
  readonly copied?: boolean;
}

export interface GgufTensorSpec {
  readonly name: string;
  readonly type: GgmlTypeName;
  /** ggml order: ne[0] is the innermost (contiguous) dimension, the reverse of the PyTorch shape. */
  readonly ne: readonly number[];
}

export interface GgufTensorToWrite extends GgufTensorSpec {
  chunks(): AsyncIterable<Uint8Array>;
}

export interface GgufPlanTensor extends GgufTensorSpec {
  readonly bytes: number;
  /** Relative to the start of the data section. */
  readonly offset: number;
}

export interface GgufPlan {
  readonly header: Uint8Array;
  readonly dataStart: number;
  readonly tensors: readonly GgufPlanTensor[];
  readonly fileBytes: number;
}

const pad = (value: number, alignment: number): number => Math.ceil(value / alignment) * alignment;

/**
 * Bytes of a tensor in its ggml type (`ggml_nbytes` for a contiguous tensor). The size is computed in
 * bigint and must be a safe integer (a hostile header can ask for 2^64 elements). `file` names the GGUF
 * the dimensions came from, when they came from one.
 */
export function ggmlTensorBytes(name: string, type: GgmlTypeName, ne: readonly number[], file?: string): number {
  const info = GGML_TYPES[type];
  const [inner = 1, ...outer] = ne;
  if (inner % info.blockElements !== 0) {
    throw new PolyquantError(
      ERROR_CODES.LIMIT,
      `row length ${inner} is not a multiple of ${type}'s block size ${info.blockElements}`,
      { file, tensor: name },
    );
  }
  const bytes = (BigInt(inner) / BigInt(info.blockElements)) * BigInt(info.blockBytes) * outer.reduce((product, dim) => product * BigInt(dim), 1n);
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new PolyquantError(ERROR_CODES.LIMIT, `dimensions [${ne.join(', ')}] in ${type} come to ${bytes} bytes, past 2^53`, { file, tensor: name });
  }
  return Number(bytes);
}

/** Appends little-endian values to a growing byte list. */
class ByteBuilder {
  private chunks: Uint8Array[] = [];
  private scratch = new DataView(new ArrayBuffer(8));
  length = 0;

  bytes(data: Uint8Array): void {
    this.chunks.push(data);
    this.length += data.length;
  }

  private fixed(size: number, write: (view: DataView) => void): void {
    write(this.scratch);
    this.bytes(new Uint8Array(this.scratch.buffer.slice(0, size)));
  }

  u32(value: number): void {
    this.fixed(4, (view) => view.setUint32(0, value, true));
  }

  u64(value: number | bigint): void {
    this.fixed(8, (view) => view.setBigUint64(0, BigInt(value), true));
  }

  string(text: string): void {
    const encoded = new TextEncoder().encode(text);
    this.u64(encoded.length);
    this.bytes(encoded);
  }

  scalar(type: GgufScalarType, value: GgufScalar, key: string): void {
    const bad = (): never => {
      throw new PolyquantError(ERROR_CODES.USAGE, `GGUF key ${key}: ${JSON.stringify(String(value))} is not a valid ${type}`);
    };
    switch (type) {
      case 'STRING':
        if (typeof value !== 'string') bad();
        this.string(value as string);
        return;
      case 'BOOL':
        if (typeof value !== 'boolean') bad();
        this.fixed(1, (view) => view.setUint8(0, value ? 1 : 0));
        return;
      case 'UINT64':
      case 'INT64': {
        if (typeof value !== 'bigint' && !(typeof value === 'number' && Number.isSafeInteger(value))) bad();
        const big = BigInt(value as number | bigint);
        this.fixed(8, (view) => (type === 'UINT64' ? view.setBigUint64(0, big, true) : view.setBigInt64(0, big, true)));
        return;
      }
      default: {
        if (typeof value !== 'number') bad();
        const number = value as number;
        const integer = type !== 'FLOAT32' && type !== 'FLOAT64';
        if (integer && !Number.isInteger(number)) bad();
        const size = GGUF_VALUE_TYPES[type].bytes;
        this.fixed(size, (view) => {
          if (type === 'UINT8') view.setUint8(0, number);
          else if (type === 'INT8') view.setInt8(0, number);
          else if (type === 'UINT16') view.setUint16(0, number, true);
          else if (type === 'INT16') view.setInt16(0, number, true);
          else if (type === 'UINT32') view.setUint32(0, number, true);
          else if (type === 'INT32') view.setInt32(0, number, true);
          else if (type === 'FLOAT32') view.setFloat32(0, number, true);
          else view.setFloat64(0, number, true);
        });
      }
    }
  }

  concat(): Uint8Array {
    const out = new Uint8Array(this.length);
    let offset = 0;
    for (const chunk of this.chunks) {
      out.set(chunk, offset);
      offset += chunk.length;
    }
    return out;
  }
}

/** The whole layout of a GGUF file: header bytes (incl. padding) and each tensor's offset and size. */
export function planGguf(kvs: readonly GgufKV[], tensors: readonly GgufTensorSpec[]): GgufPlan {
  const keys = new Set<string>();
  for (const kv of kvs) {
    if (kv.key === '' || keys.has(kv.key)) {
      throw new PolyquantError(ERROR_CODES.USAGE, `GGUF key ${JSON.stringify(kv.key)} is empty or repeated`);
    }
    keys.add(kv.key);
  }
  const names = new Set<string>();
  const planned: GgufPlanTensor[] = [];
  let offset = 0;
  for (const tensor of tensors) {
    const nameBytes = new TextEncoder().encode(tensor.name).length;
    if (nameBytes === 0 || nameBytes >= GGUF_MAX_NAME_BYTES || names.has(tensor.name)) {
      throw new PolyquantError(ERROR_CODES.USAGE, `GGUF tensor name is empty, repeated or ${GGUF_MAX_NAME_BYTES}+ bytes`, {
        tensor: tensor.name,
      });
    }
    if (tensor.ne.length < 1 || tensor.ne.length > GGUF_MAX_DIMS) {
      throw new PolyquantError(ERROR_CODES.USAGE, `GGUF tensors have 1 to ${GGUF_MAX_DIMS} dimensions, got ${tensor.ne.length}`, {
        tensor: tensor.name,
      });
    }
    names.add(tensor.name);
    const bytes = ggmlTensorBytes(tensor.name, tensor.type, tensor.ne);
    planned.push({ ...tensor, bytes, offset });
    offset += pad(bytes, GGUF_ALIGNMENT);
  }

  const out = new ByteBuilder();
  out.bytes(new TextEncoder().encode(GGUF_MAGIC));
  out.u32(GGUF_VERSION);
  out.u64(tensors.length);
  out.u64(kvs.length);
  for (const kv of kvs) {
    out.string(kv.key);
    if (kv.array) {
      const values = kv.value as readonly GgufScalar[];
      if (!Array.isArray(values) || (values.length === 0 && kv.copied !== true)) {
        // gguf-py refuses empty arrays ("Empty array"); the C reader accepts them, but do not write them.
        throw new PolyquantError(ERROR_CODES.USAGE, `GGUF key ${kv.key}: arrays must be non-empty`);
      }
      out.u32(GGUF_VALUE_TYPES.ARRAY.id);
      out.u32(GGUF_VALUE_TYPES[kv.type].id);
      out.u64(values.length);
      for (const value of values) out.scalar(kv.type, value, kv.key);
    } else {
      out.u32(GGUF_VALUE_TYPES[kv.type].id);
      out.scalar(kv.type, kv.value as GgufScalar, kv.key);
    }
  }
  for (const tensor of planned) {
    out.string(tensor.name);
    out.u32(tensor.ne.length);
    for (const dim of tensor.ne) out.u64(dim);
    out.u32(GGML_TYPES[tensor.type].id);
    out.u64(tensor.offset);
  }
  const dataStart = pad(out.length, GGUF_ALIGNMENT);
  out.bytes(new Uint8Array(dataStart - out.length));
  return { header: out.concat(), dataStart, tensors: planned, fileBytes: dataStart + offset };
}

/** Streams a GGUF file: the planned header, then each tensor's chunks, checked against the plan. */
export async function writeGguf(path: string, kvs: readonly GgufKV[], tensors: readonly GgufTensorToWrite[]): Promise<GgufPlan> {
  const plan = planGguf(kvs, tensors);
  await writeAtomically(path, async (file) => {
    await file.write(plan.header);
    for (const [index, tensor] of tensors.entries()) {
      const planned = plan.tensors[index] as GgufPlanTensor;
      await writeTensorData(file, tensor, planned, path);
    }
    if (file.bytesWritten !== plan.fileBytes) {
      throw new PolyquantError(ERROR_CODES.IO, `wrote ${file.bytesWritten} bytes, planned ${plan.fileBytes}`, { file: path });
    }
  });
  return plan;
}

async function writeTensorData(file: AtomicFile, tensor: GgufTensorToWrite, planned: GgufPlanTensor, path: string): Promise<void> {
  let written = 0;
  for await (const chunk of tensor.chunks()) {
    if (written + chunk.length > planned.bytes) break;
    await file.write(chunk);
    written += chunk.length;
  }
  if (written !== planned.bytes) {
    throw new PolyquantError(ERROR_CODES.IO, `tensor data came to ${written} bytes or more, planned ${planned.bytes}`, {
      file: path,
      tensor: tensor.name,
    });
  }
  const padding = pad(planned.bytes, GGUF_ALIGNMENT) - planned.bytes;
  if (padding > 0) await file.write(new Uint8Array(padding));
}

/**
 * ggml_type ids run from 0 to GGML_TYPE_COUNT − 1 (ggml.h, 40 in the ggml llama.cpp b6000+ ships); an id
 * past that is not a ggml type at all, one below it that our table lacks is a type polyquant cannot size.
 */
const GGML_TYPE_COUNT = 40;

/** Limits for reading GGUF headers: gguf.cpp's own (GGUF_MAX_STRING_LENGTH, GGUF_MAX_ARRAY_ELEMENTS). */
const MAX_STRING_BYTES = 1 << 30;
const MAX_ARRAY_ELEMENTS = 1 << 30;
/** Header reads grow in steps; a header past this is not one we can use. */
const MAX_HEADER_BYTES = 512 * 1024 * 1024;

export interface GgufHeader {
  readonly version: number;
  readonly kvs: ReadonlyMap<string, { type: keyof typeof GGUF_VALUE_TYPES; value: GgufScalar | GgufScalar[] }>;
  readonly tensors: readonly (GgufPlanTensor & { readonly typeId: number })[];
  readonly dataStart: number;
  /** `general.alignment`, or GGUF_ALIGNMENT when the file does not set it. */
  readonly alignment: number;
}

/**
 * Parses a GGUF header (magic, KVs, tensor infos) from its first bytes. `readMore(n)` returns the first n
 * bytes of the file; it is called with growing n until the header fits.
 */
export async function readGgufHeader(file: string, size: number, readPrefix: (bytes: number) => Promise<Uint8Array>): Promise<GgufHeader> {
  let want = Math.min(size, 1 << 20);
  for (;;) {
    const bytes = await readPrefix(want);
    const parsed = parseGgufHeader(file, bytes, size, want < size && want < MAX_HEADER_BYTES);
    if (parsed !== 'need-more') return parsed;
    want = Math.min(size, want * 4, MAX_HEADER_BYTES);
  }
}

class NeedMore extends Error {}

function parseGgufHeader(file: string, bytes: Uint8Array, fileSize: number, canGrow: boolean): GgufHeader | 'need-more' {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 0;
  const fail = (detail: string): never => {
    throw new PolyquantError(ERROR_CODES.MALFORMED, detail, { file });
  };
  const need = (n: number): void => {
    if (at + n > bytes.length) {
      if (canGrow) throw new NeedMore();
      fail(`header ends early at byte ${at} (needs ${n} more)`);
    }
  };
  const u32 = (): number => {
    need(4);
    at += 4;
    return view.getUint32(at - 4, true);
  };
  const u64 = (): number => {
    need(8);
    at += 8;
    const value = view.getBigUint64(at - 8, true);
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) fail(`value ${value} at byte ${at - 8} is too large`);
    return Number(value);
  };
  const string = (limit = MAX_STRING_BYTES): string => {
    const length = u64();
    if (length > limit) fail(`string of ${length} bytes at byte ${at - 8} is over the limit`);
    need(length);
    at += length;
    try {
      // ignoreBOM: a leading U+FEFF is part of the value (a copied KV must keep its bytes).
      return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes.subarray(at - length, at));
    } catch {
      return fail(`string at byte ${at - length} is not valid UTF-8`);
    }
  };
  const scalar = (typeName: keyof typeof GGUF_VALUE_TYPES): GgufScalar => {
    switch (typeName) {
      case 'STRING':
        return string();
      case 'BOOL':
        need(1);
        return bytes[at++] !== 0;
      case 'UINT64':
      case 'INT64': {
        need(8);
        at += 8;
        return typeName === 'UINT64' ? view.getBigUint64(at - 8, true) : view.getBigInt64(at - 8, true);
      }
      case 'ARRAY':
        return fail('arrays of arrays are not valid GGUF');
      default: {
        const size = GGUF_VALUE_TYPES[typeName].bytes;
        need(size);
        at += size;
        const o = at - size;
        if (typeName === 'UINT8') return view.getUint8(o);
        if (typeName === 'INT8') return view.getInt8(o);
        if (typeName === 'UINT16') return view.getUint16(o, true);
        if (typeName === 'INT16') return view.getInt16(o, true);
        if (typeName === 'UINT32') return view.getUint32(o, true);
        if (typeName === 'INT32') return view.getInt32(o, true);
        if (typeName === 'FLOAT32') return view.getFloat32(o, true);
        return view.getFloat64(o, true);
      }
    }
  };
  const typeOf = (id: number): keyof typeof GGUF_VALUE_TYPES =>
    GGUF_VALUE_TYPE_BY_ID.get(id) ?? fail(`unknown GGUF value type ${id} at byte ${at - 4}`);
  try {
    need(4);
    if (new TextDecoder().decode(bytes.subarray(0, 4)) !== GGUF_MAGIC) fail('not a GGUF file (bad magic)');
    at = 4;
    const version = u32();
    if (version !== 2 && version !== 3) fail(`GGUF version ${version} is not supported (2 or 3)`);
    const tensorCount = u64();
    const kvCount = u64();
    const kvs = new Map<string, { type: keyof typeof GGUF_VALUE_TYPES; value: GgufScalar | GgufScalar[] }>();
    for (let i = 0; i < kvCount; i += 1) {
      const key = string();
      if (key === '' || kvs.has(key)) fail(`key ${JSON.stringify(key)} is empty or repeated`);
      const type = typeOf(u32());
      if (type === 'ARRAY') {
        const elementType = typeOf(u32());
        const count = u64();
        if (count > MAX_ARRAY_ELEMENTS) fail(`array ${key} has ${count} elements, over the limit`);
        const values: GgufScalar[] = [];
        for (let j = 0; j < count; j += 1) values.push(scalar(elementType));
        kvs.set(key, { type: elementType, value: values });
      } else {
        kvs.set(key, { type, value: scalar(type) });
      }
    }
    // general.alignment as gguf.cpp reads it: a UINT32 (gguf_get_val_u32 asserts the type), non-zero,
    // a power of two; without it, GGUF_DEFAULT_ALIGNMENT.
    const alignmentKv = kvs.get('general.alignment');
    let alignment = GGUF_ALIGNMENT;
    if (alignmentKv !== undefined) {
      const value = alignmentKv.value;
      if (alignmentKv.type !== 'UINT32' || Array.isArray(value) || typeof value !== 'number') {
        fail(`general.alignment is ${Array.isArray(value) ? 'an array of ' : ''}${alignmentKv.type}; GGUF requires a UINT32`);
      }
      const number = value as number;
      if (number === 0 || (number & (number - 1)) !== 0) fail(`general.alignment ${number} is not a power of two`);
      alignment = number;
    }
    const tensors: (GgufPlanTensor & { typeId: number })[] = [];
    const names = new Set<string>();
    // gguf.cpp: tensor data follow one another in header order, each at the running offset padded to the alignment.
    let expectedOffset = 0;
    for (let i = 0; i < tensorCount; i += 1) {
      const name = string(GGUF_MAX_NAME_BYTES - 1);
      if (names.has(name)) fail(`tensor ${name} appears twice`);
      names.add(name);
      const dims = u32();
      if (dims < 1 || dims > GGUF_MAX_DIMS) fail(`tensor ${name} has ${dims} dimensions; GGUF allows 1 to ${GGUF_MAX_DIMS}`);
      const ne: number[] = [];
      for (let d = 0; d < dims; d += 1) ne.push(u64());
      if (ne.some((dim) => dim === 0)) fail(`tensor ${name} has a zero dimension [${ne.join(', ')}]`);
      const elements = ne.reduce((product, dim) => product * BigInt(dim), 1n);
      if (elements > BigInt(Number.MAX_SAFE_INTEGER)) fail(`tensor ${name} has ${elements} elements [${ne.join(', ')}], past 2^53`);
      const typeId = u32();
      const type = GGML_TYPE_BY_ID.get(typeId);
      if (type === undefined) {
        const known = [...GGML_TYPE_BY_ID.values()].join(', ');
        if (typeId >= GGML_TYPE_COUNT) fail(`tensor ${name} has ggml type id ${typeId}, which is not a ggml type (ids are below ${GGML_TYPE_COUNT})`);
        throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `tensor ${name} has ggml type id ${typeId}, which polyquant does not read`, {
          file,
          hint: `polyquant reads ${known}`,
        });
      }
      const offset = u64();
      const bytes = ggmlTensorBytes(name, type, ne, file);
      if (offset % alignment !== 0) fail(`tensor ${name}'s data offset ${offset} is not a multiple of the alignment ${alignment}`);
      if (offset < expectedOffset) fail(`tensor ${name}'s data at offset ${offset} overlaps the tensor before it, which ends at ${expectedOffset}`);
      if (offset > expectedOffset) fail(`tensor ${name}'s data at offset ${offset} leaves a gap after the tensor before it (expected ${expectedOffset})`);
      expectedOffset += pad(bytes, alignment);
      tensors.push({ name, ne, type, typeId, offset, bytes });
    }
    const dataStart = pad(at, alignment);
    for (const tensor of tensors) {
      if (dataStart + tensor.offset + tensor.bytes > fileSize) {
        fail(`tensor ${tensor.name}'s data (${tensor.bytes} bytes at ${dataStart + tensor.offset}) runs past the end of the file (${fileSize} bytes)`);
      }
    }
    return { version, kvs, tensors, dataStart, alignment };
  } catch (error) {
    if (error instanceof NeedMore) return 'need-more';
    throw error;
  }
}
