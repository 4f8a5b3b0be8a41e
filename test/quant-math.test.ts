import { describe, expect, it } from 'vitest';
import { nearestInt, roundHalfAwayFromZero, truncateToInt8 } from '../src/quant/ggml-math.js';
import { bitsFromFloat, createRandom, floatFromBits } from './helpers/quant-random.js';

/** ggml's nearest_int written out literally: add 12582912.0f in float, read the mantissa bits. */
function nearestIntLiteral(value: number): number {
  const bits = bitsFromFloat(Math.fround(Math.fround(value) + 12582912));
  return (bits & 0x007fffff) - 0x00400000;
}

describe('ggml rounding helpers', () => {
  it('rounds ties to even like ggml nearest_int, unlike Math.round and roundf', () => {
    expect([0.5, 1.5, 2.5, -0.5, -1.5, -2.5].map(nearestInt)).toEqual([0, 2, 2, 0, -2, -2]);
    expect([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, -126.5].map(roundHalfAwayFromZero)).toEqual([1, 2, 3, -1, -2, -3, 0, -127]);
    expect(Math.round(-2.5)).toBe(-2);
  });

  it('agrees with the literal bit trick for random floats in and out of its valid range', () => {
    const random = createRandom(42);
    for (let i = 0; i < 200_000; i++) {
      const value =
        i % 3 === 0
          ? Math.fround((random.next() - 0.5) * 2 ** random.integer(0, 26))
          : i % 3 === 1
            ? Math.fround(random.integer(-4194304, 4194304) + 0.5)
            : floatFromBits(random.nextUint32());
      if (Number.isNaN(value)) continue;
      const expected = nearestIntLiteral(value);
      if (nearestInt(value) !== expected) expect.fail(`nearest_int(${value}) = ${nearestInt(value)}, ggml gives ${expected}`);
    }
    expect(nearestInt(Number.POSITIVE_INFINITY)).toBe(nearestIntLiteral(Number.POSITIVE_INFINITY));
    expect(nearestInt(Number.NaN)).toBe(0);
  });

  it('truncates toward zero and keeps the low byte like a C (int8_t) cast', () => {
    expect([8.9, -0.9, 16.5, 127.99, 200].map(truncateToInt8)).toEqual([8, 0, 16, 127, -56]);
  });
});
