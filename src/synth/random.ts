/**
 * Seeded randomness for synthetic checkpoints: fast enough to fill 7.6 GB of fp16 in seconds, and the same
 * values for a tensor whatever the file format, shard layout or chunk size.
 */
import { f32ToBf16, f32ToF16 } from '../tensor/float.js';

/** splitmix32 finaliser: spreads a 32-bit seed so neighbouring seeds give unrelated streams. */
export function mix32(value: number): number {
  let z = (value + 0x9e3779b9) | 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

/** FNV-1a over a string: a stable per-tensor stream id. */
export function hashString(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i += 1) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193);
  return hash >>> 0;
}

/** xorshift32 (Marsaglia 2003): one multiply-free step per 32 random bits. */
export class Xorshift32 {
  private state: number;

  constructor(seed: number) {
    this.state = mix32(seed) || 0x6d2b79f5;
  }

  next(): number {
    let x = this.state;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.state = x >>> 0;
    return this.state;
  }

  /** Uniform in [0, 1). */
  uniform(): number {
    return this.next() / 4294967296;
  }
}

/**
 * Inverse of the standard normal CDF (Acklam's rational approximation, relative error < 1.2e-9): good
 * enough to lay out normal quantiles in a lookup table.
 */
export function normalQuantile(p: number): number {
  const a = [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.38357751867269e2, -3.066479806614716e1, 2.506628277459239];
  const b = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
  const c = [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
  const low = 0.02425;
  const poly = (coefficients: number[], x: number): number => coefficients.reduce((sum, k) => sum * x + k, 0);
  if (p < low) {
    const q = Math.sqrt(-2 * Math.log(p));
    return poly(c, q) / (poly(d, q) * q + 1);
  }
  if (p > 1 - low) {
    const q = Math.sqrt(-2 * Math.log(1 - p));
    return -poly(c, q) / (poly(d, q) * q + 1);
  }
  const q = p - 0.5;
  const r = q * q;
  return (poly(a, r) * q) / (poly(b, r) * r + 1);
}

/** 65,536 equiprobable normal(0, std) values: one 16-bit random index draws a (finely binned) normal sample. */
export function normalTable(std: number): Float32Array {
  const table = new Float32Array(65536);
  for (let i = 0; i < 65536; i += 1) table[i] = std * normalQuantile((i + 0.5) / 65536);
  return table;
}

export function toHalfTable(table: Float32Array, format: 'F16' | 'BF16'): Uint16Array {
  const convert = format === 'F16' ? f32ToF16 : f32ToBf16;
  return Uint16Array.from(table, (value) => convert(value));
}

/** Fills `out` with table[random 16 bits], two draws per 32-bit step. */
export function fillFromTable<T extends Uint16Array | Float32Array>(rng: Xorshift32, table: T, out: T): void {
  const n = out.length;
  let i = 0;
  for (; i + 1 < n; i += 2) {
    const bits = rng.next();
    out[i] = table[bits & 0xffff] as number;
    out[i + 1] = table[bits >>> 16] as number;
  }
  if (i < n) out[i] = table[rng.next() & 0xffff] as number;
}
