/**
 * The 4-bit non-linear quants IQ4_NL (32-element blocks) and IQ4_XS (256-element super-blocks of eight
 * 32-element blocks with 6-bit sub-scales). Layouts: `block_iq4_nl` (d @0, qs u8[16] @2) and
 * `block_iq4_xs` (d @0, scales_h u16 @2, scales_l u8[4] @4, qs u8[128] @8) in ggml/src/ggml-common.h.
 * Both are quantized by `quantize_row_iq4_nl_impl` in ggml/src/ggml-quants.c, reached through
 * `quantize_iq4_nl` / `quantize_iq4_xs` from `ggml_quantize_chunk` — with `ntry = 7` and x² weights
 * when there is no importance matrix (not the `_ref` functions, which pass ntry = −1).
 */

import * as ggmlMath from './ggml-math.js';
import * as kquantHelpers from './kquant-helpers.js';

// Module-local aliases of the hot helpers: under some loaders (tsx) every use of an imported binding
// is a getter call, which keeps V8 from inlining them into the inner loops; a local const is inlined.
const { clamp, fround, GROUP_MAX_EPS, nearestInt, readF16, writeF16 } = ggmlMath;
const { ratioCannotBeat } = kquantHelpers;

/** `kvalues_iq4nl` (ggml-common.h): the 16 non-linear levels, sorted. */
export const IQ4_NL_VALUES: Readonly<Int8Array> = Int8Array.of(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113);
const LEVELS = IQ4_NL_VALUES as Int8Array;
/** Sums of neighbouring levels: x picks level i once 2x reaches `LEVELS[i-1] + LEVELS[i]`. */
const MIDPOINT_SUMS = new Int16Array(16);
for (let i = 1; i < 16; i++) MIDPOINT_SUMS[i] = LEVELS[i - 1]! + LEVELS[i]!;
/** 2x stays at level i while LOWER_BOUNDS[i] ≤ 2x < UPPER_BOUNDS[i]. */
const LOWER_BOUNDS = Float64Array.from({ length: 16 }, (_, i) => (i === 0 ? Number.NEGATIVE_INFINITY : MIDPOINT_SUMS[i]!));
const UPPER_BOUNDS = Float64Array.from({ length: 16 }, (_, i) => (i === 15 ? Number.POSITIVE_INFINITY : MIDPOINT_SUMS[i + 1]!));

const NTRY = 7;
const BLOCK = 32;

const blockWeights = new Float32Array(BLOCK);
const blockScales = new Float32Array(8);
const levelIndices = new Uint8Array(256);
/** Level indices of the current trial scale. */
const trialIndices = new Uint8Array(BLOCK);

/**
 * `best_index_int8(16, kvalues_iq4nl, x)`: the index of the nearest level, ties to the upper one. ggml
 * compares `x + x` with the integer sum of two neighbouring levels (both exact), in a branch-free binary
 * search over the sorted table; this is the same comparison. NaN compares false everywhere → index 0.
 */
function bestIndex(x: number): number {
  const twice = x + x;
  let index = 0;
  if (twice >= MIDPOINT_SUMS[8]!) index = 8;
  if (twice >= MIDPOINT_SUMS[index + 4]!) index += 4;
  if (twice >= MIDPOINT_SUMS[index + 2]!) index += 2;
  if (twice >= MIDPOINT_SUMS[index + 1]!) index += 1;
  return index;
}

/**
 * The per-32-block part of `quantize_row_iq4_nl_impl`: the least-squares scale of block `ib` of the
 * super-block at `x` (levels land in `levelIndices`), trying 2·ntry+1 scales around max/−127.
 * `importance` is null for x² weights, else read from `importanceOffset`.
 */
function blockScale(
  src: Float32Array,
  x: number,
  ib: number,
  sigma2: number,
  importance: Float32Array | null,
  importanceOffset: number,
): number {
  const xb = x + ib * BLOCK;
  const lb = ib * BLOCK;
  if (importance === null) {
    for (let j = 0; j < BLOCK; j++) {
      const value = src[xb + j]!;
      blockWeights[j] = value * value;
    }
  } else {
    for (let j = 0; j < BLOCK; j++) {
      const value = src[xb + j]!;
      blockWeights[j] = importance[importanceOffset + j]! * fround(Math.sqrt(fround(sigma2 + fround(value * value))));
    }
  }
  let amax = 0;
  let max = 0;
  for (let j = 0; j < BLOCK; j++) {
    const value = src[xb + j]!;
    const magnitude = Math.abs(value);
    if (magnitude > amax) {
      amax = magnitude;
      max = value;
    }
  }
  if (amax < GROUP_MAX_EPS) {
    for (let j = 0; j < BLOCK; j++) levelIndices[lb + j] = 0;
    return 0;
  }
  // ntry > 0: d = −max/values[0].
  let d = fround(-max / LEVELS[0]!);
  let inverse = fround(1 / d);
  let sumQX = 0;
  let sumQ2 = 0;
  for (let j = 0; j < BLOCK; j++) {
    const value = src[xb + j]!;
    const index = bestIndex(fround(inverse * value));
    levelIndices[lb + j] = index;
    const q = LEVELS[index]!;
    const weightedQ = fround(blockWeights[j]! * q);
    sumQX = fround(sumQX + fround(weightedQ * value));
    sumQ2 = fround(sumQ2 + fround(weightedQ * q));
  }
  d = sumQ2 > 0 ? fround(sumQX / sumQ2) : 0;
  let best = fround(d * sumQX);
  // |id| shrinks from trial to trial, so each fround(id·x) moves monotonically and its level index
  // only ever moves one way: after the first trial, an element is re-chosen only when 2·value leaves
  // [MIDPOINT_SUMS[i], MIDPOINT_SUMS[i+1]) — best_index_int8's own decision boundaries — and the exact
  // sums are updated.
  let exactQX = 0;
  let exactAbsQX = 0;
  let exactQ2 = 0;
  for (let attempt = -NTRY; attempt <= NTRY; attempt++) {
    inverse = fround((attempt + LEVELS[0]!) / max);
    // Shortcuts as in kquant-helpers.ts: a trial with the previous trial's levels, or whose exact sums
    // prove `sumqx*sumqx > best*sumq2` false, cannot change d or best.
    let repeated = attempt !== -NTRY;
    if (attempt === -NTRY) {
      exactQX = 0;
      exactAbsQX = 0;
      exactQ2 = 0;
      for (let j = 0; j < BLOCK; j++) {
        const value = src[xb + j]!;
        const index = bestIndex(fround(inverse * value));
        trialIndices[j] = index;
        const weightedQ = blockWeights[j]! * LEVELS[index]!;
        exactQX += weightedQ * value;
        exactAbsQX += Math.abs(weightedQ * value);
        exactQ2 += weightedQ * LEVELS[index]!;
      }
    } else {
      for (let j = 0; j < BLOCK; j++) {
        const value = src[xb + j]!;
        const scaled = fround(inverse * value);
        const previous = trialIndices[j]!;
        const twice = scaled + scaled;
        if (twice < LOWER_BOUNDS[previous]! || twice >= UPPER_BOUNDS[previous]!) {
          const index = bestIndex(scaled);
          if (index !== previous) {
            repeated = false;
            trialIndices[j] = index;
            const weight = blockWeights[j]!;
            const q = LEVELS[index]!;
            const oldQ = LEVELS[previous]!;
            exactQX += weight * (q - oldQ) * value;
            exactAbsQX += Math.abs(weight * value) * (Math.abs(q) - Math.abs(oldQ));
            exactQ2 += weight * (q * q - oldQ * oldQ);
          }
        }
      }
    }
    if (repeated || ratioCannotBeat(exactQX, exactAbsQX, exactQ2, best)) continue;
    sumQX = 0;
    sumQ2 = 0;
    for (let j = 0; j < BLOCK; j++) {
      const value = src[xb + j]!;
      const q = LEVELS[trialIndices[j]!]!;
      const weightedQ = fround(blockWeights[j]! * q);
      sumQX = fround(sumQX + fround(weightedQ * value));
      sumQ2 = fround(sumQ2 + fround(weightedQ * q));
    }
    if (sumQ2 > 0 && fround(sumQX * sumQX) > fround(best * sumQ2)) {
      d = fround(sumQX / sumQ2);
      best = fround(d * sumQX);
    }
  }
  return d;
}

/** σ² = Σx²·(2/super_block_size) over the super-block, as quantize_row_iq4_nl_impl computes it. */
function sigmaSquared(src: Float32Array, x: number, size: number): number {
  let sum = 0;
  for (let j = 0; j < size; j++) {
    const value = src[x + j]!;
    sum = fround(sum + fround(value * value));
  }
  return fround(sum * fround(2 / size));
}

/** Packs 32 level indices per block: element j in the low nibble of qs[j], j+16 in the high one. */
function packNibbles(dst: Uint8Array, at: number, blocks: number): void {
  for (let i = 0; i < blocks; i++) {
    for (let j = 0; j < 16; j++) dst[at + 16 * i + j] = levelIndices[32 * i + j]! | (levelIndices[32 * i + 16 + j]! << 4);
  }
}

export function quantizeRowIQ4_NL(
  src: Float32Array,
  srcOffset: number,
  dst: Uint8Array,
  dstOffset: number,
  n: number,
  importance: Float32Array | null,
): void {
  const blocks = n / BLOCK;
  for (let block = 0; block < blocks; block++) {
    const x = srcOffset + block * BLOCK;
    const y = dstOffset + block * 18;
    const sigma2 = importance === null ? 0 : sigmaSquared(src, x, BLOCK);
    const scale = blockScale(src, x, 0, sigma2, importance, block * BLOCK);
    // One block per super-block: d is the block scale itself, and the levels are re-chosen with its
    // unrounded inverse.
    writeF16(dst, y, scale);
    const inverse = scale !== 0 ? fround(1 / scale) : 0;
    for (let j = 0; j < BLOCK; j++) levelIndices[j] = bestIndex(fround(inverse * src[x + j]!));
    packNibbles(dst, y + 2, 1);
  }
}

export function dequantizeRowIQ4_NL(src: Uint8Array, srcOffset: number, dst: Float32Array, dstOffset: number, n: number): void {
  const blocks = n / BLOCK;
  for (let block = 0; block < blocks; block++) {
    const x = srcOffset + block * 18;
    const y = dstOffset + block * BLOCK;
    const d = readF16(src, x);
    for (let j = 0; j < 16; j++) {
      const byte = src[x + 2 + j]!;
      dst[y + j] = d * LEVELS[byte & 0x0f]!;
      dst[y + 16 + j] = d * LEVELS[byte >>> 4]!;
    }
  }
}

export function quantizeRowIQ4_XS(
  src: Float32Array,
  srcOffset: number,
  dst: Uint8Array,
  dstOffset: number,
  n: number,
  importance: Float32Array | null,
): void {
  const superBlocks = n / 256;
  for (let superBlock = 0; superBlock < superBlocks; superBlock++) {
    const x = srcOffset + superBlock * 256;
    const y = dstOffset + superBlock * 136;
    const sigma2 = importance === null ? 0 : sigmaSquared(src, x, 256);
    let maxScale = 0;
    let amaxScale = 0;
    for (let ib = 0; ib < 8; ib++) {
      const scale = blockScale(src, x, ib, sigma2, importance, superBlock * 256 + ib * BLOCK);
      blockScales[ib] = scale;
      const magnitude = Math.abs(scale);
      if (magnitude > amaxScale) {
        amaxScale = magnitude;
        maxScale = scale;
      }
    }
    // Eight 6-bit sub-scales relative to d = −max_scale/32; levels re-chosen with the unrounded
    // d·l of each block.
    const d = fround(-maxScale / 32);
    writeF16(dst, y, d);
    const inverse = d !== 0 ? fround(1 / d) : 0;
    let scalesHigh = 0;
    for (let ib = 0; ib < 8; ib++) {
      let level = nearestInt(fround(inverse * blockScales[ib]!));
      level = clamp(level, -32, 31);
      const blockD = fround(d * level);
      const blockInverse = blockD !== 0 ? fround(1 / blockD) : 0;
      const xb = x + ib * BLOCK;
      for (let j = 0; j < BLOCK; j++) levelIndices[ib * BLOCK + j] = bestIndex(fround(blockInverse * src[xb + j]!));
      level += 32;
      if (ib % 2 === 0) dst[y + 4 + (ib >>> 1)] = level & 0x0f;
      else dst[y + 4 + (ib >>> 1)] = dst[y + 4 + (ib >>> 1)]! | ((level & 0x0f) << 4);
      scalesHigh |= (level >>> 4) << (2 * ib);
    }
    dst[y + 2] = scalesHigh & 0xff;
    dst[y + 3] = scalesHigh >>> 8;
    packNibbles(dst, y + 8, 8);
  }
}

export function dequantizeRowIQ4_XS(src: Uint8Array, srcOffset: number, dst: Float32Array, dstOffset: number, n: number): void {
  const superBlocks = n / 256;
  for (let superBlock = 0; superBlock < superBlocks; superBlock++) {
    const x = srcOffset + superBlock * 136;
    const y = dstOffset + superBlock * 256;
    const d = readF16(src, x);
    const scalesHigh = src[x + 2]! | (src[x + 3]! << 8);
    for (let ib = 0; ib < 8; ib++) {
      const low = (src[x + 4 + (ib >>> 1)]! >>> (4 * (ib % 2))) & 0x0f;
      const level = low | (((scalesHigh >>> (2 * ib)) & 3) << 4);
      const blockD = fround(d * (level - 32));
      for (let j = 0; j < 16; j++) {
        const byte = src[x + 8 + 16 * ib + j]!;
        dst[y + 32 * ib + j] = blockD * LEVELS[byte & 0x0f]!;
        dst[y + 32 * ib + 16 + j] = blockD * LEVELS[byte >>> 4]!;
      }
    }
  }
}
