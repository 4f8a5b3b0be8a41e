/**
 * Ports of the scale-search helpers in ggml-quants.c that the K-quants (and the importance-weighted
 * paths of the legacy quants) share: `make_qx_quants`, `make_q3_quants`, `make_qkx2_quants`,
 * `make_qkx3_quants`, `make_qp_quants`. Every `float` intermediate is rounded with `fround`, sums run
 * sequentially, and integer stores go through typed arrays of the C element type (int8_t → Int8Array,
 * uint8_t → Uint8Array) so that C's wrap-around on store is reproduced for free. See specs/gguf.md §4.3.
 *
 * Arrays are passed with offsets instead of subarrays so the callers allocate nothing per block.
 */

import * as ggmlMath from './ggml-math.js';

// Module-local aliases of the hot helpers: under some loaders (tsx) every use of an imported binding
// is a getter call, which keeps V8 from inlining them into the inner loops; a local const is inlined.
const { clamp, fround, GROUP_MAX_EPS, nearestInt } = ggmlMath;

/** `Laux` scratch of make_qkx2_quants / make_qkx3_quants (n ≤ 32 for every caller). */
const trialLevels = new Uint8Array(32);
/** Trial levels of make_qx_quants (n ≤ 32), before the + nmax offset. */
const signedTrialLevels = new Int8Array(32);
/** Values of fround(iscale·…) at or beyond which a trial level may change (see the trial loops). */
const levelThresholds = new Float64Array(32);
const lowThresholds = new Float64Array(32);
/** `x[i] - min` for the current `min`: it only changes when a trial wins, so it is cached. */
const shiftedValues = new Float32Array(32);
/** The per-element terms of a trial's weighted error, summed exactly only when the trial may win. */
const errorTerms = new Float32Array(32);

/*
 * Shortcuts. ggml tries many scales per group and keeps a trial only if it beats the best so far. The
 * exact float32 evaluation of a trial is a chain of dependent float32 operations, slow in JS (each
 * `fround` is two conversions), so we skip every trial that provably cannot be accepted. None of these
 * changes a byte (test/quant-differential.test.ts holds them to shortcut-free ports):
 *
 * 1. Repeats. A trial whose levels equal the previous trial's has the same sums, hence the same scale,
 *    min and error. The best only ever improves, so it cannot be accepted (make_qx_quants and IQ4 would
 *    re-accept it, writing back identical state).
 * 2. Bounds. We compute a trial's sums exactly (in double) and bound what C's float32 arithmetic can
 *    make of them, skipping the trial when even the most favourable float result loses:
 *    - make_qkx2/qkx3 (squared error): no (scale, min) does better on these levels than the weighted
 *      least-squares minimum E_min. C's cur_error is at least
 *      (1 − γ)·(E_min − 2·√(E_min·B)) − absolute slack, where B bounds Σw·(error of each
 *      float diff `scale·l + min − x`)², from bounds on |scale| and |min| as C computes them (forward
 *      error of its float sums and formulas). Used only when D = Σw·Σwl² − (Σwl)² is well conditioned.
 *    - make_qx_quants and IQ4 (`sumlx² > best·suml2`): upper-bound sumlx², lower-bound suml2.
 *    - The error sums themselves: the terms are non-negative, so a float sum lies within
 *      (1 ± γ)·(double sum) ± slack. C's `best_error` is kept as its terms and their double sum, and
 *      its float value is formed only when a comparison falls inside that band.
 *    Every float operation is modelled with relative error u = 2^-24 plus, for results in the subnormal
 *    range, an absolute error of 2^-150; γ = 64u covers a float sum of ≤ 32 terms. Near float32
 *    overflow only lower bounds of float sums hold (they may saturate to +inf), so upper bounds turn
 *    into +inf there and the bound filters step aside.
 * 3. Monotone levels. Within one call the trial inverse scales change monotonically (and so, while
 *    `min` is unchanged, does every fround(iscale·value)), so each element's level moves one way only.
 *    After a full pass an element is re-rounded (exactly) only when its value reaches the next
 *    rounding boundary, and the exact double sums are updated for the levels that change.
 */
const UNIT_ROUNDOFF = 2 ** -24;
const SUM_ERROR = 64 * UNIT_ROUNDOFF;
const DIFF_ERROR = 1.02 * UNIT_ROUNDOFF;
/** Absolute error of one float32 operation whose result is subnormal. */
const TINY = 2 ** -150;
/** Absolute error of a float32 sum of ≤ 32 terms from subnormal products and partial sums (generous). */
const SUM_TINY = 128 * TINY;
const SUBNORMAL_SLACK = 1e-40;

/** The sequential float32 sum of `terms[0..n)`, as C accumulates `cur_error`. */
function floatSum(terms: Float32Array, n: number): number {
  let sum = 0;
  for (let i = 0; i < n; i++) sum = fround(sum + terms[i]!);
  return sum;
}

/*
 * The best error so far is kept as its terms (`bestTerms`), their double sum, and its float32 value
 * (C's `best_error`) only once a comparison needs it: a float sum of non-negative terms lies within
 * (1 ± γ)·(double sum) ± slack, so most comparisons are decided by the double sums alone.
 */
const bestTerms = new Float32Array(32);
let bestDoubleSum = 0;
/** C's `best_error` when known exactly, else NaN. */
let bestExact = Number.NaN;

/**
 * Below this, a float32 sum bounded by it cannot overflow to +inf (FLT_MAX ≈ 3.4e38); past it, C's
 * float sums may be +inf whatever the double sum says, so only lower bounds stay valid.
 */
const NO_OVERFLOW = 3e38;

/** A lower bound of C's `best_error` (valid even when its float sum overflowed). */
function bestErrorLow(): number {
  return Number.isNaN(bestExact) ? bestDoubleSum * (1 - SUM_ERROR) - SUBNORMAL_SLACK : bestExact;
}

/** An upper bound of C's `best_error` (+inf when its float sum may have overflowed). */
function bestErrorHigh(): number {
  if (!Number.isNaN(bestExact)) return bestExact;
  const high = bestDoubleSum * (1 + SUM_ERROR) + SUBNORMAL_SLACK;
  return high < NO_OVERFLOW ? high : Number.POSITIVE_INFINITY;
}

/** Makes the `n` terms in `errorTerms` (double sum `doubleSum`) the best error, exact value unknown. */
function adoptTrialError(n: number, doubleSum: number, exact: number): void {
  for (let i = 0; i < n; i++) bestTerms[i] = errorTerms[i]!;
  bestDoubleSum = doubleSum;
  bestExact = exact;
}

/**
 * C's `cur_error < best_error` for the trial whose terms are in `errorTerms` (double sum `doubleSum`),
 * decided by the double sums where they allow it; updates the best error when true.
 */
function trialWins(n: number, doubleSum: number): boolean {
  if (doubleSum * (1 - SUM_ERROR) - SUBNORMAL_SLACK >= bestErrorHigh()) return false;
  const currentHigh = doubleSum * (1 + SUM_ERROR) + SUBNORMAL_SLACK;
  if (currentHigh < NO_OVERFLOW && currentHigh < bestErrorLow()) {
    adoptTrialError(n, doubleSum, Number.NaN);
    return true;
  }
  const current = floatSum(errorTerms, n);
  if (Number.isNaN(bestExact)) bestExact = floatSum(bestTerms, n);
  if (!(current < bestExact)) return false;
  adoptTrialError(n, doubleSum, current);
  return true;
}

/**
 * Whether C's test `sumlx*sumlx > best*suml2` (make_qx_quants, IQ4) is certainly false, given the exact
 * sums in double: `sumLX` = Σw·x·l, `sumAbsLX` = Σ|w·x·l|, `sumL2` = Σw·l² (w ≥ 0).
 */
export function ratioCannotBeat(sumLX: number, sumAbsLX: number, sumL2: number, best: number): boolean {
  const numeratorHigh = Math.abs(sumLX) + SUM_ERROR * sumAbsLX + SUBNORMAL_SLACK;
  const right = best * (sumL2 * (1 - SUM_ERROR) - SUBNORMAL_SLACK) * (1 - SUM_ERROR) - SUBNORMAL_SLACK;
  // Only away from the subnormal range, where the relative bounds hold for the products too, and
  // where no float sum or product can overflow (rounding, overflow included, is monotone).
  return (
    right > 1e-30 && sumAbsLX < 1e30 && numeratorHigh * numeratorHigh * (1 + SUM_ERROR) + SUBNORMAL_SLACK < right
  );
}

/**
 * Whether a make_qkx2/qkx3 trial with these exact (double) sums certainly has a float cur_error ≥
 * `bestError`, an upper bound of C's best_error (squared error). Per-group constants: `sw` = Σw, `sx` = Σw·x, `sax` = Σw·|x|, `sxx` = Σw·x²;
 * per trial: `sl` = Σw·l, `sl2` = Σw·l², `sxl` = Σw·l·x, and `slax` ≥ Σw·l·|x| (the callers pass nmax·Σw·|x|,
 * which only loosens the error terms).
 */
function leastSquaresCannotBeat(
  sw: number,
  sx: number,
  sax: number,
  sxx: number,
  sl: number,
  sl2: number,
  sxl: number,
  slax: number,
  bestError: number,
): boolean {
  // Far from float32 overflow only (C's float sums could saturate to +inf where doubles do not).
  if (!(sxx < 1e30 && sw < 1e30 && sl2 < 1e30 && slax < 1e30)) return false;
  const determinant = sw * sl2 - sl * sl;
  if (!(determinant > 0.01 * sw * sl2)) return false;
  // Bounds on how far C's float sums are from the exact ones.
  const errorW = SUM_ERROR * sw + SUM_TINY;
  const errorX = SUM_ERROR * sax + SUM_TINY;
  const errorL = SUM_ERROR * sl + SUM_TINY;
  const errorL2 = SUM_ERROR * sl2 + SUM_TINY;
  const errorXL = SUM_ERROR * slax + SUM_TINY;
  // … and of D = sw·sl2 − sl·sl and the two numerators, each a difference of two float products.
  const determinantError =
    (sw + errorW) * errorL2 + sl2 * errorW + (2 * sl + errorL) * errorL + 2 * UNIT_ROUNDOFF * (sw * sl2 + sl * sl) + 4 * TINY;
  const determinantLow = determinant - determinantError;
  if (!(determinantLow > 0)) return false;
  const scaleNumerator = sw * sxl - sx * sl;
  const scaleNumeratorError =
    (sw + errorW) * errorXL + slax * errorW + (sax + errorX) * errorL + sl * errorX + 2 * UNIT_ROUNDOFF * (sw * slax + sax * sl) + 4 * TINY;
  const minNumerator = sl2 * sx - sl * sxl;
  const minNumeratorError =
    (sl2 + errorL2) * errorX + sax * errorL2 + (sl + errorL) * errorXL + slax * errorL + 2 * UNIT_ROUNDOFF * (sl2 * sax + sl * slax) + 4 * TINY;
  // |this_scale| and |this_min| as C computes them, covering both branches of `this_min > 0`.
  let scaleBound = ((Math.abs(scaleNumerator) + scaleNumeratorError) / determinantLow) * (1 + UNIT_ROUNDOFF);
  const clampedLow = sl2 - errorL2;
  if (!(clampedLow > 0)) return false;
  const clampedScaleBound = ((Math.abs(sxl) + errorXL) / clampedLow) * (1 + UNIT_ROUNDOFF);
  if (clampedScaleBound > scaleBound) scaleBound = clampedScaleBound;
  scaleBound += TINY;
  const minBound = ((Math.abs(minNumerator) + minNumeratorError) / determinantLow) * (1 + UNIT_ROUNDOFF) + TINY;
  // E_min = Σw·x² − bᵀM⁻¹b for M = [[Σw, Σwl], [Σwl, Σwl²]], b = [Σwx, Σwlx], less its double rounding.
  const explained = (sl2 * sx * sx - 2 * sl * sx * sxl + sw * sxl * sxl) / determinant;
  const minimumError = sxx - explained - 1e-12 * (sxx + Math.abs(explained));
  if (!(minimumError > 0)) return false;
  // C's diff fl(fl(fl(scale·l) + min) − x) is within 1.01u·(2|scale·l| + |min| + |diff|) + 3·2^-150 of
  // the exact diff, and |diff| ≤ |scale·l| + |min| + |x|: so within u'·K_i + 4·2^-150 for
  // K_i = 3|scale|·l_i + 2|min| + |x_i|. Σw·K² expanded:
  const spread =
    9 * scaleBound * scaleBound * sl2 +
    4 * minBound * minBound * sw +
    sxx +
    12 * scaleBound * minBound * sl +
    6 * scaleBound * slax +
    4 * minBound * sax;
  // B = Σw·(u'·K_i + 4·2^-150)² ≤ 2u'²·ΣwK² + 2·(4·2^-150)²·Σw; then Σw·diff_f² ≥ E − 2√(E·B) for
  // every E ≥ E_min (increasing there whenever the result is positive).
  const diffSpread = 2 * DIFF_ERROR * DIFF_ERROR * spread + 32 * TINY * TINY * sw;
  const lower =
    (1 - SUM_ERROR) * (minimumError - 2 * Math.sqrt(diffSpread * minimumError)) -
    (4 * sw + 64) * TINY -
    SUBNORMAL_SLACK;
  return lower >= bestError;
}

const ONE_TENTH = fround(0.1);

/**
 * `make_qx_quants(n, nmax, x, L, rmse_type = 1, qw)`: symmetric quantization to levels −nmax…nmax−1
 * with a weighted least-squares scale, trying 18 scales around nmax/max. Weights are
 * `weights[weightsOffset + i]`, or x² when `weights` is null (ggml's `qw == NULL`, rmse_type 1).
 * Writes `L[lOffset + i] = level + nmax` and returns the scale.
 */
export function makeQxQuants(
  n: number,
  nmax: number,
  x: Float32Array,
  xOffset: number,
  L: Int8Array,
  lOffset: number,
  weights: Float32Array | null,
  weightsOffset: number,
): number {
  let max = 0;
  let amax = 0;
  for (let i = 0; i < n; i++) {
    const value = x[xOffset + i]!;
    const magnitude = Math.abs(value);
    if (magnitude > amax) {
      amax = magnitude;
      max = value;
    }
  }
  if (amax < GROUP_MAX_EPS) {
    for (let i = 0; i < n; i++) L[lOffset + i] = 0;
    return 0;
  }
  const lowest = -nmax;
  const highest = nmax - 1;
  let inverseScale = fround(-nmax / max);
  let sumLX = 0;
  let sumL2 = 0;
  for (let i = 0; i < n; i++) {
    const value = x[xOffset + i]!;
    const level = clamp(nearestInt(fround(inverseScale * value)), lowest, highest);
    L[lOffset + i] = level + nmax;
    const weight = weights === null ? fround(value * value) : weights[weightsOffset + i]!;
    sumLX = fround(sumLX + fround(fround(weight * value) * level));
    sumL2 = fround(sumL2 + fround(fround(weight * level) * level));
  }
  let scale = sumL2 !== 0 ? fround(sumLX / sumL2) : 0;
  let best = fround(scale * sumLX);
  // |iscale| grows from trial to trial, so each fround(iscale·x) moves monotonically away from zero
  // and its level only ever moves one way: after the first trial, an element is re-rounded only when
  // its value leaves [level − ½, level + ½] (exactly re-rounded then), and the exact sums are updated.
  let exactLX = 0;
  let exactAbsLX = 0;
  let exactL2 = 0;
  for (let step = -9; step <= 9; step++) {
    if (step === 0) continue;
    inverseScale = fround(-fround(nmax + fround(ONE_TENTH * step)) / max);
    let repeated = step !== -9;
    if (step === -9) {
      for (let i = 0; i < n; i++) {
        const value = x[xOffset + i]!;
        const level = clamp(nearestInt(fround(inverseScale * value)), lowest, highest);
        signedTrialLevels[i] = level;
        lowThresholds[i] = level > lowest ? level - 0.5 : Number.NEGATIVE_INFINITY;
        levelThresholds[i] = level < highest ? level + 0.5 : Number.POSITIVE_INFINITY;
        const weightedValue = (weights === null ? fround(value * value) : weights[weightsOffset + i]!) * value;
        exactLX += weightedValue * level;
        exactAbsLX += Math.abs(weightedValue * level);
        exactL2 += (weights === null ? fround(value * value) : weights[weightsOffset + i]!) * level * level;
      }
    } else {
      for (let i = 0; i < n; i++) {
        const value = x[xOffset + i]!;
        const scaled = fround(inverseScale * value);
        if (scaled >= levelThresholds[i]! || scaled <= lowThresholds[i]!) {
          const level = clamp(nearestInt(scaled), lowest, highest);
          const previous = signedTrialLevels[i]!;
          if (level !== previous) {
            repeated = false;
            signedTrialLevels[i] = level;
            lowThresholds[i] = level > lowest ? level - 0.5 : Number.NEGATIVE_INFINITY;
            levelThresholds[i] = level < highest ? level + 0.5 : Number.POSITIVE_INFINITY;
            const weight = weights === null ? fround(value * value) : weights[weightsOffset + i]!;
            exactLX += weight * value * (level - previous);
            exactAbsLX += Math.abs(weight * value) * (Math.abs(level) - Math.abs(previous));
            exactL2 += weight * (level * level - previous * previous);
          }
        }
      }
    }
    if (repeated || ratioCannotBeat(exactLX, exactAbsLX, exactL2, best)) continue;
    sumLX = 0;
    sumL2 = 0;
    for (let i = 0; i < n; i++) {
      const value = x[xOffset + i]!;
      const level = signedTrialLevels[i]!;
      const weight = weights === null ? fround(value * value) : weights[weightsOffset + i]!;
      sumLX = fround(sumLX + fround(fround(weight * value) * level));
      sumL2 = fround(sumL2 + fround(fround(weight * level) * level));
    }
    if (sumL2 > 0 && fround(sumLX * sumLX) > fround(best * sumL2)) {
      for (let i = 0; i < n; i++) L[lOffset + i] = nmax + signedTrialLevels[i]!;
      scale = fround(sumLX / sumL2);
      best = fround(scale * sumLX);
    }
  }
  return scale;
}

/**
 * `make_q3_quants(n, nmax, x, L, do_rmse = true)` (Q3_K reference): symmetric levels −nmax…nmax−1 with
 * x² weights, then up to five passes of coordinate descent on each level. Writes level + nmax.
 */
export function makeQ3Quants(n: number, nmax: number, x: Float32Array, xOffset: number, L: Int8Array, lOffset: number): number {
  let max = 0;
  let amax = 0;
  for (let i = 0; i < n; i++) {
    const value = x[xOffset + i]!;
    const magnitude = Math.abs(value);
    if (magnitude > amax) {
      amax = magnitude;
      max = value;
    }
  }
  if (amax < GROUP_MAX_EPS) {
    for (let i = 0; i < n; i++) L[lOffset + i] = 0;
    return 0;
  }
  const lowest = -nmax;
  const highest = nmax - 1;
  const inverseScale = fround(-nmax / max);
  let sumLX = 0;
  let sumL2 = 0;
  for (let i = 0; i < n; i++) {
    const value = x[xOffset + i]!;
    let level = nearestInt(fround(inverseScale * value));
    level = clamp(level, lowest, highest);
    L[lOffset + i] = level;
    const weight = fround(value * value);
    sumLX = fround(sumLX + fround(fround(weight * value) * level));
    sumL2 = fround(sumL2 + fround(fround(weight * level) * level));
  }
  for (let attempt = 0; attempt < 5; attempt++) {
    let changed = 0;
    for (let i = 0; i < n; i++) {
      const value = x[xOffset + i]!;
      const weight = fround(value * value);
      const current = L[lOffset + i]!;
      let sumLXWithout = fround(sumLX - fround(fround(weight * value) * current));
      if (sumLXWithout > 0) {
        let sumL2Without = fround(sumL2 - fround(fround(weight * current) * current));
        let candidate = nearestInt(fround(fround(value * sumL2Without) / sumLXWithout));
        candidate = clamp(candidate, lowest, highest);
        if (candidate !== current) {
          sumLXWithout = fround(sumLXWithout + fround(fround(weight * value) * candidate));
          sumL2Without = fround(sumL2Without + fround(fround(weight * candidate) * candidate));
          if (
            sumL2Without > 0 &&
            fround(fround(sumLXWithout * sumLXWithout) * sumL2) > fround(fround(sumLX * sumLX) * sumL2Without)
          ) {
            L[lOffset + i] = candidate;
            sumLX = sumLXWithout;
            sumL2 = sumL2Without;
            changed++;
          }
        }
      }
    }
    if (changed === 0) break;
  }
  for (let i = 0; i < n; i++) L[lOffset + i] = L[lOffset + i]! + nmax;
  return sumL2 > 0 ? fround(sumLX / sumL2) : 0;
}

/**
 * `make_qkx2_quants` (Q2_K/Q4_K/Q5_K references): asymmetric levels 0…nmax with scale and min, found by a
 * grid search of nstep+1 trial scales, each refined by weighted least squares. `weights[0..n)` are the
 * per-element weights. Writes levels to `L[lOffset…]`, stores −min at `mins[minIndex]` and returns the
 * scale.
 *
 * Pitfall (specs/gguf.md §4.3): `min` — and with it `max − min` — changes whenever a trial wins; the
 * following trials use the new value.
 */
export function makeQkx2Quants(
  n: number,
  nmax: number,
  x: Float32Array,
  xOffset: number,
  weights: Float32Array,
  L: Uint8Array,
  lOffset: number,
  mins: Float32Array,
  minIndex: number,
  rmin: number,
  rdelta: number,
  nstep: number,
  useMad: boolean,
): number {
  return fitScaleAndMin(n, nmax, x, xOffset, weights, L, lOffset, mins, minIndex, rmin, rdelta, nstep, useMad, false);
}

/**
 * `make_qkx3_quants` (importance-weighted Q2_K/Q4_K/Q5_K and Q4_1/Q5_1): like make_qkx2_quants with
 * squared error, but `max <= min` ends early and trial levels are `v > 0 ? nearest_int(MIN(v, nmax)) : 0`
 * so that a `min` near `max` cannot overflow nearest_int. All our callers pass weights.
 */
export function makeQkx3Quants(
  n: number,
  nmax: number,
  x: Float32Array,
  xOffset: number,
  weights: Float32Array,
  L: Uint8Array,
  lOffset: number,
  mins: Float32Array,
  minIndex: number,
  rmin: number,
  rdelta: number,
  nstep: number,
): number {
  return fitScaleAndMin(n, nmax, x, xOffset, weights, L, lOffset, mins, minIndex, rmin, rdelta, nstep, false, true);
}

/**
 * The per-group sums both searches start from, C's float ones and their exact (double) twins for the
 * bounds — w and x are floats, so these double products are exact or nearly. Filled by `groupSums`.
 */
const GROUP_MIN = 0;
const GROUP_MAX = 1;
const GROUP_SUM_W = 2;
const GROUP_SUM_X = 3;
const GROUP_EXACT_W = 4;
const GROUP_EXACT_X = 5;
const GROUP_EXACT_ABS_X = 6;
const GROUP_EXACT_XX = 7;
const groupStatistics = new Float64Array(8);
/** Exact Σw·l, Σw·l², Σw·l·x of the current trial levels, kept by `advanceTrialLevels`. */
const trialSums = new Float64Array(3);

function groupSums(n: number, x: Float32Array, xOffset: number, weights: Float32Array): void {
  const first = x[xOffset]!;
  let min = first;
  let max = first;
  let sumW = weights[0]!;
  let sumX = fround(sumW * first);
  let exactW = sumW;
  let exactX = sumW * first;
  let exactAbsX = Math.abs(exactX);
  let exactXX = exactX * first;
  for (let i = 1; i < n; i++) {
    const value = x[xOffset + i]!;
    if (value < min) min = value;
    if (value > max) max = value;
    const weight = weights[i]!;
    sumW = fround(sumW + weight);
    sumX = fround(sumX + fround(weight * value));
    exactW += weight;
    exactX += weight * value;
    exactAbsX += weight * Math.abs(value);
    exactXX += weight * value * value;
  }
  groupStatistics[GROUP_MIN] = Math.min(min, 0); // `if (min > 0) min = 0;` (agrees on NaN and −0)
  groupStatistics[GROUP_MAX] = max;
  groupStatistics[GROUP_SUM_W] = sumW;
  groupStatistics[GROUP_SUM_X] = sumX;
  groupStatistics[GROUP_EXACT_W] = exactW;
  groupStatistics[GROUP_EXACT_X] = exactX;
  groupStatistics[GROUP_EXACT_ABS_X] = exactAbsX;
  groupStatistics[GROUP_EXACT_XX] = exactXX;
}

/**
 * The initial candidate of make_qkx2/qkx3_quants: levels for iscale = nmax/(max − min) into `L`,
 * x − min into `shiftedValues`, and its error as the best so far.
 */
function initialCandidate(
  n: number,
  nmax: number,
  x: Float32Array,
  xOffset: number,
  weights: Float32Array,
  L: Uint8Array,
  lOffset: number,
  min: number,
  inverseScale: number,
  scale: number,
  useMad: boolean,
): void {
  let initialSum = 0;
  for (let i = 0; i < n; i++) {
    const value = x[xOffset + i]!;
    const shifted = fround(value - min);
    shiftedValues[i] = shifted;
    const level = clamp(nearestInt(fround(inverseScale * shifted)), 0, nmax);
    L[lOffset + i] = level;
    let diff = fround(fround(fround(scale * level) + min) - value);
    diff = useMad ? Math.abs(diff) : fround(diff * diff);
    const term = fround(weights[i]! * diff);
    errorTerms[i] = term;
    initialSum += term;
  }
  adoptTrialError(n, initialSum, Number.NaN);
}

/**
 * The levels of the trial with `inverseScale` into `trialLevels` and their exact sums into `trialSums`;
 * true when they equal the previous trial's (`comparable` false for the first trial).
 *
 * Levels only rise from trial to trial while `min` (hence x − min and max − min) stays fixed: the
 * trial inverse scales increase, and so does every fround(iscale·(x − min)) ≥ 0 (a negative one gives
 * level 0 throughout). So unless `fullPass`, only elements whose value reaches the next rounding
 * threshold (level + ½; ties included, then re-rounded exactly) are re-evaluated, and the sums are
 * updated for the levels that change. A new `min` needs a full pass.
 */
function advanceTrialLevels(
  n: number,
  nmax: number,
  x: Float32Array,
  xOffset: number,
  weights: Float32Array,
  inverseScale: number,
  fullPass: boolean,
  comparable: boolean,
  qkx3: boolean,
): boolean {
  let repeated = comparable;
  if (fullPass) {
    let exactL = 0;
    let exactL2 = 0;
    let exactXL = 0;
    for (let i = 0; i < n; i++) {
      const scaled = fround(inverseScale * shiftedValues[i]!);
      // qkx3: `v > 0 ? nearest_int(MIN(v, nmax)) : 0` (v > 0 excludes NaN, so Math.min agrees with MIN).
      const level = qkx3 ? (scaled > 0 ? nearestInt(Math.min(scaled, nmax)) : 0) : clamp(nearestInt(scaled), 0, nmax);
      if (level !== trialLevels[i]) repeated = false;
      trialLevels[i] = level;
      levelThresholds[i] = level < nmax ? level + 0.5 : Number.POSITIVE_INFINITY;
      const weightedLevel = weights[i]! * level;
      exactL += weightedLevel;
      exactL2 += weightedLevel * level;
      exactXL += weightedLevel * x[xOffset + i]!;
    }
    trialSums[0] = exactL;
    trialSums[1] = exactL2;
    trialSums[2] = exactXL;
    return repeated;
  }
  let exactL = trialSums[0]!;
  let exactL2 = trialSums[1]!;
  let exactXL = trialSums[2]!;
  for (let i = 0; i < n; i++) {
    const scaled = fround(inverseScale * shiftedValues[i]!);
    if (scaled >= levelThresholds[i]!) {
      const level = qkx3 ? nearestInt(Math.min(scaled, nmax)) : clamp(nearestInt(scaled), 0, nmax);
      const previous = trialLevels[i]!;
      if (level !== previous) {
        repeated = false;
        trialLevels[i] = level;
        levelThresholds[i] = level < nmax ? level + 0.5 : Number.POSITIVE_INFINITY;
        const weight = weights[i]!;
        exactL += weight * (level - previous);
        exactL2 += weight * (level * level - previous * previous);
        exactXL += weight * (level - previous) * x[xOffset + i]!;
      }
    }
  }
  trialSums[0] = exactL;
  trialSums[1] = exactL2;
  trialSums[2] = exactXL;
  return repeated;
}

/**
 * The body of make_qkx2_quants (`qkx3` false) and make_qkx3_quants (`qkx3` true) with squared error.
 * The absolute-error search of the Q2_K reference is `fitScaleAndMinAbsolute`, kept apart so that each
 * hot loop is optimized with its own type feedback and the squared-error one needs no `use_mad` branch.
 */
function fitScaleAndMin(
  n: number,
  nmax: number,
  x: Float32Array,
  xOffset: number,
  weights: Float32Array,
  L: Uint8Array,
  lOffset: number,
  mins: Float32Array,
  minIndex: number,
  rmin: number,
  rdelta: number,
  nstep: number,
  useMad: boolean,
  qkx3: boolean,
): number {
  if (useMad) return fitScaleAndMinAbsolute(n, nmax, x, xOffset, weights, L, lOffset, mins, minIndex, rmin, rdelta, nstep);
  groupSums(n, x, xOffset, weights);
  let min = groupStatistics[GROUP_MIN]!;
  const max = groupStatistics[GROUP_MAX]!;
  const sumW = groupStatistics[GROUP_SUM_W]!;
  const sumX = groupStatistics[GROUP_SUM_X]!;
  const exactW = groupStatistics[GROUP_EXACT_W]!;
  const exactX = groupStatistics[GROUP_EXACT_X]!;
  const exactAbsX = groupStatistics[GROUP_EXACT_ABS_X]!;
  const exactXX = groupStatistics[GROUP_EXACT_XX]!;
  if (qkx3 ? max <= min : max === min) {
    for (let i = 0; i < n; i++) L[lOffset + i] = 0;
    mins[minIndex] = -min;
    return 0;
  }
  let inverseScale = fround(nmax / fround(max - min));
  let scale = fround(1 / inverseScale);
  initialCandidate(n, nmax, x, xOffset, weights, L, lOffset, min, inverseScale, scale, false);
  if (nstep < 1) {
    mins[minIndex] = -min;
    return scale;
  }
  let fullPass = true;
  for (let step = 0; step <= nstep; step++) {
    inverseScale = fround(fround(fround(rmin + fround(rdelta * step)) + nmax) / fround(max - min));
    const repeated = advanceTrialLevels(n, nmax, x, xOffset, weights, inverseScale, fullPass, step > 0, qkx3);
    fullPass = false;
    if (repeated) continue;
    if (
      leastSquaresCannotBeat(
        exactW,
        exactX,
        exactAbsX,
        exactXX,
        trialSums[0]!,
        trialSums[1]!,
        trialSums[2]!,
        nmax * exactAbsX,
        bestErrorHigh(),
      )
    ) {
      continue;
    }
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      const level = trialLevels[i]!;
      const weightedLevel = fround(weights[i]! * level);
      sumL = fround(sumL + weightedLevel);
      sumL2 = fround(sumL2 + fround(weightedLevel * level));
      sumXL = fround(sumXL + fround(weightedLevel * x[xOffset + i]!));
    }
    const determinant = fround(fround(sumW * sumL2) - fround(sumL * sumL));
    if (determinant > 0) {
      let trialScale = fround(fround(fround(sumW * sumXL) - fround(sumX * sumL)) / determinant);
      let trialMin = fround(fround(fround(sumL2 * sumX) - fround(sumL * sumXL)) / determinant);
      if (trialMin > 0) {
        trialMin = 0;
        trialScale = fround(sumXL / sumL2);
      }
      let doubleSum = 0;
      for (let i = 0; i < n; i++) {
        const diff = fround(fround(fround(trialScale * trialLevels[i]!) + trialMin) - x[xOffset + i]!);
        const term = fround(weights[i]! * fround(diff * diff));
        errorTerms[i] = term;
        doubleSum += term;
      }
      if (trialWins(n, doubleSum)) {
        for (let i = 0; i < n; i++) L[lOffset + i] = trialLevels[i]!;
        scale = trialScale;
        // Assign even when equal: −0 and +0 compare equal but give different bytes later (fp16(−min)).
        const minChanged = trialMin !== min;
        min = trialMin;
        if (minChanged) {
          for (let i = 0; i < n; i++) shiftedValues[i] = fround(x[xOffset + i]! - min);
          fullPass = true;
        }
      }
    }
  }
  mins[minIndex] = -min;
  return scale;
}

/**
 * make_qkx2_quants with `use_mad` (the Q2_K reference): weighted absolute error. Same search as
 * `fitScaleAndMin` without the least-squares bound, which only holds for squared error.
 */
function fitScaleAndMinAbsolute(
  n: number,
  nmax: number,
  x: Float32Array,
  xOffset: number,
  weights: Float32Array,
  L: Uint8Array,
  lOffset: number,
  mins: Float32Array,
  minIndex: number,
  rmin: number,
  rdelta: number,
  nstep: number,
): number {
  groupSums(n, x, xOffset, weights);
  let min = groupStatistics[GROUP_MIN]!;
  const max = groupStatistics[GROUP_MAX]!;
  const sumW = groupStatistics[GROUP_SUM_W]!;
  const sumX = groupStatistics[GROUP_SUM_X]!;
  if (max === min) {
    for (let i = 0; i < n; i++) L[lOffset + i] = 0;
    mins[minIndex] = -min;
    return 0;
  }
  let inverseScale = fround(nmax / fround(max - min));
  let scale = fround(1 / inverseScale);
  initialCandidate(n, nmax, x, xOffset, weights, L, lOffset, min, inverseScale, scale, true);
  if (nstep < 1) {
    mins[minIndex] = -min;
    return scale;
  }
  let fullPass = true;
  for (let step = 0; step <= nstep; step++) {
    inverseScale = fround(fround(fround(rmin + fround(rdelta * step)) + nmax) / fround(max - min));
    const repeated = advanceTrialLevels(n, nmax, x, xOffset, weights, inverseScale, fullPass, step > 0, false);
    fullPass = false;
    if (repeated) continue;
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      const level = trialLevels[i]!;
      const weightedLevel = fround(weights[i]! * level);
      sumL = fround(sumL + weightedLevel);
      sumL2 = fround(sumL2 + fround(weightedLevel * level));
      sumXL = fround(sumXL + fround(weightedLevel * x[xOffset + i]!));
    }
    const determinant = fround(fround(sumW * sumL2) - fround(sumL * sumL));
    if (determinant > 0) {
      let trialScale = fround(fround(fround(sumW * sumXL) - fround(sumX * sumL)) / determinant);
      let trialMin = fround(fround(fround(sumL2 * sumX) - fround(sumL * sumXL)) / determinant);
      if (trialMin > 0) {
        trialMin = 0;
        trialScale = fround(sumXL / sumL2);
      }
      let doubleSum = 0;
      for (let i = 0; i < n; i++) {
        const diff = fround(fround(fround(trialScale * trialLevels[i]!) + trialMin) - x[xOffset + i]!);
        const term = fround(weights[i]! * Math.abs(diff));
        errorTerms[i] = term;
        doubleSum += term;
      }
      if (trialWins(n, doubleSum)) {
        for (let i = 0; i < n; i++) L[lOffset + i] = trialLevels[i]!;
        scale = trialScale;
        const minChanged = trialMin !== min;
        min = trialMin;
        if (minChanged) {
          for (let i = 0; i < n; i++) shiftedValues[i] = fround(x[xOffset + i]! - min);
          fullPass = true;
        }
      }
    }
  }
  mins[minIndex] = -min;
  return scale;
}

/**
 * `make_qp_quants` (importance-weighted K-quants): quantizes the non-negative sub-block scales (or mins)
 * `x[0..n)` to levels 0…nmax under a common super-scale: 9 trial scales by weighted squared error, then
 * up to five coordinate-descent passes. Levels land in `L` (uint8_t in C: stores wrap). Returns the scale.
 */
export function makeQpQuants(n: number, nmax: number, x: Float32Array, L: Uint8Array, weights: Float32Array): number {
  let max = 0;
  for (let i = 0; i < n; i++) {
    const value = x[i]!;
    // C's MAX(max, x[i]) macro, kept as a ternary: Math.max differs on NaN.
    // biome-ignore lint/complexity/useMathMinMax: C macro semantics on NaN
    max = max > value ? max : value;
  }
  if (max < GROUP_MAX_EPS) {
    for (let i = 0; i < n; i++) L[i] = 0;
    return 0;
  }
  let inverseScale = fround(nmax / max);
  for (let i = 0; i < n; i++) L[i] = nearestInt(fround(inverseScale * x[i]!));
  const scale = fround(1 / inverseScale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    const diff = fround(x[i]! - fround(scale * L[i]!));
    bestError = fround(bestError + fround(fround(weights[i]! * diff) * diff));
  }
  for (let step = -4; step <= 4; step++) {
    if (step === 0) continue;
    const trialInverseScale = fround(fround(fround(ONE_TENTH * step) + nmax) / max);
    const trialScale = fround(1 / trialInverseScale);
    let error = 0;
    for (let i = 0; i < n; i++) {
      let level = nearestInt(fround(trialInverseScale * x[i]!));
      level = Math.min(level, nmax);
      const diff = fround(x[i]! - fround(trialScale * level));
      error = fround(error + fround(fround(weights[i]! * diff) * diff));
    }
    if (error < bestError) {
      bestError = error;
      inverseScale = trialInverseScale;
    }
  }
  let sumLX = 0;
  let sumL2 = 0;
  for (let i = 0; i < n; i++) {
    const value = x[i]!;
    let level = nearestInt(fround(inverseScale * value));
    level = Math.min(level, nmax);
    L[i] = level;
    const weight = weights[i]!;
    sumLX = fround(sumLX + fround(fround(weight * value) * level));
    sumL2 = fround(sumL2 + fround(fround(weight * level) * level));
  }
  for (let attempt = 0; attempt < 5; attempt++) {
    let changed = 0;
    for (let i = 0; i < n; i++) {
      const value = x[i]!;
      const weight = weights[i]!;
      const current = L[i]!;
      let sumLXWithout = fround(sumLX - fround(fround(weight * value) * current));
      let sumL2Without = fround(sumL2 - fround(fround(weight * current) * current));
      if (sumLXWithout > 0 && sumL2Without > 0) {
        let candidate = nearestInt(fround(fround(value * sumL2Without) / sumLXWithout));
        candidate = Math.min(candidate, nmax);
        if (candidate !== current) {
          sumLXWithout = fround(sumLXWithout + fround(fround(weight * value) * candidate));
          sumL2Without = fround(sumL2Without + fround(fround(weight * candidate) * candidate));
          if (fround(fround(sumLXWithout * sumLXWithout) * sumL2) > fround(fround(sumLX * sumLX) * sumL2Without)) {
            L[i] = candidate;
            sumLX = sumLXWithout;
            sumL2 = sumL2Without;
            changed++;
          }
        }
      }
    }
    if (changed === 0) break;
  }
  return sumL2 > 0 ? fround(sumLX / sumL2) : 0;
}
