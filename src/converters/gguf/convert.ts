/**
 * HF GPT-NeoX checkpoint → GGUF in one pass (specs/gguf.md §1–§3, §5): every tensor is streamed in row
 * chunks, widened to float32, reordered (fused QKV), quantized by the worker pool to the type llama-quantize
 * would give it, and written by writeGguf (planned first, atomic). The result matches, tensor for tensor and
 * byte for byte, what llama-quantize writes from our own F32 GGUF — same tensor order (§5.1), same types
 * (quant/policy.ts, llama-quantize's options included), same quantizers — and with the KVs ordered as
 * llama-quantize leaves them, the whole file does too. A GGUF file as input goes to requantize.ts.
 */
import { basename, join } from 'node:path';
import { expectedTensors, type NeoXConfig, type NeoXTensorRole } from '../../arch/gpt-neox.js';
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import { pathExists, readWholeFile } from '../../io/file.js';
import { checkOutputFile, refuseOverwritingInputs } from '../../io/output.js';
import type { GgmlTypeName } from '../../quant/ggml-types.js';
import { DEFAULT_GPTQ_DAMPENING, type GptqFactor } from '../../quant/gptq.js';
import { isGptqGgmlType } from '../../quant/gptq-ggml.js';
import type { ErrorStatsResult } from '../../quant/metrics.js';
import { GGUF_FILE_TYPES, type GgufFileType, planTensorTypes, requireGgufFileType, type TypeOverrides } from '../../quant/policy.js';
import { QuantPool, type RowChunk } from '../../quant/pool.js';
import { type Checkpoint, MODEL_CARD_FILE, modelFolderFiles, readCheckpoint, type WeightsPreference } from '../../readers/checkpoint.js';
import type { TensorRef } from '../../readers/tensor-ref.js';
import { type GgufKV, planGguf } from './format.js';
import { compareLlamaQuantizeOrder, ggufShape, ggufTensorName, type QkvLayout, reorderQkvRows } from './names.js';
import { readAsF32, storedQkvRowChunks, storedRowChunks, widenChunks } from './source-rows.js';
import {
  CHUNK_ELEMENTS,
  checkImatrix,
  checkTypeChoices,
  closingKvs,
  type ImatrixProvenance,
  type LlamaQuantizeOptions,
  measureErrors,
  typeOverridesOf,
  writeGgufThroughPool,
} from './llama-quantize-options.js';
import { isGgufInput, requantizeGguf } from './requantize.js';
import { ggufTokenizerMetadata } from './tokenizer-metadata.js';

export { CHUNK_ELEMENTS, GGML_QUANTIZATION_VERSION } from './llama-quantize-options.js';

/** GGUF `general.architecture` for GPT-NeoX (src/llama-arch.cpp LLM_ARCH_NAMES). */
export const GGUF_ARCHITECTURE = 'gptneox';
/** A model card larger than this is not read for its license. */
const MAX_MODEL_CARD_BYTES = 1 << 20;

export interface ConvertToGgufOptions extends LlamaQuantizeOptions {
  /**
   * GGUF file type in any case (`f16`, `q8_0`, `Q4_K_M`, …; quant/policy.ts GGUF_FILE_TYPES), or one of
   * llama-quantize's aliases (`Q4_K` = `q4_k_m`).
   */
  readonly type: string;
  /** Output path; required unless `dryRun`. */
  readonly out?: string | undefined;
  /** HF input: which weights to read when the folder has both safetensors and .bin. */
  readonly weights?: WeightsPreference | undefined;
  /**
   * Importance weights (llama.cpp imatrix) by GGUF tensor name, one per column (ne[0]), as `readImatrix`
   * (imatrix.ts) returns them; their presence also switches the policy's imatrix-dependent choices.
   */
  readonly imatrix?: ReadonlyMap<string, Float32Array> | undefined;
  /** Where `imatrix` came from: recorded as quantize.imatrix.* KVs, as llama-quantize --imatrix does. */
  readonly imatrixProvenance?: ImatrixProvenance | undefined;
  /**
   * GGUF input: requantize tensors that are already quantized (dequantized to float32, then quantized
   * again, as llama-quantize --allow-requantize does; the errors of both add up). Refused without it.
   */
  readonly allowRequantize?: boolean | undefined;
  /** Quantizer worker threads; 0 quantizes on this thread. Default: available parallelism. */
  readonly workers?: number | undefined;
  /** Plan only: nothing is read beyond headers and tokenizer files, nothing written. */
  readonly dryRun?: boolean | undefined;
  /**
   * With `dryRun`: also read every tensor, quantize it as the file would hold it, dequantize, and report
   * its error (RMSE, max |error|, SQNR, cosine) against the float32 source. Streams like a conversion.
   */
  readonly error?: boolean | undefined;
  /** HF input: `general.name`; default the model folder's name (conversion/base.py `prepare_metadata` fallback). A GGUF keeps its own. */
  readonly name?: string | undefined;
  /** HF input: `general.license`; default the model card's (README.md front matter `license:`), if any. */
  readonly license?: string | undefined;
  /** HF input: `general.source.url`: where the checkpoint came from, if the caller knows. */
  readonly sourceUrl?: string | undefined;
  /** Output bytes produced so far and in total. */
  readonly onProgress?: ((done: number, total: number) => void) | undefined;
  /**
   * HF input: convert a checkpoint whose weights have more layers than config.json's num_hidden_layers, keeping
   * only the configured ones. Without it such a checkpoint is refused (CONFIG), never silently truncated.
   */
  readonly dropExtraLayers?: boolean | undefined;
  /** Other files the caller read for this conversion (the imatrix): the output may not overwrite them either. */
  readonly inputFiles?: readonly string[] | undefined;
  /**
   * HF input, `--optimize`: calibration Hessians by HF tensor name (calibrate/hessian.ts computeHessians
   * keys them so). Every tensor that has one and whose type has a GPTQ quantizer (quant/gptq-ggml.ts) is
   * quantized with GPTQ error feedback — the same type as without, so the same bytes per tensor and the same
   * file size, standard blocks any llama.cpp reads — and with `imatrix` as its importance weights; the other
   * tensors are quantized as without.
   */
  readonly hessians?: ReadonlyMap<string, { readonly columns: number; readonly matrix: Float64Array }> | undefined;
  /** GPTQ's dampening, a fraction of the Hessian's mean diagonal (gptq.ts; default 0.01). */
  readonly dampening?: number | undefined;
}

export interface GgufPlannedTensor {
  /** HF name the data comes from (GGUF input: the tensor's own name). */
  readonly source: string;
  /** GGUF input: the tensor's type in the input file. */
  readonly sourceType?: GgmlTypeName;
  /** GGUF name. */
  readonly name: string;
  readonly type: GgmlTypeName;
  /** ggml dimensions (ne[0] = row length), the HF shape reversed. */
  readonly ne: readonly number[];
  readonly bytes: number;
  /** Offset of the data from the start of the data section. */
  readonly offset: number;
  /** Quantization error against the float32 source (dry run with `error`). */
  readonly error?: ErrorStatsResult;
  /** Quantized with GPTQ error feedback (`hessians`). */
  readonly gptq?: true;
}

export interface GgufConversionPlan {
  /** The model folder or GGUF file converted, and which of the two it is. */
  readonly input: string;
  readonly inputFormat: 'hf' | 'gguf';
  readonly fileType: GgufFileType;
  /** `general.file_type` (llama_ftype). */
  readonly fileTypeId: number;
  /** In file order: llama-quantize's (whole-model tensors, then block by block, each sorted by name). */
  readonly tensors: readonly GgufPlannedTensor[];
  readonly kvs: readonly GgufKV[];
  readonly dataStart: number;
  readonly fileBytes: number;
  /** The written file, or undefined for a dry run. */
  readonly out: string | undefined;
  /** Conversion notes to report: tokenizer differences, fallback types, tied embeddings, unmatched --tensor-type. */
  readonly warnings: readonly string[];
}

interface TensorJob extends Omit<GgufPlannedTensor, 'bytes' | 'offset'> {
  readonly tensor: TensorRef;
  readonly role: NeoXTensorRole;
  /** With `hessians`: the calibration Hessian GPTQ quantizes this tensor with. */
  readonly hessian?: { readonly columns: number; readonly matrix: Float64Array };
}

/** The GGUF KV that marks GPTQ-optimised weights (`--optimize`); llama.cpp ignores keys it does not know. */
export const OPTIMIZE_KV = 'quantize.polyquant.optimize';
/**
 * Rows per GPTQ task: GPTQ's row pass (gptq.ts) reads the feedback matrix once per 64 rows, and a tensor of
 * a few hundred rows still spreads over every thread.
 */
const GPTQ_ROWS_PER_CHUNK = 64;

/**
 * Converts an HF GPT-NeoX folder — or requantizes a GGUF file (f32/f16/bf16, or quantized with
 * allowRequantize), as llama-quantize does — to a GGUF of `options.type`.
 */
export async function convertToGguf(modelDir: string, options: ConvertToGgufOptions): Promise<GgufConversionPlan> {
  if (await isGgufInput(modelDir)) {
    if (options.hessians !== undefined) {
      throw new PolyquantError(ERROR_CODES.USAGE, 'GPTQ (--optimize) quantizes from the HF model folder, not a GGUF file', { file: modelDir });
    }
    return requantizeGguf(modelDir, options);
  }
  const fileType = requireGgufFileType(options.type);
  const overrides = typeOverridesOf(options);
  if (options.allowRequantize) {
    throw new PolyquantError(ERROR_CODES.USAGE, '--allow-requantize applies to a GGUF input; an HF folder holds no quantized tensors', { file: modelDir });
  }
  if (options.hessians !== undefined && options.error) {
    throw new PolyquantError(ERROR_CODES.USAGE, '--dry-run --error measures round-to-nearest quantization, not --optimize', {
      hint: 'convert with --optimize and measure the file with polyquant verify',
    });
  }
  if (options.error && !options.dryRun) {
    throw new PolyquantError(ERROR_CODES.USAGE, 'quantization error is measured in a dry run', { hint: 'add --dry-run to --error' });
  }
  if (!options.dryRun && (options.out === undefined || options.out === '')) {
    throw new PolyquantError(ERROR_CODES.USAGE, 'no output path given for the GGUF file', { hint: 'pass out, or dryRun to only plan' });
  }
  // The output location is checked before anything is read, and against every input before anything is
  // written: a typo must not cost a whole conversion, and no output may replace a file it is made from.
  const output = options.dryRun ? undefined : await checkOutputFile(options.out as string, '--out');
  const checkpoint = await readCheckpoint(modelDir, { weights: options.weights, extraLayers: options.dropExtraLayers ? 'drop' : 'refuse' });
  if (output !== undefined) {
    const inputs = [...(await modelFolderFiles(checkpoint.dir)), ...checkpoint.weights.files.map((file) => file.path), ...(options.inputFiles ?? [])];
    await refuseOverwritingInputs([output], inputs);
  }
  const { config } = checkpoint;
  const configFile = join(checkpoint.dir, 'config.json');
  if (!config.attentionBias) {
    // llama.cpp's gptneox loader requires attn_qkv.bias and attn_output.bias (src/models/gptneox.cpp).
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, 'attention_bias false: llama.cpp\'s gptneox needs the attention biases', {
      file: configFile,
    });
  }
  const warnings: string[] = [...checkpoint.warnings];
  const jobs = withHessians(planTensors(checkpoint, fileType, options.imatrix, overrides, options, warnings), options.hessians, warnings);
  const tokenizer = ggufTokenizerMetadata(checkpoint.tokenizer, checkpoint.rawConfig, config.vocabSize);
  warnings.push(...tokenizer.warnings);
  const kvs = [
    ...(await generalMetadata(checkpoint, options)),
    ...hyperParameters(config),
    ...tokenizer.kvs,
    // Last and in this order, as llama-quantize leaves them (gguf_set_val_u32 re-appends; llama-quant.cpp),
    // so that a file quantized here and one quantized by llama-quantize from our F32 file match byte for byte.
    ...closingKvs(fileType, options.imatrix === undefined ? undefined : options.imatrixProvenance),
    ...optimizeKvs(jobs, options),
  ] satisfies GgufKV[];

  const layout = planGguf(kvs, jobs);
  const plan: GgufConversionPlan = {
    input: checkpoint.dir,
    inputFormat: 'hf',
    fileType,
    fileTypeId: GGUF_FILE_TYPES[fileType].id,
    tensors: layout.tensors.map((planned, index) => ({
      source: (jobs[index] as TensorJob).source,
      name: planned.name,
      type: planned.type,
      ne: planned.ne,
      bytes: planned.bytes,
      offset: planned.offset,
      ...((jobs[index] as TensorJob).hessian !== undefined && { gptq: true as const }),
    })),
    kvs,
    dataStart: layout.dataStart,
    fileBytes: layout.fileBytes,
    out: options.dryRun ? undefined : options.out,
    warnings,
  };
  if (options.dryRun) {
    if (!options.error) return plan;
    const floats = (index: number) => floatChunks(jobs[index] as TensorJob, config);
    return { ...plan, tensors: await measureErrors(plan.tensors, floats, options) };
  }

  const out = options.out as string;
  // An all-F32 file needs no quantizer threads: workers 0 runs the (unused) pool inline.
  const pool = new QuantPool({ workers: jobs.some((job) => job.type !== 'F32') ? options.workers : 0 });
  const total = plan.tensors.reduce((sum, tensor) => sum + tensor.bytes, 0);
  const factors = new FactorQueue(pool, jobs, options.dampening);
  const encode = (job: TensorJob): AsyncIterable<Uint8Array> => encodeTensor(job, config, pool, options.imatrix?.get(job.name), factors);
  await writeGgufThroughPool(out, kvs, jobs, pool, encode, total, options.onProgress);
  return plan;
}

/**
 * With `hessians`: each job that has one (by HF name) and whose type has a GPTQ quantizer gets it. A
 * Hessian whose size is not the tensor's row length is refused; tensors with one GPTQ cannot fill are
 * named in a warning (they are quantized as without --optimize).
 */
function withHessians(jobs: TensorJob[], hessians: ConvertToGgufOptions['hessians'], warnings: string[]): TensorJob[] {
  if (hessians === undefined) return jobs;
  const unsupported: string[] = [];
  const out = jobs.map((job) => {
    const hessian = hessians.get(job.source);
    if (hessian === undefined) return job;
    const columns = job.ne[0] ?? 0;
    if (hessian.columns !== columns || hessian.matrix.length !== columns * columns) {
      throw new PolyquantError(ERROR_CODES.CONFIG, `the calibration Hessian has ${hessian.columns} columns but the weight's rows have ${columns}`, {
        tensor: job.source,
        hint: 'the Hessians must come from the same model',
      });
    }
    if (!isGptqGgmlType(job.type)) {
      unsupported.push(`${job.name} (${job.type})`);
      return job;
    }
    return { ...job, hessian };
  });
  if (unsupported.length > 0) warnings.push(`--optimize has no GPTQ quantizer for ${unsupported.join(', ')}: quantized as without it`);
  return out;
}

/** quantize.polyquant.optimize and its settings, after llama-quantize's closing KVs, when any tensor is GPTQ-quantized. */
function optimizeKvs(jobs: readonly TensorJob[], options: ConvertToGgufOptions): GgufKV[] {
  if (options.hessians === undefined) return [];
  const count = jobs.filter((job) => job.hessian !== undefined).length;
  return [
    { key: OPTIMIZE_KV, type: 'STRING', value: 'gptq' },
    { key: `${OPTIMIZE_KV}.tensors_count`, type: 'UINT32', value: count },
    { key: `${OPTIMIZE_KV}.dampening`, type: 'FLOAT32', value: options.dampening ?? DEFAULT_GPTQ_DAMPENING },
  ];
}

/**
 * The GPTQ factors of the jobs with a Hessian, made on the pool's threads one tensor ahead of the one being
 * written: while the threads quantize a tensor's rows, one of them factors the next tensor's Hessian (the
 * factorization is K³/6 multiply-adds, the rows K²/2 each; at polyglot-ko-1.3b's dense_4h_to_h, K = 8192,
 * the two are about even).
 */
class FactorQueue {
  private readonly order: readonly TensorJob[];
  private readonly started = new Map<string, Promise<GptqFactor>>();

  constructor(
    private readonly pool: QuantPool,
    jobs: readonly TensorJob[],
    private readonly dampening: number | undefined,
  ) {
    this.order = jobs.filter((job) => job.hessian !== undefined);
  }

  /** The factor of `job` (started now if it was not), and the next job's started. */
  take(job: TensorJob): Promise<GptqFactor> {
    const index = this.order.indexOf(job);
    const factor = this.start(job);
    const next = this.order[index + 1];
    if (next !== undefined) this.start(next);
    this.started.delete(job.name);
    return factor;
  }

  private start(job: TensorJob): Promise<GptqFactor> {
    let factor = this.started.get(job.name);
    if (factor === undefined) {
      const hessian = job.hessian as NonNullable<TensorJob['hessian']>;
      factor = this.pool.gptqFactor(hessian.matrix, hessian.columns, { dampening: this.dampening, tensor: job.name });
      // A failure surfaces when its tensor takes the factor; until then it must not count as unhandled.
      factor.catch(() => undefined);
      this.started.set(job.name, factor);
    }
    return factor;
  }
}

/** Every GGUF tensor with its source, shape and type, in llama-quantize's order. */
function planTensors(
  checkpoint: Checkpoint,
  fileType: GgufFileType,
  imatrix: ReadonlyMap<string, Float32Array> | undefined,
  overrides: TypeOverrides,
  options: ConvertToGgufOptions,
  warnings: string[],
): TensorJob[] {
  const { config } = checkpoint;
  const entries = expectedTensors(config);
  const embedding = entries.find((entry) => entry.role === 'token-embedding');
  const head = entries.find((entry) => entry.role === 'output-head');
  if (head !== undefined && !checkpoint.tensors.has(head.name)) {
    // llama.cpp's gptneox always loads output.weight (src/models/gptneox.cpp), so a tied head is written
    // twice; with output.weight present llama-quantize treats the two as untied, and so does the policy.
    warnings.push('tie_word_embeddings: output.weight is written as a copy of the token embedding');
  }
  const sources: Omit<TensorJob, 'type'>[] = [];
  for (const entry of entries) {
    const tensor =
      checkpoint.tensors.get(entry.name) ??
      (entry.role === 'output-head' && embedding !== undefined ? checkpoint.tensors.get(embedding.name) : undefined);
    if (tensor === undefined) {
      throw new PolyquantError(ERROR_CODES.CONFIG, 'the checkpoint lacks this tensor, which GGUF gptneox requires', {
        file: checkpoint.dir,
        tensor: entry.name,
      });
    }
    sources.push({ source: tensor.name, name: ggufTensorName(entry.role, entry.layer), ne: ggufShape(tensor.shape), tensor, role: entry.role });
  }
  // llama-quantize chooses types in its own tensor order (its counters run in that order), and writes in it.
  sources.sort((a, b) => compareLlamaQuantizeOrder(a.name, b.name));
  const policyModel = { numLayers: config.numLayers, tiedEmbeddings: false, imatrix: imatrix !== undefined };
  const choices = planTensorTypes(fileType, sources, policyModel, overrides);
  checkTypeChoices(fileType, sources, choices, overrides, options, warnings);
  // Tensors llama-quantize leaves alone (norms, biases) stay F32, as the stock converter writes them (§2.5).
  const jobs: TensorJob[] = sources.map((source, index) => ({ ...source, type: choices[index]?.type ?? 'F32' }));

  if (imatrix !== undefined) checkImatrix(imatrix, jobs, warnings);
  return jobs;
}


/**
 * A tensor's rows in GGUF order (QKV reordered), chunk by chunk: as stored for the pool, whose threads
 * widen them (`owned`: each chunk in its own buffer, to be transferred), or widened here to float32.
 */
function sourceChunks(
  job: TensorJob,
  config: NeoXConfig,
  owned: boolean,
  allocate?: (bytes: number) => Uint8Array,
  rowsPerChunk?: number,
): AsyncIterable<RowChunk> {
  const rowLength = job.ne[0] ?? 1;
  const layout: QkvLayout = { numHeads: config.numHeads, headDim: config.headDim };
  const rows = rowsPerChunk ?? CHUNK_ELEMENTS / rowLength;
  if (job.role === 'qkv-weight') return storedQkvRowChunks(job.tensor, layout, rows / layout.headDim, allocate);
  if (job.ne.length === 1) return oneChunk(job.tensor, job.role === 'qkv-bias' ? layout : undefined);
  return storedRowChunks(job.tensor, Math.max(1, Math.floor(rows)), { reuseBuffer: !owned, allocate });
}

/** A tensor's rows in GGUF order as fresh float32 chunks. */
function floatChunks(job: TensorJob, config: NeoXConfig): AsyncIterable<Float32Array> {
  return widenChunks(sourceChunks(job, config, false), job.name);
}

/** One tensor's bytes in its GGUF type, chunk by chunk. */
function encodeTensor(job: TensorJob, config: NeoXConfig, pool: QuantPool, importance: Float32Array | undefined, factors: FactorQueue): AsyncIterable<Uint8Array> {
  if (job.type === 'F32') return asBytes(floatChunks(job, config));
  if (job.hessian !== undefined) return gptqTensor(job, config, pool, importance, factors);
  return pool.quantizeStream({ scheme: job.type, nPerRow: job.ne[0] ?? 1, importance, tensor: job.name }, sourceChunks(job, config, true, (bytes) => pool.buffer(bytes)));
}

/** A tensor quantized with GPTQ: its factor, then its rows in GPTQ-sized chunks through the pool. */
async function* gptqTensor(job: TensorJob, config: NeoXConfig, pool: QuantPool, importance: Float32Array | undefined, factors: FactorQueue): AsyncIterable<Uint8Array> {
  const factor = await factors.take(job);
  const chunks = sourceChunks(job, config, true, (bytes) => pool.buffer(bytes), GPTQ_ROWS_PER_CHUNK);
  yield* pool.quantizeStream({ scheme: job.type, nPerRow: job.ne[0] ?? 1, importance, tensor: job.name, gptq: factor }, chunks);
}

/** A 1-D tensor (norm, bias) whole; the fused QKV bias reordered like the weight's rows. */
async function* oneChunk(tensor: TensorRef, qkv: QkvLayout | undefined): AsyncIterable<Float32Array> {
  const values = await readAsF32(tensor);
  yield qkv === undefined ? values : reorderQkvRows(values, 1, qkv, new Float32Array(values.length));
}

async function* asBytes(chunks: AsyncIterable<Float32Array>): AsyncIterable<Uint8Array> {
  for await (const chunk of chunks) yield new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}

/** general.* as convert_hf_to_gguf.py writes them (gguf-py metadata.py `set_gguf_meta_model`), what we know of them. */
async function generalMetadata(checkpoint: Checkpoint, options: ConvertToGgufOptions): Promise<GgufKV[]> {
  const kvs: GgufKV[] = [
    // gguf-py writes the architecture first; llama.cpp looks keys up by name (specs/gguf.md §1.2).
    { key: 'general.architecture', type: 'STRING', value: GGUF_ARCHITECTURE },
    { key: 'general.type', type: 'STRING', value: 'model' },
    { key: 'general.name', type: 'STRING', value: options.name ?? basename(checkpoint.dir) },
  ];
  const license = options.license ?? (await modelCardLicense(checkpoint.dir));
  if (license !== undefined) kvs.push({ key: 'general.license', type: 'STRING', value: license });
  if (options.sourceUrl !== undefined) kvs.push({ key: 'general.source.url', type: 'STRING', value: options.sourceUrl });
  return kvs;
}

/** `license:` from README.md's YAML front matter (the HF model card), read as metadata.py does. */
async function modelCardLicense(dir: string): Promise<string | undefined> {
  const path = join(dir, MODEL_CARD_FILE);
  if (!(await pathExists(path))) return undefined;
  // Optional metadata: an unreadable or oversized card is skipped, but a FIFO or device is refused like any input.
  const bytes = await readWholeFile(path, 'the model card', MAX_MODEL_CARD_BYTES).catch((error: unknown) => {
    if (error instanceof PolyquantError && error.code === ERROR_CODES.USAGE) throw error;
    return undefined;
  });
  if (bytes === undefined) return undefined;
  const text = new TextDecoder().decode(bytes);
  const front = /^---\r?\n([\s\S]*?)\r?\n---/.exec(text)?.[1];
  const license = front === undefined ? undefined : /^license:\s*["']?([^"'\r\n#]+?)["']?\s*$/m.exec(front)?.[1];
  return license === undefined || license === '' ? undefined : license;
}

/**
 * gptneox.* hyper-parameters, in conversion/gptneox.py `set_gguf_parameters` order, with the KV types
 * llama.cpp checks strictly (specs/gguf.md §2.1). rope.dimension_count is required in practice: its default
 * is the whole head dimension, and polyglot-ko rotates only half of it.
 */
function hyperParameters(config: NeoXConfig): GgufKV[] {
  return [
    { key: 'gptneox.context_length', type: 'UINT32', value: config.maxPositionEmbeddings },
    { key: 'gptneox.embedding_length', type: 'UINT32', value: config.hiddenSize },
    { key: 'gptneox.block_count', type: 'UINT32', value: config.numLayers },
    { key: 'gptneox.feed_forward_length', type: 'UINT32', value: config.intermediateSize },
    { key: 'gptneox.rope.dimension_count', type: 'UINT32', value: config.rotaryDims },
    { key: 'gptneox.rope.freq_base', type: 'FLOAT32', value: config.rotaryBase },
    { key: 'gptneox.attention.head_count', type: 'UINT32', value: config.numHeads },
    { key: 'gptneox.use_parallel_residual', type: 'BOOL', value: config.useParallelResidual },
    { key: 'gptneox.attention.layer_norm_epsilon', type: 'FLOAT32', value: config.layerNormEps },
  ];
}
