/**
 * HF GPT-NeoX checkpoint → an MLC-style WebGPU folder (specs/webgpu.md §1): `tensor-cache.json` (and its
 * byte-identical `ndarray-cache.json` twin for older WebLLM builds), `params_shard_N.bin` packed by
 * mlc_llm's sharding rule, `mlc-chat-config.json` and the tokenizer files, per requested layout (one type
 * writes the folder itself; several write one sub-folder per type from a single read of the checkpoint).
 *
 * The records and their order are planned first (format.ts); then each source tensor is streamed once, in
 * row chunks, through the quantizer pool (quant/webgpu-layouts.ts `quantizeWebGpuChunk`: every row is
 * quantized on its own, so a chunk's q_weight and q_scale are contiguous runs of the two records), and each
 * part goes by positioned writes to its record's planned offset in its shard. Nothing larger than a chunk
 * per worker is held, whatever the tensor or shard size; bytes do not depend on the worker count (the pool
 * returns chunks in order, and offsets are planned). Shards are hashed (MLC's md5sum, plus sha256) after
 * they are written, then the manifests go out. The folder is built under a temp name and renamed into place
 * (io/output-folder.ts): it appears complete or not at all.
 *
 * float32 storage (`f32Storage`): `raw` (default) writes float32 tensors as they are, `format: "raw"`,
 * which every MLC reader accepts and which keeps q0f32 / q4f32_1 exact; `bf16` reproduces mlc_llm
 * convert_weight's bytes (every record says "f32-to-bf16", float32 tensors stored as bf16, plus the
 * tensor-cache-b16.json twin). q8f32_pq's scales stay raw either way (docs/webgpu-int8-layout.md §6).
 */
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ExpectedTensor } from '../../arch/gpt-neox.js';
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import { ioError, pathExists } from '../../io/file.js';
import { checkFolderOutput, type FolderOwnership, PositionedFiles, writeFolderAtomically } from '../../io/output-folder.js';
import { DEFAULT_GPTQ_DAMPENING, type GptqFactor } from '../../quant/gptq.js';
import { type CalibrationHessian, calibrationFactor, type GptqConvertOptions, isGptqChunkLayout } from '../../quant/gptq-layouts.js';
import { QuantPool } from '../../quant/pool.js';
import {
  f32ToTensorCacheBf16Array,
  isWebGpuLayoutName,
  TENSOR_CACHE_STORAGES,
  type TensorCacheStorage,
  WEBGPU_LAYOUT_NAMES,
  type WebGpuLayoutName,
  webGpuChunkParts,
} from '../../quant/webgpu-layouts.js';
import { type Checkpoint, readCheckpoint, type WeightsPreference } from '../../readers/checkpoint.js';
import type { TensorRef } from '../../readers/tensor-ref.js';
import { summariseTokenizer } from '../../readers/tokenizer.js';
import { DTYPES } from '../../tensor/dtype.js';
import { f32ToF16Array } from '../../tensor/float.js';
import type { StoredRows } from '../../tensor/widen.js';
import { reorderQkvRows } from '../gguf/names.js';
import { readAsF32, storedQkvRowChunks, storedRowChunks } from '../gguf/source-rows.js';
import {
  type ChatConfigTokens,
  MLC_CHAT_CONFIG_FILE,
  MLC_TOKENIZER_FILES,
  mlcChatConfig,
  planWebGpuModel,
  SHARD_CAP_BYTES,
  type ShardHashes,
  tensorCacheJson,
  type WebGpuPlacedRecord,
  type WebGpuPlannedModel,
} from './format.js';
import { LEGACY_TENSOR_CACHE_FILE, TENSOR_CACHE_B16_FILE, TENSOR_CACHE_FILE } from './manifest.js';

/** Float32 elements per chunk read from the checkpoint (4 MiB), as the GGUF and ONNX converters read them. */
export const CHUNK_ELEMENTS = 1 << 20;
/** Smallest shard cap accepted (tests use small caps to exercise the out-of-band rule). */
const MIN_SHARD_CAP_BYTES = 1024;

export interface ConvertToWebGpuOptions {
  /** One or more of q4f16_1, q4f32_1, q0f16, q0f32, q8f16_pq, q8f32_pq. */
  readonly types: readonly string[];
  /** The output folder; required unless `dryRun`. Several types go into one sub-folder each. */
  readonly out?: string | undefined;
  /** Replace an existing output folder (only one holding nothing but files this converter writes). */
  readonly force?: boolean | undefined;
  readonly dryRun?: boolean | undefined;
  readonly weights?: WeightsPreference | undefined;
  /** Quantizer worker threads (0: inline). Default: available parallelism. */
  readonly workers?: number | undefined;
  /** How float32 tensors are stored: `raw` (default) or `bf16` (mlc_llm convert_weight's bytes). */
  readonly f32Storage?: string | undefined;
  /** The shard cap (default 32 MiB, MLC's); smaller for tests of the sharding rule. */
  readonly shardCapBytes?: number | undefined;
  readonly dropExtraLayers?: boolean | undefined;
  /**
   * Calibration Hessians (Σ x xᵀ / count of each matrix's input) by HF tensor name: every group-quantized
   * weight (q4f16_1, q4f32_1, q8f16_pq, q8f32_pq) with one is quantized with GPTQ (quant/gptq-layouts.ts) in
   * the same layout; the rest (the token embedding, a lookup) as without. Rows are independent under GPTQ,
   * so the fused QKV's row reorder does not matter.
   */
  readonly hessians?: ReadonlyMap<string, CalibrationHessian> | undefined;
  /** GPTQ's dampening, with `hessians`; `provenance` goes into the manifest's metadata. */
  readonly gptq?: (GptqConvertOptions & { readonly provenance?: Readonly<Record<string, unknown>> | undefined }) | undefined;
  readonly onProgress?: ((done: number, total: number) => void) | undefined;
}

export interface WebGpuConversionPlan {
  readonly out: string | undefined;
  readonly f32Storage: TensorCacheStorage;
  readonly shardCapBytes: number;
  readonly models: readonly WebGpuPlannedModel[];
  /** HF names of the weights quantized with GPTQ (options.hessians; in every group-quant model); empty when none. */
  readonly calibrated: readonly string[];
  readonly warnings: readonly string[];
}

const FOLDER_FILE = new RegExp(
  `^(${[TENSOR_CACHE_FILE, LEGACY_TENSOR_CACHE_FILE, TENSOR_CACHE_B16_FILE, MLC_CHAT_CONFIG_FILE, ...MLC_TOKENIZER_FILES].map((name) => name.replace(/[.]/g, '\\.')).join('|')}|params_shard_\\d+\\.bin)$`,
);

/** What `--force` may replace: the files this converter writes (in the folder or one sub-folder per type), and nothing else. */
export const WEBGPU_FOLDER_OWNERSHIP: FolderOwnership = {
  writer: 'convert --to webgpu',
  owns: (name, folder) => {
    if (folder) return isWebGpuLayoutName(name);
    const slash = name.indexOf('/');
    if (slash >= 0 && !isWebGpuLayoutName(name.slice(0, slash))) return false;
    return FOLDER_FILE.test(name.slice(slash + 1));
  },
  describe: `${TENSOR_CACHE_FILE}, ${LEGACY_TENSOR_CACHE_FILE}, ${TENSOR_CACHE_B16_FILE}, params_shard_N.bin, ${MLC_CHAT_CONFIG_FILE} and tokenizer files (in one sub-folder per type when several are written)`,
  flag: '--out',
};

function resolveTypes(raw: readonly string[]): WebGpuLayoutName[] {
  if (raw.length === 0) throw new PolyquantError(ERROR_CODES.USAGE, 'no WebGPU type given', { hint: `choose from ${WEBGPU_LAYOUT_NAMES.join(', ')}` });
  const types: WebGpuLayoutName[] = [];
  for (const entry of raw) {
    const type = entry.trim().toLowerCase();
    if (!isWebGpuLayoutName(type)) {
      throw new PolyquantError(ERROR_CODES.USAGE, `${JSON.stringify(entry)} is not a WebGPU type`, {
        hint: `WebGPU types are ${WEBGPU_LAYOUT_NAMES.join(', ')} (GGUF types such as q4_0 need --to gguf, ONNX types such as q4 --to onnx)`,
      });
    }
    if (!types.includes(type)) types.push(type);
  }
  return types;
}

function resolveStorage(value: string | undefined): TensorCacheStorage {
  const storage = value ?? 'raw';
  if (!(TENSOR_CACHE_STORAGES as readonly string[]).includes(storage)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `--f32-storage ${JSON.stringify(storage)} is not one of ${TENSOR_CACHE_STORAGES.join(', ')}`, {
      hint: 'raw keeps float32 exact; bf16 writes the bytes mlc_llm convert_weight writes',
    });
  }
  return storage as TensorCacheStorage;
}

export async function convertToWebGpu(modelDir: string, options: ConvertToWebGpuOptions): Promise<WebGpuConversionPlan> {
  const types = resolveTypes(options.types);
  const f32Storage = resolveStorage(options.f32Storage);
  const shardCapBytes = options.shardCapBytes ?? SHARD_CAP_BYTES;
  if (!Number.isSafeInteger(shardCapBytes) || shardCapBytes < MIN_SHARD_CAP_BYTES) {
    throw new PolyquantError(ERROR_CODES.USAGE, `shard cap ${shardCapBytes} bytes is below ${MIN_SHARD_CAP_BYTES}`);
  }
  if (!options.dryRun && (options.out === undefined || options.out === '')) {
    throw new PolyquantError(ERROR_CODES.USAGE, 'no output folder given for the WebGPU model', { hint: 'pass --out DIR, or --dry-run to only plan' });
  }
  // The output is checked before anything is read: a typo must not cost a whole conversion.
  const out = options.dryRun ? undefined : await checkFolderOutput(options.out as string, options.force === true, WEBGPU_FOLDER_OWNERSHIP);
  const checkpoint = await readCheckpoint(modelDir, { weights: options.weights, extraLayers: options.dropExtraLayers ? 'drop' : 'refuse' });
  if (out !== undefined) refuseOutputHoldingInputs(out, checkpoint);
  const warnings: string[] = [...checkpoint.warnings];
  if (!checkpoint.tensors.has('embed_out.weight')) {
    warnings.push('tie_word_embeddings: embed_out is written as a copy of the token embedding (MLC\'s GPT-NeoX always has its own head)');
  }
  const models = types.map((type) => planWebGpuModel(checkpoint.config, type, f32Storage, { folder: types.length > 1 ? type : '', shardCap: shardCapBytes }));
  const calibrated = calibratedWeights(models, options.hessians);
  const plan: WebGpuConversionPlan = { out, f32Storage, shardCapBytes, models, calibrated, warnings };
  if (out === undefined) return plan;

  await writeFolderAtomically(out, options.force === true, WEBGPU_FOLDER_OWNERSHIP, async (temp) => {
    for (const model of models) if (model.folder !== '') await mkdir(join(temp, model.folder));
    await writeWeights(temp, checkpoint, models, options);
    for (const model of models) await writeModelFiles(join(temp, model.folder), checkpoint, model, calibrationNote(model, calibrated, options.gptq));
  });
  return plan;
}

/** HF names of the 2-D weights that have a Hessian and a group-quant record in some model: those GPTQ quantizes. */
function calibratedWeights(models: readonly WebGpuPlannedModel[], hessians: ReadonlyMap<string, CalibrationHessian> | undefined): string[] {
  if (hessians === undefined || hessians.size === 0) return [];
  const names = new Set<string>();
  for (const model of models) {
    for (const record of model.records) {
      if (record.source.kind === 'weight' && isGptqChunkLayout(record.source.chunkLayout) && hessians.has(record.source.tensor.name)) names.add(record.source.tensor.name);
    }
  }
  return [...names];
}

/**
 * What tensor-cache.json's metadata records of the calibration (`PolyquantCalibration`, next to MLC's
 * ParamSize / ParamBytes / BitsPerParam; MLC's readers ignore keys they do not know): GPTQ, its settings,
 * which weights, and the caller's provenance. Undefined for a model GPTQ did not touch (the manifest is then
 * MLC's, key for key).
 */
function calibrationNote(
  model: WebGpuPlannedModel,
  calibrated: readonly string[],
  gptq: ConvertToWebGpuOptions['gptq'],
): Record<string, unknown> | undefined {
  const tensors = calibrated.filter((name) =>
    model.records.some((record) => record.source.kind === 'weight' && record.source.tensor.name === name && isGptqChunkLayout(record.source.chunkLayout)),
  );
  if (tensors.length === 0) return undefined;
  return { method: 'gptq', dampening: gptq?.dampening ?? DEFAULT_GPTQ_DAMPENING, tensors, ...gptq?.provenance };
}

/** An output folder that is or holds the model folder or one of its weight files would replace them. */
function refuseOutputHoldingInputs(out: string, checkpoint: Checkpoint): void {
  for (const input of [checkpoint.dir, ...checkpoint.weights.files.map((file) => file.path)]) {
    if (input === out || input.startsWith(`${out}/`)) {
      throw new PolyquantError(ERROR_CODES.USAGE, `--out ${out} would replace ${input}, which this command reads`, { file: out, hint: 'choose another --out' });
    }
  }
}

// =================================================================================== weight streaming

/** Counts each record's bytes as they are written, so that a record can never take more or less than planned. */
class RecordWriter {
  private readonly written = new Map<string, number>();
  constructor(
    readonly files: PositionedFiles,
    private readonly progress: (bytes: number) => void,
  ) {}

  /** Writes `bytes` as the next part of `record` (its parts arrive in order). */
  append(record: WebGpuPlacedRecord, bytes: Uint8Array): void {
    const done = this.written.get(record.name) ?? 0;
    if (done + bytes.length > record.nbytes) {
      throw new PolyquantError(ERROR_CODES.IO, `record data came to ${done + bytes.length} bytes or more, planned ${record.nbytes}`, { tensor: record.name });
    }
    this.files.write(record.dataPath, record.byteOffset + done, bytes);
    this.written.set(record.name, done + bytes.length);
    this.progress(bytes.length);
  }

  /** Every record got exactly its planned bytes. */
  check(records: readonly WebGpuPlacedRecord[]): void {
    for (const record of records) {
      const done = this.written.get(record.name) ?? 0;
      if (done !== record.nbytes) {
        throw new PolyquantError(ERROR_CODES.IO, `record data came to ${done} bytes, planned ${record.nbytes}`, { tensor: record.name });
      }
    }
  }
}

/** One model's records of one source tensor, consuming its row chunks. */
interface Encoder {
  take(chunk: StoredRows): Promise<void>;
  finish(): Promise<void>;
}

/**
 * A 2-D weight through the pool: chunks in flight in input order, each chunk's parts appended to their
 * records. With a GPTQ factor (shared with the threads, not copied) and a group layout, the chunks are
 * quantized by GPTQ in the same layout.
 */
function weightEncoder(
  records: readonly WebGpuPlacedRecord[],
  K: number,
  writer: RecordWriter,
  pool: QuantPool,
  gptqFactor?: GptqFactor,
): Encoder {
  const first = records[0] as WebGpuPlacedRecord;
  if (first.source.kind !== 'weight') throw new Error('unreachable: a weight encoder for a vector');
  const scheme = first.source.chunkLayout;
  const factor = isGptqChunkLayout(scheme) ? gptqFactor : undefined;
  const pending: { promise: Promise<Uint8Array>; rows: number }[] = [];
  const settle = async (): Promise<void> => {
    const next = pending.shift();
    if (next === undefined) return;
    const bytes = await next.promise;
    let offset = 0;
    for (const [part, size] of webGpuChunkParts(scheme, next.rows, K).entries()) {
      writer.append(records[part] as WebGpuPlacedRecord, bytes.subarray(offset, offset + size));
      offset += size;
    }
  };
  return {
    async take(chunk) {
      // Counted before the pool takes the chunk's buffer.
      const rows = chunkElements(chunk) / K;
      const promise = pool.quantize({ scheme, nPerRow: K, tensor: first.name, ...(factor !== undefined && { gptq: factor }) }, chunk);
      promise.catch(() => undefined);
      pending.push({ promise, rows });
      while (pending.length >= pool.maxInFlight) await settle();
    },
    async finish() {
      try {
        while (pending.length > 0) await settle();
      } finally {
        await Promise.allSettled(pending.map((entry) => entry.promise));
      }
    },
  };
}

function chunkElements(chunk: StoredRows): number {
  return chunk.bytes.length / DTYPES[chunk.dtype].bytes;
}

/** A norm or bias: read whole (they are vectors), QKV bias reordered, cast to the record's dtype and storage. */
async function writeVector(record: WebGpuPlacedRecord, tensor: TensorRef, qkvBias: boolean, writer: RecordWriter, numHeads: number, headDim: number): Promise<void> {
  if (record.source.kind !== 'vector') throw new Error('unreachable: a vector writer for a weight');
  let values = await readAsF32(tensor);
  if (qkvBias) values = reorderQkvRows(values, 1, { numHeads, headDim }, new Float32Array(values.length));
  const { dtype, bf16 } = record.source;
  const stored = dtype === 'float16' ? f32ToF16Array(values) : bf16 ? f32ToTensorCacheBf16Array(values) : values;
  writer.append(record, new Uint8Array(stored.buffer, stored.byteOffset, stored.byteLength));
}

/** Streams every source tensor once and feeds each model's records. */
async function writeWeights(dir: string, checkpoint: Checkpoint, models: readonly WebGpuPlannedModel[], options: ConvertToWebGpuOptions): Promise<void> {
  const { config } = checkpoint;
  const total = models.reduce((sum, model) => sum + model.diskBytes, 0);
  let done = 0;
  const progress = (bytes: number): void => {
    done += bytes;
    options.onProgress?.(done, total);
  };
  const pool = new QuantPool({ workers: options.workers });
  const writers = models.map((model) => new RecordWriter(new PositionedFiles(join(dir, model.folder), 'shard'), progress));
  try {
    // Each model's records by source tensor (a 2-D weight's q_weight and q_scale, or one vector).
    const bySource = models.map((model) => {
      const map = new Map<string, WebGpuPlacedRecord[]>();
      for (const record of model.records) {
        const list = map.get(record.source.tensor.name) ?? [];
        list.push(record);
        map.set(record.source.tensor.name, list);
      }
      return map;
    });
    const sources = [...new Map(models[0]?.records.map((record) => [record.source.tensor.name, record.source.tensor])).values()];
    for (const source of sources) {
      const tensor = sourceTensor(checkpoint, source);
      const consumers = bySource.map((map) => map.get(source.name) as WebGpuPlacedRecord[]);
      if (source.shape.length === 1) {
        for (const [index, records] of consumers.entries()) {
          await writeVector(records[0] as WebGpuPlacedRecord, tensor, source.role === 'qkv-bias', writers[index] as RecordWriter, config.numHeads, config.headDim);
        }
        continue;
      }
      const K = source.shape[1] as number;
      const hessian = options.hessians?.get(source.name);
      const needsFactor = hessian !== undefined && consumers.some((records) => records[0]?.source.kind === 'weight' && isGptqChunkLayout(records[0].source.chunkLayout));
      const factor = needsFactor ? calibrationFactor(source.name, hessian, K, options.gptq) : undefined;
      const encoders = consumers.map((records, index) =>
        weightEncoder(records, K, writers[index] as RecordWriter, pool, factor),
      );
      for await (const chunk of weightChunks(tensor, source, config.numHeads, config.headDim)) {
        for (const [index, encoder] of encoders.entries()) {
          // The pool takes ownership of what it is given: every encoder but the last gets a copy (a real
          // one: the chunk may be a Buffer, whose slice() is a view).
          await encoder.take(index === encoders.length - 1 ? chunk : { dtype: chunk.dtype, bytes: new Uint8Array(chunk.bytes) });
        }
      }
      for (const encoder of encoders) await encoder.finish();
    }
    for (const [index, model] of models.entries()) (writers[index] as RecordWriter).check(model.records);
  } finally {
    for (const writer of writers) writer.files.close();
    await pool.close();
  }
}

function sourceTensor(checkpoint: Checkpoint, source: ExpectedTensor): TensorRef {
  const tensor = checkpoint.tensors.get(source.name) ?? (source.role === 'output-head' ? checkpoint.tensors.get('gpt_neox.embed_in.weight') : undefined);
  if (tensor === undefined) throw new PolyquantError(ERROR_CODES.CONFIG, 'the checkpoint lacks this tensor', { file: checkpoint.dir, tensor: source.name });
  return tensor;
}

/** A 2-D weight's rows as stored, whole rows per chunk, each in a fresh buffer; the fused QKV in [Q; K; V] order. */
function weightChunks(tensor: TensorRef, source: ExpectedTensor, numHeads: number, headDim: number): AsyncIterable<StoredRows> {
  const K = source.shape[1] as number;
  if (source.role === 'qkv-weight') return storedQkvRowChunks(tensor, { numHeads, headDim }, CHUNK_ELEMENTS / (headDim * K));
  return storedRowChunks(tensor, Math.max(1, Math.floor(CHUNK_ELEMENTS / K)));
}

// ====================================================================================== folder files

/** md5 and sha256 of a written shard, read back in 4 MiB pieces; its size must be the planned one. */
function hashShard(path: string, nbytes: number): ShardHashes {
  const md5 = createHash('md5');
  const sha256 = createHash('sha256');
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (error) {
    throw ioError(path, 'open the shard to hash it', error);
  }
  try {
    const buffer = new Uint8Array(Math.min(nbytes, 4 << 20) || 1);
    let position = 0;
    for (;;) {
      const read = readSync(fd, buffer, 0, buffer.length, position);
      if (read === 0) break;
      md5.update(buffer.subarray(0, read));
      sha256.update(buffer.subarray(0, read));
      position += read;
    }
    if (position !== nbytes) throw new PolyquantError(ERROR_CODES.IO, `the shard holds ${position} bytes, planned ${nbytes}`, { file: path });
  } catch (error) {
    throw ioError(path, 'hash the shard', error);
  } finally {
    closeSync(fd);
  }
  return { md5: md5.digest('hex'), sha256: sha256.digest('hex') };
}

function numberOr(value: unknown, fallback: number): number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : fallback;
}

/** bos / eos / pad as mlc_llm gen_config finds them: generation_config.json, then config.json, then its defaults (1, 2, 0). */
function chatTokens(checkpoint: Checkpoint): ChatConfigTokens {
  const generation = checkpoint.tokenizer.generationConfig ?? {};
  const raw = checkpoint.rawConfig;
  return {
    bos: numberOr(generation['bos_token_id'], checkpoint.config.bosTokenId ?? 1),
    eos: numberOr(generation['eos_token_id'], checkpoint.config.eosTokenId ?? 2),
    pad: numberOr(generation['pad_token_id'], numberOr(raw['pad_token_id'], 0)),
  };
}

async function writeModelFiles(dir: string, checkpoint: Checkpoint, model: WebGpuPlannedModel, calibration: Record<string, unknown> | undefined): Promise<void> {
  const hashes = model.shards.map((shard) => hashShard(join(dir, shard.dataPath), shard.nbytes));
  const write = async (name: string, text: string): Promise<void> => {
    await writeFile(join(dir, name), text).catch((error: unknown) => {
      throw ioError(join(dir, name), 'write the file', error);
    });
  };
  const manifest = tensorCacheJson(model, hashes, { calibration });
  await write(TENSOR_CACHE_FILE, manifest);
  await write(LEGACY_TENSOR_CACHE_FILE, manifest);
  if (model.bf16Encoded) await write(TENSOR_CACHE_B16_FILE, tensorCacheJson(model, hashes, { b16: true, calibration }));
  const tokenizerFiles: string[] = [];
  for (const name of MLC_TOKENIZER_FILES) {
    const source = join(checkpoint.tokenizer.dir, name);
    if (!(await pathExists(source))) continue;
    await copyFile(source, join(dir, name)).catch((error: unknown) => {
      throw ioError(source, 'copy the tokenizer file', error);
    });
    tokenizerFiles.push(name);
  }
  const byteLevel = summariseTokenizer(checkpoint.tokenizer)?.byteLevel ?? true;
  const chat = mlcChatConfig(checkpoint.config, model.type, chatTokens(checkpoint), tokenizerFiles, byteLevel);
  await write(MLC_CHAT_CONFIG_FILE, `${JSON.stringify(chat, null, 2)}\n`);
}
