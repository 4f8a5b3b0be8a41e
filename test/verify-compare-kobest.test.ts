import { describe, expect, it } from 'vitest';
import { PolyquantError } from '../src/errors.js';
import { compareKobest } from '../src/verify/compare-kobest.js';
import type { KobestTaskResult } from '../src/verify/kobest/index.js';

function result(preds: number[], golds: number[], shots = 0): KobestTaskResult {
  const acc = preds.filter((p, i) => p === golds[i]).length / preds.length;
  return {
    task: 'copa',
    harnessName: 'kobest_copa',
    shots,
    split: 'validation',
    file: 'copa/validation.jsonl',
    n: preds.length,
    acc,
    acc_stderr: 0,
    macro_f1: acc, // not used for the delta check below beyond its difference
    truncated: 0,
    documents: preds.map((pred, index) => ({ index, idx: index, gold: golds[index] as number, pred, logLikelihoods: [0, 0], fewshotIdx: [], truncated: false })),
  };
}

describe('paired KOBEST comparison', () => {
  const golds = Array.from({ length: 100 }, (_, i) => i % 2);
  it('reports no change, no flips and p = 1 for identical runs', () => {
    const same = result(golds, golds);
    const comparison = compareKobest(same, same);
    expect(comparison).toMatchObject({ n: 100, delta_acc: 0, delta_macro_f1: 0, flips: 0, lost: 0, gained: 0, mcnemar_p: 1 });
    expect(comparison.delta_acc_ci.low).toBe(0);
    expect(comparison.delta_acc_ci.high).toBe(0);
  });

  it('counts flips, lost and gained documents and brackets the accuracy change', () => {
    const base = result(golds, golds);
    const candPreds = golds.map((gold, i) => (i < 10 ? 1 - gold : gold));
    const comparison = compareKobest(base, result(candPreds, golds));
    expect(comparison.flips).toBe(10);
    expect(comparison.lost).toBe(10);
    expect(comparison.gained).toBe(0);
    expect(comparison.delta_acc).toBeCloseTo(-0.1, 12);
    expect(comparison.delta_acc_ci.low).toBeLessThan(-0.1);
    expect(comparison.delta_acc_ci.high).toBeGreaterThan(-0.1);
    expect(comparison.mcnemar_p).toBeCloseTo(2 / 1024, 12);
  });

  it('refuses runs over different documents', () => {
    expect(() => compareKobest(result(golds, golds), result(golds.slice(1), golds.slice(1)))).toThrow(PolyquantError);
    expect(() => compareKobest(result(golds, golds, 0), result(golds, golds, 5))).toThrow(/same --split, --limit and --shots/);
  });
});
