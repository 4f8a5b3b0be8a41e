/**
 * WebAssembly port of the WebGPU group-quant row quantizers (src/quant/webgpu-layouts.ts
 * `quantizeRowMlcInt4` — MLC's q4f16_1 / q4f32_1 — and `quantizeRowPolyquantInt8` — our q8f16_pq /
 * q8f32_pq; read their headers for the rules). The TypeScript kernels are the reference: every layout
 * here must give their bytes (test/quant-wasm-webgpu.test.ts).
 *
 * ABI (src/quant/wasm/runtime.ts `wasmWebGpuQuantizer`):
 *   quantize_webgpu(src, qWeight, qScale, rows, k, int8, halfArithmetic, scaleEncoding):
 *     src = rows·k float32 (any k ≥ 1: a last group shorter than 32 takes the scalar path, its missing
 *     positions packed as 0); qWeight = rows·ceil(k/32) groups of 16 bytes (int4: 4 words of 8 nibbles)
 *     or 32 bytes (int8: 8 words of 4 bytes), little-endian, element 0 lowest; qScale = one scale per
 *     group, encoded per `scaleEncoding`: 0 fp16 bits, 1 float32, 2 the tensor cache's bf16 (tvmjs.py's
 *     rule, webgpu-layouts.ts `f32BitsToTensorCacheBf16Bits`). `halfArithmetic` (int4 only: q4f16_1)
 *     rounds every operation to fp16, as MLC computes in the model dtype.
 *
 * Why the f32 operations here equal the reference's double ones: the reference divides in double and
 * rounds to float32 (and then fp16); a quotient of two float32 values rounded to double and then to
 * float32 is the correctly rounded float32 quotient (53 ≥ 2·24 + 2), which is what one WebAssembly f32
 * division gives. Its additions of an fp16 value and 7 are exact in double. fp16 rounding of a float32
 * is the bit rule of float.ts `f32BitsToF16Bits` (round to nearest even, subnormals, overflow to inf).
 *
 * Lane-parallel parts, each order-independent: the fp16 rounding of the inputs, the group's max |w|
 * (maxima of non-negative values, NaN skipped as the reference's `magnitude > maxAbs` skips it: pmax
 * keeps its first operand, the accumulator, against a NaN) and each element's level (the reference's
 * operations in its order, then ties-to-even rounding and the clamp). The scale is scalar. No NaN reaches
 * an output byte: max |w| is never NaN, so neither is a scale, and a NaN level becomes the layout's NaN
 * level (7 for int4, 0 for int8), so NaN payloads do not matter here.
 */
import { f16BitsToF32, f32ToF16Bits, halfMagnitudeInRangeX4, halfMagnitudeX4, horizontalMax, roundNormalToHalfX4 } from './common';

export { heapBase, widen_bf16, widen_f16 } from './common';

const GROUP: i32 = 32;
/** MLC's max_int_value for int4 (levels 0..14, zero at 7) and our int8 bound (levels −127..127). */
const INT4_MAX: f32 = 7;
const INT8_MAX: f32 = 127;
/** bf16_limit of tvmjs.py: float32 max with its low 16 bits cleared. */
const BF16_LIMIT_BITS: u32 = 0x7f7f0000;

// ------------------------------------------------------------------------------------ lane primitives

const SIGN_BIT: u32 = 0x80000000;

/** A float rounded to fp16 and widened back: the reference's `roundToHalf` (scalar, for short groups). */
// @ts-ignore: decorator
@inline
function roundToHalf(value: f32): f32 {
  return f16BitsToF32(f32ToF16Bits(value));
}

/**
 * MLC's int4 level of four elements: `clamp(round(fl(fl(w / scale) + 7)), 0, 14)`, each operation rounded
 * to fp16 when `half` (w already rounded to fp16 by the caller), with ties-to-even rounding (TVM's
 * `nearbyint`) and NaN → 7 (the reference's `clampLevel(…, 7)`). Returns i32 lanes.
 *
 * In fp16 the quotient needs the general rounding, subnormals included, but never overflows: |w| ≤ max |w|
 * and scale = fl16(max |w| / 7), so |w / scale| ≤ 10.5 (the worst case is an fp16-subnormal scale rounded
 * down), or it is NaN (inf / inf) or 0. The sum `q + 7` of that fp16 quotient is then 0, or a multiple of
 * 2^-8 (|q| in [4, 8): fp16's quantum there) or of magnitude ≥ 1 (any other q), below 65520 — never an
 * fp16 subnormal — so the normal-branch rounding is exact for it.
 * pmax(x, 0) / pmin(x, 14) keep a NaN x (their first operand); the select then makes it 7; −0 converts to 0.
 */
// @ts-ignore: decorator
@inline
function int4LevelsX4(value: v128, scale: v128, half: bool): v128 {
  let shifted: v128;
  if (half) {
    const quotient = f32x4.div(value, scale);
    const sign = v128.and(quotient, i32x4.splat(SIGN_BIT));
    const halfQuotient = v128.or(halfMagnitudeInRangeX4(v128.and(quotient, i32x4.splat(0x7fffffff))), sign);
    shifted = f32x4.add(halfQuotient, f32x4.splat(INT4_MAX));
  } else {
    shifted = f32x4.add(f32x4.div(value, scale), f32x4.splat(INT4_MAX));
  }
  const isNumber = f32x4.eq(shifted, shifted);
  if (half) shifted = roundNormalToHalfX4(shifted);
  const clamped = f32x4.pmin(f32x4.pmax(f32x4.nearest(shifted), f32x4.splat(0)), f32x4.splat(2 * INT4_MAX));
  return i32x4.trunc_sat_f32x4_u(v128.bitselect(clamped, f32x4.splat(INT4_MAX), isNumber));
}

/**
 * Our int8 level of four elements: `clamp(round(fl(w / scale)), −127, 127)`, ties to even, NaN → 0
 * (the clamp keeps a NaN, which the saturating conversion turns into 0). Returns i32 lanes.
 */
// @ts-ignore: decorator
@inline
function int8LevelsX4(value: v128, scale: v128): v128 {
  const clamped = f32x4.pmin(f32x4.pmax(f32x4.nearest(f32x4.div(value, scale)), f32x4.splat(-INT8_MAX)), f32x4.splat(INT8_MAX));
  return i32x4.trunc_sat_f32x4_s(clamped);
}

/**
 * Sixteen int4 levels (i32 lanes in element order) as eight i16 lanes `level[2i] | level[2i+1] << 4`:
 * narrowed to bytes, each i16 lane holds `even | odd << 8`, and `lane >> 4` moves the odd level next to
 * the even one. Two of these narrowed to bytes are a group's four words, little-endian, element 0 in the
 * lowest nibble (`pack_weight`).
 */
// @ts-ignore: decorator
@inline
function pairNibbles(a: v128, b: v128, c: v128, d: v128): v128 {
  const bytes = i8x16.narrow_i16x8_u(i16x8.narrow_i32x4_u(a, b), i16x8.narrow_i32x4_u(c, d));
  return v128.or(v128.and(bytes, i16x8.splat(0x0f)), i16x8.shr_u(bytes, 4));
}

/** Sixteen int8 levels (i32 lanes in element order) as sixteen two's-complement bytes. */
// @ts-ignore: decorator
@inline
function packBytes(a: v128, b: v128, c: v128, d: v128): v128 {
  return i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(a, b), i16x8.narrow_i32x4_s(c, d));
}

// ------------------------------------------------------------------------------------------- scales

/**
 * Stores a group's scale at `index` in the chosen encoding and returns the value the levels divide by:
 * the fp16 value for fp16 scales (the reference divides by the stored scale), else the float32 one (a
 * bf16-encoded scale is only how it is written: the levels use the float32 scale, as MLC's do).
 */
// @ts-ignore: decorator
@inline
function storeScale(dstScales: usize, index: usize, scale: f32, scaleEncoding: i32): f32 {
  if (scaleEncoding == 0) {
    const half = f32ToF16Bits(scale);
    store<u16>(dstScales + (index << 1), <u16>half);
    return f16BitsToF32(half);
  }
  if (scaleEncoding == 1) {
    store<f32>(dstScales + (index << 2), scale);
    return scale;
  }
  const bits = reinterpret<u32>(scale);
  const bf16 = (bits & 0x7fffffff) < BF16_LIMIT_BITS ? (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16 : bits >>> 16;
  store<u16>(dstScales + (index << 1), <u16>bf16);
  return scale;
}

// ------------------------------------------------------------------------------------------ groups

/** One full int4 group of 32 floats at `x` into 16 bytes at `y`; its scale at `index`. */
// @ts-ignore: decorator
@inline
function int4Group(x: usize, y: usize, dstScales: usize, index: usize, half: bool, scaleEncoding: i32): void {
  let v0 = v128.load(x);
  let v1 = v128.load(x, 16);
  let v2 = v128.load(x, 32);
  let v3 = v128.load(x, 48);
  let v4 = v128.load(x, 64);
  let v5 = v128.load(x, 80);
  let v6 = v128.load(x, 96);
  let v7 = v128.load(x, 112);
  let m0 = f32x4.abs(v0);
  let m1 = f32x4.abs(v1);
  let m2 = f32x4.abs(v2);
  let m3 = f32x4.abs(v3);
  let m4 = f32x4.abs(v4);
  let m5 = f32x4.abs(v5);
  let m6 = f32x4.abs(v6);
  let m7 = f32x4.abs(v7);
  if (half) {
    // `model.to(float16)`: the weights are fp16 before anything else (magnitudes rounded, signs put back).
    const signBit = i32x4.splat(SIGN_BIT);
    m0 = halfMagnitudeX4(m0);
    m1 = halfMagnitudeX4(m1);
    m2 = halfMagnitudeX4(m2);
    m3 = halfMagnitudeX4(m3);
    m4 = halfMagnitudeX4(m4);
    m5 = halfMagnitudeX4(m5);
    m6 = halfMagnitudeX4(m6);
    m7 = halfMagnitudeX4(m7);
    v0 = v128.or(m0, v128.and(v0, signBit));
    v1 = v128.or(m1, v128.and(v1, signBit));
    v2 = v128.or(m2, v128.and(v2, signBit));
    v3 = v128.or(m3, v128.and(v3, signBit));
    v4 = v128.or(m4, v128.and(v4, signBit));
    v5 = v128.or(m5, v128.and(v5, signBit));
    v6 = v128.or(m6, v128.and(v6, signBit));
    v7 = v128.or(m7, v128.and(v7, signBit));
  }
  const zero = f32x4.splat(0);
  const low = f32x4.pmax(f32x4.pmax(f32x4.pmax(f32x4.pmax(zero, m0), m2), m4), m6);
  const high = f32x4.pmax(f32x4.pmax(f32x4.pmax(f32x4.pmax(zero, m1), m3), m5), m7);
  const maxAbs = horizontalMax(f32x4.pmax(low, high));
  const scale = storeScale(dstScales, index, maxAbs / INT4_MAX, half ? 0 : scaleEncoding);
  if (scale == 0) {
    // The all-zero guard: every level is 7 (zero), whatever w / 0 would give.
    v128.store(y, i32x4.splat(0x77777777));
    return;
  }
  const s = f32x4.splat(scale);
  const first = pairNibbles(int4LevelsX4(v0, s, half), int4LevelsX4(v1, s, half), int4LevelsX4(v2, s, half), int4LevelsX4(v3, s, half));
  const second = pairNibbles(int4LevelsX4(v4, s, half), int4LevelsX4(v5, s, half), int4LevelsX4(v6, s, half), int4LevelsX4(v7, s, half));
  v128.store(y, i8x16.narrow_i16x8_u(first, second));
}

/** One full int8 group of 32 floats at `x` into 32 bytes at `y`; its scale at `index`. */
// @ts-ignore: decorator
@inline
function int8Group(x: usize, y: usize, dstScales: usize, index: usize, scaleEncoding: i32): void {
  const v0 = v128.load(x);
  const v1 = v128.load(x, 16);
  const v2 = v128.load(x, 32);
  const v3 = v128.load(x, 48);
  const v4 = v128.load(x, 64);
  const v5 = v128.load(x, 80);
  const v6 = v128.load(x, 96);
  const v7 = v128.load(x, 112);
  const zero = f32x4.splat(0);
  const low = f32x4.pmax(f32x4.pmax(f32x4.pmax(f32x4.pmax(zero, f32x4.abs(v0)), f32x4.abs(v2)), f32x4.abs(v4)), f32x4.abs(v6));
  const high = f32x4.pmax(f32x4.pmax(f32x4.pmax(f32x4.pmax(zero, f32x4.abs(v1)), f32x4.abs(v3)), f32x4.abs(v5)), f32x4.abs(v7));
  const maxAbs = horizontalMax(f32x4.pmax(low, high));
  const scale = storeScale(dstScales, index, maxAbs / INT8_MAX, scaleEncoding);
  if (scale == 0) {
    v128.store(y, i32x4.splat(0));
    v128.store(y, i32x4.splat(0), 16);
    return;
  }
  const s = f32x4.splat(scale);
  v128.store(y, packBytes(int8LevelsX4(v0, s), int8LevelsX4(v1, s), int8LevelsX4(v2, s), int8LevelsX4(v3, s)));
  v128.store(y, packBytes(int8LevelsX4(v4, s), int8LevelsX4(v5, s), int8LevelsX4(v6, s), int8LevelsX4(v7, s)), 16);
}

/**
 * A last group of `count` < 32 floats (k not a multiple of 32), element by element as the reference
 * writes it; positions past k stay 0 in the packed words.
 */
function shortGroup(x: usize, count: i32, y: usize, dstScales: usize, index: usize, int8: bool, half: bool, scaleEncoding: i32): void {
  let maxAbs: f32 = 0;
  for (let j = 0; j < count; j++) {
    const value = load<f32>(x + (<usize>j << 2));
    const magnitude = Mathf.abs(half ? roundToHalf(value) : value);
    if (magnitude > maxAbs) maxAbs = magnitude;
  }
  const scale = storeScale(dstScales, index, maxAbs / (int8 ? INT8_MAX : INT4_MAX), half ? 0 : scaleEncoding);
  v128.store(y, i32x4.splat(0));
  if (int8) v128.store(y, i32x4.splat(0), 16);
  for (let j = 0; j < count; j++) {
    const value = load<f32>(x + (<usize>j << 2));
    if (int8) {
      let level: i32 = 0;
      if (scale != 0) {
        const rounded = nearest<f32>(value / scale);
        if (rounded < -INT8_MAX) level = -127;
        else if (rounded > INT8_MAX) level = 127;
        else if (rounded == rounded) level = <i32>rounded;
      }
      store<u8>(y + j, <u8>level);
    } else {
      let level: i32 = 7;
      if (scale != 0) {
        const shifted = half ? roundToHalf(roundToHalf(roundToHalf(value) / scale) + INT4_MAX) : value / scale + INT4_MAX;
        const rounded = nearest<f32>(shifted);
        if (rounded < 0) level = 0;
        else if (rounded > 2 * INT4_MAX) level = 14;
        else if (rounded == rounded) level = <i32>rounded;
      }
      const at = y + (j >> 1);
      store<u8>(at, load<u8>(at) | (level << ((j & 1) << 2)));
    }
  }
}

// ------------------------------------------------------------------------------------------- kernel

export function quantize_webgpu(
  src: usize,
  dstWeight: usize,
  dstScales: usize,
  rows: i32,
  k: i32,
  int8: i32,
  halfArithmetic: i32,
  scaleEncoding: i32,
): void {
  const fullGroups = k / GROUP;
  const tail = k % GROUP;
  const groups = fullGroups + (tail > 0 ? 1 : 0);
  const groupBytes: usize = int8 != 0 ? 32 : 16;
  for (let row = 0; row < rows; row++) {
    const rowSrc = src + ((<usize>row * <usize>k) << 2);
    const firstIndex = <usize>row * <usize>groups;
    if (int8 != 0) {
      for (let group = 0; group < fullGroups; group++) {
        const index = firstIndex + group;
        int8Group(rowSrc + (<usize>group << 7), dstWeight + index * groupBytes, dstScales, index, scaleEncoding);
      }
    } else if (halfArithmetic != 0) {
      for (let group = 0; group < fullGroups; group++) {
        const index = firstIndex + group;
        int4Group(rowSrc + (<usize>group << 7), dstWeight + index * groupBytes, dstScales, index, true, scaleEncoding);
      }
    } else {
      for (let group = 0; group < fullGroups; group++) {
        const index = firstIndex + group;
        int4Group(rowSrc + (<usize>group << 7), dstWeight + index * groupBytes, dstScales, index, false, scaleEncoding);
      }
    }
    if (tail > 0) {
      const index = firstIndex + fullGroups;
      shortGroup(rowSrc + (<usize>fullGroups << 7), tail, dstWeight + index * groupBytes, dstScales, index, int8 != 0, int8 == 0 && halfArithmetic != 0, scaleEncoding);
    }
  }
}
