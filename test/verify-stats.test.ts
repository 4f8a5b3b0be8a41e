import { describe, expect, it } from 'vitest';
import { DistributionComparer, erfc, klDivergenceRow, mcnemar, pairedBootstrap, percentile } from '../src/verify/stats.js';

const logSoftmax = (logits: number[]): Float32Array => {
  const max = Math.max(...logits);
  const lse = max + Math.log(logits.reduce((sum, value) => sum + Math.exp(value - max), 0));
  return Float32Array.from(logits, (value) => value - lse);
};

describe('comparison statistics', () => {
  it('computes KL(P‖Q) in nats, zero for identical rows', () => {
    const p = Float32Array.from([0.5, 0.25, 0.25].map(Math.log));
    const q = Float32Array.from([0.25, 0.25, 0.5].map(Math.log));
    // 0.5 ln 2 + 0 + 0.25 ln 0.5 = 0.25 ln 2
    expect(klDivergenceRow(p, q)).toBeCloseTo(0.25 * Math.LN2, 6);
    expect(klDivergenceRow(p, p)).toBe(0);
  });

  it('streams windows into mean, median, p99 and max KLD and top-1 agreement', () => {
    const comparer = new DistributionComparer();
    const base = new Float32Array([...logSoftmax([2, 1, 0]), ...logSoftmax([0, 0, 3])]);
    const candidate = new Float32Array([...logSoftmax([2, 1, 0]), ...logSoftmax([0, 3, 0])]);
    comparer.addWindow(base, candidate, 3, Int32Array.of(0, 2), Int32Array.of(0, 1));
    const result = comparer.result(2);
    expect(result.top1Agreement).toBe(0.5);
    expect(result.maxKld).toBeGreaterThan(2);
    expect(result.meanKld).toBeCloseTo(result.maxKld / 2, 5);
    expect(result.medianKld).toBeCloseTo(result.maxKld / 2, 5);
  });

  it('interpolates percentiles like numpy', () => {
    expect(percentile([1, 2, 3, 4], 0.5)).toBe(2.5);
    expect(percentile([0, 10], 0.99)).toBeCloseTo(9.9, 10);
  });

  it('gives a reproducible bootstrap interval that contains the observed difference', () => {
    const base = Array.from({ length: 200 }, (_, i) => (i % 4 !== 0 ? 1 : 0));
    const cand = base.map((value, i) => (i % 10 === 0 ? 0 : value));
    const delta = (indices: Int32Array) => {
      let sum = 0;
      for (const i of indices) sum += (cand[i] as number) - (base[i] as number);
      return sum / indices.length;
    };
    const all = Int32Array.from({ length: 200 }, (_, i) => i);
    const interval = pairedBootstrap(200, delta, { seed: 7 });
    expect(interval).toEqual(pairedBootstrap(200, delta, { seed: 7 }));
    expect(interval.low).toBeLessThanOrEqual(delta(all));
    expect(interval.high).toBeGreaterThanOrEqual(delta(all));
    expect(interval.high).toBeLessThan(0.01);
  });

  it('runs McNemar exactly for few discordant pairs and with χ² for many', () => {
    expect(mcnemar([true, true, false], [true, true, false])).toEqual({ lost: 0, gained: 0, pValue: 1 });
    // 5 lost, 0 gained: two-sided exact p = 2 / 2^5.
    const few = mcnemar(Array(5).fill(true), Array(5).fill(false));
    expect(few.pValue).toBeCloseTo(2 / 32, 12);
    // 30 lost, 10 gained: χ² = (20 − 1)² / 40 = 9.025 → p ≈ 0.002663.
    const many = mcnemar([...Array(30).fill(true), ...Array(10).fill(false)], [...Array(30).fill(false), ...Array(10).fill(true)]);
    expect(many.pValue).toBeCloseTo(0.002663, 5);
  });

  it('computes erfc to float precision', () => {
    expect(erfc(0)).toBeCloseTo(1, 7);
    expect(erfc(1)).toBeCloseTo(0.157299207, 7);
    expect(erfc(-1)).toBeCloseTo(1.842700793, 7);
  });
});
