/**
 * The few numeric primitives every ggml kernel port needs, written once (STYLE.md §11).
 *
 * ggml-quants.c computes in C `float`, one IEEE-754 binary32 operation at a time, left to right, with
 * sequential sums and no fused multiply-add (the x86-64 baseline build has no FMA). A JS double
 * operation on two float32 values followed by `Math.fround` gives exactly the float32 result for
 * + − × ÷ and sqrt (double has more than 2·24+2 bits), so the ports wrap every intermediate that C
 * keeps in a `float` in `fround`. Integer operands are exact in float for the small ints involved.
 */

import { F16_TO_F32_VALUES, f32ToF16 } from '../tensor/float.js';

export const fround = Math.fround;

/** `GROUP_MAX_EPS` (ggml-quants.c): a group whose largest |x| is below this quantizes to zeros. */
export const GROUP_MAX_EPS = Math.fround(1e-15);

/** 1.5·2^52: adding and subtracting it rounds a double to an integer, ties to even. */
const DOUBLE_ROUNDING_MAGIC = 6755399441055744;

const nearestScratchFloat = new Float32Array(1);
const nearestScratchBits = new Int32Array(nearestScratchFloat.buffer);

/**
 * ggml's `nearest_int` (ggml-quants.c): adds 12582912.0f (1.5·2^23) in float and reads the mantissa,
 * which rounds to nearest with ties to even — not C `roundf`, not JS `Math.round`. The argument must
 * already be a float32 value (the caller frounds it, as C does by computing it in `float`).
 *
 * Inside |x| ≤ 4194303 (ggml's assert) the double trick gives the same integer. Outside it, and for
 * NaN/inf, ggml's bit trick yields well-defined garbage that callers then clamp; we reproduce the bits
 * so that even degenerate inputs quantize byte-identically.
 */
export function nearestInt(value: number): number {
  if (value <= 4194303 && value >= -4194303) {
    return (value + DOUBLE_ROUNDING_MAGIC - DOUBLE_ROUNDING_MAGIC) | 0;
  }
  return nearestIntBitTrick(value);
}

function nearestIntBitTrick(value: number): number {
  nearestScratchFloat[0] = value + 12582912;
  return (nearestScratchBits[0]! & 0x007fffff) - 0x00400000;
}

/**
 * C `roundf` for |x| < 2^31, as an int: halves go away from zero (JS `Math.round(-2.5)` is −2,
 * `roundf(-2.5f)` is −3). For a float32 argument, x ± 0.5 is exact in double, and truncating it toward
 * zero rounds half away from zero. NaN gives 0, as the x86 conversion to int8_t does.
 */
export function roundHalfAwayFromZero(value: number): number {
  return (value + (value < 0 ? -0.5 : 0.5)) | 0;
}

/**
 * C's conversion of a float to a signed 8-bit integer, `(int8_t)x`: truncation toward zero, then the
 * low 8 bits (x86 cvttss2si semantics for the in-range values the kernels produce; NaN gives 0).
 */
export function truncateToInt8(value: number): number {
  return ((value | 0) << 24) >> 24;
}

/** Reads a little-endian IEEE half at `offset` as its exact float value (GGML_FP16_TO_FP32). */
export function readF16(bytes: Uint8Array, offset: number): number {
  return F16_TO_F32_VALUES[bytes[offset]! | (bytes[offset + 1]! << 8)]!;
}

/** Writes `value` (a float32) as a little-endian half (GGML_FP32_TO_FP16) and returns the half's value. */
export function writeF16(bytes: Uint8Array, offset: number, value: number): number {
  const half = f32ToF16(value);
  bytes[offset] = half & 0xff;
  bytes[offset + 1] = half >>> 8;
  return F16_TO_F32_VALUES[half]!;
}

/** The value a float32 takes after a round trip through fp16 (what the K-quants quantize against). */
export function roundToF16(value: number): number {
  return F16_TO_F32_VALUES[f32ToF16(value)]!;
}

/** `MAX(low, MIN(high, value))` for the integer levels the kernels clamp. */
export function clamp(value: number, low: number, high: number): number {
  return Math.max(low, Math.min(high, value));
}
