import { describe, expect, it } from 'vitest';
import { ERROR_CODES, PolyquantError } from '../src/errors.js';
import {
  GGML_TYPE_BY_ID,
  GGML_TYPE_NAMES,
  GGML_TYPES,
  type GgmlTypeName,
  ggmlTypesForFormat,
  isGgmlTypeName,
  rowBytes,
  rowFitsBlocks,
  tensorBytes,
} from '../src/quant/index.js';
import { HAVE_GOLDEN, readGoldenManifest } from './helpers/quant-golden.js';

/**
 * ggml's numbers, copied from upstream by hand so the table cannot drift unnoticed: ids from
 * `enum ggml_type` (ggml/include/ggml.h), and each block struct of ggml/src/ggml-common.h as its field
 * sizes in bytes (specs/gguf.md §1.3 and §4.1).
 */
const UPSTREAM: Record<GgmlTypeName, { id: number; blockElements: number; fields: Record<string, number> }> = {
  F32: { id: 0, blockElements: 1, fields: { value: 4 } },
  F16: { id: 1, blockElements: 1, fields: { value: 2 } },
  BF16: { id: 30, blockElements: 1, fields: { value: 2 } },
  Q4_0: { id: 2, blockElements: 32, fields: { d: 2, qs: 16 } },
  Q4_1: { id: 3, blockElements: 32, fields: { d: 2, m: 2, qs: 16 } },
  Q5_0: { id: 6, blockElements: 32, fields: { d: 2, qh: 4, qs: 16 } },
  Q5_1: { id: 7, blockElements: 32, fields: { d: 2, m: 2, qh: 4, qs: 16 } },
  Q8_0: { id: 8, blockElements: 32, fields: { d: 2, qs: 32 } },
  Q2_K: { id: 10, blockElements: 256, fields: { scales: 16, qs: 64, d: 2, dmin: 2 } },
  Q3_K: { id: 11, blockElements: 256, fields: { hmask: 32, qs: 64, scales: 12, d: 2 } },
  Q4_K: { id: 12, blockElements: 256, fields: { d: 2, dmin: 2, scales: 12, qs: 128 } },
  Q5_K: { id: 13, blockElements: 256, fields: { d: 2, dmin: 2, scales: 12, qh: 32, qs: 128 } },
  Q6_K: { id: 14, blockElements: 256, fields: { ql: 128, qh: 64, scales: 16, d: 2 } },
  IQ4_NL: { id: 20, blockElements: 32, fields: { d: 2, qs: 16 } },
  IQ4_XS: { id: 23, blockElements: 256, fields: { d: 2, scales_h: 2, scales_l: 4, qs: 128 } },
};

describe('ggml type table', () => {
  it('has exactly the types pinned to upstream, each under its own name', () => {
    expect([...GGML_TYPE_NAMES].sort()).toEqual(Object.keys(UPSTREAM).sort());
    for (const name of GGML_TYPE_NAMES) expect(GGML_TYPES[name].name).toBe(name);
  });

  for (const name of Object.keys(UPSTREAM) as GgmlTypeName[]) {
    it(`pins ${name} to ggml's type id, block elements and block struct size`, () => {
      const upstream = UPSTREAM[name];
      const row = GGML_TYPES[name];
      expect(row.id).toBe(upstream.id);
      expect(row.blockElements).toBe(upstream.blockElements);
      expect(row.blockBytes).toBe(Object.values(upstream.fields).reduce((sum, size) => sum + size, 0));
      expect(Number.isInteger(row.blockBytes)).toBe(true);
      expect(row.formats).toContain('gguf');
      expect(row.roundTripBound.length).toBeGreaterThan(10);
    });
  }

  it.skipIf(!HAVE_GOLDEN)('agrees with the golden manifest written from ggml', () => {
    const manifest = readGoldenManifest();
    for (const [name, golden] of Object.entries(manifest.types)) {
      expect(isGgmlTypeName(name), name).toBe(true);
      const row = GGML_TYPES[name as GgmlTypeName];
      expect({ id: row.id, blockElements: row.blockElements, blockBytes: row.blockBytes }, name).toEqual({
        id: golden.ggml_type_id,
        blockElements: golden.block_elements,
        blockBytes: golden.block_bytes,
      });
    }
  });

  it('marks exactly the types whose ggml quantizer ignores importance weights', () => {
    const ignored = GGML_TYPE_NAMES.filter((name) => GGML_TYPES[name].importance === 'ignored');
    expect(ignored).toEqual(['F32', 'F16', 'BF16', 'Q8_0']);
  });

  it('derives the id lookup and the per-format choices from the table', () => {
    for (const name of GGML_TYPE_NAMES) expect(GGML_TYPE_BY_ID.get(GGML_TYPES[name].id)).toBe(name);
    expect(GGML_TYPE_BY_ID.size).toBe(GGML_TYPE_NAMES.length);
    expect(ggmlTypesForFormat('gguf')).toEqual(GGML_TYPE_NAMES);
    expect(ggmlTypesForFormat('onnx')).toEqual([]);
    expect(isGgmlTypeName('Q4_K')).toBe(true);
    expect(isGgmlTypeName('q4_k')).toBe(false);
    expect(isGgmlTypeName('toString')).toBe(false);
  });

  it('computes row and tensor sizes in whole blocks', () => {
    expect(rowBytes('Q4_K', 3072)).toBe(12 * 144);
    expect(rowBytes('Q8_0', 12288)).toBe(384 * 34);
    expect(rowBytes('F16', 7)).toBe(14);
    expect(tensorBytes('Q6_K', 3072 * 30080, 3072)).toBe(30080 * 12 * 210);
    expect(rowFitsBlocks('Q4_K', 3072)).toBe(true);
    expect(rowFitsBlocks('Q4_K', 3040)).toBe(false);
    expect(rowFitsBlocks('Q4_0', 3040)).toBe(true);
  });

  it('rejects a row length that is not a multiple of the block size, naming the type, the length and the block', () => {
    let caught: unknown;
    try {
      rowBytes('Q4_K', 2050);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(PolyquantError);
    expect((caught as PolyquantError).code).toBe(ERROR_CODES.LIMIT);
    expect((caught as PolyquantError).message).toMatch(/Q4_K.*256.*2050/);
  });
});
