/**
 * KOBEST test helpers: a deterministic fake engine for plumbing tests, a "replay" engine that hands back
 * the log-likelihoods of the reference fixture, and the comparison of a run against
 * fixtures/polyglot-ko-tiny/reference/kobest-validation-limit200.json (an independent PyTorch
 * implementation of the harness protocol). Once a real engine exists, `checkEngineAgainstReference`
 * is the end-to-end test: run it with the engine and expect no mismatches.
 */
import { readFileSync } from 'node:fs';
import type { KobestEngine, KobestReport } from '../../src/verify/kobest/run.js';
import { runKobest } from '../../src/verify/kobest/run.js';
import type { KobestTaskName } from '../../src/verify/kobest/tasks.js';
import { sharedPath } from './shared.js';

export const KOBEST_REFERENCE_PATH = sharedPath(
  'fixtures',
  'polyglot-ko-tiny',
  'reference',
  'kobest-validation-limit200.json',
);
export const KOBEST_DATA_DIR = sharedPath('data', 'kobest');

export interface KobestReferenceEntry {
  readonly n: number;
  readonly acc: number;
  readonly macro_f1: number;
  readonly acc_norm?: number;
  readonly preds: readonly number[];
  readonly golds: readonly number[];
  readonly doc_idx: readonly number[];
  readonly loglikelihoods: readonly (readonly number[])[];
}

export interface KobestReference {
  readonly model: string;
  readonly split: string;
  readonly limit: number;
  readonly protocol: string;
  /** Keyed `<task>/<shots>shot`, e.g. `boolq/5shot`. */
  readonly tasks: Readonly<Record<string, KobestReferenceEntry>>;
}

export function loadKobestReference(path = KOBEST_REFERENCE_PATH): KobestReference {
  return JSON.parse(readFileSync(path, 'utf8')) as KobestReference;
}

/** The tasks and shot counts the reference holds, in the order runKobest would run them. */
export function referenceRuns(reference: KobestReference): { tasks: KobestTaskName[]; shots: number[] } {
  const tasks: KobestTaskName[] = [];
  const shots: number[] = [];
  for (const key of Object.keys(reference.tasks)) {
    const match = /^(\w+)\/(\d+)shot$/.exec(key);
    if (match === null) throw new Error(`unexpected reference key ${key}`);
    const task = match[1] as KobestTaskName;
    const count = Number(match[2]);
    if (!tasks.includes(task)) tasks.push(task);
    if (!shots.includes(count)) shots.push(count);
  }
  return { tasks, shots };
}

export interface ReferenceComparison {
  /** Human-readable problems; empty when the run agrees with the reference. */
  readonly mismatches: string[];
  /** Largest |ours − reference| over every choice's summed log-likelihood. */
  readonly maxAbsDifference: number;
  /** Documents whose prediction differs although the reference's margin exceeded the tolerance. */
  readonly predictionFlips: number;
}

/**
 * Pairs each task/shot entry of the reference with the run's result and checks: the documents (count,
 * order by idx, golds), the per-choice log-likelihoods within `tolerance` (absolute, nats), predictions
 * (a flip only counts when the reference's best-vs-ours margin exceeds the tolerance), and — when every
 * prediction agrees — acc, macro_f1 and acc_norm exactly.
 */
export function compareWithReference(
  report: KobestReport,
  reference: KobestReference,
  options: { readonly tolerance?: number } = {},
): ReferenceComparison {
  const tolerance = options.tolerance ?? 2e-3;
  const mismatches: string[] = [];
  let maxAbsDifference = 0;
  let predictionFlips = 0;
  if (report.split !== reference.split) mismatches.push(`split ${report.split} ≠ reference ${reference.split}`);
  for (const [key, expected] of Object.entries(reference.tasks)) {
    const [task, shotText] = key.split('/') as [string, string];
    const shots = Number.parseInt(shotText, 10);
    const result = report.results.find((entry) => entry.task === task && entry.shots === shots);
    if (result === undefined) {
      mismatches.push(`${key}: missing from the run`);
      continue;
    }
    if (result.n !== expected.n) mismatches.push(`${key}: n ${result.n} ≠ ${expected.n}`);
    const idx = result.documents.map((document) => document.idx);
    const firstOrderDifference = idx.findIndex((value, position) => value !== expected.doc_idx[position]);
    if (firstOrderDifference !== -1) {
      mismatches.push(
        `${key}: document ${firstOrderDifference} is idx ${idx[firstOrderDifference]}, reference idx ${expected.doc_idx[firstOrderDifference]}`,
      );
      continue;
    }
    let flipsHere = 0;
    result.documents.forEach((document, position) => {
      const expectedScores = expected.loglikelihoods[position]!;
      if (document.gold !== expected.golds[position]) {
        mismatches.push(`${key}: document ${position} (idx ${document.idx}) gold ${document.gold} ≠ ${expected.golds[position]}`);
      }
      if (document.logLikelihoods.length !== expectedScores.length) {
        mismatches.push(`${key}: document ${position} has ${document.logLikelihoods.length} choices, reference ${expectedScores.length}`);
        return;
      }
      document.logLikelihoods.forEach((value, choice) => {
        const difference = Math.abs(value - expectedScores[choice]!);
        if (!(difference <= tolerance)) {
          mismatches.push(
            `${key}: document ${position} (idx ${document.idx}) choice ${choice}: ${value} vs reference ${expectedScores[choice]} (|Δ| ${difference})`,
          );
        }
        if (!(difference <= maxAbsDifference)) maxAbsDifference = difference;
      });
      const expectedPred = expected.preds[position]!;
      if (document.pred !== expectedPred) {
        const margin = expectedScores[expectedPred]! - expectedScores[document.pred]!;
        if (margin > tolerance) {
          flipsHere++;
          mismatches.push(`${key}: document ${position} (idx ${document.idx}) predicts ${document.pred}, reference ${expectedPred} (margin ${margin})`);
        }
      }
    });
    predictionFlips += flipsHere;
    const predsAgree = result.documents.every((document, position) => document.pred === expected.preds[position]);
    if (predsAgree) {
      if (result.acc !== expected.acc) mismatches.push(`${key}: acc ${result.acc} ≠ ${expected.acc}`);
      if (result.macro_f1 !== expected.macro_f1) mismatches.push(`${key}: macro_f1 ${result.macro_f1} ≠ ${expected.macro_f1}`);
      if (expected.acc_norm !== undefined && result.acc_norm !== expected.acc_norm) {
        mismatches.push(`${key}: acc_norm ${result.acc_norm} ≠ ${expected.acc_norm}`);
      }
    }
  }
  return { mismatches, maxAbsDifference, predictionFlips };
}

/**
 * The end-to-end check for a real engine (the lead plugs it in once the reference engine lands):
 * KOBEST validation, first 200 shuffled documents, 0- and 5-shot, compared with the fixture.
 */
export async function checkEngineAgainstReference(
  engine: KobestEngine,
  options: { readonly tolerance?: number; readonly dataDir?: string } = {},
): Promise<{ report: KobestReport; comparison: ReferenceComparison }> {
  const reference = loadKobestReference();
  const { tasks, shots } = referenceRuns(reference);
  const report = await runKobest(engine, {
    dir: options.dataDir ?? KOBEST_DATA_DIR,
    tasks,
    shots,
    split: 'validation',
    limit: reference.limit,
  });
  return { report, comparison: compareWithReference(report, reference, { tolerance: options.tolerance }) };
}

/** Code points as token ids: a tokenizer for fakes that is deterministic and never merges. */
export function codePointTokenize(text: string): Int32Array {
  return Int32Array.from([...text].map((char) => char.codePointAt(0)!));
}

export interface RecordedCall {
  readonly context: Int32Array;
  readonly continuations: readonly Int32Array[];
}

/**
 * A fake engine whose "log-likelihood" of a continuation is a fixed function of its token ids and of the
 * context length it was given, so tests can predict every score. Records every call and tokenize().
 */
export function fakeKobestEngine(options: {
  readonly contextLength: number;
  readonly score?: (context: Int32Array, continuation: Int32Array) => number;
}): KobestEngine & { calls: RecordedCall[]; tokenized: string[] } {
  const score =
    options.score ??
    ((context: Int32Array, continuation: Int32Array): number =>
      -continuation.reduce((sum, id) => sum + (id % 97), 0) / 10 - context.length / 1000);
  const calls: RecordedCall[] = [];
  const tokenized: string[] = [];
  return {
    contextLength: options.contextLength,
    calls,
    tokenized,
    tokenize(text: string): Int32Array {
      tokenized.push(text);
      return codePointTokenize(text);
    },
    async scoreContinuations(context: Int32Array, continuations: readonly Int32Array[]): Promise<number[]> {
      calls.push({ context: context.slice(), continuations: continuations.map((continuation) => continuation.slice()) });
      return continuations.map((continuation) => score(context, continuation));
    },
  };
}

/**
 * An engine that answers each scoreContinuations call with the reference's next log-likelihood vector,
 * in the order runKobest visits documents (task, then shot count, then shuffled order). With a context
 * length too large to truncate there is one call per document, so the run's metrics must equal the
 * reference's exactly if the document order, golds and metric code are right.
 */
export function replayKobestEngine(reference: KobestReference): KobestEngine & { remaining(): number } {
  const { tasks, shots } = referenceRuns(reference);
  const queue: (readonly number[])[] = [];
  for (const task of tasks) {
    for (const count of shots) {
      const entry = reference.tasks[`${task}/${count}shot`];
      if (entry !== undefined) queue.push(...entry.loglikelihoods);
    }
  }
  let next = 0;
  return {
    contextLength: 1 << 30,
    tokenize: codePointTokenize,
    async scoreContinuations(_context: Int32Array, continuations: readonly Int32Array[]): Promise<number[]> {
      const scores = queue[next++];
      if (scores === undefined || scores.length !== continuations.length) {
        throw new Error(`replay call ${next - 1}: no reference scores for ${continuations.length} continuations`);
      }
      return [...scores];
    },
    remaining: () => queue.length - next,
  };
}
