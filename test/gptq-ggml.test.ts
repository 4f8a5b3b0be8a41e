import { describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../src/errors.js';
import { dequantizeRows, quantizeRows } from '../src/quant/api.js';
import { gptqFactor, gptqQuantizeRows, outputError } from '../src/quant/gptq.js';
import { GGML_TYPES } from '../src/quant/ggml-types.js';
import { GgmlGptqQuantizer, GPTQ_GGML_TYPES, type GptqGgmlType, gptqQuantizeGgmlRows, isGptqGgmlType } from '../src/quant/gptq-ggml.js';
import { randomWeights, syntheticHessian } from './helpers/gptq.js';
import { createRandom } from './helpers/quant-random.js';

const K = 512;
const ROWS = 12;
/** One calibration Hessian for every case (building it is most of this file's time). */
const HESSIAN = syntheticHessian(K, 800, 4);

/** Rows with a spread of scales, an all-zero super-block, a near-zero sub-block and an outlier, as real weights have. */
function weights(seed: number): Float32Array {
  const random = createRandom(seed);
  const rows = new Float32Array(ROWS * K);
  for (let r = 0; r < ROWS; r += 1) {
    const scale = 0.01 * 2 ** random.integer(-3, 3);
    for (let c = 0; c < K; c += 1) rows[r * K + c] = scale * random.normal();
  }
  rows.fill(0, 2 * K + 256, 3 * K); // row 2's second super-block
  rows.fill(1e-9, 4 * K + 32, 4 * K + 64); // a sub-block far below the others
  rows[5 * K + 7] = 0.5; // an outlier
  return rows;
}

/** An imatrix: mean squares spread over four orders of magnitude. */
function imatrix(seed: number): Float32Array {
  const random = createRandom(seed);
  return Float32Array.from({ length: K }, () => Math.fround(10 ** (2 * random.next() - 2)));
}

function diagonal(values: Float32Array): Float64Array {
  const H = new Float64Array(values.length * values.length);
  for (let i = 0; i < values.length; i += 1) H[i * values.length + i] = values[i] as number;
  return H;
}

function hexDiff(a: Uint8Array, b: Uint8Array, blockBytes: number): string {
  const at = a.findIndex((byte, i) => byte !== b[i]);
  if (at < 0) return 'equal';
  const block = Math.floor(at / blockBytes);
  const hex = (bytes: Uint8Array) => Buffer.from(bytes.subarray(block * blockBytes, (block + 1) * blockBytes)).toString('hex');
  return `block ${block} (byte ${at}):\n  gptq ${hex(a)}\n  rtn  ${hex(b)}`;
}

describe('GPTQ for ggml types', () => {
  it('lists the types q4_k_m and its fallbacks write', () => {
    expect(GPTQ_GGML_TYPES).toEqual(expect.arrayContaining(['Q4_K', 'Q6_K', 'Q5_K', 'Q8_0', 'Q5_0']));
    expect(isGptqGgmlType('Q4_K')).toBe(true);
    expect(isGptqGgmlType('Q2_K')).toBe(false);
    expect(isGptqGgmlType('F16')).toBe(false);
  });

  it.each(GPTQ_GGML_TYPES.flatMap((type) => [
    [type, 'with'],
    [type, 'without'],
  ]))('%s %s importance: a diagonal undamped Hessian gives the round-to-nearest bytes (llama-quantize\'s) byte for byte', (type, weighted) => {
    const rows = weights(1);
    const importance = weighted === 'with' ? imatrix(2) : null;
    const factor = gptqFactor(diagonal(importance ?? new Float32Array(K).fill(1)), K, { dampening: 0 });
    const gptq = gptqQuantizeGgmlRows(type as GptqGgmlType, rows, K, factor, { importance });
    const rtn = quantizeRows(type, rows, K, importance === null ? {} : { importance });
    expect(gptq.length).toBe(rtn.length);
    expect(hexDiff(gptq, rtn, GGML_TYPES[type].blockBytes)).toBe('equal');
  });

  it.each(GPTQ_GGML_TYPES)('%s: every value quantize returns is what the written bytes dequantize to', (type) => {
    const rows = weights(3);
    const H = HESSIAN;
    const factor = gptqFactor(H, K);
    const quantizer = new GgmlGptqQuantizer(type, K, ROWS, 0, rows, { importance: Float32Array.from(factor.importance) });
    const returned = new Float32Array(ROWS * K);
    const recording = {
      groupSize: quantizer.groupSize,
      fitGroup: (row: number, column: number, values: Float64Array) => quantizer.fitGroup(row, column, values),
      quantize: (row: number, column: number, value: number) => {
        const q = quantizer.quantize(row, column, value);
        returned[row * K + column] = q;
        return q;
      },
    };
    gptqQuantizeRows(rows, ROWS, 0, factor, recording);
    expect(dequantizeRows(type, quantizer.bytes, K)).toEqual(returned);
  });

  it.each(GPTQ_GGML_TYPES)('%s: with a calibration Hessian the output error is lower than round-to-nearest with the same importance', (type) => {
    const rows = randomWeights(ROWS * K, 5, 0.02);
    const H = HESSIAN;
    const factor = gptqFactor(H, K);
    const importance = Float32Array.from(factor.importance);
    const gptq = dequantizeRows(type, gptqQuantizeGgmlRows(type, rows, K, factor, { importance }), K);
    const rtn = dequantizeRows(type, quantizeRows(type, rows, K, { importance }), K);
    const ratio = outputError(rows, gptq, ROWS, H, K) / outputError(rows, rtn, ROWS, H, K);
    expect(ratio).toBeLessThan(0.5);
  });

  it('takes the importance from the Hessian diagonal when none is given, and refuses mismatched shapes', () => {
    const rows = randomWeights(ROWS * K, 7);
    const H = HESSIAN;
    const factor = gptqFactor(H, K);
    const implicit = gptqQuantizeGgmlRows('Q4_K', rows, K, factor);
    const explicit = gptqQuantizeGgmlRows('Q4_K', rows, K, factor, { importance: Float32Array.from(factor.importance) });
    expect(implicit).toEqual(explicit);
    expect(() => gptqQuantizeGgmlRows('Q4_K', rows.subarray(0, 256 * 3), 256, factor)).toThrow(expect.objectContaining({ code: ERROR_CODES.CONFIG }));
    expect(() => new GgmlGptqQuantizer('Q4_K', 100, 1, 0, undefined)).toThrow(expect.objectContaining({ code: ERROR_CODES.LIMIT }));
    expect(() => gptqQuantizeGgmlRows('Q4_K', rows, K, factor, { importance: new Float32Array(3) })).toThrow(expect.objectContaining({ code: ERROR_CODES.USAGE }));
  });
});
