import { seededUniform } from '../../src/verify/stats.js';
/** Seeded pseudo-random numbers for property tests: the same seed gives the same cases on every machine. */

export interface Random {
  /** A uniform unsigned 32-bit integer. */
  nextUint32(): number;
  /** Uniform in [0, 1). */
  next(): number;
  /** Uniform integer in [low, high]. */
  integer(low: number, high: number): number;
  /** Standard normal (Box–Muller). */
  normal(): number;
}

/** mulberry32 (the library's seeded generator, verify/stats.ts): tiny, fast, and good enough to drive tests. */
export function createRandom(seed: number): Random {
  const next = seededUniform(seed);
  // next() is an unsigned 32-bit value over 2^32, so this recovers it exactly.
  const nextUint32 = (): number => next() * 4294967296;
  return {
    nextUint32,
    next,
    integer: (low, high) => low + Math.floor(next() * (high - low + 1)),
    normal: () => {
      const u = 1 - next();
      const v = next();
      return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
    },
  };
}

const scratchFloat = new Float32Array(1);
const scratchBits = new Uint32Array(scratchFloat.buffer);

export function floatFromBits(bits: number): number {
  scratchBits[0] = bits >>> 0;
  return scratchFloat[0]!;
}

export function bitsFromFloat(value: number): number {
  scratchFloat[0] = value;
  return scratchBits[0]!;
}
