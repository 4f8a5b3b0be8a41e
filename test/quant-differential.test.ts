import { describe, expect, it } from 'vitest';
import { quantizeRows } from '../src/quant/index.js';
import { makeQkx2Quants, makeQkx3Quants, makeQxQuants } from '../src/quant/kquant-helpers.js';
import { f32ToF16 } from '../src/tensor/float.js';
import { iq4BlockScalePlain, makeQkxQuantsPlain, makeQxQuantsPlain, type PlainResult } from './helpers/quant-plain.js';
import { createRandom, floatFromBits, type Random } from './helpers/quant-random.js';

/**
 * The production scale searches skip trials that provably cannot win (repeats, double-precision
 * bounds; see src/quant/kquant-helpers.ts). These tests hold them to shortcut-free ports on inputs
 * chosen to stress exactly those proofs: perfect and near-perfect fits, ties, constant groups,
 * subnormal and huge magnitudes, and importance weights spanning many orders of magnitude.
 * POLYQUANT_DIFFERENTIAL_SCALE=30 runs thirty times as many cases (a few minutes);
 * POLYQUANT_DIFFERENTIAL_SEED=n draws other cases.
 */
const SCALE = Number(process.env['POLYQUANT_DIFFERENTIAL_SCALE'] ?? 1);
const SEED = Number(process.env['POLYQUANT_DIFFERENTIAL_SEED'] ?? 0);

/** A group of n values from one of many adversarial distributions. */
function adversarialGroup(random: Random, n: number): Float32Array {
  const x = new Float32Array(n);
  const scale = 10 ** random.integer(-38, 30);
  const kind = random.integer(0, 9);
  const step = Math.fround(scale / random.integer(1, 40));
  const offset = Math.fround(-scale * random.next());
  for (let i = 0; i < n; i++) {
    switch (kind) {
      case 0:
        x[i] = random.normal() * scale;
        break;
      case 1:
        // Exactly on a grid: a perfect fit exists (E_min = 0).
        x[i] = Math.fround(offset + step * random.integer(0, 15));
        break;
      case 2:
        // Nearly on a grid: relative noise around float precision.
        x[i] = Math.fround(offset + step * random.integer(0, 31)) * (1 + (random.next() - 0.5) * 1e-6);
        break;
      case 3:
        x[i] = random.next() < 0.8 ? 0 : random.normal() * scale;
        break;
      case 4:
        x[i] = random.next() < 0.5 ? scale : -scale / 2;
        break;
      case 5:
        // Raw float bits within a band of exponents: subnormals included.
        x[i] = floatFromBits((random.nextUint32() & 0x807fffff) | (random.integer(0, 12) << 23));
        break;
      case 6:
        // Student-t-like outliers.
        x[i] = (random.normal() / Math.max(0.01, Math.abs(random.normal()))) * scale;
        break;
      case 7:
        x[i] = ((random.integer(0, 16) - 8) / 8 + 1 / 16) * scale;
        break;
      case 8:
        x[i] = scale * (1 + i / n);
        break;
      default:
        x[i] = Math.abs(random.normal()) * scale;
    }
  }
  if (random.next() < 0.05) x.fill(x[0]!);
  return x;
}

/** Weights as the callers build them, or importance-style ones with a huge dynamic range. */
function weightsFor(random: Random, x: Float32Array, kind: number): Float32Array {
  const n = x.length;
  const weights = new Float32Array(n);
  let sumSquares = 0;
  for (const value of x) sumSquares = Math.fround(sumSquares + Math.fround(value * value));
  const average = Math.fround(Math.sqrt(Math.fround(sumSquares / n)));
  for (let i = 0; i < n; i++) {
    const value = x[i]!;
    if (kind === 0) weights[i] = Math.abs(value);
    else if (kind === 1) weights[i] = average + Math.abs(value);
    else if (kind === 2) weights[i] = Math.exp(4 * random.normal()) * Math.sqrt(sumSquares / n + value * value);
    else weights[i] = random.next() < 0.2 ? 0 : Math.exp(6 * random.normal());
  }
  return weights;
}

function same(actual: PlainResult, expected: PlainResult): boolean {
  return (
    Object.is(actual.scale, expected.scale) &&
    Object.is(actual.theMin, expected.theMin) &&
    actual.levels.every((level, i) => level === expected.levels[i])
  );
}

function describeCase(x: Float32Array, weights: Float32Array | null, actual: PlainResult, expected: PlainResult): string {
  return JSON.stringify({ x: Array.from(x), weights: weights && Array.from(weights), actual, expected });
}

describe('shortcut-free equivalence of the scale searches', () => {
  it('make_qkx2_quants matches a plain port for the Q2_K, Q4_K and Q5_K parameters', () => {
    const random = createRandom(2024 + SEED);
    const configurations = [
      { n: 16, nmax: 3, rmin: -0.5, nstep: 15, useMad: true },
      { n: 32, nmax: 15, rmin: -1, nstep: 20, useMad: false },
      { n: 32, nmax: 31, rmin: -0.5, nstep: 15, useMad: false },
    ];
    const rdelta = Math.fround(0.1);
    const L = new Uint8Array(32);
    const mins = new Float32Array(1);
    for (let trial = 0; trial < 6000 * SCALE; trial++) {
      const { n, nmax, rmin, nstep, useMad } = configurations[trial % 3]!;
      const x = adversarialGroup(random, n);
      const weights = weightsFor(random, x, random.integer(0, 3));
      const scale = makeQkx2Quants(n, nmax, x, 0, weights, L, 0, mins, 0, rmin, rdelta, nstep, useMad);
      const actual = { scale, theMin: mins[0]!, levels: Array.from(L.subarray(0, n)) };
      const expected = makeQkxQuantsPlain(nmax, x, weights, rmin, rdelta, nstep, useMad, false);
      if (!same(actual, expected)) expect.fail(describeCase(x, weights, actual, expected));
    }
  });

  it('make_qkx3_quants matches a plain port for the importance-weighted K-quant and Q4_1/Q5_1 parameters', () => {
    const random = createRandom(77 + SEED);
    const L = new Uint8Array(32);
    const mins = new Float32Array(1);
    const rmin = Math.fround(-0.9);
    const rdelta = Math.fround(0.05);
    for (let trial = 0; trial < 4000 * SCALE; trial++) {
      const [n, nmax] = ([[16, 3], [32, 15], [32, 31]] as const)[trial % 3]!;
      const x = adversarialGroup(random, n);
      const weights = weightsFor(random, x, random.integer(0, 3));
      const scale = makeQkx3Quants(n, nmax, x, 0, weights, L, 0, mins, 0, rmin, rdelta, 36);
      const actual = { scale, theMin: mins[0]!, levels: Array.from(L.subarray(0, n)) };
      const expected = makeQkxQuantsPlain(nmax, x, weights, rmin, rdelta, 36, false, true);
      if (!same(actual, expected)) expect.fail(describeCase(x, weights, actual, expected));
    }
  });

  it('make_qx_quants matches a plain port with x² and with importance weights', () => {
    const random = createRandom(5150 + SEED);
    const L = new Int8Array(32);
    for (let trial = 0; trial < 6000 * SCALE; trial++) {
      const [n, nmax] = ([[16, 32], [16, 4], [32, 8], [32, 16]] as const)[trial % 4]!;
      const x = adversarialGroup(random, n);
      const weights = trial % 2 === 0 ? null : weightsFor(random, x, random.integer(2, 3));
      const scale = makeQxQuants(n, nmax, x, 0, L, 0, weights, 0);
      const actual = { scale, theMin: 0, levels: Array.from(L.subarray(0, n)) };
      const expected = makeQxQuantsPlain(nmax, x, weights);
      if (!same(actual, expected)) expect.fail(describeCase(x, weights, actual, expected));
    }
  });

  it('IQ4_NL rows match a plain port of quantize_row_iq4_nl_impl, with and without importance', () => {
    const random = createRandom(4242 + SEED);
    const levels = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];
    const bestIndex = (value: number): number => {
      let index = 0;
      for (let i = 1; i < 16; i++) if (value + value >= levels[i - 1]! + levels[i]!) index = i;
      return index;
    };
    for (let trial = 0; trial < 3000 * SCALE; trial++) {
      const x = adversarialGroup(random, 32);
      const importance = trial % 2 === 0 ? undefined : weightsFor(random, x, 3);
      let sigma2 = 0;
      for (const value of x) sigma2 = Math.fround(sigma2 + Math.fround(value * value));
      sigma2 = Math.fround(sigma2 * Math.fround(2 / 32));
      const weights = x.map((value, j) =>
        importance === undefined
          ? Math.fround(value * value)
          : Math.fround(importance[j]! * Math.fround(Math.sqrt(Math.fround(sigma2 + Math.fround(value * value))))),
      );
      const { scale } = iq4BlockScalePlain(x, weights);
      const half = f32ToF16(scale);
      const inverse = scale !== 0 ? Math.fround(1 / scale) : 0;
      const expected = new Uint8Array(18);
      expected[0] = half & 0xff;
      expected[1] = half >> 8;
      for (let j = 0; j < 16; j++) {
        expected[2 + j] = bestIndex(Math.fround(inverse * x[j]!)) | (bestIndex(Math.fround(inverse * x[j + 16]!)) << 4);
      }
      const actual = quantizeRows('IQ4_NL', x, 32, { importance });
      if (!actual.every((byte, i) => byte === expected[i])) {
        expect.fail(JSON.stringify({ x: Array.from(x), importance: importance && Array.from(importance), actual, expected }));
      }
    }
  });
});
