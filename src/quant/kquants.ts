/**
 * The 256-element K-quants Q2_K, Q3_K, Q4_K, Q5_K, Q6_K. Layouts: `block_q2_K` … `block_q6_K` in
 * ggml/src/ggml-common.h (specs/gguf.md §4.1). Algorithms: `quantize_row_q*_K_ref` without importance
 * weights and `quantize_row_q*_K_impl` with them, in ggml/src/ggml-quants.c (§4.4), which is what
 * `quantize_q*_K` picks for llama-quantize.
 *
 * Unlike the legacy quants, the K-quants quantize the values against the fp16-rounded stored scales
 * (the final "requantize" pass of each function), so the reconstruction is the nearest grid point of
 * the decoded block. Row kernels; nothing is allocated per call.
 */

import * as kquantHelpers from './kquant-helpers.js';
import * as ggmlMath from './ggml-math.js';

// Module-local aliases of the hot helpers: under some loaders (tsx) every use of an imported binding
// is a getter call, which keeps V8 from inlining them into the inner loops; a local const is inlined.
const { clamp, fround, GROUP_MAX_EPS, nearestInt, readF16, truncateToInt8, writeF16 } = ggmlMath;
const { makeQ3Quants, makeQkx2Quants, makeQkx3Quants, makeQpQuants, makeQxQuants } = kquantHelpers;

const QK_K = 256;

/** Per-super-block scratch (the C locals `L`, `weights`, `scales`, `mins`, `sw`, `Ls`, `Lm`). */
const levels = new Uint8Array(QK_K);
const signedLevels = new Int8Array(QK_K);
const weights = new Float32Array(32);
const subScales = new Float32Array(16);
const subMins = new Float32Array(16);
const subWeightSums = new Float32Array(16);
const scaleLevels = new Uint8Array(16);
const minLevels = new Uint8Array(16);
const scaleLevelsSigned = new Int8Array(16);

const ONE_TENTH = fround(0.1);
const RMIN_QKX3 = fround(-0.9);
const RDELTA_QKX3 = fround(0.05);

/** Σx² over the 256 values of a super-block, summed in order as the `_impl` functions do. */
function superBlockSumSquares(src: Float32Array, x: number): number {
  let sum = 0;
  for (let l = 0; l < QK_K; l++) {
    const value = src[x + l]!;
    sum = fround(sum + fround(value * value));
  }
  return sum;
}

/** Packs 2-bit levels `L[0..256)` into `qs[64]` (Q2_K and Q3_K: element 128n+32j+l in bits 2j of qs[32n+l]). */
function packTwoBit(L: Uint8Array | Int8Array, dst: Uint8Array, offset: number): void {
  for (let n = 0; n < QK_K; n += 128) {
    for (let l = 0; l < 32; l++) {
      dst[offset + n / 4 + l] = L[n + l]! | (L[n + l + 32]! << 2) | (L[n + l + 64]! << 4) | (L[n + l + 96]! << 6);
    }
  }
}

// ---------------------------------------------------------------------------------------------- Q2_K

/** `block_q2_K`: scales u8[16] @0 (low nibble scale, high nibble min), qs u8[64] @16, d @80, dmin @82. */
export function quantizeRowQ2_K(
  src: Float32Array,
  srcOffset: number,
  dst: Uint8Array,
  dstOffset: number,
  n: number,
  importance: Float32Array | null,
): void {
  const blocks = n / QK_K;
  for (let block = 0; block < blocks; block++) {
    const x = srcOffset + block * QK_K;
    const y = dstOffset + block * 84;
    let d: number;
    let dmin: number;
    if (importance === null) {
      // quantize_row_q2_K_ref
      let maxScale = 0;
      let maxMin = 0;
      for (let j = 0; j < 16; j++) {
        for (let l = 0; l < 16; l++) weights[l] = Math.abs(src[x + 16 * j + l]!);
        const scale = makeQkx2Quants(16, 3, src, x + 16 * j, weights, levels, 16 * j, subMins, j, -0.5, ONE_TENTH, 15, true);
        subScales[j] = scale;
        if (subScales[j]! > maxScale) maxScale = subScales[j]!;
        if (subMins[j]! > maxMin) maxMin = subMins[j]!;
      }
      if (maxScale > 0) {
        const inverse = fround(15 / maxScale);
        for (let j = 0; j < 16; j++) dst[y + j] = nearestInt(fround(inverse * subScales[j]!));
        d = writeF16(dst, y + 80, fround(maxScale / 15));
      } else {
        for (let j = 0; j < 16; j++) dst[y + j] = 0;
        d = writeF16(dst, y + 80, 0);
      }
      if (maxMin > 0) {
        const inverse = fround(15 / maxMin);
        for (let j = 0; j < 16; j++) dst[y + j] = dst[y + j]! | (nearestInt(fround(inverse * subMins[j]!)) << 4);
        dmin = writeF16(dst, y + 82, fround(maxMin / 15));
      } else {
        dmin = writeF16(dst, y + 82, 0);
      }
    } else {
      // quantize_row_q2_K_impl: σ² = Σx²/256 here (no factor 2, unlike the other K-quants).
      const sigma2 = fround(superBlockSumSquares(src, x) / QK_K);
      for (let j = 0; j < 16; j++) {
        const w = block * QK_K + 16 * j;
        let sumWeights = 0;
        for (let l = 0; l < 16; l++) {
          const value = src[x + 16 * j + l]!;
          weights[l] = importance[w + l]! * fround(Math.sqrt(fround(sigma2 + fround(value * value))));
        }
        for (let l = 0; l < 16; l++) sumWeights = fround(sumWeights + weights[l]!);
        subWeightSums[j] = sumWeights;
        subScales[j] = makeQkx3Quants(16, 3, src, x + 16 * j, weights, levels, 16 * j, subMins, j, RMIN_QKX3, RDELTA_QKX3, 36);
      }
      const scaleOfScales = makeQpQuants(16, 15, subScales, scaleLevels, subWeightSums);
      const scaleOfMins = makeQpQuants(16, 15, subMins, minLevels, subWeightSums);
      d = writeF16(dst, y + 80, scaleOfScales);
      dmin = writeF16(dst, y + 82, scaleOfMins);
      for (let j = 0; j < 16; j++) dst[y + j] = scaleLevels[j]! | (minLevels[j]! << 4);
    }
    // Requantize every element against the stored scales (sub-blocks with a zero scale keep the
    // levels make_qkx*_quants chose).
    for (let j = 0; j < 16; j++) {
      const packed = dst[y + j]!;
      const scale = fround(d * (packed & 0x0f));
      if (scale === 0) continue;
      const offset = fround(dmin * (packed >>> 4));
      for (let i = 0; i < 16; i++) {
        let level = nearestInt(fround(fround(src[x + 16 * j + i]! + offset) / scale));
        level = clamp(level, 0, 3);
        levels[16 * j + i] = level;
      }
    }
    packTwoBit(levels, dst, y + 16);
  }
}

export function dequantizeRowQ2_K(src: Uint8Array, srcOffset: number, dst: Float32Array, dstOffset: number, n: number): void {
  const blocks = n / QK_K;
  for (let block = 0; block < blocks; block++) {
    const x = srcOffset + block * 84;
    const d = readF16(src, x + 80);
    const dmin = readF16(src, x + 82);
    for (let e = 0; e < QK_K; e++) {
      const packed = src[x + (e >>> 4)]!;
      const scale = fround(d * (packed & 0x0f));
      const offset = fround(dmin * (packed >>> 4));
      const q = (src[x + 16 + 32 * (e >>> 7) + (e & 31)]! >>> (2 * ((e >>> 5) & 3))) & 3;
      dst[dstOffset + block * QK_K + e] = fround(scale * q) - offset;
    }
  }
}

// ---------------------------------------------------------------------------------------------- Q3_K

/** Decodes the 6-bit signed scale of sub-block j (−32…31) from `block_q3_K.scales[12]`. */
function q3Scale(bytes: Uint8Array, scalesOffset: number, j: number): number {
  const low = j < 8 ? bytes[scalesOffset + j]! & 0x0f : bytes[scalesOffset + j - 8]! >>> 4;
  const high = (bytes[scalesOffset + 8 + (j % 4)]! >>> (2 * (j >>> 2))) & 3;
  return (low | (high << 4)) - 32;
}

/** `block_q3_K`: hmask u8[32] @0, qs u8[64] @32, scales u8[12] @96, d @108. */
export function quantizeRowQ3_K(
  src: Float32Array,
  srcOffset: number,
  dst: Uint8Array,
  dstOffset: number,
  n: number,
  importance: Float32Array | null,
): void {
  const blocks = n / QK_K;
  for (let block = 0; block < blocks; block++) {
    const x = srcOffset + block * QK_K;
    const y = dstOffset + block * 110;
    const scalesAt = y + 96;
    for (let k = 0; k < 12; k++) dst[scalesAt + k] = 0;
    let d: number;
    if (importance === null) {
      // quantize_row_q3_K_ref
      let maxScale = 0;
      let amax = 0;
      for (let j = 0; j < 16; j++) {
        subScales[j] = makeQ3Quants(16, 4, src, x + 16 * j, signedLevels, 16 * j);
        const magnitude = Math.abs(subScales[j]!);
        if (magnitude > amax) {
          amax = magnitude;
          maxScale = subScales[j]!;
        }
      }
      if (maxScale !== 0) {
        const inverse = fround(-32 / maxScale);
        for (let j = 0; j < 16; j++) {
          let level = truncateToInt8(nearestInt(fround(inverse * subScales[j]!)));
          level = clamp(level, -32, 31) + 32;
          storeQ3Scale(dst, scalesAt, j, level);
        }
        d = writeF16(dst, y + 108, fround(1 / inverse));
      } else {
        d = writeF16(dst, y + 108, 0);
      }
    } else {
      // quantize_row_q3_K_impl
      const sigma2 = fround(fround(2 * superBlockSumSquares(src, x)) / QK_K);
      for (let j = 0; j < 16; j++) {
        const w = block * QK_K + 16 * j;
        for (let l = 0; l < 16; l++) {
          const value = src[x + 16 * j + l]!;
          weights[l] = importance[w + l]! * fround(Math.sqrt(fround(sigma2 + fround(value * value))));
        }
        let sumWeights = 0;
        for (let l = 0; l < 16; l++) sumWeights = fround(sumWeights + weights[l]!);
        subWeightSums[j] = sumWeights;
        subScales[j] = makeQxQuants(16, 4, src, x + 16 * j, signedLevels, 16 * j, weights, 0);
      }
      const scaleOfScales = makeQxQuants(16, 32, subScales, 0, scaleLevelsSigned, 0, subWeightSums, 0);
      for (let j = 0; j < 16; j++) storeQ3Scale(dst, scalesAt, j, scaleLevelsSigned[j]!);
      d = writeF16(dst, y + 108, scaleOfScales);
    }
    for (let j = 0; j < 16; j++) {
      const scale = fround(d * q3Scale(dst, scalesAt, j));
      if (scale === 0) continue;
      for (let i = 0; i < 16; i++) {
        let level = nearestInt(fround(src[x + 16 * j + i]! / scale));
        level = clamp(level, -4, 3);
        signedLevels[16 * j + i] = level + 4;
      }
    }
    // High bit of element e goes to bit e/32 of hmask[e%32]; the low two bits stay in L.
    for (let m = 0; m < 32; m++) dst[y + m] = 0;
    for (let e = 0; e < QK_K; e++) {
      if (signedLevels[e]! > 3) {
        dst[y + (e & 31)] = dst[y + (e & 31)]! | (1 << (e >>> 5));
        signedLevels[e] = signedLevels[e]! - 4;
      }
    }
    packTwoBit(signedLevels, dst, y + 32);
  }
}

/** Stores the 6-bit level (0…63) of sub-block j: low nibble in scales[j%8] (j<8 low half), high 2 bits in scales[8+j%4]. */
function storeQ3Scale(dst: Uint8Array, scalesAt: number, j: number, level: number): void {
  if (j < 8) dst[scalesAt + j] = level & 0x0f;
  else dst[scalesAt + j - 8] = dst[scalesAt + j - 8]! | ((level & 0x0f) << 4);
  dst[scalesAt + 8 + (j % 4)] = dst[scalesAt + 8 + (j % 4)]! | ((level >> 4) << (2 * (j >>> 2)));
}

export function dequantizeRowQ3_K(src: Uint8Array, srcOffset: number, dst: Float32Array, dstOffset: number, n: number): void {
  const blocks = n / QK_K;
  for (let block = 0; block < blocks; block++) {
    const x = srcOffset + block * 110;
    const d = readF16(src, x + 108);
    for (let e = 0; e < QK_K; e++) {
      const scale = fround(d * q3Scale(src, x + 96, e >>> 4));
      const low = (src[x + 32 + 32 * (e >>> 7) + (e & 31)]! >>> (2 * ((e >>> 5) & 3))) & 3;
      const high = (src[x + (e & 31)]! >>> (e >>> 5)) & 1;
      dst[dstOffset + block * QK_K + e] = scale * (low - (high === 1 ? 0 : 4));
    }
  }
}

// ------------------------------------------------------------------------------------- Q4_K and Q5_K

/** `get_scale_min_k4`: the 6-bit scale of sub-block j (0…7) from the 12-byte packed `scales`. */
function scaleK4(bytes: Uint8Array, at: number, j: number): number {
  return j < 4 ? bytes[at + j]! & 63 : (bytes[at + j + 4]! & 0x0f) | ((bytes[at + j - 4]! >>> 6) << 4);
}

/** `get_scale_min_k4`: the 6-bit min of sub-block j. */
function minK4(bytes: Uint8Array, at: number, j: number): number {
  return j < 4 ? bytes[at + j + 4]! & 63 : (bytes[at + j + 4]! >>> 4) | ((bytes[at + j]! >>> 6) << 4);
}

/** Packs the eight 6-bit (scale, min) pairs into the 12 bytes at `at` (Q4_K/Q5_K). */
function packScalesK4(dst: Uint8Array, at: number, scales: Uint8Array, minimums: Uint8Array, clampTo63: boolean): void {
  for (let j = 0; j < 8; j++) {
    let scale = scales[j]!;
    let minimum = minimums[j]!;
    if (clampTo63) {
      scale = Math.min(scale, 63);
      minimum = Math.min(minimum, 63);
    }
    if (j < 4) {
      dst[at + j] = scale;
      dst[at + j + 4] = minimum;
    } else {
      dst[at + j + 4] = (scale & 0x0f) | ((minimum & 0x0f) << 4);
      dst[at + j - 4] = dst[at + j - 4]! | ((scale >>> 4) << 6);
      dst[at + j] = dst[at + j]! | ((minimum >>> 4) << 6);
    }
  }
}

/**
 * The part of quantize_row_q4_K / q5_K (ref and impl) that chooses the eight sub-block (scale, min)
 * pairs, stores them with d and dmin at `y` (d @0, dmin @2, scales @4), and leaves the final levels of
 * all 256 elements in `levels`.
 */
function quantizeSuperBlockK4(
  src: Float32Array,
  x: number,
  dst: Uint8Array,
  y: number,
  nmax: 15 | 31,
  importance: Float32Array | null,
  importanceOffset: number,
): void {
  if (importance === null) {
    // quantize_row_q4_K_ref / quantize_row_q5_K_ref
    let maxScale = 0;
    let maxMin = 0;
    for (let j = 0; j < 8; j++) {
      let sumSquares = 0;
      for (let l = 0; l < 32; l++) {
        const value = src[x + 32 * j + l]!;
        sumSquares = fround(sumSquares + fround(value * value));
      }
      const averageMagnitude = fround(Math.sqrt(fround(sumSquares / 32)));
      for (let l = 0; l < 32; l++) weights[l] = averageMagnitude + Math.abs(src[x + 32 * j + l]!);
      subScales[j] =
        nmax === 15
          ? makeQkx2Quants(32, 15, src, x + 32 * j, weights, levels, 32 * j, subMins, j, -1, ONE_TENTH, 20, false)
          : makeQkx2Quants(32, 31, src, x + 32 * j, weights, levels, 32 * j, subMins, j, -0.5, ONE_TENTH, 15, false);
      if (subScales[j]! > maxScale) maxScale = subScales[j]!;
      if (subMins[j]! > maxMin) maxMin = subMins[j]!;
    }
    const inverseScale = maxScale > 0 ? fround(63 / maxScale) : 0;
    const inverseMin = maxMin > 0 ? fround(63 / maxMin) : 0;
    for (let j = 0; j < 8; j++) {
      // (uint8_t) nearest_int(…), then MIN(63, …): the Uint8Array store does the uint8_t wrap.
      scaleLevels[j] = nearestInt(fround(inverseScale * subScales[j]!));
      minLevels[j] = nearestInt(fround(inverseMin * subMins[j]!));
    }
    for (let k = 0; k < 12; k++) dst[y + 4 + k] = 0;
    packScalesK4(dst, y + 4, scaleLevels, minLevels, true);
    writeF16(dst, y, fround(maxScale / 63));
    writeF16(dst, y + 2, fround(maxMin / 63));
  } else {
    // quantize_row_q4_K_impl / quantize_row_q5_K_impl
    const sigma2 = fround(fround(2 * superBlockSumSquares(src, x)) / QK_K);
    for (let j = 0; j < 8; j++) {
      const w = importanceOffset + 32 * j;
      for (let l = 0; l < 32; l++) {
        const value = src[x + 32 * j + l]!;
        weights[l] = importance[w + l]! * fround(Math.sqrt(fround(sigma2 + fround(value * value))));
      }
      let sumWeights = 0;
      for (let l = 0; l < 32; l++) sumWeights = fround(sumWeights + weights[l]!);
      subWeightSums[j] = sumWeights;
      subScales[j] = makeQkx3Quants(32, nmax, src, x + 32 * j, weights, levels, 32 * j, subMins, j, RMIN_QKX3, RDELTA_QKX3, 36);
    }
    const scaleOfScales = makeQpQuants(8, 63, subScales, scaleLevels, subWeightSums);
    const scaleOfMins = makeQpQuants(8, 63, subMins, minLevels, subWeightSums);
    for (let k = 0; k < 12; k++) dst[y + 4 + k] = 0;
    // Q5_K's impl clamps with MIN(63, …); Q4_K's does not (make_qp_quants already caps at 63).
    packScalesK4(dst, y + 4, scaleLevels, minLevels, nmax === 31);
    writeF16(dst, y, scaleOfScales);
    writeF16(dst, y + 2, scaleOfMins);
  }
  const d = readF16(dst, y);
  const dmin = readF16(dst, y + 2);
  for (let j = 0; j < 8; j++) {
    const scale = fround(d * scaleK4(dst, y + 4, j));
    if (scale === 0) continue;
    const offset = fround(dmin * minK4(dst, y + 4, j));
    for (let i = 0; i < 32; i++) {
      let level = nearestInt(fround(fround(src[x + 32 * j + i]! + offset) / scale));
      level = clamp(level, 0, nmax);
      levels[32 * j + i] = level;
    }
  }
}

/** `block_q4_K`: d @0, dmin @2, scales u8[12] @4, qs u8[128] @16. */
export function quantizeRowQ4_K(
  src: Float32Array,
  srcOffset: number,
  dst: Uint8Array,
  dstOffset: number,
  n: number,
  importance: Float32Array | null,
): void {
  const blocks = n / QK_K;
  for (let block = 0; block < blocks; block++) {
    const x = srcOffset + block * QK_K;
    const y = dstOffset + block * 144;
    quantizeSuperBlockK4(src, x, dst, y, 15, importance, block * QK_K);
    for (let c = 0; c < 4; c++) {
      for (let l = 0; l < 32; l++) dst[y + 16 + 32 * c + l] = levels[64 * c + l]! | (levels[64 * c + 32 + l]! << 4);
    }
  }
}

export function dequantizeRowQ4_K(src: Uint8Array, srcOffset: number, dst: Float32Array, dstOffset: number, n: number): void {
  const blocks = n / QK_K;
  for (let block = 0; block < blocks; block++) {
    const x = srcOffset + block * 144;
    const y = dstOffset + block * QK_K;
    const d = readF16(src, x);
    const dmin = readF16(src, x + 2);
    for (let c = 0; c < 4; c++) {
      const scaleLow = fround(d * scaleK4(src, x + 4, 2 * c));
      const minLow = fround(dmin * minK4(src, x + 4, 2 * c));
      const scaleHigh = fround(d * scaleK4(src, x + 4, 2 * c + 1));
      const minHigh = fround(dmin * minK4(src, x + 4, 2 * c + 1));
      for (let l = 0; l < 32; l++) {
        const byte = src[x + 16 + 32 * c + l]!;
        dst[y + 64 * c + l] = fround(scaleLow * (byte & 0x0f)) - minLow;
        dst[y + 64 * c + 32 + l] = fround(scaleHigh * (byte >>> 4)) - minHigh;
      }
    }
  }
}

/** `block_q5_K`: d @0, dmin @2, scales u8[12] @4, qh u8[32] @16, qs u8[128] @48. */
export function quantizeRowQ5_K(
  src: Float32Array,
  srcOffset: number,
  dst: Uint8Array,
  dstOffset: number,
  n: number,
  importance: Float32Array | null,
): void {
  const blocks = n / QK_K;
  for (let block = 0; block < blocks; block++) {
    const x = srcOffset + block * QK_K;
    const y = dstOffset + block * 176;
    quantizeSuperBlockK4(src, x, dst, y, 31, importance, block * QK_K);
    for (let j = 0; j < 32; j++) dst[y + 16 + j] = 0;
    for (let c = 0; c < 4; c++) {
      for (let j = 0; j < 32; j++) {
        let low = levels[64 * c + j]!;
        let high = levels[64 * c + j + 32]!;
        if (low > 15) {
          low -= 16;
          dst[y + 16 + j] = dst[y + 16 + j]! | (1 << (2 * c));
        }
        if (high > 15) {
          high -= 16;
          dst[y + 16 + j] = dst[y + 16 + j]! | (2 << (2 * c));
        }
        dst[y + 48 + 32 * c + j] = low | (high << 4);
      }
    }
  }
}

export function dequantizeRowQ5_K(src: Uint8Array, srcOffset: number, dst: Float32Array, dstOffset: number, n: number): void {
  const blocks = n / QK_K;
  for (let block = 0; block < blocks; block++) {
    const x = srcOffset + block * 176;
    const y = dstOffset + block * QK_K;
    const d = readF16(src, x);
    const dmin = readF16(src, x + 2);
    for (let c = 0; c < 4; c++) {
      const scaleLow = fround(d * scaleK4(src, x + 4, 2 * c));
      const minLow = fround(dmin * minK4(src, x + 4, 2 * c));
      const scaleHigh = fround(d * scaleK4(src, x + 4, 2 * c + 1));
      const minHigh = fround(dmin * minK4(src, x + 4, 2 * c + 1));
      for (let l = 0; l < 32; l++) {
        const byte = src[x + 48 + 32 * c + l]!;
        const highBits = src[x + 16 + l]!;
        const low = (byte & 0x0f) + ((highBits >>> (2 * c)) & 1 ? 16 : 0);
        const high = (byte >>> 4) + ((highBits >>> (2 * c + 1)) & 1 ? 16 : 0);
        dst[y + 64 * c + l] = fround(scaleLow * low) - minLow;
        dst[y + 64 * c + 32 + l] = fround(scaleHigh * high) - minHigh;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------- Q6_K

/** `block_q6_K`: ql u8[128] @0, qh u8[64] @128, scales int8[16] @192, d @208. */
export function quantizeRowQ6_K(
  src: Float32Array,
  srcOffset: number,
  dst: Uint8Array,
  dstOffset: number,
  n: number,
  importance: Float32Array | null,
): void {
  const blocks = n / QK_K;
  for (let block = 0; block < blocks; block++) {
    const x = srcOffset + block * QK_K;
    const y = dstOffset + block * 210;
    let maxScale = 0;
    let maxMagnitude = 0;
    for (let sub = 0; sub < 16; sub++) {
      // The impl passes the raw importance as make_qx_quants weights (its σ² weighting is commented out).
      subScales[sub] = makeQxQuants(16, 32, src, x + 16 * sub, signedLevels, 16 * sub, importance, block * QK_K + 16 * sub);
      const magnitude = Math.abs(subScales[sub]!);
      if (magnitude > maxMagnitude) {
        maxMagnitude = magnitude;
        maxScale = subScales[sub]!;
      }
    }
    if (maxMagnitude < GROUP_MAX_EPS) {
      for (let k = 0; k < 210; k++) dst[y + k] = 0;
      continue;
    }
    const inverse = fround(-128 / maxScale);
    const d = writeF16(dst, y + 208, fround(1 / inverse));
    for (let sub = 0; sub < 16; sub++) {
      const level = nearestInt(fround(inverse * subScales[sub]!));
      dst[y + 192 + sub] = Math.min(level, 127);
    }
    for (let j = 0; j < 16; j++) {
      const scale = fround(d * ((dst[y + 192 + j]! << 24) >> 24));
      if (scale === 0) continue;
      for (let i = 0; i < 16; i++) {
        let level = nearestInt(fround(src[x + 16 * j + i]! / scale));
        level = clamp(level, -32, 31);
        signedLevels[16 * j + i] = level + 32;
      }
    }
    for (let half = 0; half < 2; half++) {
      const e = 128 * half;
      const ql = y + 64 * half;
      const qh = y + 128 + 32 * half;
      for (let l = 0; l < 32; l++) {
        const q1 = signedLevels[e + l]!;
        const q2 = signedLevels[e + l + 32]!;
        const q3 = signedLevels[e + l + 64]!;
        const q4 = signedLevels[e + l + 96]!;
        dst[ql + l] = (q1 & 0x0f) | ((q3 & 0x0f) << 4);
        dst[ql + l + 32] = (q2 & 0x0f) | ((q4 & 0x0f) << 4);
        dst[qh + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
      }
    }
  }
}

export function dequantizeRowQ6_K(src: Uint8Array, srcOffset: number, dst: Float32Array, dstOffset: number, n: number): void {
  const blocks = n / QK_K;
  for (let block = 0; block < blocks; block++) {
    const x = srcOffset + block * 210;
    const y = dstOffset + block * QK_K;
    const d = readF16(src, x + 208);
    for (let half = 0; half < 2; half++) {
      const ql = x + 64 * half;
      const qh = x + 128 + 32 * half;
      const scales = x + 192 + 8 * half;
      const out = y + 128 * half;
      for (let l = 0; l < 32; l++) {
        const is = l >>> 4;
        const high = src[qh + l]!;
        const q1 = ((src[ql + l]! & 0x0f) | ((high & 3) << 4)) - 32;
        const q2 = ((src[ql + l + 32]! & 0x0f) | (((high >>> 2) & 3) << 4)) - 32;
        const q3 = ((src[ql + l]! >>> 4) | (((high >>> 4) & 3) << 4)) - 32;
        const q4 = ((src[ql + l + 32]! >>> 4) | (((high >>> 6) & 3) << 4)) - 32;
        dst[out + l] = fround(d * ((src[scales + is]! << 24) >> 24)) * q1;
        dst[out + l + 32] = fround(d * ((src[scales + is + 2]! << 24) >> 24)) * q2;
        dst[out + l + 64] = fround(d * ((src[scales + is + 4]! << 24) >> 24)) * q3;
        dst[out + l + 96] = fround(d * ((src[scales + is + 6]! << 24) >> 24)) * q4;
      }
    }
  }
}
