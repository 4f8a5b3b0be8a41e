/**
 * KOBEST numbers for the report: each model's accuracy and macro-F1 with their uncertainties as
 * lm-evaluation-harness reports them, and the paired comparison of the candidate against the baseline on
 * the same documents (Δacc and Δmacro-F1 with paired bootstrap intervals, flipped predictions, McNemar's
 * test).
 *
 * Uncertainties, per model:
 * - `acc_stderr` (and `acc_norm_stderr`): lm_eval.metrics `mean_stderr`, the sample standard deviation
 *   (ddof 1) over √n — kobest/metrics.ts `meanStderr`.
 * - `macro_f1_stderr`: lm_eval.metrics `bootstrap_stderr` as the polyglot branch runs it for macro-F1
 *   (specs/eval.md §2a): `iterations` resamples of the documents with replacement, in chunks of
 *   min(1000, iterations), chunk i drawn by `random.Random(i).choices(docs, k=n)` (CPython's Mersenne
 *   Twister, python-random.ts, so the resamples are the harness's own), macro-F1 of each, and the sample
 *   standard deviation of the results. `macro_f1_ci` is the 2.5 / 97.5 % percentile interval of the same
 *   resamples. The harness's bootstrap_iters is 100000 (`--bootstrap-iters 100000` gives its number); the
 *   default here, 10000, draws its first ten chunks (DEFAULT_BOOTSTRAP_ITERATIONS).
 */
import { ERROR_CODES, PolyquantError } from '../errors.js';
import type { KobestTaskResult } from './kobest/index.js';
import { macroF1 } from './kobest/metrics.js';
import { PythonRandom } from './python-random.js';
import { type Interval, mcnemar, pairedBootstrap, percentile } from './stats.js';

/**
 * Resamples for macro_f1_stderr by default: the harness's first 10 chunks (Random(0) … Random(9)). Its own
 * default, 100000, costs ~3.5 s per model and task of 1000 documents here; 10000 estimates the same standard
 * error within ~1 % (the relative error of a standard deviation from B draws is about 1/√(2B)).
 */
export const DEFAULT_BOOTSTRAP_ITERATIONS = 10_000;
/** lm-evaluation-harness's own default `bootstrap_iters` (also the polyglot branch's): `--bootstrap-iters 100000` reproduces its numbers. */
export const HARNESS_BOOTSTRAP_ITERATIONS = 100_000;
/** The harness's chunk size: chunk i is drawn by Random(i). */
const BOOTSTRAP_CHUNK = 1000;

/** What a paired interval of [0, 0] means when no document changed its prediction. */
export const NO_CHANGE_NOTE = 'no document changed its prediction: the paired intervals are [0, 0] by construction, not a measured precision';

export interface KobestComparison {
  readonly task: string;
  readonly shots: number;
  readonly n: number;
  readonly delta_acc: number;
  readonly delta_acc_ci: Interval;
  readonly delta_macro_f1: number;
  readonly delta_macro_f1_ci: Interval;
  readonly delta_acc_norm?: number;
  /** Documents whose predicted label changed. */
  readonly flips: number;
  /** Right before, wrong now / wrong before, right now. */
  readonly lost: number;
  readonly gained: number;
  readonly mcnemar_p: number;
  /** Set when no document changed its prediction (NO_CHANGE_NOTE): the intervals above are [0, 0] by construction. */
  readonly ci_note: string | null;
}

/** One model's KOBEST numbers in the report. */
export interface KobestNumbers {
  readonly n: number;
  readonly acc: number;
  /** lm-eval's mean_stderr of acc (ddof 1). */
  readonly acc_stderr: number;
  readonly macro_f1: number;
  /** lm-eval's bootstrap_stderr of macro-F1 (NaN when bootstrapping is off). */
  readonly macro_f1_stderr: number;
  /** Percentile interval of the same bootstrap resamples. */
  readonly macro_f1_ci: Interval;
  readonly acc_norm?: number;
  readonly acc_norm_stderr?: number;
}

export interface KobestSection {
  readonly task: string;
  readonly shots: number;
  readonly split: string;
  /** Documents in the evaluated split before --limit (lm-eval's n-samples "original"). */
  readonly split_documents: number | null;
  readonly baseline: KobestNumbers;
  readonly candidate: KobestNumbers;
  readonly comparison: Omit<KobestComparison, 'task' | 'shots' | 'n'>;
}

export interface KobestStatisticsOptions {
  /** Seed of the paired bootstrap (default 1234). */
  readonly seed?: number;
  /** Resamples of the paired Δ intervals (default 2000). */
  readonly iterations?: number;
  /** lm-eval's bootstrap_iters for macro_f1_stderr (default 10000; 0 turns it off: stderr and interval NaN). */
  readonly bootstrapIterations?: number;
}

/**
 * Macro-F1's bootstrap standard error the way lm-evaluation-harness computes it (module header), and the
 * 95 % percentile interval of the same resamples. Each resample's macro-F1 is kobest/metrics.ts macroF1 of
 * the resampled documents (sklearn's: labels are those present in the resample), computed from a confusion
 * table with the same operations, so it is the same number.
 */
export function macroF1Bootstrap(golds: readonly number[], preds: readonly number[], iterations: number = DEFAULT_BOOTSTRAP_ITERATIONS): { stderr: number; ci: Interval } {
  const level = 0.95;
  const n = golds.length;
  if (!Number.isSafeInteger(iterations) || iterations < 0) {
    throw new PolyquantError(ERROR_CODES.USAGE, `bootstrap iterations must be a non-negative integer, got ${iterations}`);
  }
  const chunk = Math.min(BOOTSTRAP_CHUNK, iterations);
  const chunks = chunk === 0 ? 0 : Math.floor(iterations / chunk);
  if (n === 0 || chunks === 0) return { stderr: Number.NaN, ci: { low: Number.NaN, high: Number.NaN, level } };
  const labels = [...new Set([...golds, ...preds])].sort((a, b) => a - b);
  const k = labels.length;
  const dense = new Map(labels.map((label, index) => [label, index]));
  const codes = Int32Array.from(golds, (gold, i) => (dense.get(gold) as number) * k + (dense.get(preds[i] as number) as number));
  const counts = new Int32Array(k * k);
  const values = new Float64Array(chunks * chunk);
  let next = 0;
  for (let seed = 0; seed < chunks; seed += 1) {
    const random = new PythonRandom(seed);
    for (let draw = 0; draw < chunk; draw += 1) {
      counts.fill(0);
      // random.choices(xs, k=n): xs[floor(random() * n)], n draws.
      for (let i = 0; i < n; i += 1) {
        const code = codes[Math.floor(random.random() * n)] as number;
        counts[code] = (counts[code] as number) + 1;
      }
      values[next] = macroF1FromCounts(counts, k);
      next += 1;
    }
  }
  // lm_eval.metrics.sample_stddev: mean, then Σ(x − mean)² / (n − 1), summed in order.
  let sum = 0;
  for (const value of values) sum += value;
  const mean = sum / values.length;
  let squares = 0;
  for (const value of values) squares += (value - mean) ** 2;
  const stderr = values.length > 1 ? Math.sqrt(squares / (values.length - 1)) : Number.NaN;
  values.sort();
  return { stderr, ci: { low: percentile(values, (1 - level) / 2), high: percentile(values, 1 - (1 - level) / 2), level } };
}

/**
 * macroF1 (kobest/metrics.ts) from a k × k confusion table (row = gold, column = prediction): the labels
 * present in either, in order, each F1 = 2PR/(P + R) with P = tp/(tp + fp), R = tp/(tp + fn) (0 when a
 * denominator is), and their mean.
 */
function macroF1FromCounts(counts: Int32Array, k: number): number {
  let sum = 0;
  let present = 0;
  for (let label = 0; label < k; label += 1) {
    let goldTotal = 0;
    let predTotal = 0;
    for (let other = 0; other < k; other += 1) {
      goldTotal += counts[label * k + other] as number;
      predTotal += counts[other * k + label] as number;
    }
    if (goldTotal === 0 && predTotal === 0) continue;
    present += 1;
    const truePositives = counts[label * k + label] as number;
    const precision = predTotal === 0 ? 0 : truePositives / predTotal;
    const recall = goldTotal === 0 ? 0 : truePositives / goldTotal;
    sum += precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall);
  }
  return sum / present;
}

/** One model's numbers: acc ± mean_stderr, macro-F1 ± bootstrap stderr and interval, HellaSwag's acc_norm. */
export function kobestNumbers(result: KobestTaskResult, bootstrapIterations: number = DEFAULT_BOOTSTRAP_ITERATIONS): KobestNumbers {
  const f1 = macroF1Bootstrap(
    result.documents.map((doc) => doc.gold),
    result.documents.map((doc) => doc.pred),
    bootstrapIterations,
  );
  return {
    n: result.n,
    acc: result.acc,
    acc_stderr: result.acc_stderr,
    macro_f1: result.macro_f1,
    macro_f1_stderr: f1.stderr,
    macro_f1_ci: f1.ci,
    ...(result.acc_norm !== undefined && { acc_norm: result.acc_norm }),
    ...(result.acc_norm_stderr !== undefined && { acc_norm_stderr: result.acc_norm_stderr }),
  };
}

export function compareKobest(baseline: KobestTaskResult, candidate: KobestTaskResult, options: { seed?: number; iterations?: number } = {}): KobestComparison {
  const base = baseline.documents;
  const cand = candidate.documents;
  const same = base.length === cand.length && base.every((doc, i) => doc.index === cand[i]?.index && doc.gold === cand[i]?.gold);
  if (!same || baseline.task !== candidate.task || baseline.shots !== candidate.shots) {
    throw new PolyquantError(
      ERROR_CODES.CONFIG,
      `KOBEST ${baseline.task} ${baseline.shots}-shot: the two runs did not score the same documents`,
      { hint: 'baseline and candidate must use the same --split, --limit and --shots' },
    );
  }
  const golds = base.map((doc) => doc.gold);
  const basePreds = base.map((doc) => doc.pred);
  const candPreds = cand.map((doc) => doc.pred);
  const pick = (values: readonly number[], indices: Int32Array): number[] => Array.from(indices, (i) => values[i] as number);
  const accuracyOf = (preds: readonly number[], indices: Int32Array): number => {
    let right = 0;
    for (const i of indices) if (preds[i] === golds[i]) right += 1;
    return right / indices.length;
  };
  const seed = options.seed ?? 1234;
  const iterations = options.iterations ?? 2000;
  const deltaAccCi = pairedBootstrap(base.length, (indices) => accuracyOf(candPreds, indices) - accuracyOf(basePreds, indices), { seed, iterations });
  const deltaF1Ci = pairedBootstrap(
    base.length,
    (indices) => macroF1(pick(golds, indices), pick(candPreds, indices)) - macroF1(pick(golds, indices), pick(basePreds, indices)),
    { seed, iterations },
  );
  const test = mcnemar(
    base.map((doc) => doc.pred === doc.gold),
    cand.map((doc) => doc.pred === doc.gold),
  );
  const flips = base.filter((doc, i) => doc.pred !== cand[i]?.pred).length;
  return {
    task: baseline.task,
    shots: baseline.shots,
    n: base.length,
    delta_acc: candidate.acc - baseline.acc,
    delta_acc_ci: deltaAccCi,
    delta_macro_f1: candidate.macro_f1 - baseline.macro_f1,
    delta_macro_f1_ci: deltaF1Ci,
    ...(baseline.acc_norm !== undefined && candidate.acc_norm !== undefined ? { delta_acc_norm: candidate.acc_norm - baseline.acc_norm } : {}),
    flips,
    lost: test.lost,
    gained: test.gained,
    mcnemar_p: test.pValue,
    ci_note: flips === 0 ? NO_CHANGE_NOTE : null,
  };
}

/** The report's section for one task and shot count: both models' numbers and their paired comparison. */
export function kobestSection(baseline: KobestTaskResult, candidate: KobestTaskResult, options: KobestStatisticsOptions = {}): KobestSection {
  const { task: _task, shots: _shots, n: _n, ...comparison } = compareKobest(baseline, candidate, options);
  const iterations = options.bootstrapIterations ?? DEFAULT_BOOTSTRAP_ITERATIONS;
  return {
    task: baseline.harnessName,
    shots: baseline.shots,
    split: baseline.split,
    split_documents: baseline.splitDocuments ?? null,
    baseline: kobestNumbers(baseline, iterations),
    candidate: kobestNumbers(candidate, iterations),
    comparison,
  };
}
