/**
 * `polyquant inspect FILE.gguf`: metadata, tensor table, type histogram, bytes and bits per weight
 * (JSON schema `polyquant.inspect-gguf/2`, docs/schemas.md).
 */
import { resolve } from 'node:path';
import { type GgufScalar, readGgufHeader } from '../converters/gguf/format.js';
import { withFile } from '../io/file.js';

export const INSPECT_GGUF_SCHEMA = 'polyquant.inspect-gguf/2';

/** Arrays longer than this (the tokenizer's 30k tokens) are summarised by length and first entries. */
const ARRAY_PREVIEW = 8;

export interface GgufInspectReport {
  readonly schema: typeof INSPECT_GGUF_SCHEMA;
  readonly path: string;
  readonly kind: 'gguf';
  readonly version: number;
  /** Key → value; long arrays as `{ type, length, first }`; 64-bit integers as decimal strings. */
  readonly metadata: Readonly<Record<string, unknown>>;
  readonly tensors: readonly { name: string; type: string; ne: readonly number[]; bytes: number; offset: number }[];
  readonly types: Readonly<Record<string, { tensors: number; bytes: number; weights: number }>>;
  readonly weights: number;
  readonly tensorBytes: number;
  readonly fileBytes: number;
  readonly bitsPerWeight: number;
}

function jsonValue(value: GgufScalar): unknown {
  return typeof value === 'bigint' ? value.toString() : value;
}

export async function isGgufFile(path: string): Promise<boolean> {
  return withFile(path, async (file) => file.size >= 4 && new TextDecoder().decode(await file.read(0, 4)) === 'GGUF');
}

export async function inspectGguf(path: string): Promise<GgufInspectReport> {
  const file = resolve(path);
  return withFile(file, async (handle) => {
    const header = await readGgufHeader(file, handle.size, (n) => handle.read(0, n));
    const metadata: Record<string, unknown> = {};
    for (const [key, { type, value }] of header.kvs) {
      metadata[key] = Array.isArray(value)
        ? value.length > ARRAY_PREVIEW
          ? { type, length: value.length, first: value.slice(0, ARRAY_PREVIEW).map(jsonValue) }
          : value.map(jsonValue)
        : jsonValue(value);
    }
    const types: Record<string, { tensors: number; bytes: number; weights: number }> = {};
    let weights = 0;
    let tensorBytes = 0;
    for (const tensor of header.tensors) {
      const count = tensor.ne.reduce((product, dim) => product * dim, 1);
      const entry = types[tensor.type] ?? { tensors: 0, bytes: 0, weights: 0 };
      types[tensor.type] = entry;
      entry.tensors += 1;
      entry.bytes += tensor.bytes;
      entry.weights += count;
      weights += count;
      tensorBytes += tensor.bytes;
    }
    return {
      schema: INSPECT_GGUF_SCHEMA,
      path: file,
      kind: 'gguf',
      version: header.version,
      metadata,
      tensors: header.tensors.map((tensor) => ({ name: tensor.name, type: tensor.type, ne: tensor.ne, bytes: tensor.bytes, offset: tensor.offset })),
      types,
      weights,
      tensorBytes,
      fileBytes: handle.size,
      bitsPerWeight: weights > 0 ? (8 * tensorBytes) / weights : 0,
    };
  });
}
