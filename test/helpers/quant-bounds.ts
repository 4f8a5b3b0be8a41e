/**
 * Analytical round-trip bounds for the property tests (the `roundTripBound` text of each row of the
 * ggml type table). For every block we decode, independently of the kernels, the grid of values the
 * block can represent (from the layouts in specs/gguf.md §4.1) and check each element:
 *
 *   |x − x̂| ≤ distance(x, nearest grid point) + slack + float32 rounding noise
 *
 * where `slack` covers quantizers that choose levels with an unrounded scale but store it as fp16
 * (legacy types and IQ4: twice the largest level times δ(d), δ = half an fp16 ulp of the stored d).
 * The K-quants choose levels against the stored scales, so their slack is zero. For the legacy types
 * whose scale covers the whole block we also check the plain step bound: ≤ d/2 inside the grid, and
 * for the elements Q4_0/Q5_0 clamp at the grid's end (those near −max) at most one step d.
 *
 * The importance-weighted legacy paths (Q4_0/Q4_1/Q5_0/Q5_1 `_impl`) fit the scale by weighted least
 * squares after choosing levels, so a low-weight element may land several steps from x: there is no
 * per-element bound. Their bound is on the block's weighted RMS error instead (weights w = qw·√(σ²+x²),
 * as the quantizer uses). Both searches start from a candidate whose every element is within
 * amax/nmax (make_qx_quants, Q4_0/Q5_0: levels clamp at nmax − 1, one step short of x = −max) or
 * (max − min)/(2·nmax) (make_qkx3_quants, Q4_1/Q5_1, min ≤ 0) of x, and only accept candidates with a
 * lower weighted error; fp16 storage of d (and m) adds at most nmax·δ(d) + δ(m) per element.
 */

import { GGML_TYPES, type GgmlTypeName } from '../../src/quant/index.js';
import { f16ToF32 } from '../../src/tensor/float.js';

const IQ4_VALUES = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/** Half an fp16 ulp at |s|: the most rounding a float to fp16 can move it (2^-25 for subnormals). */
export function halfUlpF16(value: number): number {
  const magnitude = Math.abs(value);
  if (magnitude < 2 ** -14) return 2 ** -25;
  return 2 ** (Math.floor(Math.log2(magnitude)) - 11);
}

function f16(bytes: Uint8Array, offset: number): number {
  return f16ToF32(bytes[offset]! | (bytes[offset + 1]! << 8));
}

/** One grid: the representable values of some elements of a block. */
interface Grid {
  values: number[];
  /** Extra allowance beyond the nearest-point distance (fp16 rounding of an unrounded scale). */
  slack: number;
  /** The grid spacing, for the step bound (0 when not checked). */
  step: number;
  /** Whether the grid spans the block's values, so |x − x̂| ≤ step/2 holds (up to one clamped element). */
  covers: boolean;
}

function linearGrid(scale: number, offset: number, lowest: number, highest: number, slack: number, covers: boolean): Grid {
  const values: number[] = [];
  for (let q = lowest; q <= highest; q++) values.push(Math.fround(Math.fround(scale * q) + offset));
  return { values, slack, step: Math.abs(scale), covers };
}

/** Which grid each element of a block uses, and the grids. */
function blockGrids(scheme: GgmlTypeName, block: Uint8Array): { grids: Grid[]; gridOf: (element: number) => number } {
  switch (scheme) {
    case 'Q8_0': {
      const d = f16(block, 0);
      return { grids: [linearGrid(d, 0, -127, 127, 2 * 127 * halfUlpF16(d), true)], gridOf: () => 0 };
    }
    case 'Q4_0':
    case 'Q5_0': {
      const d = f16(block, 0);
      const half = scheme === 'Q4_0' ? 8 : 16;
      return { grids: [linearGrid(d, 0, -half, half - 1, 2 * half * halfUlpF16(d), true)], gridOf: () => 0 };
    }
    case 'Q4_1':
    case 'Q5_1': {
      const d = f16(block, 0);
      const m = f16(block, 2);
      const nmax = scheme === 'Q4_1' ? 15 : 31;
      return { grids: [linearGrid(d, m, 0, nmax, 2 * (nmax * halfUlpF16(d) + halfUlpF16(m)), true)], gridOf: () => 0 };
    }
    case 'Q2_K': {
      const d = f16(block, 80);
      const dmin = f16(block, 82);
      const grids = Array.from({ length: 16 }, (_, j) => {
        const packed = block[j]!;
        return linearGrid(Math.fround(d * (packed & 15)), -Math.fround(dmin * (packed >> 4)), 0, 3, 0, false);
      });
      return { grids, gridOf: (e) => e >> 4 };
    }
    case 'Q3_K': {
      const d = f16(block, 108);
      const grids = Array.from({ length: 16 }, (_, j) => {
        const low = j < 8 ? block[96 + j]! & 15 : block[96 + j - 8]! >> 4;
        const high = (block[96 + 8 + (j % 4)]! >> (2 * Math.floor(j / 4))) & 3;
        return linearGrid(Math.fround(d * ((low | (high << 4)) - 32)), 0, -4, 3, 0, false);
      });
      return { grids, gridOf: (e) => e >> 4 };
    }
    case 'Q4_K':
    case 'Q5_K': {
      const d = f16(block, 0);
      const dmin = f16(block, 2);
      const nmax = scheme === 'Q4_K' ? 15 : 31;
      const s = (i: number): number => block[4 + i]!;
      const grids = Array.from({ length: 8 }, (_, j) => {
        const scale = j < 4 ? s(j) & 63 : (s(j + 4) & 15) | ((s(j - 4) >> 6) << 4);
        const min = j < 4 ? s(j + 4) & 63 : (s(j + 4) >> 4) | ((s(j) >> 6) << 4);
        return linearGrid(Math.fround(d * scale), -Math.fround(dmin * min), 0, nmax, 0, false);
      });
      return { grids, gridOf: (e) => e >> 5 };
    }
    case 'Q6_K': {
      const d = f16(block, 208);
      const grids = Array.from({ length: 16 }, (_, j) => linearGrid(Math.fround(d * ((block[192 + j]! << 24) >> 24)), 0, -32, 31, 0, false));
      return { grids, gridOf: (e) => e >> 4 };
    }
    case 'IQ4_NL': {
      const d = f16(block, 0);
      const values = IQ4_VALUES.map((k) => Math.fround(d * k));
      return { grids: [{ values, slack: 2 * 127 * halfUlpF16(d), step: 0, covers: false }], gridOf: () => 0 };
    }
    case 'IQ4_XS': {
      const d = f16(block, 0);
      const scalesHigh = block[2]! | (block[3]! << 8);
      const grids = Array.from({ length: 8 }, (_, ib) => {
        const low = (block[4 + (ib >> 1)]! >> (4 * (ib % 2))) & 15;
        const level = (low | (((scalesHigh >> (2 * ib)) & 3) << 4)) - 32;
        const blockD = Math.fround(d * level);
        return { values: IQ4_VALUES.map((k) => Math.fround(blockD * k)), slack: 2 * 127 * Math.abs(level) * halfUlpF16(d), step: 0, covers: false };
      });
      return { grids, gridOf: (e) => e >> 5 };
    }
    default:
      throw new Error(`no grid bound for ${scheme}`);
  }
}

/**
 * Checks one row's round trip against its type's bound. Returns null, or a message naming the first
 * element that breaks it.
 */
export function checkRoundTripBound(
  scheme: GgmlTypeName,
  original: Float32Array,
  bytes: Uint8Array,
  reconstructed: Float32Array,
  importance?: Float32Array,
): string | null {
  const info = GGML_TYPES[scheme];
  if (scheme === 'F32') {
    for (let i = 0; i < original.length; i++) {
      if (!Object.is(original[i], reconstructed[i])) return `element ${i}: ${original[i]} became ${reconstructed[i]}`;
    }
    return null;
  }
  if (scheme === 'F16' || scheme === 'BF16') {
    const relative = scheme === 'F16' ? 2 ** -11 : 2 ** -8;
    for (let i = 0; i < original.length; i++) {
      const x = original[i]!;
      const y = reconstructed[i]!;
      if (scheme === 'F16' && Math.abs(x) >= 65520) {
        if (y !== Math.sign(x) * Number.POSITIVE_INFINITY) return `element ${i}: ${x} should overflow to inf, became ${y}`;
        continue;
      }
      const bound = Math.max(relative * Math.max(Math.abs(x), Math.abs(y)), scheme === 'F16' ? 2 ** -25 : 0);
      if (!(Math.abs(x - y) <= bound)) return `element ${i}: |${x} − ${y}| > ${bound}`;
    }
    return null;
  }
  const blocks = original.length / info.blockElements;
  if (importance !== undefined && (scheme === 'Q4_0' || scheme === 'Q4_1' || scheme === 'Q5_0' || scheme === 'Q5_1')) {
    return checkWeightedLegacyBound(scheme, original, bytes, reconstructed, importance);
  }
  for (let block = 0; block < blocks; block++) {
    const { grids, gridOf } = blockGrids(scheme, bytes.subarray(block * info.blockBytes, (block + 1) * info.blockBytes));
    for (let e = 0; e < info.blockElements; e++) {
      const index = block * info.blockElements + e;
      const x = original[index]!;
      const y = reconstructed[index]!;
      const grid = grids[gridOf(e)]!;
      let nearest = Number.POSITIVE_INFINITY;
      let largest = 0;
      for (const value of grid.values) {
        nearest = Math.min(nearest, Math.abs(x - value));
        largest = Math.max(largest, Math.abs(value));
      }
      const noise = 4e-6 * (Math.abs(x) + largest) + 1e-37;
      const error = Math.abs(x - y);
      if (!grid.values.includes(y)) return `block ${block} element ${e}: ${y} is not on the decoded grid`;
      const bound = nearest + grid.slack + noise;
      if (!(error <= bound)) {
        return `block ${block} element ${e}: |${x} − ${y}| = ${error} > nearest-grid distance ${nearest} + slack ${grid.slack}`;
      }
      if (grid.covers) {
        // Inside the grid's range at most half a step; Q4_0/Q5_0 clamp the elements near −max to the
        // grid's other end (level 2·half − 1), which is then the nearest point, up to one step away.
        const lowEnd = Math.min(...grid.values);
        const highEnd = Math.max(...grid.values);
        const outside = x < lowEnd ? lowEnd - x : x > highEnd ? x - highEnd : 0;
        const stepBound = Math.max(grid.step / 2, outside) + grid.slack / 2 + noise;
        if (!(error <= stepBound) || outside > grid.step + grid.slack) {
          return `block ${block} element ${e}: |${x} − ${y}| = ${error} > max(d/2, ${outside} outside the grid) + slack = ${stepBound}`;
        }
      }
    }
  }
  return null;
}

/** The block-level weighted-RMS bound of the importance-weighted Q4_0/Q4_1/Q5_0/Q5_1 (see the top). */
function checkWeightedLegacyBound(
  scheme: 'Q4_0' | 'Q4_1' | 'Q5_0' | 'Q5_1',
  original: Float32Array,
  bytes: Uint8Array,
  reconstructed: Float32Array,
  importance: Float32Array,
): string | null {
  const info = GGML_TYPES[scheme];
  let sumSquares = 0;
  for (const value of original) sumSquares += value * value;
  const sigma2 = sumSquares / original.length;
  const symmetric = scheme === 'Q4_0' || scheme === 'Q5_0';
  const nmax = scheme === 'Q4_0' ? 8 : scheme === 'Q5_0' ? 16 : scheme === 'Q4_1' ? 15 : 31;
  for (let block = 0; block < original.length / 32; block++) {
    const blockBytes = bytes.subarray(block * info.blockBytes, (block + 1) * info.blockBytes);
    const d = f16(blockBytes, 0);
    let weightedError = 0;
    let weightSum = 0;
    let amax = 0;
    let min = 0;
    let max = Number.NEGATIVE_INFINITY;
    for (let e = 0; e < 32; e++) {
      const x = original[block * 32 + e]!;
      const y = reconstructed[block * 32 + e]!;
      const w = importance[block * 32 + e]! * Math.sqrt(sigma2 + x * x);
      weightedError += w * (x - y) ** 2;
      weightSum += w;
      amax = Math.max(amax, Math.abs(x));
      min = Math.min(min, x);
      max = Math.max(max, x);
    }
    const fitBound = symmetric ? amax / nmax : (max - min) / (2 * nmax);
    const storageBound = symmetric ? nmax * halfUlpF16(d) : nmax * halfUlpF16(d) + halfUlpF16(f16(blockBytes, 2));
    const bound = fitBound * (1 + 1e-5) + storageBound + 1e-37;
    const rms = weightSum > 0 ? Math.sqrt(weightedError / weightSum) : 0;
    if (!(rms <= bound)) return `block ${block}: weighted RMS error ${rms} > ${bound} (fit ${fitBound} + fp16 storage ${storageBound})`;
  }
  return null;
}
