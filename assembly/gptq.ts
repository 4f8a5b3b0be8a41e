/**
 * The matrix work of GPTQ (src/quant/gptq.ts): the Cholesky factorization of the calibration Hessian and
 * the error feedback of quantized columns into later ones are both Y ± X·Wᵀ over row-major float32 views
 * (rows contiguous), plus a small in-panel Cholesky step. WebAssembly SIMD, f32x4: a 2 × 4 tile of outputs
 * keeps 8 accumulators and 3 operands in registers (as src/verify/engines/reference-wasm.ts measured).
 *
 * Summation order, which makes GPTQ's output the same whatever rows a thread is given: depth is cut into
 * slices of DEPTH_SLICE; within a slice each output sums in four lanes (lane l takes k ≡ l mod 4, in
 * increasing k), the slice's depth mod 4 tail goes into lane 0 in order, the lanes reduce as
 * (l0 + l1) + (l2 + l3), and the slice's sum is added to (or subtracted from) Y. That order depends on the
 * depth alone, never on the tile that computes an output or on which rows share a call.
 */
export { heapBase } from './common';

/** Depth per slice: two 4-row panels of W and two rows of X (6 × 2 KiB) stay in L1 while a tile runs. */
const DEPTH_SLICE: i32 = 512;
/** Rows of X per block: 64 rows × 2 KiB = 128 KiB of X stay in L2 while every column panel passes. */
const ROW_BLOCK: i32 = 64;

/**
 * Σ_k x[k]·w[k] over `depth` (< 2^31) in the kernel's order: four lanes, then the tail into lane 0.
 * Written as (l0 + tail…) — lane 0 plus each tail product in turn — which is the lane-0 accumulation of
 * the tail (a sequential sum starting from l0).
 */
// @ts-ignore: decorator
@inline
function dot(x: usize, w: usize, depth: i32): f32 {
  const vectorBytes = <usize>(depth & ~3) << 2;
  let lanes = f32x4.splat(0);
  for (let k: usize = 0; k < vectorBytes; k += 16) lanes = f32x4.add(lanes, f32x4.mul(v128.load(x + k), v128.load(w + k)));
  let lane0 = f32x4.extract_lane(lanes, 0);
  for (let k = vectorBytes; k < (<usize>depth << 2); k += 4) lane0 = lane0 + load<f32>(x + k) * load<f32>(w + k);
  return (lane0 + f32x4.extract_lane(lanes, 1)) + (f32x4.extract_lane(lanes, 2) + f32x4.extract_lane(lanes, 3));
}

// @ts-ignore: decorator
@inline
function tailSum(lanes: v128, x: usize, w: usize, from: usize, to: usize): f32 {
  let lane0 = f32x4.extract_lane(lanes, 0);
  for (let k = from; k < to; k += 4) lane0 = lane0 + load<f32>(x + k) * load<f32>(w + k);
  return (lane0 + f32x4.extract_lane(lanes, 1)) + (f32x4.extract_lane(lanes, 2) + f32x4.extract_lane(lanes, 3));
}

// @ts-ignore: decorator
@inline
function accumulate(y: usize, sum: f32, subtract: bool): void {
  store<f32>(y, subtract ? load<f32>(y) - sum : load<f32>(y) + sum);
}

/** Two rows of X against four rows of W over one slice (`depth` elements), added to Y. */
function tile2x4(x: usize, ldx: usize, w: usize, ldw: usize, y: usize, ldy: usize, depth: i32, subtract: bool): void {
  const x1 = x + ldx;
  const w1 = w + ldw;
  const w2 = w1 + ldw;
  const w3 = w2 + ldw;
  let a00 = f32x4.splat(0);
  let a01 = f32x4.splat(0);
  let a02 = f32x4.splat(0);
  let a03 = f32x4.splat(0);
  let a10 = f32x4.splat(0);
  let a11 = f32x4.splat(0);
  let a12 = f32x4.splat(0);
  let a13 = f32x4.splat(0);
  const vectorBytes = <usize>(depth & ~3) << 2;
  for (let k: usize = 0; k < vectorBytes; k += 16) {
    const p = v128.load(x + k);
    const q = v128.load(x1 + k);
    let v = v128.load(w + k);
    a00 = f32x4.add(a00, f32x4.mul(p, v));
    a10 = f32x4.add(a10, f32x4.mul(q, v));
    v = v128.load(w1 + k);
    a01 = f32x4.add(a01, f32x4.mul(p, v));
    a11 = f32x4.add(a11, f32x4.mul(q, v));
    v = v128.load(w2 + k);
    a02 = f32x4.add(a02, f32x4.mul(p, v));
    a12 = f32x4.add(a12, f32x4.mul(q, v));
    v = v128.load(w3 + k);
    a03 = f32x4.add(a03, f32x4.mul(p, v));
    a13 = f32x4.add(a13, f32x4.mul(q, v));
  }
  const end = <usize>depth << 2;
  const y1 = y + ldy;
  accumulate(y, tailSum(a00, x, w, vectorBytes, end), subtract);
  accumulate(y + 4, tailSum(a01, x, w1, vectorBytes, end), subtract);
  accumulate(y + 8, tailSum(a02, x, w2, vectorBytes, end), subtract);
  accumulate(y + 12, tailSum(a03, x, w3, vectorBytes, end), subtract);
  accumulate(y1, tailSum(a10, x1, w, vectorBytes, end), subtract);
  accumulate(y1 + 4, tailSum(a11, x1, w1, vectorBytes, end), subtract);
  accumulate(y1 + 8, tailSum(a12, x1, w2, vectorBytes, end), subtract);
  accumulate(y1 + 12, tailSum(a13, x1, w3, vectorBytes, end), subtract);
}

/** One row of X against four rows of W over one slice. */
function tile1x4(x: usize, w: usize, ldw: usize, y: usize, depth: i32, subtract: bool): void {
  const w1 = w + ldw;
  const w2 = w1 + ldw;
  const w3 = w2 + ldw;
  let a0 = f32x4.splat(0);
  let a1 = f32x4.splat(0);
  let a2 = f32x4.splat(0);
  let a3 = f32x4.splat(0);
  const vectorBytes = <usize>(depth & ~3) << 2;
  for (let k: usize = 0; k < vectorBytes; k += 16) {
    const p = v128.load(x + k);
    a0 = f32x4.add(a0, f32x4.mul(p, v128.load(w + k)));
    a1 = f32x4.add(a1, f32x4.mul(p, v128.load(w1 + k)));
    a2 = f32x4.add(a2, f32x4.mul(p, v128.load(w2 + k)));
    a3 = f32x4.add(a3, f32x4.mul(p, v128.load(w3 + k)));
  }
  const end = <usize>depth << 2;
  accumulate(y, tailSum(a0, x, w, vectorBytes, end), subtract);
  accumulate(y + 4, tailSum(a1, x, w1, vectorBytes, end), subtract);
  accumulate(y + 8, tailSum(a2, x, w2, vectorBytes, end), subtract);
  accumulate(y + 12, tailSum(a3, x, w3, vectorBytes, end), subtract);
}

/**
 * Y[r·ldy + c] ±= Σ_{k<depth} X[r·ldx + k]·W[c·ldw + k] for r < rows, c < cols (addresses in bytes,
 * strides and sizes in float32 elements): minus when `subtract` is non-zero.
 */
export function gemm_nt(x: usize, ldx: i32, w: usize, ldw: i32, y: usize, ldy: i32, rows: i32, cols: i32, depth: i32, subtract: i32): void {
  if (rows <= 0 || cols <= 0 || depth <= 0) return;
  const minus = subtract != 0;
  const ldxBytes = <usize>ldx << 2;
  const ldwBytes = <usize>ldw << 2;
  const ldyBytes = <usize>ldy << 2;
  const quadCols = cols & ~3;
  for (let k0: i32 = 0; k0 < depth; k0 += DEPTH_SLICE) {
    const slice = min(DEPTH_SLICE, depth - k0);
    const offset = <usize>k0 << 2;
    for (let r0: i32 = 0; r0 < rows; r0 += ROW_BLOCK) {
      const r1 = min(rows, r0 + ROW_BLOCK);
      const pairEnd = r0 + ((r1 - r0) & ~1);
      for (let c: i32 = 0; c < quadCols; c += 4) {
        const wc = w + <usize>c * ldwBytes + offset;
        for (let r = r0; r < pairEnd; r += 2) {
          tile2x4(x + <usize>r * ldxBytes + offset, ldxBytes, wc, ldwBytes, y + <usize>r * ldyBytes + (<usize>c << 2), ldyBytes, slice, minus);
        }
        if (pairEnd < r1) tile1x4(x + <usize>pairEnd * ldxBytes + offset, wc, ldwBytes, y + <usize>pairEnd * ldyBytes + (<usize>c << 2), slice, minus);
      }
      for (let c = quadCols; c < cols; c++) {
        const wc = w + <usize>c * ldwBytes + offset;
        for (let r = r0; r < r1; r++) accumulate(y + <usize>r * ldyBytes + (<usize>c << 2), dot(x + <usize>r * ldxBytes + offset, wc, slice), minus);
      }
    }
  }
}

/**
 * One panel of a blocked lower Cholesky factorization, in place: columns j0 … j0+width−1 of the row-major
 * n × n matrix at `a` (row stride lda), rows j0 … n−1, once gemm_nt has subtracted the columns before j0.
 * L[j][j] = √(A[j][j] − Σ L[j][k]²), L[i][j] = (A[i][j] − Σ L[i][k]·L[j][k]) / L[j][j], k from j0 to j−1,
 * each sum in gemm_nt's order (one slice). Returns the first column whose pivot is not positive, or −1.
 */
export function cholesky_panel(a: usize, lda: i32, j0: i32, width: i32, n: i32): i32 {
  const ldaBytes = <usize>lda << 2;
  const from = <usize>j0 << 2;
  for (let j = j0; j < j0 + width; j++) {
    const rowJ = a + <usize>j * ldaBytes;
    const at = <usize>j << 2;
    const diagonal = load<f32>(rowJ + at) - dot(rowJ + from, rowJ + from, j - j0);
    if (!(diagonal > 0)) return j;
    const pivot = sqrt<f32>(diagonal);
    store<f32>(rowJ + at, pivot);
    for (let i = j + 1; i < n; i++) {
      const rowI = a + <usize>i * ldaBytes;
      store<f32>(rowI + at, (load<f32>(rowI + at) - dot(rowI + from, rowJ + from, j - j0)) / pivot);
    }
  }
  return -1;
}
