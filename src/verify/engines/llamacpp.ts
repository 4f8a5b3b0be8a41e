/**
 * The llama.cpp engine: a GGUF file run by node-llama-cpp 3.21.1 (its bundled llama.cpp, tag v0.4.0), the
 * runtime most users of our GGUF files will have. `verify` compares it with the reference engine on the
 * HF folder, so it answers "does the file we wrote behave like the checkpoint, in llama.cpp".
 *
 * How the next-token distributions are read (measured on polyglot-ko-tiny f16, vocabulary 30080, 512-token
 * windows, on the project's shared 2-core machine; bench/llamacpp-engine.ts):
 *
 * - node-llama-cpp exposes no logits. The one supported way to a whole next-token distribution is
 *   `LlamaContextSequence.controlledEvaluate()` with `generateNext.probabilities` on the positions we
 *   score. The addon then runs `sampleToken` for each such position: the logits are copied into a
 *   candidate array, the sampler chain runs, the candidates are sorted by logit and soft-maxed in float32,
 *   and — back on the JS thread — a JS array of 2 × vocabulary numbers is built one `napi_set_element` at a
 *   time, which node-llama-cpp revives into a `Map<token, probability>`.
 * - Decoding a window alone takes 0.3–0.5 s. With the distribution at all 511 positions it takes ~10 s
 *   (~20 ms per position; 25–40 s when the machine is busy): about 18 ms per position building the addon's
 *   array, 3 ms reviving the Map, 0.6 ms for our pass from the Map to a Float32Array row. The cost is
 *   per position × vocabulary and lands on the JS thread, so more llama.cpp threads do not shrink it.
 * - Alternatives measured or read and rejected: `generateNext.confidence` and `token` are cheap (~1–3 ms per position) but give only the
 *   sampled token's probability, never the target's; top-k sampling renormalises over the kept k (the
 *   normaliser is lost, and most targets of a weak model fall outside any small k); embedding contexts give
 *   hidden states, and computing the output head ourselves would no longer test llama.cpp's head.
 * - So: the whole window in one call and one batch (batchSize = contextLength), distributions requested
 *   only at positions from − 1 … n − 2 (the last token is never an input we need). By default through the
 *   same internals `controlledEvaluate` runs — the sequence's `_decodeTokens` and the addon's
 *   `sampleToken`, same sampler configuration — reading the addon's flat [token, p, …] array straight into
 *   a Float32Array row instead of reviving a Map first: 29.8 → ~20 ms per position on polyglot-ko-tiny
 *   (the Map and its garbage were a third of it). node-llama-cpp is pinned (3.21.1); if those internals
 *   are missing, or with POLYQUANT_LLAMACPP_PATH=public, the public `controlledEvaluate` is used. A test
 *   holds both paths to identical numbers. Sampling positions concurrently on several samplers gained
 *   only ~10 % more (the array building in the addon's completion callback runs on the JS thread) and
 *   would have llama.cpp sample one context from several threads, so it is not done. Requests run one at a time on one
 *   sequence (`parallelism` 1). The one large win found is the thread count: node-llama-cpp's CPU default
 *   is max(4, math cores), and 4 threads on 2 cores made every llama.cpp op barrier wait on a descheduled
 *   thread (a 4-token decode took 1–4 s instead of 4 ms; KOBEST continuations ~25× slower), so the
 *   default here is exactly `llama.cpuMathCores`.
 *
 * Sampling options are {temperature: 1, topK: 0, topP: 1, minP: 0}: node-llama-cpp's defaults for top-k,
 * top-p and min-p would otherwise truncate and renormalise the distribution (specs/runtimes.md §2). Every
 * distribution is checked to cover the whole vocabulary.
 *
 * Precision: probabilities arrive as float32, so log p is exact to ~1e-7 relative, except that a
 * probability below float32's smallest subnormal comes back as 0. Such entries are reported as
 * LOG_PROB_FLOOR (log 2⁻¹⁴⁹ ≈ −103.28; the true value is lower) rather than −∞, so a KL divergence against
 * them stays finite.
 *
 * node-llama-cpp is imported lazily (the import takes ~1.3 s and loads a native addon), and one `Llama`
 * per GPU choice is shared by every engine in the process.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import type { Llama, LlamaContext, LlamaContextSequence, LlamaModel, Token } from 'node-llama-cpp';
import { type GgufHeader, readGgufHeader } from '../../converters/gguf/format.js';
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import { ioError, withFile } from '../../io/file.js';
import { allocateScoreResult, checkContinuations, checkTokenIds, type Engine, resolveScoreOptions, type ScoreOptions, type ScoreResult } from '../engine.js';
import { probeGpuHardware } from './gpu-probe.js';
import { loadNativeAddon, type NativeAddon, NativeScorer, nativeAddonBuild } from './llamacpp-native.js';
import { rowMaximum, topKOfRow } from './reference-math.js';

export type LlamaCppDevice = 'auto' | 'cpu' | 'gpu';

export interface LlamaCppEngineOptions {
  /** `cpu` never touches a GPU; `gpu` requires one (an error otherwise); `auto` (default) uses one if present. */
  readonly device?: LlamaCppDevice;
  /** llama.cpp compute threads for this engine's context. Default: the machine's math cores (llama.cpuMathCores). */
  readonly threads?: number;
  /** Longest window accepted (the context and batch size). Default: the GGUF's `<arch>.context_length`. */
  readonly contextLength?: number;
  /** What llama.cpp may print to stderr while loading and running. Default `error`. */
  readonly logLevel?: 'error' | 'warn';
  /** Native path: KOBEST documents (one sequence per continuation) decoded together, 1 … 32. Default 8. */
  readonly sequences?: number;
  /**
   * llama.cpp's flash attention (`auto`: on where the backend supports it, as llama.cpp's own tools run by
   * default). Default false: on the CPU its f16 accumulation moves log-probabilities by up to ~2e-4 with
   * the layout of the batch (a KOBEST document scored beside others vs alone), against ~1e-6 without it —
   * noise of the size of the KL divergences verify measures for q8_0. True is faster on long windows.
   */
  readonly flashAttention?: boolean;
}

export interface LlamaCppEngine extends Engine {
  readonly name: 'llamacpp';
  /** The GGUF file, absolute. */
  readonly path: string;
  /** Requests in flight at once: KOBEST documents the native path decodes together in one batch (1 on the others). */
  readonly parallelism: number;
  /** Perplexity windows in flight: 1 (a window fills a batch on its own). */
  readonly windowParallelism: 1;
  /** llama.cpp's GPU backend (`cuda`, `vulkan`, `metal`) when the model runs on one, else undefined. */
  readonly gpu: string | undefined;
  /** How the device was chosen, in words (e.g. `--device auto: no GPU device node … ; CPU`), for reports and tests. */
  readonly deviceProbe: string;
  /** The GGUF's `<arch>.context_length` (the length it was trained on), when it has one. */
  readonly trainContextLength: number | undefined;
  /**
   * How distributions are read: `native` (our addon: statistics computed in C++, typed arrays, fastest),
   * `addon` (node-llama-cpp's internals: its flat probability arrays) or `public` (controlledEvaluate's Maps).
   */
  readonly distributionPath: DistributionPath;
  /** Why the native path is not used, when it is not. */
  readonly nativeUnavailable: string | undefined;
}

export type DistributionPath = 'native' | 'addon' | 'public';
/** POLYQUANT_LLAMACPP_PATH's values: force one path (`native` fails when the addon is missing). */
const DISTRIBUTION_PATHS: readonly DistributionPath[] = ['native', 'addon', 'public'];

/** Default sequences per native batch: KOBEST documents decoded together (measured in BENCHMARKS.md). */
export const DEFAULT_SEQUENCES = 8;
const MAX_SEQUENCES = 32;

/** log of float32's smallest subnormal (2⁻¹⁴⁹): what a probability the addon rounded to 0 is reported as. */
export const LOG_PROB_FLOOR = Math.log(2 ** -149);
/** log p of a probability node-llama-cpp returned: NaN stays NaN (a broken model), 0 becomes the floor. */
function logProbability(probability: number): number {
  if (Number.isNaN(probability)) return Number.NaN;
  return probability > 0 ? Math.log(probability) : LOG_PROB_FLOOR;
}

/** The full, untruncated distribution at temperature 1 (specs/runtimes.md §2). */
const FULL_DISTRIBUTION = { temperature: 1, topK: 0, topP: 1, minP: 0 } as const;
const MAX_THREADS = 256;
/** Past this the KV cache and the per-batch logits run to gigabytes; no GPT-NeoX we verify needs more. */
const MAX_CONTEXT_LENGTH = 1 << 16;

type NodeLlamaCpp = typeof import('node-llama-cpp');

let moduleLoad: Promise<NodeLlamaCpp> | undefined;
const llamas = new Map<string, Promise<Llama>>();

function loadNodeLlamaCpp(): Promise<NodeLlamaCpp> {
  moduleLoad ??= import('node-llama-cpp').catch((error: unknown) => {
    moduleLoad = undefined;
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `node-llama-cpp could not be loaded: ${error instanceof Error ? error.message : String(error)}`, {
      hint: 'the llamacpp engine needs the node-llama-cpp package and its prebuilt binary for this platform',
      cause: error,
    });
  });
  return moduleLoad;
}

/** One Llama (native backend) per GPU choice, shared by every engine in the process. */
function sharedLlama(gpu: 'auto' | false, logLevel: 'error' | 'warn'): Promise<Llama> {
  const key = String(gpu);
  let llama = llamas.get(key);
  if (llama === undefined) {
    llama = loadNodeLlamaCpp()
      .then((nlc) => nlc.getLlama({ gpu, build: 'never', logLevel: nlc.LlamaLogLevel[logLevel], progressLogs: false }))
      .catch((error: unknown) => {
        llamas.delete(key);
        if (error instanceof PolyquantError) throw error;
        throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `node-llama-cpp found no usable llama.cpp binary: ${error instanceof Error ? error.message : String(error)}`, {
          hint: 'polyquant uses the prebuilt binaries only (build: never)',
          cause: error,
        });
      });
    llamas.set(key, llama);
  }
  return llama.then(async (instance) => {
    const nlc = await loadNodeLlamaCpp();
    // The most verbose level any engine asked for wins; the Llama is shared.
    if (logLevel === 'warn' && instance.logLevel !== nlc.LlamaLogLevel.warn) instance.logLevel = nlc.LlamaLogLevel.warn;
    return instance;
  });
}

/**
 * The native addon bound to a loaded llama.cpp, or why it is not available, with the Llama node-llama-cpp
 * loaded for it. Linked to node-llama-cpp's prebuilt (nativeAddonBuild), node-llama-cpp finds and loads
 * the right build (CPU, CUDA, Vulkan) first and the addon binds to it; built from source, the addon
 * brings its own llama.cpp (no Llama). The addon links node-llama-cpp's CPU prebuilt by soname
 * (libllama.v0.4.0.so); its GPU builds name theirs apart (libllama.vulkan.v0.4.0.so), so beside one of
 * those the addon would load a second, empty llama.cpp with no backend registered ("no CPU backend is
 * registered"): node-llama-cpp runs those.
 */
async function bindNativeAddon(gpu: 'auto' | false, logLevel: 'error' | 'warn'): Promise<{ llama: Llama | undefined; native: { addon: NativeAddon } | { reason: string } }> {
  const llama = nativeAddonBuild() === 'node-llama-cpp' ? await sharedLlama(gpu, logLevel) : undefined;
  const native =
    llama !== undefined && llama.gpu !== false
      ? { reason: `node-llama-cpp loaded its ${llama.gpu} build, and the native addon is linked to its CPU build (build the addon with --from-source --gpu ${llama.gpu} to use it there)` }
      : loadNativeAddon();
  return { llama, native };
}

/** The native addon on a CPU llama.cpp, for passes that are not scoring (calibrate/imatrix-llamacpp.ts), or why not. */
export async function nativeAddonOnCpu(): Promise<{ addon: NativeAddon } | { reason: string }> {
  return (await bindNativeAddon(false, 'error')).native;
}

/** What the engine needs from the GGUF header, read with our own validating reader before llama.cpp sees the file. */
interface GgufFacts {
  readonly architecture: string;
  readonly vocabSize: number;
  readonly trainContextLength: number | undefined;
}

async function readGgufFacts(file: string): Promise<GgufFacts> {
  let header: GgufHeader;
  try {
    header = await withFile(file, (handle) => readGgufHeader(file, handle.size, (n) => handle.read(0, n)));
  } catch (error) {
    throw ioError(file, 'read the GGUF file', error);
  }
  const architecture = header.kvs.get('general.architecture')?.value;
  if (typeof architecture !== 'string') {
    throw new PolyquantError(ERROR_CODES.MALFORMED, 'the GGUF has no general.architecture string', { file });
  }
  const tokens = header.kvs.get('tokenizer.ggml.tokens')?.value;
  if (!Array.isArray(tokens) || tokens.length === 0) {
    throw new PolyquantError(ERROR_CODES.MALFORMED, 'the GGUF has no tokenizer.ggml.tokens array, so llama.cpp cannot tokenize text with it', { file });
  }
  const contextLength = header.kvs.get(`${architecture}.context_length`)?.value;
  return {
    architecture,
    vocabSize: tokens.length,
    trainContextLength: typeof contextLength === 'number' && Number.isSafeInteger(contextLength) && contextLength > 0 ? contextLength : undefined,
  };
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export async function createLlamaCppEngine(ggufPath: string, options: LlamaCppEngineOptions = {}): Promise<LlamaCppEngine> {
  const file = resolve(ggufPath);
  const device = options.device ?? 'auto';
  if (device !== 'auto' && device !== 'cpu' && device !== 'gpu') {
    throw new PolyquantError(ERROR_CODES.USAGE, `device is ${JSON.stringify(device)}; expected auto, cpu or gpu`);
  }
  const threads = options.threads;
  if (threads !== undefined && (!Number.isSafeInteger(threads) || threads < 1 || threads > MAX_THREADS)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `threads is ${threads}; expected an integer from 1 to ${MAX_THREADS} for the llamacpp engine`);
  }
  const sequences = options.sequences ?? DEFAULT_SEQUENCES;
  if (!Number.isSafeInteger(sequences) || sequences < 1 || sequences > MAX_SEQUENCES) {
    throw new PolyquantError(ERROR_CODES.USAGE, `sequences is ${sequences}; expected an integer from 1 to ${MAX_SEQUENCES}`);
  }
  const forced = process.env['POLYQUANT_LLAMACPP_PATH'];
  if (forced !== undefined && forced !== '' && !(DISTRIBUTION_PATHS as readonly string[]).includes(forced)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `POLYQUANT_LLAMACPP_PATH is ${JSON.stringify(forced)}; expected ${DISTRIBUTION_PATHS.join(', ')}`);
  }
  // Our reader first: a missing, truncated or foreign file becomes a PolyquantError naming it, and
  // llama.cpp only ever sees headers that parse.
  const facts = await readGgufFacts(file);
  const contextLength = options.contextLength ?? facts.trainContextLength;
  if (contextLength === undefined) {
    throw new PolyquantError(ERROR_CODES.CONFIG, `the GGUF has no ${facts.architecture}.context_length, so the context length must be given`, { file });
  }
  if (!Number.isSafeInteger(contextLength) || contextLength < 2 || contextLength > MAX_CONTEXT_LENGTH) {
    throw new PolyquantError(ERROR_CODES.USAGE, `contextLength is ${contextLength}; expected an integer from 2 to ${MAX_CONTEXT_LENGTH}`, { file });
  }

  const logLevel = options.logLevel ?? 'error';
  // No GPU device node (a CPU-only Linux machine): `gpu` fails now and `auto` is the CPU, without loading
  // any GPU backend (node-llama-cpp's Vulkan build spent ~2.3 s finding no driver). gpu-probe.ts.
  const hardware = device === 'cpu' ? undefined : probeGpuHardware();
  if (device === 'gpu' && hardware?.present === false) throw noGpu(file, hardware.summary);
  const gpuChoice: 'auto' | false = device === 'cpu' || hardware?.present === false ? false : 'auto';
  const describeChoice = (gpu: string | undefined, probed: string): string =>
    `--device ${device}: ${device === 'cpu' ? 'the CPU asked for' : hardware?.present === false ? hardware.summary : gpu === undefined ? `no GPU in ${probed}` : `${gpu} in ${probed}`}; ${gpu === undefined ? 'CPU' : `GPU (${gpu})`}`;
  let nativeUnavailable: string | undefined;
  if (forced !== 'addon' && forced !== 'public') {
    const { llama, native } = await bindNativeAddon(gpuChoice, logLevel);
    if ('addon' in native) {
      const gpus =
        llama !== undefined
          ? await llamaGpus(llama)
          : { names: native.addon.devices().filter((found) => found.type === 'gpu' || found.type === 'igpu').map((found) => found.name), probed: "the native addon's own llama.cpp (built from source)" };
      if (device === 'gpu' && gpus.names.length === 0) throw noGpu(file, gpus.probed);
      const gpu = device === 'cpu' ? undefined : gpus.names[0];
      const scorer = await NativeScorer.open(native.addon, file, {
        contextLength,
        threads: threads ?? (llama?.cpuMathCores ?? defaultMathThreads()),
        sequences,
        gpu,
        flashAttention: options.flashAttention ?? false,
      });
      return new LlamaCppEngineImpl(file, scorer, contextLength, facts.vocabSize, facts.trainContextLength, undefined, describeChoice(gpu, gpus.probed));
    }
    if (forced === 'native') {
      throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `POLYQUANT_LLAMACPP_PATH=native, but ${native.reason}`, { file });
    }
    nativeUnavailable = native.reason;
  }
  const llama = await sharedLlama(gpuChoice, logLevel);
  const gpus = await llamaGpus(llama);
  if (device === 'gpu' && gpus.names.length === 0) throw noGpu(file, gpus.probed);
  const mathThreads = threads ?? llama.cpuMathCores;
  const backend = await NodeLlamaCppBackend.open(llama, file, facts, contextLength, gpus.names.length === 0 ? 'cpu' : device, mathThreads, options.flashAttention ?? false, forced === 'public');
  if (device === 'gpu' && backend.gpu === undefined) {
    await backend.close();
    throw noGpu(file, `${gpus.probed}, which offloaded no layer to it`);
  }
  return new LlamaCppEngineImpl(file, backend, contextLength, facts.vocabSize, facts.trainContextLength, nativeUnavailable, describeChoice(backend.gpu, gpus.probed));
}

/**
 * The GPU devices of the build node-llama-cpp loaded: none for its CPU build, and none either for a GPU
 * build whose backend finds no device (its Vulkan build with only a CPU Vulkan driver such as lavapipe,
 * or no driver at all) — that build would run on the CPU while `--device gpu` claimed a GPU.
 */
async function llamaGpus(llama: Llama): Promise<{ names: string[]; probed: string }> {
  if (llama.gpu === false) return { names: [], probed: "node-llama-cpp's CPU build (no GPU build of node-llama-cpp is installed, or none initialised)" };
  const devices = await llama.getGpuDeviceNames().catch(() => [] as string[]);
  return { names: devices.length > 0 ? [llama.gpu] : [], probed: `node-llama-cpp's ${llama.gpu} build (GPU devices: ${devices.length > 0 ? devices.join(', ') : 'none'})` };
}

function noGpu(file: string, probed: string): PolyquantError {
  return new PolyquantError(ERROR_CODES.UNSUPPORTED, `--device gpu: the llamacpp engine found no usable GPU: ${probed}`, {
    file,
    hint: 'install the matching @node-llama-cpp GPU prebuilt (CUDA, Vulkan) and its driver, or build the addon with --gpu cuda|vulkan (README: GPUs); or use --device cpu or auto',
  });
}

/**
 * Physical cores, as llama.cpp's common_cpu_get_num_math counts them (hyperthreads share the vector units):
 * distinct (physical id, core id) pairs of /proc/cpuinfo, capped at what this process may use; the
 * logical count where that cannot be read.
 */
export function defaultMathThreads(): number {
  const logical = availableParallelism();
  try {
    const cores = new Set<string>();
    for (const block of readFileSync('/proc/cpuinfo', 'utf8').split(/\n\s*\n/)) {
      const physical = /^physical id\s*:\s*(\d+)/m.exec(block)?.[1];
      const core = /^core id\s*:\s*(\d+)/m.exec(block)?.[1];
      if (physical !== undefined && core !== undefined) cores.add(`${physical}:${core}`);
    }
    return cores.size > 0 ? Math.min(cores.size, logical) : logical;
  } catch {
    return logical;
  }
}

/** How one path scores (NativeScorer, NodeLlamaCppBackend): the engine checks arguments and allocates results for all of them. */
interface Backend {
  readonly kind: DistributionPath;
  /** Requests worth having in flight at once. */
  readonly parallelism: number;
  /** llama.cpp's GPU backend when the model runs on one. */
  readonly gpu: string | undefined;
  tokenize(text: string): Int32Array;
  /** A buffer for full rows, when the path has a faster one than a fresh Float32Array. */
  allocateRows?(floats: number): Float32Array;
  /** Target log-probabilities, argmax and (into `full`) the log-probability rows of a window (see NativeScorer.scoreWindow). */
  scoreWindow(tokens: Int32Array, from: number, tokenLogProbs: Float64Array, argmax: Int32Array, full: Float32Array | undefined): Promise<void>;
  scoreContinuations(context: Int32Array, continuations: readonly Int32Array[]): Promise<number[]>;
  close(): Promise<void>;
}

type EvaluationInput = Parameters<LlamaContextSequence['controlledEvaluate']>[0];

const DISTRIBUTION_REQUEST = { generateNext: { probabilities: true, options: FULL_DISTRIBUTION } } as const;

/**
 * One position's next-token distribution as node-llama-cpp hands it over: a Map from the public
 * `controlledEvaluate`, or the addon's flat [token, probability, token, probability, …] array.
 */
type Distribution = ReadonlyMap<Token, number> | readonly number[];

/** Decodes tokens after what the sequence holds, returning the distributions at the input indexes asked for. */
interface Evaluator {
  readonly kind: 'addon' | 'public';
  evaluate(tokens: readonly Token[], wanted: readonly boolean[]): Promise<(Distribution | undefined)[]>;
  dispose(): void;
}

/** The public path: `controlledEvaluate` with `probabilities` at the wanted positions. */
function publicEvaluator(sequence: LlamaContextSequence): Evaluator {
  return {
    kind: 'public',
    async evaluate(tokens, wanted) {
      const input: EvaluationInput = tokens.map((token, i) => (wanted[i] ? [token, DISTRIBUTION_REQUEST] : token));
      const output = await sequence.controlledEvaluate(input);
      return tokens.map((_, i) => output[i]?.next?.probabilities);
    },
    dispose() {},
  };
}

/**
 * node-llama-cpp 3.21.1 internals the addon path uses (all marked @internal there): the sequence's
 * `_decodeTokens` (what `controlledEvaluate` runs, with a callback per position whose logits were kept,
 * while the batch's logits are still in the context), the context's addon handle `_ctx.sampleToken`, and
 * the addon's `AddonSampler`.
 */
interface AddonInternals {
  readonly sequence: {
    _decodeTokens(
      tokens: Token[],
      logits: boolean[],
      evaluationPriority: undefined,
      tokenMeter: unknown,
      contextShift: unknown,
      mapper: (batchLogitIndex: number, tokenIndex: number) => unknown,
    ): Promise<unknown[]>;
    _resolveSamplerConfig(options: typeof FULL_DISTRIBUTION): unknown;
    _tokenMeter: unknown;
    _contextShift: { size: unknown; strategy: unknown };
  };
  readonly addonContext: { sampleToken(batchLogitIndex: number, sampler: unknown, probabilities: true, confidence: false): Promise<[number, number[]?]> };
  readonly newSampler: () => { applyConfig(config: unknown): void; dispose(): void };
}

function addonInternals(llama: Llama, model: LlamaModel, context: LlamaContext, sequence: LlamaContextSequence): AddonInternals | undefined {
  const seq = sequence as unknown as Partial<AddonInternals['sequence']>;
  const addonContext = (context as unknown as { _ctx?: Partial<AddonInternals['addonContext']> })._ctx;
  const Sampler = (llama as unknown as { _bindings?: { AddonSampler?: new (model: unknown) => ReturnType<AddonInternals['newSampler']> } })._bindings?.AddonSampler;
  const addonModel = (model as unknown as { _model?: unknown })._model;
  if (
    typeof seq._decodeTokens !== 'function' ||
    typeof seq._resolveSamplerConfig !== 'function' ||
    seq._contextShift === undefined ||
    typeof addonContext?.sampleToken !== 'function' ||
    typeof Sampler !== 'function' ||
    addonModel === undefined
  ) {
    return undefined;
  }
  return {
    sequence: seq as AddonInternals['sequence'],
    addonContext: addonContext as AddonInternals['addonContext'],
    newSampler: () => new Sampler(addonModel),
  };
}

/**
 * The addon path: the same decode and the same addon sampling call `controlledEvaluate` makes, with the
 * same sampler configuration, but the addon's flat probability array is read directly instead of being
 * revived into a Map per position — about a third less time per position (BENCHMARKS.md). The output is
 * the same numbers; test/llamacpp-engine.test.ts holds the two paths to each other.
 */
function addonEvaluator(internals: AddonInternals): Evaluator {
  const { sequence, addonContext } = internals;
  const sampler = internals.newSampler();
  sampler.applyConfig(sequence._resolveSamplerConfig(FULL_DISTRIBUTION));
  return {
    kind: 'addon',
    async evaluate(tokens, wanted) {
      const contextShift = { size: sequence._contextShift.size, strategy: sequence._contextShift.strategy };
      // The callbacks run one after another, each while the batch's logits are still in the context.
      const values = await sequence._decodeTokens([...tokens], [...wanted], undefined, sequence._tokenMeter, contextShift, async (batchLogitIndex) => {
        const [, probabilities] = await addonContext.sampleToken(batchLogitIndex, sampler, true, false);
        return probabilities;
      });
      return tokens.map((_, i) => values[i] as number[] | undefined);
    },
    dispose() {
      sampler.dispose();
    },
  };
}


/**
 * node-llama-cpp's own paths (`addon`: its internals; `public`: controlledEvaluate): a whole distribution
 * per scored position arrives as a JS array of 2 × vocabulary numbers. One sequence, one request at a time.
 */
class NodeLlamaCppBackend implements Backend {
  readonly parallelism = 1;
  /** One request at a time on the sequence: each waits for the one before. */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly row: Float32Array;

  private constructor(
    private readonly path: string,
    private readonly model: LlamaModel,
    private readonly context: LlamaContext,
    private readonly sequence: LlamaContextSequence,
    private readonly evaluator: Evaluator,
    private readonly vocabSize: number,
    readonly gpu: string | undefined,
  ) {
    this.row = new Float32Array(vocabSize);
  }

  static async open(
    llama: Llama,
    file: string,
    facts: GgufFacts,
    contextLength: number,
    device: LlamaCppDevice,
    threads: number,
    flashAttention: boolean,
    publicPath: boolean,
  ): Promise<NodeLlamaCppBackend> {
    let model: LlamaModel;
    try {
      model = await llama.loadModel({
        modelPath: file,
        gpuLayers: llama.gpu === false || device === 'cpu' ? 0 : device === 'gpu' ? 'max' : 'auto',
        defaultContextFlashAttention: flashAttention,
      });
    } catch (error) {
      throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `llama.cpp could not load the model: ${message(error)}`, {
        file,
        hint: `node-llama-cpp 3.21.1 bundles llama.cpp v0.4.0; the file's architecture is ${facts.architecture}`,
        cause: error,
      });
    }
    let context: LlamaContext;
    try {
      context = await model.createContext({
        contextSize: contextLength,
        batchSize: contextLength,
        sequences: 1,
        flashAttention,
        // Exactly this many threads. node-llama-cpp's own CPU default is max(4, math cores), which on a
        // 2-core machine oversubscribes llama.cpp's per-op barriers: a 4-token decode then took 1–4 s instead of 4 ms.
        threads: { ideal: threads, min: threads },
      });
    } catch (error) {
      await model.dispose();
      throw new PolyquantError(ERROR_CODES.LIMIT, `llama.cpp could not create a context of ${contextLength} tokens: ${message(error)}`, {
        file,
        hint: 'use a smaller context length (--ctx) or free memory',
        cause: error,
      });
    }
    // llama.cpp rounds the context up (to a multiple of 256); a window must fit without a context shift,
    // which would silently drop its first tokens.
    if (context.contextSize < contextLength) {
      await context.dispose();
      await model.dispose();
      throw new PolyquantError(ERROR_CODES.LIMIT, `llama.cpp gave a context of ${context.contextSize} tokens for the ${contextLength} asked for`, { file });
    }
    const gpu = llama.gpu !== false && model.gpuLayers > 0 ? llama.gpu : undefined;
    const sequence = context.getSequence();
    const internals = publicPath ? undefined : addonInternals(llama, model, context, sequence);
    const evaluator = internals === undefined ? publicEvaluator(sequence) : addonEvaluator(internals);
    return new NodeLlamaCppBackend(file, model, context, sequence, evaluator, facts.vocabSize, gpu);
  }

  get kind(): DistributionPath {
    return this.evaluator.kind;
  }

  tokenize(text: string): Int32Array {
    // specialTokens = true: the text's `<|endoftext|>` etc. become their ids, as tokenizer.json's added
    // tokens always do. llama.cpp adds no BOS/EOS here (common_tokenize with add_special = false).
    return Int32Array.from(this.model.tokenize(text, true));
  }

  scoreWindow(tokens: Int32Array, from: number, tokenLogProbs: Float64Array, argmax: Int32Array, full: Float32Array | undefined): Promise<void> {
    return this.enqueue(async () => {
      const vocab = this.vocabSize;
      // Inputs are tokens 0 … n − 2 (the last token is only a target); distributions at from − 1 … n − 2.
      const inputs = Array.from(tokens.subarray(0, -1), (id) => id as Token);
      const output = await this.evaluateFresh(inputs, inputs.map((_, i) => i >= from - 1));
      for (let index = 0; index < tokenLogProbs.length; index += 1) {
        const row = full === undefined ? this.row : full.subarray(index * vocab, (index + 1) * vocab);
        this.readDistribution(output, from - 1 + index, row);
        tokenLogProbs[index] = row[tokens[from + index] as number] as number;
        argmax[index] = rowMaximum(row, 0, vocab).argmax;
      }
    });
  }

  /**
   * The context is decoded once, with the distribution after its last token; each continuation is then
   * decoded on top of it (all but its last token), read, and erased from the KV cache again.
   */
  scoreContinuations(context: Int32Array, continuations: readonly Int32Array[]): Promise<number[]> {
    return this.enqueue(async () => {
      const inputs = Array.from(context, (id) => id as Token);
      const first = await this.evaluateFresh(inputs, inputs.map((_, i) => i === context.length - 1));
      this.readDistribution(first, context.length - 1, this.row);
      const afterContext = Float32Array.from(this.row);
      const sums: number[] = [];
      for (const continuation of continuations) {
        if (continuation.length === 0) {
          sums.push(0);
          continue;
        }
        let sum = afterContext[continuation[0] as number] as number;
        if (continuation.length > 1) {
          const steps = Array.from(continuation.subarray(0, -1), (id) => id as Token);
          const output = await this.evaluate(steps, steps.map(() => true));
          for (let i = 1; i < continuation.length; i += 1) {
            this.readDistribution(output, i - 1, this.row);
            sum += this.row[continuation[i] as number] as number;
          }
          await this.sequence.eraseContextTokenRanges([{ start: context.length, end: this.sequence.nextTokenIndex }]);
        }
        sums.push(sum);
      }
      return sums;
    });
  }

  async close(): Promise<void> {
    await this.queue.catch(() => undefined);
    this.evaluator.dispose();
    await this.context.dispose();
    await this.model.dispose();
  }

  private enqueue<T>(work: () => Promise<T>): Promise<T> {
    const result = this.queue.then(work);
    this.queue = result.catch(() => undefined);
    return result;
  }

  private async evaluateFresh(tokens: readonly Token[], wanted: readonly boolean[]): Promise<(Distribution | undefined)[]> {
    await this.sequence.clearHistory();
    return this.evaluate(tokens, wanted);
  }

  private async evaluate(tokens: readonly Token[], wanted: readonly boolean[]): Promise<(Distribution | undefined)[]> {
    try {
      return await this.evaluator.evaluate(tokens, wanted);
    } catch (error) {
      throw new PolyquantError(ERROR_CODES.IO, `llama.cpp failed to evaluate ${tokens.length} tokens: ${message(error)}`, { file: this.path, cause: error });
    }
  }

  /** Log-probabilities of the distribution at `index` of `output` into `row` (vocabSize entries). */
  private readDistribution(output: readonly (Distribution | undefined)[], index: number, row: Float32Array): void {
    const distribution = output[index];
    const size = distribution === undefined ? 0 : distribution instanceof Map ? distribution.size : (distribution as readonly number[]).length / 2;
    if (distribution === undefined || size !== this.vocabSize) {
      throw new Error(
        `node-llama-cpp returned ${distribution === undefined ? 'no distribution' : `a distribution over ${size} tokens`} at input ${index}; expected all ${this.vocabSize}`,
      );
    }
    if (distribution instanceof Map) {
      for (const [id, probability] of distribution) row[id] = logProbability(probability);
      return;
    }
    const pairs = distribution as readonly number[];
    for (let i = 0; i < pairs.length; i += 2) {
      const probability = pairs[i + 1] as number;
      row[pairs[i] as number] = logProbability(probability);
    }
  }
}

/** Argument checks, result arrays and top-k for every path. */
class LlamaCppEngineImpl implements LlamaCppEngine {
  readonly name = 'llamacpp';
  readonly windowParallelism = 1;
  readonly device: 'cpu' | 'gpu';
  readonly gpu: string | undefined;
  private keptScratch: Uint8Array | undefined;
  private closed = false;

  constructor(
    readonly path: string,
    private readonly backend: Backend,
    readonly contextLength: number,
    readonly vocabSize: number,
    readonly trainContextLength: number | undefined,
    readonly nativeUnavailable: string | undefined,
    readonly deviceProbe: string,
  ) {
    this.gpu = backend.gpu;
    this.device = backend.gpu === undefined ? 'cpu' : 'gpu';
  }

  get parallelism(): number {
    return this.backend.parallelism;
  }

  /** The path distributions are read by (see LlamaCppEngine.distributionPath). */
  get distributionPath(): DistributionPath {
    return this.backend.kind;
  }

  tokenize(text: string): Int32Array {
    this.checkOpen();
    return this.backend.tokenize(text);
  }

  async score(tokens: Int32Array, options: ScoreOptions = {}): Promise<ScoreResult> {
    this.checkOpen();
    this.checkTokens(tokens, 'the window', this.contextLength);
    const { from, distributions, topK, into } = resolveScoreOptions(options, tokens.length);
    const vocab = this.vocabSize;
    const scored = tokens.length - from;
    const rowsWanted = distributions === 'full' && scored > 0 && (into === undefined || into.length < scored * vocab);
    const result = allocateScoreResult(scored, vocab, distributions, topK, rowsWanted ? this.backend.allocateRows?.(scored * vocab) : into);
    const { tokenLogProbs, argmax, full, topk } = result;
    if (scored === 0) return result;
    // top-k is taken from the full rows.
    const rows = full ?? (topk !== undefined ? new Float32Array(scored * vocab) : undefined);
    await this.backend.scoreWindow(tokens, from, tokenLogProbs, argmax, rows);
    if (topk !== undefined && rows !== undefined) {
      this.keptScratch ??= new Uint8Array(vocab);
      for (let index = 0; index < scored; index += 1) {
        topk.restLogMass[index] = topKOfRow(rows, index * vocab, vocab, topk.k, 0, topk.ids, topk.logProbs, index * topk.k, this.keptScratch);
      }
    }
    return result;
  }

  async scoreContinuations(context: Int32Array, continuations: readonly Int32Array[]): Promise<number[]> {
    this.checkOpen();
    checkContinuations(context, continuations, { contextLength: this.contextLength, vocabSize: this.vocabSize, file: this.path });
    return this.backend.scoreContinuations(context, [...continuations]);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.backend.close();
  }

  private checkOpen(): void {
    if (this.closed) throw new PolyquantError(ERROR_CODES.USAGE, 'the llamacpp engine is closed', { file: this.path });
  }

  private checkTokens(tokens: Int32Array, what: string, limit: number): void {
    checkTokenIds(tokens, what, { contextLength: limit, vocabSize: this.vocabSize, file: this.path });
  }
}
