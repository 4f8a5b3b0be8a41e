/**
 * `polyquant verify`: score a candidate and its baseline on identical tokens and documents, compare, and
 * gate on thresholds. Baseline and candidate are streamed window by window — both engines score a window,
 * the comparison keeps per-position scalars, and the window's distributions are dropped — so no logit
 * matrix of the whole text is ever held.
 */
import { stat } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { extname, resolve } from 'node:path';
import { isOnnxTypeName, ONNX_TYPE_NAMES, type OnnxTypeName } from '../converters/onnx/types.js';
import { checkOnnxExternalData } from '../converters/onnx/read.js';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { ioError, withFile } from '../io/file.js';
import { type Checkpoint, readCheckpoint } from '../readers/checkpoint.js';
import { type BaselineGgufType, cachedBaselineGguf } from './baseline-cache.js';
import type { BaselineSession } from './baseline-session.js';
import { type BaselineSource, engineBaselineSource, type OpenedBaseline } from './baseline-source.js';
import { kobestSection, type KobestStatisticsOptions } from './compare-kobest.js';
import type { Engine } from './engine.js';
import { createLlamaCppEngine } from './engines/llamacpp.js';
import { nativeKlDivergence } from './engines/llamacpp-native.js';
import { createOnnxEngine, isOnnxFile, isOnnxFolder, locateOnnxModel } from './engines/onnx.js';
import { createReferenceEngine, referenceEngineFits } from './engines/reference.js';
import { createWebGpuEngine, isWebGpuFolder } from './engines/webgpu.js';
import type { KobestInputs, KobestRunOptions, KobestSplit, KobestTaskName } from './kobest/index.js';
import { type KobestSampleRecord, kobestSampleRecords } from './kobest/samples.js';
import { type PerplexityProtocol, planWindows, type ScoreWindowsOptions, type WindowPlan, type WindowScore } from './perplexity.js';
import { engineThreads, RunClock } from './provenance.js';
import {
  comparisonSection,
  type KobestSection,
  lmEvalBlock,
  type ModelDescription,
  type PerplexityNumbers,
  type PerplexitySection,
  VERIFY_SCHEMA,
  type VerifyReport,
  withPplStderr,
} from './report.js';
import { isSavedBaselineFile, openSavedBaseline, SavedBaselineRecorder } from './saved-baseline.js';
import { planSimulation } from './simulate.js';
import { checkVerifySettings } from './settings.js';
import { checkWindowShapes, DistributionComparer, invalidComparison, nonFinitePositions } from './stats.js';
import { readTextFile } from './text.js';
import { gateSections, type Thresholds } from './thresholds.js';

/**
 * The `--engine` choices: `auto` picks reference for an HF folder the reference engine can hold, llamacpp
 * for a GGUF file, llamacpp on a cached f16 GGUF for a larger HF folder (baseline-cache.ts), onnx
 * (onnxruntime-node) for an ONNX folder (one with onnx/*.onnx) or a .onnx file, and webgpu (our WGSL runtime
 * on Dawn) for a WebGPU folder (one with tensor-cache.json).
 */
export const ENGINE_NAMES = ['auto', 'reference', 'llamacpp', 'onnx', 'webgpu'] as const;
export type EngineName = (typeof ENGINE_NAMES)[number];
/** The `--device` choices; the llamacpp and onnx engines can use a GPU, the reference engine cannot. */
export const DEVICE_NAMES = ['auto', 'cpu', 'gpu'] as const;
export type DeviceName = (typeof DEVICE_NAMES)[number];

export interface VerifyOptions {
  readonly candidate: string;
  readonly baseline: string;
  readonly pplFiles?: readonly string[];
  readonly ctx?: number;
  readonly protocol?: PerplexityProtocol;
  readonly stride?: number;
  /** Score only the first N windows of each text (a quick estimate). */
  readonly maxWindows?: number;
  /** KL divergence needs full next-token distributions from both models (default true). */
  readonly kld?: boolean;
  readonly kobestDir?: string;
  readonly tasks?: readonly KobestTaskName[];
  readonly shots?: readonly number[];
  readonly split?: KobestSplit;
  readonly limit?: number;
  /** Run the candidate on the baseline's weights passed through this quantization (ggml type or GGUF type); HF folders only. */
  readonly simulate?: string;
  /** Which engine runs each model; `auto` (default): reference for HF folders, llamacpp for GGUF files, onnx for ONNX folders and files. */
  readonly engine?: EngineName;
  /**
   * Which `onnx/model{suffix}.onnx` of an ONNX folder runs (each ONNX folder given, candidate or baseline);
   * may be left out for a folder holding one. To compare two types of one folder, name one side's .onnx file.
   */
  readonly onnxType?: OnnxTypeName;
  /** llamacpp and onnx: `cpu`, `gpu` (an error without one) or `auto`. The reference engine is CPU-only. */
  readonly device?: DeviceName;
  /**
   * Reference engine: worker threads (0 = inline). llamacpp engine: llama.cpp compute threads. onnx engine:
   * onnxruntime intra-op threads. Default: each engine's own.
   */
  readonly threads?: number;
  /** Where HF folders run by llama.cpp are converted to (default: baseline-cache.ts defaultCacheDir). */
  readonly cacheDir?: string;
  /** GGUF type an HF folder run by llama.cpp is converted to (default f16). */
  readonly baselineType?: BaselineGgufType;
  readonly thresholds?: Thresholds;
  /** lm-eval's bootstrap_iters for each model's macro_f1_stderr (compare-kobest.ts; default 10000, 0: off). */
  readonly bootstrapIterations?: number;
  /** The command line that asked for this run, for the report's provenance (the CLI passes its argv). */
  readonly commandLine?: readonly string[];
  /**
   * Receives the per-document KOBEST records of each task and shot count (kobest/samples.ts) as they are
   * compared: what `--log-samples` writes.
   */
  readonly onKobestSamples?: (records: readonly KobestSampleRecord[]) => void;
  readonly onProgress?: (event: VerifyProgress) => void;
  /**
   * The baseline scored once and replayed (baseline-session.ts; what a sweep passes to every cell): its
   * tokens, windows, full rows and KOBEST results are taken from the session instead of loading and
   * scoring `baseline` again. The session must have been made for `baseline` with these options' engine
   * settings; the report is the one verify would write without it.
   */
  readonly baselineSession?: BaselineSession;
  /**
   * Also write the baseline's side of this comparison to this file (saved-baseline.ts): a later verify
   * that passes the file as `baseline` compares against it without loading a baseline model. Written under
   * a temp name and renamed when the comparison completes.
   */
  readonly saveBaseline?: string;
}

/** The options of a verify run that concern the baseline alone (all but the candidate). */
export type BaselineOptions = Omit<VerifyOptions, 'candidate'>;

export type VerifyProgress =
  | { readonly stage: 'load'; readonly model: 'baseline' | 'candidate'; readonly path: string }
  | { readonly stage: 'cache'; readonly model: 'baseline' | 'candidate'; readonly step: 'hash' | 'convert'; readonly done: number; readonly total: number }
  | { readonly stage: 'perplexity'; readonly file: string; readonly windows: number; readonly done: number; readonly tokens: number }
  | { readonly stage: 'kobest'; readonly model: 'baseline' | 'candidate'; readonly task: string; readonly shots: number; readonly done: number; readonly total: number };

export const DEFAULT_CTX = 512;
const GGUF_MAGIC = 'GGUF';

export interface LoadedModel {
  readonly engine: Engine;
  readonly description: ModelDescription;
}

type ModelKind = 'folder' | 'onnx-folder' | 'webgpu-folder' | 'onnx-file' | 'gguf' | 'other';

/**
 * What a path holds: an HF folder, an ONNX folder (onnx/*.onnx; it may hold HF weights too), a GGUF file
 * (by extension or magic), a .onnx file, or some other file.
 */
async function modelKind(absolute: string, role: 'baseline' | 'candidate'): Promise<ModelKind> {
  let isDirectory: boolean;
  try {
    isDirectory = (await stat(absolute)).isDirectory();
  } catch (error) {
    throw ioError(absolute, `open the ${role}`, error);
  }
  if (isDirectory) return (await isOnnxFolder(absolute)) ? 'onnx-folder' : (await isWebGpuFolder(absolute)) ? 'webgpu-folder' : 'folder';
  if (isOnnxFile(absolute)) return 'onnx-file';
  // A .gguf file goes to the GGUF reader whatever its bytes, so a damaged one is reported as such.
  if (extname(absolute).toLowerCase() === '.gguf') return 'gguf';
  const magic = await withFile(absolute, async (file) => (file.size >= 4 ? new TextDecoder().decode(await file.read(0, 4)) : ''));
  return magic === GGUF_MAGIC ? 'gguf' : 'other';
}

export interface ModelPlan {
  readonly role: 'baseline' | 'candidate';
  readonly path: string;
  readonly engine: 'reference' | 'llamacpp' | 'onnx' | 'webgpu';
  /** For the onnx engine: the .onnx file that runs (chosen in an ONNX folder by --onnx-type). */
  readonly onnxFile?: string;
  /** An HF folder for llama.cpp: converted to a cached GGUF first. */
  readonly convert: boolean;
  /** The HF folder, when planning already read it (loading reads it again otherwise). */
  readonly checkpoint?: Checkpoint;
}

/** Which engine runs `path`, refusing combinations that cannot work before anything is loaded. */
export async function planModel(path: string, role: 'baseline' | 'candidate', options: BaselineOptions, simulate: string | undefined): Promise<ModelPlan> {
  const absolute = resolve(path);
  const kind = await modelKind(absolute, role);
  if (kind === 'other') {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `the ${role} is neither a Hugging Face model folder nor a GGUF file, ONNX folder or .onnx file`, {
      file: absolute,
      hint: 'verify runs HF folders with the reference engine, .gguf files with the llamacpp engine and ONNX folders (onnx/model*.onnx) or .onnx files with the onnx engine',
    });
  }
  const requested = options.engine ?? 'auto';
  if (!(ENGINE_NAMES as readonly string[]).includes(requested)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `engine ${JSON.stringify(requested)} is not one of ${ENGINE_NAMES.join(', ')}`);
  }
  let engine: 'reference' | 'llamacpp' | 'onnx' | 'webgpu';
  let checkpoint: Checkpoint | undefined;
  if (requested !== 'auto') {
    engine = requested;
  } else if (kind === 'gguf') {
    engine = 'llamacpp';
  } else if (kind === 'onnx-folder' || kind === 'onnx-file') {
    engine = 'onnx';
  } else if (kind === 'webgpu-folder') {
    engine = 'webgpu';
  } else {
    // The reference engine is the oracle where it fits (≈ 1 B parameters); beyond, the folder's f16 GGUF in llama.cpp.
    checkpoint = await readCheckpoint(absolute);
    const fits = referenceEngineFits(checkpoint.config, { ...(options.threads !== undefined && { threads: options.threads }) });
    engine = fits || simulate !== undefined ? 'reference' : 'llamacpp';
  }
  const kindInWords = kind === 'gguf' ? 'a GGUF file' : kind === 'webgpu-folder' ? 'a WebGPU folder' : 'a .onnx file';
  if (engine === 'reference' && kind !== 'folder' && kind !== 'onnx-folder') {
    throw new PolyquantError(ERROR_CODES.USAGE, `the reference engine runs Hugging Face folders; the ${role} is ${kindInWords}`, {
      file: absolute,
      hint: `use --engine auto or ${kind === 'gguf' ? 'llamacpp' : kind === 'webgpu-folder' ? 'webgpu' : 'onnx'}`,
    });
  }
  if (engine === 'webgpu' && kind !== 'webgpu-folder') {
    throw new PolyquantError(ERROR_CODES.USAGE, `the webgpu engine runs WebGPU folders (tensor-cache.json); the ${role} is ${kind === 'folder' || kind === 'onnx-folder' ? 'a folder without tensor-cache.json' : kind === 'gguf' ? 'a GGUF file' : 'a .onnx file'}`, {
      file: absolute,
      hint: 'convert it first (polyquant convert --to webgpu --type …), or use --engine auto',
    });
  }
  if (kind === 'webgpu-folder' && engine !== 'webgpu') {
    throw new PolyquantError(ERROR_CODES.USAGE, `the ${role} is a WebGPU folder, which only the webgpu engine runs`, { file: absolute, hint: 'use --engine auto or webgpu' });
  }
  if (engine === 'llamacpp' && kind === 'onnx-file') {
    throw new PolyquantError(ERROR_CODES.USAGE, `the llamacpp engine runs GGUF files and Hugging Face folders; the ${role} is a .onnx file`, {
      file: absolute,
      hint: 'use --engine auto or onnx',
    });
  }
  if (engine === 'onnx' && kind !== 'onnx-folder' && kind !== 'onnx-file') {
    throw new PolyquantError(
      ERROR_CODES.USAGE,
      `the onnx engine runs ONNX folders (onnx/model*.onnx) and .onnx files; the ${role} is ${kind === 'gguf' ? 'a GGUF file' : 'a folder without onnx/*.onnx'}`,
      {
        file: absolute,
        hint: kind === 'gguf' ? 'use --engine auto or llamacpp' : 'convert it first (polyquant convert --to onnx), or run it with --engine auto, reference or llamacpp',
      },
    );
  }
  if (simulate !== undefined && kind !== 'folder' && kind !== 'onnx-folder') {
    throw new PolyquantError(ERROR_CODES.USAGE, `--simulate quantizes the weights of a Hugging Face folder; the ${role} is ${kindInWords}`, {
      file: absolute,
      hint: `${kindInWords === 'a GGUF file' ? 'a GGUF file' : kindInWords === 'a WebGPU folder' ? 'a WebGPU folder' : 'an ONNX model'} is already converted: verify it directly, without --simulate`,
    });
  }
  if (engine === 'onnx' && simulate !== undefined) {
    throw new PolyquantError(ERROR_CODES.USAGE, '--simulate runs in the reference engine; it cannot be combined with the onnx engine', {
      file: absolute,
      hint: 'convert the folder to the type instead (polyquant convert --to onnx --type …) and verify the ONNX folder, or use --engine reference',
    });
  }
  if (engine === 'onnx') {
    // The file is chosen, and its external data checked, before any model loads: an ambiguous folder or a
    // missing .onnx_data file is refused at once.
    const located = await locateOnnxModel(absolute, kind === 'onnx-folder' ? options.onnxType : undefined);
    await checkOnnxExternalData(located.file);
    return { role, path: absolute, engine, onnxFile: located.file, convert: false };
  }
  if (engine === 'llamacpp' && simulate !== undefined) {
    throw new PolyquantError(ERROR_CODES.USAGE, '--simulate runs in the reference engine; it cannot be combined with --engine llamacpp', {
      file: absolute,
      hint: 'convert the folder to the type instead (polyquant convert --type …) and verify the GGUF file',
    });
  }
  return { role, path: absolute, engine, convert: engine === 'llamacpp' && kind === 'folder', ...(checkpoint !== undefined && { checkpoint }) };
}

export async function loadModel(plan: ModelPlan, options: BaselineOptions, simulate: string | undefined): Promise<LoadedModel> {
  const { role, path } = plan;
  options.onProgress?.({ stage: 'load', model: role, path });
  if (plan.engine === 'webgpu') {
    const engine = await createWebGpuEngine(path, {
      ...(options.device !== undefined && { device: options.device }),
      ...(options.threads !== undefined && { threads: options.threads }),
      // Perplexity alone needs windows of ctx: a cache of ctx positions, not the model's whole context.
      ...(options.kobestDir === undefined && { contextLength: options.ctx ?? DEFAULT_CTX }),
    });
    const ctx = options.ctx ?? DEFAULT_CTX;
    if (ctx > engine.trainContextLength) {
      await engine.close();
      throw new PolyquantError(ERROR_CODES.USAGE, `--ctx ${ctx} is longer than the model's context length ${engine.trainContextLength}`, { file: path });
    }
    return loaded(path, engine, {}, options.threads);
  }
  if (plan.engine === 'onnx') {
    const file = plan.onnxFile ?? path;
    const engine = await createOnnxEngine(file, {
      ...(options.device !== undefined && { device: options.device }),
      ...(options.threads !== undefined && { threads: options.threads }),
      // Perplexity alone needs windows of ctx (and a bare .onnx file may come without config.json).
      ...(options.kobestDir === undefined && { contextLength: options.ctx ?? DEFAULT_CTX }),
    });
    const ctx = options.ctx ?? DEFAULT_CTX;
    if (engine.trainContextLength !== undefined && ctx > engine.trainContextLength) {
      await engine.close();
      throw new PolyquantError(ERROR_CODES.USAGE, `--ctx ${ctx} is longer than the model's context length ${engine.trainContextLength}`, { file });
    }
    // The report names the .onnx file that ran (an ONNX folder may hold several types).
    return loaded(file, engine, {}, options.threads);
  }
  if (plan.engine === 'llamacpp') {
    // An HF folder becomes its GGUF (f16 by default) once, cached by content; the report names the file.
    const cached = plan.convert
      ? await cachedBaselineGguf(plan.checkpoint ?? path, {
          ...(options.cacheDir !== undefined && { dir: options.cacheDir }),
          ...(options.baselineType !== undefined && { type: options.baselineType }),
          onProgress: (event) => options.onProgress?.({ stage: 'cache', model: role, step: event.stage, done: event.done, total: event.total }),
        })
      : undefined;
    const engine = await createLlamaCppEngine(cached?.file ?? path, {
      ...(options.device !== undefined && { device: options.device }),
      ...(options.threads !== undefined && { threads: options.threads }),
      // Perplexity alone needs windows of ctx; KOBEST uses the model's whole context, as the reference does.
      ...(options.kobestDir === undefined && { contextLength: options.ctx ?? DEFAULT_CTX }),
    });
    const ctx = options.ctx ?? DEFAULT_CTX;
    if (engine.trainContextLength !== undefined && ctx > engine.trainContextLength) {
      await engine.close();
      throw new PolyquantError(ERROR_CODES.USAGE, `--ctx ${ctx} is longer than the model's context length ${engine.trainContextLength}`, { file: path });
    }
    return loaded(path, engine, cached === undefined ? {} : { artifact: { file: cached.file, type: cached.type, cached: cached.hit, seconds: cached.seconds } }, options.threads);
  }
  // The reference engine always runs on the CPU; --device applies to the llamacpp model beside it.
  const checkpoint = plan.checkpoint ?? (await readCheckpoint(path));
  const simulation = simulate === undefined ? undefined : planSimulation(simulate, checkpoint.config);
  const engine = await createReferenceEngine(checkpoint, {
    ...(simulation !== undefined && { weightTransform: simulation.transform }),
    ...(options.threads !== undefined && { threads: options.threads }),
  });
  return loaded(path, engine, simulation === undefined ? {} : { simulate: simulation.fileType }, options.threads);
}

/** A loaded model and its description in the report (`threads`: what --threads asked for, if anything). */
function loaded(path: string, engine: Engine, extra: Pick<ModelDescription, 'simulate' | 'artifact'>, threads: number | undefined): LoadedModel {
  // The GPU backend actually used (llamacpp: cuda, vulkan, … or the device name), not just "gpu".
  const gpu: unknown = (engine as Partial<{ gpu: unknown }>).gpu;
  // The webgpu engine names its adapter (a software one runs on the CPU and says so).
  const adapter: unknown = (engine as Partial<{ adapter: unknown }>).adapter;
  return {
    engine,
    description: {
      path,
      engine: engine.name,
      device: engine.device,
      threads: engineThreads(engine, threads),
      ...(typeof gpu === 'string' && { gpu }),
      ...(typeof adapter === 'string' && { adapter }),
      ...extra,
    },
  };
}

/** The first index where two token lists differ, or −1 when they are identical. */
export function firstTokenMismatch(a: Int32Array, b: Int32Array): number {
  const shorter = Math.min(a.length, b.length);
  for (let i = 0; i < shorter; i += 1) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : shorter;
}

function numbers(
  nllSum: number,
  scored: number,
  tokens: number,
  bytes: number,
  windowNll: number[],
  nonFinite: { count: number; firstToken: number | null },
): Omit<PerplexityNumbers, 'ppl_stderr'> {
  // Non-finite output has no perplexity: NaN (null in JSON), never a huge number that reads as a measurement.
  const mean = nonFinite.count > 0 ? Number.NaN : nllSum / scored;
  return {
    ppl: Math.exp(mean),
    nll_sum: nonFinite.count > 0 ? Number.NaN : nllSum,
    scored_tokens: scored,
    bytes,
    bits_per_byte: (mean * tokens) / bytes / Math.LN2,
    window_nll: windowNll,
    non_finite_positions: nonFinite.count,
    first_non_finite_token: nonFinite.firstToken,
  };
}

/** The windows verify scores on a text's tokens and how (shared by the comparison and scoreBaseline). */
function windowRequest(tokens: Int32Array, file: string, options: BaselineOptions): { windows: WindowPlan[]; full: boolean; scoreOptions: ScoreWindowsOptions } {
  const ctx = options.ctx ?? DEFAULT_CTX;
  const protocol = options.protocol ?? 'windows';
  let windows = planWindows(tokens.length, { protocol, ctx, ...(options.stride !== undefined && { stride: options.stride }), source: file });
  if (options.maxWindows !== undefined) windows = windows.slice(0, options.maxWindows);
  const full = options.kld ?? true;
  // recycle: the comparer reduces each window's rows before the next is asked for.
  return { windows, full, scoreOptions: { distributions: full ? 'full' : 'none', recycle: true } };
}

/** The KOBEST run options of one side (shared by the comparison and scoreBaseline). */
function kobestRequest(options: BaselineOptions, inputs: KobestInputs | undefined, maxLength: number, model: 'baseline' | 'candidate'): KobestRunOptions {
  return {
    dir: options.kobestDir as string,
    ...(inputs !== undefined && { inputs }),
    ...(options.tasks !== undefined && { tasks: options.tasks }),
    shots: options.shots ?? [0],
    ...(options.split !== undefined && { split: options.split }),
    ...(options.limit !== undefined && { limit: options.limit }),
    maxLength,
    onProgress: (progress) =>
      options.onProgress?.({ stage: 'kobest', model, task: progress.task, shots: progress.shots, done: progress.done, total: progress.total }),
  };
}

async function comparePerplexity(baseline: BaselineSource, candidate: Engine, file: string, options: VerifyOptions): Promise<PerplexitySection> {
  const text = await readTextFile(file);
  const tokens = await baseline.tokenize(text.text);
  const candidateTokens = candidate.tokenize(text.text);
  const mismatch = firstTokenMismatch(tokens, candidateTokens);
  if (mismatch >= 0) {
    const around = (ids: Int32Array): string => `[${Array.from(ids.subarray(Math.max(0, mismatch - 3), mismatch + 4)).join(', ')}]`;
    throw new PolyquantError(
      ERROR_CODES.CONFIG,
      `the baseline and candidate tokenize the text differently: ${tokens.length} vs ${candidateTokens.length} tokens, first difference at token ${mismatch} (baseline ${around(tokens)}, candidate ${around(candidateTokens)} from token ${Math.max(0, mismatch - 3)})`,
      { file: text.file, hint: 'both models must share a tokenizer for a token-level comparison' },
    );
  }
  if (baseline.vocabSize !== candidate.vocabSize) {
    throw new PolyquantError(ERROR_CODES.CONFIG, `vocabulary sizes differ: baseline ${baseline.vocabSize}, candidate ${candidate.vocabSize}`);
  }
  const ctx = options.ctx ?? DEFAULT_CTX;
  const protocol = options.protocol ?? 'windows';
  for (const engine of [baseline, candidate]) {
    if (ctx > engine.contextLength) {
      throw new PolyquantError(ERROR_CODES.USAGE, `--ctx ${ctx} is longer than the model's context length ${engine.contextLength}`, { file: text.file });
    }
  }
  const candidateSource = engineBaselineSource(candidate);
  const { windows, full, scoreOptions } = windowRequest(tokens, text.file, options);
  const baseStream = baseline.scoreWindows(tokens, windows, scoreOptions)[Symbol.asyncIterator]();
  const candStream = candidateSource.scoreWindows(tokens, windows, scoreOptions)[Symbol.asyncIterator]();
  const comparer = new DistributionComparer();
  // Done 0 first: the progress clock starts before the first window, not at its end.
  options.onProgress?.({ stage: 'perplexity', file: text.file, windows: windows.length, done: 0, tokens: 0 });
  const totals = { base: 0, cand: 0, scored: 0, baseWindows: [] as number[], candWindows: [] as number[] };
  const nonFinite = { base: { count: 0, firstToken: null as number | null }, cand: { count: 0, firstToken: null as number | null } };
  try {
    for (let done = 0; done < windows.length; done += 1) {
      const [a, b] = await Promise.all([baseStream.next(), candStream.next()]);
      const base = a.value as WindowScore;
      const cand = b.value as WindowScore;
      let klds: Float64Array | undefined;
      if (full && base.score.full !== undefined && cand.score.full !== undefined) {
        checkWindowShapes(base.score.full, cand.score.full, baseline.vocabSize, base.score.argmax, cand.score.argmax);
        // In C++ where a native llama.cpp engine runs in this process (60 MB of rows per window: ~10× the
        // JS loop), else in JS; the same formula and order either way.
        klds = await nativeKlDivergence(base.score.full, cand.score.full, baseline.vocabSize, base.score.argmax.length, availableParallelism());
        if (klds !== undefined) comparer.addKlds(klds, base.score.argmax, cand.score.argmax);
        else comparer.addWindow(base.score.full, cand.score.full, baseline.vocabSize, base.score.argmax, cand.score.argmax);
      } else {
        comparer.addArgmax(base.score.argmax, cand.score.argmax);
      }
      // Every engine's target log-probabilities: PPL ±, the PPL ratio ±, Δp.
      comparer.addTargets(base.score.tokenLogProbs, cand.score.tokenLogProbs);
      for (const [side, result, engine] of [[nonFinite.base, base, baseline], [nonFinite.cand, cand, candidateSource]] as const) {
        const found = nonFinitePositions(result.score.tokenLogProbs, result.score.argmax, result.score.full, engine.vocabSize, klds);
        side.count += found.count;
        if (found.first >= 0) side.firstToken ??= result.window.start + result.window.from + found.first;
      }
      const scored = base.score.tokenLogProbs.length;
      totals.base += base.nll;
      totals.cand += cand.nll;
      totals.scored += scored;
      totals.baseWindows.push(base.nll / scored);
      totals.candWindows.push(cand.nll / scored);
      options.onProgress?.({ stage: 'perplexity', file: text.file, windows: windows.length, done: done + 1, tokens: totals.scored });
    }
  } finally {
    await Promise.allSettled([baseStream.return?.(undefined), candStream.return?.(undefined)]);
  }
  const baseNumbers = numbers(totals.base, totals.scored, tokens.length, text.bytes, totals.baseWindows, nonFinite.base);
  const candNumbers = numbers(totals.cand, totals.scored, tokens.length, text.bytes, totals.candWindows, nonFinite.cand);
  const broken = nonFinite.base.count > 0 || nonFinite.cand.count > 0;
  const measured = comparer.result(totals.scored);
  // With either side non-finite nothing compares: every comparison is NaN, so every gate fails.
  const distribution = broken ? invalidComparison(measured) : measured;
  return {
    file: text.file,
    protocol,
    ctx,
    ...(protocol === 'strided' && { stride: options.stride ?? Math.max(1, Math.floor(ctx / 2)) }),
    tokens: tokens.length,
    baseline: withPplStderr(baseNumbers, distribution.nll?.baseline),
    candidate: withPplStderr(candNumbers, distribution.nll?.candidate),
    comparison: comparisonSection(distribution, full, (candNumbers.ppl / baseNumbers.ppl - 1) * 100),
  };
}

async function compareKobestRuns(baseline: BaselineSource, candidate: Engine, options: VerifyOptions, inputs: KobestInputs | undefined): Promise<KobestSection[]> {
  // One max_length for both, so both truncate long prompts identically.
  const maxLength = Math.min(baseline.contextLength, candidate.contextLength);
  const run = (source: BaselineSource, model: 'baseline' | 'candidate') => source.runKobest(kobestRequest(options, inputs, maxLength, model));
  const [base, cand] = await Promise.all([run(baseline, 'baseline'), run(engineBaselineSource(candidate), 'candidate')]);
  return base.results.map((baseResult, i) => {
    const candResult = cand.results[i];
    if (candResult === undefined) throw new PolyquantError(ERROR_CODES.CONFIG, 'the candidate run is missing a KOBEST result');
    if (options.onKobestSamples !== undefined) options.onKobestSamples(kobestSampleRecords(baseResult, candResult, inputs, options.limit));
    const statistics: KobestStatisticsOptions = options.bootstrapIterations === undefined ? {} : { bootstrapIterations: options.bootstrapIterations };
    return kobestSection(baseResult, candResult, statistics);
  });
}

export async function verify(options: VerifyOptions): Promise<VerifyReport> {
  const pplFiles = options.pplFiles ?? [];
  if (pplFiles.length === 0 && options.kobestDir === undefined) {
    throw new PolyquantError(ERROR_CODES.USAGE, 'nothing to measure', { hint: 'give --ppl FILE and/or --kobest DIR' });
  }
  if (options.device !== undefined && !(DEVICE_NAMES as readonly string[]).includes(options.device)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `device ${JSON.stringify(options.device)} is not one of ${DEVICE_NAMES.join(', ')}`);
  }
  if (options.onnxType !== undefined) options = { ...options, onnxType: options.onnxType.toLowerCase() as OnnxTypeName };
  if (options.onnxType !== undefined && !isOnnxTypeName(options.onnxType)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `--onnx-type ${JSON.stringify(options.onnxType)} is not one of ${ONNX_TYPE_NAMES.join(', ')}`);
  }
  // Every setting and input (texts, KOBEST splits) before any model is loaded.
  const kobestInputs = await checkVerifySettings(options);
  const clock = new RunClock(options.commandLine);
  const session = options.baselineSession;
  if (session !== undefined && session.baseline !== resolve(options.baseline)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `the baseline session was made for ${session.baseline}, not ${resolve(options.baseline)}`);
  }
  // A saved baseline file (saved-baseline.ts) has no plan: it is read, not run.
  const savedBaseline = session === undefined && (await isSavedBaselineFile(options.baseline));
  const baselinePlan = savedBaseline ? undefined : (session?.plan ?? (await planModel(options.baseline, 'baseline', options, undefined)));
  const candidatePlan = await planModel(options.candidate, 'candidate', options, options.simulate);
  if (options.device === 'gpu' && (baselinePlan?.engine ?? 'reference') === 'reference' && candidatePlan.engine === 'reference') {
    throw new PolyquantError(ERROR_CODES.USAGE, 'the reference engine runs on the CPU only, and neither model is a GGUF or ONNX model', {
      hint: 'use --device cpu or auto; --device gpu applies to GGUF files run by the llamacpp engine and ONNX models run by the onnx engine',
    });
  }
  if (options.onnxType !== undefined && baselinePlan?.onnxFile === undefined && candidatePlan.onnxFile === undefined) {
    throw new PolyquantError(ERROR_CODES.USAGE, `--onnx-type ${options.onnxType} chooses the model of an ONNX folder, and neither model runs in the onnx engine`);
  }
  // With a session the baseline is whatever it scored (loading its engine only for what it has not kept).
  let stageStart = performance.now();
  // A saved baseline is checked against these settings and inputs here, before any model loads.
  const baseline: OpenedBaseline & { checkCandidate?(engine: Engine): void } =
    session !== undefined
      ? await session.open(options.onProgress)
      : baselinePlan === undefined
        ? await openSavedBaseline(options, kobestInputs)
        : await loadedBaseline(baselinePlan, options);
  clock.stage('load', stageStart, { subject: 'baseline' });
  let candidate: LoadedModel | undefined;
  let recorder: SavedBaselineRecorder | undefined;
  try {
    stageStart = performance.now();
    candidate = await loadModel(candidatePlan, options, options.simulate);
    clock.stage('load', stageStart, { subject: 'candidate' });
    baseline.checkCandidate?.(candidate.engine);
    // --save-baseline: the baseline's side is written as the comparisons stream it, and kept when they complete.
    if (options.saveBaseline !== undefined) recorder = await SavedBaselineRecorder.create(options.saveBaseline, baseline, candidate.engine, options, kobestInputs);
    const baselineSource = recorder?.source ?? baseline.source;
    const thresholds = options.thresholds ?? {};
    const perplexity: PerplexitySection[] = [];
    for (const file of pplFiles) {
      stageStart = performance.now();
      const section = await comparePerplexity(baselineSource, candidate.engine, file, options);
      perplexity.push(section);
      clock.stage('perplexity', stageStart, { subject: section.file, scored_tokens: section.comparison.positions });
    }
    stageStart = performance.now();
    const kobest = options.kobestDir === undefined ? [] : await compareKobestRuns(baselineSource, candidate.engine, options, kobestInputs);
    if (kobest.length > 0) clock.stage('kobest', stageStart, { documents: kobest.reduce((sum, section) => sum + section.baseline.n, 0) });
    const { checks, verdict, gated } = gateSections(perplexity, kobest, thresholds);
    const baselineDescription = recorder === undefined ? baseline.description : await recorder.commit();
    return {
      schema: VERIFY_SCHEMA,
      created: new Date().toISOString(),
      provenance: clock.finish([baseline.description.engine, candidate.description.engine]),
      candidate: candidate.description,
      baseline: baselineDescription,
      perplexity,
      kobest,
      thresholds,
      checks,
      gated,
      verdict,
      ...lmEvalBlock(kobest),
    };
  } finally {
    await Promise.allSettled([recorder?.abort(), baseline.close(), candidate?.engine.close()]);
  }
}

async function loadedBaseline(plan: ModelPlan, options: BaselineOptions): Promise<{ source: BaselineSource; description: ModelDescription; close(): Promise<void> }> {
  const model = await loadModel(plan, options, undefined);
  return { source: engineBaselineSource(model.engine), description: model.description, close: () => model.engine.close() };
}

/**
 * Scores the baseline into a session ahead of the comparisons: the same texts, windows and KOBEST requests
 * a verify with these options makes, so that every comparison after it replays them (a sweep times the
 * baseline apart from its cells this way). KOBEST is recorded at the baseline's own max_length, which is
 * the comparison's whenever the candidate's context is not shorter (otherwise that comparison records
 * its own). Returns the seconds it took.
 */
export async function scoreBaseline(session: BaselineSession, options: Omit<BaselineOptions, 'baselineSession'>): Promise<number> {
  const started = performance.now();
  const kobestInputs = await checkVerifySettings(options);
  const baseline = await session.open(options.onProgress);
  try {
    await scoreEverything(baseline.source, options, kobestInputs);
  } finally {
    await baseline.close();
  }
  return (performance.now() - started) / 1000;
}

/**
 * Runs the baseline alone over every text and KOBEST request a verify with `options` makes: the windows are
 * scored, the KOBEST log-likelihoods computed at the baseline's own max_length, and nothing compared.
 */
async function scoreEverything(source: BaselineSource, options: BaselineOptions, kobestInputs: KobestInputs | undefined): Promise<void> {
  for (const file of options.pplFiles ?? []) {
    const text = await readTextFile(file);
    const tokens = await source.tokenize(text.text);
    const ctx = options.ctx ?? DEFAULT_CTX;
    if (ctx > source.contextLength) {
      throw new PolyquantError(ERROR_CODES.USAGE, `--ctx ${ctx} is longer than the model's context length ${source.contextLength}`, { file: text.file });
    }
    const { windows, scoreOptions } = windowRequest(tokens, text.file, options);
    options.onProgress?.({ stage: 'perplexity', file: text.file, windows: windows.length, done: 0, tokens: 0 });
    let done = 0;
    let scored = 0;
    for await (const window of source.scoreWindows(tokens, windows, scoreOptions)) {
      done += 1;
      scored += window.score.tokenLogProbs.length;
      options.onProgress?.({ stage: 'perplexity', file: text.file, windows: windows.length, done, tokens: scored });
    }
  }
  if (options.kobestDir !== undefined) await source.runKobest(kobestRequest(options, kobestInputs, source.contextLength, 'baseline'));
}

/** What `saveBaseline` wrote. */
export interface SavedBaselineSummary {
  readonly file: string;
  readonly bytes: number;
  readonly baseline: ModelDescription;
  readonly texts: number;
  readonly windows: number;
  readonly scoredTokens: number;
  readonly kobestResults: number;
  readonly seconds: number;
}

/**
 * `verify --baseline MODEL --save-baseline FILE` without a candidate (llama-perplexity's
 * --kl-divergence-base): scores the baseline alone over the texts and KOBEST data of `options` and writes
 * them to `file` (saved-baseline.ts), for later runs to pass as `baseline`. KOBEST is scored at the
 * baseline's context length; a candidate whose context is shorter is refused by the file. Nothing is
 * compared and nothing gated.
 */
export async function saveBaseline(file: string, options: BaselineOptions): Promise<SavedBaselineSummary> {
  const started = performance.now();
  const kobestInputs = await checkVerifySettings(options);
  if (await isSavedBaselineFile(options.baseline)) {
    throw new PolyquantError(ERROR_CODES.USAGE, '--save-baseline saves the baseline model of a run, and --baseline is already a saved baseline', {
      file: resolve(options.baseline),
      hint: 'copy the file instead, or give the baseline model as --baseline',
    });
  }
  const plan = await planModel(options.baseline, 'baseline', options, undefined);
  const baseline = await loadedBaseline(plan, options);
  let recorder: SavedBaselineRecorder | undefined;
  try {
    recorder = await SavedBaselineRecorder.create(file, baseline, baseline.source, options, kobestInputs);
    let windows = 0;
    let scoredTokens = 0;
    let kobestResults = 0;
    const counting: BaselineSource = {
      ...recorder.source,
      scoreWindows: async function* (tokens, plans, scoreOptions) {
        for await (const window of (recorder as SavedBaselineRecorder).source.scoreWindows(tokens, plans, scoreOptions)) {
          windows += 1;
          scoredTokens += window.score.tokenLogProbs.length;
          yield window;
        }
      },
      runKobest: async (request) => {
        const report = await (recorder as SavedBaselineRecorder).source.runKobest(request);
        kobestResults += report.results.length;
        return report;
      },
    };
    await scoreEverything(counting, options, kobestInputs);
    const description = await recorder.commit();
    recorder = undefined;
    const note = description.saved_baseline;
    return {
      file: resolve(file),
      bytes: note?.bytes ?? 0,
      baseline: description,
      texts: new Set(options.pplFiles ?? []).size,
      windows,
      scoredTokens,
      kobestResults,
      seconds: (performance.now() - started) / 1000,
    };
  } finally {
    await Promise.allSettled([recorder?.abort(), baseline.close()]);
  }
}
