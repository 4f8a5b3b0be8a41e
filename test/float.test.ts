import { describe, expect, it } from 'vitest';
import {
  bf16ToF32,
  bf16ToF32Array,
  f16ToF32,
  f16ToF32Array,
  f32BitsToBf16Bits,
  f32BitsToF16Bits,
  f32ToBf16,
  f32ToBf16Array,
  f32ToF16,
  f32ToF16Array,
} from '../src/tensor/float.js';
import { HAVE_GOLDEN, readGoldenBytes, readGoldenFloats } from './helpers/quant-golden.js';
import { bitsFromFloat, createRandom, floatFromBits } from './helpers/quant-random.js';

// ------------------------------------------------------------------------------------------ oracles

/** Decodes half bits with the textbook formula (no tables, no bit tricks). */
function decodeHalf(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 31;
  const mantissa = bits & 1023;
  if (exponent === 31) return mantissa === 0 ? sign * Infinity : Number.NaN;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/** Every non-negative finite half value, indexed by its bits (bits order = value order). */
const POSITIVE_HALVES = Float64Array.from({ length: 0x7c00 }, (_, bits) => decodeHalf(bits));

/**
 * Oracle 1: the nearest half by search. Finds the two halves around |x| and picks the closer one, the
 * even one on a tie; 65536 stands in for the half after 65504 (that is, infinity). The differences are
 * exact in double for float32 inputs.
 */
function nearestHalfBySearch(value: number): number {
  if (Number.isNaN(value)) return Object.is(Math.sign(value), -0) ? 0xfe00 : 0x7e00;
  const sign = value < 0 || Object.is(value, -0) ? 0x8000 : 0;
  const magnitude = Math.abs(value);
  let low = 0;
  let high = 0x7c00;
  // Largest index whose value ≤ magnitude (index 0x7c00 = 65536 = "inf").
  while (high - low > 1) {
    const middle = (low + high) >> 1;
    if ((POSITIVE_HALVES[middle] ?? 65536) <= magnitude) low = middle;
    else high = middle;
  }
  if (magnitude >= 65536) return sign | 0x7c00;
  const below = POSITIVE_HALVES[low]!;
  const above = high === 0x7c00 ? 65536 : POSITIVE_HALVES[high]!;
  if (magnitude === below) return sign | low;
  const downDistance = magnitude - below;
  const upDistance = above - magnitude;
  const pick = downDistance < upDistance ? low : upDistance < downDistance ? high : low % 2 === 0 ? low : high;
  return sign | pick;
}

/**
 * Oracle 2: a literal transcription of ggml's `ggml_compute_fp32_to_fp16` (ggml-impl.h), the FP16
 * library's float-arithmetic algorithm, evaluated with float32 rounding.
 */
function ggmlFp32ToFp16(value: number): number {
  const f = Math.fround(value);
  let base = Math.fround(Math.fround(Math.abs(f) * 2 ** 112) * 2 ** -110);
  const w = bitsFromFloat(f);
  const shl1w = (w * 2) % 4294967296;
  const sign = (w & 0x80000000) >>> 0;
  let bias = (shl1w & 0xff000000) >>> 0;
  if (bias < 0x71000000) bias = 0x71000000;
  base = Math.fround(floatFromBits((bias >>> 1) + 0x07800000) + base);
  const bits = bitsFromFloat(base);
  const expBits = (bits >>> 13) & 0x7c00;
  const mantissaBits = bits & 0x0fff;
  const nonsign = expBits + mantissaBits;
  return (sign >>> 16) | (shl1w > 0xff000000 ? 0x7e00 : nonsign);
}

/** bf16 oracle: the nearer of the two bf16 neighbours by value, the even one on a tie. */
function nearestBf16(bits: number): number {
  const value = floatFromBits(bits);
  if (Number.isNaN(value)) return ((bits >>> 16) | 64) & 0xffff;
  const truncated = bits >>> 16;
  const below = floatFromBits(truncated << 16);
  const next = truncated + 1;
  const above = (next & 0x7fff) === 0x7f80 ? Math.sign(value) * 2 ** 128 : floatFromBits(next << 16);
  const downDistance = Math.abs(value - below);
  const upDistance = Math.abs(above - value);
  if (downDistance < upDistance) return truncated;
  if (upDistance < downDistance) return next & 0xffff;
  return truncated % 2 === 0 ? truncated : next & 0xffff;
}

// ------------------------------------------------------------------------------------------ samples

/** Float32 bit patterns that stress rounding: random bits, half-range values, ties and boundaries. */
function sampleFloatBits(): Uint32Array {
  const random = createRandom(0x5eed_f16);
  const out: number[] = [];
  for (let i = 0; i < 60_000; i++) out.push(random.nextUint32());
  for (let i = 0; i < 60_000; i++) {
    // Exponent 100…144 covers below the subnormal range up to past 65504.
    const exponent = random.integer(100, 144);
    out.push(((random.nextUint32() & 0x80000000) | (exponent << 23) | (random.nextUint32() & 0x7fffff)) >>> 0);
  }
  for (let i = 0; i < 20_000; i++) {
    // The exact midpoint between two neighbouring halves, and one float ulp either side of it.
    const half = random.integer(0, 0x7bfe);
    const midpoint = bitsFromFloat((POSITIVE_HALVES[half]! + POSITIVE_HALVES[half + 1]!) / 2);
    const sign = random.next() < 0.5 ? 0x80000000 : 0;
    for (const bits of [midpoint - 1, midpoint, midpoint + 1]) out.push((bits | sign) >>> 0);
  }
  // Every float within 64 ulps of the interesting boundaries.
  for (const value of [2 ** -25, 2 ** -24, 1.5 * 2 ** -24, 2 ** -14, 2 ** -14 - 2 ** -25, 65504, 65520, 65536, 1, 2048]) {
    const center = bitsFromFloat(value);
    for (let delta = -64; delta <= 64; delta++) {
      out.push(center + delta, (center + delta) | 0x80000000);
    }
  }
  out.push(0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000, 0x7f800001, 0x7fbfffff, 0xff812345);
  return Uint32Array.from(out, (bits) => bits >>> 0);
}

const FLOAT_SAMPLE = sampleFloatBits();

function hex(value: number): string {
  return `0x${(value >>> 0).toString(16)}`;
}

// ------------------------------------------------------------------------------------------ tests

describe('f16 conversions', () => {
  it('widens every one of the 65,536 halves to the value the half formula gives', () => {
    for (let bits = 0; bits < 65536; bits++) {
      const expected = decodeHalf(bits);
      const actual = f16ToF32(bits);
      if (!Object.is(actual, expected) && !(Number.isNaN(actual) && Number.isNaN(expected))) {
        expect.fail(`half ${hex(bits)} widened to ${actual}, expected ${expected}`);
      }
    }
  });

  it('rounds every non-NaN half back to itself, and every NaN half to a NaN of the same sign', () => {
    for (let bits = 0; bits < 65536; bits++) {
      const back = f32ToF16(f16ToF32(bits));
      const isHalfNaN = (bits & 0x7c00) === 0x7c00 && (bits & 0x3ff) !== 0;
      const expected = isHalfNaN ? (bits & 0x8000) | 0x7e00 : bits;
      if (back !== expected) expect.fail(`half ${hex(bits)} came back as ${hex(back)}`);
    }
  });

  it('rounds sampled floats (ties, subnormal edges, overflow) like a nearest-half search and like ggml', () => {
    for (const bits of FLOAT_SAMPLE) {
      const actual = f32BitsToF16Bits(bits);
      const value = floatFromBits(bits);
      const bySearch = Number.isNaN(value) ? (bits & 0x80000000 ? 0xfe00 : 0x7e00) : nearestHalfBySearch(value);
      const byGgml = ggmlFp32ToFp16(value);
      if (actual !== bySearch || actual !== byGgml) {
        expect.fail(`float ${hex(bits)} (${value}) → ${hex(actual)}; search says ${hex(bySearch)}, ggml says ${hex(byGgml)}`);
      }
    }
  });

  it('rounds JS numbers through float32 first', () => {
    // 1 + 2^-11 + 2^-30 is above the f16 tie at 1 + 2^-11 as a double, but float32 drops the 2^-30,
    // leaving an exact tie that goes to the even 1.0.
    expect(f32ToF16(1 + 2 ** -11 + 2 ** -30)).toBe(0x3c00);
    expect(f32ToF16(-2.5)).toBe(0xc100);
    expect(f32ToF16(Number.NaN)).toBe(0x7e00);
    expect(f32ToF16(1e6)).toBe(0x7c00);
    expect(f32ToF16(-1e-9)).toBe(0x8000);
  });

  it('converts arrays like the scalar functions, into a given output, keeping NaN signs', () => {
    const floats = new Float32Array(FLOAT_SAMPLE.buffer.slice(0));
    const halves = f32ToF16Array(floats);
    for (let i = 0; i < FLOAT_SAMPLE.length; i++) {
      if (halves[i] !== f32BitsToF16Bits(FLOAT_SAMPLE[i]!)) expect.fail(`element ${i}: ${hex(halves[i]!)}`);
    }
    const reused = new Float32Array(halves.length + 3);
    const widened = f16ToF32Array(halves, reused);
    expect(widened).toBe(reused);
    const widenedBits = new Uint32Array(widened.buffer);
    for (let i = 0; i < halves.length; i++) {
      if (widenedBits[i] !== bitsFromFloat(f16ToF32(halves[i]!)) && !Number.isNaN(widened[i])) {
        expect.fail(`element ${i}: half ${hex(halves[i]!)} widened to ${hex(widenedBits[i]!)}`);
      }
    }
    // The array path works on bits, so a negative NaN stays negative and keeps its payload.
    const nan = f16ToF32Array(Uint16Array.of(0xfe01));
    expect(new Uint32Array(nan.buffer)[0]).toBe(0xffc02000);
    expect(f32ToF16Array(nan)[0]).toBe(0xfe00);
  });

  it('refuses an output array that is too short', () => {
    expect(() => f16ToF32Array(new Uint16Array(4), new Float32Array(3))).toThrow(/3 elements but 4/);
  });
});

describe('bf16 conversions', () => {
  it('widens every bf16 value exactly and rounds every non-NaN one back to itself', () => {
    for (let bits = 0; bits < 65536; bits++) {
      const value = bf16ToF32(bits);
      if (bitsFromFloat(value) !== (bits << 16) >>> 0 && !Number.isNaN(value)) {
        expect.fail(`bf16 ${hex(bits)} widened to ${hex(bitsFromFloat(value))}`);
      }
      const isBf16NaN = (bits & 0x7f80) === 0x7f80 && (bits & 0x7f) !== 0;
      if (!isBf16NaN && f32ToBf16(value) !== bits) expect.fail(`bf16 ${hex(bits)} came back as ${hex(f32ToBf16(value))}`);
    }
  });

  it('rounds sampled floats to the nearest bf16 (ties to even) and quiets NaNs as ggml does', () => {
    for (const bits of FLOAT_SAMPLE) {
      const actual = f32BitsToBf16Bits(bits);
      const expected = nearestBf16(bits);
      if (actual !== expected) expect.fail(`float ${hex(bits)} → ${hex(actual)}, expected ${hex(expected)}`);
    }
    expect(f32BitsToBf16Bits(0x7f800001)).toBe(0x7fc0);
    expect(f32BitsToBf16Bits(0xff812345)).toBe(0xffc1);
    expect(f32BitsToBf16Bits(0x7f7fffff)).toBe(0x7f80); // the largest float rounds up to inf
  });

  it('converts arrays like the scalar functions', () => {
    const floats = new Float32Array(FLOAT_SAMPLE.buffer.slice(0));
    const halves = f32ToBf16Array(floats, new Uint16Array(floats.length));
    const widened = bf16ToF32Array(halves);
    const widenedBits = new Uint32Array(widened.buffer);
    for (let i = 0; i < FLOAT_SAMPLE.length; i++) {
      if (halves[i] !== f32BitsToBf16Bits(FLOAT_SAMPLE[i]!)) expect.fail(`element ${i}: ${hex(halves[i]!)}`);
      if (widenedBits[i] !== halves[i]! << 16 >>> 0) expect.fail(`element ${i} widened to ${hex(widenedBits[i]!)}`);
    }
  });
});

describe.skipIf(!HAVE_GOLDEN)('f16/bf16 conversions against ggml golden data', () => {
  it('rounds the golden input to the F16 and BF16 bytes ggml wrote, and widens them to its floats', () => {
    const input = readGoldenFloats('input.f32');
    for (const [name, toHalves, toFloats] of [
      ['F16', f32ToF16Array, f16ToF32Array],
      ['BF16', f32ToBf16Array, bf16ToF32Array],
    ] as const) {
      const golden = readGoldenBytes(`${name}.bin`);
      const halves = toHalves(input);
      expect(new Uint8Array(halves.buffer)).toEqual(golden);
      expect(toFloats(halves)).toEqual(readGoldenFloats(`${name}.dequant.f32`));
    }
  });
});
