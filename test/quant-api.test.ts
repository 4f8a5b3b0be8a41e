import { describe, expect, it } from 'vitest';
import { ERROR_CODES, PolyquantError } from '../src/errors.js';
import {
  dequantizeRows,
  dequantizeRowsInto,
  GGML_TYPE_NAMES,
  GGML_TYPES,
  type GgmlTypeName,
  quantizeRows,
  quantizeRowsInto,
  rowBytes,
} from '../src/quant/index.js';
import { createRandom } from './helpers/quant-random.js';

function caught(body: () => unknown): PolyquantError {
  try {
    body();
  } catch (error) {
    if (error instanceof PolyquantError) return error;
    throw new Error(`expected a PolyquantError, got ${String(error)}`);
  }
  throw new Error('expected a PolyquantError, nothing was thrown');
}

function normalRows(seed: number, length: number): Float32Array {
  const random = createRandom(seed);
  return Float32Array.from({ length }, () => random.normal() * 0.02);
}

describe('quantizeRows / dequantizeRows', () => {
  it('rejects a row length that is not a multiple of the block size, naming the type, the length and the block size', () => {
    const error = caught(() => quantizeRows('Q4_0', new Float32Array(48), 48, { tensor: 'blk.0.attn_qkv.weight' }));
    expect(error.code).toBe(ERROR_CODES.LIMIT);
    expect(error.message).toContain('Q4_0');
    expect(error.message).toContain('48');
    expect(error.message).toContain('32');
    expect(error.message).toContain('blk.0.attn_qkv.weight');
    expect(caught(() => dequantizeRows('Q6_K', new Uint8Array(210), 128)).code).toBe(ERROR_CODES.LIMIT);
  });

  it('rejects input that is not whole rows, mis-sized importance weights and bad row lengths', () => {
    expect(caught(() => quantizeRows('Q8_0', new Float32Array(100), 32)).message).toMatch(/100 values.*rows of 32/);
    expect(caught(() => quantizeRows('Q4_K', new Float32Array(512), 256, { importance: new Float32Array(512) })).message).toMatch(
      /512 entries.*256 columns/,
    );
    expect(caught(() => quantizeRows('Q8_0', new Float32Array(32), 0)).code).toBe(ERROR_CODES.USAGE);
    expect(caught(() => quantizeRows('Q8_0', new Float32Array(32), 1.5)).code).toBe(ERROR_CODES.USAGE);
    expect(caught(() => dequantizeRows('Q8_0', new Uint8Array(35), 32)).message).toMatch(/35 bytes.*34 bytes each/);
    expect(caught(() => quantizeRows('Q7_X' as GgmlTypeName, new Float32Array(32), 32)).code).toBe(ERROR_CODES.UNSUPPORTED);
  });

  it('rejects output buffers that are too small', () => {
    expect(caught(() => quantizeRowsInto('Q4_0', new Float32Array(64), 32, new Uint8Array(35))).message).toMatch(/35 bytes.*36/);
    expect(caught(() => dequantizeRowsInto('Q4_0', new Uint8Array(36), 32, new Float32Array(63))).message).toMatch(/63 values.*64/);
  });

  it('writes into caller buffers, reused across chunks, the same bytes and floats as the allocating calls', () => {
    const nPerRow = 512;
    const out = new Uint8Array(rowBytes('Q4_K', nPerRow) * 4 + 7);
    const floats = new Float32Array(nPerRow * 4 + 5);
    for (const seed of [1, 2]) {
      const src = normalRows(seed, nPerRow * 3);
      const written = quantizeRowsInto('Q4_K', src, nPerRow, out);
      expect(written.buffer).toBe(out.buffer);
      expect(written).toEqual(quantizeRows('Q4_K', src, nPerRow));
      const values = dequantizeRowsInto('Q4_K', written, nPerRow, floats);
      expect(values.buffer).toBe(floats.buffer);
      expect(values).toEqual(dequantizeRows('Q4_K', written, nPerRow));
    }
  });

  it('quantizes each row independently, so chunking never changes the bytes', () => {
    const nPerRow = 256;
    const src = normalRows(3, nPerRow * 4);
    const importance = Float32Array.from({ length: nPerRow }, (_, i) => 1 + (i % 7));
    for (const scheme of ['Q4_0', 'Q5_1', 'Q3_K', 'IQ4_XS'] as const) {
      const whole = quantizeRows(scheme, src, nPerRow, { importance });
      const halves = [
        quantizeRows(scheme, src.subarray(0, nPerRow * 2), nPerRow, { importance }),
        quantizeRows(scheme, src.subarray(nPerRow * 2), nPerRow, { importance }),
      ];
      expect(whole).toEqual(Uint8Array.from([...halves[0]!, ...halves[1]!]));
    }
  });

  it('ignores importance weights exactly for the types whose ggml quantizer does, and uses them for the others', () => {
    const nPerRow = 256;
    const src = normalRows(4, nPerRow * 2);
    const random = createRandom(5);
    const importance = Float32Array.from({ length: nPerRow }, () => Math.exp(2 * random.normal()));
    for (const scheme of GGML_TYPE_NAMES) {
      const plain = quantizeRows(scheme, src, nPerRow);
      const weighted = quantizeRows(scheme, src, nPerRow, { importance });
      if (GGML_TYPES[scheme].importance === 'ignored') expect(weighted, scheme).toEqual(plain);
      else expect(weighted, scheme).not.toEqual(plain);
    }
  });

  it('never throws anything but a PolyquantError on arbitrary bytes, and decodes every byte pattern', () => {
    const random = createRandom(99);
    for (const scheme of GGML_TYPE_NAMES) {
      const info = GGML_TYPES[scheme];
      const nPerRow = info.blockElements * 2;
      for (let trial = 0; trial < 20; trial++) {
        const length = trial < 10 ? rowBytes(scheme, nPerRow) * random.integer(1, 3) : random.integer(0, 600);
        const bytes = Uint8Array.from({ length }, () => random.integer(0, 255));
        try {
          const values = dequantizeRows(scheme, bytes, nPerRow);
          expect(values.length).toBe((length / rowBytes(scheme, nPerRow)) * nPerRow);
        } catch (error) {
          expect(error, scheme).toBeInstanceOf(PolyquantError);
        }
      }
    }
  });

  it('quantizes NaN, infinities and huge values without throwing', () => {
    const src = new Float32Array(512);
    src.set([Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 3e38, -3e38, 1e-45], 0);
    src.set([Number.NaN, 5, -7], 300);
    for (const scheme of GGML_TYPE_NAMES) {
      const bytes = quantizeRows(scheme, src, 256, { importance: new Float32Array(256).fill(1) });
      expect(dequantizeRows(scheme, bytes, 256).length).toBe(512);
    }
  });

  it('handles F16/BF16 bytes at odd offsets in the caller buffer', () => {
    const src = normalRows(6, 64);
    for (const scheme of ['F16', 'BF16', 'F32'] as const) {
      const bytes = quantizeRows(scheme, src, 64);
      const shifted = new Uint8Array(bytes.length + 1);
      shifted.set(bytes, 1);
      expect(dequantizeRows(scheme, shifted.subarray(1), 64)).toEqual(dequantizeRows(scheme, bytes, 64));
    }
  });
});
