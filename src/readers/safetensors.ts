/**
 * safetensors, read and write. The format (https://github.com/huggingface/safetensors, README "Format"):
 * an 8-byte little-endian u64 N, N bytes of UTF-8 JSON mapping each tensor name to
 * `{"dtype", "shape", "data_offsets": [begin, end]}` plus an optional `"__metadata__": {string: string}`,
 * then the data buffer; offsets are relative to the start of the data buffer.
 *
 * The source of truth is the Rust crate, safetensors/src/tensor.rs: reading mirrors
 * `SafeTensors::read_metadata` + `Metadata::validate`, writing mirrors `prepare` + `serialize_to_file`.
 * Where we are stricter than the crate (duplicate keys, unknown fields, float-looking numbers, a rank
 * limit) the comment at the check says why.
 */
import { ERROR_CODES, type ErrorCode, PolyquantError, malformed } from '../errors.js';
import { withFile, writeAtomically } from '../io/file.js';
import { DTYPE_NAMES, DTYPES, type DType, elementCountBig, isDType } from '../tensor/dtype.js';
import { FileRangeTensor, type TensorToWrite } from './tensor-ref.js';

/** The u64 that opens every file and gives the header's length in bytes. */
export const HEADER_LENGTH_BYTES = 8;

/**
 * Largest header we read: the crate's MAX_HEADER_SIZE (100 MB). It stops a hostile length from making us
 * allocate gigabytes before a single byte is checked; real headers are tens of kilobytes.
 */
export const MAX_HEADER_BYTES = 100_000_000;

/**
 * Highest tensor rank we accept: numpy 2's NPY_MAXDIMS. The crate has no limit; no checkpoint comes near
 * it, and it bounds the work one header entry can ask for.
 */
export const MAX_RANK = 64;

/** The header key that holds the free-form string metadata instead of a tensor. */
export const METADATA_KEY = '__metadata__';

/** The fields of a tensor entry, in the order the crate's `TensorInfo` struct serializes them. */
const ENTRY_FIELDS = ['dtype', 'shape', 'data_offsets'] as const;

/**
 * Relative order of our dtypes in the crate's `Dtype` enum, whose derived `Ord` is what `prepare` sorts by
 * ("They MUST be in increasing alignment order"). The full enum, newest crate: BOOL, F4, F6_E2M3, F6_E3M2,
 * U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64.
 */
export const SAFETENSORS_DTYPE_ORDER: Readonly<Record<DType, number>> = {
  BOOL: 0,
  U8: 1,
  I8: 2,
  I16: 3,
  F16: 4,
  BF16: 5,
  I32: 6,
  F32: 7,
  F64: 8,
  I64: 9,
};

/** A tensor as the header describes it; offsets are relative to the start of the data buffer. */
export interface SafetensorsEntry {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly dataOffsets: readonly [begin: number, end: number];
}

/** A validated header: what parseSafetensorsHeader returns. */
export interface SafetensorsHeader {
  readonly metadata: Readonly<Record<string, string>> | undefined;
  /** In data-buffer order (by begin, then end, then name, so that zero-size tensors sort deterministically). */
  readonly entries: readonly SafetensorsEntry[];
}

export interface SafetensorsFile {
  readonly path: string;
  readonly fileSize: number;
  /** N: bytes of JSON (with its padding) after the 8-byte length. */
  readonly headerLength: number;
  /** Absolute offset of the data buffer: 8 + N. */
  readonly dataOffset: number;
  readonly metadata: Readonly<Record<string, string>> | undefined;
  /** Lazy tensors, in file (offset) order. */
  readonly tensors: FileRangeTensor[];
}

// ---------------------------------------------------------------------------------------------------------
// Reading

/**
 * Reads a safetensors file's header and returns lazy tensors over its data; no tensor bytes are read. Every
 * problem with the bytes is a PolyquantError naming the file (and the tensor where there is one).
 */
export async function readSafetensors(path: string): Promise<SafetensorsFile> {
  return withFile(path, async (file) => {
    // Sizes before reads: never ask for more prefix than the file has, so a 5-byte file gets its own message.
    const prefix = await file.read(0, Math.min(HEADER_LENGTH_BYTES, file.size));
    const headerLength = parseHeaderLength(path, prefix, file.size);
    const headerBytes = await file.read(HEADER_LENGTH_BYTES, headerLength);
    const header = parseSafetensorsHeader(path, headerBytes, file.size - HEADER_LENGTH_BYTES - headerLength);
    return toSafetensorsFile(path, file.size, headerLength, header);
  });
}

/**
 * The same as readSafetensors on a whole file already in memory (tests, fuzzing). The returned tensors
 * still read from `path`, so they are only usable if `bytes` are that file's contents.
 */
export function parseSafetensorsBytes(path: string, bytes: Uint8Array): SafetensorsFile {
  const headerLength = parseHeaderLength(path, bytes.subarray(0, HEADER_LENGTH_BYTES), bytes.length);
  const headerEnd = HEADER_LENGTH_BYTES + headerLength;
  const header = parseSafetensorsHeader(path, bytes.subarray(HEADER_LENGTH_BYTES, headerEnd), bytes.length - headerEnd);
  return toSafetensorsFile(path, bytes.length, headerLength, header);
}

/**
 * Checks the 8-byte length prefix against the file size and returns N, the header length. The crate's
 * order: the file holds the prefix (HeaderTooSmall), N is within MAX_HEADER_SIZE (HeaderTooLarge), and
 * 8 + N is within the file (InvalidHeaderLength).
 */
export function parseHeaderLength(path: string, prefix: Uint8Array, fileSize: number): number {
  if (fileSize < HEADER_LENGTH_BYTES || prefix.length < HEADER_LENGTH_BYTES) {
    throw malformed(
      path,
      `file is ${fileSize} bytes, too short for the ${HEADER_LENGTH_BYTES}-byte header length that opens a safetensors file`,
      { hint: 'the file is truncated or not a safetensors file' },
    );
  }
  // Read as a bigint: a u64 past 2^53 must be refused, not silently rounded.
  const declared = new DataView(prefix.buffer, prefix.byteOffset, HEADER_LENGTH_BYTES).getBigUint64(0, true);
  if (declared > BigInt(MAX_HEADER_BYTES)) {
    throw new PolyquantError(
      ERROR_CODES.LIMIT,
      `header length ${declared} is over the ${MAX_HEADER_BYTES}-byte limit (MAX_HEADER_BYTES)`,
      { file: path, hint: 'the file is corrupt or not a safetensors file' },
    );
  }
  const headerLength = Number(declared);
  if (headerLength > fileSize - HEADER_LENGTH_BYTES) {
    throw malformed(
      path,
      `header length ${headerLength} runs past the end of the file (${fileSize} bytes, so at most ${fileSize - HEADER_LENGTH_BYTES} header bytes)`,
      { hint: 'the file is truncated or not a safetensors file' },
    );
  }
  return headerLength;
}

/**
 * Validates a header, given its N bytes and the length of the data buffer that follows it, in the order
 * STYLE.md §8 asks for, each check guarding the next: UTF-8, JSON, a top-level object, no duplicate keys
 * and only plain-digit numbers, `__metadata__`, each entry's fields and types, element count × dtype bytes
 * (bigint) against its offsets, and finally offsets sorted and proven contiguous from 0 to the end of the
 * data buffer. Pure: no I/O, so tests and fuzzing run in memory.
 */
export function parseSafetensorsHeader(path: string, headerBytes: Uint8Array, dataLength: number): SafetensorsHeader {
  const text = decodeUtf8(path, headerBytes);
  const root = parseJson(path, text);
  if (!isPlainObject(root)) {
    throw malformed(path, `header must be a JSON object of tensors, got ${describe(root)}`);
  }
  scanHeaderTokens(path, text);

  const metadata = parseMetadata(path, root[METADATA_KEY]);
  const entries: SafetensorsEntry[] = [];
  for (const [name, value] of Object.entries(root)) {
    if (name !== METADATA_KEY) entries.push(parseEntry(path, name, value));
  }
  return { metadata, entries: checkLayout(path, entries, dataLength) };
}

function toSafetensorsFile(
  path: string,
  fileSize: number,
  headerLength: number,
  header: SafetensorsHeader,
): SafetensorsFile {
  const dataOffset = HEADER_LENGTH_BYTES + headerLength;
  return {
    path,
    fileSize,
    headerLength,
    dataOffset,
    metadata: header.metadata,
    tensors: header.entries.map(
      (entry) => new FileRangeTensor(entry.name, entry.dtype, entry.shape, path, dataOffset + entry.dataOffsets[0]),
    ),
  };
}

// ignoreBOM keeps a leading U+FEFF in the string so that JSON.parse refuses it, as the crate does
// (core::str::from_utf8 keeps it and serde_json rejects it); fatal makes bad UTF-8 an error, not U+FFFD.
const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function decodeUtf8(path: string, bytes: Uint8Array): string {
  try {
    return utf8Decoder.decode(bytes);
  } catch (error) {
    throw malformed(path, `header is not valid UTF-8 (${bytes.length} bytes)`, {
      hint: 'the file is corrupt or not a safetensors file',
      cause: error,
    });
  }
}

function parseJson(path: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw malformed(path, `header is not valid JSON: ${reason}`, { cause: error });
  }
}

function parseMetadata(path: string, value: unknown): Readonly<Record<string, string>> | undefined {
  // The crate's field is Option<HashMap<String, String>>: absent and null both mean "no metadata".
  if (value === undefined || value === null) return undefined;
  if (!isPlainObject(value)) {
    throw malformed(path, `${METADATA_KEY} must be an object of string values, got ${describe(value)}`);
  }
  for (const [key, item] of Object.entries(value)) {
    if (typeof item !== 'string') {
      throw malformed(path, `${METADATA_KEY} value for key ${JSON.stringify(key)} must be a string, got ${describe(item)}`);
    }
    if (hasLoneSurrogate(key) || hasLoneSurrogate(item)) {
      throw malformed(path, `${METADATA_KEY} key ${JSON.stringify(key)} holds an unpaired UTF-16 surrogate escape`);
    }
  }
  // Object.entries/fromEntries define own properties, so a "__proto__" key stays data, never a prototype.
  return Object.freeze(Object.fromEntries(Object.entries(value) as [string, string][]));
}

function parseEntry(path: string, name: string, value: unknown): SafetensorsEntry {
  const fail = (code: ErrorCode, detail: string): PolyquantError =>
    new PolyquantError(code, detail, { file: path, tensor: name });

  if (name === '') throw fail(ERROR_CODES.MALFORMED, 'a tensor name is empty');
  // serde_json refuses "\ud800" escapes that do not pair up; JSON.parse accepts them, so check here.
  if (hasLoneSurrogate(name)) throw fail(ERROR_CODES.MALFORMED, 'the tensor name holds an unpaired UTF-16 surrogate escape');
  if (!isPlainObject(value)) {
    throw fail(ERROR_CODES.MALFORMED, `entry must be an object with dtype, shape and data_offsets, got ${describe(value)}`);
  }
  // Stricter than the crate, which ignores unknown fields: an extra field means a writer we do not know.
  for (const field of Object.keys(value)) {
    if (!(ENTRY_FIELDS as readonly string[]).includes(field)) {
      throw fail(ERROR_CODES.MALFORMED, `entry has an unexpected field ${JSON.stringify(field)}; expected exactly dtype, shape and data_offsets`);
    }
  }
  for (const field of ENTRY_FIELDS) {
    if (!Object.hasOwn(value, field)) throw fail(ERROR_CODES.MALFORMED, `entry is missing the field "${field}"`);
  }

  const { dtype, shape, data_offsets: offsets } = value;
  if (typeof dtype !== 'string') throw fail(ERROR_CODES.MALFORMED, `dtype must be a string, got ${describe(dtype)}`);
  if (!isDType(dtype)) {
    throw fail(ERROR_CODES.UNSUPPORTED, `dtype ${JSON.stringify(dtype)} is not supported; supported dtypes: ${DTYPE_NAMES.join(', ')}`);
  }

  if (!Array.isArray(shape)) throw fail(ERROR_CODES.MALFORMED, `shape must be an array, got ${describe(shape)}`);
  if (shape.length > MAX_RANK) {
    throw fail(ERROR_CODES.LIMIT, `shape has rank ${shape.length}, over the limit of ${MAX_RANK} (MAX_RANK)`);
  }
  for (const [index, dim] of (shape as unknown[]).entries()) {
    if (typeof dim !== 'number' || !Number.isInteger(dim) || dim < 0) {
      throw fail(ERROR_CODES.MALFORMED, `shape[${index}] is ${describe(dim)}, not a non-negative integer`);
    }
    if (!Number.isSafeInteger(dim)) {
      throw fail(ERROR_CODES.LIMIT, `shape[${index}] is ${describe(dim)}, over the largest dimension polyquant handles (2^53 - 1)`);
    }
  }
  const dims = shape as number[];

  if (!Array.isArray(offsets) || offsets.length !== 2) {
    throw fail(ERROR_CODES.MALFORMED, `data_offsets must be an array [begin, end], got ${describe(offsets)}`);
  }
  const [begin, end] = offsets as unknown[];
  for (const offset of [begin, end]) {
    if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) {
      throw fail(ERROR_CODES.MALFORMED, `data_offsets holds ${describe(offset)}, not a byte offset within a file`);
    }
  }
  // The loop above proved both are numbers; TypeScript cannot see through it.
  const range: [number, number] = [begin as number, end as number];
  if (range[0] > range[1]) {
    throw fail(ERROR_CODES.MALFORMED, `data_offsets [${range[0]}, ${range[1]}] end before they begin`);
  }

  // Element count in bigint so that no shape can overflow. The product of the non-zero dimensions must be
  // addressable even for a zero-size tensor: TensorRef math (rows, bytes per row) runs in doubles.
  const nonZeroElements = elementCountBig(dims.filter((dim) => dim !== 0));
  if (nonZeroElements > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw fail(ERROR_CODES.LIMIT, `shape [${dims.join(', ')}] has ${nonZeroElements} elements, more than polyquant can address (2^53 - 1)`);
  }
  const neededBytes = elementCountBig(dims) * BigInt(DTYPES[dtype].bytes);
  if (neededBytes !== BigInt(range[1] - range[0])) {
    throw fail(
      ERROR_CODES.MALFORMED,
      `shape [${dims.join(', ')}] of ${dtype} needs ${neededBytes} bytes but data_offsets [${range[0]}, ${range[1]}] span ${range[1] - range[0]}`,
    );
  }
  return { name, dtype, shape: dims, dataOffsets: range };
}

/**
 * Sorts the entries by offset and proves they tile the data buffer exactly: the first begins at 0, each
 * begins where the previous ends (no gap, no overlap), and the last ends at the buffer's end (no trailing
 * bytes). The crate's `validate` + the `buffer_end + 8 + n != buffer_len` check in `read_metadata`.
 */
function checkLayout(path: string, entries: SafetensorsEntry[], dataLength: number): SafetensorsEntry[] {
  const sorted = entries.toSorted(
    (left, right) =>
      left.dataOffsets[0] - right.dataOffsets[0] ||
      left.dataOffsets[1] - right.dataOffsets[1] ||
      compareCodePoints(left.name, right.name),
  );
  let previous: SafetensorsEntry | undefined;
  for (const entry of sorted) {
    const [begin, end] = entry.dataOffsets;
    const expected = previous === undefined ? 0 : previous.dataOffsets[1];
    const after =
      previous === undefined ? 'the start of the data buffer' : `the previous tensor ${JSON.stringify(previous.name)} which ends at ${expected}`;
    if (begin < expected) {
      throw malformed(path, `data_offsets [${begin}, ${end}] overlap ${after}`, { tensor: entry.name });
    }
    if (begin > expected) {
      throw malformed(path, `data_offsets [${begin}, ${end}] leave a gap of ${begin - expected} bytes after ${after}`, {
        tensor: entry.name,
      });
    }
    if (end > dataLength) {
      throw malformed(path, `data_offsets [${begin}, ${end}] run past the end of the ${dataLength}-byte data buffer`, {
        tensor: entry.name,
        hint: 'the file is truncated',
      });
    }
    previous = entry;
  }
  const dataEnd = previous === undefined ? 0 : previous.dataOffsets[1];
  if (dataEnd !== dataLength) {
    const last = previous === undefined ? 'there are no tensors' : `the last tensor ${JSON.stringify(previous.name)} ends at ${dataEnd}`;
    throw malformed(path, `the data buffer holds ${dataLength - dataEnd} trailing bytes: ${last} but the buffer is ${dataLength} bytes`);
  }
  return sorted;
}

/**
 * One pass over header text that JSON.parse has already accepted, for what JSON.parse cannot tell us:
 *  - duplicate keys in any object (JSON.parse silently keeps the last; we compare decoded keys, so `"v"`
 *    and `"\u0076"` collide), and
 *  - numbers not written as plain digits (`-1`, `1.5`, `2.0`, `1e3`): the crate's fields are usize and
 *    serde_json refuses those forms, while JSON.parse would turn `2.0` and `1e3` into integers. Only
 *    shapes and offsets hold numbers in a valid header, so this rule applies everywhere.
 * Iterative, with an explicit stack, so that deep nesting cannot overflow the call stack.
 */
function scanHeaderTokens(path: string, text: string): void {
  interface Frame {
    readonly isObject: boolean;
    readonly keys: Set<string>;
    expectingKey: boolean;
    key: string | undefined;
  }
  const stack: Frame[] = [];
  // Where the scan is, for error messages: the tensor (top-level key) and the field inside its entry.
  const where = (): { tensor: string | undefined; place: string } => {
    const top = stack[0]?.key;
    if (top === METADATA_KEY) return { tensor: undefined, place: ` in ${METADATA_KEY}` };
    const field = stack[1]?.key;
    return { tensor: top, place: field === undefined ? '' : ` in ${field}` };
  };

  let index = 0;
  while (index < text.length) {
    // Char codes rather than one-character strings: this loop runs once per header byte.
    const code = text.charCodeAt(index);
    if (code === OPEN_BRACE || code === OPEN_BRACKET) {
      const isObject = code === OPEN_BRACE;
      stack.push({ isObject, keys: new Set(), expectingKey: isObject, key: undefined });
      index += 1;
    } else if (code === CLOSE_BRACE || code === CLOSE_BRACKET) {
      stack.pop();
      index += 1;
    } else if (code === COMMA) {
      const top = stack.at(-1);
      if (top?.isObject) top.expectingKey = true;
      index += 1;
    } else if (code === QUOTE) {
      const close = stringEnd(text, index);
      const top = stack.at(-1);
      if (top?.isObject && top.expectingKey) {
        const raw = text.slice(index, close + 1);
        const key = raw.includes('\\') ? (JSON.parse(raw) as string) : raw.slice(1, -1);
        if (top.keys.has(key)) throw duplicateKey(path, stack, key);
        top.keys.add(key);
        top.key = key;
        top.expectingKey = false;
      }
      index = close + 1;
    } else if (code === MINUS || isDigit(code)) {
      let stop = index + 1;
      while (stop < text.length && isNumberPart(text.charCodeAt(stop))) stop += 1;
      const token = text.slice(index, stop);
      if (!/^[0-9]+$/.test(token)) {
        const { tensor, place } = where();
        throw malformed(path, `number ${token}${place} is not a non-negative integer written in plain digits`, {
          tensor,
        });
      }
      index = stop;
    } else {
      // Whitespace, ':' and the letters of true/false/null carry nothing to check.
      index += 1;
    }
  }
}

// The ASCII codes the scanner looks for.
const OPEN_BRACE = 0x7b; // {
const CLOSE_BRACE = 0x7d; // }
const OPEN_BRACKET = 0x5b; // [
const CLOSE_BRACKET = 0x5d; // ]
const COMMA = 0x2c;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const MINUS = 0x2d;

function isDigit(code: number): boolean {
  return code >= 0x30 && code <= 0x39;
}

/** The characters a JSON number token may contain after its first (RFC 8259 §6): digits - + . e E. */
function isNumberPart(code: number): boolean {
  return isDigit(code) || code === MINUS || code === 0x2b || code === 0x2e || code === 0x65 || code === 0x45;
}

/** Index of the quote that closes the JSON string opening at `open` (the text is known-valid JSON). */
function stringEnd(text: string, open: number): number {
  let index = open + 1;
  while (index < text.length) {
    const code = text.charCodeAt(index);
    if (code === BACKSLASH) index += 2;
    else if (code === QUOTE) return index;
    else index += 1;
  }
  return text.length - 1;
}

function duplicateKey(path: string, stack: readonly { key: string | undefined }[], key: string): PolyquantError {
  const quoted = JSON.stringify(key);
  if (stack.length === 1) {
    if (key === METADATA_KEY) return malformed(path, `${METADATA_KEY} appears twice in the header`);
    return malformed(path, 'the tensor appears twice in the header (JSON.parse would silently keep the last entry)', {
      tensor: key,
    });
  }
  const owner = stack[0]?.key;
  if (owner === METADATA_KEY) return malformed(path, `${METADATA_KEY} has the key ${quoted} twice`);
  return malformed(path, `the key ${quoted} appears twice in the tensor's entry`, { tensor: owner });
}

// ---------------------------------------------------------------------------------------------------------
// Writing

/** What the planner needs to know of a tensor: everything but its bytes. */
export interface TensorLayout {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
}

export interface PlannedTensor<T extends TensorLayout> {
  readonly tensor: T;
  readonly byteLength: number;
  /** [begin, end) relative to the start of the data buffer, as written in the header. */
  readonly dataOffsets: readonly [begin: number, end: number];
}

/** The whole layout of a safetensors file, decided before a byte is written (STYLE.md §6). */
export interface SafetensorsPlan<T extends TensorLayout> {
  /** The 8-byte length, the JSON header and its space padding: everything before the data buffer. */
  readonly prefix: Uint8Array;
  readonly headerLength: number;
  readonly dataOffset: number;
  /** Tensors in the order their bytes follow each other in the data buffer. */
  readonly tensors: readonly PlannedTensor<T>[];
  readonly fileSize: number;
}

/**
 * Plans a file the way the crate's `prepare` does: tensors sorted by dtype, descending in the crate's
 * `Dtype` order (so the widest types come first and every tensor starts aligned), then by name in
 * byte order; the header is compact JSON with `__metadata__` first and each entry's fields in
 * `TensorInfo` order, padded with spaces to a multiple of 8. The crate writes metadata keys in HashMap
 * order (random); we sort them so that output is deterministic.
 */
export function planSafetensors<T extends TensorLayout>(
  path: string | undefined,
  tensors: readonly T[],
  metadata?: Readonly<Record<string, string>>,
): SafetensorsPlan<T> {
  const names = new Set<string>();
  const sized = tensors.map((tensor) => {
    checkWritable(path, tensor, names);
    return { tensor, byteLength: checkedByteLength(path, tensor) };
  });
  sized.sort(
    (left, right) =>
      SAFETENSORS_DTYPE_ORDER[right.tensor.dtype] - SAFETENSORS_DTYPE_ORDER[left.tensor.dtype] ||
      compareCodePoints(left.tensor.name, right.tensor.name),
  );

  let offset = 0;
  const planned = sized.map(({ tensor, byteLength }): PlannedTensor<T> => {
    const dataOffsets: [number, number] = [offset, offset + byteLength];
    offset += byteLength;
    if (!Number.isSafeInteger(offset)) {
      throw new PolyquantError(ERROR_CODES.LIMIT, `the tensors add up to more than 2^53 - 1 bytes`, { file: path });
    }
    return { tensor, byteLength, dataOffsets };
  });

  const members: string[] = [];
  if (metadata !== undefined) members.push(`${JSON.stringify(METADATA_KEY)}:${metadataJson(path, metadata)}`);
  for (const { tensor, dataOffsets } of planned) {
    members.push(
      `${JSON.stringify(tensor.name)}:{"dtype":${JSON.stringify(tensor.dtype)},"shape":[${tensor.shape.join(',')}],` +
        `"data_offsets":[${dataOffsets[0]},${dataOffsets[1]}]}`,
    );
  }
  const json = new TextEncoder().encode(`{${members.join(',')}}`);
  const headerLength = Math.ceil(json.length / HEADER_LENGTH_BYTES) * HEADER_LENGTH_BYTES;
  if (headerLength > MAX_HEADER_BYTES) {
    // The crate's serialize refuses this too (HeaderTooLarge): no reader would accept the file.
    throw new PolyquantError(ERROR_CODES.LIMIT, `header would be ${headerLength} bytes, over the ${MAX_HEADER_BYTES}-byte limit`, {
      file: path,
      hint: 'split the tensors over more shards',
    });
  }

  const dataOffset = HEADER_LENGTH_BYTES + headerLength;
  const prefix = new Uint8Array(dataOffset).fill(0x20, HEADER_LENGTH_BYTES + json.length);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(headerLength), true);
  prefix.set(json, HEADER_LENGTH_BYTES);
  return { prefix, headerLength, dataOffset, tensors: planned, fileSize: dataOffset + offset };
}

/**
 * Writes a safetensors file atomically (temp name, renamed at the end) and deterministically. Each tensor's
 * chunks stream straight to the file, one at a time; a tensor whose chunks do not add up to exactly
 * elements × dtype bytes fails the write, naming the tensor, and leaves no file behind.
 */
export async function writeSafetensors(
  path: string,
  tensors: readonly TensorToWrite[],
  metadata?: Record<string, string>,
): Promise<{ bytes: number }> {
  const plan = planSafetensors(path, tensors, metadata);
  await writeAtomically(path, async (file) => {
    await file.write(plan.prefix);
    for (const { tensor, byteLength } of plan.tensors) {
      let written = 0;
      for await (const chunk of tensor.chunks()) {
        // Checked before writing, so a runaway source cannot grow the file past the plan.
        if (written + chunk.length > byteLength) {
          throw byteCountMismatch(path, tensor, byteLength, `more than ${byteLength}`);
        }
        await file.write(chunk);
        written += chunk.length;
      }
      if (written !== byteLength) throw byteCountMismatch(path, tensor, byteLength, `only ${written}`);
    }
    if (file.bytesWritten !== plan.fileSize) {
      throw new PolyquantError(ERROR_CODES.IO, `wrote ${file.bytesWritten} bytes but planned ${plan.fileSize}`, { file: path });
    }
  });
  return { bytes: plan.fileSize };
}

/** A tensor with its bytes in memory, for encodeSafetensors. */
export interface TensorBytes extends TensorLayout {
  readonly data: Uint8Array;
}

/** The bytes writeSafetensors would write for these tensors, in memory (test fixtures, small files). */
export function encodeSafetensors(tensors: readonly TensorBytes[], metadata?: Record<string, string>): Uint8Array {
  const plan = planSafetensors(undefined, tensors, metadata);
  const out = new Uint8Array(plan.fileSize);
  out.set(plan.prefix, 0);
  for (const { tensor, byteLength, dataOffsets } of plan.tensors) {
    if (tensor.data.length !== byteLength) {
      throw byteCountMismatch(undefined, tensor, byteLength, `${tensor.data.length}`);
    }
    out.set(tensor.data, plan.dataOffset + dataOffsets[0]);
  }
  return out;
}

function byteCountMismatch(path: string | undefined, tensor: TensorLayout, expected: number, got: string): PolyquantError {
  return new PolyquantError(
    ERROR_CODES.MALFORMED,
    `the tensor's data holds ${got} bytes but shape [${tensor.shape.join(', ')}] of ${tensor.dtype} needs exactly ${expected}`,
    { file: path, tensor: tensor.name },
  );
}

/** Refuses writer input that would make a file our own reader (or the crate) rejects. */
function checkWritable(path: string | undefined, tensor: TensorLayout, names: Set<string>): void {
  const fail = (detail: string): PolyquantError =>
    new PolyquantError(ERROR_CODES.USAGE, detail, { file: path, tensor: tensor.name });
  if (typeof tensor.name !== 'string' || tensor.name === '') throw fail('a tensor to write has an empty name');
  if (tensor.name === METADATA_KEY) throw fail(`${METADATA_KEY} is reserved for the metadata and cannot name a tensor`);
  if (hasLoneSurrogate(tensor.name)) throw fail('the tensor name holds an unpaired UTF-16 surrogate, which UTF-8 cannot encode');
  if (names.has(tensor.name)) throw fail('two tensors to write have this name');
  names.add(tensor.name);
  if (!isDType(tensor.dtype)) {
    throw fail(`dtype ${JSON.stringify(tensor.dtype)} is not supported; supported dtypes: ${DTYPE_NAMES.join(', ')}`);
  }
  if (!Array.isArray(tensor.shape) || tensor.shape.length > MAX_RANK) {
    throw fail(`shape must be an array of at most ${MAX_RANK} dimensions`);
  }
  for (const dim of tensor.shape) {
    if (!Number.isSafeInteger(dim) || dim < 0) throw fail(`shape [${tensor.shape.join(', ')}] holds ${dim}, not a non-negative integer`);
  }
}

function checkedByteLength(path: string | undefined, tensor: TensorLayout): number {
  const bytes = elementCountBig(tensor.shape) * BigInt(DTYPES[tensor.dtype].bytes);
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new PolyquantError(ERROR_CODES.LIMIT, `shape [${tensor.shape.join(', ')}] of ${tensor.dtype} is ${bytes} bytes, over 2^53 - 1`, {
      file: path,
      tensor: tensor.name,
    });
  }
  return Number(bytes);
}

function metadataJson(path: string | undefined, metadata: Readonly<Record<string, string>>): string {
  if (!isPlainObject(metadata)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `${METADATA_KEY} must be an object of strings`, { file: path });
  }
  const keys = Object.keys(metadata).sort(compareCodePoints);
  const members = keys.map((key) => {
    const value = metadata[key];
    if (typeof value !== 'string' || hasLoneSurrogate(key) || hasLoneSurrogate(value)) {
      throw new PolyquantError(ERROR_CODES.USAGE, `${METADATA_KEY} key ${JSON.stringify(key)} must map to a well-formed string`, {
        file: path,
      });
    }
    return `${JSON.stringify(key)}:${JSON.stringify(value)}`;
  });
  return `{${members.join(',')}}`;
}

// ---------------------------------------------------------------------------------------------------------
// Helpers

/**
 * Orders strings by code point, which is the UTF-8 byte order Rust's `String: Ord` uses. JS `<` compares
 * UTF-16 units, which disagrees when an astral character meets one in U+E000..U+FFFF.
 */
export function compareCodePoints(left: string, right: string): number {
  const length = Math.min(left.length, right.length);
  for (let index = 0; index < length; index += 1) {
    if (left.charCodeAt(index) !== right.charCodeAt(index)) {
      return (left.codePointAt(index) ?? 0) - (right.codePointAt(index) ?? 0);
    }
  }
  return left.length - right.length;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** In a `u` regex a well-formed pair is one code point, so this only matches unpaired surrogates. */
function hasLoneSurrogate(text: string): boolean {
  return /[\uD800-\uDFFF]/u.test(text);
}

/**
 * A short description of an arbitrary JSON value for an error message. Never stringifies arrays or objects:
 * hostile nesting would overflow JSON.stringify's recursion and the message would be unbounded.
 */
function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return `an array of ${value.length} items`;
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'string') {
    const shown = value.length > 64 ? `${value.slice(0, 64)}…` : value;
    return `the string ${JSON.stringify(shown)}`;
  }
  return String(value);
}
