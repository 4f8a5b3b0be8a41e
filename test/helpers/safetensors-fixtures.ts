/**
 * Builders for safetensors test files, valid and malformed (STYLE.md §13: fixtures are built by code and
 * each malformed variant is a one-liner next to its test), and the seeded mutator the fuzz test uses.
 */
import { encodeSafetensors, type TensorBytes } from '../../src/readers/safetensors.js';
import { seededUniform } from '../../src/verify/stats.js';
import { concat as concatBytes } from './torch-fixtures.js';

/**
 * Assembles a file from parts without any validation, so that tests can build every kind of broken file:
 * `header` is JSON-stringified unless it is already a string (duplicate keys, odd numbers) or raw bytes
 * (bad UTF-8); `data` is the data buffer or its length (filled with a byte pattern); `headerLength`
 * overrides the 8-byte length prefix.
 */
export function buildSafetensors(
  header: unknown,
  data: Uint8Array | number = 0,
  options: { headerLength?: bigint } = {},
): Uint8Array {
  const headerBytes =
    header instanceof Uint8Array
      ? header
      : new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const dataBytes = typeof data === 'number' ? patternBytes(data, 7) : data;
  const out = new Uint8Array(8 + headerBytes.length + dataBytes.length);
  new DataView(out.buffer).setBigUint64(0, options.headerLength ?? BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  out.set(dataBytes, 8 + headerBytes.length);
  return out;
}

/** Bytes of a small valid file's data buffer. */
export const SMALL_DATA_BYTES = 24;

/** A small valid header: v is F32 [2, 2] at [0, 16], w is F16 [4] at [16, 24]. A fresh object every call. */
export function smallHeader(): Record<string, Record<string, unknown>> {
  return {
    __metadata__: { format: 'pt' },
    v: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 16] },
    w: { dtype: 'F16', shape: [4], data_offsets: [16, 24] },
  };
}

/** smallHeader() with one field of one tensor's entry replaced (or added). */
export function smallHeaderWith(tensor: 'v' | 'w', field: string, value: unknown): Record<string, unknown> {
  const header = smallHeader();
  return { ...header, [tensor]: { ...header[tensor], [field]: value } };
}

/** Deterministic non-trivial bytes: byte i is (i * 31 + seed) mod 256. */
export function patternBytes(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let index = 0; index < length; index += 1) bytes[index] = (index * 31 + seed) & 0xff;
  return bytes;
}

/** The file the fuzz test mutates: several dtypes, a scalar, a zero-size tensor, a multi-byte UTF-8 name. */
export function fuzzSeedFile(): Uint8Array {
  const tensors: TensorBytes[] = [
    { name: 'gpt_neox.embed_in.weight', dtype: 'F16', shape: [4, 3], data: patternBytes(24, 1) },
    { name: 'gpt_neox.layers.0.attention.bias', dtype: 'BOOL', shape: [1, 1, 2, 2], data: patternBytes(4, 2) },
    { name: 'gpt_neox.layers.0.attention.masked_bias', dtype: 'F32', shape: [], data: patternBytes(4, 3) },
    { name: '한국어.가중치', dtype: 'BF16', shape: [2, 2], data: patternBytes(8, 4) },
    { name: 'step', dtype: 'I64', shape: [1], data: patternBytes(8, 5) },
    { name: 'empty', dtype: 'I32', shape: [0, 5], data: new Uint8Array(0) },
  ];
  return encodeSafetensors(tensors, { format: 'pt', note: 'fuzz seed' });
}

/** mulberry32, uniform in [0, 1): the library's seeded generator (verify/stats.ts), shared by the fuzz tests. */
export const mulberry32 = seededUniform;

/** Tokens that probe each header check when spliced into the JSON text. */
const INTERESTING_TOKENS = [
  '-1', '-0', '1.5', '2.0', '1e3', '18446744073709551616', '9007199254740993', '0', '4294967296',
  '"F8_E4M3"', '"BOOL"', '"I64"', '"F64"', '[]', '{}', 'null', 'true', '""', '"v"', '"\\u0076"', '"\\ud800"',
  '"__metadata__"', '[0,0]', '[0]', '[[[[[[[[', ',', ':', '"', '{"a":1}', '{"dtype":"U8","shape":[],"data_offsets":[0,1]}',
];

/**
 * One seeded mutation of a valid file. Most cases edit the header's JSON text and fix up the length prefix
 * (so that the edit gets past the size checks and reaches the JSON, entry and layout checks): a value
 * swapped for a probing token, a digit changed, an entry duplicated, a span copied or deleted. The rest
 * are byte-level edits of the whole file: byte flips (mostly in the prefix and header), truncations,
 * insertions, deletions, length-prefix rewrites and splices of one part of the file over another.
 */
export function mutateSafetensors(base: Uint8Array, random: () => number): Uint8Array {
  const below = (limit: number): number => Math.floor(random() * limit);
  let bytes: Uint8Array = base.slice();
  let byteEdits = 1 + below(3);
  if (random() < 0.6) {
    const textEdits = 1 + below(2);
    for (let edit = 0; edit < textEdits; edit += 1) bytes = mutateHeaderText(bytes, random);
    byteEdits = random() < 0.25 ? 1 : 0;
  }
  for (let edit = 0; edit < byteEdits; edit += 1) bytes = mutateBytes(bytes, random);
  return bytes;
}

function mutateBytes(input: Uint8Array, random: () => number): Uint8Array {
  const below = (limit: number): number => Math.floor(random() * limit);
  const pick = <T>(items: readonly T[]): T => items[below(items.length)] as T;
  const bytes = input.slice();
  const headerEnd = Math.min(bytes.length, 8 + Number(readLength(bytes) % 1_000_000n));
  const position = (): number => (random() < 0.7 && headerEnd > 0 ? below(headerEnd) : below(Math.max(bytes.length, 1)));
  switch (below(6)) {
    case 0: {
      if (bytes.length === 0) return bytes;
      const at = position();
      // Mostly printable ASCII, so that flips reach JSON.parse rather than all failing UTF-8.
      bytes[at] = random() < 0.6 ? 0x20 + below(95) : (bytes[at] ?? 0) ^ (1 << below(8));
      return bytes;
    }
    case 1:
      return bytes.slice(0, below(bytes.length + 1));
    case 2: {
      const at = position();
      const inserted = Uint8Array.from({ length: 1 + below(8) }, () => (random() < 0.6 ? 0x20 + below(95) : below(256)));
      return concat(bytes.subarray(0, at), inserted, bytes.subarray(at));
    }
    case 3: {
      const at = position();
      return concat(bytes.subarray(0, at), bytes.subarray(at + 1 + below(16)));
    }
    case 4: {
      if (bytes.length < 8) return bytes;
      const current = readLength(bytes);
      const choices = [
        current + 1n, current - 1n, current + 8n, 0n, BigInt(below(2 ** 31)),
        2n ** 64n - 1n, 100_000_001n, 100_000_000n, BigInt(bytes.length - 8), BigInt(bytes.length),
      ];
      new DataView(bytes.buffer, bytes.byteOffset).setBigUint64(0, BigInt.asUintN(64, pick(choices)), true);
      return bytes;
    }
    default: {
      const from = below(Math.max(bytes.length, 1));
      const piece = bytes.slice(from, from + 1 + below(32));
      const at = position();
      return random() < 0.5
        ? concat(bytes.subarray(0, at), piece, bytes.subarray(at))
        : concat(bytes.subarray(0, at), piece, bytes.subarray(at + piece.length));
    }
  }
}

/** JSON values a probing token can replace: numbers, strings, and arrays of numbers. */
const VALUE_PATTERN = /-?[0-9]+|"(?:[^"\\]|\\.)*"|\[[0-9,]*\]/g;
/** A whole `"name":{...}` tensor entry. */
const ENTRY_PATTERN = /"(?:[^"\\]|\\.)*":\{[^{}]*\}/g;

/** Edits the JSON text of a file's header and rewrites the length prefix to match. */
function mutateHeaderText(bytes: Uint8Array, random: () => number): Uint8Array {
  const below = (limit: number): number => Math.floor(random() * limit);
  const pickMatch = (pattern: RegExp): RegExpExecArray | undefined => {
    const matches = [...text.matchAll(pattern)];
    return matches[below(matches.length)];
  };
  const headerLength = Math.min(Number(readLength(bytes) % 1_000_000n), Math.max(bytes.length - 8, 0));
  let text = new TextDecoder().decode(bytes.subarray(8, 8 + headerLength));
  const data = bytes.subarray(8 + headerLength);
  const at = below(text.length + 1);
  const kind = below(11);
  if (kind < 4) {
    // Swap one value for a token that probes one check.
    const value = pickMatch(VALUE_PATTERN);
    const token = INTERESTING_TOKENS[below(INTERESTING_TOKENS.length)] ?? '';
    if (value !== undefined) text = text.slice(0, value.index) + token + text.slice(value.index + value[0].length);
  } else if (kind < 7) {
    // Change one digit: shapes and offsets that no longer agree, gaps, overlaps, trailing bytes.
    const digit = pickMatch(/[0-9]/g);
    if (digit !== undefined) text = `${text.slice(0, digit.index)}${below(10)}${text.slice(digit.index + 1)}`;
  } else if (kind < 8) {
    // Move one tensor's whole range: gaps, overlaps and ranges past the end, with shape and size agreeing.
    const range = pickMatch(/"data_offsets":\[([0-9]+),([0-9]+)\]/g);
    const shift = [-8, -4, -2, -1, 1, 2, 4, 8][below(8)] ?? 1;
    if (range !== undefined) {
      const moved = `"data_offsets":[${Number(range[1]) + shift},${Number(range[2]) + shift}]`;
      text = text.slice(0, range.index) + moved + text.slice(range.index + range[0].length);
    }
  } else if (kind < 9) {
    // Repeat a tensor entry, sometimes under an escaped spelling of its name.
    const entry = pickMatch(ENTRY_PATTERN);
    if (entry !== undefined) {
      const copy = random() < 0.5 ? entry[0] : entry[0].replace(/^"(.)/, (_match, first: string) => `"\\u${first.charCodeAt(0).toString(16).padStart(4, '0')}`);
      const end = entry.index + entry[0].length;
      text = `${text.slice(0, end)},${copy}${text.slice(end)}`;
    }
  } else if (kind < 10) {
    const from = below(text.length);
    text = text.slice(0, at) + text.slice(from, from + 1 + below(80)) + text.slice(at);
  } else {
    text = text.slice(0, at) + text.slice(at + 1 + below(12));
  }
  return buildSafetensors(text, data);
}

function readLength(bytes: Uint8Array): bigint {
  if (bytes.length < 8) return 0n;
  return new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
}

const concat = (...parts: Uint8Array[]): Uint8Array => concatBytes(parts);
