/**
 * Per-document KOBEST records for `verify --log-samples FILE` (JSON Lines, one record per document and
 * shot count; schema `polyquant.kobest-sample/1`, docs/schemas.md): the prompt and choices the harness
 * protocol built, each choice's summed log-likelihood under the baseline and the candidate, both
 * predictions, the gold label, and whether the prediction changed — what lm-evaluation-harness's
 * `--log_samples` keeps, for both models side by side, so a reviewer can read the documents that flipped.
 *
 * The prompts are rebuilt from the same split files with the same plan (requests.ts: Random(42) shuffle and
 * few-shot draws), so they are the strings that were scored, without the runner keeping every prompt.
 */
import { ERROR_CODES, PolyquantError } from '../../errors.js';
import { buildKobestRequests } from './requests.js';
import type { KobestDocumentResult, KobestInputs, KobestTaskResult } from './run.js';
import type { KobestDocuments, KobestTaskName } from './tasks.js';

export const KOBEST_SAMPLE_SCHEMA = 'polyquant.kobest-sample/1';

/** One model's side of a document. */
export interface KobestSampleSide {
  /** Summed log-likelihood of each choice, in label order. */
  readonly loglikelihoods: readonly number[];
  readonly pred: number;
  readonly correct: boolean;
  /** HellaSwag: the length-normalised prediction (acc_norm). */
  readonly pred_norm?: number;
}

export interface KobestSampleRecord {
  readonly schema: typeof KOBEST_SAMPLE_SCHEMA;
  /** The harness's task name, e.g. `kobest_copa`. */
  readonly task: string;
  readonly shots: number;
  readonly split: string;
  /** Position in the shuffled split (the harness's doc_id): the same document across models and runs. */
  readonly doc_id: number;
  /** Row of the document in its split file. */
  readonly doc_idx: number;
  /** Rows of the few-shot examples in the train split, in prompt order. */
  readonly fewshot_idx: readonly number[];
  /** The whole prompt: few-shot examples, separators and the document's context. */
  readonly context: string;
  /** The continuations scored after the context; index = label. */
  readonly choices: readonly string[];
  readonly gold: number;
  readonly baseline: KobestSampleSide;
  readonly candidate: KobestSampleSide;
  /** The candidate predicts another label than the baseline. */
  readonly changed: boolean;
  /** The prompt was cut from the left to fit the context. */
  readonly truncated: boolean;
}

function side(result: KobestDocumentResult): KobestSampleSide {
  return {
    loglikelihoods: result.logLikelihoods,
    pred: result.pred,
    correct: result.pred === result.gold,
    ...(result.predNorm !== undefined && { pred_norm: result.predNorm }),
  };
}

/**
 * The records of one task and shot count: the baseline's and candidate's document results (the same
 * documents, in the same order: compare-kobest.ts checks that) joined with the prompts rebuilt from
 * `inputs`, the splits the run scored, under the run's `limit`.
 */
export function kobestSampleRecords(
  baseline: KobestTaskResult,
  candidate: KobestTaskResult,
  inputs: KobestInputs | undefined,
  limit: number | undefined,
): KobestSampleRecord[] {
  const loaded = inputs?.get(baseline.task);
  if (loaded === undefined) {
    throw new PolyquantError(ERROR_CODES.USAGE, `KOBEST ${baseline.task}: its split was not loaded, so its samples cannot be logged`);
  }
  const requests = buildKobestRequests({
    task: baseline.task as KobestTaskName,
    documents: loaded.evaluated.documents as readonly KobestDocuments[KobestTaskName][],
    train: (loaded.train?.documents ?? []) as readonly KobestDocuments[KobestTaskName][],
    shots: baseline.shots,
    limit,
  });
  const byIndex = new Map(requests.map((request) => [request.index, request]));
  return baseline.documents.map((base, position) => {
    const cand = candidate.documents[position];
    const request = byIndex.get(base.index);
    if (cand === undefined || cand.index !== base.index || request === undefined) {
      throw new PolyquantError(ERROR_CODES.CONFIG, `KOBEST ${baseline.harnessName} ${baseline.shots}-shot: document ${base.index} is missing from one of the runs`);
    }
    return {
      schema: KOBEST_SAMPLE_SCHEMA,
      task: baseline.harnessName,
      shots: baseline.shots,
      split: baseline.split,
      doc_id: base.index,
      doc_idx: base.idx,
      fewshot_idx: base.fewshotIdx,
      context: request.context,
      choices: request.continuations,
      gold: base.gold,
      baseline: side(base),
      candidate: side(cand),
      changed: base.pred !== cand.pred,
      truncated: base.truncated || cand.truncated,
    };
  });
}

/** JSON Lines: one record per line (NaN log-likelihoods, which JSON cannot hold, as null). */
export function kobestSamplesJsonl(records: readonly KobestSampleRecord[]): string {
  return records.map((record) => `${JSON.stringify(record)}\n`).join('');
}
