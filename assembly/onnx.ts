/**
 * WebAssembly port of the MatMulNBits row quantizer (src/quant/onnx-layouts.ts `quantizeMatMulNBitsRow`,
 * which reproduces MLAS `MlasQuantizeBlockwise<T, bits>` columnwise; read its header for the rules). The
 * TypeScript kernel is the reference: every layout here must give its bytes (test/quant-wasm-onnx.test.ts).
 *
 * ABI (src/quant/wasm/runtime.ts `wasmMatMulNBitsQuantizer`):
 *   quantize_matmulnbits(src, B, scales, zeroPoints, rows, k, bits, blockSize, symmetric, halfScales):
 *     src = rows·k float32 (k a multiple of blockSize: the short-last-block and odd-K quirks stay on the
 *     TypeScript path); B = rows·(k/blockSize) blobs of blockSize·bits/8 bytes; scales = one float32 (or
 *     fp16 when halfScales) per block; zeroPoints = per row ceil(kBlocks·bits/8) bytes, unused when
 *     symmetric. With halfScales the weights are first rounded to fp16 *in place* (the host's staging
 *     copy), as MLAS reads an fp16 initializer.
 *
 * Lane-parallel parts, each order-independent: the fp16 rounding and the level of each element (one IEEE
 * f32 multiply, one f32 add, C `roundf`, clamp: the reference's operations), and the block min/max, taken
 * with pmin/pmax, which skip NaN as C's `v < min` / `v > max` do. The one order-dependent case of the scan
 * is a zero extreme, whose sign is that of the first zero met: then the block is rescanned in order. The
 * scale and zero point are scalar f32 arithmetic in the reference's order. No NaN can reach an output byte
 * (the extremes are never NaN; a NaN level is 0), so NaN payloads do not matter here.
 */
import { f16BitsToF32, f32ToF16Bits, horizontalMax, horizontalMin } from './common';

export { heapBase, widen_bf16, widen_f16 } from './common';

const FLT_MAX: f32 = 3.4028234663852886e38;

// ------------------------------------------------------------------------------------ lane primitives

/**
 * Each lane rounded to fp16 and widened back (MLFloat16's round-to-nearest-even, overflow to ±inf, as
 * float.ts `f32BitsToF16Bits` then the exact widening): the value the reference's `roundToHalf` gives.
 */
// @ts-ignore: decorator
@inline
function roundToHalfX4(value: v128): v128 {
  const sign = v128.and(value, i32x4.splat(0x80000000));
  const magnitude = v128.and(value, i32x4.splat(0x7fffffff));
  // Normal halves (|x| ≥ 2^-14): drop 13 mantissa bits with round-half-even; a carry bumps the exponent.
  const rounded = i32x4.add(i32x4.add(magnitude, i32x4.splat(0xfff)), v128.and(i32x4.shr_u(magnitude, 13), i32x4.splat(1)));
  const normal = v128.and(rounded, i32x4.splat(0xffffe000));
  // Subnormal halves: multiples of 2^-24, ties to even (both products exact).
  const subnormal = f32x4.mul(f32x4.nearest(f32x4.mul(magnitude, f32x4.splat(16777216.0))), f32x4.splat(5.9604644775390625e-8));
  // Past the largest half (65504 + half an ulp): inf; NaN stays a (quiet) NaN.
  const special = v128.bitselect(i32x4.splat(0x7fc00000), i32x4.splat(0x7f800000), i32x4.gt_s(magnitude, i32x4.splat(0x7f800000)));
  let half = v128.bitselect(normal, subnormal, i32x4.ge_s(magnitude, i32x4.splat(0x38800000)));
  half = v128.bitselect(special, half, i32x4.ge_s(magnitude, i32x4.splat(0x477ff000)));
  return v128.or(half, sign);
}

/**
 * MLAS's level of four elements, `clamp(roundf(fl(fl(v·reciprocal) + zp)), 0, kMax)` with NaN → 0, as
 * i32 lanes. Clamping to the integer bounds before rounding gives the same level (rounding is monotone)
 * and leaves only [0, kMax] to round: trunc, then up where the dropped fraction (exact) is ≥ 0.5 —
 * `x + 0.5` in f32 is not exact (0.49999997 + 0.5 rounds to 1). pmax(0, NaN) is 0 and pmax(0, −0) is +0.
 */
// @ts-ignore: decorator
@inline
function levelsX4(value: v128, reciprocal: v128, zeroPoint: v128, maxLevel: v128): v128 {
  const shifted = f32x4.add(f32x4.mul(value, reciprocal), zeroPoint);
  const clamped = f32x4.pmin(f32x4.pmax(f32x4.splat(0), shifted), maxLevel);
  const truncated = f32x4.trunc(clamped);
  const up = v128.and(f32x4.ge(f32x4.sub(clamped, truncated), f32x4.splat(0.5)), f32x4.splat(1.0));
  return i32x4.trunc_sat_f32x4_u(f32x4.add(truncated, up));
}

/** The levels of the 16 elements at `p`, one per byte in element order (no saturation: levels ≤ 255). */
// @ts-ignore: decorator
@inline
function levels16(p: usize, reciprocal: v128, zeroPoint: v128, maxLevel: v128): v128 {
  const a = levelsX4(v128.load(p), reciprocal, zeroPoint, maxLevel);
  const b = levelsX4(v128.load(p, 16), reciprocal, zeroPoint, maxLevel);
  const c = levelsX4(v128.load(p, 32), reciprocal, zeroPoint, maxLevel);
  const d = levelsX4(v128.load(p, 48), reciprocal, zeroPoint, maxLevel);
  return i8x16.narrow_i16x8_u(i16x8.narrow_i32x4_u(a, b), i16x8.narrow_i32x4_u(c, d));
}

/**
 * Sixteen 4-bit levels (bytes) as eight i16 lanes `level[2i] | level[2i+1] << 4`: MatMulNBits' nibble
 * order, element 2i in the low nibble of byte i. Lane i holds `e | o << 8`, so `lane >> 4` is `o << 4`.
 */
// @ts-ignore: decorator
@inline
function pairNibbles(levels: v128): v128 {
  return v128.or(v128.and(levels, i16x8.splat(0x0f)), i16x8.shr_u(levels, 4));
}

// ------------------------------------------------------------------------------------- block statistics

/** Scratch of the block minimum and maximum (`blockMinMax`). */
let blockMin: f32 = 0;
let blockMax: f32 = 0;

/**
 * MLAS's scan of the `count` floats at `x` (count a multiple of 16): from ±FLT_MAX, `if (v < min) …;
 * if (v > max) …`. Lane-parallel with NaN skipped; a zero extreme is recomputed in order (its sign).
 * Otherwise the result cannot depend on the order: equal non-zero floats have equal bits.
 */
// @ts-ignore: decorator
@inline
function blockMinMax(x: usize, count: i32): void {
  // pmin(a, b) is `b < a ? b : a`: it skips a NaN only as its second operand, so every value enters as
  // the second operand of an accumulator (two pairs, for instruction-level parallelism), and the
  // accumulators, never NaN, are combined at the end.
  let low0 = f32x4.splat(FLT_MAX);
  let low1 = low0;
  let high0 = f32x4.splat(-FLT_MAX);
  let high1 = high0;
  const end = x + (<usize>count << 2);
  for (let p = x; p < end; p += 64) {
    const a = v128.load(p);
    const b = v128.load(p, 16);
    const c = v128.load(p, 32);
    const d = v128.load(p, 48);
    low0 = f32x4.pmin(f32x4.pmin(low0, a), c);
    low1 = f32x4.pmin(f32x4.pmin(low1, b), d);
    high0 = f32x4.pmax(f32x4.pmax(high0, a), c);
    high1 = f32x4.pmax(f32x4.pmax(high1, b), d);
  }
  let min = horizontalMin(f32x4.pmin(low0, low1));
  let max = horizontalMax(f32x4.pmax(high0, high1));
  if (min == 0 || max == 0) {
    min = FLT_MAX;
    max = -FLT_MAX;
    for (let p = x; p < end; p += 4) {
      const value = load<f32>(p);
      if (value < min) min = value;
      if (value > max) max = value;
    }
  }
  blockMin = min;
  blockMax = max;
}

// ------------------------------------------------------------------------------------------- kernel

export function quantize_matmulnbits(
  src: usize,
  dstB: usize,
  dstScales: usize,
  dstZeroPoints: usize,
  rows: i32,
  k: i32,
  bits: i32,
  blockSize: i32,
  symmetric: i32,
  halfScales: i32,
): void {
  const kBlocks = k / blockSize;
  const maxLevelInt: i32 = (1 << bits) - 1;
  const maxLevel = <f32>maxLevelInt;
  // range2scale divides by halfRange = kMid − kMin = 2^(bits−1); the implied zero point is the same kMid.
  const halfRange = <f32>(1 << (bits - 1));
  const blobBytes = (blockSize * bits) >> 3;
  const zeroPointBytesPerRow = bits == 4 ? (kBlocks + 1) >> 1 : kBlocks;
  const maxLevels = f32x4.splat(maxLevel);

  if (halfScales != 0) {
    const end = src + ((<usize>rows * <usize>k) << 2);
    for (let p = src; p < end; p += 16) v128.store(p, roundToHalfX4(v128.load(p)));
  }

  for (let row = 0; row < rows; row++) {
    const zeroPointRow = dstZeroPoints + <usize>row * zeroPointBytesPerRow;
    let pendingZeroPoint: i32 = 0;
    for (let block = 0; block < kBlocks; block++) {
      const index = row * kBlocks + block;
      const x = src + ((<usize>index * blockSize) << 2);
      blockMinMax(x, blockSize);
      const min = blockMin;
      const max = blockMax;

      let scale: f32;
      let zeroPoint: f32;
      let zeroPointByte: i32 = 0;
      if (symmetric != 0) {
        // range2scale: the larger magnitude, the negative end on a tie.
        const extreme = Mathf.abs(max) > Mathf.abs(min) ? max : min;
        scale = -extreme / halfRange;
        zeroPoint = halfRange;
      } else {
        // range2scalezp: std::min(min, 0.0f), std::max(max, 0.0f) (first operand on ties).
        const low: f32 = 0 < min ? 0 : min;
        const high: f32 = max < 0 ? 0 : max;
        scale = (high - low) / maxLevel;
        const zeroPointFloat: f32 = scale != 0 ? -(low / scale) : low;
        if (zeroPointFloat < 0) zeroPoint = 0;
        else if (zeroPointFloat > maxLevel) zeroPoint = maxLevel;
        // roundf; a NaN stays NaN (all levels 0) and is stored as 0, as a Uint8Array store of NaN.
        else zeroPoint = <f32>Math.trunc(<f64>zeroPointFloat + 0.5);
        zeroPointByte = zeroPoint != zeroPoint ? 0 : <i32>zeroPoint;
        if (bits == 8) store<u8>(zeroPointRow + block, <u8>zeroPointByte);
        else if ((block & 1) == 0) pendingZeroPoint = zeroPointByte;
        else store<u8>(zeroPointRow + (block >> 1), <u8>(pendingZeroPoint | (zeroPointByte << 4)));
      }

      // The levels use the reciprocal of the scale as stored (fp16 rounds it first).
      let stored = scale;
      if (halfScales != 0) {
        const half = f32ToF16Bits(scale);
        store<u16>(dstScales + (<usize>index << 1), <u16>half);
        stored = f16BitsToF32(half);
      } else {
        store<f32>(dstScales + (<usize>index << 2), scale);
      }
      const reciprocal = f32x4.splat(stored != 0 ? <f32>1 / stored : 0);
      const zeroPoints = f32x4.splat(zeroPoint);

      const y = dstB + <usize>index * blobBytes;
      if (bits == 8) {
        for (let j = 0; j < blockSize; j += 16) {
          v128.store(y + j, levels16(x + (<usize>j << 2), reciprocal, zeroPoints, maxLevels));
        }
      } else if (blockSize == 16) {
        const pairs = pairNibbles(levels16(x, reciprocal, zeroPoints, maxLevels));
        v128.store64_lane(y, i8x16.narrow_i16x8_u(pairs, pairs), 0);
      } else {
        for (let j = 0; j < blockSize; j += 32) {
          const p = x + (<usize>j << 2);
          const first = pairNibbles(levels16(p, reciprocal, zeroPoints, maxLevels));
          const second = pairNibbles(levels16(p + 64, reciprocal, zeroPoints, maxLevels));
          v128.store(y + (j >> 1), i8x16.narrow_i16x8_u(first, second));
        }
      }
    }
    // An odd count of 4-bit zero points: the unused high nibble is kMid (zp_bytes is filled with it).
    if (symmetric == 0 && bits == 4 && (kBlocks & 1) == 1) {
      store<u8>(zeroPointRow + (kBlocks >> 1), <u8>(pendingZeroPoint | (8 << 4)));
    }
  }
}
