/**
 * The onnx engine: an ONNX export run by onnxruntime-node 1.30.0, the runtime transformers.js and ORT
 * GenAI users will have. `verify` compares it with the reference engine on the HF folder, so it answers
 * "does the graph we wrote behave like the checkpoint, in onnxruntime".
 *
 * Input: a folder laid out as a transformers.js repository (`config.json`, `tokenizer.json`,
 * `onnx/model{suffix}.onnx` + `onnx/model{suffix}.onnx_data[_N]`; specs/onnx.md §3.2), one of whose files is
 * chosen by its type, or a single `.onnx` file whose tokenizer and config sit beside it or one folder up.
 *
 * The graph contract is transformers.js' (specs/onnx.md §3.3), which our converter writes: inputs
 * `input_ids` and `attention_mask` [batch_size, …], `position_ids` only when the graph declares it,
 * `past_key_values.{i}.key|value` [batch_size, heads, past, head_dim] in float32 or float16 (the type is
 * read from the session's input metadata); outputs `logits` [batch_size, sequence_length, vocab] (float32,
 * or float16 converted here) and `present.{i}.key|value`. Everything runs with batch 1 and no padding, so
 * the attention mask is all ones and the positions are past … past + n − 1 — what transformers.js feeds
 * (cumsum(mask) − 1) for an unpadded sequence.
 *
 * - A window runs in one call, with an empty past; only `logits` is fetched (the presents are never
 *   copied out). Scores are taken from the rows at positions from − 1 … n − 2.
 * - KOBEST: the context runs once and its presents are fed back as the past of each continuation. On
 *   polyglot-ko-tiny this gives the numbers of one whole pass exactly for fp32, q4 and q4f16, and to
 *   ~1e-6 for fp16 (its kernels round differently for other row counts). Graphs with dynamic int8
 *   quantization (q8) quantize each call's activations with one scale over all of its tokens, so there
 *   every continuation runs with its context in one pass instead (see CALL_DEPENDENT_OPS).
 * - Log-softmax: row-statistics.ts, so a row of logits gets exactly the reference engine's log-sum-exp.
 * - onnxruntime-node runs a session synchronously on the JS thread (inside setImmediate): one request at a
 *   time, with `threads` intra-op threads (default: physical cores, as the llamacpp engine counts them).
 * - Devices: `cpu`; `gpu` tries the CUDA execution provider, then WebGPU, and fails with a typed error when
 *   neither loads; `auto` tries CUDA and otherwise runs on the CPU. `auto` does not try WebGPU: on a
 *   CPU-only machine Dawn may find a software Vulkan adapter (lavapipe, SwiftShader — installed where our
 *   WebGPU runtime is tested) and a run there would be slow and reported as a GPU run.
 *
 * onnxruntime-node is imported lazily: commands that never run an ONNX model never load the native
 * library. The graph is read and its external data checked by converters/onnx/read.ts before a session opens.
 */
import { existsSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { basename, dirname, join, resolve, } from 'node:path';
import type { InferenceSession, Tensor } from 'onnxruntime-node';
import { type NeoXConfig, normaliseNeoXConfig } from '../../arch/gpt-neox.js';
import { findOnnxModels, readOnnxModel } from '../../converters/onnx/read.js';
import { isOnnxTypeName, ONNX_SUBFOLDER, ONNX_TYPE_NAMES, type OnnxTypeName, onnxModelFileName, onnxTypeOfFile } from '../../converters/onnx/types.js';
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import { ioError, pathExists, } from '../../io/file.js';
import { readJsonFile } from '../../readers/json-file.js';
import { loadTokenizer, readTokenizerFiles, type TextTokenizer, TOKENIZER_FILE_NAMES } from '../../readers/tokenizer.js';
import { f16ToF32Array } from '../../tensor/float.js';
import { allocateScoreResult, checkContinuations, checkTokenIds, type Engine, type EngineLimits, resolveScoreOptions, type ScoreOptions, type ScoreResult } from '../engine.js';
import { probeGpuHardware } from './gpu-probe.js';
import { defaultMathThreads } from './llamacpp.js';
import { RowStatistics } from './row-statistics.js';

/** The folder transformers.js loads decoder graphs from (`subfolder = 'onnx'`, models/modeling_utils.js). */

export type OnnxDevice = 'auto' | 'cpu' | 'gpu';
export type OnnxExecutionProvider = 'cpu' | 'cuda' | 'webgpu';

export interface OnnxEngineOptions {
  /** Which `onnx/model{suffix}.onnx` of a folder to run; may be left out when the folder holds one. Not for a `.onnx` path. */
  readonly onnxType?: OnnxTypeName;
  /** `cpu`, `gpu` (CUDA, else WebGPU, else an error) or `auto` (default: CUDA when it loads, else the CPU). */
  readonly device?: OnnxDevice;
  /** onnxruntime intra-op threads. Default: the machine's physical cores. */
  readonly threads?: number;
  /** Longest window accepted. Default: config.json `max_position_embeddings`. */
  readonly contextLength?: number;
}

export interface OnnxEngine extends Engine {
  readonly name: 'onnx';
  /** The .onnx file that runs, absolute. */
  readonly path: string;
  /** Its type, when its name is one of the ONNX type table's (converters/onnx/types.ts). */
  readonly onnxType: OnnxTypeName | undefined;
  /** The execution provider the session was created with. */
  readonly executionProvider: OnnxExecutionProvider;
  /** With device `gpu`: the execution provider (`cuda`, `webgpu`). */
  readonly gpu: string | undefined;
  /** How the execution provider was chosen, in words, for reports and tests. */
  readonly deviceProbe: string;
  /** One request at a time: onnxruntime-node runs a session on the JS thread. */
  readonly parallelism: 1;
  readonly windowParallelism: 1;
  /** config.json's `max_position_embeddings`, when there is a config.json. */
  readonly trainContextLength: number | undefined;
  /** Element type of the KV cache at the graph boundary. */
  readonly cacheType: 'float32' | 'float16';
  /**
   * Whether scoreContinuations runs each continuation on the context's cached keys and values. False for a
   * graph without a cache and for one with ops whose result for a token depends on the whole call
   * (dynamic int8 quantization, transformers.js' q8): there context + continuation run in one pass each,
   * which is what `score` computes.
   */
  readonly reusesCache: boolean;
  /**
   * The output head's raw logits at every position of `tokens` ([tokens.length × vocabSize], float32; row i
   * predicts tokens[i + 1]), for comparing with PyTorch's `model(ids).logits`.
   */
  logits(tokens: Int32Array): Promise<Float32Array>;
}

const MAX_THREADS = 256;
/** Past this positions lose float32 precision and the attention scores of one window run to gigabytes. */
const MAX_CONTEXT_LENGTH = 1 << 16;

type OrtModule = typeof import('onnxruntime-node');

let ortLoad: Promise<OrtModule> | undefined;

function loadOrt(): Promise<OrtModule> {
  ortLoad ??= import('onnxruntime-node')
    .then((module) => {
      const ort = ((module as unknown as { default?: OrtModule }).default ?? module) as OrtModule;
      // Every onnxruntime failure reaches us as a thrown error, which we report; its own log lines (a
      // failed CUDA probe prints one at `error`) would only garble the progress display. Takes effect when
      // the first session initialises the environment.
      ort.env.logLevel = 'fatal';
      return ort;
    })
    .catch((error: unknown) => {
      ortLoad = undefined;
      throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `onnxruntime-node could not be loaded: ${message(error)}`, {
        hint: 'the onnx engine needs the onnxruntime-node package and its binary for this platform (install with ONNXRUNTIME_NODE_INSTALL=skip where its CUDA download fails)',
        cause: error,
      });
    });
  return ortLoad;
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

/** The names of the `.onnx` files in a folder's `onnx/` subfolder (none when there is no such subfolder). */
async function onnxFilesIn(dir: string): Promise<string[]> {
  return (await findOnnxModels(dir)).map((model) => model.name).sort();
}

/** Whether `path` is an ONNX folder: a folder with `onnx/*.onnx` (what `verify --engine auto` sends to this engine). */
export async function isOnnxFolder(path: string): Promise<boolean> {
  return (await isDirectory(path)) && (await onnxFilesIn(path)).length > 0;
}

/** Whether `path` names a single ONNX model file (by its extension). */
export function isOnnxFile(path: string): boolean {
  return path.toLowerCase().endsWith('.onnx');
}

/** Where an ONNX model comes from: the graph file, its type, and the folders its config and tokenizer are read from. */
export interface OnnxModelLocation {
  /** The .onnx file, absolute. */
  readonly file: string;
  readonly type: OnnxTypeName | undefined;
  /** The folder holding tokenizer.json (undefined when neither candidate folder has one). */
  readonly tokenizerDir: string | undefined;
  /** config.json, when found. */
  readonly configFile: string | undefined;
}

/**
 * Resolves an ONNX folder (picking `onnx/model{suffix}.onnx` by `onnxType`, or the only known one) or a
 * `.onnx` file (its tokenizer.json and config.json from its own folder, else the folder above, as in the
 * transformers.js layout). Typed errors: several files and no type (USAGE, listing them), the chosen type
 * absent (NOT_FOUND, listing what is there), no known file at all.
 */
export async function locateOnnxModel(path: string, onnxType?: OnnxTypeName): Promise<OnnxModelLocation> {
  const absolute = resolve(path);
  if (onnxType !== undefined && !isOnnxTypeName(onnxType)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `ONNX type ${JSON.stringify(onnxType)} is not one of ${ONNX_TYPE_NAMES.join(', ')}`);
  }
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(absolute);
  } catch (error) {
    throw ioError(absolute, 'open the ONNX model', error);
  }
  if (info.isDirectory()) {
    const files = await onnxFilesIn(absolute);
    const known = files.filter((name) => onnxTypeOfFile(name) !== undefined);
    const listing = (names: readonly string[]): string =>
      names.map((name) => `${ONNX_SUBFOLDER}/${name}${onnxTypeOfFile(name) !== undefined ? ` (${onnxTypeOfFile(name)})` : ''}`).join(', ');
    let chosen: string;
    if (onnxType !== undefined) {
      chosen = onnxModelFileName(onnxType);
      if (!files.includes(chosen)) {
        throw new PolyquantError(ERROR_CODES.NOT_FOUND, `the ONNX folder has no ${ONNX_SUBFOLDER}/${chosen} (type ${onnxType})`, {
          file: join(absolute, ONNX_SUBFOLDER, chosen),
          hint: files.length === 0 ? `it has no ${ONNX_SUBFOLDER}/*.onnx at all` : `it holds ${listing(files)}`,
        });
      }
    } else if (known.length === 1) {
      chosen = known[0] as string;
    } else if (known.length > 1) {
      throw new PolyquantError(ERROR_CODES.USAGE, `the ONNX folder holds ${known.length} models: ${listing(known)}; choose one`, {
        file: absolute,
        hint: `give the type (--onnx-type ${known.map((name) => onnxTypeOfFile(name)).join('|')}) or the .onnx file itself`,
      });
    } else {
      throw new PolyquantError(ERROR_CODES.NOT_FOUND, `the folder has no ${ONNX_SUBFOLDER}/ model of a known type (${ONNX_TYPE_NAMES.map(onnxModelFileName).join(', ')})`, {
        file: join(absolute, ONNX_SUBFOLDER),
        hint: files.length > 0 ? `it holds ${listing(files)}; pass the .onnx file itself` : 'point at an ONNX folder written by polyquant convert --to onnx, or at a .onnx file',
      });
    }
    const tokenizerFile = join(absolute, TOKENIZER_FILE_NAMES.tokenizer);
    const configFile = join(absolute, 'config.json');
    return {
      file: join(absolute, ONNX_SUBFOLDER, chosen),
      type: onnxTypeOfFile(chosen),
      tokenizerDir: (await pathExists(tokenizerFile)) ? absolute : undefined,
      configFile: (await pathExists(configFile)) ? configFile : undefined,
    };
  }
  if (!info.isFile() || !isOnnxFile(absolute)) {
    throw new PolyquantError(ERROR_CODES.USAGE, 'expected an ONNX folder or a .onnx file', { file: absolute });
  }
  if (onnxType !== undefined) {
    throw new PolyquantError(ERROR_CODES.USAGE, `an ONNX type (${onnxType}) picks a file in an ONNX folder, but the path is already a .onnx file`, {
      file: absolute,
      hint: 'leave the type out, or give the folder',
    });
  }
  // The file's own folder first, then the one above it: the repository root when the file sits in onnx/
  // (transformers.js layout).
  const candidates = [dirname(absolute), dirname(dirname(absolute))];
  const firstWith = async (name: string): Promise<string | undefined> => {
    for (const dir of candidates) if (await pathExists(join(dir, name))) return dir;
    return undefined;
  };
  const configDir = await firstWith('config.json');
  return {
    file: absolute,
    type: onnxTypeOfFile(basename(absolute)),
    tokenizerDir: await firstWith(TOKENIZER_FILE_NAMES.tokenizer),
    configFile: configDir === undefined ? undefined : join(configDir, 'config.json'),
  };
}

/** What the engine reads from the session's metadata: the graph's side of the contract in the file comment. */
interface GraphShape {
  readonly layers: number;
  readonly heads: number;
  readonly headDim: number;
  readonly vocab: number;
  readonly cacheType: 'float32' | 'float16';
  readonly logitsType: 'float32' | 'float16';
  /** Element types of the integer inputs (int64 in our graphs and transformers.js'; int32 in some GenAI graphs). */
  readonly idsType: 'int64' | 'int32';
  readonly maskType: 'int64' | 'int32';
  /** Undefined when the graph computes positions itself. */
  readonly positionType: 'int64' | 'int32' | undefined;
}

type Metadata = InferenceSession.ValueMetadata;
type TensorMetadata = Extract<Metadata, { isTensor: true }>;

function readGraphShape(session: InferenceSession, config: NeoXConfig | undefined, file: string): GraphShape {
  const inputs = new Map(session.inputMetadata.map((entry) => [entry.name, entry]));
  const outputs = new Map(session.outputMetadata.map((entry) => [entry.name, entry]));
  const tensor = (table: Map<string, Metadata>, name: string, role: string): TensorMetadata => {
    const entry = table.get(name);
    if (entry === undefined) {
      throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `the graph has no ${role} ${JSON.stringify(name)}`, {
        file,
        hint: `expected transformers.js' decoder contract (inputs ${[...inputs.keys()].slice(0, 4).join(', ')}…)`,
      });
    }
    if (!entry.isTensor) throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `the graph's ${role} ${name} is not a tensor`, { file });
    return entry;
  };
  const integerType = (entry: TensorMetadata): 'int64' | 'int32' => {
    if (entry.type !== 'int64' && entry.type !== 'int32') {
      throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `the graph's input ${entry.name} is ${entry.type}; expected int64 or int32`, { file });
    }
    return entry.type;
  };
  const floatType = (entry: TensorMetadata): 'float32' | 'float16' => {
    if (entry.type !== 'float32' && entry.type !== 'float16') {
      throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `the graph's ${entry.name} is ${entry.type}; expected float32 or float16`, { file });
    }
    return entry.type;
  };
  const idsType = integerType(tensor(inputs, 'input_ids', 'input'));
  const maskType = integerType(tensor(inputs, 'attention_mask', 'input'));
  const positionType = inputs.has('position_ids') ? integerType(tensor(inputs, 'position_ids', 'input')) : undefined;

  let layers = 0;
  while (inputs.has(`past_key_values.${layers}.key`)) layers += 1;
  const known = new Set(['input_ids', 'attention_mask', 'position_ids']);
  for (let layer = 0; layer < layers; layer += 1) {
    for (const part of ['key', 'value']) {
      known.add(`past_key_values.${layer}.${part}`);
      tensor(inputs, `past_key_values.${layer}.${part}`, 'input');
      tensor(outputs, `present.${layer}.${part}`, 'output');
    }
  }
  const unknown = [...inputs.keys()].filter((name) => !known.has(name));
  if (unknown.length > 0) {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `the graph has inputs the onnx engine does not feed: ${unknown.join(', ')}`, {
      file,
      hint: 'expected input_ids, attention_mask, optional position_ids and past_key_values.{i}.key|value, as transformers.js decoder models take them',
    });
  }

  const logits = tensor(outputs, 'logits', 'output');
  const logitsType = floatType(logits);
  const vocabDim = logits.shape[2];
  const vocab = typeof vocabDim === 'number' && vocabDim > 0 ? vocabDim : config?.vocabSize;
  if (vocab === undefined) {
    throw new PolyquantError(ERROR_CODES.CONFIG, 'the graph does not fix the vocabulary size (logits dimension 2) and there is no config.json', { file });
  }
  if (config !== undefined && config.vocabSize !== vocab) {
    throw new PolyquantError(ERROR_CODES.CONFIG, `the graph's logits have ${vocab} columns but config.json vocab_size is ${config.vocabSize}`, {
      file,
      hint: 'the config.json beside the graph does not belong to it',
    });
  }

  let heads = config?.numHeads ?? 0;
  let headDim = config?.headDim ?? 0;
  let cacheType: 'float32' | 'float16' = 'float32';
  if (layers > 0) {
    const past = tensor(inputs, 'past_key_values.0.key', 'input');
    cacheType = floatType(past);
    // specs/onnx.md §3.3: heads and head_dim are numeric dims; config.json where a graph leaves them symbolic.
    const [, headsDim, , headDimDim] = past.shape;
    if (typeof headsDim === 'number') heads = headsDim;
    if (typeof headDimDim === 'number') headDim = headDimDim;
    if (heads <= 0 || headDim <= 0) {
      throw new PolyquantError(ERROR_CODES.CONFIG, 'the graph leaves the KV cache heads or head size symbolic and there is no config.json to read them from', {
        file,
      });
    }
  }
  return { layers, heads, headDim, vocab, cacheType, logitsType, idsType, maskType, positionType };
}

/** Integer tensors of the declared type. */
function integerTensor(ort: OrtModule, type: 'int64' | 'int32', values: ArrayLike<number>, dims: readonly number[]): Tensor {
  if (type === 'int32') return new ort.Tensor('int32', Int32Array.from(values), dims);
  const data = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i += 1) data[i] = BigInt(values[i] as number);
  return new ort.Tensor('int64', data, dims);
}

/** The KV cache after some tokens: one present tensor per past input name. */
type Past = { readonly length: number; readonly tensors: ReadonlyMap<string, Tensor> };

export async function createOnnxEngine(path: string, options: OnnxEngineOptions = {}): Promise<OnnxEngine> {
  const device = options.device ?? 'auto';
  if (device !== 'auto' && device !== 'cpu' && device !== 'gpu') {
    throw new PolyquantError(ERROR_CODES.USAGE, `device is ${JSON.stringify(device)}; expected auto, cpu or gpu`);
  }
  const threads = options.threads ?? defaultMathThreads();
  if (!Number.isSafeInteger(threads) || threads < 1 || threads > MAX_THREADS) {
    throw new PolyquantError(ERROR_CODES.USAGE, `threads is ${threads}; expected an integer from 1 to ${MAX_THREADS} for the onnx engine`);
  }
  const location = await locateOnnxModel(path, options.onnxType);
  const { file } = location;
  const config = location.configFile === undefined ? undefined : normaliseNeoXConfig(await readJsonFile(location.configFile), location.configFile);
  const contextLength = options.contextLength ?? config?.maxPositionEmbeddings;
  if (contextLength === undefined) {
    throw new PolyquantError(ERROR_CODES.CONFIG, 'no config.json beside the ONNX model, so the context length must be given', { file });
  }
  if (!Number.isSafeInteger(contextLength) || contextLength < 2 || contextLength > MAX_CONTEXT_LENGTH) {
    throw new PolyquantError(ERROR_CODES.USAGE, `contextLength is ${contextLength}; expected an integer from 2 to ${MAX_CONTEXT_LENGTH}`, { file });
  }
  if (location.tokenizerDir === undefined) {
    throw new PolyquantError(ERROR_CODES.NOT_FOUND, 'no tokenizer.json beside the ONNX model or in the folder above it', {
      file,
      hint: 'an ONNX folder carries tokenizer.json at its root (transformers.js layout)',
    });
  }
  const tokenizerFiles = await readTokenizerFiles(location.tokenizerDir);
  // Our checks first (the validating reader): a missing or truncated data file becomes an error naming it.
  const summary = await readOnnxModel(file);
  const callDependent = [...CALL_DEPENDENT_OPS].filter((op) => summary.ops.some((entry) => entry.opType === op));

  const ort = await loadOrt();
  const { session, provider, probe } = await openSession(ort, file, device, threads);
  let shape: GraphShape;
  try {
    shape = readGraphShape(session, config, file);
  } catch (error) {
    await session.release();
    throw error;
  }
  // Reusing the context's cache gives the numbers of one whole pass only where a position's output does not
  // depend on the other positions in the call, and the cache at the boundary is what attention used.
  const reusesCache = shape.layers > 0 && callDependent.length === 0;
  return new OnnxEngineImpl(
    ort,
    session,
    provider,
    file,
    location.type,
    shape,
    contextLength,
    config?.maxPositionEmbeddings,
    loadTokenizer(tokenizerFiles),
    reusesCache,
    probe,
  );
}

/**
 * Ops whose result for one token depends on the other tokens of the same call: DynamicQuantizeLinear
 * computes one scale and zero point over its whole input tensor (ONNX operator spec), and
 * com.microsoft DynamicQuantizeMatMul (what onnxruntime fuses it into) does the same. transformers.js' q8
 * export runs every linear through them, so a continuation run on a cached context is quantized with other
 * scales than in a whole pass (measured on polyglot-ko-tiny q8: 0.04 nats over 40 tokens).
 */
const CALL_DEPENDENT_OPS: ReadonlySet<string> = new Set(['DynamicQuantizeLinear', 'DynamicQuantizeMatMul']);

/** The execution providers tried for each device, in order. */
const PROVIDERS: Readonly<Record<OnnxDevice, readonly OnnxExecutionProvider[]>> = {
  cpu: ['cpu'],
  gpu: ['cuda', 'webgpu'],
  auto: ['cuda', 'cpu'],
};

/**
 * Whether onnxruntime-node's CUDA provider library is installed next to its binding (its postinstall
 * downloads it; installs with ONNXRUNTIME_NODE_INSTALL=skip have none). `auto` probes CUDA only then: a
 * failed probe costs nothing but prints onnxruntime's own error lines, which no log level silences.
 */
function cudaProviderInstalled(): boolean {
  try {
    const binding = dirname(createRequire(import.meta.url).resolve('onnxruntime-node'));
    const folder = join(binding, '..', 'bin', 'napi-v6', process.platform, process.arch);
    return existsSync(join(folder, 'libonnxruntime_providers_cuda.so')) || existsSync(join(folder, 'onnxruntime_providers_cuda.dll'));
  } catch {
    return false;
  }
}

async function openSession(
  ort: OrtModule,
  file: string,
  device: OnnxDevice,
  threads: number,
): Promise<{ session: InferenceSession; provider: OnnxExecutionProvider; probe: string }> {
  const failures: string[] = [];
  // No GPU device node (gpu-probe.ts): no provider of ours can reach a GPU; `gpu` fails before trying any
  // (a WebGPU provider could otherwise settle on a CPU Vulkan driver such as lavapipe and call it a GPU).
  const hardware = device === 'cpu' ? undefined : probeGpuHardware();
  if (device === 'gpu' && hardware?.present === false) throw noOnnxGpu(file, hardware.summary);
  const cudaInstalled = cudaProviderInstalled();
  const providers = device === 'auto' && (!cudaInstalled || hardware?.present === false) ? (['cpu'] as const) : PROVIDERS[device];
  const why =
    device === 'cpu'
      ? 'the CPU asked for'
      : hardware?.present === false
        ? hardware.summary
        : device === 'auto' && !cudaInstalled
          ? 'no CUDA provider library in this onnxruntime-node install'
          : `providers tried: ${providers.join(', ')}`;
  for (const provider of providers) {
    try {
      const session = await ort.InferenceSession.create(file, {
        executionProviders: [provider],
        graphOptimizationLevel: 'all',
        intraOpNumThreads: threads,
        interOpNumThreads: 1,
        executionMode: 'sequential',
        logSeverityLevel: 3,
      });
      return { session, provider, probe: `--device ${device}: ${why}${failures.length > 0 ? ` (${failures.join('; ')})` : ''}; ${provider === 'cpu' ? 'CPU' : `GPU (${provider})`}` };
    } catch (error) {
      // A provider that is not in this install fails at once; on the CPU the failure is the model's own.
      if (provider === 'cpu') {
        throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `onnxruntime-node ${ort.env.versions.node ?? ''} could not load the model: ${message(error)}`, {
          file,
          cause: error,
        });
      }
      failures.push(`${provider}: ${message(error).split('\n')[0]}`);
    }
  }
  throw noOnnxGpu(file, `no CUDA or WebGPU execution provider of this onnxruntime-node install opens (${failures.join('; ')})`);
}

function noOnnxGpu(file: string, probed: string): PolyquantError {
  return new PolyquantError(ERROR_CODES.UNSUPPORTED, `--device gpu: the onnx engine found no usable GPU: ${probed}`, {
    file,
    hint: "install onnxruntime-node's CUDA 12 provider libraries (its postinstall, without ONNXRUNTIME_NODE_INSTALL=skip) on a machine with an NVIDIA GPU, or use --device cpu or auto",
  });
}

class OnnxEngineImpl implements OnnxEngine {
  readonly name = 'onnx';
  readonly parallelism = 1;
  readonly windowParallelism = 1;
  readonly device: 'cpu' | 'gpu';
  readonly gpu: string | undefined;
  readonly vocabSize: number;
  readonly cacheType: 'float32' | 'float16';
  private readonly rows: RowStatistics;
  /** One request at a time: each waits for the one before (close waits for all). */
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(
    private readonly ort: OrtModule,
    private readonly session: InferenceSession,
    readonly executionProvider: OnnxExecutionProvider,
    readonly path: string,
    readonly onnxType: OnnxTypeName | undefined,
    private readonly shape: GraphShape,
    readonly contextLength: number,
    readonly trainContextLength: number | undefined,
    private readonly tokenizer: TextTokenizer,
    readonly reusesCache: boolean,
    readonly deviceProbe: string,
  ) {
    this.device = executionProvider === 'cpu' ? 'cpu' : 'gpu';
    this.gpu = executionProvider === 'cpu' ? undefined : executionProvider;
    this.vocabSize = shape.vocab;
    this.cacheType = shape.cacheType;
    this.rows = new RowStatistics(shape.vocab);
  }

  tokenize(text: string): Int32Array {
    this.checkOpen();
    return this.tokenizer.encode(text);
  }

  async score(tokens: Int32Array, options: ScoreOptions = {}): Promise<ScoreResult> {
    this.checkOpen();
    this.checkTokens(tokens, 'the window');
    const { from, distributions, topK, into } = resolveScoreOptions(options, tokens.length);
    const vocab = this.vocabSize;
    const scored = tokens.length - from;
    const result = allocateScoreResult(scored, vocab, distributions, topK, into);
    if (scored === 0) return result;
    const { tokenLogProbs, argmax, full, topk } = result;
    return this.enqueue(async () => {
      // The last token is only ever a target: inputs are tokens 0 … n − 2.
      const { logits } = await this.forward(tokens.subarray(0, -1), undefined, false);
      const rows = this.rows;
      for (let index = 0; index < scored; index += 1) {
        const summary = rows.load(logits, from - 1 + index);
        const row = rows.row;
        tokenLogProbs[index] = (row[tokens[from + index] as number] as number) - summary.logSumExp;
        argmax[index] = summary.argmax;
        if (full !== undefined) {
          const offset = index * vocab;
          const logSumExp = summary.logSumExp;
          for (let id = 0; id < vocab; id += 1) full[offset + id] = (row[id] as number) - logSumExp;
        }
        if (topk !== undefined) {
          topk.restLogMass[index] = rows.topK(topk.k, summary.logSumExp, topk.ids, topk.logProbs, index * topk.k);
        }
      }
      return result;
    });
  }

  async logits(tokens: Int32Array): Promise<Float32Array> {
    this.checkOpen();
    this.checkTokens(tokens, 'the window');
    if (tokens.length === 0) return new Float32Array(0);
    return this.enqueue(async () => {
      const { logits } = await this.forward(tokens, undefined, false);
      return logits instanceof Float32Array ? logits.slice() : f16ToF32Array(logits);
    });
  }

  async scoreContinuations(context: Int32Array, continuations: readonly Int32Array[]): Promise<number[]> {
    this.checkOpen();
    checkContinuations(context, continuations, this.limits());
    const list = [...continuations];
    return this.enqueue(() => (this.reusesCache ? this.continuationsOnCache(context, list) : this.continuationsWhole(context, list)));
  }

  /** The context once, its cache as the past of each continuation (all but its last token). */
  private async continuationsOnCache(context: Int32Array, continuations: readonly Int32Array[]): Promise<number[]> {
    const rows = this.rows;
    const first = await this.forward(context, undefined, true);
    const afterContext = rows.load(first.logits, context.length - 1);
    const contextRow = Float32Array.from(rows.row);
    const sums: number[] = [];
    for (const continuation of continuations) {
      if (continuation.length === 0) {
        sums.push(0);
        continue;
      }
      let sum = (contextRow[continuation[0] as number] as number) - afterContext.logSumExp;
      if (continuation.length > 1) {
        const { logits } = await this.forward(continuation.subarray(0, -1), first.past, false);
        for (let i = 1; i < continuation.length; i += 1) {
          const summary = rows.load(logits, i - 1);
          sum += (rows.row[continuation[i] as number] as number) - summary.logSumExp;
        }
      }
      sums.push(sum);
    }
    return sums;
  }

  /** Each context + continuation (all but its last token) in one pass: exactly what `score` runs. */
  private async continuationsWhole(context: Int32Array, continuations: readonly Int32Array[]): Promise<number[]> {
    const rows = this.rows;
    const sums: number[] = [];
    for (const continuation of continuations) {
      let sum = 0;
      if (continuation.length > 0) {
        const { logits } = await this.forward(concat(context, continuation.subarray(0, -1)), undefined, false);
        for (let i = 0; i < continuation.length; i += 1) {
          const summary = rows.load(logits, context.length - 1 + i);
          sum += (rows.row[continuation[i] as number] as number) - summary.logSumExp;
        }
      }
      sums.push(sum);
    }
    return sums;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.queue.catch(() => undefined);
    await this.session.release();
  }

  /**
   * Runs `tokens` after `past` (none: an empty cache) with batch 1: mask all ones, positions past … past +
   * n − 1. Returns the logits ([n × vocab], float32 or float16 bits) and, when asked, the new cache.
   */
  private async forward(tokens: Int32Array, past: Past | undefined, keepPresent: boolean): Promise<{ logits: Float32Array | Uint16Array; past: Past }> {
    const ort = this.ort;
    const { layers, heads, headDim, cacheType, idsType, maskType, positionType } = this.shape;
    const count = tokens.length;
    const pastLength = past?.length ?? 0;
    const total = pastLength + count;
    const feeds: Record<string, Tensor> = {
      input_ids: integerTensor(ort, idsType, tokens, [1, count]),
      attention_mask: integerTensor(ort, maskType, new Int32Array(total).fill(1), [1, total]),
    };
    if (positionType !== undefined) {
      feeds['position_ids'] = integerTensor(ort, positionType, Int32Array.from({ length: count }, (_, i) => pastLength + i), [1, count]);
    }
    for (let layer = 0; layer < layers; layer += 1) {
      for (const part of ['key', 'value']) {
        const name = `past_key_values.${layer}.${part}`;
        const cached = past?.tensors.get(name);
        feeds[name] =
          cached ?? new ort.Tensor(cacheType, cacheType === 'float16' ? new Uint16Array(0) : new Float32Array(0), [1, heads, 0, headDim]);
      }
    }
    const fetches = keepPresent
      ? ['logits', ...Array.from({ length: layers }, (_, layer) => [`present.${layer}.key`, `present.${layer}.value`]).flat()]
      : ['logits'];
    let outputs: InferenceSession.ReturnType;
    try {
      outputs = await this.session.run(feeds, fetches);
    } catch (error) {
      throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `onnxruntime failed to run the model on ${count} tokens after ${pastLength}: ${message(error)}`, {
        file: this.path,
        cause: error,
      });
    }
    const logits = outputs['logits'];
    const expected = count * this.vocabSize;
    const data = logits?.data;
    if (logits === undefined || !(data instanceof Float32Array || data instanceof Uint16Array) || data.length !== expected) {
      throw new PolyquantError(
        ERROR_CODES.UNSUPPORTED,
        `the model returned logits of shape [${logits?.dims.join(', ') ?? ''}] (${logits?.type ?? 'none'}); expected [1, ${count}, ${this.vocabSize}]`,
        { file: this.path },
      );
    }
    const tensors = new Map<string, Tensor>();
    if (keepPresent) {
      for (let layer = 0; layer < layers; layer += 1) {
        for (const part of ['key', 'value']) {
          const present = outputs[`present.${layer}.${part}`];
          if (present === undefined || present.dims[2] !== total) {
            throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `the model's present.${layer}.${part} does not hold the ${total} positions run so far`, {
              file: this.path,
            });
          }
          tensors.set(`past_key_values.${layer}.${part}`, present);
        }
      }
    }
    return { logits: data, past: { length: total, tensors } };
  }

  private enqueue<T>(work: () => Promise<T>): Promise<T> {
    const result = this.queue.then(work);
    this.queue = result.catch(() => undefined);
    return result;
  }

  private checkOpen(): void {
    if (this.closed) throw new PolyquantError(ERROR_CODES.USAGE, 'the onnx engine is closed', { file: this.path });
  }

  private limits(): EngineLimits {
    return { contextLength: this.contextLength, vocabSize: this.vocabSize, file: this.path };
  }

  private checkTokens(tokens: Int32Array, what: string): void {
    checkTokenIds(tokens, what, this.limits());
  }
}

function concat(a: Int32Array, b: Int32Array): Int32Array {
  const out = new Int32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/**
 * Every file an ONNX folder's models may be read from (its `onnx/` entries), for the check that no output
 * overwrites an input; none when `path` is not an ONNX folder.
 */
export async function onnxFolderFiles(path: string): Promise<string[]> {
  const dir = resolve(path);
  if (!(await isDirectory(join(dir, ONNX_SUBFOLDER)))) return [];
  try {
    return (await readdir(join(dir, ONNX_SUBFOLDER))).map((name) => join(dir, ONNX_SUBFOLDER, name));
  } catch {
    return [];
  }
}
