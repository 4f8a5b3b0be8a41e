/**
 * Numeric primitives shared by the AssemblyScript ports of ggml's quantizers (compiled to WebAssembly
 * by scripts/build-wasm.ts). The TypeScript ports in src/quant/ are the reference these must equal bit
 * for bit: WebAssembly's f32 arithmetic is IEEE binary32, one rounded operation at a time, exactly as
 * ggml-quants.c computes in C `float` (no FMA contraction: WebAssembly has none).
 *
 * Memory: the host (src/quant/wasm/runtime.ts) owns everything from `__heap_base` up; kernels only read
 * and write the pointers they are given plus their own static scratch (`memory.data`).
 */

/** `GROUP_MAX_EPS` (ggml-quants.c). */
export const GROUP_MAX_EPS: f32 = 1e-15;

/** ggml's `nearest_int`: float + 1.5·2^23, mantissa bits; ties to even. Defined for any input. */
// @ts-ignore: decorator
@inline
export function nearestInt(value: f32): i32 {
  const shifted: f32 = value + <f32>12582912.0;
  return (reinterpret<i32>(shifted) & 0x007fffff) - 0x00400000;
}

/** C `roundf` then conversion to int, for the in-range values kernels produce; NaN gives 0 (as the JS port). */
// @ts-ignore: decorator
@inline
export function roundHalfAwayFromZero(value: f32): i32 {
  // Exact in double, as the TypeScript port: |x| + 0.5 truncated.
  return <i32>(<f64>value + (value < 0 ? -0.5 : 0.5));
}

/**
 * `roundHalfAwayFromZero` on four lanes, with the TypeScript port's integer semantics (ToInt32 of the
 * rounded value: NaN and ±inf give 0, and so does every |x| ≥ 2^31, whose float32 values are multiples
 * of 256 and so wrap to a low byte of 0). Returns i32 lanes; store their low bytes with `lowBytes`.
 * Rounding: trunc, then a step away from zero where the dropped fraction (exact for float32) is ≥ 0.5.
 */
// @ts-ignore: decorator
@inline
export function roundHalfAwayFromZeroX4(value: v128): v128 {
  const truncated = f32x4.trunc(value);
  const fraction = f32x4.sub(value, truncated);
  const away = f32x4.ge(f32x4.abs(fraction), f32x4.splat(0.5));
  const one = v128.or(v128.and(value, i32x4.splat(0x80000000)), i32x4.splat(0x3f800000));
  const rounded = f32x4.add(truncated, v128.and(away, one));
  const inRange = f32x4.lt(f32x4.abs(rounded), f32x4.splat(2147483648.0));
  return v128.and(i32x4.trunc_sat_f32x4_s(rounded), inRange);
}

/** The low bytes of sixteen i32 lanes (C's conversion to int8_t/uint8_t; a Uint8Array store in JS). */
// @ts-ignore: decorator
@inline
export function lowBytes(a: v128, b: v128, c: v128, d: v128): v128 {
  const mask = i32x4.splat(0xff);
  const low = i16x8.narrow_i32x4_u(v128.and(a, mask), v128.and(b, mask));
  const high = i16x8.narrow_i32x4_u(v128.and(c, mask), v128.and(d, mask));
  return i8x16.narrow_i16x8_u(low, high);
}

/** Float32 → half bits, round to nearest even, ≥ 65520 → inf, NaN → 0x7E00 with sign (ggml). */
export function f32ToF16Bits(value: f32): u32 {
  const bits = reinterpret<u32>(value);
  const sign = (bits >>> 16) & 0x8000;
  const magnitude = bits & 0x7fffffff;
  if (magnitude >= 0x477ff000) {
    if (magnitude > 0x7f800000) return sign | 0x7e00;
    return sign | 0x7c00;
  }
  if (magnitude >= 0x38800000) {
    const rounded = magnitude + 0xfff + ((magnitude >>> 13) & 1);
    return sign | ((rounded - 0x38000000) >>> 13);
  }
  if (magnitude > 0x33000000) {
    const exponent = magnitude >>> 23;
    const significand = (magnitude & 0x7fffff) | 0x800000;
    const shift = 126 - exponent;
    let quotient = significand >>> shift;
    const remainder = significand & ((<u32>1 << shift) - 1);
    const half = <u32>1 << (shift - 1);
    if (remainder > half || (remainder == half && (quotient & 1) == 1)) quotient++;
    return sign | quotient;
  }
  return sign;
}

/** Half bits → the exact float value (GGML_FP16_TO_FP32). */
export function f16BitsToF32(half: u32): f32 {
  const sign = (half & 0x8000) << 16;
  const exponent = (half >>> 10) & 0x1f;
  const mantissa = half & 0x3ff;
  if (exponent == 0x1f) return reinterpret<f32>(sign | 0x7f800000 | (mantissa << 13));
  if (exponent != 0) return reinterpret<f32>(sign | ((exponent + 112) << 23) | (mantissa << 13));
  // Zero or subnormal: mantissa · 2^-24, exact in float.
  const magnitude: f32 = <f32>mantissa * <f32>5.9604644775390625e-8;
  return sign != 0 ? -magnitude : magnitude;
}

/** Writes `value` as a little-endian half at `ptr`; returns the half's exact value. */
// @ts-ignore: decorator
@inline
export function storeF16(ptr: usize, value: f32): f32 {
  const half = f32ToF16Bits(value);
  store<u16>(ptr, <u16>half);
  return f16BitsToF32(half);
}

/** Reads a little-endian half at `ptr` as its float value. */
// @ts-ignore: decorator
@inline
export function loadF16(ptr: usize): f32 {
  return f16BitsToF32(<u32>load<u16>(ptr));
}

/** 65520: the smallest float32 magnitude that fp16 rounds to inf (65504 + half an ulp, a tie to even). */
const HALF_OVERFLOW: f32 = 65520;

/**
 * Each lane's magnitude rounded to fp16 and widened back, for magnitudes below 65520 (and ±inf and NaN,
 * which come back as they are): float.ts `f32BitsToF16Bits` then the exact widening, by float arithmetic.
 * fp16's quantum at |x| is 2^(e − 10) for |x| in [2^e, 2^(e+1)), e ≥ −14, and 2^-24 below 2^-14 (the
 * subnormals); it is the float32 ulp of 2^(e+13), so `(|x| + 2^(e+13)) − 2^(e+13)` rounds |x| to it with
 * ties to even (the sum's last bit is the quotient's parity), and the subtraction is exact. A carry up to
 * 2^(e+1) is the right answer. The magic number is built from |x|'s exponent bits, clamped below at 2^-14.
 */
// @ts-ignore: decorator
@inline
export function halfMagnitudeInRangeX4(magnitude: v128): v128 {
  const exponent = i32x4.max_s(v128.and(magnitude, i32x4.splat(0x7f800000)), i32x4.splat(0x38800000));
  const magic = i32x4.add(exponent, i32x4.splat(13 << 23));
  return f32x4.sub(f32x4.add(magnitude, magic), magic);
}

/** halfMagnitudeInRangeX4 for any magnitude: from 65520 up (past the largest half) it is inf; NaN stays NaN. */
// @ts-ignore: decorator
@inline
export function halfMagnitudeX4(magnitude: v128): v128 {
  const overflow = f32x4.ge(magnitude, f32x4.splat(HALF_OVERFLOW));
  return v128.bitselect(f32x4.splat(Infinity), halfMagnitudeInRangeX4(magnitude), overflow);
}

/**
 * fp16 rounding of lanes that are ±0, ±inf, NaN or of magnitude in [2^-14, 65520) — no fp16 subnormal, no
 * overflow: the normal branch of float.ts `f32BitsToF16Bits` on the bits (drop 13 mantissa bits with
 * round-half-even; a carry bumps the exponent; the sign bit is never reached). ±0 and ±inf come back as
 * they are; a NaN's result is unspecified (callers test NaN before rounding).
 */
// @ts-ignore: decorator
@inline
export function roundNormalToHalfX4(value: v128): v128 {
  const rounded = i32x4.add(i32x4.add(value, i32x4.splat(0xfff)), v128.and(i32x4.shr_u(value, 13), i32x4.splat(1)));
  return v128.and(rounded, i32x4.splat(0xffffe000));
}

/**
 * C's running `amax = MAX(amax, fabsf(x[j]))` over n floats at ptr (n a multiple of 4). Lane-parallel
 * when the group has no NaN (the maximum is then order-independent); with a NaN, the sequential loop,
 * whose result depends on where the NaN sits exactly as in C.
 */
export function absMax(ptr: usize, n: i32): f32 {
  let m = f32x4.splat(0);
  let nan = i32x4.splat(0);
  for (let i = 0; i < n; i += 4) {
    const v = v128.load(ptr + (<usize>i << 2));
    m = f32x4.max(m, f32x4.abs(v));
    nan = v128.or(nan, f32x4.ne(v, v));
  }
  if (v128.any_true(nan)) return absMaxSequential(ptr, n);
  const a = f32x4.extract_lane(m, 0);
  const b = f32x4.extract_lane(m, 1);
  const c = f32x4.extract_lane(m, 2);
  const d = f32x4.extract_lane(m, 3);
  const ab = a > b ? a : b;
  const cd = c > d ? c : d;
  return ab > cd ? ab : cd;
}

function absMaxSequential(ptr: usize, n: i32): f32 {
  let amax: f32 = 0;
  for (let j = 0; j < n; j++) {
    const magnitude = Mathf.abs(load<f32>(ptr + (<usize>j << 2)));
    amax = amax > magnitude ? amax : magnitude;
  }
  return amax;
}

/** The largest lane of four non-NaN floats (order-independent: no NaN, and ties are equal bits or ±0). */
// @ts-ignore: decorator
@inline
export function horizontalMax(m: v128): f32 {
  const a = f32x4.pmax(m, v128.shuffle<f32>(m, m, 2, 3, 0, 1));
  const b = f32x4.pmax(a, v128.shuffle<f32>(a, a, 1, 0, 3, 2));
  return f32x4.extract_lane(b, 0);
}

/** The smallest lane of four non-NaN floats (see horizontalMax). */
// @ts-ignore: decorator
@inline
export function horizontalMin(m: v128): f32 {
  const a = f32x4.pmin(m, v128.shuffle<f32>(m, m, 2, 3, 0, 1));
  const b = f32x4.pmin(a, v128.shuffle<f32>(a, a, 1, 0, 3, 2));
  return f32x4.extract_lane(b, 0);
}

/** First byte the host may use: everything below holds the module's static data and scratch. */
export function heapBase(): usize {
  return __heap_base;
}

/**
 * Widens `count` little-endian halves at `src` to float32 at `dst` (count a multiple of 8 or not), exactly
 * as f16BitsToF32 (and src/tensor/float.ts's table): the magnitude's bits shifted into place are a float32
 * 2^-112 times the half's value — subnormal halves become float32 subnormals, which WebAssembly keeps —
 * so one multiplication by 2^112 (exact) gives the value; magnitudes that were inf/NaN come out ≥ 65536
 * and get the all-ones exponent with their payload intact; the sign goes back last.
 */
export function widen_f16(src: usize, dst: usize, count: i32): void {
  const magic = f32x4.splat(reinterpret<f32>(<u32>(112 + 127) << 23));
  const big = f32x4.splat(65536);
  const infBits = i32x4.splat(0x7f800000);
  const low = i32x4.splat(0x7fff);
  const signBit = i32x4.splat(0x8000);
  let i = 0;
  for (; i + 8 <= count; i += 8) {
    const halves = v128.load(src + (<usize>i << 1));
    for (let part = 0; part < 2; part++) {
      const h = part == 0 ? i32x4.extend_low_i16x8_u(halves) : i32x4.extend_high_i16x8_u(halves);
      let f = f32x4.mul(i32x4.shl(v128.and(h, low), 13), magic);
      f = v128.or(f, v128.and(f32x4.ge(f, big), infBits));
      f = v128.or(f, i32x4.shl(v128.and(h, signBit), 16));
      v128.store(dst + (<usize>(i + part * 4) << 2), f);
    }
  }
  for (; i < count; i++) store<f32>(dst + (<usize>i << 2), f16BitsToF32(<u32>load<u16>(src + (<usize>i << 1))));
}

/** Widens `count` little-endian bf16 values at `src` to float32 at `dst`: the bits, shifted up 16. */
export function widen_bf16(src: usize, dst: usize, count: i32): void {
  let i = 0;
  for (; i + 8 <= count; i += 8) {
    const halves = v128.load(src + (<usize>i << 1));
    v128.store(dst + (<usize>i << 2), i32x4.shl(i32x4.extend_low_i16x8_u(halves), 16));
    v128.store(dst + (<usize>(i + 4) << 2), i32x4.shl(i32x4.extend_high_i16x8_u(halves), 16));
  }
  for (; i < count; i++) store<u32>(dst + (<usize>i << 2), <u32>load<u16>(src + (<usize>i << 1)) << 16);
}
