/**
 * The reference engine: transformers' GPTNeoXForCausalLM forward (modeling_gpt_neox.py) in TypeScript +
 * WebAssembly SIMD on the CPU, in float32 from the checkpoint's weights widened once at load. It is the
 * source of truth the other engines are checked against on small models (DESIGN.md), so it favours
 * exactness: every result is independent of thread count, step size and KV-cache reuse, bit for bit.
 *
 * Threading: one worker thread per `threads`, each serving whole requests (a window, or a context and its
 * continuations) on its own workspace and KV cache, all reading one copy of the weights in a shared
 * WebAssembly memory. Whole requests per worker rather than splitting each matmul across threads because
 * (1) there is no synchronisation inside a forward pass — on a shared 2-core CI machine a barrier per
 * matmul waits on whichever thread the scheduler has parked, many times per window; (2) a window's result
 * is computed by exactly one thread, so thread count cannot change it; (3) perplexity and KOBEST always
 * have many independent windows or documents to keep every worker busy (perplexity.ts keeps
 * `parallelism` windows in flight and still yields them in order). The cost: one request alone uses one
 * core.
 */
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { NeoXConfig } from '../../arch/gpt-neox.js';
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import { type Checkpoint, readCheckpoint } from '../../readers/checkpoint.js';
import { loadTokenizer, type TextTokenizer } from '../../readers/tokenizer.js';
import { checkContinuations, checkTokenIds, type Engine, type EngineLimits, resolveScoreOptions, type ScoreOptions, type ScoreResult } from '../engine.js';
import {
  type ActivationSlot,
  activationSlots,
  allocateMemory,
  layoutFits,
  loadWeights,
  inputProductSlots,
  type ModelLayout,
  planLayout,
  type WeightTransform,
} from './reference-layout.js';
import { ReferenceRunner } from './reference-runner.js';
import type { WasmMemory } from './reference-wasm.js';
import { handleRequest, WORKER_MARK, type WorkerInit, type WorkerRequest, type WorkerResponse } from './reference-worker.js';

export type { ActivationSlot, WeightTransform } from './reference-layout.js';

export interface ReferenceEngineOptions {
  /**
   * Called once per 2-D weight (embeddings, QKV, dense, MLP, output head) after widening to float32, with
   * its HF name, values in HF layout and shape; returns the values to use (same length). For simulated
   * quantization. Norms and biases are not passed.
   */
  readonly weightTransform?: WeightTransform;
  /** Worker threads, each serving one request at a time; 0 computes inline on the calling thread.
   * Default: the machine's available parallelism, at most 8. */
  readonly threads?: number;
  /** Longest window accepted (KV cache rows per worker). Default: config.json max_position_embeddings. */
  readonly contextLength?: number;
  /**
   * Reserve each worker's scratch for `inputProducts` (calibration Hessians): a few MiB per worker on
   * small models. Off by default, so scoring engines hold none of it.
   */
  readonly inputProducts?: boolean;
}

export interface ReferenceEngine extends Engine {
  readonly name: 'reference';
  readonly device: 'cpu';
  readonly config: NeoXConfig;
  /** Requests computed at once (worker threads, or 1 inline): how many windows a caller should keep in flight. */
  readonly parallelism: number;
  /**
   * The output head's raw logits at every position of `tokens` ([tokens.length × vocabSize], row i
   * predicts tokens[i + 1]): for comparing with PyTorch's `model(ids).logits` and with engines that report
   * logits rather than log-probabilities.
   */
  logits(tokens: Int32Array): Promise<Float32Array>;
  /**
   * Calibration (polyquant imatrix): `tokens` run as one sequence from position 0, and for the input of
   * every linear layer a quantizer weighs, Σ over all positions of each column squared, laid out as
   * `activationSlots(head)` says. With `head` the output head's input is included (the head itself is not
   * computed). Same numbers whatever the thread count.
   */
  squaredInputs(tokens: Int32Array, options?: { readonly head?: boolean }): Promise<Float64Array>;
  /** Where each linear layer's input sits in a squaredInputs result. */
  activationSlots(head: boolean): ActivationSlot[];
  /**
   * Calibration Hessians (calibrate/hessian.ts): as squaredInputs, but Σ over all positions of x xᵀ for
   * every linear layer's input x, each as a packed lower triangle laid out as `inputProductSlots(head)`
   * says. The diagonal equals squaredInputs exactly. Needs the engine created with `inputProducts: true`.
   * Same numbers whatever the thread count.
   */
  inputProducts(tokens: Int32Array, options?: { readonly head?: boolean }): Promise<Float64Array>;
  /** Where each linear layer's input sits in an inputProducts result. */
  inputProductSlots(head: boolean): ActivationSlot[];
}

const MAX_THREADS = 64;
const DEFAULT_MAX_THREADS = 8;
/** Past this the KV caches alone run to gigabytes on small models and positions lose float32 precision. */
const MAX_CONTEXT_LENGTH = 1 << 16;

/** Running from TypeScript sources (tests, tsx) the worker is the .ts file and needs tsx's loader. */
const HERE = import.meta.url;
const FROM_SOURCE = HERE.endsWith('.ts');
const WORKER_FILE = fileURLToPath(new URL(`./reference-worker.${FROM_SOURCE ? 'ts' : 'js'}`, HERE));

/**
 * Whether the reference engine can hold `config` with these options (threads and context as
 * createReferenceEngine defaults them): its float32 weights, KV caches and workspaces must fit one 4 GiB
 * WebAssembly memory. `verify --engine auto` sends larger HF folders to llama.cpp instead.
 */
export function referenceEngineFits(config: NeoXConfig, options: Pick<ReferenceEngineOptions, 'threads' | 'contextLength' | 'inputProducts'> = {}): boolean {
  const layoutOptions = { inputProducts: options.inputProducts === true };
  return layoutFits(planLayout(config, options.contextLength ?? config.maxPositionEmbeddings, referenceEngineParallelism(options), layoutOptions));
}

/** Requests an engine created with these options computes at once (its `parallelism`): the worker threads, or 1 inline. */
export function referenceEngineParallelism(options: Pick<ReferenceEngineOptions, 'threads'> = {}): number {
  return Math.max(1, options.threads ?? defaultThreads());
}

/** Worker threads when none are asked for: the machine's available parallelism, at most DEFAULT_MAX_THREADS. */
function defaultThreads(): number {
  return Math.min(availableParallelism(), DEFAULT_MAX_THREADS);
}

export async function createReferenceEngine(source: string | Checkpoint, options: ReferenceEngineOptions = {}): Promise<ReferenceEngine> {
  const checkpoint = typeof source === 'string' ? await readCheckpoint(source) : source;
  const { config } = checkpoint;
  const threads = options.threads ?? defaultThreads();
  if (!Number.isSafeInteger(threads) || threads < 0 || threads > MAX_THREADS) {
    throw new PolyquantError(ERROR_CODES.USAGE, `threads is ${threads}; expected an integer from 0 to ${MAX_THREADS}`);
  }
  const contextLength = options.contextLength ?? config.maxPositionEmbeddings;
  if (!Number.isSafeInteger(contextLength) || contextLength < 1 || contextLength > MAX_CONTEXT_LENGTH) {
    throw new PolyquantError(ERROR_CODES.USAGE, `contextLength is ${contextLength}; expected an integer from 1 to ${MAX_CONTEXT_LENGTH}`);
  }
  const layout = planLayout(config, contextLength, Math.max(1, threads), { inputProducts: options.inputProducts === true });
  let parameters = 0;
  for (const tensor of checkpoint.tensors.values()) parameters += tensor.shape.reduce((product, dim) => product * dim, 1);
  const memory = allocateMemory(layout, parameters, checkpoint.dir);
  await loadWeights(checkpoint, layout, memory, options.weightTransform);
  const executor = threads === 0 ? new InlineExecutor(new ReferenceRunner(memory, layout, 0)) : await WorkerExecutor.start(memory, layout, threads);
  return new ReferenceEngineImpl(checkpoint, layout, executor);
}

type Submission = WorkerRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;
type Success = Extract<WorkerResponse, { ok: true }>;

interface Executor {
  readonly parallelism: number;
  submit(request: Submission): Promise<Success>;
  close(): Promise<void>;
}

/** threads: 0 — the runner on the calling thread (debugging, profiling, or environments without workers). */
class InlineExecutor implements Executor {
  readonly parallelism = 1;
  private nextId = 0;

  constructor(private readonly runner: ReferenceRunner) {}

  async submit(request: Submission): Promise<Success> {
    const { response } = handleRequest(this.runner, { ...request, id: this.nextId++ } as WorkerRequest);
    if (!response.ok) throw new Error(`reference engine failed: ${response.message}`);
    return response;
  }

  async close(): Promise<void> {}
}

interface Job {
  readonly request: WorkerRequest;
  readonly resolve: (response: Success) => void;
  readonly reject: (error: unknown) => void;
}

/** Whole requests to whichever worker is free; a FIFO queue when none is. Idle workers are unref'd. */
class WorkerExecutor implements Executor {
  private readonly idle: Worker[];
  private readonly running = new Map<Worker, Job>();
  private readonly queue: Job[] = [];
  private nextId = 0;
  private failure: Error | undefined;

  private constructor(private readonly workers: Worker[]) {
    this.idle = [...workers];
    for (const worker of workers) {
      worker.on('message', (response: WorkerResponse) => this.finish(worker, response));
      worker.on('error', (error) => this.fail(error));
      worker.on('exit', (code) => {
        if (this.failure === undefined) this.fail(new Error(`a reference engine worker exited with code ${code}`));
      });
      worker.unref();
    }
  }

  get parallelism(): number {
    return this.workers.length;
  }

  static async start(memory: WasmMemory, layout: ModelLayout, threads: number): Promise<WorkerExecutor> {
    const workers = Array.from({ length: threads }, (_, workspace) => {
      const workerData: WorkerInit = { mark: WORKER_MARK, memory, layout, workspace };
      if (!FROM_SOURCE) return new Worker(WORKER_FILE, { workerData });
      // From sources (vitest, tsx) the worker is the .ts file. Node 20 does not apply tsx's ESM hooks
      // inside worker threads, but its require hook works there (piscina loads the quant pool's .ts
      // worker the same way). The hook is resolved from here, not from the working directory.
      const stub = `require(${JSON.stringify(WORKER_FILE)})`;
      const tsxHook = createRequire(import.meta.url).resolve('tsx/cjs');
      return new Worker(stub, { eval: true, workerData, execArgv: ['--require', tsxHook] });
    });
    const cleanups: (() => void)[] = [];
    try {
      await Promise.all(
        workers.map(
          (worker) =>
            new Promise<void>((resolve, reject) => {
              const onReady = (): void => resolve();
              const onExit = (code: number): void => reject(new Error(`a reference engine worker exited with code ${code} while starting`));
              worker.once('message', onReady);
              worker.once('error', reject);
              worker.once('exit', onExit);
              // Only our own listeners: removeAllListeners() would also drop the ones Worker uses to
              // route its port's messages.
              cleanups.push(() => {
                worker.off('message', onReady);
                worker.off('error', reject);
                worker.off('exit', onExit);
              });
            }),
        ),
      );
    } catch (error) {
      await Promise.all(workers.map((worker) => worker.terminate()));
      throw error;
    } finally {
      for (const cleanup of cleanups) cleanup();
    }
    return new WorkerExecutor(workers);
  }

  submit(request: Submission): Promise<Success> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    return new Promise<Success>((resolve, reject) => {
      this.queue.push({ request: { ...request, id: this.nextId++ } as WorkerRequest, resolve, reject });
      this.dispatch();
    });
  }

  private dispatch(): void {
    while (this.idle.length > 0 && this.queue.length > 0) {
      const worker = this.idle.pop() as Worker;
      const job = this.queue.shift() as Job;
      this.running.set(worker, job);
      worker.ref();
      worker.postMessage(job.request);
    }
  }

  private finish(worker: Worker, response: WorkerResponse): void {
    const job = this.running.get(worker);
    this.running.delete(worker);
    worker.unref();
    this.idle.push(worker);
    if (job !== undefined) {
      if (response.ok) job.resolve(response);
      else job.reject(new Error(`reference engine worker failed: ${response.message}`));
    }
    this.dispatch();
  }

  private fail(error: Error): void {
    this.failure ??= error;
    for (const job of [...this.running.values(), ...this.queue]) job.reject(error);
    this.running.clear();
    this.queue.length = 0;
  }

  async close(): Promise<void> {
    this.failure ??= new PolyquantError(ERROR_CODES.USAGE, 'the reference engine is closed');
    for (const job of [...this.running.values(), ...this.queue]) job.reject(this.failure);
    this.running.clear();
    this.queue.length = 0;
    await Promise.all(this.workers.map((worker) => worker.terminate()));
  }
}

class ReferenceEngineImpl implements ReferenceEngine {
  readonly name = 'reference';
  readonly device = 'cpu';
  readonly config: NeoXConfig;
  readonly contextLength: number;
  readonly vocabSize: number;
  private readonly layout: ModelLayout;
  private tokenizer: TextTokenizer | undefined;
  private closed = false;

  constructor(
    private readonly checkpoint: Checkpoint,
    layout: ModelLayout,
    private readonly executor: Executor,
  ) {
    this.config = checkpoint.config;
    this.contextLength = layout.contextLength;
    this.vocabSize = layout.vocab;
    this.layout = layout;
  }

  get parallelism(): number {
    return this.executor.parallelism;
  }

  tokenize(text: string): Int32Array {
    this.tokenizer ??= loadTokenizer(this.checkpoint.tokenizer);
    return this.tokenizer.encode(text);
  }

  async score(tokens: Int32Array, options: ScoreOptions = {}): Promise<ScoreResult> {
    this.checkOpen();
    this.checkTokens(tokens, 'the window');
    const { from, distributions, topK } = resolveScoreOptions(options, tokens.length);
    const response = await this.executor.submit({ kind: 'score', tokens, from, distributions, topK });
    return response.score as ScoreResult;
  }

  async logits(tokens: Int32Array): Promise<Float32Array> {
    this.checkOpen();
    this.checkTokens(tokens, 'the window');
    const response = await this.executor.submit({ kind: 'logits', tokens });
    return response.logits as Float32Array;
  }

  async squaredInputs(tokens: Int32Array, options: { readonly head?: boolean } = {}): Promise<Float64Array> {
    this.checkOpen();
    this.checkTokens(tokens, 'the window');
    const response = await this.executor.submit({ kind: 'squares', tokens, head: options.head === true });
    return response.squares as Float64Array;
  }

  activationSlots(head: boolean): ActivationSlot[] {
    return activationSlots(this.layout, head);
  }

  async inputProducts(tokens: Int32Array, options: { readonly head?: boolean } = {}): Promise<Float64Array> {
    this.checkOpen();
    if (this.layout.workspaces[0]?.productInput === undefined) {
      throw new PolyquantError(ERROR_CODES.USAGE, 'inputProducts needs the reference engine created with inputProducts: true');
    }
    this.checkTokens(tokens, 'the window');
    const response = await this.executor.submit({ kind: 'products', tokens, head: options.head === true });
    return response.products as Float64Array;
  }

  inputProductSlots(head: boolean): ActivationSlot[] {
    return inputProductSlots(this.layout, head);
  }

  async scoreContinuations(context: Int32Array, continuations: readonly Int32Array[]): Promise<number[]> {
    this.checkOpen();
    checkContinuations(context, continuations, this.limits());
    const response = await this.executor.submit({ kind: 'continuations', context, continuations: [...continuations] });
    return response.sums as number[];
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.executor.close();
  }

  private checkOpen(): void {
    if (this.closed) throw new PolyquantError(ERROR_CODES.USAGE, 'the reference engine is closed');
  }

  private limits(): EngineLimits {
    return { contextLength: this.contextLength, vocabSize: this.vocabSize, file: this.checkpoint.dir };
  }

  private checkTokens(tokens: Int32Array, what: string): void {
    checkTokenIds(tokens, what, this.limits());
  }
}
