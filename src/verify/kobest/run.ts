/**
 * Runs KOBEST on an engine the way the polyglot branch of lm-evaluation-harness scores it with an HF
 * causal LM (lm_eval/base.py `BaseLM.loglikelihood` / `_loglikelihood_tokens`; specs/eval.md §2a):
 *
 * - context and continuation are tokenized **separately** (no BOS/EOS) and concatenated;
 * - the window is `(context + continuation)[-(max_length + 1):]`: left-truncated so that the model input
 *   (`[:-1]`, at most max_length tokens) ends right before the continuation's last token;
 * - a choice's score is the **sum** of its tokens' log-probabilities; the prediction is np.argmax over them.
 *
 * Each document's continuations go to one `engine.scoreContinuations(context, continuations)` call with the
 * context tokenized once. (When a long prompt is truncated, continuations of different lengths keep
 * different amounts of context, as in the harness; they are then grouped by the context they keep.)
 */
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import type { Engine } from '../engine.js';
import { type KobestSplitData, loadKobestSplit } from './load.js';
import { accuracy, argmax, macroF1, meanStderr } from './metrics.js';
import { buildKobestRequests, type KobestRequest, resolveLimit } from './requests.js';
import {
  isKobestTaskName,
  KOBEST_TASK_NAMES,
  KOBEST_TASKS,
  type KobestDocuments,
  type KobestSplit,
  type KobestTaskName,
  pythonLength,
} from './tasks.js';

/** What the runner needs from an engine: its tokenizer, context length and continuation scoring. */
export type KobestEngine = Pick<Engine, 'tokenize' | 'scoreContinuations' | 'contextLength'>;

export interface KobestProgress {
  readonly task: KobestTaskName;
  readonly shots: number;
  /** Documents scored so far in this task and shot count. */
  readonly done: number;
  readonly total: number;
}

export interface KobestRunOptions {
  /** A folder in our JSONL layout or the official TSV layout (load.ts). */
  readonly dir: string;
  /** Default: all five, in table order. */
  readonly tasks?: readonly KobestTaskName[];
  /** Shot counts to run, each a separate pass with its own Random(42). Default [0]. */
  readonly shots?: readonly number[];
  /** Default `test`, the split the model cards report (the harness evaluates test when a task has one). */
  readonly split?: KobestSplit;
  /** The harness's `--limit`: the first N documents after the shuffle (a value below 1 is a fraction). */
  readonly limit?: number;
  /** The harness's `max_length` (model input tokens); default `engine.contextLength`. */
  readonly maxLength?: number;
  readonly onProgress?: (progress: KobestProgress) => void;
  /** The splits already loaded and checked by `loadKobestInputs` (loaded here otherwise). */
  readonly inputs?: KobestInputs;
}

/** Every split a run reads, by task: the evaluated split, and train when a shot count is above 0. */
export type KobestInputs = ReadonlyMap<KobestTaskName, { readonly evaluated: KobestSplitData<KobestTaskName>; readonly train: KobestSplitData<KobestTaskName> | undefined }>;

/**
 * Loads and checks every input of a KOBEST run before any model scores anything: task names, shot counts,
 * `--limit`, and each task's split files (a missing task or split is noticed now, not after the tasks
 * before it ran), and that every task keeps at least one document — an empty evaluation would report NaN.
 */
export async function loadKobestInputs(options: Pick<KobestRunOptions, 'dir' | 'tasks' | 'shots' | 'split' | 'limit'>): Promise<KobestInputs> {
  const tasks = options.tasks ?? KOBEST_TASK_NAMES;
  for (const task of tasks) {
    if (!isKobestTaskName(task)) {
      throw new PolyquantError(ERROR_CODES.USAGE, `--tasks: unknown KOBEST task ${JSON.stringify(task)}`, {
        hint: `choose from ${KOBEST_TASK_NAMES.join(', ')}`,
      });
    }
  }
  const shotCounts = options.shots ?? [0];
  if (shotCounts.length === 0) throw new PolyquantError(ERROR_CODES.USAGE, '--shots is empty: give at least one shot count, e.g. 0');
  for (const shots of shotCounts) {
    if (!Number.isSafeInteger(shots) || shots < 0) {
      throw new PolyquantError(ERROR_CODES.USAGE, `--shots: shot counts must be non-negative integers, got ${shots}`);
    }
  }
  if (options.limit !== undefined && !(Number.isFinite(options.limit) && options.limit > 0)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `--limit ${options.limit} must be a document count ≥ 1 or a fraction in (0, 1)`);
  }
  const split = options.split ?? 'test';
  const needsTrain = shotCounts.some((shots) => shots > 0);
  const inputs = new Map<KobestTaskName, { evaluated: KobestSplitData<KobestTaskName>; train: KobestSplitData<KobestTaskName> | undefined }>();
  for (const task of tasks) {
    const evaluated = await loadKobestSplit(options.dir, task, split);
    const kept = resolveLimit(options.limit, evaluated.documents.length);
    if (kept === 0) {
      throw new PolyquantError(
        ERROR_CODES.USAGE,
        `KOBEST ${task} ${split} keeps no documents: ${evaluated.documents.length} in the split${options.limit === undefined ? '' : `, --limit ${options.limit}`}`,
        { file: evaluated.file, hint: 'a metric over no documents is undefined; raise --limit or check the split file' },
      );
    }
    const train = needsTrain ? await loadKobestSplit(options.dir, task, 'train') : undefined;
    inputs.set(task, { evaluated, train });
  }
  return inputs;
}

export interface KobestDocumentResult {
  /** Position in the shuffled split (the harness's doc_id): the same document across models and runs. */
  readonly index: number;
  /** Row of the document in its split file (HF order; the reference fixture's `doc_idx`). */
  readonly idx: number;
  readonly gold: number;
  readonly pred: number;
  /** HellaSwag: argmax of log-likelihood / character length of the ending. */
  readonly predNorm?: number;
  /** Summed log-likelihood of each continuation, in label order. */
  readonly logLikelihoods: readonly number[];
  /** `idx` in the train split of the few-shot examples, in prompt order. */
  readonly fewshotIdx: readonly number[];
  /** Whether the prompt was cut from the left to fit max_length. */
  readonly truncated: boolean;
}

export interface KobestTaskResult {
  readonly task: KobestTaskName;
  readonly harnessName: string;
  readonly shots: number;
  readonly split: KobestSplit;
  /** The split file read. */
  readonly file: string;
  /** Documents in the split before --limit (lm-eval's n-samples "original"; absent in results recorded before it was kept). */
  readonly splitDocuments?: number;
  readonly n: number;
  readonly acc: number;
  readonly acc_stderr: number;
  readonly macro_f1: number;
  /** HellaSwag only. */
  readonly acc_norm?: number;
  readonly acc_norm_stderr?: number;
  /** Documents whose prompt was left-truncated. */
  readonly truncated: number;
  readonly documents: readonly KobestDocumentResult[];
}

export interface KobestReport {
  readonly split: KobestSplit;
  readonly limit: number | undefined;
  readonly maxLength: number;
  readonly results: readonly KobestTaskResult[];
}

/**
 * How many context tokens the harness keeps in front of a continuation: the window
 * `(context + continuation)[-(maxLength + 1):]` keeps all of the continuation and the tail of the context.
 */
export function keptContextLength(contextLength: number, continuationLength: number, maxLength: number): number {
  return Math.min(contextLength, maxLength + 1 - continuationLength);
}

/** Scores one document's continuations; returns the summed log-likelihoods in continuation order. */
async function scoreDocument(
  engine: KobestEngine,
  context: Int32Array,
  continuations: readonly Int32Array[],
  maxLength: number,
): Promise<{ logLikelihoods: number[]; truncated: boolean }> {
  if (context.length === 0) {
    // The harness substitutes the EOT token for an empty context; KOBEST prompts are never empty.
    throw new PolyquantError(ERROR_CODES.MALFORMED, 'a KOBEST prompt tokenized to no tokens');
  }
  const groups = new Map<number, number[]>();
  continuations.forEach((continuation, index) => {
    if (continuation.length === 0 || continuation.length > maxLength) {
      throw new PolyquantError(
        ERROR_CODES.LIMIT,
        `a continuation of ${continuation.length} tokens cannot be scored with max_length ${maxLength}`,
      );
    }
    const kept = keptContextLength(context.length, continuation.length, maxLength);
    const group = groups.get(kept);
    if (group === undefined) groups.set(kept, [index]);
    else group.push(index);
  });
  const logLikelihoods = new Array<number>(continuations.length).fill(Number.NaN);
  let truncated = false;
  for (const [kept, indices] of groups) {
    if (kept < context.length) truncated = true;
    const scores = await engine.scoreContinuations(
      context.subarray(context.length - kept),
      indices.map((index) => continuations[index]!),
    );
    if (scores.length !== indices.length) {
      throw new Error(`engine returned ${scores.length} scores for ${indices.length} continuations`);
    }
    indices.forEach((index, position) => {
      logLikelihoods[index] = scores[position]!;
    });
  }
  return { logLikelihoods, truncated };
}

/**
 * Scores prepared requests (requests.ts) on an engine. Continuation strings repeat across documents
 * (" 예", " 아니오" …), so their tokens are cached for the run.
 */
export async function scoreKobestRequests<Name extends KobestTaskName>(
  engine: KobestEngine,
  requests: readonly KobestRequest<Name>[],
  options: { readonly maxLength: number; readonly onDocument?: (done: number) => void },
): Promise<KobestDocumentResult[]> {
  const tokenCache = new Map<string, Int32Array>();
  const tokenize = (text: string): Int32Array => {
    let tokens = tokenCache.get(text);
    if (tokens === undefined) {
      tokens = engine.tokenize(text);
      tokenCache.set(text, tokens);
    }
    return tokens;
  };
  // Documents are independent: keep as many in flight as the engine computes at once (its worker count),
  // and store each result at its own position so the order never depends on timing.
  const parallelism: unknown = (engine as Partial<{ parallelism: unknown }>).parallelism;
  const concurrency = typeof parallelism === 'number' && Number.isSafeInteger(parallelism) && parallelism > 1 ? parallelism : 1;
  const results: KobestDocumentResult[] = new Array(requests.length);
  let next = 0;
  let done = 0;
  const scoreOne = async (request: KobestRequest<Name>, slot: number): Promise<void> => {
    const context = engine.tokenize(request.context);
    const continuations = request.continuations.map(tokenize);
    const { logLikelihoods, truncated } = await scoreDocument(engine, context, continuations, options.maxLength);
    const lengths = request.normalizationTexts?.map(pythonLength);
    results[slot] = {
      index: request.index,
      idx: request.document.idx,
      gold: request.document.label,
      pred: argmax(logLikelihoods),
      ...(lengths === undefined
        ? {}
        : { predNorm: argmax(logLikelihoods.map((value, index) => value / lengths[index]!)) }),
      logLikelihoods,
      fewshotIdx: request.fewshotIdx,
      truncated,
    };
    done += 1;
    options.onDocument?.(done);
  };
  const lane = async (): Promise<void> => {
    while (next < requests.length) {
      const slot = next;
      next += 1;
      await scoreOne(requests[slot] as KobestRequest<Name>, slot);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, requests.length) }, lane));
  return results;
}

/** Per-task metrics from scored documents (kobest.py process_results + aggregation). */
export function summarizeKobest(documents: readonly KobestDocumentResult[]): {
  n: number;
  acc: number;
  acc_stderr: number;
  macro_f1: number;
  acc_norm?: number;
  acc_norm_stderr?: number;
} {
  const golds = documents.map((document) => document.gold);
  const preds = documents.map((document) => document.pred);
  const correct = documents.map((document) => (document.pred === document.gold ? 1 : 0));
  const summary = {
    n: documents.length,
    acc: accuracy(golds, preds),
    acc_stderr: meanStderr(correct),
    macro_f1: macroF1(golds, preds),
  };
  if (documents.length === 0 || documents.some((document) => document.predNorm === undefined)) return summary;
  const normPreds = documents.map((document) => document.predNorm!);
  return {
    ...summary,
    acc_norm: accuracy(golds, normPreds),
    acc_norm_stderr: meanStderr(normPreds.map((pred, index) => (pred === golds[index] ? 1 : 0))),
  };
}

async function runTask<Name extends KobestTaskName>(
  engine: KobestEngine,
  name: Name,
  options: KobestRunOptions,
  split: KobestSplit,
  shotCounts: readonly number[],
  maxLength: number,
): Promise<KobestTaskResult[]> {
  const loaded = options.inputs?.get(name);
  const evaluated = (loaded?.evaluated ?? (await loadKobestSplit(options.dir, name, split))) as KobestSplitData<Name>;
  const needsTrain = shotCounts.some((shots) => shots > 0);
  const train: readonly KobestDocuments[Name][] = needsTrain
    ? ((loaded?.train ?? (await loadKobestSplit(options.dir, name, 'train'))) as KobestSplitData<Name>).documents
    : [];
  const results: KobestTaskResult[] = [];
  for (const shots of shotCounts) {
    const requests = buildKobestRequests({
      task: name,
      documents: evaluated.documents,
      train,
      shots,
      limit: options.limit,
    });
    const documents = await scoreKobestRequests(engine, requests, {
      maxLength,
      onDocument: (done) => options.onProgress?.({ task: name, shots, done, total: requests.length }),
    });
    results.push({
      task: name,
      harnessName: KOBEST_TASKS[name].harnessName,
      shots,
      split,
      file: evaluated.file,
      splitDocuments: evaluated.documents.length,
      ...summarizeKobest(documents),
      truncated: documents.filter((document) => document.truncated).length,
      documents,
    });
  }
  return results;
}

export async function runKobest(engine: KobestEngine, options: KobestRunOptions): Promise<KobestReport> {
  const tasks = options.tasks ?? KOBEST_TASK_NAMES;
  for (const task of tasks) {
    if (!isKobestTaskName(task)) {
      throw new PolyquantError(ERROR_CODES.USAGE, `unknown KOBEST task ${JSON.stringify(task)}`, {
        hint: `choose from ${KOBEST_TASK_NAMES.join(', ')}`,
      });
    }
  }
  const shotCounts = options.shots ?? [0];
  for (const shots of shotCounts) {
    if (!Number.isSafeInteger(shots) || shots < 0) {
      throw new PolyquantError(ERROR_CODES.USAGE, `shot counts must be non-negative integers, got ${shots}`);
    }
  }
  const maxLength = options.maxLength ?? engine.contextLength;
  if (!Number.isSafeInteger(maxLength) || maxLength < 1) {
    throw new PolyquantError(ERROR_CODES.USAGE, `max_length must be a positive integer, got ${maxLength}`);
  }
  const split = options.split ?? 'test';
  // Every split is loaded and checked before the first task runs.
  const inputs = options.inputs ?? (await loadKobestInputs({ ...options, tasks, shots: shotCounts, split }));
  const results: KobestTaskResult[] = [];
  for (const task of tasks) results.push(...(await runTask(engine, task, { ...options, inputs }, split, shotCounts, maxLength)));
  return { split, limit: options.limit, maxLength, results };
}
