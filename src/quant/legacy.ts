/**
 * The 32-element "legacy" quants: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1. Block layouts are the structs
 * `block_q8_0`, `block_q4_0`, `block_q4_1`, `block_q5_0`, `block_q5_1` in ggml/src/ggml-common.h
 * (specs/gguf.md §4.1); the algorithms are `quantize_row_*_ref` (no importance weights) and
 * `quantize_row_*_impl` (with them) in ggml/src/ggml-quants.c, reached from `ggml_quantize_chunk` through
 * `quantize_q*` exactly as llama-quantize does (§4.2).
 *
 * Row kernels: `n` elements from `src[srcOffset…]` become n/32 blocks at `dst[dstOffset…]`. The
 * importance-weighted paths need statistics of the whole row (σ² over the row), which is why the table
 * registers row kernels rather than single-block ones. Nothing is allocated per call.
 */

import * as kquantHelpers from './kquant-helpers.js';
import * as ggmlMath from './ggml-math.js';

// Module-local aliases of the hot helpers: under some loaders (tsx) every use of an imported binding
// is a getter call, which keeps V8 from inlining them into the inner loops; a local const is inlined.
const { fround, readF16, roundHalfAwayFromZero, truncateToInt8, writeF16 } = ggmlMath;
const { makeQkx3Quants, makeQxQuants } = kquantHelpers;

const QK = 32;
const HALF = 16;

/** Per-block scratch of the importance paths (`weight`, `L`, the `min` out-parameter). */
const blockWeights = new Float32Array(QK);
const signedLevels = new Int8Array(QK);
const unsignedLevels = new Uint8Array(QK);
const minOut = new Float32Array(1);

const RMIN_QKX3 = fround(-0.9);
const RDELTA_QKX3 = fround(0.05);

// ---------------------------------------------------------------------------------------------- Q8_0

/** `block_q8_0`: d (f16) @0, qs int8[32] @2. `quantize_row_q8_0_ref`; ggml ignores importance weights. */
export function quantizeRowQ8_0(src: Float32Array, srcOffset: number, dst: Uint8Array, dstOffset: number, n: number): void {
  const blocks = n / QK;
  for (let block = 0; block < blocks; block++) {
    const x = srcOffset + block * QK;
    const y = dstOffset + block * 34;
    let amax = 0;
    for (let j = 0; j < QK; j++) {
      const magnitude = Math.abs(src[x + j]!);
      // C's MAX(amax, fabsf(v)) macro, kept as a ternary: Math.max differs on NaN.
      // biome-ignore lint/complexity/useMathMinMax: C macro semantics on NaN
      amax = amax > magnitude ? amax : magnitude;
    }
    const d = fround(amax / 127);
    const inverse = d !== 0 ? fround(1 / d) : 0;
    writeF16(dst, y, d);
    for (let j = 0; j < QK; j++) {
      dst[y + 2 + j] = roundHalfAwayFromZero(fround(src[x + j]! * inverse));
    }
  }
}

export function dequantizeRowQ8_0(src: Uint8Array, srcOffset: number, dst: Float32Array, dstOffset: number, n: number): void {
  const blocks = n / QK;
  for (let block = 0; block < blocks; block++) {
    const x = srcOffset + block * 34;
    const y = dstOffset + block * QK;
    const d = readF16(src, x);
    for (let j = 0; j < QK; j++) dst[y + j] = ((src[x + 2 + j]! << 24) >> 24) * d;
  }
}

// ---------------------------------------------------------------------------------------------- Q4_0

/** `block_q4_0`: d (f16) @0, qs u8[16] @2 (element j in the low nibble of qs[j], j+16 in the high one). */
export function quantizeRowQ4_0(
  src: Float32Array,
  srcOffset: number,
  dst: Uint8Array,
  dstOffset: number,
  n: number,
  importance: Float32Array | null,
): void {
  if (importance !== null) {
    quantizeRowQ4_0Weighted(src, srcOffset, dst, dstOffset, n, importance);
    return;
  }
  const blocks = n / QK;
  for (let block = 0; block < blocks; block++) {
    const x = srcOffset + block * QK;
    const y = dstOffset + block * 18;
    // The signed value of the first element with the largest magnitude (quantize_row_q4_0_ref).
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK; j++) {
      const value = src[x + j]!;
      const magnitude = Math.abs(value);
      if (amax < magnitude) {
        amax = magnitude;
        max = value;
      }
    }
    const d = fround(max / -8);
    const inverse = d !== 0 ? fround(1 / d) : 0;
    writeF16(dst, y, d);
    for (let j = 0; j < HALF; j++) {
      // MIN(15, (int8_t)(x*id + 8.5f)): truncation, so this is round-half-up, clamped at the top.
      const low = Math.min(15, truncateToInt8(fround(fround(src[x + j]! * inverse) + 8.5)));
      const high = Math.min(15, truncateToInt8(fround(fround(src[x + HALF + j]! * inverse) + 8.5)));
      dst[y + 2 + j] = (low & 0xff) | ((high & 0xff) << 4);
    }
  }
}

/** Row sum of squares divided by the row length: the σ² of the legacy `quantize_row_q*_impl`. */
function rowMeanSquare(src: Float32Array, srcOffset: number, n: number): number {
  let sumSquares = 0;
  for (let j = 0; j < n; j++) {
    const value = src[srcOffset + j]!;
    sumSquares = fround(sumSquares + fround(value * value));
  }
  return fround(sumSquares / n);
}

/** weight[j] = qw[j]·sqrtf(σ² + x[j]²), the importance weighting shared by the legacy `_impl` paths. */
function fillImportanceWeights(
  src: Float32Array,
  x: number,
  importance: Float32Array,
  importanceOffset: number,
  sigma2: number,
): void {
  for (let j = 0; j < QK; j++) {
    const value = src[x + j]!;
    blockWeights[j] = importance[importanceOffset + j]! * fround(Math.sqrt(fround(sigma2 + fround(value * value))));
  }
}

/** `quantize_row_q4_0_impl` with weights: make_qx_quants(32, 8, …) per block. */
function quantizeRowQ4_0Weighted(
  src: Float32Array,
  srcOffset: number,
  dst: Uint8Array,
  dstOffset: number,
  n: number,
  importance: Float32Array,
): void {
  const sigma2 = rowMeanSquare(src, srcOffset, n);
  const blocks = n / QK;
  for (let block = 0; block < blocks; block++) {
    const x = srcOffset + block * QK;
    const y = dstOffset + block * 18;
    fillImportanceWeights(src, x, importance, block * QK, sigma2);
    const d = makeQxQuants(QK, 8, src, x, signedLevels, 0, blockWeights, 0);
    writeF16(dst, y, d);
    for (let j = 0; j < HALF; j++) dst[y + 2 + j] = signedLevels[j]! | (signedLevels[j + HALF]! << 4);
  }
}

export function dequantizeRowQ4_0(src: Uint8Array, srcOffset: number, dst: Float32Array, dstOffset: number, n: number): void {
  const blocks = n / QK;
  for (let block = 0; block < blocks; block++) {
    const x = srcOffset + block * 18;
    const y = dstOffset + block * QK;
    const d = readF16(src, x);
    for (let j = 0; j < HALF; j++) {
      const byte = src[x + 2 + j]!;
      dst[y + j] = ((byte & 0x0f) - 8) * d;
      dst[y + HALF + j] = ((byte >>> 4) - 8) * d;
    }
  }
}

// ---------------------------------------------------------------------------------------------- Q4_1

/** `block_q4_1`: d (f16) @0, m (f16) @2, qs u8[16] @4. value = q·d + m. */
export function quantizeRowQ4_1(
  src: Float32Array,
  srcOffset: number,
  dst: Uint8Array,
  dstOffset: number,
  n: number,
  importance: Float32Array | null,
): void {
  if (importance !== null) {
    quantizeRowAsymmetricWeighted(src, srcOffset, dst, dstOffset, n, importance, 15);
    return;
  }
  const blocks = n / QK;
  for (let block = 0; block < blocks; block++) {
    const x = srcOffset + block * QK;
    const y = dstOffset + block * 20;
    let min = 3.4028234663852886e38;
    let max = -3.4028234663852886e38;
    for (let j = 0; j < QK; j++) {
      const value = src[x + j]!;
      if (value < min) min = value;
      if (value > max) max = value;
    }
    const d = fround(fround(max - min) / 15);
    const inverse = d !== 0 ? fround(1 / d) : 0;
    writeF16(dst, y, d);
    writeF16(dst, y + 2, min);
    for (let j = 0; j < HALF; j++) {
      const low = Math.min(15, truncateToInt8(fround(fround(fround(src[x + j]! - min) * inverse) + 0.5)));
      const high = Math.min(15, truncateToInt8(fround(fround(fround(src[x + HALF + j]! - min) * inverse) + 0.5)));
      dst[y + 4 + j] = (low & 0xff) | ((high & 0xff) << 4);
    }
  }
}

export function dequantizeRowQ4_1(src: Uint8Array, srcOffset: number, dst: Float32Array, dstOffset: number, n: number): void {
  const blocks = n / QK;
  for (let block = 0; block < blocks; block++) {
    const x = srcOffset + block * 20;
    const y = dstOffset + block * QK;
    const d = readF16(src, x);
    const m = readF16(src, x + 2);
    for (let j = 0; j < HALF; j++) {
      const byte = src[x + 4 + j]!;
      dst[y + j] = fround((byte & 0x0f) * d) + m;
      dst[y + HALF + j] = fround((byte >>> 4) * d) + m;
    }
  }
}

/**
 * `quantize_row_q4_1_impl` / `quantize_row_q5_1_impl` with weights: make_qkx3_quants(32, nmax, …,
 * −0.9, 0.05, 36) per block; m = −min. Q4_1 (nmax 15) packs nibbles at @4; Q5_1 (nmax 31) adds qh.
 */
function quantizeRowAsymmetricWeighted(
  src: Float32Array,
  srcOffset: number,
  dst: Uint8Array,
  dstOffset: number,
  n: number,
  importance: Float32Array,
  nmax: 15 | 31,
): void {
  const sigma2 = rowMeanSquare(src, srcOffset, n);
  const blockBytes = nmax === 15 ? 20 : 24;
  const blocks = n / QK;
  for (let block = 0; block < blocks; block++) {
    const x = srcOffset + block * QK;
    const y = dstOffset + block * blockBytes;
    fillImportanceWeights(src, x, importance, block * QK, sigma2);
    const d = makeQkx3Quants(QK, nmax, src, x, blockWeights, unsignedLevels, 0, minOut, 0, RMIN_QKX3, RDELTA_QKX3, 36);
    writeF16(dst, y, d);
    writeF16(dst, y + 2, -minOut[0]!);
    if (nmax === 15) {
      for (let j = 0; j < HALF; j++) dst[y + 4 + j] = unsignedLevels[j]! | (unsignedLevels[j + HALF]! << 4);
    } else {
      packFiveBit(unsignedLevels, dst, y + 4);
    }
  }
}

// ---------------------------------------------------------------------------------------------- Q5_0

/**
 * Packs 32 five-bit levels as `qh` (u32 LE, bit j = 5th bit of element j) followed by `qs` nibbles,
 * the tail shared by `block_q5_0` (@2) and `block_q5_1` (@4).
 */
function packFiveBit(levels: Uint8Array | Int8Array, dst: Uint8Array, offset: number): void {
  let highBits = 0;
  for (let j = 0; j < HALF; j++) {
    const low = levels[j]! & 0xff;
    const high = levels[j + HALF]! & 0xff;
    dst[offset + 4 + j] = (low & 0x0f) | ((high & 0x0f) << 4);
    highBits |= ((low & 0x10) >>> 4) << j;
    highBits |= ((high & 0x10) >>> 4) << (j + HALF);
  }
  dst[offset] = highBits & 0xff;
  dst[offset + 1] = (highBits >>> 8) & 0xff;
  dst[offset + 2] = (highBits >>> 16) & 0xff;
  dst[offset + 3] = highBits >>> 24;
}

/** `block_q5_0`: d (f16) @0, qh u8[4] @2, qs u8[16] @6. value = (q − 16)·d. */
export function quantizeRowQ5_0(
  src: Float32Array,
  srcOffset: number,
  dst: Uint8Array,
  dstOffset: number,
  n: number,
  importance: Float32Array | null,
): void {
  const blocks = n / QK;
  if (importance !== null) {
    const sigma2 = rowMeanSquare(src, srcOffset, n);
    for (let block = 0; block < blocks; block++) {
      const x = srcOffset + block * QK;
      const y = dstOffset + block * 22;
      fillImportanceWeights(src, x, importance, block * QK, sigma2);
      const d = makeQxQuants(QK, 16, src, x, signedLevels, 0, blockWeights, 0);
      writeF16(dst, y, d);
      packFiveBit(signedLevels, dst, y + 2);
    }
    return;
  }
  for (let block = 0; block < blocks; block++) {
    const x = srcOffset + block * QK;
    const y = dstOffset + block * 22;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < QK; j++) {
      const value = src[x + j]!;
      const magnitude = Math.abs(value);
      if (amax < magnitude) {
        amax = magnitude;
        max = value;
      }
    }
    const d = fround(max / -16);
    const inverse = d !== 0 ? fround(1 / d) : 0;
    writeF16(dst, y, d);
    for (let j = 0; j < QK; j++) {
      unsignedLevels[j] = Math.min(31, truncateToInt8(fround(fround(src[x + j]! * inverse) + 16.5)));
    }
    packFiveBit(unsignedLevels, dst, y + 2);
  }
}

export function dequantizeRowQ5_0(src: Uint8Array, srcOffset: number, dst: Float32Array, dstOffset: number, n: number): void {
  const blocks = n / QK;
  for (let block = 0; block < blocks; block++) {
    const x = srcOffset + block * 22;
    const y = dstOffset + block * QK;
    const d = readF16(src, x);
    const highBits = src[x + 2]! | (src[x + 3]! << 8) | (src[x + 4]! << 16) | (src[x + 5]! << 24);
    for (let j = 0; j < HALF; j++) {
      const byte = src[x + 6 + j]!;
      const low = (byte & 0x0f) | (((highBits >>> j) << 4) & 0x10);
      const high = (byte >>> 4) | ((highBits >>> (j + 12)) & 0x10);
      dst[y + j] = (low - 16) * d;
      dst[y + HALF + j] = (high - 16) * d;
    }
  }
}

// ---------------------------------------------------------------------------------------------- Q5_1

/** `block_q5_1`: d (f16) @0, m (f16) @2, qh u8[4] @4, qs u8[16] @8. value = q·d + m. */
export function quantizeRowQ5_1(
  src: Float32Array,
  srcOffset: number,
  dst: Uint8Array,
  dstOffset: number,
  n: number,
  importance: Float32Array | null,
): void {
  if (importance !== null) {
    quantizeRowAsymmetricWeighted(src, srcOffset, dst, dstOffset, n, importance, 31);
    return;
  }
  const blocks = n / QK;
  for (let block = 0; block < blocks; block++) {
    const x = srcOffset + block * QK;
    const y = dstOffset + block * 24;
    let min = 3.4028234663852886e38;
    let max = -3.4028234663852886e38;
    for (let j = 0; j < QK; j++) {
      const value = src[x + j]!;
      if (value < min) min = value;
      if (value > max) max = value;
    }
    const d = fround(fround(max - min) / 31);
    const inverse = d !== 0 ? fround(1 / d) : 0;
    writeF16(dst, y, d);
    writeF16(dst, y + 2, min);
    for (let j = 0; j < QK; j++) {
      // (uint8_t)(x + 0.5f): no clamp in quantize_row_q5_1_ref.
      unsignedLevels[j] = truncateToInt8(fround(fround(fround(src[x + j]! - min) * inverse) + 0.5));
    }
    packFiveBit(unsignedLevels, dst, y + 4);
  }
}

export function dequantizeRowQ5_1(src: Uint8Array, srcOffset: number, dst: Float32Array, dstOffset: number, n: number): void {
  const blocks = n / QK;
  for (let block = 0; block < blocks; block++) {
    const x = srcOffset + block * 24;
    const y = dstOffset + block * QK;
    const d = readF16(src, x);
    const m = readF16(src, x + 2);
    const highBits = src[x + 4]! | (src[x + 5]! << 8) | (src[x + 6]! << 16) | (src[x + 7]! << 24);
    for (let j = 0; j < HALF; j++) {
      const byte = src[x + 8 + j]!;
      const low = (byte & 0x0f) | (((highBits >>> j) << 4) & 0x10);
      const high = (byte >>> 4) | ((highBits >>> (j + 12)) & 0x10);
      dst[y + j] = fround(low * d) + m;
      dst[y + HALF + j] = fround(high * d) + m;
    }
  }
}
