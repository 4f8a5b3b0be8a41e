/// <reference types="@webgpu/types" />
/**
 * The webgpu engine: a WebGPU folder (`polyquant convert --to webgpu`: tensor-cache.json, params_shard_N.bin,
 * mlc-chat-config.json, tokenizer.json) run by our own WGSL runtime (src/runtime/webgpu) on Dawn
 * (webgpu-dawn.ts) — the code the browser page runs, so `verify` measures what a browser user gets.
 *
 * - Devices: `gpu` a hardware adapter (UNSUPPORTED without one), `cpu` a software adapter (SwiftShader),
 *   `auto` hardware if any, else software. The engine reports the adapter: `gpu` names a hardware one;
 *   `adapter` says "software WebGPU adapter (…)" on a CPU one, whose `device` is then `cpu`.
 * - score: the window (all but its last token) in one forward on an empty cache; the logits rows from
 *   position from − 1 on are read back and turned into log-probabilities by row-statistics.ts, exactly as
 *   the onnx engine and the reference engine do it.
 * - scoreContinuations: the context once, then each continuation on the cached keys and values, the cache
 *   truncated back to the context after each. Every kernel computes a token's outputs from that token's
 *   own row and the cache alone (no reduction across tokens), so this equals scoring context +
 *   continuation in one pass.
 * - One request at a time (the model queues forwards); `threads` is accepted for the CLI's sake and
 *   ignored: a software adapter schedules its own threads.
 */
import { readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { TENSOR_CACHE_FILE } from '../../converters/webgpu/manifest.js';
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import { ioError, pathExists } from '../../io/file.js';
import { loadTokenizer, readTokenizerFiles, type TextTokenizer, TOKENIZER_FILE_NAMES } from '../../readers/tokenizer.js';
import { type LoadProgress, type WebGpuKvCache, WebGpuModel, type WebGpuModelOptions } from '../../runtime/webgpu/model.js';
import type { WeightSource } from '../../runtime/webgpu/source.js';
import { allocateScoreResult, checkContinuations, checkTokenIds, type Engine, type EngineLimits, resolveScoreOptions, type ScoreOptions, type ScoreResult } from '../engine.js';
import { RowStatistics } from './row-statistics.js';
import { type DawnDevice, openDawnDevice, type WebGpuDeviceChoice } from './webgpu-dawn.js';

export interface WebGpuEngineOptions {
  /** `auto` (default): a hardware adapter, else a software one; `cpu`: a software adapter; `gpu`: hardware or an error. */
  readonly device?: WebGpuDeviceChoice;
  /** Accepted for symmetry with the other engines; a WebGPU adapter schedules its own threads. */
  readonly threads?: number;
  /** Longest window accepted (KV cache rows). Default: mlc-chat-config.json context_window_size. */
  readonly contextLength?: number;
  /** Runtime options (tests and benches): binding window limit, step size, kernel family. */
  readonly runtime?: Pick<WebGpuModelOptions, 'maxBindingBytes' | 'stepTokens' | 'family' | 'workgroupSize'>;
  readonly onProgress?: (progress: LoadProgress) => void;
}

export interface WebGpuEngine extends Engine {
  readonly name: 'webgpu';
  /** The folder, absolute. */
  readonly path: string;
  /** mlc-chat-config.json `quantization` (q4f16_1, …). */
  readonly quantization: string;
  /** With a hardware adapter: its description. */
  readonly gpu: string | undefined;
  /** The adapter that runs the model, for reports ("software WebGPU adapter (SwiftShader driver 5.0.0)"). */
  readonly adapter: string;
  readonly parallelism: 1;
  readonly windowParallelism: 1;
  /** context_window_size of the chat config. */
  readonly trainContextLength: number;
  readonly model: WebGpuModel;
  /** Raw logits at every position of `tokens` ([tokens.length × vocabSize]; row i predicts tokens[i + 1]). */
  logits(tokens: Int32Array): Promise<Float32Array>;
}

/** Whether `path` is a WebGPU folder: a folder with tensor-cache.json (what `verify --engine auto` sends to this engine). */
export async function isWebGpuFolder(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory() && (await pathExists(join(path, TENSOR_CACHE_FILE)));
  } catch {
    return false;
  }
}

/** A WeightSource over a local folder: names are looked up beside each other, never joined from outside it. */
export function folderWeightSource(dir: string): WeightSource {
  const absolute = resolve(dir);
  const path = (name: string): string => {
    if (name.includes('/') || name.includes('\\') || name === '..' || name === '.') {
      throw new PolyquantError(ERROR_CODES.MALFORMED, `the file name ${JSON.stringify(name)} is not a plain name beside the manifest`, { file: absolute });
    }
    return join(absolute, name);
  };
  const read = async (name: string): Promise<Buffer> => {
    const file = path(name);
    try {
      return await readFile(file);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new PolyquantError(ERROR_CODES.NOT_FOUND, 'no such file', { file, cause: error });
      throw ioError(file, 'read', error);
    }
  };
  return {
    async readJson(name) {
      const bytes = await read(name);
      try {
        return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes)) as unknown;
      } catch (error) {
        throw new PolyquantError(ERROR_CODES.MALFORMED, `not valid UTF-8 JSON: ${error instanceof Error ? error.message : String(error)}`, { file: path(name), cause: error });
      }
    },
    async readBytes(name) {
      const bytes = await read(name);
      return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    },
    describe: path,
  };
}

export async function createWebGpuEngine(folder: string, options: WebGpuEngineOptions = {}): Promise<WebGpuEngine> {
  const device = options.device ?? 'auto';
  if (device !== 'auto' && device !== 'cpu' && device !== 'gpu') {
    throw new PolyquantError(ERROR_CODES.USAGE, `device is ${JSON.stringify(device)}; expected auto, cpu or gpu`);
  }
  if (options.threads !== undefined && (!Number.isSafeInteger(options.threads) || options.threads < 0)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `threads is ${options.threads}; expected a non-negative integer`);
  }
  const path = resolve(folder);
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(path);
  } catch (error) {
    throw ioError(path, 'open the WebGPU folder', error);
  }
  if (!info.isDirectory() || !(await pathExists(join(path, TENSOR_CACHE_FILE)))) {
    throw new PolyquantError(ERROR_CODES.USAGE, `expected a WebGPU folder (one with ${TENSOR_CACHE_FILE})`, {
      file: path,
      hint: 'convert a model first: polyquant convert MODEL --to webgpu --type q4f16_1',
    });
  }
  if (!(await pathExists(join(path, TOKENIZER_FILE_NAMES.tokenizer)))) {
    throw new PolyquantError(ERROR_CODES.NOT_FOUND, 'the WebGPU folder has no tokenizer.json', { file: join(path, TOKENIZER_FILE_NAMES.tokenizer) });
  }
  const tokenizer = loadTokenizer(await readTokenizerFiles(path));
  const dawn = await openDawnDevice({ device });
  try {
    const model = await WebGpuModel.load(dawn.device, folderWeightSource(path), {
      adapterInfo: dawn.adapterInfo,
      ...options.runtime,
      ...(options.contextLength !== undefined && { contextLength: options.contextLength }),
      ...(options.onProgress !== undefined && { onProgress: options.onProgress }),
    });
    return new WebGpuEngineImpl(path, model, dawn, tokenizer);
  } catch (error) {
    dawn.release();
    throw error;
  }
}

class WebGpuEngineImpl implements WebGpuEngine {
  readonly name = 'webgpu';
  readonly parallelism = 1;
  readonly windowParallelism = 1;
  readonly device: 'cpu' | 'gpu';
  readonly gpu: string | undefined;
  readonly adapter: string;
  readonly vocabSize: number;
  readonly contextLength: number;
  readonly trainContextLength: number;
  readonly quantization: string;
  private readonly rows: RowStatistics;
  private readonly cache: WebGpuKvCache;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(
    readonly path: string,
    readonly model: WebGpuModel,
    private readonly dawn: DawnDevice,
    private readonly tokenizer: TextTokenizer,
  ) {
    this.device = dawn.software ? 'cpu' : 'gpu';
    this.gpu = dawn.software ? undefined : `webgpu: ${dawn.description}`;
    this.adapter = dawn.software ? `software WebGPU adapter: ${dawn.adapterInfo.description || dawn.description}` : `WebGPU: ${dawn.description}`;
    this.vocabSize = model.config.vocabSize;
    this.contextLength = model.contextLength;
    this.trainContextLength = model.config.contextWindowSize;
    this.quantization = model.config.quantization;
    this.rows = new RowStatistics(this.vocabSize);
    this.cache = model.newCache();
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
      // The last token is only ever a target: inputs are tokens 0 … n − 2, logits from position from − 1.
      this.model.truncate(this.cache, 0);
      const logits = await this.model.forward(tokens.subarray(0, -1), this.cache, { logitsFrom: from - 1 });
      const rows = this.rows;
      for (let index = 0; index < scored; index += 1) {
        const summary = rows.load(logits, index);
        const row = rows.row;
        tokenLogProbs[index] = (row[tokens[from + index] as number] as number) - summary.logSumExp;
        argmax[index] = summary.argmax;
        if (full !== undefined) {
          const offset = index * vocab;
          const logSumExp = summary.logSumExp;
          for (let id = 0; id < vocab; id += 1) full[offset + id] = (row[id] as number) - logSumExp;
        }
        if (topk !== undefined) topk.restLogMass[index] = rows.topK(topk.k, summary.logSumExp, topk.ids, topk.logProbs, index * topk.k);
      }
      return result;
    });
  }

  async logits(tokens: Int32Array): Promise<Float32Array> {
    this.checkOpen();
    this.checkTokens(tokens, 'the window');
    return this.enqueue(async () => {
      this.model.truncate(this.cache, 0);
      return this.model.forward(tokens, this.cache);
    });
  }

  async scoreContinuations(context: Int32Array, continuations: readonly Int32Array[]): Promise<number[]> {
    this.checkOpen();
    checkContinuations(context, continuations, this.limits());
    const list = [...continuations];
    return this.enqueue(async () => {
      const rows = this.rows;
      const model = this.model;
      const cache = this.cache;
      model.truncate(cache, 0);
      const last = await model.forward(context, cache, { logitsFrom: context.length - 1 });
      const afterContext = rows.load(last, 0);
      const contextRow = Float32Array.from(rows.row);
      const sums: number[] = [];
      for (const continuation of list) {
        if (continuation.length === 0) {
          sums.push(0);
          continue;
        }
        let sum = (contextRow[continuation[0] as number] as number) - afterContext.logSumExp;
        if (continuation.length > 1) {
          const logits = await model.forward(continuation.subarray(0, -1), cache);
          for (let i = 1; i < continuation.length; i += 1) {
            const summary = rows.load(logits, i - 1);
            sum += (rows.row[continuation[i] as number] as number) - summary.logSumExp;
          }
          model.truncate(cache, context.length);
        }
        sums.push(sum);
      }
      return sums;
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.queue.catch(() => undefined);
    this.cache.dispose();
    this.model.dispose();
    this.dawn.release();
  }

  private enqueue<T>(work: () => Promise<T>): Promise<T> {
    const result = this.queue.then(work);
    this.queue = result.catch(() => undefined);
    return result;
  }

  private checkOpen(): void {
    if (this.closed) throw new PolyquantError(ERROR_CODES.USAGE, 'the webgpu engine is closed', { file: this.path });
  }

  private limits(): EngineLimits {
    return { contextLength: this.contextLength, vocabSize: this.vocabSize, file: this.path };
  }

  private checkTokens(tokens: Int32Array, what: string): void {
    checkTokenIds(tokens, what, this.limits());
  }
}
