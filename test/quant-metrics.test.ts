import { describe, expect, it } from 'vitest';
import { PolyquantError } from '../src/errors.js';
import { createErrorStats } from '../src/quant/index.js';

describe('createErrorStats', () => {
  it('computes RMSE, max error, SQNR and cosine similarity of a known example', () => {
    const stats = createErrorStats();
    stats.add(Float32Array.of(3, 4), Float32Array.of(3, 3));
    const result = stats.result();
    expect(result.count).toBe(2);
    expect(result.mse).toBeCloseTo(0.5, 12);
    expect(result.rmse).toBeCloseTo(Math.SQRT1_2, 12);
    expect(result.maxAbsError).toBe(1);
    expect(result.sqnrDb).toBeCloseTo(10 * Math.log10(25 / 1), 12);
    expect(result.cosineSimilarity).toBeCloseTo(21 / (5 * Math.sqrt(18)), 12);
  });

  it('gives the same totals streamed in chunks as in one call', () => {
    const original = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i));
    const reconstructed = original.map((value, i) => value + (i % 3) * 1e-3);
    const whole = createErrorStats();
    whole.add(original, reconstructed);
    const chunked = createErrorStats();
    for (let start = 0; start < 1000; start += 128) chunked.add(original.subarray(start, start + 128), reconstructed.subarray(start, start + 128));
    const a = whole.result();
    const b = chunked.result();
    expect(b.count).toBe(a.count);
    expect(b.maxAbsError).toBe(a.maxAbsError);
    expect(b.rmse).toBeCloseTo(a.rmse, 12);
    expect(b.sqnrDb).toBeCloseTo(a.sqnrDb, 9);
    expect(b.cosineSimilarity).toBeCloseTo(a.cosineSimilarity, 12);
  });

  it('reports exact reconstructions as infinite SQNR and zero signals sensibly', () => {
    const exact = createErrorStats();
    exact.add(Float32Array.of(1, -2), Float32Array.of(1, -2));
    expect(exact.result()).toMatchObject({ rmse: 0, maxAbsError: 0, sqnrDb: Number.POSITIVE_INFINITY, cosineSimilarity: 1 });
    const zeros = createErrorStats();
    zeros.add(new Float32Array(4), new Float32Array(4));
    expect(zeros.result()).toMatchObject({ sqnrDb: Number.POSITIVE_INFINITY, cosineSimilarity: 1 });
    const noisyZero = createErrorStats();
    noisyZero.add(new Float32Array(2), Float32Array.of(0, 1));
    expect(noisyZero.result()).toMatchObject({ sqnrDb: Number.NEGATIVE_INFINITY, cosineSimilarity: 0 });
    expect(createErrorStats().result()).toMatchObject({ count: 0, rmse: 0 });
  });

  it('propagates NaN into the maximum error instead of hiding it', () => {
    const stats = createErrorStats();
    stats.add(Float32Array.of(1, 2), Float32Array.of(Number.NaN, 2));
    expect(stats.result().maxAbsError).toBeNaN();
  });

  it('rejects chunks of different lengths', () => {
    expect(() => createErrorStats().add(new Float32Array(2), new Float32Array(3))).toThrow(PolyquantError);
  });
});
