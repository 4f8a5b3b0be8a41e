/**
 * WebAssembly ports of the 32-element legacy quantizers and of the F16/BF16 row conversions
 * (src/quant/legacy.ts and src/quant/float-types.ts are the reference; every kernel here must give the
 * same bytes). Exported kernels follow one ABI (src/quant/wasm/runtime.ts):
 *   quantize_<TYPE>(src, dst, rows, n, importance): src = rows·n float32, dst = rows·(n/32) blocks,
 *     importance = n float32 per column or 0 for none;
 *   dequantize_<TYPE>(src, dst, rows, n).
 *
 * The paths without importance weights are lane-parallel (SIMD): every per-element float operation is
 * the same IEEE operation as the reference's, and the only reductions are maxima/minima, taken in an
 * order-independent way (NaN skipped as C's `<`/`>` tests skip it; a signed-zero result is recomputed
 * sequentially, since which zero wins depends on the order). The importance-weighted paths run the
 * scale searches as C writes them (test/helpers/quant-plain.ts), per-element work in SIMD and every
 * float sum sequential in C's order; make_qx_quants runs four trials side by side, one per lane, and
 * make_qkx3_quants skips trials that provably cannot win.
 */
import { absMax, f16BitsToF32, f32ToF16Bits, GROUP_MAX_EPS, horizontalMax, horizontalMin, loadF16, lowBytes, roundHalfAwayFromZeroX4, storeF16 } from './common';

export { heapBase, widen_bf16, widen_f16 } from './common';

const QK: i32 = 32;
const FLT_MAX: f32 = 3.4028234663852886e38;

// ----------------------------------------------------------------------------------- NaN payloads
//
// A NaN's payload can decide bytes: nearest_int of a NaN reads its mantissa, and fp16 keeps its sign.
// An operation on two NaNs returns one of them, quieted; which one, WebAssembly leaves open, and in the
// JavaScript reference it depends on V8's code. Measured on x64: V8's interpreter returns the second
// operand's NaN for + and ×, the first's for − and ÷, and so does its optimized code for the reference's
// accumulations `sum = fround(sum + term)`; V8's f32x4 operations return the first operand's. So where
// two NaNs can meet and the payload can reach the output, the lane code swaps the operands of + and ×,
// and scalar code (whose choice differs between V8's WebAssembly tiers) uses these helpers.

// @ts-ignore: decorator
@inline
function quiet(value: f32): f32 {
  return reinterpret<f32>(reinterpret<u32>(value) | 0x00400000);
}

/** JavaScript's `a + b` on float32 values, NaN payload included. */
// @ts-ignore: decorator
@inline
function addJs(a: f32, b: f32): f32 {
  return b != b ? quiet(b) : a + b;
}

// @ts-ignore: decorator
@inline
function mulJs(a: f32, b: f32): f32 {
  return b != b ? quiet(b) : a * b;
}

// @ts-ignore: decorator
@inline
function subJs(a: f32, b: f32): f32 {
  return a != a ? quiet(a) : a - b;
}

// @ts-ignore: decorator
@inline
function divJs(a: f32, b: f32): f32 {
  return a != a ? quiet(a) : a / b;
}

// ----------------------------------------------------------------------------------- lane primitives

/**
 * The reference's `truncateToInt8` on four lanes: JS ToInt32 (truncation; NaN, ±inf → 0; for |x| ≥ 2^31
 * the float32 values are multiples of 256, so their low byte is 0), then the low byte sign-extended.
 */
// @ts-ignore: decorator
@inline
function truncateToInt8X4(value: v128): v128 {
  const inRange = f32x4.lt(f32x4.abs(value), f32x4.splat(2147483648.0));
  const truncated = v128.and(i32x4.trunc_sat_f32x4_s(value), inRange);
  return i32x4.shr_s(i32x4.shl(truncated, 24), 24);
}

/** Sixteen i32 lanes in [−128, 127] as bytes (exact: the narrowing never saturates). */
// @ts-ignore: decorator
@inline
function packSignedBytes(a: v128, b: v128, c: v128, d: v128): v128 {
  return i8x16.narrow_i16x8_s(i16x8.narrow_i32x4_s(a, b), i16x8.narrow_i32x4_s(c, d));
}

/** ggml's `nearest_int` on four lanes (float add of 1.5·2^23, mantissa bits): exactly `nearestInt`. */
// @ts-ignore: decorator
@inline
function nearestIntX4(value: v128): v128 {
  const shifted = f32x4.add(value, f32x4.splat(12582912.0));
  return i32x4.sub(v128.and(shifted, i32x4.splat(0x007fffff)), i32x4.splat(0x00400000));
}

/**
 * The signed value of the first element of the 32 at `x` with the largest magnitude, as
 * quantize_row_q4_0_ref / q5_0_ref find it (`if (amax < |v|) { amax = |v|; max = v; }` from 0): NaN never
 * wins, so the largest magnitude is an order-independent maximum with NaN skipped (pmax keeps the
 * accumulator when the new lane is NaN), and the first element reaching it is found by a bitmask.
 */
// @ts-ignore: decorator
@inline
function firstLargestMagnitude(x: usize): f32 {
  const a0 = f32x4.abs(v128.load(x));
  const a1 = f32x4.abs(v128.load(x, 16));
  const a2 = f32x4.abs(v128.load(x, 32));
  const a3 = f32x4.abs(v128.load(x, 48));
  const a4 = f32x4.abs(v128.load(x, 64));
  const a5 = f32x4.abs(v128.load(x, 80));
  const a6 = f32x4.abs(v128.load(x, 96));
  const a7 = f32x4.abs(v128.load(x, 112));
  let m = f32x4.pmax(f32x4.splat(0), a0);
  m = f32x4.pmax(m, a1);
  m = f32x4.pmax(m, a2);
  m = f32x4.pmax(m, a3);
  m = f32x4.pmax(m, a4);
  m = f32x4.pmax(m, a5);
  m = f32x4.pmax(m, a6);
  m = f32x4.pmax(m, a7);
  const amax = horizontalMax(m);
  if (amax == 0) return 0;
  const target = f32x4.splat(amax);
  const mask =
    i32x4.bitmask(f32x4.eq(a0, target)) |
    (i32x4.bitmask(f32x4.eq(a1, target)) << 4) |
    (i32x4.bitmask(f32x4.eq(a2, target)) << 8) |
    (i32x4.bitmask(f32x4.eq(a3, target)) << 12) |
    (i32x4.bitmask(f32x4.eq(a4, target)) << 16) |
    (i32x4.bitmask(f32x4.eq(a5, target)) << 20) |
    (i32x4.bitmask(f32x4.eq(a6, target)) << 24) |
    (i32x4.bitmask(f32x4.eq(a7, target)) << 28);
  return load<f32>(x + (<usize>ctz(mask) << 2));
}

/** Scratch of the block minimum and maximum (`blockMinMax`). */
let blockMin: f32 = 0;
let blockMax: f32 = 0;

/**
 * `min`/`max` of the 32 floats at `x` from ±FLT_MAX with `if (v < min) …; if (v > max) …` (q4_1/q5_1
 * refs): NaN is skipped (pmin/pmax keep the accumulator), so the extremes are order-independent unless
 * one is a zero, whose sign depends on which zero came first: then the sequential loop.
 */
// @ts-ignore: decorator
@inline
function blockMinMax(x: usize): void {
  let low = f32x4.splat(FLT_MAX);
  let high = f32x4.splat(-FLT_MAX);
  for (let k = 0; k < 128; k += 16) {
    const v = v128.load(x + k);
    low = f32x4.pmin(low, v);
    high = f32x4.pmax(high, v);
  }
  let min = horizontalMin(low);
  let max = horizontalMax(high);
  if (min == 0 || max == 0) {
    min = FLT_MAX;
    max = -FLT_MAX;
    for (let j = 0; j < QK; j++) {
      const value = load<f32>(x + (<usize>j << 2));
      if (value < min) min = value;
      if (value > max) max = value;
    }
  }
  blockMin = min;
  blockMax = max;
}

/**
 * Stores 32 five-bit levels (bytes: `low` = elements 0–15, `high` = 16–31) as `qh` (u32 LE, bit j =
 * bit 4 of element j) at `y` and the `qs` nibbles at y + 4 (the reference's `packFiveBit`).
 */
// @ts-ignore: decorator
@inline
function storeFiveBit(y: usize, low: v128, high: v128): void {
  const qh = (i8x16.bitmask(i8x16.shl(low, 3)) & 0xffff) | (i8x16.bitmask(i8x16.shl(high, 3)) << 16);
  store<u32>(y, qh);
  v128.store(y + 4, v128.or(v128.and(low, i8x16.splat(0x0f)), i8x16.shl(high, 4)));
}

/** Writes the 16 signed bytes of `q` times `d` as floats at `y` (int → float exact, one f32 mul). */
// @ts-ignore: decorator
@inline
function storeScaledSigned(y: usize, q: v128, d: v128): void {
  const low = i16x8.extend_low_i8x16_s(q);
  const high = i16x8.extend_high_i8x16_s(q);
  v128.store(y, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(low)), d));
  v128.store(y, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(low)), d), 16);
  v128.store(y, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_s(high)), d), 32);
  v128.store(y, f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_s(high)), d), 48);
}

/**
 * Writes the 16 unsigned bytes of `q` as fl(q·d) + m at `y`. When d and m are both NaN, the reference's
 * `fround(q * d) + m` gives m's NaN in V8's interpreter and the product's once optimized (measured on
 * x64): this gives the product's, the steady state. No choice matches both.
 */
// @ts-ignore: decorator
@inline
function storeScaledOffset(y: usize, q: v128, d: v128, m: v128): void {
  const low = i16x8.extend_low_i8x16_u(q);
  const high = i16x8.extend_high_i8x16_u(q);
  v128.store(y, f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_u(low)), d), m));
  v128.store(y, f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_u(low)), d), m), 16);
  v128.store(y, f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_low_i16x8_u(high)), d), m), 32);
  v128.store(y, f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(i32x4.extend_high_i16x8_u(high)), d), m), 48);
}

/** Byte j of the result is 0x10 where bit j of the 16 bits `bits` is set (the 5th bit of a level). */
// @ts-ignore: decorator
@inline
function fifthBits(bits: u32): v128 {
  const splat = i16x8.splat(<i16>bits);
  const spread = v128.shuffle<u8>(splat, splat, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  const select = i8x16(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
  return v128.and(i8x16.eq(v128.and(spread, select), select), i8x16.splat(0x10));
}

// ---------------------------------------------------------------------------------------------- Q8_0

/** `quantize_row_q8_0_ref`; ggml ignores importance weights for Q8_0. */
export function quantize_Q8_0(src: usize, dst: usize, rows: i32, n: i32, importance: usize): void {
  const blocks = (rows * n) / QK;
  for (let block = 0; block < blocks; block++) {
    const x = src + <usize>block * QK * 4;
    const y = dst + <usize>block * 34;
    const amax = absMax(x, QK);
    const d: f32 = amax / 127;
    const inverse: f32 = d != 0 ? <f32>1 / d : 0;
    storeF16(y, d);
    const scale = f32x4.splat(inverse);
    for (let j = 0; j < QK; j += 16) {
      const p = x + (<usize>j << 2);
      const a = roundHalfAwayFromZeroX4(f32x4.mul(v128.load(p), scale));
      const b = roundHalfAwayFromZeroX4(f32x4.mul(v128.load(p, 16), scale));
      const c = roundHalfAwayFromZeroX4(f32x4.mul(v128.load(p, 32), scale));
      const e = roundHalfAwayFromZeroX4(f32x4.mul(v128.load(p, 48), scale));
      v128.store(y + 2 + j, lowBytes(a, b, c, e));
    }
  }
}

export function dequantize_Q8_0(src: usize, dst: usize, rows: i32, n: i32): void {
  const blocks = (rows * n) / QK;
  for (let block = 0; block < blocks; block++) {
    const x = src + <usize>block * 34;
    const y = dst + <usize>block * QK * 4;
    const d = f32x4.splat(loadF16(x));
    storeScaledSigned(y, v128.load(x + 2), d);
    storeScaledSigned(y + 64, v128.load(x + 18), d);
  }
}

// --------------------------------------------------------------------- symmetric 4/5-bit (Q4_0, Q5_0)

/**
 * `MIN(top, (int8_t)(x·id + offset))` for the 16 elements at `p`, as bytes: the levels of
 * quantize_row_q4_0_ref (offset 8.5, top 15) and q5_0_ref (16.5, 31), with the reference's integer
 * semantics (truncateToInt8, then a signed Math.min).
 */
// @ts-ignore: decorator
@inline
function symmetricLevels(p: usize, scale: v128, offset: v128, top: v128): v128 {
  const a = i32x4.min_s(truncateToInt8X4(f32x4.add(f32x4.mul(v128.load(p), scale), offset)), top);
  const b = i32x4.min_s(truncateToInt8X4(f32x4.add(f32x4.mul(v128.load(p, 16), scale), offset)), top);
  const c = i32x4.min_s(truncateToInt8X4(f32x4.add(f32x4.mul(v128.load(p, 32), scale), offset)), top);
  const d = i32x4.min_s(truncateToInt8X4(f32x4.add(f32x4.mul(v128.load(p, 48), scale), offset)), top);
  return packSignedBytes(a, b, c, d);
}

/** `quantize_row_q4_0_ref` (block: d f16 @0, qs u8[16] @2, element j low nibble of qs[j], j+16 high). */
export function quantize_Q4_0(src: usize, dst: usize, rows: i32, n: i32, importance: usize): void {
  if (importance != 0) {
    quantizeWeighted(src, dst, rows, n, importance, WEIGHTED_Q4_0);
    return;
  }
  const blocks = (rows * n) / QK;
  const offset = f32x4.splat(8.5);
  const top = i32x4.splat(15);
  for (let block = 0; block < blocks; block++) {
    const x = src + <usize>block * QK * 4;
    const y = dst + <usize>block * 18;
    const max = firstLargestMagnitude(x);
    const d: f32 = max / <f32>-8;
    const inverse: f32 = d != 0 ? <f32>1 / d : 0;
    storeF16(y, d);
    const scale = f32x4.splat(inverse);
    const low = symmetricLevels(x, scale, offset, top);
    const high = symmetricLevels(x + 64, scale, offset, top);
    // (low & 0xff) | ((high & 0xff) << 4), stored as a byte.
    v128.store(y + 2, v128.or(low, i8x16.shl(high, 4)));
  }
}

export function dequantize_Q4_0(src: usize, dst: usize, rows: i32, n: i32): void {
  const blocks = (rows * n) / QK;
  const eight = i8x16.splat(8);
  const nibble = i8x16.splat(0x0f);
  for (let block = 0; block < blocks; block++) {
    const x = src + <usize>block * 18;
    const y = dst + <usize>block * QK * 4;
    const d = f32x4.splat(loadF16(x));
    const bytes = v128.load(x + 2);
    storeScaledSigned(y, i8x16.sub(v128.and(bytes, nibble), eight), d);
    storeScaledSigned(y + 64, i8x16.sub(i8x16.shr_u(bytes, 4), eight), d);
  }
}

/** `quantize_row_q5_0_ref` (block: d f16 @0, qh u32 @2, qs u8[16] @6). */
export function quantize_Q5_0(src: usize, dst: usize, rows: i32, n: i32, importance: usize): void {
  if (importance != 0) {
    quantizeWeighted(src, dst, rows, n, importance, WEIGHTED_Q5_0);
    return;
  }
  const blocks = (rows * n) / QK;
  const offset = f32x4.splat(16.5);
  const top = i32x4.splat(31);
  for (let block = 0; block < blocks; block++) {
    const x = src + <usize>block * QK * 4;
    const y = dst + <usize>block * 22;
    const max = firstLargestMagnitude(x);
    const d: f32 = max / <f32>-16;
    const inverse: f32 = d != 0 ? <f32>1 / d : 0;
    storeF16(y, d);
    const scale = f32x4.splat(inverse);
    storeFiveBit(y + 2, symmetricLevels(x, scale, offset, top), symmetricLevels(x + 64, scale, offset, top));
  }
}

export function dequantize_Q5_0(src: usize, dst: usize, rows: i32, n: i32): void {
  const blocks = (rows * n) / QK;
  const sixteen = i8x16.splat(16);
  const nibble = i8x16.splat(0x0f);
  for (let block = 0; block < blocks; block++) {
    const x = src + <usize>block * 22;
    const y = dst + <usize>block * QK * 4;
    const d = f32x4.splat(loadF16(x));
    const qh = load<u32>(x + 2);
    const bytes = v128.load(x + 6);
    const low = v128.or(v128.and(bytes, nibble), fifthBits(qh & 0xffff));
    const high = v128.or(i8x16.shr_u(bytes, 4), fifthBits(qh >>> 16));
    storeScaledSigned(y, i8x16.sub(low, sixteen), d);
    storeScaledSigned(y + 64, i8x16.sub(high, sixteen), d);
  }
}

// -------------------------------------------------------------------- asymmetric 4/5-bit (Q4_1, Q5_1)

/** `(int8_t)((x − min)·id + 0.5)` for the 16 elements at `p` as bytes; clamped to `top` when `clamp`. */
// @ts-ignore: decorator
@inline
function offsetLevels(p: usize, min: v128, scale: v128, clamp: bool, top: v128): v128 {
  const half = f32x4.splat(0.5);
  let a = truncateToInt8X4(f32x4.add(f32x4.mul(f32x4.sub(v128.load(p), min), scale), half));
  let b = truncateToInt8X4(f32x4.add(f32x4.mul(f32x4.sub(v128.load(p, 16), min), scale), half));
  let c = truncateToInt8X4(f32x4.add(f32x4.mul(f32x4.sub(v128.load(p, 32), min), scale), half));
  let d = truncateToInt8X4(f32x4.add(f32x4.mul(f32x4.sub(v128.load(p, 48), min), scale), half));
  if (clamp) {
    a = i32x4.min_s(a, top);
    b = i32x4.min_s(b, top);
    c = i32x4.min_s(c, top);
    d = i32x4.min_s(d, top);
  }
  return packSignedBytes(a, b, c, d);
}

/** `quantize_row_q4_1_ref` (block: d f16 @0, m f16 @2, qs u8[16] @4). */
export function quantize_Q4_1(src: usize, dst: usize, rows: i32, n: i32, importance: usize): void {
  if (importance != 0) {
    quantizeWeighted(src, dst, rows, n, importance, WEIGHTED_Q4_1);
    return;
  }
  const blocks = (rows * n) / QK;
  const top = i32x4.splat(15);
  for (let block = 0; block < blocks; block++) {
    const x = src + <usize>block * QK * 4;
    const y = dst + <usize>block * 20;
    blockMinMax(x);
    const min = blockMin;
    const d: f32 = (blockMax - min) / <f32>15;
    const inverse: f32 = d != 0 ? <f32>1 / d : 0;
    storeF16(y, d);
    storeF16(y + 2, min);
    const shift = f32x4.splat(min);
    const scale = f32x4.splat(inverse);
    const low = offsetLevels(x, shift, scale, true, top);
    const high = offsetLevels(x + 64, shift, scale, true, top);
    v128.store(y + 4, v128.or(low, i8x16.shl(high, 4)));
  }
}

export function dequantize_Q4_1(src: usize, dst: usize, rows: i32, n: i32): void {
  const blocks = (rows * n) / QK;
  const nibble = i8x16.splat(0x0f);
  for (let block = 0; block < blocks; block++) {
    const x = src + <usize>block * 20;
    const y = dst + <usize>block * QK * 4;
    const d = f32x4.splat(loadF16(x));
    const m = f32x4.splat(loadF16(x + 2));
    const bytes = v128.load(x + 4);
    storeScaledOffset(y, v128.and(bytes, nibble), d, m);
    storeScaledOffset(y + 64, i8x16.shr_u(bytes, 4), d, m);
  }
}

/** `quantize_row_q5_1_ref` (block: d f16 @0, m f16 @2, qh u32 @4, qs u8[16] @8); levels unclamped. */
export function quantize_Q5_1(src: usize, dst: usize, rows: i32, n: i32, importance: usize): void {
  if (importance != 0) {
    quantizeWeighted(src, dst, rows, n, importance, WEIGHTED_Q5_1);
    return;
  }
  const blocks = (rows * n) / QK;
  const top = i32x4.splat(31);
  for (let block = 0; block < blocks; block++) {
    const x = src + <usize>block * QK * 4;
    const y = dst + <usize>block * 24;
    blockMinMax(x);
    const min = blockMin;
    const d: f32 = (blockMax - min) / <f32>31;
    const inverse: f32 = d != 0 ? <f32>1 / d : 0;
    storeF16(y, d);
    storeF16(y + 2, min);
    const shift = f32x4.splat(min);
    const scale = f32x4.splat(inverse);
    storeFiveBit(y + 4, offsetLevels(x, shift, scale, false, top), offsetLevels(x + 64, shift, scale, false, top));
  }
}

export function dequantize_Q5_1(src: usize, dst: usize, rows: i32, n: i32): void {
  const blocks = (rows * n) / QK;
  const nibble = i8x16.splat(0x0f);
  for (let block = 0; block < blocks; block++) {
    const x = src + <usize>block * 24;
    const y = dst + <usize>block * QK * 4;
    const d = f32x4.splat(loadF16(x));
    const m = f32x4.splat(loadF16(x + 2));
    const qh = load<u32>(x + 4);
    const bytes = v128.load(x + 8);
    storeScaledOffset(y, v128.or(v128.and(bytes, nibble), fifthBits(qh & 0xffff)), d, m);
    storeScaledOffset(y + 64, v128.or(i8x16.shr_u(bytes, 4), fifthBits(qh >>> 16)), d, m);
  }
}

// ------------------------------------------------------------------------ importance-weighted paths

const WEIGHTED_Q4_0: i32 = 0;
const WEIGHTED_Q4_1: i32 = 1;
const WEIGHTED_Q5_0: i32 = 2;
const WEIGHTED_Q5_1: i32 = 3;

/** Per-block scratch of the scale searches, 16-aligned. */
const WEIGHTS = memory.data(128, 16);
/** fl(w·x) per element: the same in every trial of make_qx_quants. */
const WEIGHTED_X = memory.data(128, 16);
/** fl(x − min) for the current min of make_qkx3_quants. */
const SHIFTED = memory.data(128, 16);
/** Best levels so far (i32 lanes). */
const LEVELS = memory.data(128, 16);
/** make_qkx3_quants: the current trial's levels (i32 lanes, overwriting the previous trial's) and the
 * per-element terms of its sequential sums. */
const TRIAL = memory.data(128, 16);
const TERMS_A = memory.data(128, 16);
const TERMS_B = memory.data(128, 16);
const TERMS_C = memory.data(128, 16);
/** make_qx_quants: the 19 inverse scales (the initial one, then steps −9…9 without 0) and sums, padded to 20. */
const QX_INVERSE_SCALES = memory.data(80, 16);
const QX_SUMS_LX = memory.data(80, 16);
const QX_SUMS_L2 = memory.data(80, 16);

/** make_qkx3_quants's `*the_min` of the last call. */
let theMin: f32 = 0;

/**
 * The legacy `quantize_row_q*_impl` with weights: σ² = Σx²/n over the row (sequential), per block
 * weight[j] = qw[j]·sqrtf(σ² + x[j]²), then make_qx_quants (Q4_0: nmax 8, Q5_0: 16) or make_qkx3_quants
 * (Q4_1: 15, Q5_1: 31; rmin −0.9, rdelta 0.05, 36 steps).
 */
function quantizeWeighted(src: usize, dst: usize, rows: i32, n: i32, importance: usize, kind: i32): void {
  const blockBytes: usize = kind == WEIGHTED_Q4_0 ? 18 : kind == WEIGHTED_Q4_1 ? 20 : kind == WEIGHTED_Q5_0 ? 22 : 24;
  const blocksPerRow = n / QK;
  for (let row = 0; row < rows; row++) {
    const rowSrc = src + <usize>row * <usize>n * 4;
    let sumSquares: f32 = 0;
    for (let j = 0; j < n; j++) {
      const value = load<f32>(rowSrc + (<usize>j << 2));
      sumSquares = addJs(sumSquares, value * value);
    }
    const sigma2: f32 = sumSquares / <f32>n;
    const sigma = f32x4.splat(sigma2);
    for (let block = 0; block < blocksPerRow; block++) {
      const x = rowSrc + <usize>block * QK * 4;
      const qw = importance + <usize>block * QK * 4;
      const y = dst + (<usize>row * <usize>blocksPerRow + <usize>block) * blockBytes;
      for (let k = 0; k < 128; k += 16) {
        const value = v128.load(x + k);
        // qw·sqrtf(σ² + x²), operands swapped (see "NaN payloads").
        const root = f32x4.sqrt(f32x4.add(f32x4.mul(value, value), sigma));
        v128.store(WEIGHTS + k, f32x4.mul(root, v128.load(qw + k)));
      }
      if (kind == WEIGHTED_Q4_0 || kind == WEIGHTED_Q5_0) {
        const nmax = kind == WEIGHTED_Q4_0 ? 8 : 16;
        storeF16(y, makeQxQuants(x, nmax));
        if (kind == WEIGHTED_Q4_0) {
          v128.store(y + 2, v128.or(levelBytes(LEVELS), i8x16.shl(levelBytes(LEVELS + 64), 4)));
        } else {
          storeFiveBit(y + 2, levelBytes(LEVELS), levelBytes(LEVELS + 64));
        }
      } else {
        const nmax = kind == WEIGHTED_Q4_1 ? 15 : 31;
        const d = makeQkx3Quants(x, nmax);
        storeF16(y, d);
        storeF16(y + 2, -theMin);
        if (kind == WEIGHTED_Q4_1) {
          v128.store(y + 4, v128.or(levelBytes(LEVELS), i8x16.shl(levelBytes(LEVELS + 64), 4)));
        } else {
          storeFiveBit(y + 4, levelBytes(LEVELS), levelBytes(LEVELS + 64));
        }
      }
    }
  }
}

/** The 16 i32 levels at `p` as bytes (levels are in [0, 31]). */
// @ts-ignore: decorator
@inline
function levelBytes(p: usize): v128 {
  return packSignedBytes(v128.load(p), v128.load(p, 16), v128.load(p, 32), v128.load(p, 48));
}

/**
 * `make_qx_quants(32, nmax, x, L, 1, weights)` (WEIGHTS): writes level + nmax to LEVELS and returns the
 * scale. The trials' sums do not depend on one another (only the acceptance test does, through `best`),
 * so all 19 are summed first, four lanes at a time, and then accepted or not in C's order.
 */
function makeQxQuants(x: usize, nmax: i32): f32 {
  let max: f32 = 0;
  let amax: f32 = 0;
  for (let i = 0; i < QK; i++) {
    const value = load<f32>(x + (<usize>i << 2));
    const magnitude = Mathf.abs(value);
    if (magnitude > amax) {
      amax = magnitude;
      max = value;
    }
  }
  if (amax < GROUP_MAX_EPS) {
    for (let k = 0; k < 128; k += 16) v128.store(LEVELS + k, i32x4.splat(0));
    return 0;
  }
  // fl(w·x), operands swapped (see "NaN payloads").
  for (let k = 0; k < 128; k += 16) v128.store(WEIGHTED_X + k, f32x4.mul(v128.load(x + k), v128.load(WEIGHTS + k)));
  store<f32>(QX_INVERSE_SCALES, <f32>-nmax / max);
  let trial: usize = 1;
  for (let step = -9; step <= 9; step++) {
    if (step == 0) continue;
    store<f32>(QX_INVERSE_SCALES + (trial << 2), -(<f32>nmax + <f32>0.1 * <f32>step) / max);
    trial++;
  }
  store<f32>(QX_INVERSE_SCALES + 76, load<f32>(QX_INVERSE_SCALES + 72));
  const lowest = i32x4.splat(-nmax);
  const highest = i32x4.splat(nmax - 1);
  for (let group: usize = 0; group < 80; group += 16) {
    const inverseScales = v128.load(QX_INVERSE_SCALES + group);
    let sumLX = f32x4.splat(0);
    let sumL2 = f32x4.splat(0);
    for (let i = 0; i < QK; i++) {
      const at = <usize>i << 2;
      const level = i32x4.max_s(lowest, i32x4.min_s(highest, nearestIntX4(f32x4.mul(inverseScales, v128.load32_splat(x + at)))));
      const l = f32x4.convert_i32x4_s(level);
      // sumlx += w·x·l; suml2 += w·l·l, the new term first (see "NaN payloads": the initial trial's
      // sums can reach the output through its scale).
      sumLX = f32x4.add(f32x4.mul(v128.load32_splat(WEIGHTED_X + at), l), sumLX);
      sumL2 = f32x4.add(f32x4.mul(f32x4.mul(v128.load32_splat(WEIGHTS + at), l), l), sumL2);
    }
    v128.store(QX_SUMS_LX + group, sumLX);
    v128.store(QX_SUMS_L2 + group, sumL2);
  }
  let sumLX = load<f32>(QX_SUMS_LX);
  let sumL2 = load<f32>(QX_SUMS_L2);
  let scale: f32 = sumL2 != 0 ? divJs(sumLX, sumL2) : 0;
  let best: f32 = scale * sumLX;
  let chosen: usize = 0;
  for (let t: usize = 1; t < 19; t++) {
    sumLX = load<f32>(QX_SUMS_LX + (t << 2));
    sumL2 = load<f32>(QX_SUMS_L2 + (t << 2));
    if (sumL2 > 0 && sumLX * sumLX > best * sumL2) {
      chosen = t;
      scale = sumLX / sumL2;
      best = scale * sumLX;
    }
  }
  const inverseScale = f32x4.splat(load<f32>(QX_INVERSE_SCALES + (chosen << 2)));
  const offset = i32x4.splat(nmax);
  for (let k = 0; k < 128; k += 16) {
    const level = i32x4.max_s(lowest, i32x4.min_s(highest, nearestIntX4(f32x4.mul(inverseScale, v128.load(x + k)))));
    v128.store(LEVELS + k, i32x4.add(level, offset));
  }
  return scale;
}

/**
 * Skipping make_qkx3_quants trials that cannot win. The per-element error terms are computed
 * lane-parallel exactly as C computes them; only their sequential float sum is slow (a chain of
 * dependent additions). A float sum S_f of 32 terms t_i ≥ 0 satisfies S_f ≥ (1 − γ₃₁)·Σt_i > (1 − 32u)·Σt_i
 * (u = 2^-24; with subnormal partial sums too, where addition is exact; an overflow only makes it
 * larger), so their sum in double (any order, relative error ~2^-48) bounds it with SUM_ERROR = 64u to
 * spare: when that bound is at least the best error, the trial loses and its sum is not needed.
 */
const SUM_ERROR: f64 = 64.0 / 16777216.0;

/** Whether every float of the 32 at `p` is ≥ 0 (so not NaN). */
// @ts-ignore: decorator
@inline
function allNonNegative(p: usize): bool {
  let ok = i32x4.splat(-1);
  const zero = f32x4.splat(0);
  for (let k = 0; k < 128; k += 16) ok = v128.and(ok, f32x4.ge(v128.load(p + k), zero));
  return i32x4.all_true(ok);
}

/** The sum in double of the 32 floats at `p` (any order). */
// @ts-ignore: decorator
@inline
function sumInDouble(p: usize): f64 {
  let sum = f64x2.splat(0);
  for (let k = 0; k < 128; k += 16) {
    const v = v128.load(p + k);
    const low = f64x2.promote_low_f32x4(v);
    const high = f64x2.promote_low_f32x4(v128.shuffle<f32>(v, v, 2, 3, 2, 3));
    sum = f64x2.add(sum, f64x2.add(low, high));
  }
  return f64x2.extract_lane(sum, 0) + f64x2.extract_lane(sum, 1);
}

/**
 * `make_qkx3_quants(32, nmax, x, weights, L, &the_min, Laux, −0.9f, 0.05f, 36, false)`: levels to LEVELS,
 * −min to `theMin`, returns the scale. Trial levels are `v > 0 ? nearest_int(MIN(v, nmax)) : 0` as in the
 * reference. Trials run one at a time (a winning trial changes `min`, hence the following trials'
 * levels; and evaluating four at once, as make_qx_quants does, measured slower because of this and of
 * the skips below). A trial whose levels repeat the previous trial's has the same sums and error, so it
 * cannot beat the best (which is at most that error), and is skipped; so is one whose error terms (≥ 0)
 * sum, in double, to at least best/(1 − SUM_ERROR): its float sum is at least the best.
 */
function makeQkx3Quants(x: usize, nmax: i32): f32 {
  let min = load<f32>(x);
  let max = min;
  let sumW = load<f32>(WEIGHTS);
  let sumX: f32 = mulJs(sumW, min);
  for (let i = 1; i < QK; i++) {
    const value = load<f32>(x + (<usize>i << 2));
    if (value < min) min = value;
    if (value > max) max = value;
    const weight = load<f32>(WEIGHTS + (<usize>i << 2));
    sumW = addJs(sumW, weight);
    sumX = addJs(sumX, mulJs(weight, value));
  }
  if (min > 0) min = 0;
  // The reference clamps with Math.min(min, 0), which gives x86's default NaN (0xFFC00000) for a NaN.
  else if (min != min) min = reinterpret<f32>(0xffc00000);
  if (max <= min) {
    for (let k = 0; k < 128; k += 16) v128.store(LEVELS + k, i32x4.splat(0));
    theMin = -min;
    return 0;
  }
  const top = f32x4.splat(<f32>nmax);
  const zero = f32x4.splat(0);
  let inverseScale: f32 = <f32>nmax / subJs(max, min);
  let scale: f32 = <f32>1 / inverseScale;
  // The initial candidate: levels MAX(0, MIN(nmax, nearest_int(iscale·(x − min)))) and their error.
  let bestError: f32 = 0;
  {
    const shift = f32x4.splat(min);
    const iscale = f32x4.splat(inverseScale);
    const s = f32x4.splat(scale);
    const highest = i32x4.splat(nmax);
    for (let k = 0; k < 128; k += 16) {
      const value = v128.load(x + k);
      const shifted = f32x4.sub(value, shift);
      v128.store(SHIFTED + k, shifted);
      // iscale·(x − min), operands swapped (see "NaN payloads").
      const level = i32x4.max_s(i32x4.splat(0), i32x4.min_s(highest, nearestIntX4(f32x4.mul(shifted, iscale))));
      v128.store(LEVELS + k, level);
      const diff = f32x4.sub(f32x4.add(f32x4.mul(s, f32x4.convert_i32x4_s(level)), shift), value);
      const term = f32x4.mul(v128.load(WEIGHTS + k), f32x4.mul(diff, diff));
      bestError += f32x4.extract_lane(term, 0);
      bestError += f32x4.extract_lane(term, 1);
      bestError += f32x4.extract_lane(term, 2);
      bestError += f32x4.extract_lane(term, 3);
    }
  }
  const rmin: f32 = -0.9;
  const rdelta: f32 = 0.05;
  for (let step = 0; step <= 36; step++) {
    // max − min with the current min, which changes whenever a trial wins (as in C).
    inverseScale = (rmin + rdelta * <f32>step + <f32>nmax) / (max - min);
    const iscale = f32x4.splat(inverseScale);
    let same = i32x4.splat(-1);
    for (let k = 0; k < 128; k += 16) {
      const v = f32x4.mul(iscale, v128.load(SHIFTED + k));
      // pmin(top, v) = v < nmax ? v : nmax; lanes with v ≤ 0 or NaN give 0.
      const level = v128.and(nearestIntX4(f32x4.pmin(top, v)), f32x4.gt(v, zero));
      same = v128.and(same, i32x4.eq(v128.load(TRIAL + k), level));
      v128.store(TRIAL + k, level);
    }
    if (step != 0 && i32x4.all_true(same)) continue;
    for (let k = 0; k < 128; k += 16) {
      const l = f32x4.convert_i32x4_s(v128.load(TRIAL + k));
      const weightedLevel = f32x4.mul(v128.load(WEIGHTS + k), l);
      v128.store(TERMS_A + k, weightedLevel);
      v128.store(TERMS_B + k, f32x4.mul(weightedLevel, l));
      v128.store(TERMS_C + k, f32x4.mul(weightedLevel, v128.load(x + k)));
    }
    let sumL: f32 = 0;
    let sumL2: f32 = 0;
    let sumXL: f32 = 0;
    for (let k = 0; k < 128; k += 16) {
      sumL += load<f32>(TERMS_A + k);
      sumL2 += load<f32>(TERMS_B + k);
      sumXL += load<f32>(TERMS_C + k);
      sumL += load<f32>(TERMS_A + k, 4);
      sumL2 += load<f32>(TERMS_B + k, 4);
      sumXL += load<f32>(TERMS_C + k, 4);
      sumL += load<f32>(TERMS_A + k, 8);
      sumL2 += load<f32>(TERMS_B + k, 8);
      sumXL += load<f32>(TERMS_C + k, 8);
      sumL += load<f32>(TERMS_A + k, 12);
      sumL2 += load<f32>(TERMS_B + k, 12);
      sumXL += load<f32>(TERMS_C + k, 12);
    }
    const determinant: f32 = sumW * sumL2 - sumL * sumL;
    if (!(determinant > 0)) continue;
    let trialScale: f32 = (sumW * sumXL - sumX * sumL) / determinant;
    let trialMin: f32 = (sumL2 * sumX - sumL * sumXL) / determinant;
    if (trialMin > 0) {
      trialMin = 0;
      trialScale = sumXL / sumL2;
    }
    const s = f32x4.splat(trialScale);
    const m = f32x4.splat(trialMin);
    for (let k = 0; k < 128; k += 16) {
      const diff = f32x4.sub(f32x4.add(f32x4.mul(s, f32x4.convert_i32x4_s(v128.load(TRIAL + k))), m), v128.load(x + k));
      v128.store(TERMS_A + k, f32x4.mul(v128.load(WEIGHTS + k), f32x4.mul(diff, diff)));
    }
    if (allNonNegative(TERMS_A) && sumInDouble(TERMS_A) * (1 - SUM_ERROR) >= <f64>bestError) continue;
    let error: f32 = 0;
    for (let k = 0; k < 128; k += 16) {
      error += load<f32>(TERMS_A + k);
      error += load<f32>(TERMS_A + k, 4);
      error += load<f32>(TERMS_A + k, 8);
      error += load<f32>(TERMS_A + k, 12);
    }
    if (error < bestError) {
      for (let k = 0; k < 128; k += 16) v128.store(LEVELS + k, v128.load(TRIAL + k));
      bestError = error;
      scale = trialScale;
      // Assigned even when equal: −0 and +0 compare equal but give different bytes (fp16(−min)).
      min = trialMin;
      const shift = f32x4.splat(min);
      for (let k = 0; k < 128; k += 16) v128.store(SHIFTED + k, f32x4.sub(v128.load(x + k), shift));
    }
  }
  theMin = -min;
  return scale;
}

// ------------------------------------------------------------------------------------- F16 and BF16

/** `ggml_compute_fp32_to_fp16` on four lanes of float bits: half bits in i32 lanes (see f32ToF16Bits). */
// @ts-ignore: decorator
@inline
function f32ToF16X4(bits: v128): v128 {
  const sign = v128.and(i32x4.shr_u(bits, 16), i32x4.splat(0x8000));
  const magnitude = v128.and(bits, i32x4.splat(0x7fffffff));
  // Normal halves: drop 13 bits with round-half-even and rebias.
  const rounded = i32x4.add(
    i32x4.add(magnitude, i32x4.splat(0xfff)),
    v128.and(i32x4.shr_u(magnitude, 13), i32x4.splat(1)),
  );
  const normal = i32x4.shr_u(i32x4.sub(rounded, i32x4.splat(0x38000000)), 13);
  // Below 2^-14: the half is round-half-even(|x|·2^24) (exact product), 1024 being the smallest normal.
  const subnormal = i32x4.trunc_sat_f32x4_s(f32x4.nearest(f32x4.mul(magnitude, f32x4.splat(16777216.0))));
  const special = v128.bitselect(i32x4.splat(0x7e00), i32x4.splat(0x7c00), i32x4.gt_s(magnitude, i32x4.splat(0x7f800000)));
  let half = v128.bitselect(normal, subnormal, i32x4.ge_s(magnitude, i32x4.splat(0x38800000)));
  half = v128.bitselect(special, half, i32x4.ge_s(magnitude, i32x4.splat(0x477ff000)));
  return v128.or(half, sign);
}

/** `ggml_compute_fp32_to_bf16` on four lanes of float bits. */
// @ts-ignore: decorator
@inline
function f32ToBf16X4(bits: v128): v128 {
  const isNaN = i32x4.gt_s(v128.and(bits, i32x4.splat(0x7fffffff)), i32x4.splat(0x7f800000));
  const quiet = v128.and(v128.or(i32x4.shr_u(bits, 16), i32x4.splat(64)), i32x4.splat(0xffff));
  const rounded = i32x4.shr_u(i32x4.add(i32x4.add(bits, i32x4.splat(0x7fff)), v128.and(i32x4.shr_u(bits, 16), i32x4.splat(1))), 16);
  return v128.bitselect(quiet, rounded, isNaN);
}

function f32BitsToBf16Bits(bits: u32): u32 {
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 64) & 0xffff;
  return (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
}

/** `ggml_fp32_to_fp16_row`; importance ignored. */
export function quantize_F16(src: usize, dst: usize, rows: i32, n: i32, importance: usize): void {
  const count = rows * n;
  let i = 0;
  for (; i + 8 <= count; i += 8) {
    const p = src + (<usize>i << 2);
    const a = f32ToF16X4(v128.load(p));
    const b = f32ToF16X4(v128.load(p, 16));
    v128.store(dst + (<usize>i << 1), i16x8.narrow_i32x4_u(a, b));
  }
  for (; i < count; i++) {
    store<u16>(dst + (<usize>i << 1), <u16>f32ToF16Bits(load<f32>(src + (<usize>i << 2))));
  }
}

export function dequantize_F16(src: usize, dst: usize, rows: i32, n: i32): void {
  const count = rows * n;
  let i = 0;
  for (; i + 8 <= count; i += 8) {
    const halves = v128.load(src + (<usize>i << 1));
    const p = dst + (<usize>i << 2);
    v128.store(p, f16ToF32X4(i32x4.extend_low_i16x8_u(halves)));
    v128.store(p, f16ToF32X4(i32x4.extend_high_i16x8_u(halves)), 16);
  }
  for (; i < count; i++) store<f32>(dst + (<usize>i << 2), f16BitsToF32(<u32>load<u16>(src + (<usize>i << 1))));
}

/** `ggml_compute_fp16_to_fp32` on four lanes of half bits (i32 lanes): exact float bits. */
// @ts-ignore: decorator
@inline
function f16ToF32X4(half: v128): v128 {
  const sign = i32x4.shl(v128.and(half, i32x4.splat(0x8000)), 16);
  const exponent = v128.and(half, i32x4.splat(0x7c00));
  const mantissa = v128.and(half, i32x4.splat(0x3ff));
  const normal = i32x4.add(i32x4.shl(v128.and(half, i32x4.splat(0x7fff)), 13), i32x4.splat(112 << 23));
  const special = v128.or(i32x4.shl(mantissa, 13), i32x4.splat(0x7f800000));
  const subnormal = f32x4.mul(f32x4.convert_i32x4_s(mantissa), f32x4.splat(5.9604644775390625e-8));
  let bits = v128.bitselect(special, normal, i32x4.eq(exponent, i32x4.splat(0x7c00)));
  bits = v128.bitselect(subnormal, bits, i32x4.eq(exponent, i32x4.splat(0)));
  return v128.or(bits, sign);
}

/** `ggml_fp32_to_bf16_row_ref`; importance ignored. */
export function quantize_BF16(src: usize, dst: usize, rows: i32, n: i32, importance: usize): void {
  const count = rows * n;
  let i = 0;
  for (; i + 8 <= count; i += 8) {
    const p = src + (<usize>i << 2);
    const a = f32ToBf16X4(v128.load(p));
    const b = f32ToBf16X4(v128.load(p, 16));
    v128.store(dst + (<usize>i << 1), i16x8.narrow_i32x4_u(a, b));
  }
  for (; i < count; i++) store<u16>(dst + (<usize>i << 1), <u16>f32BitsToBf16Bits(load<u32>(src + (<usize>i << 2))));
}

export function dequantize_BF16(src: usize, dst: usize, rows: i32, n: i32): void {
  const count = rows * n;
  let i = 0;
  for (; i + 8 <= count; i += 8) {
    const halves = v128.load(src + (<usize>i << 1));
    const p = dst + (<usize>i << 2);
    v128.store(p, i32x4.shl(i32x4.extend_low_i16x8_u(halves), 16));
    v128.store(p, i32x4.shl(i32x4.extend_high_i16x8_u(halves), 16), 16);
  }
  for (; i < count; i++) store<u32>(dst + (<usize>i << 2), <u32>load<u16>(src + (<usize>i << 1)) << 16);
}
