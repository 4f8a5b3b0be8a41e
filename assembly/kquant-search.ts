/**
 * The scale searches of ggml-quants.c that the K-quants share (make_qx_quants, make_q3_quants,
 * make_qkx2_quants, make_qkx3_quants, make_qp_quants), for assembly/kquants.ts.
 *
 * Lane layout: a super-block's groups (sub-blocks) are independent searches, so four of them run at
 * once, one per f32x4 lane. Each lane performs exactly the float32 operations C performs for its group,
 * in the same order (sums stay sequential over the group's elements; only groups run side by side), and
 * every data-dependent branch of C becomes a per-lane select. The groups are stored "lane-major": element
 * i of the four groups is one v128 at `xt + 16·i` (`transposeGroups`).
 *
 * These are the plain searches (every trial evaluated, as ggml does), not the shortcut versions of
 * src/quant/kquant-helpers.ts, which are proven to give the same results.
 *
 * NaN payloads. When both operands of an x86 float operation are NaN, the result is the first source
 * operand's NaN. WebAssembly SIMD arithmetic keeps the operand order it is given (V8 never swaps f32x4
 * operands), so the order chosen here decides which NaN survives, and so which level a NaN rounds to.
 * The reference is the TypeScript port as V8's optimizing compiler runs it (Node 20, x64): a commutative
 * double operation (+, ×) is emitted with its operands swapped when the right one has no later use (the
 * instruction selector's "better left operand"), so the right operand's NaN wins in `sum + term`,
 * `shifted · iscale`, …, and the left one's where the right operand is used again afterwards — which a
 * loop-invariant operand is in a loop's first iteration, peeled off by TurboFan; − and ÷ keep their
 * order. Each commutative operation below is written with the operand whose NaN survives in the
 * reference first (`f32x4.add(term, sum)` for `sum = fround(sum + term)`); where a result only feeds
 * comparisons the order cannot matter (a NaN fails every comparison, whatever its payload). Scalar
 * f32 arithmetic is avoided wherever two NaNs can meet: V8 compiles it first without that swap (Liftoff)
 * and later with it. The reference's own first, interpreted calls swap every + and ×, so on inputs with
 * NaN payloads the TypeScript kernels themselves give different bytes before and after optimization;
 * these kernels follow the optimized code.
 */
import { GROUP_MAX_EPS, nearestInt } from './common';

const ONE_TENTH: f32 = 0.1;

/** Scratch of the searches: per element, w and w·x (make_qx_quants), trial levels (make_qkx*_quants). */
const AUX_W: usize = memory.data(32 * 16, 16);
const AUX_WX: usize = memory.data(32 * 16, 16);
const AUX_LEVELS: usize = memory.data(32 * 16, 16);

/**
 * Copies four groups of `n` floats (n a multiple of 4; group g at `src + g·strideBytes`) to lane-major
 * order at `dst`: n v128, the i-th holding element i of the four groups.
 */
export function transposeGroups(src: usize, strideBytes: usize, n: i32, dst: usize): void {
  for (let i = 0; i < n; i += 4) {
    const p = src + (<usize>i << 2);
    const a = v128.load(p);
    const b = v128.load(p + strideBytes);
    const c = v128.load(p + 2 * strideBytes);
    const d = v128.load(p + 3 * strideBytes);
    const abLow = v128.shuffle<i32>(a, b, 0, 4, 1, 5);
    const abHigh = v128.shuffle<i32>(a, b, 2, 6, 3, 7);
    const cdLow = v128.shuffle<i32>(c, d, 0, 4, 1, 5);
    const cdHigh = v128.shuffle<i32>(c, d, 2, 6, 3, 7);
    const q = dst + (<usize>i << 4);
    v128.store(q, v128.shuffle<i64>(abLow, cdLow, 0, 2));
    v128.store(q, v128.shuffle<i64>(abLow, cdLow, 1, 3), 16);
    v128.store(q, v128.shuffle<i64>(abHigh, cdHigh, 0, 2), 32);
    v128.store(q, v128.shuffle<i64>(abHigh, cdHigh, 1, 3), 48);
  }
}

/**
 * Stores the low bytes of lane-major i32 levels `lt[0..n)` (n a multiple of 4) group by group: group g's
 * element i at `dst + g·strideBytes + i` (C's store to int8_t/uint8_t).
 */
export function storeLaneBytes(lt: usize, n: i32, dst: usize, strideBytes: usize): void {
  const mask = i32x4.splat(0xff);
  for (let i = 0; i < n; i += 4) {
    const p = lt + (<usize>i << 4);
    const a = v128.and(v128.load(p), mask);
    const b = v128.and(v128.load(p, 16), mask);
    const c = v128.and(v128.load(p, 32), mask);
    const d = v128.and(v128.load(p, 48), mask);
    // Transpose: row g = element i..i+3 of group g.
    const abLow = v128.shuffle<i32>(a, b, 0, 4, 1, 5);
    const abHigh = v128.shuffle<i32>(a, b, 2, 6, 3, 7);
    const cdLow = v128.shuffle<i32>(c, d, 0, 4, 1, 5);
    const cdHigh = v128.shuffle<i32>(c, d, 2, 6, 3, 7);
    const row0 = v128.shuffle<i64>(abLow, cdLow, 0, 2);
    const row1 = v128.shuffle<i64>(abLow, cdLow, 1, 3);
    const row2 = v128.shuffle<i64>(abHigh, cdHigh, 0, 2);
    const row3 = v128.shuffle<i64>(abHigh, cdHigh, 1, 3);
    const bytes = i8x16.narrow_i16x8_u(i16x8.narrow_i32x4_u(row0, row1), i16x8.narrow_i32x4_u(row2, row3));
    const q = dst + <usize>i;
    store<u32>(q, i32x4.extract_lane(bytes, 0));
    store<u32>(q + strideBytes, i32x4.extract_lane(bytes, 1));
    store<u32>(q + 2 * strideBytes, i32x4.extract_lane(bytes, 2));
    store<u32>(q + 3 * strideBytes, i32x4.extract_lane(bytes, 3));
  }
}

/** `nearest_int` on four lanes: float + 1.5·2^23, mantissa bits (defined for any input, as in C). */
// @ts-ignore: decorator
@inline
export function nearestIntX4(value: v128): v128 {
  const shifted = f32x4.add(value, f32x4.splat(12582912.0));
  return i32x4.sub(v128.and(shifted, i32x4.splat(0x007fffff)), i32x4.splat(0x00400000));
}

/** `MAX(low, MIN(high, l))` on i32 lanes. */
// @ts-ignore: decorator
@inline
export function clampX4(value: v128, low: i32, high: i32): v128 {
  return i32x4.max_s(i32x4.splat(low), i32x4.min_s(i32x4.splat(high), value));
}

/** The sequential sum Σ w[i] over lane-major `wt[0..n)`: each lane sums its group in order. */
export function laneSums(wt: usize, n: i32): v128 {
  let sum = f32x4.splat(0);
  for (let i = 0; i < n; i++) sum = f32x4.add(v128.load(wt + (<usize>i << 4)), sum);
  return sum;
}

// ------------------------------------------------------------------------------------ make_qx_quants

/**
 * `make_qx_quants(n, nmax, x, L, rmse_type = 1, qw)` for four lane-major groups `xt[0..n)`: weights
 * `wt[0..n)`, or x² when `wt` is 0. Writes level + nmax (or 0 for a group below GROUP_MAX_EPS) as i32
 * lanes to `lt[0..n)` and returns the four scales.
 */
export function qxQuantsX4(n: i32, nmax: i32, xt: usize, wt: usize, lt: usize): v128 {
  const zero = f32x4.splat(0);
  let amax = zero;
  let max = zero;
  for (let i = 0; i < n; i++) {
    const o = <usize>i << 4;
    const x = v128.load(xt + o);
    const magnitude = f32x4.abs(x);
    const larger = f32x4.gt(magnitude, amax);
    amax = v128.bitselect(magnitude, amax, larger);
    max = v128.bitselect(x, max, larger);
    const w = wt == 0 ? f32x4.mul(x, x) : v128.load(wt + o);
    v128.store(AUX_W + o, w);
    v128.store(AUX_WX + o, f32x4.mul(x, w));
  }
  const skip = f32x4.lt(amax, f32x4.splat(GROUP_MAX_EPS));
  const offset = i32x4.splat(nmax);
  const low = -nmax;
  const high = nmax - 1;
  let inverse = f32x4.div(f32x4.splat(<f32>-nmax), max);
  let sumLX = zero;
  let sumL2 = zero;
  for (let i = 0; i < n; i++) {
    const o = <usize>i << 4;
    const level = clampX4(nearestIntX4(f32x4.mul(inverse, v128.load(xt + o))), low, high);
    v128.store(lt + o, i32x4.add(level, offset));
    const l = f32x4.convert_i32x4_s(level);
    sumLX = f32x4.add(f32x4.mul(v128.load(AUX_WX + o), l), sumLX);
    sumL2 = f32x4.add(f32x4.mul(f32x4.mul(v128.load(AUX_W + o), l), l), sumL2);
  }
  let scale = v128.and(f32x4.div(sumLX, sumL2), f32x4.ne(sumL2, zero));
  let best = f32x4.mul(scale, sumLX);
  for (let step = -9; step <= 9; step++) {
    if (step == 0) continue;
    inverse = f32x4.div(f32x4.splat(-(<f32>nmax + ONE_TENTH * <f32>step)), max);
    sumLX = zero;
    sumL2 = zero;
    for (let i = 0; i < n; i++) {
      const o = <usize>i << 4;
      const l = f32x4.convert_i32x4_s(clampX4(nearestIntX4(f32x4.mul(inverse, v128.load(xt + o))), low, high));
      sumLX = f32x4.add(f32x4.mul(v128.load(AUX_WX + o), l), sumLX);
      sumL2 = f32x4.add(f32x4.mul(f32x4.mul(v128.load(AUX_W + o), l), l), sumL2);
    }
    const accept = v128.and(f32x4.gt(sumL2, zero), f32x4.gt(f32x4.mul(sumLX, sumLX), f32x4.mul(best, sumL2)));
    if (v128.any_true(accept)) {
      for (let i = 0; i < n; i++) {
        const o = <usize>i << 4;
        const level = i32x4.add(clampX4(nearestIntX4(f32x4.mul(inverse, v128.load(xt + o))), low, high), offset);
        v128.store(lt + o, v128.bitselect(level, v128.load(lt + o), accept));
      }
      scale = v128.bitselect(f32x4.div(sumLX, sumL2), scale, accept);
      best = v128.bitselect(f32x4.mul(scale, sumLX), best, accept);
    }
  }
  if (v128.any_true(skip)) {
    for (let i = 0; i < n; i++) {
      const o = <usize>i << 4;
      v128.store(lt + o, v128.andnot(v128.load(lt + o), skip));
    }
    scale = v128.andnot(scale, skip);
  }
  return scale;
}

// ------------------------------------------------------------------------------------ make_q3_quants

/**
 * `make_q3_quants(n, nmax, x, L, do_rmse = true)` for four lane-major groups: x² weights, then up to
 * five coordinate-descent passes. A pass that changes nothing leaves the state as it was, so a lane that
 * C would have stopped simply repeats no-op passes while other lanes go on. Writes level + nmax (or 0)
 * as i32 lanes to `lt`; returns the scales.
 */
export function q3QuantsX4(n: i32, nmax: i32, xt: usize, lt: usize): v128 {
  const zero = f32x4.splat(0);
  let amax = zero;
  let max = zero;
  for (let i = 0; i < n; i++) {
    const x = v128.load(xt + (<usize>i << 4));
    const magnitude = f32x4.abs(x);
    const larger = f32x4.gt(magnitude, amax);
    amax = v128.bitselect(magnitude, amax, larger);
    max = v128.bitselect(x, max, larger);
  }
  const skip = f32x4.lt(amax, f32x4.splat(GROUP_MAX_EPS));
  const low = -nmax;
  const high = nmax - 1;
  const inverse = f32x4.div(f32x4.splat(<f32>-nmax), max);
  let sumLX = zero;
  let sumL2 = zero;
  for (let i = 0; i < n; i++) {
    const o = <usize>i << 4;
    const x = v128.load(xt + o);
    const level = clampX4(nearestIntX4(f32x4.mul(inverse, x)), low, high);
    v128.store(lt + o, level);
    const l = f32x4.convert_i32x4_s(level);
    const w = f32x4.mul(x, x);
    v128.store(AUX_W + o, w);
    const wx = f32x4.mul(x, w);
    v128.store(AUX_WX + o, wx);
    sumLX = f32x4.add(f32x4.mul(wx, l), sumLX);
    sumL2 = f32x4.add(f32x4.mul(f32x4.mul(w, l), l), sumL2);
  }
  for (let attempt = 0; attempt < 5; attempt++) {
    let changed = i32x4.splat(0);
    for (let i = 0; i < n; i++) {
      const o = <usize>i << 4;
      const x = v128.load(xt + o);
      const w = v128.load(AUX_W + o);
      const wx = v128.load(AUX_WX + o);
      const current = v128.load(lt + o);
      const c = f32x4.convert_i32x4_s(current);
      let lxWithout = f32x4.sub(sumLX, f32x4.mul(wx, c));
      const positive = f32x4.gt(lxWithout, zero);
      if (!v128.any_true(positive)) continue;
      let l2Without = f32x4.sub(sumL2, f32x4.mul(f32x4.mul(w, c), c));
      const candidate = clampX4(nearestIntX4(f32x4.div(f32x4.mul(x, l2Without), lxWithout)), low, high);
      const differs = v128.andnot(positive, i32x4.eq(candidate, current));
      if (!v128.any_true(differs)) continue;
      const cf = f32x4.convert_i32x4_s(candidate);
      lxWithout = f32x4.add(f32x4.mul(wx, cf), lxWithout);
      l2Without = f32x4.add(f32x4.mul(f32x4.mul(w, cf), cf), l2Without);
      const better = f32x4.gt(
        f32x4.mul(f32x4.mul(lxWithout, lxWithout), sumL2),
        f32x4.mul(f32x4.mul(sumLX, sumLX), l2Without),
      );
      const accept = v128.and(differs, v128.and(f32x4.gt(l2Without, zero), better));
      v128.store(lt + o, v128.bitselect(candidate, current, accept));
      sumLX = v128.bitselect(lxWithout, sumLX, accept);
      sumL2 = v128.bitselect(l2Without, sumL2, accept);
      changed = v128.or(changed, accept);
    }
    if (!v128.any_true(changed)) break;
  }
  const offset = i32x4.splat(nmax);
  for (let i = 0; i < n; i++) {
    const o = <usize>i << 4;
    v128.store(lt + o, v128.andnot(i32x4.add(v128.load(lt + o), offset), skip));
  }
  const scale = v128.and(f32x4.div(sumLX, sumL2), f32x4.gt(sumL2, zero));
  return v128.andnot(scale, skip);
}

// ---------------------------------------------------------------------- make_qkx2_quants / qkx3_quants

/**
 * `make_qkx2_quants` (`qkx3` false; `useMad` for the Q2_K reference's absolute error) and
 * `make_qkx3_quants` (`qkx3` true) for four lane-major groups `xt[0..n)` with weights `wt[0..n)`.
 * Writes the levels (0…nmax, i32 lanes) to `lt[0..n)`, the scales to `scaleOut` and −min to `minOut`
 * (one v128 each).
 *
 * `min` — and with it max − min — changes whenever a trial wins; each lane's following trials use its
 * own new value, as C's.
 */
// @ts-ignore: decorator
@inline
export function qkxQuantsX4(
  n: i32,
  nmax: i32,
  xt: usize,
  wt: usize,
  lt: usize,
  rmin: f32,
  rdelta: f32,
  nstep: i32,
  useMad: bool,
  qkx3: bool,
  scaleOut: usize,
  minOut: usize,
): void {
  const zero = f32x4.splat(0);
  const first = v128.load(xt);
  let min = first;
  let max = first;
  let sumW = v128.load(wt);
  let sumX = f32x4.mul(sumW, first);
  for (let i = 1; i < n; i++) {
    const o = <usize>i << 4;
    const x = v128.load(xt + o);
    const w = v128.load(wt + o);
    min = v128.bitselect(x, min, f32x4.lt(x, min));
    max = v128.bitselect(x, max, f32x4.gt(x, max));
    sumW = f32x4.add(sumW, w);
    sumX = f32x4.add(f32x4.mul(w, x), sumX);
  }
  // C: if (min > 0) min = 0. The reference's Math.min(min, 0) also turns a NaN into the default NaN.
  min = v128.bitselect(i32x4.splat(0xffc00000), v128.andnot(min, f32x4.gt(min, zero)), f32x4.ne(min, min));
  const done = qkx3 ? f32x4.le(max, min) : f32x4.eq(max, min);
  const nmaxF: f32 = <f32>nmax;
  let inverse = f32x4.div(f32x4.splat(nmaxF), f32x4.sub(max, min));
  let scale = f32x4.div(f32x4.splat(1), inverse);
  let best = zero;
  for (let i = 0; i < n; i++) {
    const o = <usize>i << 4;
    const x = v128.load(xt + o);
    const l = f32x4.convert_i32x4_s(clampX4(nearestIntX4(f32x4.mul(f32x4.sub(x, min), inverse)), 0, nmax));
    v128.store(lt + o, l);
    let diff = f32x4.sub(f32x4.add(f32x4.mul(scale, l), min), x);
    diff = useMad ? f32x4.abs(diff) : f32x4.mul(diff, diff);
    best = f32x4.add(f32x4.mul(diff, v128.load(wt + o)), best);
  }
  const nmaxV = f32x4.splat(nmaxF);
  for (let step = 0; step <= nstep; step++) {
    inverse = f32x4.div(f32x4.splat(rmin + rdelta * <f32>step + nmaxF), f32x4.sub(max, min));
    let sumL = zero;
    let sumL2 = zero;
    let sumXL = zero;
    for (let i = 0; i < n; i++) {
      const o = <usize>i << 4;
      const x = v128.load(xt + o);
      const scaled = f32x4.mul(f32x4.sub(x, min), inverse);
      // qkx3: v > 0 ? nearest_int(MIN(v, nmax)) : 0.
      const level = qkx3
        ? v128.and(nearestIntX4(f32x4.pmin(nmaxV, scaled)), f32x4.gt(scaled, zero))
        : clampX4(nearestIntX4(scaled), 0, nmax);
      const l = f32x4.convert_i32x4_s(level);
      v128.store(AUX_LEVELS + o, l);
      const wl = f32x4.mul(v128.load(wt + o), l);
      sumL = f32x4.add(sumL, wl);
      sumL2 = f32x4.add(f32x4.mul(wl, l), sumL2);
      sumXL = f32x4.add(f32x4.mul(x, wl), sumXL);
    }
    const determinant = f32x4.sub(f32x4.mul(sumW, sumL2), f32x4.mul(sumL, sumL));
    const solvable = v128.andnot(f32x4.gt(determinant, zero), done);
    if (!v128.any_true(solvable)) continue;
    let trialScale = f32x4.div(f32x4.sub(f32x4.mul(sumW, sumXL), f32x4.mul(sumX, sumL)), determinant);
    let trialMin = f32x4.div(f32x4.sub(f32x4.mul(sumL2, sumX), f32x4.mul(sumL, sumXL)), determinant);
    const positive = f32x4.gt(trialMin, zero);
    trialMin = v128.andnot(trialMin, positive);
    trialScale = v128.bitselect(f32x4.div(sumXL, sumL2), trialScale, positive);
    let error = zero;
    for (let i = 0; i < n; i++) {
      const o = <usize>i << 4;
      let diff = f32x4.sub(f32x4.add(f32x4.mul(trialScale, v128.load(AUX_LEVELS + o)), trialMin), v128.load(xt + o));
      diff = useMad ? f32x4.abs(diff) : f32x4.mul(diff, diff);
      error = f32x4.add(f32x4.mul(diff, v128.load(wt + o)), error);
    }
    const accept = v128.and(solvable, f32x4.lt(error, best));
    if (v128.any_true(accept)) {
      for (let i = 0; i < n; i++) {
        const o = <usize>i << 4;
        v128.store(lt + o, v128.bitselect(v128.load(AUX_LEVELS + o), v128.load(lt + o), accept));
      }
      best = v128.bitselect(error, best, accept);
      scale = v128.bitselect(trialScale, scale, accept);
      min = v128.bitselect(trialMin, min, accept);
    }
  }
  for (let i = 0; i < n; i++) {
    const o = <usize>i << 4;
    v128.store(lt + o, v128.andnot(i32x4.trunc_sat_f32x4_s(v128.load(lt + o)), done));
  }
  v128.store(scaleOut, v128.andnot(scale, done));
  v128.store(minOut, f32x4.neg(min));
}

// ------------------------------------------------------------------------------------ make_qp_quants

/** f32 a + b through a SIMD lane: with two NaN operands, a's survives (see the note at the top). */
// @ts-ignore: decorator
@inline
function addFirst(a: f32, b: f32): f32 {
  return f32x4.extract_lane(f32x4.add(f32x4.splat(a), f32x4.splat(b)), 0);
}

/** f32 a · b through a SIMD lane: with two NaN operands, a's survives. */
// @ts-ignore: decorator
@inline
function mulFirst(a: f32, b: f32): f32 {
  return f32x4.extract_lane(f32x4.mul(f32x4.splat(a), f32x4.splat(b)), 0);
}

/**
 * `make_qp_quants(n, nmax, x, L, quant_weights)`: non-negative x[0..n) (f32 at `x`) to levels 0…nmax
 * (uint8_t at `L`: stores wrap, and later reads see the wrapped value, as in C), weights at `w`.
 * Operations where two NaNs can meet and the survivor can reach the output use `addFirst`/`mulFirst`
 * in the reference's order; the trial errors and the coordinate descent only feed comparisons, which a
 * NaN always fails whatever its payload.
 */
export function qpQuants(n: i32, nmax: i32, x: usize, L: usize, w: usize): f32 {
  let max: f32 = 0;
  for (let i = 0; i < n; i++) {
    const value = load<f32>(x + (<usize>i << 2));
    max = max > value ? max : value;
  }
  if (max < GROUP_MAX_EPS) {
    for (let i = 0; i < n; i++) store<u8>(L + i, 0);
    return 0;
  }
  const nmaxF: f32 = <f32>nmax;
  let inverse: f32 = nmaxF / max;
  for (let i = 0; i < n; i++) store<u8>(L + i, <u8>nearestInt(inverse * load<f32>(x + (<usize>i << 2))));
  const scale: f32 = <f32>1 / inverse;
  let bestError: f32 = 0;
  for (let i = 0; i < n; i++) {
    const diff: f32 = load<f32>(x + (<usize>i << 2)) - scale * <f32>load<u8>(L + i);
    bestError = bestError + load<f32>(w + (<usize>i << 2)) * diff * diff;
  }
  for (let step = -4; step <= 4; step++) {
    if (step == 0) continue;
    const trialInverse: f32 = (ONE_TENTH * <f32>step + nmaxF) / max;
    const trialScale: f32 = <f32>1 / trialInverse;
    let error: f32 = 0;
    for (let i = 0; i < n; i++) {
      const value = load<f32>(x + (<usize>i << 2));
      const level = min<i32>(nearestInt(trialInverse * value), nmax);
      const diff: f32 = value - trialScale * <f32>level;
      error = error + load<f32>(w + (<usize>i << 2)) * diff * diff;
    }
    if (error < bestError) {
      bestError = error;
      inverse = trialInverse;
    }
  }
  let sumLX: f32 = 0;
  let sumL2: f32 = 0;
  for (let i = 0; i < n; i++) {
    const value = load<f32>(x + (<usize>i << 2));
    const level = min<i32>(nearestInt(mulFirst(inverse, value)), nmax);
    store<u8>(L + i, <u8>level);
    const weight = load<f32>(w + (<usize>i << 2));
    const l = <f32>level;
    sumLX = addFirst(mulFirst(value, weight) * l, sumLX);
    sumL2 = addFirst(weight * l * l, sumL2);
  }
  for (let attempt = 0; attempt < 5; attempt++) {
    let changed = 0;
    for (let i = 0; i < n; i++) {
      const value = load<f32>(x + (<usize>i << 2));
      const weight = load<f32>(w + (<usize>i << 2));
      const current = <i32>load<u8>(L + i);
      const c = <f32>current;
      let lxWithout: f32 = sumLX - weight * value * c;
      let l2Without: f32 = sumL2 - weight * c * c;
      if (lxWithout > 0 && l2Without > 0) {
        const candidate = min<i32>(nearestInt((value * l2Without) / lxWithout), nmax);
        if (candidate != current) {
          const cf = <f32>candidate;
          lxWithout = lxWithout + weight * value * cf;
          l2Without = l2Without + weight * cf * cf;
          if (lxWithout * lxWithout * sumL2 > sumLX * sumLX * l2Without) {
            store<u8>(L + i, <u8>candidate);
            sumLX = lxWithout;
            sumL2 = l2Without;
            changed++;
          }
        }
      }
    }
    if (changed == 0) break;
  }
  return sumL2 > 0 ? sumLX / sumL2 : 0;
}
