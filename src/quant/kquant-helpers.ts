/**
 * Ports of the scale-search helpers in ggml-quants.c that the K-quants (and the importance-weighted
 * paths of the legacy quants) share: `make_qx_quants`, `make_q3_quants`, `make_qkx2_quants`,
 * `make_qkx3_quants`, `make_qp_quants`. Every `float` intermediate is rounded with `fround`, sums run
 * sequentially, and integer stores go through typed arrays of the C element type (int8_t → Int8Array,
 * uint8_t → Uint8Array) so that C's wrap-around on store is reproduced for free. See specs/gguf.md §4.3.
 *
 * Arrays are passed with offsets instead of subarrays so the callers allocate nothing per block.
 */

import { fround, GROUP_MAX_EPS, nearestInt } from './ggml-math.js';

/** `Laux` scratch of make_qkx2_quants / make_qkx3_quants (n ≤ 32 for every caller). */
const trialLevels = new Uint8Array(32);
/** `x[i] - min` for the current `min`: it only changes when a trial wins, so it is cached. */
const shiftedValues = new Float32Array(32);

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
    let level = nearestInt(fround(inverseScale * value));
    level = level < lowest ? lowest : level > highest ? highest : level;
    L[lOffset + i] = level + nmax;
    const weight = weights === null ? fround(value * value) : weights[weightsOffset + i]!;
    sumLX = fround(sumLX + fround(fround(weight * value) * level));
    sumL2 = fround(sumL2 + fround(fround(weight * level) * level));
  }
  let scale = sumL2 !== 0 ? fround(sumLX / sumL2) : 0;
  let best = fround(scale * sumLX);
  for (let step = -9; step <= 9; step++) {
    if (step === 0) continue;
    inverseScale = fround(-fround(nmax + fround(ONE_TENTH * step)) / max);
    sumLX = 0;
    sumL2 = 0;
    for (let i = 0; i < n; i++) {
      const value = x[xOffset + i]!;
      let level = nearestInt(fround(inverseScale * value));
      level = level < lowest ? lowest : level > highest ? highest : level;
      const weight = weights === null ? fround(value * value) : weights[weightsOffset + i]!;
      sumLX = fround(sumLX + fround(fround(weight * value) * level));
      sumL2 = fround(sumL2 + fround(fround(weight * level) * level));
    }
    if (sumL2 > 0 && fround(sumLX * sumLX) > fround(best * sumL2)) {
      for (let i = 0; i < n; i++) {
        const level = nearestInt(fround(inverseScale * x[xOffset + i]!));
        L[lOffset + i] = nmax + (level < lowest ? lowest : level > highest ? highest : level);
      }
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
    level = level < lowest ? lowest : level > highest ? highest : level;
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
        candidate = candidate < lowest ? lowest : candidate > highest ? highest : candidate;
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
  const first = x[xOffset]!;
  let min = first;
  let max = first;
  let sumW = weights[0]!;
  let sumX = fround(sumW * first);
  for (let i = 1; i < n; i++) {
    const value = x[xOffset + i]!;
    if (value < min) min = value;
    if (value > max) max = value;
    const weight = weights[i]!;
    sumW = fround(sumW + weight);
    sumX = fround(sumX + fround(weight * value));
  }
  if (min > 0) min = 0;
  if (max === min) {
    for (let i = 0; i < n; i++) L[lOffset + i] = 0;
    mins[minIndex] = -min;
    return 0;
  }
  let inverseScale = fround(nmax / fround(max - min));
  let scale = fround(1 / inverseScale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    const value = x[xOffset + i]!;
    const shifted = fround(value - min);
    shiftedValues[i] = shifted;
    let level = nearestInt(fround(inverseScale * shifted));
    level = level < 0 ? 0 : level > nmax ? nmax : level;
    L[lOffset + i] = level;
    let diff = fround(fround(fround(scale * level) + min) - value);
    diff = useMad ? Math.abs(diff) : fround(diff * diff);
    bestError = fround(bestError + fround(weights[i]! * diff));
  }
  if (nstep < 1) {
    mins[minIndex] = -min;
    return scale;
  }
  for (let step = 0; step <= nstep; step++) {
    inverseScale = fround(fround(fround(rmin + fround(rdelta * step)) + nmax) / fround(max - min));
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      let level = nearestInt(fround(inverseScale * shiftedValues[i]!));
      level = level < 0 ? 0 : level > nmax ? nmax : level;
      trialLevels[i] = level;
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
      let error = 0;
      for (let i = 0; i < n; i++) {
        let diff = fround(fround(fround(trialScale * trialLevels[i]!) + trialMin) - x[xOffset + i]!);
        diff = useMad ? Math.abs(diff) : fround(diff * diff);
        error = fround(error + fround(weights[i]! * diff));
      }
      if (error < bestError) {
        for (let i = 0; i < n; i++) L[lOffset + i] = trialLevels[i]!;
        bestError = error;
        scale = trialScale;
        if (trialMin !== min) {
          min = trialMin;
          for (let i = 0; i < n; i++) shiftedValues[i] = fround(x[xOffset + i]! - min);
        }
      }
    }
  }
  mins[minIndex] = -min;
  return scale;
}

/**
 * `make_qkx3_quants` (importance-weighted Q2_K/Q4_K/Q5_K and Q4_1/Q5_1): like make_qkx2_quants with
 * squared error, but levels are computed as `v > 0 ? nearest_int(MIN(v, nmax)) : 0` so that a `min` near
 * `max` cannot overflow nearest_int. All our callers pass weights.
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
  const first = x[xOffset]!;
  let min = first;
  let max = first;
  let sumW = weights[0]!;
  let sumX = fround(sumW * first);
  for (let i = 1; i < n; i++) {
    const value = x[xOffset + i]!;
    if (value < min) min = value;
    if (value > max) max = value;
    const weight = weights[i]!;
    sumW = fround(sumW + weight);
    sumX = fround(sumX + fround(weight * value));
  }
  if (min > 0) min = 0;
  if (max <= min) {
    for (let i = 0; i < n; i++) L[lOffset + i] = 0;
    mins[minIndex] = -min;
    return 0;
  }
  let inverseScale = fround(nmax / fround(max - min));
  let scale = fround(1 / inverseScale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    const value = x[xOffset + i]!;
    const shifted = fround(value - min);
    shiftedValues[i] = shifted;
    let level = nearestInt(fround(inverseScale * shifted));
    level = level < 0 ? 0 : level > nmax ? nmax : level;
    L[lOffset + i] = level;
    let diff = fround(fround(fround(scale * level) + min) - value);
    diff = fround(diff * diff);
    bestError = fround(bestError + fround(weights[i]! * diff));
  }
  if (nstep < 1) {
    mins[minIndex] = -min;
    return scale;
  }
  for (let step = 0; step <= nstep; step++) {
    inverseScale = fround(fround(fround(rmin + fround(rdelta * step)) + nmax) / fround(max - min));
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      const scaled = fround(inverseScale * shiftedValues[i]!);
      const level = scaled > 0 ? nearestInt(scaled < nmax ? scaled : nmax) : 0;
      trialLevels[i] = level;
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
      let error = 0;
      for (let i = 0; i < n; i++) {
        let diff = fround(fround(fround(trialScale * trialLevels[i]!) + trialMin) - x[xOffset + i]!);
        diff = fround(diff * diff);
        error = fround(error + fround(weights[i]! * diff));
      }
      if (error < bestError) {
        for (let i = 0; i < n; i++) L[lOffset + i] = trialLevels[i]!;
        bestError = error;
        scale = trialScale;
        if (trialMin !== min) {
          min = trialMin;
          for (let i = 0; i < n; i++) shiftedValues[i] = fround(x[xOffset + i]! - min);
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
      level = level < nmax ? level : nmax;
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
    level = level < nmax ? level : nmax;
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
        candidate = candidate < nmax ? candidate : nmax;
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
