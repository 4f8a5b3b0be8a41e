/**
 * GGUF → GGUF, as llama-quantize does it (src/llama-quant.cpp `llama_model_quantize_impl` of the
 * node-llama-cpp 3.21.1 bundle): the input's KVs are copied in order, general.quantization_version and
 * general.file_type set last (gguf_set_val_* removes and re-appends a key), then the quantize.imatrix.*
 * keys; split.* keys are dropped. Tensors go in llama-quantize's order (weight_name_comparer), each
 * getting the type quant/policy.ts gives it — the same rules, options and counters as llama-quantize.
 * A tensor whose type does not change is copied byte for byte; the others are widened (F16, BF16) or
 * dequantized (already-quantized tensors, only with allowRequantize, as `--allow-requantize`) to float32
 * and quantized by the worker pool. Rows stream in chunks, so memory does not grow with the model.
 *
 * From an f32/f16/bf16 file the output is byte-identical to llama-quantize's with the same options; from
 * our own f16 file of an f16 checkpoint, to a direct HF conversion (f16 → f32 widening is exact).
 */
import { stat } from 'node:fs/promises';
import { extname, resolve } from 'node:path';
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import { SyncFileReader, withFile } from '../../io/file.js';
import { checkOutputFile, refuseOverwritingInputs } from '../../io/output.js';
import { acquireScratch, releaseScratch } from '../../io/scratch.js';
import { dequantizeRows } from '../../quant/api.js';
import { GGML_TYPES, type GgmlTypeName } from '../../quant/ggml-types.js';
import { planTensorTypes, requireGgufFileType } from '../../quant/policy.js';
import { QuantPool, type RowChunk } from '../../quant/pool.js';
import type { DType } from '../../tensor/dtype.js';
import { type StoredRows, widenRows } from '../../tensor/widen.js';
import type { ConvertToGgufOptions, GgufConversionPlan, GgufPlannedTensor } from './convert.js';
import {
  GGUF_ALIGNMENT,
  GGUF_MAGIC,
  type GgufHeader,
  type GgufKV,
  type GgufScalar,
  type GgufScalarType,
  planGguf,
  readGgufHeader,
} from './format.js';
import { CHUNK_ELEMENTS, checkImatrix, checkTypeChoices, closingKvs, measureErrors, typeOverridesOf, writeGgufThroughPool } from './llama-quantize-options.js';
import { compareLlamaQuantizeOrder } from './names.js';

/** The architecture whose llama-quantize rules quant/policy.ts implements. */
const REQUANTIZE_ARCHITECTURE = 'gptneox';
/** Keys llama-quantize removes from the copy (llama-quant.cpp: "Remove split metadata"). */
const SPLIT_KEYS = ['split.no', 'split.count', 'split.tensors.count'];
/** The float types that widen to float32 exactly, as tensor/widen.ts names them. */
const FLOAT_DTYPES: Partial<Record<GgmlTypeName, DType>> = { F32: 'F32', F16: 'F16', BF16: 'BF16' };

/** Whether `path` is a GGUF file to requantize (a file named *.gguf, or any file with the GGUF magic). */
export async function isGgufInput(path: string): Promise<boolean> {
  const info = await stat(path).catch(() => undefined);
  if (info === undefined || !info.isFile()) return false;
  if (extname(path).toLowerCase() === '.gguf') return true;
  if (info.size < 4) return false;
  const magic = await withFile(path, (file) => file.read(0, 4)).catch(() => undefined);
  return magic !== undefined && new TextDecoder().decode(magic) === GGUF_MAGIC;
}

interface RequantizeJob {
  readonly name: string;
  readonly ne: readonly number[];
  readonly type: GgmlTypeName;
  readonly sourceType: GgmlTypeName;
  /** Absolute offset of the tensor's data in the input file. */
  readonly at: number;
  readonly sourceBytes: number;
}

/** Requantizes the GGUF file `input` (see the module comment); convertToGguf calls this for a GGUF input. */
export async function requantizeGguf(input: string, options: ConvertToGgufOptions): Promise<GgufConversionPlan> {
  const path = resolve(input);
  const fileType = requireGgufFileType(options.type);
  const overrides = typeOverridesOf(options);
  refuseFolderOptions(options, path);
  if (options.error && !options.dryRun) {
    throw new PolyquantError(ERROR_CODES.USAGE, 'quantization error is measured in a dry run', { hint: 'add --dry-run to --error' });
  }
  if (!options.dryRun && (options.out === undefined || options.out === '')) {
    throw new PolyquantError(ERROR_CODES.USAGE, 'no output path given for the GGUF file', { hint: 'pass out, or dryRun to only plan' });
  }
  const output = options.dryRun ? undefined : await checkOutputFile(options.out as string, '--out');
  if (output !== undefined) await refuseOverwritingInputs([output], [path, ...(options.inputFiles ?? [])]);
  const header = await withFile(path, (file) => readGgufHeader(path, file.size, (n) => file.read(0, n)));
  const numLayers = checkInput(header, path);

  const tensors = [...header.tensors].sort((a, b) => compareLlamaQuantizeOrder(a.name, b.name));
  const warnings: string[] = [];
  const model = { numLayers, tiedEmbeddings: !tensors.some((tensor) => tensor.name === 'output.weight'), imatrix: options.imatrix !== undefined };
  const choices = planTensorTypes(fileType, tensors, model, overrides);
  checkTypeChoices(fileType, tensors, choices, overrides, options, warnings);
  const jobs: RequantizeJob[] = tensors.map((tensor, index) => ({
    name: tensor.name,
    ne: tensor.ne,
    type: choices[index]?.type ?? tensor.type,
    sourceType: tensor.type,
    at: header.dataStart + tensor.offset,
    sourceBytes: tensor.bytes,
  }));
  checkRequantizing(jobs, options, path, warnings);
  if (options.imatrix !== undefined) checkImatrix(options.imatrix, jobs, warnings);

  const closing = closingKvs(fileType, options.imatrix === undefined ? undefined : options.imatrixProvenance);
  const dropped = new Set([...SPLIT_KEYS, ...closing.map((kv) => kv.key)]);
  const kvs: GgufKV[] = [
    ...[...header.kvs].flatMap(([key, kv]): GgufKV[] =>
      dropped.has(key) ? [] : [{ key, type: kv.type as GgufScalarType, value: kv.value as GgufScalar | GgufScalar[], array: Array.isArray(kv.value), copied: true }],
    ),
    ...closing,
  ];
  const layout = planGguf(kvs, jobs);
  const plan: GgufConversionPlan = {
    input: path,
    inputFormat: 'gguf',
    fileType,
    fileTypeId: (closing[1] as GgufKV).value as number,
    tensors: layout.tensors.map((planned, index) => ({
      source: planned.name,
      sourceType: (jobs[index] as RequantizeJob).sourceType,
      name: planned.name,
      type: planned.type,
      ne: planned.ne,
      bytes: planned.bytes,
      offset: planned.offset,
    })),
    kvs,
    dataStart: layout.dataStart,
    fileBytes: layout.fileBytes,
    out: options.dryRun ? undefined : options.out,
    warnings,
  };
  if (options.dryRun) {
    if (!options.error) return plan;
    const floats = (index: number) => floatChunks(path, jobs[index] as RequantizeJob);
    const unchanged = (index: number) => (jobs[index] as RequantizeJob).type === (jobs[index] as RequantizeJob).sourceType;
    return { ...plan, tensors: await measureErrors<GgufPlannedTensor>(plan.tensors, floats, { ...options, unchanged }) };
  }

  const needsPool = jobs.some((job) => job.type !== job.sourceType && job.type !== 'F32');
  const pool = new QuantPool({ workers: needsPool ? options.workers : 0 });
  const total = plan.tensors.reduce((sum, tensor) => sum + tensor.bytes, 0);
  const encode = (job: RequantizeJob): AsyncIterable<Uint8Array> => encodeTensor(path, job, pool, options.imatrix?.get(job.name));
  await writeGgufThroughPool(options.out as string, kvs, jobs, pool, encode, total, options.onProgress);
  return plan;
}

/** Options that describe an HF folder have no meaning for a GGUF input; passing one is a mistake worth naming. */
function refuseFolderOptions(options: ConvertToGgufOptions, path: string): void {
  const given = [
    ...(options.weights !== undefined && options.weights !== 'auto' ? ['--weights'] : []),
    ...(options.dropExtraLayers ? ['--drop-extra-layers'] : []),
    ...(options.name !== undefined ? ['name'] : []),
    ...(options.license !== undefined ? ['license'] : []),
    ...(options.sourceUrl !== undefined ? ['sourceUrl'] : []),
  ];
  if (given.length > 0) {
    throw new PolyquantError(ERROR_CODES.USAGE, `${given.join(', ')} appl${given.length === 1 ? 'ies' : 'y'} to an HF model folder, not to a GGUF input`, {
      file: path,
      hint: 'a GGUF keeps its own metadata; leave these out when requantizing',
    });
  }
}

/** The checks llama-quantize's loader makes that polyquant's writer relies on; returns the block count. */
function checkInput(header: GgufHeader, path: string): number {
  const architecture = header.kvs.get('general.architecture')?.value;
  if (architecture !== REQUANTIZE_ARCHITECTURE) {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `general.architecture is ${JSON.stringify(architecture ?? null)}; polyquant requantizes ${REQUANTIZE_ARCHITECTURE} files only`, {
      file: path,
      hint: "its tensor-type rules are llama-quantize's for GPT-NeoX; use llama-quantize for other architectures",
    });
  }
  const splits = header.kvs.get('split.count')?.value;
  if (typeof splits === 'number' && splits > 1) {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `this file is one of ${splits} split parts; polyquant requantizes single-file GGUFs`, {
      file: path,
      hint: 'merge the parts first (llama-gguf-split --merge)',
    });
  }
  if (header.alignment !== GGUF_ALIGNMENT) {
    // llama-quantize copies general.alignment but pads with 32 bytes (GGUF_DEFAULT_ALIGNMENT); so does our writer.
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `general.alignment is ${header.alignment}; polyquant writes GGUFs aligned to ${GGUF_ALIGNMENT} bytes`, {
      file: path,
    });
  }
  const blocks = header.kvs.get(`${REQUANTIZE_ARCHITECTURE}.block_count`)?.value;
  if (typeof blocks !== 'number' || !Number.isSafeInteger(blocks) || blocks < 1) {
    throw new PolyquantError(ERROR_CODES.MALFORMED, `${REQUANTIZE_ARCHITECTURE}.block_count is ${JSON.stringify(blocks ?? null)}, not a positive integer`, {
      file: path,
    });
  }
  return blocks;
}

/**
 * llama-quantize refuses to requantize a quantized tensor ("requantizing from type … is disabled") unless
 * --allow-requantize; it copies one whose type does not change. Refused here before any work, with every
 * such tensor counted; allowed, it is said in a warning.
 */
function checkRequantizing(jobs: readonly RequantizeJob[], options: ConvertToGgufOptions, path: string, warnings: string[]): void {
  const requantized = jobs.filter((job) => job.type !== job.sourceType && GGML_TYPES[job.sourceType].blockElements > 1);
  if (requantized.length === 0) return;
  const first = requantized[0] as RequantizeJob;
  const kinds = [...new Set(requantized.map((job) => `${job.sourceType} → ${job.type}`))].join(', ');
  if (!options.allowRequantize) {
    throw new PolyquantError(
      ERROR_CODES.USAGE,
      `${requantized.length} tensor(s) are already quantized and would be quantized again (${kinds}; first ${first.name}): the rounding errors of both add up`,
      { file: path, hint: 'convert from the f16/bf16/f32 GGUF or the HF folder instead, or accept the loss with --allow-requantize, as llama-quantize does' },
    );
  }
  warnings.push(`${requantized.length} tensor(s) were dequantized and quantized again (${kinds}): quality is lower than quantizing from f16 or the HF folder`);
}

/** Whole rows of a tensor's stored bytes, `rowsPerChunk` at a time, in fresh buffers unless `reuse`. */
async function* storedChunks(path: string, job: RequantizeJob, reuse: boolean, allocate?: (bytes: number) => Uint8Array): AsyncIterable<Uint8Array> {
  const rowLength = job.ne[0] ?? 1;
  const info = GGML_TYPES[job.sourceType];
  const rowBytes = (rowLength / info.blockElements) * info.blockBytes;
  const rows = job.sourceBytes / rowBytes;
  const rowsPerChunk = Math.max(1, Math.floor(CHUNK_ELEMENTS / rowLength));
  const file = SyncFileReader.open(path);
  const shared = reuse ? acquireScratch(Math.min(rowsPerChunk, rows) * rowBytes) : undefined;
  try {
    for (let row = 0; row < rows; row += rowsPerChunk) {
      const length = Math.min(rowsPerChunk, rows - row) * rowBytes;
      yield file.readInto(job.at + row * rowBytes, length, shared ?? allocate?.(length) ?? new Uint8Array(length));
    }
  } finally {
    if (shared !== undefined) releaseScratch(shared);
    file.close();
  }
}

/** A tensor's rows as the pool takes them: float rows as stored (the workers widen), quantized rows dequantized here. */
async function* sourceRows(path: string, job: RequantizeJob, allocate?: (bytes: number) => Uint8Array): AsyncIterable<RowChunk> {
  const dtype = FLOAT_DTYPES[job.sourceType];
  const rowLength = job.ne[0] ?? 1;
  // Only float rows go to the pool as they are read; quantized ones are dequantized here into fresh arrays.
  for await (const bytes of storedChunks(path, job, false, dtype === undefined ? undefined : allocate)) {
    yield dtype !== undefined ? ({ dtype, bytes } satisfies StoredRows) : dequantizeRows(job.sourceType, bytes, rowLength, { tensor: job.name });
  }
}

/** A tensor's rows as fresh float32 chunks. */
async function* floatChunks(path: string, job: RequantizeJob): AsyncIterable<Float32Array> {
  for await (const chunk of sourceRows(path, job)) yield widenRows(chunk, job.name);
}

/** One tensor's bytes in its output type: copied when the type is unchanged, else converted chunk by chunk. */
function encodeTensor(path: string, job: RequantizeJob, pool: QuantPool, importance: Float32Array | undefined): AsyncIterable<Uint8Array> {
  if (job.type === job.sourceType) return storedChunks(path, job, true);
  if (job.type === 'F32') return asBytes(floatChunks(path, job));
  return pool.quantizeStream({ scheme: job.type, nPerRow: job.ne[0] ?? 1, importance, tensor: job.name }, sourceRows(path, job, (bytes) => pool.buffer(bytes)));
}

async function* asBytes(chunks: AsyncIterable<Float32Array>): AsyncIterable<Uint8Array> {
  for await (const chunk of chunks) yield new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}
