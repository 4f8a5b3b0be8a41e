/**
 * HF GPT-NeoX checkpoint → an ONNX model folder laid out as a transformers.js repository (specs/onnx.md
 * §3.2): config.json, generation_config.json, tokenizer files, genai_config.json and
 * `onnx/model{suffix}.onnx` + `.onnx_data[_N]` per requested type. One read of the checkpoint serves every
 * type: each source tensor is streamed once, in row chunks, and every type's encoder takes the chunk
 * (float32/float16 copies, MatMulNBits / MatMulInteger through the quantizer pool). Weight bytes go to
 * their planned offsets in the external data files as they are produced; only the graph (kilobytes) is
 * built in memory. Memory is bounded by a chunk per worker, plus one tensor for the encodings that
 * transpose (MatMul's W^T for fp32/fp16, MatMulInteger's `[K, N]` int8), never by model size. The folder is
 * built under a temp name and renamed into place: it appears complete or not at all.
 */
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expectedTensors, type NeoXConfig, type NeoXTensorRole } from '../../arch/gpt-neox.js';
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import { ioError, pathExists } from '../../io/file.js';
import { checkFolderOutput, type FolderOwnership, PositionedFiles, writeFolderAtomically } from '../../io/output-folder.js';
import { DEFAULT_GPTQ_DAMPENING, type GptqFactor } from '../../quant/gptq.js';
import { type CalibrationHessian, calibrationFactor, type GptqConvertOptions } from '../../quant/gptq-layouts.js';
import { onnxChunkParts } from '../../quant/onnx-layouts.js';
import { QuantPool, type RowChunk } from '../../quant/pool.js';
import { type Checkpoint, readCheckpoint, type WeightsPreference } from '../../readers/checkpoint.js';
import type { TensorRef } from '../../readers/tensor-ref.js';
import { TOKENIZER_FILE_NAMES } from '../../readers/tokenizer.js';
import { DTYPES } from '../../tensor/dtype.js';
import { widenRows } from '../../tensor/widen.js';
import { type QkvLayout, reorderQkvRows } from '../gguf/names.js';
import { readAsF32, storedQkvRowChunks, storedRowChunks } from '../gguf/source-rows.js';
import { ATTENTION_FORMS, type AttentionForm, buildNeoXGraph, type GraphOptions, type InitializerSpec, type NeoXGraph, type WeightJob } from './graph.js';
import { encodeModel, externalTensor, IR_VERSION, type TensorProto } from './proto.js';
import { isOnnxTypeName, ONNX_SUBFOLDER, ONNX_TYPE_NAMES, ONNX_TYPES, type OnnxTypeName, onnxDataFileName, onnxModelFileName } from './types.js';

/** Float32 elements per chunk read from the checkpoint (4 MiB), as the GGUF converter reads them. */
export const CHUNK_ELEMENTS = 1 << 20;
/**
 * Largest external data file: browsers cannot hold one ArrayBuffer over 2 GiB (specs/onnx.md §3.2), and
 * transformers.js fetches each file whole. Tensors are never split; a file closes before a tensor that
 * would cross the limit.
 */
export const MAX_DATA_FILE_BYTES = 2 ** 31;
/** transformers.js reads at most this many chunks (utils/hub/constants.js). */
const MAX_DATA_FILES = 100;
/** Tensors of at least 1 MiB start on a 64 KiB boundary (mmap granularity on every OS); others on 64 B (§4). */
const LARGE_TENSOR_BYTES = 1 << 20;
const LARGE_ALIGNMENT = 1 << 16;
const SMALL_ALIGNMENT = 64;
export const ONNX_BLOCK_SIZES = [16, 32, 64, 128] as const;
export const ONNX_ACCURACY_LEVELS = [0, 1, 2, 3, 4] as const;

export interface ConvertToOnnxOptions {
  /** One or more of fp32, fp16, q8, q4, q4f16. */
  readonly types: readonly string[];
  /** The output folder; required unless `dryRun`. */
  readonly out?: string | undefined;
  /** Replace an existing output folder (only one holding nothing but files this converter writes). */
  readonly force?: boolean | undefined;
  readonly dryRun?: boolean | undefined;
  readonly weights?: WeightsPreference | undefined;
  /** Quantizer worker threads (0: inline). Default: available parallelism. */
  readonly workers?: number | undefined;
  readonly attention?: AttentionForm | undefined;
  readonly blockSize?: number | undefined;
  /** Zero points per block (default: symmetric, none). */
  readonly asymmetric?: boolean | undefined;
  readonly accuracyLevel?: number | undefined;
  readonly keepHead?: boolean | undefined;
  /** q8 as MatMulNBits bits=8 (default: per-row activation blocks, batch-invariant) or DynamicQuantizeLinear + MatMulInteger (one activation scale per call). */
  /**
   * q8 as MatMulNBits bits=8 (default: activations quantized per row block, so a row's logits do not
   * depend on the rest of the batch) or DynamicQuantizeLinear + MatMulInteger (one activation scale per
   * call: faster prefill on CPU, but batch- and cache-dependent). DESIGN-NOTES.md, "ONNX q8".
   */
  readonly q8Format?: 'integer' | 'nbits' | undefined;
  /** Largest external data file (default 2 GiB; smaller for tests of the chunking). */
  readonly maxDataFileBytes?: number | undefined;
  readonly dropExtraLayers?: boolean | undefined;
  /**
   * Calibration Hessians (Σ x xᵀ / count of each matrix's input) by HF tensor name: every MatMulNBits
   * weight (4- and 8-bit) with one is quantized with GPTQ (quant/gptq-layouts.ts) in the same layout; the
   * rest as without. The fused QKV's rows are reordered first, which GPTQ does not mind: rows are
   * independent and the Hessian is over input columns. MatMulInteger (q8 `--q8-format integer`) stays RTN.
   */
  readonly hessians?: ReadonlyMap<string, CalibrationHessian> | undefined;
  /** GPTQ's dampening, with `hessians`; `provenance` goes into each calibrated model's metadata. */
  readonly gptq?: (GptqConvertOptions & { readonly provenance?: Readonly<Record<string, unknown>> | undefined }) | undefined;
  readonly onProgress?: ((done: number, total: number) => void) | undefined;
}

export interface OnnxPlannedInitializer extends InitializerSpec {
  /** External data file (relative to the onnx/ folder) and offset. */
  readonly file: string;
  readonly offset: number;
}

export interface OnnxPlannedModel {
  readonly type: OnnxTypeName;
  /** `onnx/model_q4.onnx`, relative to the output folder. */
  readonly file: string;
  readonly dataFiles: readonly { readonly name: string; readonly bytes: number }[];
  readonly initializers: readonly OnnxPlannedInitializer[];
  readonly nodes: number;
  /** Bytes of every external initializer (weights and rotary tables). */
  readonly weightBytes: number;
  /** Checkpoint parameters the weights encode, and their bits per parameter (rotary tables excluded). */
  readonly parameters: number;
  readonly bitsPerWeight: number;
  /** HF names of the weights quantized with GPTQ (options.hessians); empty when none. */
  readonly calibrated: readonly string[];
}

export interface OnnxConversionPlan {
  readonly out: string | undefined;
  readonly models: readonly OnnxPlannedModel[];
  readonly options: GraphOptions;
  readonly warnings: readonly string[];
}

/** What `--force` may replace: the files this converter writes, and nothing else. */
export const ONNX_FOLDER_OWNERSHIP: FolderOwnership = {
  writer: 'convert --to onnx',
  owns: (name, folder) =>
    folder
      ? name === 'onnx'
      : /^(config|generation_config|genai_config|tokenizer|tokenizer_config|special_tokens_map)\.json$/.test(name) ||
        /^onnx\/model(_[a-z0-9]+)?\.onnx(_data(_\d+)?)?$/.test(name),
  describe: 'config.json, generation_config.json, genai_config.json, tokenizer files and onnx/model*.onnx(_data)',
  flag: '--out',
};

function resolveGraphOptions(options: ConvertToOnnxOptions): { types: OnnxTypeName[]; graph: Omit<GraphOptions, 'type'> } {
  if (options.types.length === 0) {
    throw new PolyquantError(ERROR_CODES.USAGE, 'no ONNX type given', { hint: `choose from ${ONNX_TYPE_NAMES.join(', ')}` });
  }
  const types: OnnxTypeName[] = [];
  for (const raw of options.types) {
    const type = raw.trim().toLowerCase();
    if (!isOnnxTypeName(type)) {
      throw new PolyquantError(ERROR_CODES.USAGE, `${JSON.stringify(raw)} is not an ONNX type`, {
        hint: `ONNX types are ${ONNX_TYPE_NAMES.join(', ')} (GGUF types such as q4_0 need --to gguf)`,
      });
    }
    if (!types.includes(type)) types.push(type);
  }
  const attention = options.attention ?? 'plain';
  if (!ATTENTION_FORMS.includes(attention)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `--attention ${JSON.stringify(attention)} is not one of ${ATTENTION_FORMS.join(', ')}`);
  }
  const blockSize = options.blockSize ?? 32;
  if (!(ONNX_BLOCK_SIZES as readonly number[]).includes(blockSize)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `--block-size ${blockSize} is not one of ${ONNX_BLOCK_SIZES.join(', ')}`);
  }
  const accuracyLevel = options.accuracyLevel ?? 4;
  if (!(ONNX_ACCURACY_LEVELS as readonly number[]).includes(accuracyLevel)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `--accuracy-level ${accuracyLevel} is not one of ${ONNX_ACCURACY_LEVELS.join(', ')}`, {
      hint: '0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 activations (MatMulNBits accuracy_level)',
    });
  }
  const q8Format = options.q8Format ?? 'nbits';
  if (q8Format !== 'integer' && q8Format !== 'nbits') {
    throw new PolyquantError(ERROR_CODES.USAGE, `--q8-format ${JSON.stringify(q8Format)} is not integer or nbits`);
  }
  const maxData = options.maxDataFileBytes ?? MAX_DATA_FILE_BYTES;
  if (!Number.isSafeInteger(maxData) || maxData < LARGE_ALIGNMENT) {
    throw new PolyquantError(ERROR_CODES.USAGE, `largest data file ${maxData} bytes is below ${LARGE_ALIGNMENT}`);
  }
  return {
    types,
    graph: {
      attention,
      blockSize: blockSize as GraphOptions['blockSize'],
      symmetric: options.asymmetric !== true,
      accuracyLevel: accuracyLevel as GraphOptions['accuracyLevel'],
      keepHead: options.keepHead === true,
      q8Format,
    },
  };
}

export async function convertToOnnx(modelDir: string, options: ConvertToOnnxOptions): Promise<OnnxConversionPlan> {
  const { types, graph: graphOptions } = resolveGraphOptions(options);
  if (!options.dryRun && (options.out === undefined || options.out === '')) {
    throw new PolyquantError(ERROR_CODES.USAGE, 'no output folder given for the ONNX model', { hint: 'pass --out DIR, or --dry-run to only plan' });
  }
  // The output is checked before anything is read: a typo must not cost a whole conversion.
  const out = options.dryRun ? undefined : await checkFolderOutput(options.out as string, options.force === true, ONNX_FOLDER_OWNERSHIP);
  const checkpoint = await readCheckpoint(modelDir, { weights: options.weights, extraLayers: options.dropExtraLayers ? 'drop' : 'refuse' });
  if (out !== undefined) refuseOutputHoldingInputs(out, checkpoint);
  const { config } = checkpoint;
  checkShapesFit(config, graphOptions, types);
  const warnings: string[] = [...checkpoint.warnings];
  if (config.tieWordEmbeddings && !checkpoint.tensors.has('embed_out.weight')) {
    warnings.push('tie_word_embeddings: the output head is written as a copy of the token embedding');
  }
  if (graphOptions.attention === 'gqa') {
    warnings.push('--attention gqa: GroupQueryAttention derives positions from the mask, so batches must be right-padded (transformers.js pads on the left)');
  }

  const graphs = types.map((type) => ({ type, graph: buildNeoXGraph(config, { ...graphOptions, type }) }));
  const maxData = options.maxDataFileBytes ?? MAX_DATA_FILE_BYTES;
  const models = graphs.map(({ type, graph }) => planModel(type, graph, maxData, warnings, calibratedWeights(config, graph, options.hessians)));
  const plan: OnnxConversionPlan = { out, models, options: { ...graphOptions, type: types[0] as OnnxTypeName }, warnings };
  if (out === undefined) return plan;

  await writeFolderAtomically(out, options.force === true, ONNX_FOLDER_OWNERSHIP, async (temp) => {
    await mkdir(join(temp, ONNX_SUBFOLDER));
    await writeWeights(temp, checkpoint, graphs, models, options);
    for (const [index, { graph }] of graphs.entries()) await writeModelFile(temp, graph, models[index] as OnnxPlannedModel, checkpoint, options.gptq);
    await writeFolderFiles(temp, checkpoint, models, graphOptions);
  });
  return plan;
}

/** An output folder that is, holds or lies inside the model folder could replace or mix with its inputs. */
function refuseOutputHoldingInputs(out: string, checkpoint: Checkpoint): void {
  const inputs = [checkpoint.dir, ...checkpoint.weights.files.map((file) => file.path)];
  for (const input of inputs) {
    if (input === out || input.startsWith(`${out}/`) || out.startsWith(`${checkpoint.dir}/`) && out === checkpoint.dir) {
      throw new PolyquantError(ERROR_CODES.USAGE, `--out ${out} would replace ${input}, which this command reads`, { file: out, hint: 'choose another --out' });
    }
  }
}

/** MatMulNBits needs K to be whole blocks only for the kernels' layouts; the row length must be blockable. */
function checkShapesFit(config: NeoXConfig, options: Omit<GraphOptions, 'type'>, types: readonly OnnxTypeName[]): void {
  if (config.rotaryDims % 2 !== 0 || config.rotaryDims <= 0) {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `rotary dims ${config.rotaryDims} must be even and positive for the ONNX graph`);
  }
  const quantized = types.some((type) => ONNX_TYPES[type].linear !== 'float');
  if (!quantized) return;
  for (const K of [config.hiddenSize, config.intermediateSize]) {
    if (K % options.blockSize !== 0) {
      throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `row length ${K} is not a multiple of --block-size ${options.blockSize}`, {
        hint: `choose a block size that divides ${K}, or a float type`,
      });
    }
  }
  if (options.attention === 'gqa' && (config.headDim % 16 !== 0 || (config.rotaryDims / 2) % 8 !== 0)) {
    throw new PolyquantError(
      ERROR_CODES.UNSUPPORTED,
      `GroupQueryAttention needs head size ${config.headDim} to be a multiple of 16 and rotary dims ${config.rotaryDims} a multiple of 16`,
      { hint: 'use --attention plain' },
    );
  }
}

function align(offset: number, bytes: number): number {
  const alignment = bytes >= LARGE_TENSOR_BYTES ? LARGE_ALIGNMENT : SMALL_ALIGNMENT;
  return Math.ceil(offset / alignment) * alignment;
}

/** Places every initializer of one model in its data files: graph order, aligned, never split, files ≤ maxData. */
function planModel(type: OnnxTypeName, graph: NeoXGraph, maxData: number, warnings: string[], calibrated: readonly string[]): OnnxPlannedModel {
  const modelFile = onnxModelFileName(type);
  const specs = [...graph.weights.flatMap((job) => job.initializers), ...graph.computed.map((job) => job.initializer)];
  const parameters = graph.weights.reduce((sum, job) => sum + job.shape.reduce((product, dim) => product * dim, 1), 0);
  const encodedBytes = graph.weights.reduce((sum, job) => sum + job.initializers.reduce((total, spec) => total + spec.bytes, 0), 0);
  const initializers: OnnxPlannedInitializer[] = [];
  const files: { name: string; bytes: number }[] = [{ name: onnxDataFileName(modelFile, 0), bytes: 0 }];
  for (const spec of specs) {
    let current = files[files.length - 1] as { name: string; bytes: number };
    let offset = align(current.bytes, spec.bytes);
    if (offset + spec.bytes > maxData && current.bytes > 0) {
      current = { name: onnxDataFileName(modelFile, files.length), bytes: 0 };
      files.push(current);
      offset = 0;
    }
    if (spec.bytes > maxData) warnings.push(`${spec.name} (${spec.bytes} bytes) is larger than one data file may be; it gets a file of its own`);
    initializers.push({ ...spec, file: current.name, offset });
    current.bytes = offset + spec.bytes;
  }
  if (files.length > MAX_DATA_FILES) {
    throw new PolyquantError(ERROR_CODES.USAGE, `${modelFile} would need ${files.length} data files; transformers.js reads at most ${MAX_DATA_FILES}`, {
      hint: 'raise the data file size limit',
    });
  }
  return {
    type,
    file: `onnx/${modelFile}`,
    dataFiles: files,
    initializers,
    nodes: graph.nodes.length,
    weightBytes: specs.reduce((sum, spec) => sum + spec.bytes, 0),
    parameters,
    bitsPerWeight: (8 * encodedBytes) / parameters,
    calibrated,
  };
}

/** The HF name of the checkpoint tensor a job encodes. */
function sourceName(config: NeoXConfig, role: NeoXTensorRole, layer: number | null): string | undefined {
  return expectedTensors(config).find((entry) => entry.role === role && entry.layer === layer)?.name;
}

/** HF names of the graph's MatMulNBits weights that have a Hessian: those GPTQ quantizes. */
function calibratedWeights(config: NeoXConfig, graph: NeoXGraph, hessians: ReadonlyMap<string, CalibrationHessian> | undefined): string[] {
  if (hessians === undefined || hessians.size === 0) return [];
  const names: string[] = [];
  for (const job of graph.weights) {
    if (job.encoding.kind !== 'nbits') continue;
    const name = sourceName(config, job.role, job.layer);
    if (name !== undefined && hessians.has(name)) names.push(name);
  }
  return names;
}

// =================================================================================== weight streaming

/**
 * One job of one model, consuming the source tensor's row chunks: float32, or as the checkpoint stores
 * them, for the pool's threads to widen (the main thread reads and writes; widening every weight here
 * made it the bottleneck of a quantized conversion).
 */
interface Encoder {
  take(rows: RowChunk, firstRow: number): Promise<void>;
  finish(): Promise<void>;
}

type Placed = readonly OnnxPlannedInitializer[];

function writeCounted(files: PositionedFiles, target: OnnxPlannedInitializer, offsetInTensor: number, bytes: Uint8Array, progress: () => void, count: (n: number) => void): void {
  if (offsetInTensor + bytes.length > target.bytes) {
    throw new PolyquantError(ERROR_CODES.IO, `tensor data came to ${offsetInTensor + bytes.length} bytes or more, planned ${target.bytes}`, { tensor: target.name });
  }
  files.write(target.file, target.offset + offsetInTensor, bytes);
  count(bytes.length);
  progress();
}

/**
 * Float weights: float32 written as they come; float16 narrowed by the pool (ggml's round-to-nearest-even
 * F16 rows); W^T (MatMul's `[K, N]`) gathered whole, since every input row contributes to every output row.
 */
function floatEncoder(job: WeightJob, placed: Placed, files: PositionedFiles, pool: QuantPool, count: (n: number) => void, progress: () => void): Encoder {
  if (job.encoding.kind !== 'float') throw new Error('unreachable: a float encoder for a quantized weight');
  const { type, transpose } = job.encoding;
  const target = placed[0] as OnnxPlannedInitializer;
  const rows = job.shape[0] as number;
  const columns = job.shape.length > 1 ? (job.shape[1] as number) : rows;
  const whole = transpose ? (type === 'FLOAT' ? new Float32Array(rows * columns) : new Uint16Array(rows * columns)) : undefined;
  let written = 0;
  const place = (values: Float32Array | Uint16Array, firstRow: number): void => {
    if (whole === undefined) {
      const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
      writeCounted(files, target, written, bytes, progress, count);
      written += bytes.length;
    } else {
      transposeInto(values, values.length / columns, columns, whole, rows, firstRow);
    }
  };
  const pending: { promise: Promise<Uint8Array>; firstRow: number }[] = [];
  const settle = async (): Promise<void> => {
    const next = pending.shift();
    if (next === undefined) return;
    const bytes = await next.promise;
    place(new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2), next.firstRow);
  };
  return {
    async take(chunk, firstRow) {
      if (type === 'FLOAT') {
        place(widenRows(chunk, target.name), firstRow);
        return;
      }
      const promise = pool.quantize({ scheme: 'F16', nPerRow: columns, tensor: target.name }, chunk);
      promise.catch(() => undefined);
      pending.push({ promise, firstRow });
      while (pending.length >= pool.maxInFlight) await settle();
    },
    async finish() {
      try {
        while (pending.length > 0) await settle();
      } finally {
        await Promise.allSettled(pending.map((entry) => entry.promise));
      }
      if (whole !== undefined) writeCounted(files, target, 0, new Uint8Array(whole.buffer), progress, count);
    },
  };
}

/** Rows `[count, columns]` of W into W^T `[columns, N]` at column offset `firstRow`, in cache-sized tiles. */
function transposeInto(source: Float32Array | Uint16Array, count: number, columns: number, target: Float32Array | Uint16Array, N: number, firstRow: number): void {
  const TILE = 64;
  for (let r0 = 0; r0 < count; r0 += TILE) {
    const r1 = Math.min(count, r0 + TILE);
    for (let k0 = 0; k0 < columns; k0 += TILE) {
      const k1 = Math.min(columns, k0 + TILE);
      for (let k = k0; k < k1; k++) {
        const out = k * N + firstRow;
        for (let r = r0; r < r1; r++) target[out + r] = source[r * columns + k] as number;
      }
    }
  }
}

/**
 * MatMulNBits / MatMulInteger through the pool: chunks in flight in order, their parts placed as they
 * return. With a GPTQ factor (shared with the threads, not copied), a MatMulNBits weight's chunks are
 * quantized by GPTQ in the same layout.
 */
function pooledEncoder(
  job: WeightJob,
  placed: Placed,
  files: PositionedFiles,
  pool: QuantPool,
  count: (n: number) => void,
  progress: () => void,
  gptqFactor?: GptqFactor,
): Encoder {
  const scheme = job.encoding.kind === 'nbits' ? job.encoding.layout.id : job.encoding.kind === 'integer' ? job.encoding.layoutId : '';
  const [N, K] = job.shape as [number, number];
  const integer = job.encoding.kind === 'integer';
  const wholeB = integer ? new Uint8Array(N * K) : undefined;
  const pending: { promise: Promise<Uint8Array>; firstRow: number; rows: number }[] = [];
  const written = [0, 0, 0];
  const place = (bytes: Uint8Array, firstRow: number, rows: number): void => {
    const parts = onnxChunkParts(scheme, rows, K);
    const sizes = [parts.B, parts.scales, parts.zeroPoints];
    let offset = 0;
    for (let part = 0; part < placed.length; part++) {
      const size = sizes[part] as number;
      const piece = bytes.subarray(offset, offset + size);
      offset += size;
      if (part === 0 && wholeB !== undefined) {
        // The chunk's B is [K, rows]: columns firstRow … of the whole [K, N].
        for (let k = 0; k < K; k++) wholeB.set(piece.subarray(k * rows, (k + 1) * rows), k * N + firstRow);
        continue;
      }
      writeCounted(files, placed[part] as OnnxPlannedInitializer, written[part] as number, piece, progress, count);
      written[part] = (written[part] as number) + size;
    }
  };
  const settle = async (): Promise<void> => {
    const next = pending.shift();
    if (next !== undefined) place(await next.promise, next.firstRow, next.rows);
  };
  return {
    async take(chunk, firstRow) {
      // Counted before the pool takes the chunk's buffer.
      const rows = chunkElements(chunk) / K;
      const gptq = job.encoding.kind === 'nbits' ? gptqFactor : undefined;
      const promise = pool.quantize({ scheme, nPerRow: K, tensor: placed[0]?.name, ...(gptq !== undefined && { gptq }) }, chunk);
      promise.catch(() => undefined);
      pending.push({ promise, firstRow, rows });
      while (pending.length >= pool.maxInFlight) await settle();
    },
    async finish() {
      try {
        while (pending.length > 0) await settle();
      } finally {
        await Promise.allSettled(pending.map((entry) => entry.promise));
      }
      if (wholeB !== undefined) writeCounted(files, placed[0] as OnnxPlannedInitializer, 0, wholeB, progress, count);
    },
  };
}

function sourceKey(role: NeoXTensorRole, layer: number | null): string {
  return `${role}@${layer ?? ''}`;
}

/** Streams every source tensor once and feeds each type's encoders; then the computed tables. */
async function writeWeights(
  dir: string,
  checkpoint: Checkpoint,
  graphs: readonly { type: OnnxTypeName; graph: NeoXGraph }[],
  models: readonly OnnxPlannedModel[],
  options: ConvertToOnnxOptions,
): Promise<void> {
  const { config } = checkpoint;
  const total = models.reduce((sum, model) => sum + model.weightBytes, 0);
  let done = 0;
  const count = (n: number): void => {
    done += n;
  };
  const progress = (): void => options.onProgress?.(done, total);
  const quantized = graphs.some(({ graph }) => graph.weights.some((job) => job.encoding.kind !== 'float' || job.encoding.type === 'FLOAT16'));
  const pool = new QuantPool({ workers: quantized ? options.workers : 0 });
  const dataFiles = graphs.map(() => new PositionedFiles(join(dir, ONNX_SUBFOLDER), 'external data file'));
  try {
    // Each model's jobs by source tensor, with the planned initializers they fill.
    const bySource = new Map<string, { job: WeightJob; placed: Placed; files: PositionedFiles }[]>();
    for (const [index, { graph }] of graphs.entries()) {
      const model = models[index] as OnnxPlannedModel;
      const byName = new Map(model.initializers.map((initializer) => [initializer.name, initializer]));
      for (const job of graph.weights) {
        const key = sourceKey(job.role, job.layer);
        const list = bySource.get(key) ?? [];
        list.push({ job, placed: job.initializers.map((spec) => byName.get(spec.name) as OnnxPlannedInitializer), files: dataFiles[index] as PositionedFiles });
        bySource.set(key, list);
      }
      for (const computed of graph.computed) {
        const target = byName.get(computed.initializer.name) as OnnxPlannedInitializer;
        writeCounted(dataFiles[index] as PositionedFiles, target, 0, computed.values(), progress, count);
      }
    }
    const embedding = expectedTensors(config).find((entry) => entry.role === 'token-embedding');
    for (const entry of expectedTensors(config)) {
      const consumers = bySource.get(sourceKey(entry.role, entry.layer));
      if (consumers === undefined) continue;
      const tensor =
        checkpoint.tensors.get(entry.name) ?? (entry.role === 'output-head' && embedding !== undefined ? checkpoint.tensors.get(embedding.name) : undefined);
      if (tensor === undefined) {
        throw new PolyquantError(ERROR_CODES.CONFIG, 'the checkpoint lacks this tensor', { file: checkpoint.dir, tensor: entry.name });
      }
      const hessian = options.hessians?.get(entry.name);
      const factor =
        hessian !== undefined && consumers.some(({ job }) => job.encoding.kind === 'nbits')
          ? calibrationFactor(entry.name, hessian, tensor.shape[1] as number, options.gptq)
          : undefined;
      const encoders = consumers.map(({ job, placed, files }) =>
        job.encoding.kind === 'float'
          ? floatEncoder(job, placed, files, pool, count, progress)
          : pooledEncoder(job, placed, files, pool, count, progress, factor),
      );
      const layout: QkvLayout = { numHeads: config.numHeads, headDim: config.headDim };
      const qkv = consumers[0]?.job.qkv === true;
      let firstRow = 0;
      for await (const chunk of sourceRows(tensor, entry.role, qkv, layout)) {
        const elements = chunkElements(chunk);
        const rowLength = tensor.shape.length > 1 ? (tensor.shape[1] as number) : elements;
        // Counted first: the pool may take the chunk's buffer (leaving it empty).
        const rows = elements / rowLength;
        for (const [index, encoder] of encoders.entries()) {
          // The pool takes ownership of what it is given: every encoder but the last gets a copy.
          await encoder.take(index === encoders.length - 1 ? chunk : copyChunk(chunk), firstRow);
        }
        firstRow += rows;
      }
      for (const encoder of encoders) await encoder.finish();
    }
  } finally {
    for (const files of dataFiles) files.close();
    await pool.close();
  }
}

/**
 * A source tensor's rows in chunks, fused QKV rows (and bias) in [Q; K; V] order: matrices as stored, each
 * chunk in a fresh buffer (the pool takes it), 1-D tensors as float32.
 */
function sourceRows(tensor: TensorRef, role: NeoXTensorRole, qkv: boolean, layout: QkvLayout): AsyncIterable<RowChunk> {
  if (tensor.shape.length === 1) return oneChunk(tensor, role === 'qkv-bias' ? layout : undefined);
  const rowLength = tensor.shape[1] as number;
  if (qkv) return storedQkvRowChunks(tensor, layout, CHUNK_ELEMENTS / (layout.headDim * rowLength));
  return storedRowChunks(tensor, Math.max(1, Math.floor(CHUNK_ELEMENTS / rowLength)));
}

function chunkElements(chunk: RowChunk): number {
  return chunk instanceof Float32Array ? chunk.length : chunk.bytes.length / DTYPES[chunk.dtype].bytes;
}

/** A copy in its own buffer (a Node Buffer's `slice` would share the memory the pool is about to take). */
function copyChunk(chunk: RowChunk): RowChunk {
  return chunk instanceof Float32Array ? chunk.slice() : { dtype: chunk.dtype, bytes: new Uint8Array(chunk.bytes) };
}

async function* oneChunk(tensor: TensorRef, qkv: QkvLayout | undefined): AsyncIterable<Float32Array> {
  const values = await readAsF32(tensor);
  yield qkv === undefined ? values : reorderQkvRows(values, 1, qkv, new Float32Array(values.length));
}

// ====================================================================================== folder files

async function writeModelFile(dir: string, graph: NeoXGraph, model: OnnxPlannedModel, checkpoint: Checkpoint, gptq: ConvertToOnnxOptions['gptq']): Promise<void> {
  const external: TensorProto[] = model.initializers.map((initializer) =>
    externalTensor(initializer.name, initializer.dataType, initializer.dims, { location: initializer.file, offset: initializer.offset, length: initializer.bytes }),
  );
  const bytes = encodeModel({
    irVersion: IR_VERSION,
    producerName: 'polyquant',
    producerVersion: POLYQUANT_VERSION,
    opsetImport: graph.opsets.map((opset) => ({ domain: opset.domain, version: opset.version })),
    metadataProps: [
      { key: 'polyquant.type', value: model.type },
      { key: 'polyquant.source', value: checkpoint.config.architecture },
      ...(model.calibrated.length === 0 ? [] : [{ key: 'polyquant.calibration', value: calibrationNote(model, gptq) }]),
    ],
    graph: {
      name: 'main_graph',
      node: graph.nodes,
      input: graph.inputs,
      output: graph.outputs,
      initializer: [...graph.inlineInitializers, ...external],
    },
  });
  await writeFile(join(dir, model.file), bytes).catch((error: unknown) => {
    throw ioError(join(dir, model.file), 'write the ONNX model', error);
  });
}

const POLYQUANT_VERSION = '0.1.0';

/**
 * The model's `polyquant.calibration` metadata (a JSON string; ONNX metadata_props are strings, which every
 * loader ignores): GPTQ, its settings, which weights, and the caller's provenance (calibration texts, chunks).
 */
function calibrationNote(model: OnnxPlannedModel, gptq: ConvertToOnnxOptions['gptq']): string {
  return JSON.stringify({
    method: 'gptq',
    dampening: gptq?.dampening ?? DEFAULT_GPTQ_DAMPENING,
    tensors: model.calibrated,
    ...gptq?.provenance,
  });
}

async function writeFolderFiles(dir: string, checkpoint: Checkpoint, models: readonly OnnxPlannedModel[], options: Omit<GraphOptions, 'type'>): Promise<void> {
  const json = (name: string, value: unknown): Promise<void> => writeFile(join(dir, name), `${JSON.stringify(value, null, 2)}\n`);
  const { config } = checkpoint;
  const externalData = Object.fromEntries(models.map((model) => [onnxModelFileName(model.type), model.dataFiles.length]));
  await json('config.json', {
    ...checkpoint.rawConfig,
    model_type: 'gpt_neox',
    'transformers.js_config': { use_external_data_format: externalData },
  });
  const generation = checkpoint.tokenizer.generationConfig ?? {
    bos_token_id: config.bosTokenId,
    eos_token_id: config.eosTokenId,
  };
  await json(TOKENIZER_FILE_NAMES.generationConfig, generation);
  for (const name of [TOKENIZER_FILE_NAMES.tokenizer, TOKENIZER_FILE_NAMES.tokenizerConfig, TOKENIZER_FILE_NAMES.specialTokensMap]) {
    const source = join(checkpoint.tokenizer.dir, name);
    if (await pathExists(source)) await copyFile(source, join(dir, name));
  }
  if (!(await pathExists(join(dir, TOKENIZER_FILE_NAMES.tokenizerConfig)))) {
    // transformers.js' AutoTokenizer reads tokenizer_config.json; GPT-NeoX's fast tokenizer class.
    await json(TOKENIZER_FILE_NAMES.tokenizerConfig, { tokenizer_class: 'GPTNeoXTokenizer' });
  }
  await json('genai_config.json', genaiConfig(config, checkpoint, models, options));
}

/** onnxruntime-genai's config for one of the models (specs/onnx.md §1.6): the q4 one when written. */
function genaiConfig(config: NeoXConfig, checkpoint: Checkpoint, models: readonly OnnxPlannedModel[], options: Omit<GraphOptions, 'type'>): unknown {
  const preferred = (['q4', 'q4f16', 'q8', 'fp16', 'fp32'] as const).find((type) => models.some((model) => model.type === type)) as OnnxTypeName;
  const gqa = options.attention === 'gqa';
  const eos = config.eosTokenId ?? 0;
  const pad = typeof checkpoint.rawConfig.pad_token_id === 'number' ? checkpoint.rawConfig.pad_token_id : eos;
  return {
    model: {
      bos_token_id: config.bosTokenId ?? 0,
      context_length: config.maxPositionEmbeddings,
      decoder: {
        session_options: { log_id: 'onnxruntime-genai', provider_options: [] },
        filename: `onnx/${onnxModelFileName(preferred)}`,
        head_size: config.headDim,
        hidden_size: config.hiddenSize,
        inputs: {
          input_ids: 'input_ids',
          attention_mask: 'attention_mask',
          ...(!gqa && { position_ids: 'position_ids' }),
          past_key_names: 'past_key_values.%d.key',
          past_value_names: 'past_key_values.%d.value',
        },
        outputs: { logits: 'logits', present_key_names: 'present.%d.key', present_value_names: 'present.%d.value' },
        num_attention_heads: config.numHeads,
        num_hidden_layers: config.numLayers,
        num_key_value_heads: config.numHeads,
      },
      eos_token_id: eos,
      pad_token_id: pad,
      type: 'decoder',
      vocab_size: config.vocabSize,
    },
    search: {
      diversity_penalty: 0.0,
      do_sample: false,
      early_stopping: true,
      length_penalty: 1.0,
      max_length: config.maxPositionEmbeddings,
      min_length: 0,
      no_repeat_ngram_size: 0,
      num_beams: 1,
      num_return_sequences: 1,
      // Sharing needs GQA's fixed-size cache; the plain graph grows its cache by Concat.
      past_present_share_buffer: gqa,
      repetition_penalty: 1.0,
      temperature: 1.0,
      top_k: 50,
      top_p: 1.0,
    },
  };
}
