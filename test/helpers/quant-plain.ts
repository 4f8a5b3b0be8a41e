/**
 * Plain, shortcut-free ports of ggml's scale searches (ggml-quants.c: make_qx_quants, make_qkx2_quants,
 * make_qkx3_quants, and the per-block search of quantize_row_iq4_nl_impl): every trial evaluated in
 * float32 exactly as C does, nothing skipped. The production helpers skip trials that provably cannot
 * win (src/quant/kquant-helpers.ts); test/quant-differential.test.ts holds them to these.
 */

const fround = Math.fround;
const GROUP_MAX_EPS = fround(1e-15);
const ONE_TENTH = fround(0.1);
const scratch = new Float32Array(1);
const scratchBits = new Int32Array(scratch.buffer);

/** ggml nearest_int, written out literally with the float bit trick. */
export function nearestIntPlain(value: number): number {
  scratch[0] = fround(value) + 12582912;
  return (scratchBits[0]! & 0x007fffff) - 0x00400000;
}

/** MAX(low, MIN(high, value)) written as C's macros expand. */
function clampInt(value: number, low: number, high: number): number {
  // biome-ignore lint/complexity/useMathMinMax: spelled out as ggml's MAX/MIN macros
  return value < low ? low : value > high ? high : value;
}

export interface PlainResult {
  scale: number;
  /** −min for the asymmetric searches; 0 for the symmetric ones. */
  theMin: number;
  levels: number[];
}

export function makeQxQuantsPlain(nmax: number, x: Float32Array, weights: Float32Array | null): PlainResult {
  const n = x.length;
  let max = 0;
  let amax = 0;
  for (let i = 0; i < n; i++) {
    const ax = Math.abs(x[i]!);
    if (ax > amax) {
      amax = ax;
      max = x[i]!;
    }
  }
  const L = new Int8Array(n);
  if (amax < GROUP_MAX_EPS) return { scale: 0, theMin: 0, levels: Array.from(L) };
  const weight = (i: number): number => (weights === null ? fround(x[i]! * x[i]!) : weights[i]!);
  let iscale = fround(-nmax / max);
  let sumlx = 0;
  let suml2 = 0;
  for (let i = 0; i < n; i++) {
    const l = clampInt(nearestIntPlain(fround(iscale * x[i]!)), -nmax, nmax - 1);
    L[i] = l + nmax;
    const w = weight(i);
    sumlx = fround(sumlx + fround(fround(w * x[i]!) * l));
    suml2 = fround(suml2 + fround(fround(w * l) * l));
  }
  let scale = suml2 !== 0 ? fround(sumlx / suml2) : 0;
  let best = fround(scale * sumlx);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    iscale = fround(-fround(nmax + fround(ONE_TENTH * is)) / max);
    sumlx = 0;
    suml2 = 0;
    for (let i = 0; i < n; i++) {
      const l = clampInt(nearestIntPlain(fround(iscale * x[i]!)), -nmax, nmax - 1);
      const w = weight(i);
      sumlx = fround(sumlx + fround(fround(w * x[i]!) * l));
      suml2 = fround(suml2 + fround(fround(w * l) * l));
    }
    if (suml2 > 0 && fround(sumlx * sumlx) > fround(best * suml2)) {
      for (let i = 0; i < n; i++) L[i] = nmax + clampInt(nearestIntPlain(fround(iscale * x[i]!)), -nmax, nmax - 1);
      scale = fround(sumlx / suml2);
      best = fround(scale * sumlx);
    }
  }
  return { scale, theMin: 0, levels: Array.from(L) };
}

/** make_qkx2_quants (`qkx3` false) or make_qkx3_quants (`qkx3` true, squared error). */
export function makeQkxQuantsPlain(
  nmax: number,
  x: Float32Array,
  weights: Float32Array,
  rmin: number,
  rdelta: number,
  nstep: number,
  useMad: boolean,
  qkx3: boolean,
): PlainResult {
  const n = x.length;
  let min = x[0]!;
  let max = x[0]!;
  let sumW = weights[0]!;
  let sumX = fround(sumW * x[0]!);
  for (let i = 1; i < n; i++) {
    if (x[i]! < min) min = x[i]!;
    if (x[i]! > max) max = x[i]!;
    sumW = fround(sumW + weights[i]!);
    sumX = fround(sumX + fround(weights[i]! * x[i]!));
  }
  if (min > 0) min = 0;
  const L = new Uint8Array(n);
  const Laux = new Uint8Array(n);
  if (qkx3 ? max <= min : max === min) return { scale: 0, theMin: -min, levels: Array.from(L) };
  let iscale = fround(nmax / fround(max - min));
  let scale = fround(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    L[i] = clampInt(nearestIntPlain(fround(iscale * fround(x[i]! - min))), 0, nmax);
    let diff = fround(fround(fround(scale * L[i]!) + min) - x[i]!);
    diff = useMad ? Math.abs(diff) : fround(diff * diff);
    bestError = fround(bestError + fround(weights[i]! * diff));
  }
  if (nstep < 1) return { scale, theMin: -min, levels: Array.from(L) };
  for (let is = 0; is <= nstep; is++) {
    iscale = fround(fround(fround(rmin + fround(rdelta * is)) + nmax) / fround(max - min));
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      const v = fround(iscale * fround(x[i]! - min));
      // biome-ignore lint/complexity/useMathMinMax: spelled out as ggml's MIN macro
      const l = qkx3 ? (v > 0 ? nearestIntPlain(v < nmax ? v : nmax) : 0) : clampInt(nearestIntPlain(v), 0, nmax);
      Laux[i] = l;
      const w = weights[i]!;
      sumL = fround(sumL + fround(w * l));
      sumL2 = fround(sumL2 + fround(fround(w * l) * l));
      sumXL = fround(sumXL + fround(fround(w * l) * x[i]!));
    }
    const D = fround(fround(sumW * sumL2) - fround(sumL * sumL));
    if (D > 0) {
      let thisScale = fround(fround(fround(sumW * sumXL) - fround(sumX * sumL)) / D);
      let thisMin = fround(fround(fround(sumL2 * sumX) - fround(sumL * sumXL)) / D);
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = fround(sumXL / sumL2);
      }
      let curError = 0;
      for (let i = 0; i < n; i++) {
        let diff = fround(fround(fround(thisScale * Laux[i]!) + thisMin) - x[i]!);
        diff = useMad ? Math.abs(diff) : fround(diff * diff);
        curError = fround(curError + fround(weights[i]! * diff));
      }
      if (curError < bestError) {
        L.set(Laux);
        bestError = curError;
        scale = thisScale;
        min = thisMin;
      }
    }
  }
  return { scale, theMin: -min, levels: Array.from(L) };
}

const KVALUES_IQ4NL = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/** best_index_int8(16, kvalues_iq4nl, x): the nearest level by a linear scan, ties to the upper one. */
function bestIndexPlain(x: number): number {
  let index = 0;
  for (let i = 1; i < 16; i++) if (x + x >= KVALUES_IQ4NL[i - 1]! + KVALUES_IQ4NL[i]!) index = i;
  return index;
}

/** The per-32-block scale search of quantize_row_iq4_nl_impl with ntry = 7 (weights given). */
export function iq4BlockScalePlain(x: Float32Array, weights: Float32Array): PlainResult {
  let amax = 0;
  let max = 0;
  for (let j = 0; j < 32; j++) {
    const ax = Math.abs(x[j]!);
    if (ax > amax) {
      amax = ax;
      max = x[j]!;
    }
  }
  const L = new Uint8Array(32);
  if (amax < GROUP_MAX_EPS) return { scale: 0, theMin: 0, levels: Array.from(L) };
  let d = fround(-max / KVALUES_IQ4NL[0]!);
  let id = fround(1 / d);
  let sumqx = 0;
  let sumq2 = 0;
  for (let j = 0; j < 32; j++) {
    const l = bestIndexPlain(fround(id * x[j]!));
    L[j] = l;
    const q = KVALUES_IQ4NL[l]!;
    sumqx = fround(sumqx + fround(fround(weights[j]! * q) * x[j]!));
    sumq2 = fround(sumq2 + fround(fround(weights[j]! * q) * q));
  }
  d = sumq2 > 0 ? fround(sumqx / sumq2) : 0;
  let best = fround(d * sumqx);
  for (let itry = -7; itry <= 7; itry++) {
    id = fround((itry + KVALUES_IQ4NL[0]!) / max);
    sumqx = 0;
    sumq2 = 0;
    for (let j = 0; j < 32; j++) {
      const q = KVALUES_IQ4NL[bestIndexPlain(fround(id * x[j]!))]!;
      sumqx = fround(sumqx + fround(fround(weights[j]! * q) * x[j]!));
      sumq2 = fround(sumq2 + fround(fround(weights[j]! * q) * q));
    }
    if (sumq2 > 0 && fround(sumqx * sumqx) > fround(best * sumq2)) {
      d = fround(sumqx / sumq2);
      best = fround(d * sumqx);
    }
  }
  return { scale: d, theMin: 0, levels: Array.from(L) };
}
