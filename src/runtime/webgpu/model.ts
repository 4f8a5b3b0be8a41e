/// <reference types="@webgpu/types" />
/**
 * GPT-NeoX on WebGPU: transformers' GPTNeoXForCausalLM forward (modeling_gpt_neox.py) over an MLC tensor
 * cache folder, batch 1, with a KV cache. Every step in float32:
 *
 *   embed_in gather (dequantized) → per layer: input_layernorm → query_key_value (+bias) → rotary on the
 *   first rotary_pct of each head of q and k (rotate-half), k and v appended to the cache → causal
 *   softmax(q·kᵀ·head_dim^-½)·v → dense (+bias) → post_attention_layernorm → dense_h_to_4h (+bias) → exact
 *   GELU → dense_4h_to_h (+bias) → residual: parallel (x + attn + mlp, added as transformers adds them) or
 *   sequential → final_layer_norm → embed_out → logits.
 *
 * A forward call runs its tokens in steps of `stepTokens` (activations are sized for one step), records
 * every step's dispatches into one command encoder, submits once and maps the logits once. Only when the
 * logits of a call would pass maxBufferSize is the call cut into several such submissions.
 *
 * The QKV rows are MLC's [q all heads; k all heads; v all heads] (the converter re-lays HF's per-head
 * interleave), which is also what the reference engine computes with.
 */
import { rotaryTables } from '../../arch/gpt-neox.js';
import { parseTensorCache, type TensorCacheManifest, type TensorCacheRecord, tensorCacheRecordMap, storedWeight, TENSOR_CACHE_FILE } from '../../converters/webgpu/manifest.js';
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import { CHAT_CONFIG_FILE, parseChatConfig, type WebGpuModelConfig } from './config.js';
import { GpuContext, type GpuContextOptions, Recorder } from './gpu.js';
import type { Epilogue, KernelFamily, ScaleFormat, WeightFormat } from './kernels.js';
import {
  type AttentionShape,
  gatherSource,
  layerNormSource,
  type MatmulCall,
  matmulSource,
  recordAttention,
  recordGather,
  recordLayerNorm,
  recordMatmul,
  recordRope,
  ropeSource,
  SCORES_SOURCE,
  softmaxSource,
  VALUES_SOURCE,
} from './ops.js';
import type { WeightSource } from './source.js';
import { allocateMatrix, destroyMatrix, type MatrixSpec, type RecordUse, type StreamOptions, streamShards, type WeightMatrix, writePadded } from './weights.js';

export interface WebGpuModelOptions extends GpuContextOptions, StreamOptions {
  /** The adapter's info (for choosing the kernel family) when the device does not expose `adapterInfo`. */
  readonly adapterInfo?: GPUAdapterInfo;
  /** Longest sequence a cache may hold (rotary tables, attention scratch). Default: context_window_size. */
  readonly contextLength?: number;
  /** Tokens pushed through the layers together (activation buffers hold one step). Default 128. */
  readonly stepTokens?: number;
}

export interface ForwardOptions {
  /** Logits are returned for positions logitsFrom … T − 1 of the call (default 0: every position). */
  readonly logitsFrom?: number;
}

export type { LoadProgress } from './weights.js';

interface LayerWeights {
  readonly inputNormWeight: GPUBuffer;
  readonly inputNormBias: GPUBuffer;
  readonly postNormWeight: GPUBuffer;
  readonly postNormBias: GPUBuffer;
  readonly qkv: WeightMatrix;
  readonly qkvBias: GPUBuffer;
  readonly dense: WeightMatrix;
  readonly denseBias: GPUBuffer;
  readonly up: WeightMatrix;
  readonly upBias: GPUBuffer;
  readonly down: WeightMatrix;
  readonly downBias: GPUBuffer;
}

interface Activations {
  readonly residual: GPUBuffer;
  readonly normed: GPUBuffer;
  readonly qkv: GPUBuffer;
  readonly context: GPUBuffer;
  readonly attention: GPUBuffer;
  readonly mlp: GPUBuffer;
  readonly scores: GPUBuffer;
  readonly logits: GPUBuffer;
}

/** A KV cache: `length` positions filled, room for `capacity`. Made by WebGpuModel.newCache. */
export class WebGpuKvCache {
  /** Positions filled (the next token's position). */
  length = 0;
  disposed = false;

  constructor(
    readonly capacity: number,
    readonly keys: readonly GPUBuffer[],
    readonly values: readonly GPUBuffer[],
    readonly owner: WebGpuModel,
  ) {}

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const buffer of [...this.keys, ...this.values]) buffer.destroy();
  }
}

const STORAGE = () => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
const DEFAULT_STEP_TOKENS = 128;

/** Which stored layout a matrix has, from its records (the six WebGPU layouts, and MLC's own files). */
function matrixSpec(records: ReadonlyMap<string, TensorCacheRecord>, name: string, N: number, K: number, file: string): { spec: MatrixSpec; weight: string; scales: string | undefined } {
  const stored = storedWeight(records, name, file);
  const fail = (detail: string, tensor: string): never => {
    throw new PolyquantError(ERROR_CODES.MALFORMED, detail, { file, tensor });
  };
  const floatDType = (record: TensorCacheRecord): 'f16' | 'f32' => {
    if (record.dtype === 'float16') return 'f16';
    if (record.dtype === 'float32' || record.dtype === 'bfloat16') return 'f32';
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `dtype ${record.dtype} is not one the WebGPU runtime reads for this tensor (float16, float32, bfloat16)`, { file, tensor: record.name });
  };
  if (stored.kind === 'no-quant') {
    const record = stored.weight;
    if (record.shape.length !== 2 || record.shape[0] !== N || record.shape[1] !== K) fail(`shape [${record.shape.join(', ')}]; the config implies [${N}, ${K}]`, record.name);
    return { spec: { name, format: floatDType(record), N, K }, weight: record.name, scales: undefined };
  }
  const { qWeight, qScale } = stored;
  const groups = Math.ceil(K / 32);
  if (qWeight.dtype !== 'uint32') fail(`dtype ${qWeight.dtype}; a quantized weight is stored as uint32 words`, qWeight.name);
  const words = qWeight.shape[1];
  if (qWeight.shape.length !== 2 || qWeight.shape[0] !== N || (words !== groups * 4 && words !== groups * 8)) {
    fail(`shape [${qWeight.shape.join(', ')}]; for [${N}, ${K}] the config implies [${N}, ${groups * 4}] (int4) or [${N}, ${groups * 8}] (int8) in groups of 32`, qWeight.name);
  }
  if (qScale.shape.length !== 2 || qScale.shape[0] !== N || qScale.shape[1] !== groups) fail(`shape [${qScale.shape.join(', ')}]; expected [${N}, ${groups}]`, qScale.name);
  const format: WeightFormat = words === groups * 4 ? 'q4' : 'q8';
  const scale: ScaleFormat = floatDType(qScale);
  return { spec: { name, format, scale, N, K }, weight: qWeight.name, scales: qScale.name };
}

function vectorRecord(records: ReadonlyMap<string, TensorCacheRecord>, name: string, length: number, file: string): TensorCacheRecord {
  const record = records.get(name);
  if (record === undefined) throw new PolyquantError(ERROR_CODES.NOT_FOUND, 'the manifest has no record of this parameter', { file, tensor: name });
  if (record.shape.length !== 1 || record.shape[0] !== length) {
    throw new PolyquantError(ERROR_CODES.MALFORMED, `shape [${record.shape.join(', ')}]; the config implies [${length}]`, { file, tensor: name });
  }
  if (record.dtype !== 'float16' && record.dtype !== 'float32' && record.dtype !== 'bfloat16') {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `dtype ${record.dtype} is not one the WebGPU runtime reads for a vector (float16, float32, bfloat16)`, { file, tensor: name });
  }
  return record;
}

async function readManifestJson(source: WeightSource, name: string): Promise<unknown> {
  try {
    return await source.readJson(name);
  } catch (error) {
    if (error instanceof PolyquantError) throw error;
    throw new PolyquantError(ERROR_CODES.IO, `reading ${name} failed: ${error instanceof Error ? error.message : String(error)}`, { file: source.describe?.(name) ?? name, cause: error });
  }
}

/** What load() builds: the weights, the tables and scratch, and the buffers to free on dispose. */
interface ModelParts {
  readonly embedIn: WeightMatrix;
  readonly embedOut: WeightMatrix;
  readonly layers: readonly LayerWeights[];
  readonly finalNormWeight: GPUBuffer;
  readonly finalNormBias: GPUBuffer;
  readonly cos: GPUBuffer;
  readonly sin: GPUBuffer;
  readonly activations: Activations;
  readonly stepTokens: number;
  readonly contextLength: number;
  readonly verifiedShards: number;
  readonly unverifiedShards: number;
  readonly buffers: readonly GPUBuffer[];
  readonly matrices: readonly WeightMatrix[];
}

export class WebGpuModel {
  /** Tokens per step (see WebGpuModelOptions.stepTokens, lowered to fit the device's binding limit). */
  readonly stepTokens: number;
  /** Longest sequence a cache may hold. */
  readonly contextLength: number;
  /** Shards whose sha256 was checked at load, and those the manifest gives no sha256 for. */
  readonly verifiedShards: number;
  readonly unverifiedShards: number;
  private readonly parts: ModelParts;
  private tokenBuffer: GPUBuffer | undefined;
  private readback: GPUBuffer | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private disposed = false;

  private constructor(
    readonly device: GPUDevice,
    readonly config: WebGpuModelConfig,
    readonly manifest: TensorCacheManifest,
    readonly context: GpuContext,
    parts: ModelParts,
  ) {
    this.parts = parts;
    this.stepTokens = parts.stepTokens;
    this.contextLength = parts.contextLength;
    this.verifiedShards = parts.verifiedShards;
    this.unverifiedShards = parts.unverifiedShards;
  }

  /** `software` or `hardware` kernels (gpu.ts). */
  get family(): KernelFamily {
    return this.context.family;
  }

  /** The stored layout of each matrix kind, e.g. `{ embed: 'q4/f16', linear: 'q4/f16', head: 'q4/f16' }` (for reports). */
  get formats(): { embed: string; linear: string; head: string } {
    const name = (matrix: WeightMatrix) => (matrix.scale === undefined ? matrix.format : `${matrix.format}/${matrix.scale}`);
    const first = this.parts.layers[0];
    return { embed: name(this.parts.embedIn), linear: first === undefined ? '-' : name(first.qkv), head: name(this.parts.embedOut) };
  }

  /** Matrices bound as several row windows (larger than the binding limit), with their window counts. */
  get windowed(): { name: string; windows: number }[] {
    return this.parts.matrices.filter((matrix) => matrix.windows.length > 1).map((matrix) => ({ name: matrix.name, windows: matrix.windows.length }));
  }

  /**
   * Loads a converted folder from `source` onto `device`: `tensor-cache.json` and `mlc-chat-config.json`
   * first (validated, every needed record located and its shape checked before any shard is read), then the
   * shards one by one (sha256 checked), then the kernels are compiled.
   */
  static async load(device: GPUDevice, source: WeightSource, options: WebGpuModelOptions = {}): Promise<WebGpuModel> {
    const describe = (name: string) => source.describe?.(name) ?? name;
    const manifestFile = describe(TENSOR_CACHE_FILE);
    const manifest = parseTensorCache(await readManifestJson(source, TENSOR_CACHE_FILE), manifestFile);
    const config = parseChatConfig(await readManifestJson(source, CHAT_CONFIG_FILE), describe(CHAT_CONFIG_FILE));
    const context = new GpuContext(device, options, options.adapterInfo);
    const { hiddenSize: H, intermediateSize: I, vocabSize: V, numHeads, headDim } = config;
    if (headDim % 4 !== 0) {
      throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `head_dim ${headDim} is not a multiple of 4, which the attention kernels read as vec4`, { file: describe(CHAT_CONFIG_FILE) });
    }
    const contextLength = options.contextLength ?? config.contextWindowSize;
    if (!Number.isSafeInteger(contextLength) || contextLength < 1 || contextLength > 1 << 20) {
      throw new PolyquantError(ERROR_CODES.USAGE, `contextLength is ${contextLength}; expected an integer from 1 to ${1 << 20}`);
    }
    const records = tensorCacheRecordMap(manifest);
    const uses = new Map<string, RecordUse>();
    const owned = { buffers: [] as GPUBuffer[], matrices: [] as WeightMatrix[] };
    const release = () => {
      for (const buffer of owned.buffers) buffer.destroy();
      for (const matrix of owned.matrices) destroyMatrix(matrix);
    };
    try {
      // Locate and check every record first: nothing is allocated or read for a folder that cannot load.
      const matrixPlan = (name: string, N: number, K: number) => matrixSpec(records, name, N, K, manifestFile);
      const vectorPlan = (name: string, length: number) => vectorRecord(records, name, length, manifestFile);
      const plans = {
        embedIn: matrixPlan('gpt_neox.embed_in.weight', V, H),
        embedOut: matrixPlan('embed_out.weight', V, H),
        finalWeight: vectorPlan('gpt_neox.final_layer_norm.weight', H),
        finalBias: vectorPlan('gpt_neox.final_layer_norm.bias', H),
        layers: Array.from({ length: config.numLayers }, (_, layer) => {
          const prefix = `gpt_neox.layers.${layer}.`;
          return {
            inputNormWeight: vectorPlan(`${prefix}input_layernorm.weight`, H),
            inputNormBias: vectorPlan(`${prefix}input_layernorm.bias`, H),
            postNormWeight: vectorPlan(`${prefix}post_attention_layernorm.weight`, H),
            postNormBias: vectorPlan(`${prefix}post_attention_layernorm.bias`, H),
            qkv: matrixPlan(`${prefix}attention.query_key_value.weight`, 3 * H, H),
            qkvBias: vectorPlan(`${prefix}attention.query_key_value.bias`, 3 * H),
            dense: matrixPlan(`${prefix}attention.dense.weight`, H, H),
            denseBias: vectorPlan(`${prefix}attention.dense.bias`, H),
            up: matrixPlan(`${prefix}mlp.dense_h_to_4h.weight`, I, H),
            upBias: vectorPlan(`${prefix}mlp.dense_h_to_4h.bias`, I),
            down: matrixPlan(`${prefix}mlp.dense_4h_to_h.weight`, H, I),
            downBias: vectorPlan(`${prefix}mlp.dense_4h_to_h.bias`, H),
          };
        }),
      };
      const matrix = (plan: ReturnType<typeof matrixPlan>): WeightMatrix => {
        let created: WeightMatrix;
        try {
          created = allocateMatrix(context, plan.spec);
        } catch (error) {
          if (error instanceof PolyquantError) throw new PolyquantError(error.code, error.detail, { file: manifestFile, tensor: plan.weight, hint: error.hint, cause: error });
          throw error;
        }
        owned.matrices.push(created);
        uses.set(plan.weight, { kind: 'matrix-weight', matrix: created });
        if (plan.scales !== undefined) uses.set(plan.scales, { kind: 'matrix-scales', matrix: created });
        return created;
      };
      const vector = (record: TensorCacheRecord): GPUBuffer => {
        const length = record.shape[0] as number;
        if (length * 4 > context.deviceMaxBindingBytes) {
          throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `${length} float32 values pass the binding limit ${context.deviceMaxBindingBytes}`, { file: manifestFile, tensor: record.name });
        }
        const buffer = context.createBuffer(length * 4, STORAGE(), record.name);
        owned.buffers.push(buffer);
        uses.set(record.name, { kind: 'vector', buffer, length });
        return buffer;
      };
      // Allocation failures surface through an error scope, not as buffers that silently stay invalid.
      device.pushErrorScope('out-of-memory');
      const embedIn = matrix(plans.embedIn);
      const layers: LayerWeights[] = plans.layers.map((plan) => ({
        inputNormWeight: vector(plan.inputNormWeight),
        inputNormBias: vector(plan.inputNormBias),
        postNormWeight: vector(plan.postNormWeight),
        postNormBias: vector(plan.postNormBias),
        qkv: matrix(plan.qkv),
        qkvBias: vector(plan.qkvBias),
        dense: matrix(plan.dense),
        denseBias: vector(plan.denseBias),
        up: matrix(plan.up),
        upBias: vector(plan.upBias),
        down: matrix(plan.down),
        downBias: vector(plan.downBias),
      }));
      const finalNormWeight = vector(plans.finalWeight);
      const finalNormBias = vector(plans.finalBias);
      const embedOut = matrix(plans.embedOut);
      const outOfMemory = await device.popErrorScope();
      if (outOfMemory !== null) {
        const bytes = owned.matrices.reduce((sum, entry) => sum + entry.weight.size + (entry.scales?.size ?? 0), 0);
        throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `the device ran out of memory allocating the weights (${bytes} bytes): ${outOfMemory.message}`, {
          file: manifestFile,
          hint: 'use a smaller type (q4f16_1) or a device with more memory',
        });
      }

      const streamed = await streamShards(device, source, manifest, uses, options);

      // Rotary tables exactly as the reference engine builds them (float32 angles, cos/sin in double).
      const half = config.rotaryDims / 2;
      const tables = rotaryTables(config.rotaryDims, config.rotaryBase, contextLength);
      const cos = context.createBuffer(Math.max(4, tables.cos.byteLength), STORAGE(), 'rotary cos');
      const sin = context.createBuffer(Math.max(4, tables.sin.byteLength), STORAGE(), 'rotary sin');
      owned.buffers.push(cos, sin);
      if (half > 0) {
        writePadded(device, cos, tables.cos);
        writePadded(device, sin, tables.sin);
      }

      const stepTokens = chooseStepTokens(context, config, contextLength, options.stepTokens ?? DEFAULT_STEP_TOKENS);
      const activation = (floats: number, label: string) => {
        const buffer = context.createBuffer(floats * 4, STORAGE(), label);
        owned.buffers.push(buffer);
        return buffer;
      };
      const S = stepTokens;
      const activations: Activations = {
        residual: activation(S * H, 'residual'),
        normed: activation(S * H, 'normed'),
        qkv: activation(S * 3 * H, 'qkv'),
        context: activation(S * H, 'attention context'),
        attention: activation(S * H, 'attention output'),
        mlp: activation(S * I, 'mlp hidden'),
        scores: activation(numHeads * S * contextLength, 'attention scores'),
        logits: activation(S * V, 'logits'),
      };
      const model = new WebGpuModel(device, config, manifest, context, {
        embedIn,
        embedOut,
        layers,
        finalNormWeight,
        finalNormBias,
        cos,
        sin,
        activations,
        stepTokens,
        contextLength,
        verifiedShards: streamed.verifiedShards,
        unverifiedShards: streamed.unverifiedShards,
        buffers: owned.buffers,
        matrices: owned.matrices,
      });
      await model.compile();
      return model;
    } catch (error) {
      release();
      throw error;
    }
  }

  /** Compiles every kernel a forward may run (each variant once; the context caches them). */
  private async compile(): Promise<void> {
    const context = this.context;
    const sources = new Set<string>([gatherSource(context, this.parts.embedIn), layerNormSource(context), ropeSource(context), SCORES_SOURCE, softmaxSource(context), VALUES_SOURCE]);
    // One token, and blocks below and from 8 tokens (ops.ts matmulVariant picks 1, 4 or 8 rows per invocation).
    for (const T of [1, 2, 8]) {
      for (const call of this.matmulCalls(T)) sources.add(matmulSource(context, call.matrix, call));
    }
    await Promise.all([...sources].map((source) => context.pipeline(source)));
  }

  /** The matmul variants of one step (one per distinct shape/epilogue), for compiling. */
  private matmulCalls(T: number): (Pick<MatmulCall, 'T' | 'bias' | 'epilogue' | 'activation'> & { matrix: WeightMatrix })[] {
    const layer = this.parts.layers[0];
    const head = { matrix: this.parts.embedOut, T, bias: undefined, epilogue: 'store' as Epilogue };
    if (layer === undefined) return [head];
    const parallel = this.config.useParallelResidual;
    return [
      { matrix: layer.qkv, T, bias: layer.qkvBias, epilogue: 'store' },
      { matrix: layer.dense, T, bias: layer.denseBias, epilogue: parallel ? 'store' : 'add' },
      { matrix: layer.up, T, bias: layer.upBias, epilogue: 'gelu', activation: this.config.activation },
      { matrix: layer.down, T, bias: layer.downBias, epilogue: parallel ? 'add-accumulate' : 'add' },
      head,
    ];
  }

  /** A KV cache for up to `capacity` positions (default: contextLength). */
  newCache(capacity: number = this.contextLength): WebGpuKvCache {
    this.checkOpen();
    if (!Number.isSafeInteger(capacity) || capacity < 1 || capacity > this.contextLength) {
      throw new PolyquantError(ERROR_CODES.USAGE, `cache capacity is ${capacity}; expected an integer from 1 to the model's context length ${this.contextLength}`);
    }
    const bytes = capacity * this.config.hiddenSize * 4;
    if (bytes > this.context.deviceMaxBindingBytes) {
      throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `a layer's KV cache of ${capacity} positions takes ${bytes} bytes, past the binding limit ${this.context.deviceMaxBindingBytes}`, {
        hint: 'use a smaller capacity',
      });
    }
    const make = (part: string) =>
      Array.from({ length: this.config.numLayers }, (_, layer) => this.context.createBuffer(bytes, GPUBufferUsage.STORAGE, `layer ${layer} ${part}`));
    return new WebGpuKvCache(capacity, make('keys'), make('values'), this);
  }

  /** Forgets every position from `length` on (the next forward continues at `length`). */
  truncate(cache: WebGpuKvCache, length: number): void {
    this.checkCache(cache);
    if (!Number.isSafeInteger(length) || length < 0 || length > cache.length) {
      throw new PolyquantError(ERROR_CODES.USAGE, `cannot truncate a cache of ${cache.length} positions to ${length}`);
    }
    cache.length = length;
  }

  /**
   * Runs `tokens` at positions cache.length … and appends them to the cache; resolves to the logits of
   * positions logitsFrom … T − 1 of the call ([rows × vocab], float32; row i predicts the token after
   * tokens[logitsFrom + i]). Calls are queued: one forward runs at a time.
   */
  forward(tokens: Int32Array, cache: WebGpuKvCache, options: ForwardOptions = {}): Promise<Float32Array> {
    this.checkOpen();
    this.checkCache(cache);
    const T = tokens.length;
    const logitsFrom = options.logitsFrom ?? 0;
    if (!Number.isSafeInteger(logitsFrom) || logitsFrom < 0 || logitsFrom > T) {
      throw new PolyquantError(ERROR_CODES.USAGE, `logitsFrom is ${logitsFrom}; expected an integer from 0 to the ${T} tokens given`);
    }
    const V = this.config.vocabSize;
    for (let index = 0; index < T; index += 1) {
      const id = tokens[index] as number;
      if (!Number.isInteger(id) || id < 0 || id >= V) {
        throw new PolyquantError(ERROR_CODES.USAGE, `token id ${id} at index ${index} is outside the vocabulary 0 … ${V - 1}`);
      }
    }
    if (cache.length + T > cache.capacity) {
      throw new PolyquantError(ERROR_CODES.USAGE, `the cache holds ${cache.length} of ${cache.capacity} positions; ${T} more do not fit`, {
        hint: 'truncate the cache or make one with a larger capacity',
      });
    }
    const past = cache.length;
    // The cache advances now, so calls queued behind this one see the right position.
    cache.length = past + T;
    const run = this.queue.then(() => this.run(Int32Array.from(tokens), cache, past, logitsFrom));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async run(tokens: Int32Array, cache: WebGpuKvCache, past: number, logitsFrom: number): Promise<Float32Array> {
    const T = tokens.length;
    const V = this.config.vocabSize;
    const rows = T - logitsFrom;
    const out = new Float32Array(rows * V);
    if (T === 0) return out;
    this.uploadTokens(tokens);
    // Each submission's logits must fit one readback buffer (maxBufferSize).
    const rowsPerPart = Math.max(1, Math.floor(this.context.maxBufferSize / (V * 4)));
    let start = 0;
    while (start < T) {
      // A part covers tokens [start, end): as many logits rows as fit, plus the rows before logitsFrom.
      const end = Math.min(T, Math.max(start, logitsFrom) + rowsPerPart);
      const firstRow = Math.max(start, logitsFrom);
      const partRows = end - firstRow;
      const readback = partRows > 0 ? this.readbackBuffer(partRows * V * 4) : undefined;
      const recorder = new Recorder(this.context);
      for (let stepStart = start; stepStart < end; stepStart += this.stepTokens) {
        const count = Math.min(this.stepTokens, end - stepStart);
        this.recordStep(recorder, cache, stepStart, count, past + stepStart, firstRow, readback);
      }
      // A rejected dispatch would otherwise only log a warning and leave the logits stale.
      this.device.pushErrorScope('validation');
      this.device.queue.submit([recorder.finish()]);
      const rejected = this.device.popErrorScope();
      const fail = (detail: string, cause?: unknown) =>
        new PolyquantError(ERROR_CODES.UNSUPPORTED, `the WebGPU device rejected the forward pass: ${detail}`, { cause, hint: 'the device may have been lost (a driver reset); load the model again' });
      try {
        if (readback !== undefined) {
          await readback.mapAsync(GPUMapMode.READ, 0, partRows * V * 4);
          out.set(new Float32Array(readback.getMappedRange(0, partRows * V * 4)), (firstRow - logitsFrom) * V);
          readback.unmap();
        } else {
          await this.device.queue.onSubmittedWorkDone();
        }
      } catch (error) {
        const scoped = await rejected;
        throw fail(scoped?.message ?? (error instanceof Error ? error.message : String(error)), error);
      }
      const error = await rejected;
      if (error !== null) throw fail(error.message);
      start = end;
    }
    return out;
  }

  /** One step: tokens [stepStart, stepStart + T) of the call at positions position0 …; logits rows ≥ firstRow copied to `readback`. */
  private recordStep(recorder: Recorder, cache: WebGpuKvCache, stepStart: number, T: number, position0: number, firstRow: number, readback: GPUBuffer | undefined): void {
    const context = this.context;
    const { hiddenSize: H, numHeads, headDim, rotaryDims, layerNormEps, useParallelResidual, vocabSize: V, activation } = this.config;
    const { activations: a, embedIn, embedOut, layers, cos, sin, finalNormWeight, finalNormBias } = this.parts;
    recordGather(recorder, context, embedIn, this.tokenBuffer as GPUBuffer, stepStart, T, a.residual);
    const shape: AttentionShape = { T, past: position0, H, headDim, heads: numHeads, rotaryDims, capacity: cache.capacity };
    for (const [index, layer] of layers.entries()) {
      const keys = cache.keys[index] as GPUBuffer;
      const values = cache.values[index] as GPUBuffer;
      recordLayerNorm(recorder, context, a.residual, a.normed, layer.inputNormWeight, layer.inputNormBias, T, H, layerNormEps);
      recordMatmul(recorder, context, layer.qkv, { x: a.normed, y: a.qkv, T, bias: layer.qkvBias });
      recordRope(recorder, context, shape, a.qkv, keys, values, cos, sin);
      recordAttention(recorder, context, shape, a.qkv, keys, values, a.scores, a.context);
      if (useParallelResidual) {
        // x + attn(ln1(x)) + mlp(ln2(x)): the MLP output plus the attention output, then plus x.
        recordMatmul(recorder, context, layer.dense, { x: a.context, y: a.attention, T, bias: layer.denseBias });
        recordLayerNorm(recorder, context, a.residual, a.normed, layer.postNormWeight, layer.postNormBias, T, H, layerNormEps);
        recordMatmul(recorder, context, layer.up, { x: a.normed, y: a.mlp, T, bias: layer.upBias, epilogue: 'gelu', activation });
        recordMatmul(recorder, context, layer.down, { x: a.mlp, y: a.residual, T, bias: layer.downBias, epilogue: 'add-accumulate', r: a.attention });
      } else {
        // h = x + attn(ln1(x)); out = h + mlp(ln2(h)).
        recordMatmul(recorder, context, layer.dense, { x: a.context, y: a.attention, T, bias: layer.denseBias, epilogue: 'add', r: a.residual });
        recordLayerNorm(recorder, context, a.attention, a.normed, layer.postNormWeight, layer.postNormBias, T, H, layerNormEps);
        recordMatmul(recorder, context, layer.up, { x: a.normed, y: a.mlp, T, bias: layer.upBias, epilogue: 'gelu', activation });
        recordMatmul(recorder, context, layer.down, { x: a.mlp, y: a.residual, T, bias: layer.downBias, epilogue: 'add', r: a.attention });
      }
    }
    if (readback === undefined || stepStart + T <= firstRow) return;
    recordLayerNorm(recorder, context, a.residual, a.normed, finalNormWeight, finalNormBias, T, H, layerNormEps);
    recordMatmul(recorder, context, embedOut, { x: a.normed, y: a.logits, T });
    const skip = Math.max(0, firstRow - stepStart);
    recorder.copy(a.logits, skip * V * 4, readback, (stepStart + skip - firstRow) * V * 4, (T - skip) * V * 4);
  }

  private uploadTokens(tokens: Int32Array): void {
    const bytes = tokens.length * 4;
    if (this.tokenBuffer === undefined || this.tokenBuffer.size < bytes) {
      this.tokenBuffer?.destroy();
      this.tokenBuffer = this.context.createBuffer(Math.max(bytes, 1024), STORAGE(), 'tokens');
    }
    this.device.queue.writeBuffer(this.tokenBuffer, 0, Uint32Array.from(tokens));
  }

  private readbackBuffer(bytes: number): GPUBuffer {
    if (this.readback === undefined || this.readback.size < bytes) {
      this.readback?.destroy();
      this.readback = this.context.createBuffer(bytes, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST, 'logits readback');
    }
    return this.readback;
  }

  /** Frees every GPU buffer of the model (caches made by newCache are the caller's to dispose). The device stays. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const buffer of this.parts.buffers) buffer.destroy();
    for (const matrix of this.parts.matrices) destroyMatrix(matrix);
    this.tokenBuffer?.destroy();
    this.readback?.destroy();
    this.context.destroy();
  }

  private checkOpen(): void {
    if (this.disposed) throw new PolyquantError(ERROR_CODES.USAGE, 'the WebGPU model is disposed');
  }

  private checkCache(cache: WebGpuKvCache): void {
    if (!(cache instanceof WebGpuKvCache) || cache.owner !== this) throw new PolyquantError(ERROR_CODES.USAGE, 'the cache was not made by this model (newCache)');
    if (cache.disposed) throw new PolyquantError(ERROR_CODES.USAGE, 'the cache is disposed');
  }
}

/** The largest step ≤ `requested` whose activations each fit the device's binding limit and buffer size. */
function chooseStepTokens(context: GpuContext, config: WebGpuModelConfig, contextLength: number, requested: number): number {
  if (!Number.isSafeInteger(requested) || requested < 1) throw new PolyquantError(ERROR_CODES.USAGE, `stepTokens is ${requested}; expected a positive integer`);
  const limit = Math.min(context.deviceMaxBindingBytes, context.maxBufferSize);
  const perToken = Math.max(3 * config.hiddenSize, config.intermediateSize, config.vocabSize, config.numHeads * contextLength) * 4;
  const fits = Math.floor(limit / perToken);
  if (fits < 1) {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `one token's activations (${perToken} bytes for the largest) pass the device's binding limit ${limit}`, {
      hint: 'use a smaller context length',
    });
  }
  return Math.min(requested, fits, contextLength);
}
