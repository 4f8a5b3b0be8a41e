/**
 * Calibration Hessians and quantizers for the GPTQ tests: activations with correlated columns and a few
 * loud ones (what makes error feedback pay), a plain group quantizer, and GPTQ's textbook form in float64
 * (the upper Cholesky factor of H⁻¹, pushed updates) to hold the fast form to.
 */
import type { GptqGroupQuantizer } from '../../src/quant/gptq.js';
import { createRandom } from './quant-random.js';

/** H = Σ x xᵀ / tokens over `tokens` activations of K columns mixed from `factors` latent ones; every 7th column 5× louder. */
export function syntheticHessian(K: number, tokens: number, seed: number, factors = 8): Float64Array {
  const random = createRandom(seed);
  const mix = Array.from({ length: K }, () => Float64Array.from({ length: factors }, () => random.normal()));
  const H = new Float64Array(K * K);
  const x = new Float64Array(K);
  const z = new Float64Array(factors);
  for (let t = 0; t < tokens; t += 1) {
    for (let f = 0; f < factors; f += 1) z[f] = random.normal();
    for (let i = 0; i < K; i += 1) {
      let sum = 0.3 * random.normal();
      const row = mix[i] as Float64Array;
      for (let f = 0; f < factors; f += 1) sum += (row[f] as number) * (z[f] as number);
      x[i] = sum * (i % 7 === 0 ? 5 : 1);
    }
    for (let i = 0; i < K; i += 1) for (let j = 0; j <= i; j += 1) H[i * K + j] = (H[i * K + j] as number) + ((x[i] as number) * (x[j] as number)) / tokens;
  }
  for (let i = 0; i < K; i += 1) for (let j = 0; j < i; j += 1) H[j * K + i] = H[i * K + j] as number;
  return H;
}

export function randomWeights(count: number, seed: number, scale = 0.05): Float32Array {
  const random = createRandom(seed);
  return Float32Array.from({ length: count }, () => scale * random.normal());
}

/** Symmetric 4-bit groups: scale = max|w| / 7, levels −8…7; keeps the dequantized values in `out`. */
export class SymmetricGroups implements GptqGroupQuantizer {
  readonly out: Float32Array;
  private readonly scale: Float64Array;
  constructor(
    readonly groupSize: number,
    private readonly rows: number,
    private readonly K: number,
  ) {
    this.out = new Float32Array(rows * K);
    this.scale = new Float64Array(rows * Math.ceil(K / groupSize));
  }
  fitGroup(row: number, column: number, values: Float64Array): void {
    let max = 0;
    for (const value of values) max = Math.max(max, Math.abs(value));
    this.scale[row * Math.ceil(this.K / this.groupSize) + column / this.groupSize] = max / 7;
  }
  quantize(row: number, column: number, value: number): number {
    const scale = this.scale[row * Math.ceil(this.K / this.groupSize) + Math.floor(column / this.groupSize)] as number;
    const q = scale === 0 ? 0 : Math.fround(Math.max(-8, Math.min(7, Math.round(value / scale))) * scale);
    this.out[row * this.K + column] = q;
    return q;
  }
  get rowCount(): number {
    return this.rows;
  }
}

/** A ← L (L Lᵀ = A), float64, in place; false when not positive definite. */
function cholesky(a: Float64Array, n: number): boolean {
  for (let j = 0; j < n; j += 1) {
    let d = a[j * n + j] as number;
    for (let k = 0; k < j; k += 1) d -= (a[j * n + k] as number) ** 2;
    if (!(d > 0)) return false;
    const pivot = Math.sqrt(d);
    a[j * n + j] = pivot;
    for (let i = j + 1; i < n; i += 1) {
      let sum = a[i * n + j] as number;
      for (let k = 0; k < j; k += 1) sum -= (a[i * n + k] as number) * (a[j * n + k] as number);
      a[i * n + j] = sum / pivot;
    }
    for (let k = j + 1; k < n; k += 1) a[j * n + k] = 0;
  }
  return true;
}

/** A⁻¹ for symmetric positive definite A (Gauss–Jordan, float64). */
export function inverse(a: Float64Array, n: number): Float64Array {
  const m = Float64Array.from(a);
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i += 1) out[i * n + i] = 1;
  for (let c = 0; c < n; c += 1) {
    const pivot = m[c * n + c] as number;
    for (let k = 0; k < n; k += 1) {
      m[c * n + k] = (m[c * n + k] as number) / pivot;
      out[c * n + k] = (out[c * n + k] as number) / pivot;
    }
    for (let r = 0; r < n; r += 1) {
      if (r === c) continue;
      const factor = m[r * n + c] as number;
      if (factor === 0) continue;
      for (let k = 0; k < n; k += 1) {
        m[r * n + k] = (m[r * n + k] as number) - factor * (m[c * n + k] as number);
        out[r * n + k] = (out[r * n + k] as number) - factor * (out[c * n + k] as number);
      }
    }
  }
  return out;
}

/**
 * GPTQ as the paper writes it, in float64: U with Uᵀ U = (H + λI)⁻¹, and after each column the scaled
 * error pushed into every later column (w[c] −= err · U[j][c]).
 */
export function textbookGptq(rows: Float32Array, rowCount: number, K: number, hessian: Float64Array, lambda: number, quantizer: GptqGroupQuantizer): void {
  const damped = Float64Array.from(hessian);
  for (let i = 0; i < K; i += 1) damped[i * K + i] = (damped[i * K + i] as number) + lambda;
  const hinv = inverse(damped, K);
  if (!cholesky(hinv, K)) throw new Error('H⁻¹ is not positive definite');
  // hinv now holds L with L Lᵀ = H⁻¹; U = Lᵀ.
  const U = (j: number, c: number): number => hinv[c * K + j] as number;
  const work = Float64Array.from(rows.subarray(0, rowCount * K));
  const diagonal = Float64Array.from({ length: K }, (_, i) => hessian[i * K + i] as number);
  for (let j = 0; j < K; j += 1) {
    if (j % quantizer.groupSize === 0) {
      const end = Math.min(K, j + quantizer.groupSize);
      for (let r = 0; r < rowCount; r += 1) quantizer.fitGroup(r, j, work.subarray(r * K + j, r * K + end), diagonal.subarray(j, end));
    }
    for (let r = 0; r < rowCount; r += 1) {
      const value = Math.fround(work[r * K + j] as number);
      const error = (value - quantizer.quantize(r, j, value)) / U(j, j);
      for (let c = j + 1; c < K; c += 1) work[r * K + c] = (work[r * K + c] as number) - error * U(j, c);
    }
  }
}
