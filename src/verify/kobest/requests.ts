/**
 * Which documents are evaluated, in what order, with which few-shot examples, and the prompt text each
 * gets — lm-evaluation-harness's `polyglot` branch (lm_eval/evaluator.py `evaluate`, lm_eval/base.py
 * `Task.fewshot_context` / `fewshot_examples`; specs/eval.md §2a):
 *
 *     task_docs = list(test_docs()); rnd = random.Random(); rnd.seed(42); rnd.shuffle(task_docs)
 *     limit = int(len(task_docs) * limit) if limit < 1.0 else int(limit)
 *     for doc in islice(task_docs, 0, limit):
 *         fewshotex = rnd.sample(training_docs, k)      # only when k > 0; same rnd, document by document
 *         ctx = "\n\n".join(doc_to_text(ex) + doc_to_target(ex) for ex in fewshotex) + "\n\n" + doc_to_text(doc)
 *
 * Because every KOBEST task has training docs, fewshot_context takes the `has_training_docs()` branch:
 * k examples straight from train, with no check against the evaluated document. (Only tasks without
 * training docs sample k + 1 and drop the document itself.) So evaluating `train` with shots > 0 can put
 * a document among its own examples, exactly as the harness does.
 */
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import { PythonRandom } from '../python-random.js';
import { KOBEST_TASKS, type KobestDocuments, type KobestTask, type KobestTaskName } from './tasks.js';

/** `rnd.seed(42)` in the harness's evaluate(). */
export const HARNESS_SHUFFLE_SEED = 42;
/** lm-eval's few-shot separator: between examples and before the evaluated document. */
export const FEWSHOT_SEPARATOR = '\n\n';

/**
 * `--limit` as the harness reads it: below 1.0 a fraction of the split (`int(n * limit)`), otherwise a
 * count (`int(limit)`), then `islice` caps it at n. Undefined keeps every document.
 */
export function resolveLimit(limit: number | undefined, documentCount: number): number {
  if (limit === undefined) return documentCount;
  if (!Number.isFinite(limit) || limit < 0) {
    throw new PolyquantError(ERROR_CODES.USAGE, `--limit must be a count ≥ 1 or a fraction in [0, 1), got ${limit}`);
  }
  const count = limit < 1 ? Math.trunc(documentCount * limit) : Math.trunc(limit);
  return Math.min(count, documentCount);
}

export interface KobestPlan {
  /** For each evaluated document, in evaluation order: its position in the split (HF order). */
  readonly order: readonly number[];
  /** For each evaluated document: positions in the train split of its few-shot examples, in prompt order. */
  readonly fewshot: readonly (readonly number[])[];
}

/**
 * The document order and few-shot draws for one task and shot count, from positions alone (what
 * `random.Random(42)` does does not depend on the documents' content): a fresh generator per task and
 * shot count, as the harness's evaluate() makes one per task per run.
 */
export function planKobest(options: {
  readonly documentCount: number;
  readonly trainCount: number;
  readonly shots: number;
  readonly limit?: number | undefined;
}): KobestPlan {
  const { documentCount, trainCount, shots } = options;
  if (!Number.isSafeInteger(shots) || shots < 0) {
    throw new PolyquantError(ERROR_CODES.USAGE, `shot count must be a non-negative integer, got ${shots}`);
  }
  if (shots > trainCount) {
    throw new PolyquantError(
      ERROR_CODES.USAGE,
      `${shots}-shot needs ${shots} training documents but the train split has ${trainCount}`,
    );
  }
  const random = new PythonRandom(HARNESS_SHUFFLE_SEED);
  const positions = Array.from({ length: documentCount }, (_, index) => index);
  random.shuffle(positions);
  const order = positions.slice(0, resolveLimit(options.limit, documentCount));
  const trainPositions = Array.from({ length: trainCount }, (_, index) => index);
  const fewshot = order.map(() => (shots === 0 ? [] : random.sample(trainPositions, shots)));
  return { order, fewshot };
}

export interface KobestRequest<Name extends KobestTaskName = KobestTaskName> {
  /** Position in the shuffled split: the harness's `doc_id`. */
  readonly index: number;
  readonly document: KobestDocuments[Name];
  /** `idx` of each few-shot example in the train split, in prompt order. */
  readonly fewshotIdx: readonly number[];
  /** The full prompt: few-shot examples, separators and `doc_to_text(doc)`. */
  readonly context: string;
  /** The strings scored after the context; index = predicted label. */
  readonly continuations: readonly string[];
  /** HellaSwag: the texts acc_norm divides the log-likelihoods by (code-point length). */
  readonly normalizationTexts: readonly string[] | undefined;
}

/** `fewshot_context` for one document (description is empty for KOBEST). */
export function fewshotContext<Name extends KobestTaskName>(
  task: KobestTask<Name>,
  document: KobestDocuments[Name],
  examples: readonly KobestDocuments[Name][],
): string {
  if (examples.length === 0) return task.docToText(document);
  const labeled = examples.map((example) => task.docToText(example) + task.docToTarget(example));
  return labeled.join(FEWSHOT_SEPARATOR) + FEWSHOT_SEPARATOR + task.docToText(document);
}

export function buildKobestRequests<Name extends KobestTaskName>(options: {
  readonly task: Name;
  readonly documents: readonly KobestDocuments[Name][];
  /** The train split (few-shot pool); may be empty for 0-shot. */
  readonly train: readonly KobestDocuments[Name][];
  readonly shots: number;
  readonly limit?: number | undefined;
}): KobestRequest<Name>[] {
  const task: KobestTask<Name> = KOBEST_TASKS[options.task];
  const { documents, train } = options;
  const plan = planKobest({
    documentCount: documents.length,
    trainCount: train.length,
    shots: options.shots,
    limit: options.limit,
  });
  return plan.order.map((position, index) => {
    const document = documents[position]!;
    const examples = plan.fewshot[index]!.map((trainPosition) => train[trainPosition]!);
    return {
      index,
      document,
      fewshotIdx: examples.map((example) => example.idx),
      context: fewshotContext(task, document, examples),
      continuations: task.continuations(document),
      normalizationTexts: task.normalizationTexts?.(document),
    };
  });
}
