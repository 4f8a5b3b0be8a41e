/**
 * Bit-exact conversions between float32 and the two 16-bit float formats that checkpoints and GGUF files
 * use. Node 20 has no Float16Array (and no Math.f16round), so half floats travel as their raw bits in a
 * Uint16Array.
 *
 * Sources of truth (ggml/src/ggml-impl.h):
 * - f32 → f16: `ggml_compute_fp32_to_fp16`, the software conversion behind GGML_FP32_TO_FP16. IEEE
 *   binary16 round-to-nearest-even, overflow to ±inf, subnormals kept, every NaN becomes 0x7E00 with its
 *   sign kept (the payload is dropped).
 * - f16 → f32: `ggml_compute_fp16_to_fp32`, exact (every half is a float).
 * - f32 → bf16: `ggml_compute_fp32_to_bf16`: NaN → `(bits >> 16) | 64` (forced quiet, sign and top payload
 *   kept); otherwise round-to-nearest-even on the upper 16 bits, no flush of subnormals.
 * - bf16 → f32: the 16 bits become the upper half of the float.
 *
 * The array versions work on the bits through Uint32Array views, so a NaN's payload is never touched by
 * a JS number round trip and nothing is allocated per element (they stream gigabytes).
 */

import { ERROR_CODES, PolyquantError } from '../errors.js';

/** One float's worth of scratch to read a JS number's float32 bits without allocating. */
const scratchFloat = new Float32Array(1);
const scratchBits = new Uint32Array(scratchFloat.buffer);

/** Float32 bits of every half value, indexed by the half's bits. 256 KiB, built once at load. */
const F16_TO_F32_BITS = buildHalfTable();
/** The same table seen as floats, for scalar lookups (`F16_TO_F32_VALUES[bits]`). */
export const F16_TO_F32_VALUES: Float32Array = new Float32Array(F16_TO_F32_BITS.buffer);

function buildHalfTable(): Uint32Array {
  const table = new Uint32Array(65536);
  for (let half = 0; half < 65536; half++) table[half] = halfBitsToFloatBits(half);
  return table;
}

/** Widens half bits to float bits exactly (the same mapping as ggml_compute_fp16_to_fp32). */
function halfBitsToFloatBits(half: number): number {
  const sign = (half & 0x8000) << 16;
  const exponent = (half >>> 10) & 0x1f;
  let mantissa = half & 0x3ff;
  if (exponent === 0x1f) {
    // ±inf, or NaN with its payload moved to the top of the float mantissa (quiet bit included).
    return (sign | 0x7f800000 | (mantissa << 13)) >>> 0;
  }
  if (exponent !== 0) {
    return (sign | ((exponent + 112) << 23) | (mantissa << 13)) >>> 0;
  }
  if (mantissa === 0) return sign >>> 0;
  // Subnormal half: normalise, shifting the mantissa up until its leading one reaches bit 10.
  let floatExponent = 113;
  while ((mantissa & 0x400) === 0) {
    mantissa <<= 1;
    floatExponent--;
  }
  return (sign | (floatExponent << 23) | ((mantissa & 0x3ff) << 13)) >>> 0;
}

/**
 * Rounds float32 bits to half bits: round to nearest, ties to even; ≥ 65520 becomes inf; NaN becomes
 * 0x7E00 with the sign kept, like `ggml_compute_fp32_to_fp16`.
 */
export function f32BitsToF16Bits(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const magnitude = bits & 0x7fffffff;
  if (magnitude >= 0x477ff000) {
    // Inf and NaN, and every finite value that rounds past the largest half (65504).
    if (magnitude > 0x7f800000) return sign | 0x7e00;
    return sign | 0x7c00;
  }
  if (magnitude >= 0x38800000) {
    // Normal half (≥ 2^-14): drop 13 mantissa bits with round-half-even, then rebias the exponent
    // from 127 to 15. A carry out of the mantissa correctly bumps the exponent.
    const rounded = magnitude + 0xfff + ((magnitude >>> 13) & 1);
    return sign | ((rounded - 0x38000000) >>> 13);
  }
  if (magnitude > 0x33000000) {
    // Subnormal half: value = q·2^-24. The float's 24-bit significand times 2^(exponent-126) gives q
    // before rounding; exponent ∈ [102, 112] here, so the shift is 14..24.
    const exponent = magnitude >>> 23;
    const significand = (magnitude & 0x7fffff) | 0x800000;
    const shift = 126 - exponent;
    let quotient = significand >>> shift;
    const remainder = significand & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (remainder > half || (remainder === half && (quotient & 1) === 1)) quotient++;
    return sign | quotient;
  }
  // |x| ≤ 2^-25: rounds to zero (2^-25 itself is a tie that goes to the even zero).
  return sign;
}

/** Float32 bits → bf16 bits, exactly as `ggml_compute_fp32_to_bf16`. */
export function f32BitsToBf16Bits(bits: number): number {
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 64) & 0xffff;
  // Non-NaN values never carry out of 32 bits here (the largest is -inf, 0xff800000).
  return ((bits >>> 0) + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
}

/** The float32 bits of a JS number after rounding it to float32. */
export function f32Bits(value: number): number {
  scratchFloat[0] = value;
  return scratchBits[0]!;
}

/** Rounds a number to float32 and then to half bits. */
export function f32ToF16(value: number): number {
  scratchFloat[0] = value;
  return f32BitsToF16Bits(scratchBits[0]!);
}

/** Half bits → the exact float value. */
export function f16ToF32(bits: number): number {
  return F16_TO_F32_VALUES[bits & 0xffff]!;
}

/** Rounds a number to float32 and then to bf16 bits. */
export function f32ToBf16(value: number): number {
  scratchFloat[0] = value;
  return f32BitsToBf16Bits(scratchBits[0]!);
}

/** bf16 bits → the exact float value. */
export function bf16ToF32(bits: number): number {
  scratchBits[0] = (bits & 0xffff) << 16;
  return scratchFloat[0]!;
}

function bitsView(values: Float32Array): Uint32Array {
  return new Uint32Array(values.buffer, values.byteOffset, values.length);
}

function checkOutputLength(what: string, needed: number, out: { length: number }): void {
  if (out.length < needed) {
    throw new PolyquantError(ERROR_CODES.USAGE, `${what}: the output holds ${out.length} elements but ${needed} are needed`);
  }
}

/** Widens halves to floats. Writes into `out` (at least as long as the input) when given. */
export function f16ToF32Array(halves: Uint16Array, out?: Float32Array): Float32Array {
  const result = out ?? new Float32Array(halves.length);
  checkOutputLength('f16ToF32Array', halves.length, result);
  const resultBits = bitsView(result);
  const table = F16_TO_F32_BITS;
  const count = halves.length;
  for (let i = 0; i < count; i++) resultBits[i] = table[halves[i]!]!;
  return result;
}

/** Rounds floats to halves (RNE, as ggml). Writes into `out` when given. */
export function f32ToF16Array(floats: Float32Array, out?: Uint16Array): Uint16Array {
  const result = out ?? new Uint16Array(floats.length);
  checkOutputLength('f32ToF16Array', floats.length, result);
  const sourceBits = bitsView(floats);
  const count = floats.length;
  for (let i = 0; i < count; i++) result[i] = f32BitsToF16Bits(sourceBits[i]!);
  return result;
}

/** Widens bf16 values to floats. Writes into `out` when given. */
export function bf16ToF32Array(halves: Uint16Array, out?: Float32Array): Float32Array {
  const result = out ?? new Float32Array(halves.length);
  checkOutputLength('bf16ToF32Array', halves.length, result);
  const resultBits = bitsView(result);
  const count = halves.length;
  for (let i = 0; i < count; i++) resultBits[i] = halves[i]! << 16;
  return result;
}

/** Rounds floats to bf16 (RNE, quiet NaN, as ggml). Writes into `out` when given. */
export function f32ToBf16Array(floats: Float32Array, out?: Uint16Array): Uint16Array {
  const result = out ?? new Uint16Array(floats.length);
  checkOutputLength('f32ToBf16Array', floats.length, result);
  const sourceBits = bitsView(floats);
  const count = floats.length;
  for (let i = 0; i < count; i++) result[i] = f32BitsToBf16Bits(sourceBits[i]!);
  return result;
}
