import { afterEach, describe, expect, it } from 'vitest';
import { ERROR_CODES, PolyquantError } from '../src/errors.js';
import { gptqFactor, gptqQuantizeRows, outputError } from '../src/quant/gptq.js';
import { DEPTH_SLICE, gptqKernels } from '../src/quant/gptq-kernels.js';
import { setKernelBackend } from '../src/quant/wasm/runtime.js';
import { inverse, randomWeights, SymmetricGroups, syntheticHessian, textbookGptq } from './helpers/gptq.js';
import { createRandom } from './helpers/quant-random.js';

afterEach(() => setKernelBackend('wasm'));

function diagonalOf(H: Float64Array, K: number): Float64Array {
  const out = new Float64Array(K * K);
  for (let i = 0; i < K; i += 1) out[i * K + i] = H[i * K + i] as number;
  return out;
}

function quantizeWith(rows: Float32Array, rowCount: number, K: number, H: Float64Array, groupSize: number, options: { dampening?: number } = {}): SymmetricGroups {
  const quantizer = new SymmetricGroups(groupSize, rowCount, K);
  gptqQuantizeRows(rows, rowCount, 0, gptqFactor(H, K, options), quantizer);
  return quantizer;
}

describe('gptqFactor', () => {
  it("stores, for each column c, the first row of (H_{≥c,≥c})⁻¹ H_{≥c,<c}: GPTQ's update of column c by the errors before it", () => {
    const K = 20;
    const H = syntheticHessian(K, 400, 1);
    const factor = gptqFactor(H, K);
    const damped = Float64Array.from(H);
    for (let i = 0; i < K; i += 1) damped[i * K + i] = (damped[i * K + i] as number) + factor.dampening;
    let worst = 0;
    for (let c = 1; c < K; c += 1) {
      const n = K - c;
      const lower = new Float64Array(n * n);
      for (let i = 0; i < n; i += 1) for (let j = 0; j < n; j += 1) lower[i * n + j] = damped[(c + i) * K + c + j] as number;
      const firstRow = inverse(lower, n).subarray(0, n);
      for (let i = 0; i < c; i += 1) {
        let expected = 0;
        for (let k = 0; k < n; k += 1) expected += (firstRow[k] as number) * (damped[(c + k) * K + i] as number);
        worst = Math.max(worst, Math.abs((factor.feedback[c * K + i] as number) - expected) / (1 + Math.abs(expected)));
      }
      for (let i = c; i < K; i += 1) expect(factor.feedback[c * K + i]).toBe(0);
    }
    expect(worst).toBeLessThan(2e-4);
    expect(factor.importance[3]).toBe(H[3 * K + 3]);
    expect(factor.dampening).toBeCloseTo(0.01 * factor.importance.reduce((a, b) => a + b, 0) / K, 12);
    expect(factor.feedback.buffer).toBeInstanceOf(SharedArrayBuffer);
  });

  it('dampens a singular Hessian until it factors, and refuses a negative or non-finite diagonal and a wrong size', () => {
    const K = 12;
    // Rank 2: x = (a, b, a, b, …).
    const H = new Float64Array(K * K);
    for (let i = 0; i < K; i += 1) for (let j = 0; j < K; j += 1) H[i * K + j] = i % 2 === j % 2 ? 1 : 0.25;
    expect(() => gptqFactor(H, K, { dampening: 0 })).not.toThrow();
    const factor = gptqFactor(H, K, { dampening: 0 });
    expect(factor.dampening).toBeGreaterThan(0);
    const negative = Float64Array.from(H);
    negative[5 * K + 5] = -1;
    expect(() => gptqFactor(negative, K)).toThrow(expect.objectContaining({ code: ERROR_CODES.CHECK_FAILED, message: expect.stringContaining('column 5') }));
    const infinite = Float64Array.from(H);
    infinite[0] = Number.POSITIVE_INFINITY;
    expect(() => gptqFactor(infinite, K)).toThrow(PolyquantError);
    expect(() => gptqFactor(H, K + 1)).toThrow(expect.objectContaining({ code: ERROR_CODES.CONFIG }));
    expect(() => gptqFactor(H, K, { dampening: 2 })).toThrow(expect.objectContaining({ code: ERROR_CODES.USAGE }));
  });
});

describe('gptqQuantizeRows', () => {
  const K = 96;
  const rowCount = 24;
  const H = syntheticHessian(K, 600, 2);
  const rows = randomWeights(rowCount * K, 3);

  it('rounds to nearest when the Hessian is diagonal and undamped: nothing propagates', () => {
    const gptq = quantizeWith(rows, rowCount, K, diagonalOf(H, K), 16, { dampening: 0 });
    const plain = new SymmetricGroups(16, rowCount, K);
    for (let r = 0; r < rowCount; r += 1) {
      for (let g = 0; g < K; g += 16) {
        plain.fitGroup(r, g, Float64Array.from(rows.subarray(r * K + g, r * K + g + 16)));
        for (let c = g; c < g + 16; c += 1) plain.quantize(r, c, rows[r * K + c] as number);
      }
    }
    expect(gptq.out).toEqual(plain.out);
  });

  it('lowers the output error (w − q)ᵀ H (w − q) well below rounding to nearest', () => {
    const rtn = quantizeWith(rows, rowCount, K, diagonalOf(H, K), 16, { dampening: 0 });
    const gptq = quantizeWith(rows, rowCount, K, H, 16);
    const rtnError = outputError(rows, rtn.out, rowCount, H, K);
    const gptqError = outputError(rows, gptq.out, rowCount, H, K);
    expect(gptqError).toBeLessThan(0.6 * rtnError);
  });

  it("gives GPTQ's textbook result (U with Uᵀ U = H⁻¹, float64) up to float32 rounding", () => {
    const fast = quantizeWith(rows, rowCount, K, H, 32);
    const factor = gptqFactor(H, K);
    const textbook = new SymmetricGroups(32, rowCount, K);
    textbookGptq(rows, rowCount, K, H, factor.dampening, textbook);
    // One level that rounds the other way (float32 against float64) changes every error fed on from it, so
    // the two drift apart column by column; they must agree on where they start, and on the error they reach.
    let firstGroupAgrees = 0;
    for (let r = 0; r < rowCount; r += 1) if (fast.out.subarray(r * K, r * K + 32).every((value, c) => value === textbook.out[r * K + c])) firstGroupAgrees += 1;
    expect(firstGroupAgrees / rowCount).toBeGreaterThan(0.9);
    const fastError = outputError(rows, fast.out, rowCount, H, K);
    const textbookError = outputError(rows, textbook.out, rowCount, H, K);
    expect(Math.abs(fastError - textbookError) / textbookError).toBeLessThan(0.005);
  });

  it('zeroes dead columns (no input ever) and feeds nothing back through them', () => {
    const dead = Float64Array.from(H);
    for (const c of [5, 40]) for (let i = 0; i < K; i += 1) dead[c * K + i] = dead[i * K + c] = 0;
    const factor = gptqFactor(dead, K);
    expect([...factor.dead.keys()].filter((c) => factor.dead[c])).toEqual([5, 40]);
    for (let i = 0; i < K; i += 1) {
      expect(factor.feedback[40 * K + i]).toBe(0);
      expect(factor.feedback[i * K + 40]).toBe(0);
    }
    const quantizer = new SymmetricGroups(16, rowCount, K);
    gptqQuantizeRows(rows, rowCount, 0, factor, quantizer);
    for (let r = 0; r < rowCount; r += 1) {
      expect(quantizer.out[r * K + 5]).toBe(0);
      expect(quantizer.out[r * K + 40]).toBe(0);
    }
  });

  it("gives each row the same levels whatever rows share the call, and doesn't touch its input", () => {
    const many = 150; // more than one pass of rows
    const weights = randomWeights(many * K, 4);
    const copy = weights.slice();
    const factor = gptqFactor(H, K);
    const whole = new SymmetricGroups(16, many, K);
    gptqQuantizeRows(weights, many, 0, factor, whole);
    expect(weights).toEqual(copy);
    const pieces = new SymmetricGroups(16, many, K);
    for (const [first, count] of [[0, 1], [1, 70], [71, 7], [78, 72]] as const) {
      gptqQuantizeRows(weights.subarray(first * K), count, first, factor, pieces);
    }
    expect(pieces.out).toEqual(whole.out);
  });

  it('handles a row length that is not a multiple of the group or of the block', () => {
    const odd = 50;
    const Hodd = syntheticHessian(odd, 300, 5);
    const weights = randomWeights(8 * odd, 6);
    const rtn = quantizeWith(weights, 8, odd, diagonalOf(Hodd, odd), 12, { dampening: 0 });
    const gptq = quantizeWith(weights, 8, odd, Hodd, 12);
    expect(outputError(weights, gptq.out, 8, Hodd, odd)).toBeLessThan(outputError(weights, rtn.out, 8, Hodd, odd));
  });
});

describe('GPTQ kernels', () => {
  it('WebAssembly and TypeScript kernels give the same bits: products over several depth slices, factors and levels', () => {
    const random = createRandom(7);
    const rowsX = 5;
    const cols = 7;
    const depth = DEPTH_SLICE * 2 + 37;
    const fill = (kernels: ReturnType<typeof gptqKernels>): Float32Array => {
      const x = kernels.base;
      const w = x + rowsX * depth;
      const y = w + cols * depth;
      kernels.reserve(y + rowsX * cols);
      const m = kernels.floats();
      const seeded = createRandom(11);
      for (let i = 0; i < rowsX * depth + cols * depth + rowsX * cols; i += 1) m[x + i] = seeded.normal();
      kernels.gemm(x, depth, w, depth, y, cols, rowsX, cols, depth, false);
      kernels.gemm(x, depth, w, depth, y, cols, 3, 4, depth - 5, true);
      return m.slice(y, y + rowsX * cols);
    };
    const fromWasm = fill(gptqKernels());
    setKernelBackend('js');
    const fromJs = fill(gptqKernels());
    expect(fromJs).toEqual(fromWasm);
    void random;

    const K = 70;
    const H = syntheticHessian(K, 300, 8);
    const weights = randomWeights(10 * K, 9);
    const jsFactor = gptqFactor(H, K);
    const jsLevels = new SymmetricGroups(16, 10, K);
    gptqQuantizeRows(weights, 10, 0, jsFactor, jsLevels);
    setKernelBackend('wasm');
    const wasmFactor = gptqFactor(H, K);
    expect(wasmFactor.feedback).toEqual(jsFactor.feedback);
    const wasmLevels = new SymmetricGroups(16, 10, K);
    gptqQuantizeRows(weights, 10, 0, wasmFactor, wasmLevels);
    expect(wasmLevels.out).toEqual(jsLevels.out);
  });

  it('quantizes in whatever order factors are made on the thread (the kernel memory is reloaded)', () => {
    const K = 40;
    const a = gptqFactor(syntheticHessian(K, 200, 12), K);
    const weights = randomWeights(4 * K, 13);
    const first = new SymmetricGroups(8, 4, K);
    gptqQuantizeRows(weights, 4, 0, a, first);
    gptqFactor(syntheticHessian(64, 200, 14), 64); // overwrites the thread's kernel memory
    const again = new SymmetricGroups(8, 4, K);
    gptqQuantizeRows(weights, 4, 0, a, again);
    expect(again.out).toEqual(first.out);
  });
});
