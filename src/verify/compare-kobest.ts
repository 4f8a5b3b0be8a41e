/**
 * Paired comparison of a candidate's KOBEST results against the baseline's on the same documents:
 * Δacc and Δmacro-F1 with paired bootstrap intervals, flipped predictions, McNemar's test.
 */
import { ERROR_CODES, PolyquantError } from '../errors.js';
import type { KobestTaskResult } from './kobest/index.js';
import { macroF1 } from './kobest/metrics.js';
import { type Interval, mcnemar, pairedBootstrap } from './stats.js';

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
  };
}
