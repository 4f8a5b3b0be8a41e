/**
 * WebAssembly ports of the K-quant quantizers (src/quant/kquants.ts is the reference; every kernel here
 * must give the same bytes). Same ABI as assembly/legacy.ts:
 *   quantize_<TYPE>(src, dst, rows, n, importance): src = rows·n float32, dst = rows·(n/256) blocks,
 *     importance = n float32 per column or 0 for none;
 *   dequantize_<TYPE>(src, dst, rows, n).
 *
 * The scale searches (assembly/kquant-search.ts) run four sub-blocks of a super-block at once, one per
 * SIMD lane, each lane computing exactly what C computes for its sub-block; the per-element passes
 * (requantization, packing) are lane-parallel over elements, which are independent there.
 */
import { GROUP_MAX_EPS, loadF16, nearestInt, storeF16 } from './common';
import {
  clampX4,
  laneSums,
  nearestIntX4,
  q3QuantsX4,
  qkxQuantsX4,
  qpQuants,
  qxQuantsX4,
  storeLaneBytes,
  transposeGroups,
} from './kquant-search';

export { heapBase, widen_bf16, widen_f16 } from './common';

const QK_K: i32 = 256;
const ONE_TENTH: f32 = 0.1;
const RMIN_QKX3: f32 = -0.9;
const RDELTA_QKX3: f32 = 0.05;

/** Lane-major scratch (four groups per v128): values, weights, importance, levels. */
const XT: usize = memory.data(1024, 16);
const WT: usize = memory.data(1024, 16);
const IT: usize = memory.data(1024, 16);
const LT: usize = memory.data(1024, 16);
/** The 256 levels of a super-block in element order (the C local `L`). */
const LEVELS: usize = memory.data(QK_K, 16);
/** Per-sub-block scales, −mins and weight sums (C's `scales`, `mins`, `sw`), and their levels. */
const SUB_SCALES: usize = memory.data(64, 16);
const SUB_MINS: usize = memory.data(64, 16);
const SUB_WEIGHT_SUMS: usize = memory.data(64, 16);
const SCALE_LEVELS: usize = memory.data(16, 16);
const MIN_LEVELS: usize = memory.data(16, 16);

// @ts-ignore: decorator
@inline
function loadF32(ptr: usize, index: i32): f32 {
  return load<f32>(ptr + (<usize>index << 2));
}

/**
 * Σx² over the 256 values of a super-block, summed in order as the `_impl` functions do (in a SIMD lane,
 * the latest NaN term winning as in the reference: see assembly/kquant-search.ts).
 */
function superBlockSumSquares(x: usize): f32 {
  let sum = f32x4.splat(0);
  for (let l = 0; l < QK_K; l += 4) {
    const v = v128.load(x + (<usize>l << 2));
    const squares = f32x4.mul(v, v);
    sum = f32x4.add(v128.shuffle<i32>(squares, squares, 0, 0, 0, 0), sum);
    sum = f32x4.add(v128.shuffle<i32>(squares, squares, 1, 1, 1, 1), sum);
    sum = f32x4.add(v128.shuffle<i32>(squares, squares, 2, 2, 2, 2), sum);
    sum = f32x4.add(v128.shuffle<i32>(squares, squares, 3, 3, 3, 3), sum);
  }
  return f32x4.extract_lane(sum, 0);
}

/**
 * The `_impl` weights of four lane-major groups (`XT`, importance in `IT`): w = qw·√(σ² + x²) into `WT`;
 * returns their per-group sums (C's `sw`).
 */
function importanceWeights(n: i32, sigma2: f32): v128 {
  const s = f32x4.splat(sigma2);
  for (let i = 0; i < n; i++) {
    const o = <usize>i << 4;
    const x = v128.load(XT + o);
    v128.store(WT + o, f32x4.mul(f32x4.sqrt(f32x4.add(f32x4.mul(x, x), s)), v128.load(IT + o)));
  }
  return laneSums(WT, n);
}

/** Packs 2-bit levels `LEVELS[0..256)` into 64 bytes at `dst` (element 128n+32j+l in bits 2j of byte 32n+l). */
function packTwoBit(dst: usize): void {
  for (let n = 0; n < QK_K; n += 128) {
    for (let l = 0; l < 32; l += 16) {
      const p = LEVELS + <usize>(n + l);
      const packed = v128.or(
        v128.or(v128.load(p), i8x16.shl(v128.load(p, 32), 2)),
        v128.or(i8x16.shl(v128.load(p, 64), 4), i8x16.shl(v128.load(p, 96), 6)),
      );
      v128.store(dst + <usize>(n / 4 + l), packed);
    }
  }
}

/** Sixteen levels clamp(nearest_int(x/scale)) + bias of `x[0..16)`, as bytes (C's int8_t/uint8_t L). */
// @ts-ignore: decorator
@inline
function requantize16(x: usize, scale: f32, low: i32, high: i32, bias: i32, dst: usize): void {
  const s = f32x4.splat(scale);
  const b = i32x4.splat(bias);
  const a = i32x4.add(clampX4(nearestIntX4(f32x4.div(v128.load(x), s)), low, high), b);
  const c = i32x4.add(clampX4(nearestIntX4(f32x4.div(v128.load(x, 16), s)), low, high), b);
  const d = i32x4.add(clampX4(nearestIntX4(f32x4.div(v128.load(x, 32), s)), low, high), b);
  const e = i32x4.add(clampX4(nearestIntX4(f32x4.div(v128.load(x, 48), s)), low, high), b);
  v128.store(dst, narrowBytes(a, c, d, e));
}

/**
 * Sixteen levels clamp(nearest_int((x + offset)/scale), 0, nmax) of `x[0..16)`, as bytes; `groupStart`
 * when x[0] is the first element of its sub-block.
 *
 * Which NaN survives x + offset when both are NaN (d or dmin overflowed fp16 and the sub-block has a NaN
 * input): in the reference's optimized code, the offset's — the loop-invariant right operand is not
 * live after the add, so V8 swaps the operands (see assembly/kquant-search.ts) — except in the loop's
 * first iteration, which TurboFan peels off and where the offset is still live: there x's NaN survives.
 */
// @ts-ignore: decorator
@inline
function requantizeShifted16(x: usize, offset: f32, scale: f32, nmax: i32, dst: usize, groupStart: bool): void {
  const s = f32x4.splat(scale);
  const m = f32x4.splat(offset);
  const x0 = v128.load(x);
  let shifted0 = f32x4.add(m, x0);
  if (groupStart) shifted0 = v128.bitselect(f32x4.add(x0, m), shifted0, i32x4(-1, 0, 0, 0));
  const a = clampX4(nearestIntX4(f32x4.div(shifted0, s)), 0, nmax);
  const c = clampX4(nearestIntX4(f32x4.div(f32x4.add(m, v128.load(x, 16)), s)), 0, nmax);
  const d = clampX4(nearestIntX4(f32x4.div(f32x4.add(m, v128.load(x, 32)), s)), 0, nmax);
  const e = clampX4(nearestIntX4(f32x4.div(f32x4.add(m, v128.load(x, 48)), s)), 0, nmax);
  v128.store(dst, narrowBytes(a, c, d, e));
}

/** Bytes of sixteen i32 lanes already in 0…255. */
// @ts-ignore: decorator
@inline
function narrowBytes(a: v128, b: v128, c: v128, d: v128): v128 {
  return i8x16.narrow_i16x8_u(i16x8.narrow_i32x4_u(a, b), i16x8.narrow_i32x4_u(c, d));
}

// ---------------------------------------------------------------------------------------------- Q2_K

/** `block_q2_K`: scales u8[16] @0 (low nibble scale, high nibble min), qs u8[64] @16, d @80, dmin @82. */
export function quantize_Q2_K(src: usize, dst: usize, rows: i32, n: i32, importance: usize): void {
  const perRow = n / QK_K;
  for (let row = 0; row < rows; row++) {
    for (let block = 0; block < perRow; block++) {
      const x = src + ((<usize>row * <usize>n + <usize>block * QK_K) << 2);
      const y = dst + (<usize>row * <usize>perRow + <usize>block) * 84;
      quantizeBlockQ2_K(x, y, importance == 0 ? 0 : importance + (<usize>block * QK_K << 2));
    }
  }
}

function quantizeBlockQ2_K(x: usize, y: usize, qw: usize): void {
  let d: f32;
  let dmin: f32;
  if (qw == 0) {
    // quantize_row_q2_K_ref
    for (let v = 0; v < 4; v++) {
      transposeGroups(x + <usize>v * 256, 64, 16, XT);
      for (let i = 0; i < 16; i++) {
        const o = <usize>i << 4;
        v128.store(WT + o, f32x4.abs(v128.load(XT + o)));
      }
      qkxQuantsX4(16, 3, XT, WT, LT, -0.5, ONE_TENTH, 15, true, false, SUB_SCALES + <usize>v * 16, SUB_MINS + <usize>v * 16);
      storeLaneBytes(LT, 16, LEVELS + <usize>v * 64, 16);
    }
    let maxScale: f32 = 0;
    let maxMin: f32 = 0;
    for (let j = 0; j < 16; j++) {
      const scale = loadF32(SUB_SCALES, j);
      const m = loadF32(SUB_MINS, j);
      if (scale > maxScale) maxScale = scale;
      if (m > maxMin) maxMin = m;
    }
    if (maxScale > 0) {
      const inverse: f32 = <f32>15 / maxScale;
      for (let j = 0; j < 16; j++) store<u8>(y + j, <u8>nearestInt(inverse * loadF32(SUB_SCALES, j)));
      d = storeF16(y + 80, maxScale / 15);
    } else {
      memory.fill(y, 0, 16);
      d = storeF16(y + 80, 0);
    }
    if (maxMin > 0) {
      const inverse: f32 = <f32>15 / maxMin;
      for (let j = 0; j < 16; j++) {
        store<u8>(y + j, <u8>(<i32>load<u8>(y + j) | (nearestInt(inverse * loadF32(SUB_MINS, j)) << 4)));
      }
      dmin = storeF16(y + 82, maxMin / 15);
    } else {
      dmin = storeF16(y + 82, 0);
    }
  } else {
    // quantize_row_q2_K_impl: σ² = Σx²/256 here (no factor 2, unlike the other K-quants).
    const sigma2: f32 = superBlockSumSquares(x) / <f32>QK_K;
    for (let v = 0; v < 4; v++) {
      transposeGroups(x + <usize>v * 256, 64, 16, XT);
      transposeGroups(qw + <usize>v * 256, 64, 16, IT);
      v128.store(SUB_WEIGHT_SUMS + <usize>v * 16, importanceWeights(16, sigma2));
      qkxQuantsX4(16, 3, XT, WT, LT, RMIN_QKX3, RDELTA_QKX3, 36, false, true, SUB_SCALES + <usize>v * 16, SUB_MINS + <usize>v * 16);
      storeLaneBytes(LT, 16, LEVELS + <usize>v * 64, 16);
    }
    const scaleOfScales = qpQuants(16, 15, SUB_SCALES, SCALE_LEVELS, SUB_WEIGHT_SUMS);
    const scaleOfMins = qpQuants(16, 15, SUB_MINS, MIN_LEVELS, SUB_WEIGHT_SUMS);
    d = storeF16(y + 80, scaleOfScales);
    dmin = storeF16(y + 82, scaleOfMins);
    for (let j = 0; j < 16; j++) {
      store<u8>(y + j, <u8>(<i32>load<u8>(SCALE_LEVELS + j) | (<i32>load<u8>(MIN_LEVELS + j) << 4)));
    }
  }
  // Requantize against the stored scales (sub-blocks with a zero scale keep the search's levels).
  for (let j = 0; j < 16; j++) {
    const packed = <i32>load<u8>(y + j);
    const scale: f32 = d * <f32>(packed & 0x0f);
    if (scale == 0) continue;
    const offset: f32 = dmin * <f32>(packed >> 4);
    requantizeShifted16(x + (<usize>j << 6), offset, scale, 3, LEVELS + (<usize>j << 4), true);
  }
  packTwoBit(y + 16);
}

export function dequantize_Q2_K(src: usize, dst: usize, rows: i32, n: i32): void {
  const blocks = rows * (n / QK_K);
  for (let block = 0; block < blocks; block++) {
    const x = src + <usize>block * 84;
    const y = dst + ((<usize>block * QK_K) << 2);
    const d = loadF16(x + 80);
    const dmin = loadF16(x + 82);
    for (let e = 0; e < QK_K; e++) {
      const packed = <i32>load<u8>(x + (e >> 4));
      const scale: f32 = d * <f32>(packed & 0x0f);
      const offset: f32 = dmin * <f32>(packed >> 4);
      const q = (<i32>load<u8>(x + 16 + 32 * (e >> 7) + (e & 31)) >> (2 * ((e >> 5) & 3))) & 3;
      store<f32>(y + (<usize>e << 2), scale * <f32>q - offset);
    }
  }
}

// ---------------------------------------------------------------------------------------------- Q3_K

/** Decodes the 6-bit signed scale of sub-block j (−32…31) from `block_q3_K.scales[12]` at `at`. */
// @ts-ignore: decorator
@inline
function q3Scale(at: usize, j: i32): i32 {
  const low = j < 8 ? <i32>load<u8>(at + j) & 0x0f : <i32>load<u8>(at + j - 8) >> 4;
  const high = (<i32>load<u8>(at + 8 + (j & 3)) >> (2 * (j >> 2))) & 3;
  return (low | (high << 4)) - 32;
}

/** Stores the 6-bit level of sub-block j as the reference does (scales zeroed first). */
function storeQ3Scale(at: usize, j: i32, level: i32): void {
  if (j < 8) store<u8>(at + j, <u8>(level & 0x0f));
  else store<u8>(at + j - 8, <u8>(<i32>load<u8>(at + j - 8) | ((level & 0x0f) << 4)));
  const k = at + 8 + (j & 3);
  store<u8>(k, <u8>(<i32>load<u8>(k) | ((level >> 4) << (2 * (j >> 2)))));
}

/** `block_q3_K`: hmask u8[32] @0, qs u8[64] @32, scales u8[12] @96, d @108. */
export function quantize_Q3_K(src: usize, dst: usize, rows: i32, n: i32, importance: usize): void {
  const perRow = n / QK_K;
  for (let row = 0; row < rows; row++) {
    for (let block = 0; block < perRow; block++) {
      const x = src + ((<usize>row * <usize>n + <usize>block * QK_K) << 2);
      const y = dst + (<usize>row * <usize>perRow + <usize>block) * 110;
      quantizeBlockQ3_K(x, y, importance == 0 ? 0 : importance + (<usize>block * QK_K << 2));
    }
  }
}

function quantizeBlockQ3_K(x: usize, y: usize, qw: usize): void {
  const scalesAt = y + 96;
  memory.fill(scalesAt, 0, 12);
  let d: f32;
  if (qw == 0) {
    // quantize_row_q3_K_ref
    for (let v = 0; v < 4; v++) {
      transposeGroups(x + <usize>v * 256, 64, 16, XT);
      v128.store(SUB_SCALES + <usize>v * 16, q3QuantsX4(16, 4, XT, LT));
      storeLaneBytes(LT, 16, LEVELS + <usize>v * 64, 16);
    }
    let maxScale: f32 = 0;
    let amax: f32 = 0;
    for (let j = 0; j < 16; j++) {
      const scale = loadF32(SUB_SCALES, j);
      const magnitude = Mathf.abs(scale);
      if (magnitude > amax) {
        amax = magnitude;
        maxScale = scale;
      }
    }
    if (maxScale != 0) {
      const inverse: f32 = <f32>-32 / maxScale;
      for (let j = 0; j < 16; j++) {
        const level = <i32>(<i8>nearestInt(inverse * loadF32(SUB_SCALES, j)));
        storeQ3Scale(scalesAt, j, max<i32>(-32, min<i32>(31, level)) + 32);
      }
      d = storeF16(y + 108, <f32>1 / inverse);
    } else {
      d = storeF16(y + 108, 0);
    }
  } else {
    // quantize_row_q3_K_impl
    const sigma2: f32 = (<f32>2 * superBlockSumSquares(x)) / <f32>QK_K;
    for (let v = 0; v < 4; v++) {
      transposeGroups(x + <usize>v * 256, 64, 16, XT);
      transposeGroups(qw + <usize>v * 256, 64, 16, IT);
      v128.store(SUB_WEIGHT_SUMS + <usize>v * 16, importanceWeights(16, sigma2));
      v128.store(SUB_SCALES + <usize>v * 16, qxQuantsX4(16, 4, XT, WT, LT));
      storeLaneBytes(LT, 16, LEVELS + <usize>v * 64, 16);
    }
    // make_qx_quants(16, 32, scales, Ls, 1, sw): one group, run in all four lanes.
    for (let i = 0; i < 16; i++) {
      const o = <usize>i << 4;
      v128.store(XT + o, v128.load32_splat(SUB_SCALES + (<usize>i << 2)));
      v128.store(WT + o, v128.load32_splat(SUB_WEIGHT_SUMS + (<usize>i << 2)));
    }
    const scaleOfScales = f32x4.extract_lane(qxQuantsX4(16, 32, XT, WT, LT), 0);
    for (let j = 0; j < 16; j++) storeQ3Scale(scalesAt, j, <i32>(<i8>i32x4.extract_lane(v128.load(LT + (<usize>j << 4)), 0)));
    d = storeF16(y + 108, scaleOfScales);
  }
  for (let j = 0; j < 16; j++) {
    const scale: f32 = d * <f32>q3Scale(scalesAt, j);
    if (scale == 0) continue;
    requantize16(x + (<usize>j << 6), scale, -4, 3, 4, LEVELS + (<usize>j << 4));
  }
  // High bit of element e goes to bit e/32 of hmask[e%32]; the low two bits stay in L.
  const three = i8x16.splat(3);
  const four = i8x16.splat(4);
  for (let m = 0; m < 32; m += 16) {
    let hmask = i8x16.splat(0);
    for (let j = 0; j < 8; j++) {
      const p = LEVELS + <usize>(32 * j + m);
      const level = v128.load(p);
      const high = i8x16.gt_s(level, three);
      const bit = <i8>(<i32>1 << j);
      hmask = v128.or(hmask, v128.and(high, i8x16.splat(bit)));
      v128.store(p, i8x16.sub(level, v128.and(high, four)));
    }
    v128.store(y + <usize>m, hmask);
  }
  packTwoBit(y + 32);
}

export function dequantize_Q3_K(src: usize, dst: usize, rows: i32, n: i32): void {
  const blocks = rows * (n / QK_K);
  for (let block = 0; block < blocks; block++) {
    const x = src + <usize>block * 110;
    const y = dst + ((<usize>block * QK_K) << 2);
    const d = loadF16(x + 108);
    for (let e = 0; e < QK_K; e++) {
      const scale: f32 = d * <f32>q3Scale(x + 96, e >> 4);
      const low = (<i32>load<u8>(x + 32 + 32 * (e >> 7) + (e & 31)) >> (2 * ((e >> 5) & 3))) & 3;
      const high = (<i32>load<u8>(x + (e & 31)) >> (e >> 5)) & 1;
      store<f32>(y + (<usize>e << 2), scale * <f32>(low - (high == 1 ? 0 : 4)));
    }
  }
}

// ------------------------------------------------------------------------------------- Q4_K and Q5_K

/** `get_scale_min_k4`: the 6-bit scale of sub-block j (0…7) from the 12-byte packed `scales` at `at`. */
// @ts-ignore: decorator
@inline
function scaleK4(at: usize, j: i32): i32 {
  return j < 4
    ? <i32>load<u8>(at + j) & 63
    : (<i32>load<u8>(at + j + 4) & 0x0f) | ((<i32>load<u8>(at + j - 4) >> 6) << 4);
}

/** `get_scale_min_k4`: the 6-bit min of sub-block j. */
// @ts-ignore: decorator
@inline
function minK4(at: usize, j: i32): i32 {
  return j < 4 ? <i32>load<u8>(at + j + 4) & 63 : (<i32>load<u8>(at + j + 4) >> 4) | ((<i32>load<u8>(at + j) >> 6) << 4);
}

/** Packs the eight 6-bit (scale, min) levels (u8 at SCALE_LEVELS, MIN_LEVELS) into the 12 zeroed bytes at `at`. */
function packScalesK4(at: usize, clampTo63: bool): void {
  for (let j = 0; j < 8; j++) {
    let scale = <i32>load<u8>(SCALE_LEVELS + j);
    let m = <i32>load<u8>(MIN_LEVELS + j);
    if (clampTo63) {
      scale = min<i32>(scale, 63);
      m = min<i32>(m, 63);
    }
    if (j < 4) {
      store<u8>(at + j, <u8>scale);
      store<u8>(at + j + 4, <u8>m);
    } else {
      store<u8>(at + j + 4, <u8>((scale & 0x0f) | ((m & 0x0f) << 4)));
      store<u8>(at + j - 4, <u8>(<i32>load<u8>(at + j - 4) | ((scale >> 4) << 6)));
      store<u8>(at + j, <u8>(<i32>load<u8>(at + j) | ((m >> 4) << 6)));
    }
  }
}

/**
 * The part of quantize_row_q4_K / q5_K (ref and impl) that chooses the eight sub-block (scale, min)
 * pairs, stores them with d and dmin at `y` (d @0, dmin @2, scales @4), and leaves the final levels of
 * all 256 elements in `LEVELS`.
 */
// @ts-ignore: decorator
@inline
function quantizeSuperBlockK4(x: usize, y: usize, nmax: i32, qw: usize): void {
  if (qw == 0) {
    // quantize_row_q4_K_ref / quantize_row_q5_K_ref: w = √(Σx²/32) + |x|.
    for (let v = 0; v < 2; v++) {
      const xt = XT + <usize>v * 512;
      const wt = WT + <usize>v * 512;
      transposeGroups(x + <usize>v * 512, 128, 32, xt);
      let sumSquares = f32x4.splat(0);
      for (let i = 0; i < 32; i++) {
        const value = v128.load(xt + (<usize>i << 4));
        sumSquares = f32x4.add(f32x4.mul(value, value), sumSquares);
      }
      const average = f32x4.sqrt(f32x4.div(sumSquares, f32x4.splat(32)));
      for (let i = 0; i < 32; i++) {
        const o = <usize>i << 4;
        v128.store(wt + o, f32x4.add(f32x4.abs(v128.load(xt + o)), average));
      }
      const lt = LT + <usize>v * 512;
      if (nmax == 15) {
        qkxQuantsX4(32, 15, xt, wt, lt, -1, ONE_TENTH, 20, false, false, SUB_SCALES + <usize>v * 16, SUB_MINS + <usize>v * 16);
      } else {
        qkxQuantsX4(32, 31, xt, wt, lt, -0.5, ONE_TENTH, 15, false, false, SUB_SCALES + <usize>v * 16, SUB_MINS + <usize>v * 16);
      }
      storeLaneBytes(lt, 32, LEVELS + <usize>v * 128, 32);
    }
    let maxScale: f32 = 0;
    let maxMin: f32 = 0;
    for (let j = 0; j < 8; j++) {
      const scale = loadF32(SUB_SCALES, j);
      const m = loadF32(SUB_MINS, j);
      if (scale > maxScale) maxScale = scale;
      if (m > maxMin) maxMin = m;
    }
    const inverseScale: f32 = maxScale > 0 ? <f32>63 / maxScale : 0;
    const inverseMin: f32 = maxMin > 0 ? <f32>63 / maxMin : 0;
    for (let j = 0; j < 8; j++) {
      store<u8>(SCALE_LEVELS + j, <u8>nearestInt(inverseScale * loadF32(SUB_SCALES, j)));
      store<u8>(MIN_LEVELS + j, <u8>nearestInt(inverseMin * loadF32(SUB_MINS, j)));
    }
    memory.fill(y + 4, 0, 12);
    packScalesK4(y + 4, true);
    storeF16(y, maxScale / 63);
    storeF16(y + 2, maxMin / 63);
  } else {
    // quantize_row_q4_K_impl / quantize_row_q5_K_impl
    const sigma2: f32 = (<f32>2 * superBlockSumSquares(x)) / <f32>QK_K;
    for (let v = 0; v < 2; v++) {
      transposeGroups(x + <usize>v * 512, 128, 32, XT);
      transposeGroups(qw + <usize>v * 512, 128, 32, IT);
      v128.store(SUB_WEIGHT_SUMS + <usize>v * 16, importanceWeights(32, sigma2));
      qkxQuantsX4(32, nmax, XT, WT, LT, RMIN_QKX3, RDELTA_QKX3, 36, false, true, SUB_SCALES + <usize>v * 16, SUB_MINS + <usize>v * 16);
      storeLaneBytes(LT, 32, LEVELS + <usize>v * 128, 32);
    }
    const scaleOfScales = qpQuants(8, 63, SUB_SCALES, SCALE_LEVELS, SUB_WEIGHT_SUMS);
    const scaleOfMins = qpQuants(8, 63, SUB_MINS, MIN_LEVELS, SUB_WEIGHT_SUMS);
    memory.fill(y + 4, 0, 12);
    // Q5_K's impl clamps with MIN(63, …); Q4_K's does not (make_qp_quants already caps at 63).
    packScalesK4(y + 4, nmax == 31);
    storeF16(y, scaleOfScales);
    storeF16(y + 2, scaleOfMins);
  }
  const d = loadF16(y);
  const dmin = loadF16(y + 2);
  for (let j = 0; j < 8; j++) {
    const scale: f32 = d * <f32>scaleK4(y + 4, j);
    if (scale == 0) continue;
    const offset: f32 = dmin * <f32>minK4(y + 4, j);
    const p = x + (<usize>j << 7);
    const q = LEVELS + (<usize>j << 5);
    requantizeShifted16(p, offset, scale, nmax, q, true);
    requantizeShifted16(p + 64, offset, scale, nmax, q + 16, false);
  }
}

/** `block_q4_K`: d @0, dmin @2, scales u8[12] @4, qs u8[128] @16. */
export function quantize_Q4_K(src: usize, dst: usize, rows: i32, n: i32, importance: usize): void {
  const perRow = n / QK_K;
  for (let row = 0; row < rows; row++) {
    for (let block = 0; block < perRow; block++) {
      const x = src + ((<usize>row * <usize>n + <usize>block * QK_K) << 2);
      const y = dst + (<usize>row * <usize>perRow + <usize>block) * 144;
      quantizeSuperBlockK4(x, y, 15, importance == 0 ? 0 : importance + (<usize>block * QK_K << 2));
      for (let c = 0; c < 4; c++) {
        for (let l = 0; l < 32; l += 16) {
          const p = LEVELS + <usize>(64 * c + l);
          v128.store(y + 16 + <usize>(32 * c + l), v128.or(v128.load(p), i8x16.shl(v128.load(p, 32), 4)));
        }
      }
    }
  }
}

export function dequantize_Q4_K(src: usize, dst: usize, rows: i32, n: i32): void {
  const blocks = rows * (n / QK_K);
  for (let block = 0; block < blocks; block++) {
    const x = src + <usize>block * 144;
    const y = dst + ((<usize>block * QK_K) << 2);
    const d = loadF16(x);
    const dmin = loadF16(x + 2);
    for (let c = 0; c < 4; c++) {
      const scaleLow: f32 = d * <f32>scaleK4(x + 4, 2 * c);
      const minLow: f32 = dmin * <f32>minK4(x + 4, 2 * c);
      const scaleHigh: f32 = d * <f32>scaleK4(x + 4, 2 * c + 1);
      const minHigh: f32 = dmin * <f32>minK4(x + 4, 2 * c + 1);
      for (let l = 0; l < 32; l++) {
        const byte = <i32>load<u8>(x + 16 + 32 * c + l);
        store<f32>(y + (<usize>(64 * c + l) << 2), scaleLow * <f32>(byte & 0x0f) - minLow);
        store<f32>(y + (<usize>(64 * c + 32 + l) << 2), scaleHigh * <f32>(byte >> 4) - minHigh);
      }
    }
  }
}

/** `block_q5_K`: d @0, dmin @2, scales u8[12] @4, qh u8[32] @16, qs u8[128] @48. */
export function quantize_Q5_K(src: usize, dst: usize, rows: i32, n: i32, importance: usize): void {
  const perRow = n / QK_K;
  const fifteen = i8x16.splat(15);
  for (let row = 0; row < rows; row++) {
    for (let block = 0; block < perRow; block++) {
      const x = src + ((<usize>row * <usize>n + <usize>block * QK_K) << 2);
      const y = dst + (<usize>row * <usize>perRow + <usize>block) * 176;
      quantizeSuperBlockK4(x, y, 31, importance == 0 ? 0 : importance + (<usize>block * QK_K << 2));
      for (let j = 0; j < 32; j += 16) {
        let qh = i8x16.splat(0);
        for (let c = 0; c < 4; c++) {
          const p = LEVELS + <usize>(64 * c + j);
          const low = v128.load(p);
          const high = v128.load(p, 32);
          qh = v128.or(qh, v128.or(i8x16.shl(i8x16.shr_u(low, 4), 2 * c), i8x16.shl(i8x16.shr_u(high, 4), 2 * c + 1)));
          v128.store(y + 48 + <usize>(32 * c + j), v128.or(v128.and(low, fifteen), i8x16.shl(high, 4)));
        }
        v128.store(y + 16 + <usize>j, qh);
      }
    }
  }
}

export function dequantize_Q5_K(src: usize, dst: usize, rows: i32, n: i32): void {
  const blocks = rows * (n / QK_K);
  for (let block = 0; block < blocks; block++) {
    const x = src + <usize>block * 176;
    const y = dst + ((<usize>block * QK_K) << 2);
    const d = loadF16(x);
    const dmin = loadF16(x + 2);
    for (let c = 0; c < 4; c++) {
      const scaleLow: f32 = d * <f32>scaleK4(x + 4, 2 * c);
      const minLow: f32 = dmin * <f32>minK4(x + 4, 2 * c);
      const scaleHigh: f32 = d * <f32>scaleK4(x + 4, 2 * c + 1);
      const minHigh: f32 = dmin * <f32>minK4(x + 4, 2 * c + 1);
      for (let l = 0; l < 32; l++) {
        const byte = <i32>load<u8>(x + 48 + 32 * c + l);
        const highBits = <i32>load<u8>(x + 16 + l);
        const low = (byte & 0x0f) + (((highBits >> (2 * c)) & 1) << 4);
        const high = (byte >> 4) + (((highBits >> (2 * c + 1)) & 1) << 4);
        store<f32>(y + (<usize>(64 * c + l) << 2), scaleLow * <f32>low - minLow);
        store<f32>(y + (<usize>(64 * c + 32 + l) << 2), scaleHigh * <f32>high - minHigh);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------- Q6_K

/** `block_q6_K`: ql u8[128] @0, qh u8[64] @128, scales int8[16] @192, d @208. */
export function quantize_Q6_K(src: usize, dst: usize, rows: i32, n: i32, importance: usize): void {
  const perRow = n / QK_K;
  for (let row = 0; row < rows; row++) {
    for (let block = 0; block < perRow; block++) {
      const x = src + ((<usize>row * <usize>n + <usize>block * QK_K) << 2);
      const y = dst + (<usize>row * <usize>perRow + <usize>block) * 210;
      quantizeBlockQ6_K(x, y, importance == 0 ? 0 : importance + (<usize>block * QK_K << 2));
    }
  }
}

function quantizeBlockQ6_K(x: usize, y: usize, qw: usize): void {
  for (let v = 0; v < 4; v++) {
    transposeGroups(x + <usize>v * 256, 64, 16, XT);
    // The impl passes the raw importance as make_qx_quants weights (its σ² weighting is commented out).
    if (qw != 0) transposeGroups(qw + <usize>v * 256, 64, 16, WT);
    v128.store(SUB_SCALES + <usize>v * 16, qxQuantsX4(16, 32, XT, qw == 0 ? 0 : WT, LT));
    storeLaneBytes(LT, 16, LEVELS + <usize>v * 64, 16);
  }
  let maxScale: f32 = 0;
  let maxMagnitude: f32 = 0;
  for (let j = 0; j < 16; j++) {
    const scale = loadF32(SUB_SCALES, j);
    const magnitude = Mathf.abs(scale);
    if (magnitude > maxMagnitude) {
      maxMagnitude = magnitude;
      maxScale = scale;
    }
  }
  if (maxMagnitude < GROUP_MAX_EPS) {
    memory.fill(y, 0, 210);
    return;
  }
  const inverse: f32 = <f32>-128 / maxScale;
  const d = storeF16(y + 208, <f32>1 / inverse);
  for (let j = 0; j < 16; j++) store<u8>(y + 192 + j, <u8>min<i32>(nearestInt(inverse * loadF32(SUB_SCALES, j)), 127));
  for (let j = 0; j < 16; j++) {
    const scale: f32 = d * <f32>load<i8>(y + 192 + j);
    if (scale == 0) continue;
    requantize16(x + (<usize>j << 6), scale, -32, 31, 32, LEVELS + (<usize>j << 4));
  }
  const fifteen = i8x16.splat(15);
  for (let half = 0; half < 2; half++) {
    const e = LEVELS + <usize>(128 * half);
    const ql = y + <usize>(64 * half);
    const qh = y + 128 + <usize>(32 * half);
    for (let l = 0; l < 32; l += 16) {
      const q1 = v128.load(e + l);
      const q2 = v128.load(e + l, 32);
      const q3 = v128.load(e + l, 64);
      const q4 = v128.load(e + l, 96);
      v128.store(ql + l, v128.or(v128.and(q1, fifteen), i8x16.shl(q3, 4)));
      v128.store(ql + l + 32, v128.or(v128.and(q2, fifteen), i8x16.shl(q4, 4)));
      const high = v128.or(
        v128.or(i8x16.shr_u(q1, 4), i8x16.shl(i8x16.shr_u(q2, 4), 2)),
        v128.or(i8x16.shl(i8x16.shr_u(q3, 4), 4), i8x16.shl(i8x16.shr_u(q4, 4), 6)),
      );
      v128.store(qh + l, high);
    }
  }
}

export function dequantize_Q6_K(src: usize, dst: usize, rows: i32, n: i32): void {
  const blocks = rows * (n / QK_K);
  for (let block = 0; block < blocks; block++) {
    const x = src + <usize>block * 210;
    const y = dst + ((<usize>block * QK_K) << 2);
    const d = loadF16(x + 208);
    for (let half = 0; half < 2; half++) {
      const ql = x + <usize>(64 * half);
      const qh = x + 128 + <usize>(32 * half);
      const scales = x + 192 + <usize>(8 * half);
      const out = y + (<usize>(128 * half) << 2);
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const high = <i32>load<u8>(qh + l);
        const low1 = <i32>load<u8>(ql + l);
        const low2 = <i32>load<u8>(ql + l + 32);
        const q1 = ((low1 & 0x0f) | ((high & 3) << 4)) - 32;
        const q2 = ((low2 & 0x0f) | (((high >> 2) & 3) << 4)) - 32;
        const q3 = ((low1 >> 4) | (((high >> 4) & 3) << 4)) - 32;
        const q4 = ((low2 >> 4) | (((high >> 6) & 3) << 4)) - 32;
        store<f32>(out + (<usize>l << 2), (d * <f32>load<i8>(scales + is)) * <f32>q1);
        store<f32>(out + (<usize>(l + 32) << 2), (d * <f32>load<i8>(scales + is + 2)) * <f32>q2);
        store<f32>(out + (<usize>(l + 64) << 2), (d * <f32>load<i8>(scales + is + 4)) * <f32>q3);
        store<f32>(out + (<usize>(l + 96) << 2), (d * <f32>load<i8>(scales + is + 6)) * <f32>q4);
      }
    }
  }
}
