/**
 * What the ONNX and WebGPU weight layouts (onnx-layouts.ts, webgpu-layouts.ts) share: the argument checks
 * every layout runs before its kernel (one wrapper, STYLE.md §5), and the rounding rules those layouts need
 * beyond ggml-math.ts (STYLE.md §11). ggml rounds with `nearest_int` and C `roundf` on values it has
 * already bounded; these layouts also need numpy/TVM/WGSL ties-to-even and a C `roundf` that keeps huge,
 * infinite and NaN arguments as floats, because their clamps come after the rounding.
 *
 * Every layout here quantizes a torch `nn.Linear.weight`: a row-major float32 matrix `[N = out, K = in]`
 * whose row n holds the input weights of output n. Blocks and groups run along K, inside one row.
 */

import { ERROR_CODES, PolyquantError } from '../errors.js';

/** Largest finite float32 (C `FLT_MAX`); MLAS starts its block min/max scans from ±FLT_MAX. */
export const FLT_MAX = 3.4028234663852886e38;

/** Smallest normal float32 (`numpy.finfo(numpy.float32).tiny`); onnxruntime's weight quantizer treats a smaller scale as no range at all. */
export const FLT_MIN_NORMAL = 1.1754943508222875e-38;

/** 2^52: adding and subtracting it rounds a double below 2^52 to an integer with ties to even. */
const TIES_TO_EVEN_MAGIC = 4503599627370496;

/**
 * Rounds to the nearest integer, ties to even: numpy's `round`/`rint`, TVM's `tir.round` (lowered to
 * `nearbyint`), WGSL's `round`. Integers, ±inf and NaN come back unchanged; doubles of magnitude ≥ 2^52 are
 * already integers.
 */
export function roundHalfToEven(value: number): number {
  const magnitude = Math.abs(value);
  if (!(magnitude < TIES_TO_EVEN_MAGIC)) return value;
  const rounded = magnitude + TIES_TO_EVEN_MAGIC - TIES_TO_EVEN_MAGIC;
  return value < 0 ? -rounded : rounded;
}

/**
 * C `roundf` (halves away from zero) with the result kept as a float, so that a clamp after it sees huge,
 * infinite and NaN arguments the way C does (ggml-math's `roundHalfAwayFromZero` returns an int32 and is
 * only for bounded arguments). For a float32 argument, x ± 0.5 is exact in double, so truncation toward
 * zero rounds exactly like `roundf`.
 */
export function roundHalfAwayFromZeroKeepingFloat(value: number): number {
  return Math.trunc(value + (value < 0 ? -0.5 : 0.5));
}

/**
 * Clamps an already rounded level into [low, high]. NaN becomes `nanLevel` and −0 becomes 0, so a kernel's
 * output is always a valid level; each layout documents which level a NaN weight gets.
 */
export function clampLevel(rounded: number, low: number, high: number, nanLevel: number): number {
  if (rounded < low) return low;
  if (rounded > high) return high;
  if (Number.isNaN(rounded)) return nanLevel;
  return rounded === 0 ? 0 : rounded;
}

/** ceil(a / b) for positive integers. */
export function ceilDivide(numerator: number, denominator: number): number {
  return Math.floor((numerator + denominator - 1) / denominator);
}

function isPositiveSafeInteger(value: number): boolean {
  return Number.isSafeInteger(value) && value > 0;
}

function where(layout: string, rowLength: number, blockSize: number): string {
  return `${layout} (row length K = ${rowLength}, block size ${blockSize})`;
}

/** Checks a `[N, K]` shape: positive integers. Errors name the layout, the row length K and its block size (STYLE.md §9). */
export function checkShape(layout: string, blockSize: number, rows: number, rowLength: number): void {
  if (!isPositiveSafeInteger(rows) || !isPositiveSafeInteger(rowLength)) {
    throw new PolyquantError(
      ERROR_CODES.USAGE,
      `${where(layout, rowLength, blockSize)}: N = ${rows} and K = ${rowLength} must be positive integers`,
      { hint: 'pass the torch Linear weight shape [out_features, in_features]' },
    );
  }
}

/** Checks a `[N, K]` weight matrix before a layout quantizes it: a valid shape and exactly N·K floats. */
export function checkWeightMatrix(layout: string, blockSize: number, weight: Float32Array, rows: number, rowLength: number): void {
  checkShape(layout, blockSize, rows, rowLength);
  if (weight.length !== rows * rowLength) {
    throw new PolyquantError(
      ERROR_CODES.USAGE,
      `${where(layout, rowLength, blockSize)}: the weight holds ${weight.length} floats but N·K = ${rows}·${rowLength} = ${rows * rowLength}`,
      { hint: 'pass whole rows of the [out_features, in_features] weight' },
    );
  }
}

/** Checks that a row chunk holds whole rows of K floats. */
export function checkWholeRows(layout: string, blockSize: number, length: number, rowLength: number): void {
  if (length % rowLength !== 0) {
    throw new PolyquantError(
      ERROR_CODES.USAGE,
      `${where(layout, rowLength, blockSize)}: ${length} floats are not whole rows of ${rowLength}`,
      { hint: 'stream the weight in chunks of whole rows' },
    );
  }
}

/** Checks that `rowCount` rows starting at `firstRow` lie inside a tensor of `rows` rows. */
export function checkRowRange(layout: string, firstRow: number, rowCount: number, rows: number): void {
  if (!Number.isSafeInteger(firstRow) || !Number.isSafeInteger(rowCount) || firstRow < 0 || rowCount < 0 || firstRow + rowCount > rows) {
    throw new PolyquantError(
      ERROR_CODES.USAGE,
      `${layout}: rows ${firstRow}..${firstRow + rowCount - 1} are outside the tensor's ${rows} rows`,
    );
  }
}

/** Checks that an output array holds at least `needed` elements. */
export function checkOutputLength(layout: string, what: string, actual: number, needed: number): void {
  if (actual < needed) {
    throw new PolyquantError(ERROR_CODES.USAGE, `${layout}: the ${what} output holds ${actual} elements but ${needed} are needed`);
  }
}
