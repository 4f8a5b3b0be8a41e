import { afterEach, describe, expect, it } from 'vitest';
import { setKernelBackend } from '../src/quant/index.js';
import {
  createMatMulNBitsTensor,
  MATMULNBITS_LAYOUTS,
  type MatMulNBitsLayout,
  type MatMulNBitsTensor,
  matMulNBitsBytes,
  quantizeMatMulNBits,
  quantizeMatMulNBitsRowsInto,
  quantizeOnnxRows,
} from '../src/quant/onnx-layouts.js';
import { wasmMatMulNBitsQuantizer } from '../src/quant/wasm/runtime.js';
import { f16ToF32 } from '../src/tensor/float.js';
import { bitsFromFloat, createRandom, floatFromBits, type Random } from './helpers/quant-random.js';

/**
 * The WebAssembly MatMulNBits quantizer (assembly/onnx.ts) must give exactly the TypeScript kernel's bytes
 * (onnx-layouts.ts `quantizeMatMulNBitsRow`, which the layout tests pin to MLAS) for every layout, on
 * blocks built to break a port: ±extreme ties, exact .5 levels and their neighbours, zeros of both signs,
 * subnormals, ±inf, NaN, huge values, and fp16 rounding boundaries for the f16 layouts.
 */
const SCALE = Number(process.env['POLYQUANT_DIFFERENTIAL_SCALE'] ?? 1);
const FLT_MAX = 3.4028234663852886e38;

afterEach(() => setKernelBackend('wasm'));

/** `steps` float32 ulps away from `value` (towards +inf for steps > 0; from zero, into the subnormals). */
function nudge(value: number, steps: number): number {
  if (value === 0) return steps === 0 ? value : floatFromBits(Math.abs(steps)) * Math.sign(steps);
  const bits = bitsFromFloat(value);
  return floatFromBits(bits + (value > 0 ? steps : -steps));
}

/** Fills one block of `x` (from `start`, `count` floats) with one adversarial pattern. */
function fillBlock(random: Random, x: Float32Array, start: number, count: number, layout: MatMulNBitsLayout): void {
  const kind = random.integer(0, 15);
  const scale = 10 ** random.integer(-40, 38);
  const halfRange = layout.bits === 4 ? 8 : 128;
  // A power of two step, so that v / step is exact and `m + 0.5` levels are real ties.
  const step = 2 ** random.integer(-30, 20);
  for (let j = 0; j < count; j++) {
    const i = start + j;
    switch (kind) {
      case 0:
        x[i] = random.normal() * scale;
        break;
      case 1:
        // Symmetric ties: the extreme −halfRange·step sets scale = step, so v·(1/scale) + zp lands on m/2.
        x[i] = j === 0 ? -halfRange * step : (step * random.integer(-2 * halfRange, 2 * halfRange)) / 2;
        break;
      case 2:
        // Exactly ±a at both ends (the tie picks the negative end), smaller values between.
        x[i] = j === 0 ? scale : j === count - 1 ? -scale : random.normal() * scale * 0.3;
        break;
      case 3:
        // Zeros of both signs, with NaN now and then (the first zero after a NaN decides a zero extreme's
        // sign, and so the sign of a zero scale), and rarely another value.
        x[i] = random.next() < 0.5 ? -0 : random.next() < 0.1 ? Number.NaN : random.next() < 0.03 ? random.normal() : 0;
        break;
      case 4: {
        const value = floatFromBits(random.nextUint32());
        x[i] = Number.isNaN(value) ? Number.NaN : value;
        break;
      }
      case 5:
        x[i] = random.next() < 0.1 ? [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY][random.integer(0, 2)]! : random.normal() * scale;
        break;
      case 6:
        x[i] = floatFromBits(random.integer(0, 0x7fffff)) * (random.next() < 0.5 ? -1 : 1);
        break;
      case 7:
        x[i] = (random.next() < 0.5 ? -1 : 1) * nudge(FLT_MAX, -random.integer(0, 1000));
        break;
      case 8:
        x[i] = scale;
        break;
      case 9:
        // Levels a ulp either side of a tie: (m + 0.5)·step ± 1 ulp, with the extreme setting the scale.
        x[i] = j === 0 ? -halfRange * step : nudge(Math.fround((random.integer(-halfRange, halfRange - 1) + 0.5) * step), random.integer(-2, 2));
        break;
      case 10:
        x[i] = Number.NaN;
        break;
      case 11:
        // One value alone (the rest zero): with f16 scales the stored scale shows how that value rounded to fp16.
        x[i] = j === (count >> 1) ? halfBoundary(random) : 0;
        break;
      case 12:
        x[i] = halfBoundary(random);
        break;
      case 14:
        // The asymmetric twin of case 9: range [0, kMax·step] gives scale = step and zero point 0, so the
        // sums are (m + 0.5)·step/step ± ulps — among them 0.49999997, which `x + 0.5` in f32 rounds up.
        x[i] = j === 0 ? 0 : j === 1 ? layout.bits === 4 ? 15 * step : 255 * step : nudge((random.integer(0, 2 * halfRange - 2) + 0.5) * step, random.integer(-2, 2));
        break;
      case 15: {
        // An asymmetric zero point of exactly 0.49999997 (the same trap, in range2scalezp's roundf).
        const [low, high] = zeroPointTrap(layout.bits === 4 ? 15 : 255, step);
        x[i] = j === 0 ? low : j === 1 ? high : Math.fround(low + (high - low) * random.next());
        break;
      }
      default:
        // Asymmetric grids: the range sets scale = (high − low)/kMax, values on and between its steps.
        x[i] = j === 0 ? -scale : j === 1 ? scale * 3 : Math.fround((scale * random.integer(-4 * halfRange, 12 * halfRange)) / (2 * halfRange));
    }
  }
}

/**
 * A block range [low, high] whose asymmetric zero point `−fl(low / fl(fl(high − low) / kMax))` is exactly
 * 0.5 − 2^-25, found by nudging both ends (the reference's float32 steps, emulated with Math.fround).
 */
function zeroPointTrap(maxLevel: number, step: number): [number, number] {
  const fround = Math.fround;
  const target = fround(0.5 - 2 ** -25);
  const low0 = -fround(target * step);
  const high0 = fround((maxLevel - 0.5) * step);
  for (let lowSteps = 0; lowSteps < 64; lowSteps++) {
    for (let highSteps = -64; highSteps <= 64; highSteps++) {
      const low = nudge(low0, lowSteps % 2 === 0 ? lowSteps / 2 : -(lowSteps + 1) / 2);
      const high = nudge(high0, highSteps);
      const scale = fround(fround(high - low) / maxLevel);
      if (fround(-fround(low / scale)) === target) return [low, high];
    }
  }
  throw new Error(`no zero-point trap near step ${step}`);
}

/** A float at or next to an fp16 rounding boundary: a half, a midpoint between two halves, or the overflow edge. */
function halfBoundary(random: Random): number {
  const half = random.integer(0, 0x7bff);
  const low = f16ToF32(half);
  const high = f16ToF32(half + 1);
  const sign = random.next() < 0.5 ? -1 : 1;
  switch (random.integer(0, 3)) {
    case 0:
      return sign * nudge(low, random.integer(-1, 1));
    case 1:
      // The exact midpoint (a tie to even in f32 → f16) and its neighbours.
      return sign * nudge(Math.fround((low + high) / 2), random.integer(-1, 1));
    case 2:
      // Around 65520, where values start rounding to inf.
      return sign * nudge(65520, random.integer(-2, 2));
    default:
      // fp16 subnormals and the 2^-25 tie to zero.
      return sign * nudge(2 ** -25 * random.integer(1, 4), random.integer(-1, 1));
  }
}

/** Rows of K floats, one adversarial pattern per run of `patternLength` (default: the block). */
function adversarialRows(random: Random, rows: number, K: number, layout: MatMulNBitsLayout, patternLength: number = layout.blockSize): Float32Array {
  const x = new Float32Array(rows * K);
  for (let start = 0; start < x.length; start += patternLength) fillBlock(random, x, start, Math.min(patternLength, x.length - start), layout);
  return x;
}

/** The first differing byte of the chunk (part, block and both blocks' bytes in hex), or null. */
function describeChunkMismatch(layout: MatMulNBitsLayout, rows: number, K: number, actual: Uint8Array, expected: Uint8Array): string | null {
  if (actual.length !== expected.length) return `${layout.id}: ${actual.length} bytes, expected ${expected.length}`;
  const index = actual.findIndex((byte, i) => byte !== expected[i]);
  if (index < 0) return null;
  const parts = matMulNBitsBytes(layout, rows, K);
  const hex = (bytes: Uint8Array): string => Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('');
  const [part, offset, unit] =
    index < parts.B
      ? ['B', index, layout.blobBytes]
      : index < parts.B + parts.scales
        ? ['scales', index - parts.B, layout.scaleBytes]
        : ['zero points', index - parts.B - parts.scales, 1];
  const start = index - (offset % unit);
  return `${layout.id} (wasm vs js), K = ${K}: first difference in ${part}, unit ${Math.floor(offset / unit)}: wasm ${hex(actual.subarray(start, start + unit))}, js ${hex(expected.subarray(start, start + unit))}`;
}

function tensorBytes(tensor: MatMulNBitsTensor): Uint8Array[] {
  const { B, scales, zeroPoints } = tensor;
  return [B, new Uint8Array(scales.buffer, scales.byteOffset, scales.byteLength), zeroPoints ?? new Uint8Array(0)];
}

describe('WebAssembly MatMulNBits kernel', () => {
  it('is used under the wasm backend and not under the js one', () => {
    expect(wasmMatMulNBitsQuantizer()).toBeDefined();
    setKernelBackend('js');
    expect(wasmMatMulNBitsQuantizer()).toBeUndefined();
  });

  describe.each(MATMULNBITS_LAYOUTS.map((layout) => [layout.id, layout] as const))('%s', (_id, layout) => {
    it("quantizes adversarial rows to the TypeScript kernel's bytes", () => {
      const random = createRandom(0x0a11 ^ (layout.bits << 8) ^ layout.blockSize ^ (layout.symmetric ? 0x1000 : 0) ^ (layout.scaleType === 'f16' ? 0x2000 : 0));
      for (let round = 0; round < 6 * SCALE; round++) {
        // Odd and even block counts (4-bit zero points pair blocks up).
        const K = layout.blockSize * random.integer(1, 9);
        const rows = random.integer(1, 12);
        const x = adversarialRows(random, rows, K, layout);
        const before = x.slice();
        setKernelBackend('js');
        const expected = quantizeOnnxRows(layout.id, x, K);
        setKernelBackend('wasm');
        const actual = quantizeOnnxRows(layout.id, x, K);
        const message = describeChunkMismatch(layout, rows, K, actual, expected);
        expect(message, message ?? '').toBeNull();
        // The kernel rounds its staged copy to fp16 in place, never the caller's rows.
        expect(Buffer.from(x.buffer).equals(Buffer.from(before.buffer))).toBe(true);
      }
    });

    it('writes the same tensor through quantizeMatMulNBits and row chunks at an offset', () => {
      const random = createRandom(0xc4a1 ^ layout.blockSize);
      const N = 7;
      const K = layout.blockSize * 5;
      const x = adversarialRows(random, N, K, layout);
      setKernelBackend('js');
      const expected = tensorBytes(quantizeMatMulNBits(x, N, K, layout.id));
      setKernelBackend('wasm');
      const whole = tensorBytes(quantizeMatMulNBits(x, N, K, layout.id));
      const streamed = createMatMulNBitsTensor(layout.id, N, K);
      quantizeMatMulNBitsRowsInto(streamed, x.subarray(0, 3 * K), 0);
      quantizeMatMulNBitsRowsInto(streamed, x.subarray(3 * K), 3);
      for (const [part, bytes] of tensorBytes(streamed).entries()) {
        expect(Buffer.from(whole[part]!).equals(Buffer.from(expected[part]!)), `${layout.id} whole, part ${part}`).toBe(true);
        expect(Buffer.from(bytes).equals(Buffer.from(expected[part]!)), `${layout.id} streamed, part ${part}`).toBe(true);
      }
    });
  });

  it('stages chunks of many rows and rows longer than the staging area', () => {
    const layout = MATMULNBITS_LAYOUTS.find((row) => row.id === 'onnx-q4-b32-asym-f16')!;
    // 200 rows of 3072 span three staging chunks; 3 rows of 270336 need one chunk each.
    for (const [rows, K] of [
      [200, 3072],
      [3, 128 * 2112],
    ] as const) {
      const x = adversarialRows(createRandom(K), rows, K, layout);
      setKernelBackend('js');
      const expected = quantizeOnnxRows(layout.id, x, K);
      setKernelBackend('wasm');
      const message = describeChunkMismatch(layout, rows, K, quantizeOnnxRows(layout.id, x, K), expected);
      expect(message, message ?? '').toBeNull();
    }
  });

  it('leaves K that is not a multiple of the block (short last block, odd K) to the TypeScript kernel, with the same bytes', () => {
    const layout = MATMULNBITS_LAYOUTS.find((row) => row.id === 'onnx-q4-b32-sym-f32')!;
    const x = adversarialRows(createRandom(41), 3, 41, layout, 41);
    setKernelBackend('js');
    const expected = quantizeOnnxRows(layout.id, x, 41);
    setKernelBackend('wasm');
    expect(Buffer.from(quantizeOnnxRows(layout.id, x, 41)).equals(Buffer.from(expected))).toBe(true);
  });
});
