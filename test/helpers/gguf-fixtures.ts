/**
 * GGUF fixtures built by code: a real q8_0 file converted from the bundled tiny model, a map of where each
 * header field lies in it (so that a malformed variant is a one-line patch next to its test), and the
 * seeded mutator the GGUF fuzz test uses.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { convertToGguf } from '../../src/converters/gguf/convert.js';
import { GGUF_VALUE_TYPES } from '../../src/converters/gguf/format.js';
import { REPO_ROOT } from './shared.js';

export const TINY_NEOX_DIR = join(REPO_ROOT, 'fixtures', 'tiny-neox');

/** Converts fixtures/tiny-neox to q8_0 in `dir` and returns the file's bytes and path. */
export async function tinyQ8Gguf(dir: string): Promise<{ path: string; bytes: Uint8Array }> {
  const path = join(dir, 'tiny-neox-q8_0.gguf');
  await convertToGguf(TINY_NEOX_DIR, { type: 'q8_0', out: path, workers: 1 });
  return { path, bytes: new Uint8Array(readFileSync(path)) };
}

export interface TensorInfoFields {
  readonly name: string;
  /** Byte position of the n_dims u32. */
  readonly dimsAt: number;
  /** Byte position of each ne[i] u64. */
  readonly neAt: readonly number[];
  /** Byte position of the ggml type id u32. */
  readonly typeAt: number;
  /** Byte position of the data offset u64. */
  readonly offsetAt: number;
}

export interface GgufFields {
  /** Byte positions of the tensor count and KV count u64s. */
  readonly tensorCountAt: number;
  readonly kvCountAt: number;
  /** Where the first KV starts (an inserted KV goes here). */
  readonly firstKvAt: number;
  readonly tensors: readonly TensorInfoFields[];
  /** End of the tensor infos (before the padding to the data section). */
  readonly headerEnd: number;
}

/** Finds every header field of a well-formed GGUF (ours: no nested arrays, little-endian). */
export function ggufFields(bytes: Uint8Array): GgufFields {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 8;
  const u32 = (): number => {
    at += 4;
    return view.getUint32(at - 4, true);
  };
  const u64 = (): number => {
    at += 8;
    return Number(view.getBigUint64(at - 8, true));
  };
  const string = (): string => {
    const length = u64();
    at += length;
    return new TextDecoder().decode(bytes.subarray(at - length, at));
  };
  const sizes = new Map<number, number>(Object.values(GGUF_VALUE_TYPES).map((type) => [type.id, type.bytes]));
  const skipValue = (type: number): void => {
    if (type === GGUF_VALUE_TYPES.STRING.id) string();
    else at += sizes.get(type) ?? 0;
  };
  const tensorCountAt = at;
  const tensorCount = u64();
  const kvCountAt = at;
  const kvCount = u64();
  const firstKvAt = at;
  for (let i = 0; i < kvCount; i += 1) {
    string();
    const type = u32();
    if (type === GGUF_VALUE_TYPES.ARRAY.id) {
      const element = u32();
      const count = u64();
      for (let j = 0; j < count; j += 1) skipValue(element);
    } else {
      skipValue(type);
    }
  }
  const tensors: TensorInfoFields[] = [];
  for (let i = 0; i < tensorCount; i += 1) {
    const name = string();
    const dimsAt = at;
    const dims = u32();
    const neAt: number[] = [];
    for (let d = 0; d < dims; d += 1) {
      neAt.push(at);
      u64();
    }
    const typeAt = at;
    u32();
    const offsetAt = at;
    u64();
    tensors.push({ name, dimsAt, neAt, typeAt, offsetAt });
  }
  return { tensorCountAt, kvCountAt, firstKvAt, tensors, headerEnd: at };
}

/** A copy of `bytes` with a little-endian u32 or u64 written at `at`. */
export function patchU32(bytes: Uint8Array, at: number, value: number): Uint8Array {
  const copy = bytes.slice();
  new DataView(copy.buffer).setUint32(at, value >>> 0, true);
  return copy;
}

export function patchU64(bytes: Uint8Array, at: number, value: bigint | number): Uint8Array {
  const copy = bytes.slice();
  new DataView(copy.buffer).setBigUint64(at, BigInt.asUintN(64, BigInt(value)), true);
  return copy;
}

/** One encoded KV: key, type id and value bytes (raw, so that wrong types can be written). */
export function encodeKv(key: string, typeId: number, value: Uint8Array): Uint8Array {
  const keyBytes = new TextEncoder().encode(key);
  const out = new Uint8Array(8 + keyBytes.length + 4 + value.length);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(keyBytes.length), true);
  out.set(keyBytes, 8);
  view.setUint32(8 + keyBytes.length, typeId, true);
  out.set(value, 12 + keyBytes.length);
  return out;
}

/** A copy of the GGUF with one more KV (first in the list) and the KV count raised by one. */
export function withKv(bytes: Uint8Array, kv: Uint8Array): Uint8Array {
  const fields = ggufFields(bytes);
  const out = new Uint8Array(bytes.length + kv.length);
  out.set(bytes.subarray(0, fields.firstKvAt));
  out.set(kv, fields.firstKvAt);
  out.set(bytes.subarray(fields.firstKvAt), fields.firstKvAt + kv.length);
  const view = new DataView(out.buffer);
  view.setBigUint64(fields.kvCountAt, view.getBigUint64(fields.kvCountAt, true) + 1n, true);
  return out;
}

/** `general.alignment` as a UINT32 (or another type, to test the type check). */
export function alignmentKv(value: number, type: 'UINT32' | 'INT32' | 'UINT64' = 'UINT32'): Uint8Array {
  const bytes = new Uint8Array(type === 'UINT64' ? 8 : 4);
  const view = new DataView(bytes.buffer);
  if (type === 'UINT32') view.setUint32(0, value >>> 0, true);
  else if (type === 'INT32') view.setInt32(0, value, true);
  else view.setBigUint64(0, BigInt(value), true);
  return encodeKv('general.alignment', GGUF_VALUE_TYPES[type].id, bytes);
}

/** Values that probe each header check when written into a count, dimension, type id or offset. */
const INTERESTING_U32 = [0, 1, 2, 3, 4, 5, 7, 8, 9, 13, 31, 39, 40, 200, 0x7fffffff, 0xffffffff];
const INTERESTING_U64 = [0n, 1n, 7n, 31n, 32n, 33n, 64n, 2n ** 31n, 2n ** 32n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n];

/**
 * One seeded mutation of a valid GGUF. Most edit a field the parser reads — a tensor's dimension count,
 * a dimension, its type id or data offset, the tensor or KV count, a string length, a KV's type — to a
 * probing value or a small step away from the true one; some insert a `general.alignment` of a random
 * type and value; the rest flip, insert or delete header bytes, or truncate the file.
 */
export function mutateGguf(base: Uint8Array, fields: GgufFields, random: () => number): Uint8Array {
  const below = (limit: number): number => Math.floor(random() * limit);
  const pick = <T>(items: readonly T[]): T => items[below(items.length)] as T;
  const tensor = pick(fields.tensors);
  const u64Value = (current: bigint): bigint =>
    random() < 0.5 ? pick(INTERESTING_U64) : current + BigInt(pick([-64, -32, -1, 1, 32, 64]));
  const readU64 = (at: number): bigint => new DataView(base.buffer, base.byteOffset).getBigUint64(at, true);
  switch (below(10)) {
    case 0:
      return patchU32(base, tensor.typeAt, pick(INTERESTING_U32));
    case 1:
      return patchU64(base, tensor.offsetAt, u64Value(readU64(tensor.offsetAt)));
    case 2: {
      const at = pick(tensor.neAt);
      return patchU64(base, at, u64Value(readU64(at)));
    }
    case 3:
      return patchU32(base, tensor.dimsAt, pick(INTERESTING_U32));
    case 4: {
      const at = random() < 0.5 ? fields.tensorCountAt : fields.kvCountAt;
      return patchU64(base, at, u64Value(readU64(at)));
    }
    case 5: {
      const type = pick(['UINT32', 'UINT32', 'INT32', 'UINT64'] as const);
      return withKv(base, alignmentKv(pick([0, 1, 2, 7, 16, 32, 48, 64, -32, 2 ** 31]), type));
    }
    case 6: {
      // A u32 or u64 anywhere in the header: string lengths, KV types, array counts.
      const at = below(Math.max(1, fields.headerEnd - 8));
      return random() < 0.5 ? patchU32(base, at, pick(INTERESTING_U32)) : patchU64(base, at, pick(INTERESTING_U64));
    }
    case 7: {
      // A quarter of the flips land in the magic and version, the rest anywhere in the header.
      const copy = base.slice();
      const flips = 1 + below(4);
      const span = random() < 0.25 ? 8 : fields.headerEnd;
      for (let i = 0; i < flips; i += 1) copy[below(span)] = below(256);
      return copy;
    }
    case 8: {
      const at = below(fields.headerEnd);
      if (random() < 0.5) return Uint8Array.from([...base.subarray(0, at), ...base.subarray(at + 1 + below(8))]);
      const inserted = Uint8Array.from({ length: 1 + below(8) }, () => below(256));
      const out = new Uint8Array(base.length + inserted.length);
      out.set(base.subarray(0, at));
      out.set(inserted, at);
      out.set(base.subarray(at), at + inserted.length);
      return out;
    }
    default:
      return base.slice(0, random() < 0.5 ? below(fields.headerEnd + 64) : below(base.length));
  }
}
