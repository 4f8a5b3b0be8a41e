/**
 * The MLC tensor cache manifest (`tensor-cache.json`, formerly `ndarray-cache.json`; specs/webgpu.md §1.2):
 * parsing and validation of the JSON into a typed manifest, and the lookups a runtime needs. This module
 * has no Node imports (only errors.ts), so the WGSL runtime and the browser page parse manifests with the
 * same code as `inspect` and the converter's tests; file checks (shards exist, sizes, hashes) live in
 * read.ts.
 *
 * Checks, in an order where each guards the next (STYLE.md §8): UTF-8, then JSON, then the top-level object
 * and its `records` list; per shard `dataPath` (a plain file name, unique), `format` "raw-shard", `nbytes`,
 * the optional `md5sum` / `sha256` (hex of the right length); per record `name` (non-empty, unique in the
 * whole cache), `shape` (safe non-negative integers, rank ≤ MAX_TENSOR_CACHE_RANK, element count a safe
 * integer, checked in bigint), `dtype` (a TVM dtype of TENSOR_CACHE_DTYPE_BYTES), `format` ("raw" or
 * "f32-to-bf16"), `nbytes` = elements × dtype size (halved for f32-to-bf16 float32, which is stored as
 * bf16), `byteOffset` with byteOffset + nbytes ≤ the shard's nbytes, and no two records of a shard
 * overlapping. Gaps between records are allowed (a writer may pad offsets to 256 bytes, specs/webgpu.md
 * §4.4) and reported as warnings. Bad bytes only ever produce a PolyquantError naming the file, the record
 * and the value.
 *
 * Unknown keys are ignored, as every MLC reader ignores them (polyquant adds a per-shard `sha256`).
 */
import { ERROR_CODES, PolyquantError } from '../../errors.js';

/** The manifest's name in current MLC readers (tvm `fetchTensorCache`, `tvmjs.py`, the C++ loader). */
export const TENSOR_CACHE_FILE = 'tensor-cache.json';
/** Its name before mlc-llm PR #3326 (Sept 2025), which older WebLLM builds still open. */
export const LEGACY_TENSOR_CACHE_FILE = 'ndarray-cache.json';
/** The twin the dumper writes when some float32 tensor was bf16-encoded: those records as bfloat16 raw. */
export const TENSOR_CACHE_B16_FILE = 'tensor-cache-b16.json';

/** Tensors of more dimensions are refused: no MLC model has one, and it bounds the size arithmetic. */
export const MAX_TENSOR_CACHE_RANK = 8;

/**
 * Bytes per element of the TVM dtype strings a tensor cache may hold (tvm DataType; the float8 types of
 * MLC's fp8 presets). Other dtypes are UNSUPPORTED.
 */
export const TENSOR_CACHE_DTYPE_BYTES: Readonly<Record<string, number>> = {
  bool: 1,
  int8: 1,
  uint8: 1,
  int16: 2,
  uint16: 2,
  int32: 4,
  uint32: 4,
  int64: 8,
  uint64: 8,
  float16: 2,
  bfloat16: 2,
  float32: 4,
  float64: 8,
  float8_e4m3fn: 1,
  float8_e5m2: 1,
};

/** A record's `format`: raw bytes, or float32 stored as its upper 16 bits (bf16). */
export type TensorCacheRecordFormat = 'raw' | 'f32-to-bf16';

export interface TensorCacheRecord {
  readonly name: string;
  readonly shape: readonly number[];
  /** A key of TENSOR_CACHE_DTYPE_BYTES. */
  readonly dtype: string;
  readonly format: TensorCacheRecordFormat;
  /** Bytes on disk. */
  readonly nbytes: number;
  /** Offset in its shard. */
  readonly byteOffset: number;
  /** Derived: the index of its shard in `TensorCacheManifest.shards`, and that shard's file. */
  readonly shard: number;
  readonly dataPath: string;
  /** Derived: the product of the shape. */
  readonly elements: number;
  /** Derived: float32 stored as bf16 (`f32-to-bf16`); expand each uint16 `b` as the float32 bits `b << 16`. */
  readonly bf16Encoded: boolean;
}

export interface TensorCacheShard {
  /** A plain file name beside the manifest (`params_shard_0.bin`). */
  readonly dataPath: string;
  readonly format: 'raw-shard';
  /** The file's size. */
  readonly nbytes: number;
  /** In manifest order. */
  readonly records: readonly TensorCacheRecord[];
  /** Lower-case hex, when the manifest has them (MLC writes md5sum; polyquant adds sha256). */
  readonly md5sum: string | undefined;
  readonly sha256: string | undefined;
}

export interface TensorCacheManifest {
  /** Free-form; mlc_llm convert_weight writes ParamSize, ParamBytes and BitsPerParam. */
  readonly metadata: Readonly<Record<string, unknown>>;
  /** In file-counter order, as listed. */
  readonly shards: readonly TensorCacheShard[];
  /** Every record of every shard, in manifest order. */
  readonly records: readonly TensorCacheRecord[];
  /** Things that load but deserve a look (gaps between records, a ParamSize that is not the record count). */
  readonly warnings: readonly string[];
}

/** Shard file names must be plain names beside the manifest: no paths, no traversal. */
const PLAIN_FILE_NAME = /^(?!\.\.?$)[^/\\\0]+$/;
const MD5_HEX = /^[0-9a-f]{32}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function describe(value: unknown): string {
  const text = JSON.stringify(value);
  if (text === undefined) return String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/**
 * Parses and validates a tensor cache manifest from its bytes or text (see the module comment). `file`
 * names it in errors.
 */
export function parseTensorCacheJson(source: Uint8Array | string, file: string = TENSOR_CACHE_FILE): TensorCacheManifest {
  let text: string;
  if (typeof source === 'string') {
    text = source;
  } else {
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(source);
    } catch {
      throw new PolyquantError(ERROR_CODES.MALFORMED, 'the manifest is not valid UTF-8', { file });
    }
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new PolyquantError(ERROR_CODES.MALFORMED, `the manifest is not valid JSON: ${error instanceof Error ? error.message : String(error)}`, { file });
  }
  return parseTensorCache(value, file);
}

/** Validates an already parsed manifest object (see the module comment). */
export function parseTensorCache(value: unknown, file: string = TENSOR_CACHE_FILE): TensorCacheManifest {
  try {
    return validateManifest(value, file);
  } catch (error) {
    if (error instanceof PolyquantError) throw error;
    // A check that missed a case must still surface as our error type (STYLE.md §9).
    throw new PolyquantError(ERROR_CODES.MALFORMED, `the manifest is not valid: ${error instanceof Error ? error.message : String(error)}`, { file, cause: error });
  }
}

function validateManifest(value: unknown, file: string): TensorCacheManifest {
  const fail = (detail: string, tensor?: string, code: (typeof ERROR_CODES)[keyof typeof ERROR_CODES] = ERROR_CODES.MALFORMED): never => {
    throw new PolyquantError(code, detail, { file, tensor });
  };
  if (!isObject(value)) fail(`the manifest is ${describe(value)}; expected a JSON object with "metadata" and "records"`);
  const top = value as JsonObject;
  const metadata = top['metadata'] ?? {};
  if (!isObject(metadata)) fail(`"metadata" is ${describe(metadata)}; expected an object`);
  const list = top['records'];
  if (!Array.isArray(list)) fail(`"records" is ${describe(list)}; expected the list of shards`);

  const shards: TensorCacheShard[] = [];
  const records: TensorCacheRecord[] = [];
  const warnings: string[] = [];
  const names = new Set<string>();
  const paths = new Set<string>();
  for (const [shardIndex, rawShard] of (list as unknown[]).entries()) {
    const where = `records[${shardIndex}]`;
    if (!isObject(rawShard)) fail(`${where} is ${describe(rawShard)}; expected a shard object`);
    const shard = rawShard as JsonObject;
    const dataPath = shard['dataPath'];
    if (typeof dataPath !== 'string' || !PLAIN_FILE_NAME.test(dataPath)) {
      fail(`${where}.dataPath is ${describe(dataPath)}; expected a plain file name beside the manifest (params_shard_N.bin)`);
    }
    const path = dataPath as string;
    if (paths.has(path)) fail(`${where}.dataPath ${describe(path)} names a shard listed before`);
    paths.add(path);
    const shardWhere = `${where} (${path})`;
    if (shard['format'] !== 'raw-shard') fail(`${shardWhere}.format is ${describe(shard['format'])}; expected "raw-shard"`);
    const shardBytes = shard['nbytes'];
    if (!isCount(shardBytes)) fail(`${shardWhere}.nbytes is ${describe(shardBytes)}; expected a non-negative safe integer`);
    const md5sum = optionalHex(shard['md5sum'], MD5_HEX, `${shardWhere}.md5sum`, 32, fail);
    const sha256 = optionalHex(shard['sha256'], SHA256_HEX, `${shardWhere}.sha256`, 64, fail);
    const rawRecords = shard['records'];
    if (!Array.isArray(rawRecords)) fail(`${shardWhere}.records is ${describe(rawRecords)}; expected a list of tensor records`);
    const shardRecords: TensorCacheRecord[] = [];
    for (const [recordIndex, rawRecord] of (rawRecords as unknown[]).entries()) {
      const record = validateRecord(rawRecord, `${shardWhere}.records[${recordIndex}]`, shardIndex, path, shardBytes as number, fail);
      if (names.has(record.name)) fail(`${shardWhere}.records[${recordIndex}]: the name appears twice in the cache`, record.name);
      names.add(record.name);
      shardRecords.push(record);
    }
    checkOverlaps(shardRecords, shardWhere, shardBytes as number, warnings, fail);
    shards.push({ dataPath: path, format: 'raw-shard', nbytes: shardBytes as number, records: shardRecords, md5sum, sha256 });
    records.push(...shardRecords);
  }
  const paramSize = (metadata as JsonObject)['ParamSize'];
  if (typeof paramSize === 'number' && paramSize !== records.length) {
    warnings.push(`metadata.ParamSize is ${paramSize} but the manifest has ${records.length} records`);
  }
  return { metadata: metadata as JsonObject, shards, records, warnings };
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function optionalHex(value: unknown, pattern: RegExp, where: string, digits: number, fail: (detail: string) => never): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !pattern.test(value.toLowerCase())) fail(`${where} is ${describe(value)}; expected ${digits} hex digits`);
  return (value as string).toLowerCase();
}

function validateRecord(
  raw: unknown,
  where: string,
  shard: number,
  dataPath: string,
  shardBytes: number,
  fail: (detail: string, tensor?: string, code?: (typeof ERROR_CODES)[keyof typeof ERROR_CODES]) => never,
): TensorCacheRecord {
  if (!isObject(raw)) fail(`${where} is ${describe(raw)}; expected a tensor record`);
  const record = raw as JsonObject;
  const name = record['name'];
  if (typeof name !== 'string' || name === '') fail(`${where}.name is ${describe(name)}; expected a non-empty string`);
  const tensor = name as string;
  const shape = record['shape'];
  if (!Array.isArray(shape) || shape.length > MAX_TENSOR_CACHE_RANK || !shape.every(isCount)) {
    fail(`${where}.shape is ${describe(shape)}; expected a list of at most ${MAX_TENSOR_CACHE_RANK} non-negative safe integers`, tensor);
  }
  const dims = shape as number[];
  const elementsBig = dims.reduce((product, dim) => product * BigInt(dim), 1n);
  if (elementsBig > BigInt(Number.MAX_SAFE_INTEGER)) fail(`${where}.shape [${dims.join(', ')}] has ${elementsBig} elements, past the safe integer range`, tensor);
  const elements = Number(elementsBig);
  const dtype = record['dtype'];
  if (typeof dtype !== 'string') fail(`${where}.dtype is ${describe(dtype)}; expected a TVM dtype string`, tensor);
  const size = Object.hasOwn(TENSOR_CACHE_DTYPE_BYTES, dtype as string) ? TENSOR_CACHE_DTYPE_BYTES[dtype as string] : undefined;
  if (size === undefined) {
    fail(`${where}.dtype ${describe(dtype)} is not one polyquant reads (${Object.keys(TENSOR_CACHE_DTYPE_BYTES).join(', ')})`, tensor, ERROR_CODES.UNSUPPORTED);
  }
  const format = record['format'];
  if (format !== 'raw' && format !== 'f32-to-bf16') fail(`${where}.format is ${describe(format)}; expected "raw" or "f32-to-bf16"`, tensor);
  const bf16Encoded = format === 'f32-to-bf16' && dtype === 'float32';
  const storedSize = bf16Encoded ? 2 : (size as number);
  const nbytes = record['nbytes'];
  if (!isCount(nbytes)) fail(`${where}.nbytes is ${describe(nbytes)}; expected a non-negative safe integer`, tensor);
  // elements × size is below 2^56: exact in a double.
  if (nbytes !== elements * storedSize) {
    fail(
      `${where}.nbytes is ${nbytes}, but shape [${dims.join(', ')}] of ${dtype}${bf16Encoded ? ' stored as bf16 (f32-to-bf16)' : ''} takes ${elements} × ${storedSize} = ${elements * storedSize} bytes`,
      tensor,
    );
  }
  const byteOffset = record['byteOffset'];
  if (!isCount(byteOffset)) fail(`${where}.byteOffset is ${describe(byteOffset)}; expected a non-negative safe integer`, tensor);
  if ((byteOffset as number) + (nbytes as number) > shardBytes) {
    fail(`${where}: bytes ${byteOffset}..${(byteOffset as number) + (nbytes as number)} run past the end of the shard (${shardBytes} bytes)`, tensor);
  }
  return {
    name: tensor,
    shape: dims,
    dtype: dtype as string,
    format: format as TensorCacheRecordFormat,
    nbytes: nbytes as number,
    byteOffset: byteOffset as number,
    shard,
    dataPath,
    elements,
    bf16Encoded,
  };
}

/** No two records of a shard may share a byte; gaps and trailing bytes are reported, not refused. */
function checkOverlaps(records: readonly TensorCacheRecord[], where: string, shardBytes: number, warnings: string[], fail: (detail: string, tensor?: string) => never): void {
  const sorted = [...records].sort((a, b) => a.byteOffset - b.byteOffset || a.nbytes - b.nbytes);
  let end = 0;
  let previous: TensorCacheRecord | undefined;
  let gaps = 0;
  for (const record of sorted) {
    if (record.byteOffset < end && record.nbytes > 0) {
      fail(`${where}: bytes ${record.byteOffset}..${record.byteOffset + record.nbytes} overlap ${JSON.stringify(previous?.name)} (which ends at ${end})`, record.name);
    }
    if (record.byteOffset > end) gaps += record.byteOffset - end;
    if (record.byteOffset + record.nbytes >= end) {
      end = record.byteOffset + record.nbytes;
      previous = record;
    }
  }
  const unused = gaps + (shardBytes - end);
  if (unused > 0) warnings.push(`${where}: ${unused} of ${shardBytes} bytes belong to no record (padding or a stale writer)`);
}

// =============================================================================================== lookups

/** Every record by name (names are unique in a valid manifest). */
export function tensorCacheRecordMap(manifest: TensorCacheManifest): ReadonlyMap<string, TensorCacheRecord> {
  return new Map(manifest.records.map((record) => [record.name, record]));
}

/** Where a model parameter is stored: MLC's quantized pair, or the tensor itself. */
export type StoredWeight =
  | { readonly kind: 'group-quant'; readonly qWeight: TensorCacheRecord; readonly qScale: TensorCacheRecord }
  | { readonly kind: 'no-quant'; readonly weight: TensorCacheRecord };

/**
 * The records of a model parameter named as in the HF checkpoint (and MLC's model: `gpt_neox.embed_in.weight`,
 * `gpt_neox.layers.0.attention.query_key_value.bias`, `embed_out.weight`): a `….weight` quantized by a group
 * layout is the pair `….q_weight` + `….q_scale` (MLC's `quant_map.param_map`); anything else is stored under
 * its own name. Throws NOT_FOUND naming the parameter when the manifest has neither.
 */
export function storedWeight(records: ReadonlyMap<string, TensorCacheRecord>, name: string, file: string = TENSOR_CACHE_FILE): StoredWeight {
  if (name.endsWith('.weight')) {
    const base = name.slice(0, -'.weight'.length);
    const qWeight = records.get(`${base}.q_weight`);
    const qScale = records.get(`${base}.q_scale`);
    if (qWeight !== undefined && qScale !== undefined) return { kind: 'group-quant', qWeight, qScale };
    if ((qWeight === undefined) !== (qScale === undefined)) {
      throw new PolyquantError(ERROR_CODES.MALFORMED, `the manifest has ${base}.${qWeight === undefined ? 'q_scale' : 'q_weight'} without its ${qWeight === undefined ? 'q_weight' : 'q_scale'}`, { file, tensor: name });
    }
  }
  const weight = records.get(name);
  if (weight !== undefined) return { kind: 'no-quant', weight };
  throw new PolyquantError(ERROR_CODES.NOT_FOUND, 'the manifest has no record of this parameter', {
    file,
    tensor: name,
    hint: name.endsWith('.weight') ? `looked for ${name} and ${name.slice(0, -'.weight'.length)}.q_weight / .q_scale` : undefined,
  });
}

/** storedWeight for each of `names`, in that order, as a map. */
export function storedWeights(manifest: TensorCacheManifest, names: readonly string[], file: string = TENSOR_CACHE_FILE): Map<string, StoredWeight> {
  const records = tensorCacheRecordMap(manifest);
  return new Map(names.map((name) => [name, storedWeight(records, name, file)]));
}

/**
 * A record's bytes inside its shard's bytes (what tvm's `getTensorCacheRecordBytes` slices), checked: a
 * shard shorter than the manifest says (a truncated download) is MALFORMED naming the shard.
 */
export function tensorCacheRecordBytes(shard: Uint8Array, record: TensorCacheRecord): Uint8Array {
  if (record.byteOffset + record.nbytes > shard.length) {
    throw new PolyquantError(
      ERROR_CODES.MALFORMED,
      `the shard has ${shard.length} bytes; the record needs bytes ${record.byteOffset}..${record.byteOffset + record.nbytes}`,
      { file: record.dataPath, tensor: record.name, hint: 'the shard is truncated; fetch it again' },
    );
  }
  return shard.subarray(record.byteOffset, record.byteOffset + record.nbytes);
}

/** bf16 bits (an `f32-to-bf16` record's bytes, little-endian uint16) → float32, as tvm's `ArrayDecodeStorage`. */
export function expandBf16(bytes: Uint8Array, out: Float32Array = new Float32Array(bytes.length >> 1)): Float32Array {
  const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  const count = Math.min(out.length, bytes.length >> 1);
  for (let i = 0; i < count; i++) bits[i] = ((bytes[2 * i] as number) | ((bytes[2 * i + 1] as number) << 8)) << 16;
  return out;
}
