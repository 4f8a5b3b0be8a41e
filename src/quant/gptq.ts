/**
 * GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained
 * Transformers", Algorithm 1): rounding with error feedback. Columns are quantized in order; the error a
 * column's rounding leaves is fed into the columns not yet quantized, so they absorb it. With H = E[x xᵀ]
 * over calibration activations this minimises the output error ‖W x − Q x‖² far better than rounding each
 * weight to its nearest level.
 *
 * What stays the format's own business (GptqGroupQuantizer): each group of columns of each row gets its
 * parameters (scale, zero point, a K-quant super-block's sub-scales) when GPTQ reaches the group's first
 * column, from the values as they stand then (already corrected for earlier groups' errors); every value
 * is then rounded to a level of those parameters. So the output is an ordinary file of the format: the same
 * blocks, bytes any loader reads, only better levels.
 *
 * The computation, arranged for a CPU. GPTQ's usual form subtracts each column's scaled error from every
 * later column through the upper Cholesky factor U of H⁻¹ (Uᵀ U = H⁻¹), which costs a factorization, an
 * inverse and a second factorization (K³ multiply-adds in all). The same updates in "pull" form need one
 * factorization: with H = Mᵀ M, M lower triangular, the value column c is rounded from is
 *
 *     t_c = w_c + Σ_{i<c} F[c][i]·(w_i − q_i),   F[c][i] = M[c][i] / M[c][c]
 *
 * (w the original weights, q the dequantized levels: e = M(w − q) is GPTQ's scaled error vector, since
 * M = U⁻ᵀ). M is the Cholesky factor of H with rows and columns reversed — P H P = L Lᵀ gives M = P Lᵀ P —
 * so `gptqFactor` runs one blocked Cholesky (K³/6 multiply-adds) and stores F. `gptqQuantizeRows` then works
 * block by block of columns: the pull of all earlier blocks on a block is one matrix product
 * (rows × block × columns before it), the pull inside a block one dot product per column. Both run in the
 * kernels of gptq-kernels.ts (float32 WebAssembly SIMD), whose summation order depends on the depth alone:
 * a row's output is the same whatever rows share a call, so threads may split rows freely.
 *
 * Float32 throughout, as GPTQ's reference implementation computes on GPUs; the dampening λ (1 % of the mean
 * diagonal) keeps the factorization far from float32's limits.
 *
 * Not done (on purpose): act-order (desc_act) — it reorders columns, which group formats can only follow
 * with static groups.
 */
import { randomUUID } from 'node:crypto';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { type GptqKernels, gptqKernels } from './gptq-kernels.js';

/** One weight format's rounding, as GPTQ drives it. */
export interface GptqGroupQuantizer {
  /** Columns per group: parameters are fitted at columns 0, groupSize, 2·groupSize, … of each row. */
  readonly groupSize: number;
  /**
   * Fits the parameters of row `row`'s group starting at `column` to `values` (the group's current values;
   * shorter than groupSize for a last partial group), weighing each by `importance` (mean x² of its input
   * column, the Hessian's diagonal). Keeps them for `quantize`.
   */
  fitGroup(row: number, column: number, values: Float64Array, importance: Float64Array): void;
  /**
   * Optional, for speed: fits the groups starting at `column` of `count` rows at once, row firstRow + r's
   * values at values[r·stride …] (`width` of them; the view is only valid during the call). Must do what
   * `fitGroup` does row by row; gptqQuantizeRows calls it instead when present.
   */
  fitGroups?(firstRow: number, count: number, column: number, values: Float32Array, stride: number, width: number, importance: Float64Array): void;
  /** Rounds `value` at (row, column) to a level of its group's fitted parameters; records it; returns the dequantized value. */
  quantize(row: number, column: number, value: number): number;
}

/** A matrix's Hessian prepared for GPTQ. Structured-cloneable: threads share `feedback` (shared memory). */
export interface GptqFactor {
  readonly columns: number;
  /**
   * F, K × K float32, row-major, strictly lower triangular: row c holds F[c][i] for i < c, the weight of
   * column i's rounding error in column c's value (header). On a SharedArrayBuffer, so a factor posted to a
   * worker is shared, not copied.
   */
  readonly feedback: Float32Array;
  /** diag(H) before dampening: each input column's mean square (what an imatrix holds). */
  readonly importance: Float64Array;
  /** Columns whose input was always 0 (diag 0): their weights are set to 0, as GPTQ does. */
  readonly dead: Uint8Array;
  /** The λ that made H + λ I positive definite. */
  readonly dampening: number;
  /** Names this factor across threads: a thread copies `feedback` into its kernel memory once per id. */
  readonly id: string;
}

export interface GptqFactorOptions {
  /** λ as a fraction of diag(H)'s mean (GPTQ's percdamp; default 0.01). Raised ×10 (up to 1) while H + λI is not positive definite. */
  readonly dampening?: number;
  /** Names the tensor in errors. */
  readonly tensor?: string;
}

export const DEFAULT_GPTQ_DAMPENING = 0.01;

/** Columns per panel of the blocked Cholesky factorization. */
const PANEL = 32;
/** Rows quantized together: each pass reads the feedback matrix once for this many rows. */
const ROWS_PER_PASS = 64;
/** Columns per block of the row pass (rounded to whole groups): the pull inside a block is per column. */
const BLOCK_COLUMNS = 128;

/** Which factor this thread's kernel memory holds at `kernels.base` (gptqQuantizeRows), if any. */
let loadedFactor: { readonly id: string; readonly kernels: GptqKernels } | undefined;

/**
 * Prepares H (K × K, symmetric, row-major; only the lower triangle is read), usually Σ x xᵀ / count over
 * the calibration tokens, for gptqQuantizeRows. H is not modified.
 */
export function gptqFactor(hessian: Float64Array, columns: number, options: GptqFactorOptions = {}): GptqFactor {
  const K = columns;
  if (!Number.isSafeInteger(K) || K < 1 || hessian.length !== K * K) {
    throw new PolyquantError(ERROR_CODES.CONFIG, `a Hessian of ${hessian.length} values is not ${K} × ${K}`, { tensor: options.tensor });
  }
  const importance = new Float64Array(K);
  const dead = new Uint8Array(K);
  let diagonalSum = 0;
  for (let i = 0; i < K; i += 1) {
    const value = hessian[i * K + i] as number;
    if (!Number.isFinite(value) || value < 0) {
      throw new PolyquantError(ERROR_CODES.CHECK_FAILED, `the calibration Hessian's diagonal holds ${value} at column ${i}`, {
        tensor: options.tensor,
        hint: 'the model overflows float32 on the calibration text',
      });
    }
    importance[i] = value;
    if (value === 0) dead[i] = 1;
    diagonalSum += value;
  }
  const mean = diagonalSum / K;
  let fraction = options.dampening ?? DEFAULT_GPTQ_DAMPENING;
  if (!(fraction >= 0 && fraction <= 1)) throw new PolyquantError(ERROR_CODES.USAGE, `GPTQ dampening ${fraction} is outside [0, 1]`);
  const kernels = gptqKernels();
  const a = kernels.base;
  kernels.reserve(a + K * K);
  // The factorization overwrites whatever factor gptqQuantizeRows left in this thread's memory.
  loadedFactor = undefined;
  for (;;) {
    const lambda = fraction * (mean > 0 ? mean : 1);
    const m = kernels.floats();
    // A = P H' P (H' = H + λI, dead columns decoupled), lower triangle: A[p][q] = H'[K−1−p][K−1−q], read
    // from H's lower triangle as H[K−1−q][K−1−p] (q ≤ p).
    for (let p = 0; p < K; p += 1) {
      const j = K - 1 - p;
      const row = a + p * K;
      for (let q = 0; q <= p; q += 1) {
        const i = K - 1 - q;
        m[row + q] = dead[i] || dead[j] ? (i === j ? 1 : 0) : (hessian[i * K + j] as number) + (i === j ? lambda : 0);
      }
    }
    if (factorInPlace(kernels, a, K)) return { columns: K, feedback: feedbackOf(kernels, a, K), importance, dead, dampening: lambda, id: randomUUID() };
    if (fraction >= 1) {
      throw new PolyquantError(ERROR_CODES.CHECK_FAILED, 'the calibration Hessian is not positive definite even with dampening 1', { tensor: options.tensor });
    }
    fraction = fraction === 0 ? 1e-4 : Math.min(1, fraction * 10);
  }
}

/** A ← L with L Lᵀ = A in the lower triangle (blocked, left-looking); false when A is not positive definite. */
function factorInPlace(kernels: GptqKernels, a: number, n: number): boolean {
  for (let j0 = 0; j0 < n; j0 += PANEL) {
    const width = Math.min(PANEL, n - j0);
    // The panel's columns less the pull of every earlier column: A[j0:, j0:j0+width] −= L[j0:, :j0] · L[j0:j0+width, :j0]ᵀ.
    kernels.gemm(a + j0 * n, n, a + j0 * n, n, a + j0 * n + j0, n, n - j0, width, j0, true);
    if (kernels.choleskyPanel(a, n, j0, width, n) >= 0) return false;
  }
  return true;
}

/** F[c][i] = L[K−1−i][K−1−c] / L[K−1−c][K−1−c] for i < c (header), from the reversed factor L at `a`. */
function feedbackOf(kernels: GptqKernels, a: number, K: number): Float32Array {
  const m = kernels.floats();
  const feedback = new Float32Array(new SharedArrayBuffer(K * K * 4));
  const diagonal = new Float32Array(K);
  for (let q = 0; q < K; q += 1) diagonal[q] = m[a + q * K + q] as number;
  // L row p, column q < p goes to F row K−1−q, column K−1−p: tiles keep both sides in cache.
  const TILE = 64;
  for (let p0 = 0; p0 < K; p0 += TILE) {
    for (let q0 = 0; q0 <= p0; q0 += TILE) {
      for (let p = p0; p < Math.min(K, p0 + TILE); p += 1) {
        const row = a + p * K;
        const column = K - 1 - p;
        for (let q = q0; q < Math.min(p, q0 + TILE); q += 1) feedback[(K - 1 - q) * K + column] = (m[row + q] as number) / (diagonal[q] as number);
      }
    }
  }
  return feedback;
}

/** Puts `factor.feedback` at `kernels.base` unless it is there already. */
function loadFactor(kernels: GptqKernels, factor: GptqFactor): void {
  const K = factor.columns;
  if (factor.feedback.length !== K * K) throw new PolyquantError(ERROR_CODES.USAGE, `a GPTQ factor of ${factor.feedback.length} values is not ${K} × ${K}`);
  if (loadedFactor?.id === factor.id && loadedFactor.kernels === kernels) return;
  kernels.reserve(kernels.base + K * K);
  kernels.floats().set(factor.feedback, kernels.base);
  loadedFactor = { id: factor.id, kernels };
}

/**
 * Quantizes `rowCount` rows of K values (row-major, rows[r·K …]), absolute rows firstRow …, with error
 * feedback through `factor`; every level goes to `quantizer`, which keeps them. `rows` is not modified.
 * A row's levels do not depend on which rows share the call.
 */
export function gptqQuantizeRows(
  rows: Float32Array,
  rowCount: number,
  firstRow: number,
  factor: GptqFactor,
  quantizer: GptqGroupQuantizer,
): void {
  const K = factor.columns;
  const { importance, dead } = factor;
  const groupSize = quantizer.groupSize;
  if (!Number.isSafeInteger(groupSize) || groupSize < 1) throw new PolyquantError(ERROR_CODES.USAGE, `GPTQ group size ${groupSize} is not a positive integer`);
  if (!Number.isSafeInteger(rowCount) || rowCount < 0 || rows.length < rowCount * K) {
    throw new PolyquantError(ERROR_CODES.USAGE, `GPTQ: ${rows.length} values are fewer than ${rowCount} rows of ${K}`);
  }
  if (rowCount === 0) return;
  // Blocks of whole groups, so that every group starts with its values complete up to its first column.
  const block = groupSize * Math.max(1, Math.round(BLOCK_COLUMNS / groupSize));
  const kernels = gptqKernels();
  loadFactor(kernels, factor);
  const F = kernels.base;
  const pass = Math.min(ROWS_PER_PASS, rowCount);
  // Per pass: W (the rows, dead columns zeroed), D = W − Q as it fills, T = the current block's values,
  // S = the current group's values as GPTQ fits them.
  const W = F + K * K;
  const D = W + pass * K;
  const T = D + pass * K;
  const S = T + pass * block;
  kernels.reserve(S + pass * groupSize);
  const values = new Float64Array(Math.min(groupSize, K));
  for (let r0 = 0; r0 < rowCount; r0 += pass) {
    const count = Math.min(pass, rowCount - r0);
    const m = kernels.floats();
    m.set(rows.subarray(r0 * K, (r0 + count) * K), W);
    for (let r = 0; r < count; r += 1) for (let c = 0; c < K; c += 1) if (dead[c]) m[W + r * K + c] = 0;
    m.fill(0, D, D + count * K);
    for (let b0 = 0; b0 < K; b0 += block) {
      const width = Math.min(block, K - b0);
      // T = this block of W plus the pull of every earlier column: T += D[:, :b0] · F[b0:b0+width, :b0]ᵀ.
      for (let r = 0; r < count; r += 1) m.copyWithin(T + r * block, W + r * K + b0, W + r * K + b0 + width);
      kernels.gemm(D, K, F + b0 * K, K, T, block, count, width, b0, false);
      for (let g = b0; g < b0 + width; g += groupSize) {
        const end = Math.min(K, g + groupSize);
        // The group's values complete up to its first column: add the pull of this block's earlier columns.
        if (g > b0) kernels.gemm(D + b0, K, F + g * K + b0, K, T + (g - b0), block, count, end - g, g - b0, false);
        // GPTQ fits the group to the values it would have if its columns took no rounding error: the best
        // continuation given the errors so far (its update of every later column). Column c's is T's value
        // plus the pull of the group's columns before it at their own continuation values, so D holds
        // W − S there until the real errors replace it below.
        for (let r = 0; r < count; r += 1) m.copyWithin(S + r * groupSize, T + r * block + (g - b0), T + r * block + (end - b0));
        for (let c = g; c < end; c += 1) {
          if (c > g) kernels.gemm(D + g, K, F + c * K + g, K, S + (c - g), groupSize, count, 1, c - g, false);
          for (let r = 0; r < count; r += 1) m[D + r * K + c] = (m[W + r * K + c] as number) - (m[S + r * groupSize + (c - g)] as number);
        }
        const weights = importance.subarray(g, end);
        if (quantizer.fitGroups !== undefined) quantizer.fitGroups(firstRow + r0, count, g, m.subarray(S, S + count * groupSize), groupSize, end - g, weights);
        else {
          for (let r = 0; r < count; r += 1) {
            const from = S + r * groupSize;
            for (let c = 0; c < end - g; c += 1) values[c] = m[from + c] as number;
            quantizer.fitGroup(firstRow + r0 + r, g, values.subarray(0, end - g), weights);
          }
        }
        for (let c = g; c < end; c += 1) {
          // Column c's value: the pull of the group's columns before it.
          if (c > g) kernels.gemm(D + g, K, F + c * K + g, K, T + (c - b0), block, count, 1, c - g, false);
          for (let r = 0; r < count; r += 1) {
            const quantized = quantizer.quantize(firstRow + r0 + r, c, m[T + r * block + (c - b0)] as number);
            m[D + r * K + c] = (m[W + r * K + c] as number) - quantized;
          }
        }
      }
    }
  }
}

/**
 * (w − q)ᵀ H (w − q) summed over rows: the output error a quantized matrix leaves on activations with
 * second moment H (what GPTQ minimises; RTN against GPTQ in tests and diagnostics).
 */
export function outputError(original: Float32Array, quantized: Float32Array, rowCount: number, hessian: Float64Array, K: number): number {
  let total = 0;
  const delta = new Float64Array(K);
  for (let r = 0; r < rowCount; r += 1) {
    for (let c = 0; c < K; c += 1) delta[c] = (original[r * K + c] as number) - (quantized[r * K + c] as number);
    for (let i = 0; i < K; i += 1) {
      const di = delta[i] as number;
      if (di === 0) continue;
      let sum = 0;
      for (let j = 0; j < K; j += 1) sum += (hessian[i * K + j] as number) * (delta[j] as number);
      total += di * sum;
    }
  }
  return total;
}
