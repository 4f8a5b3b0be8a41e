import { describe, expect, it } from 'vitest';
import {
  createErrorStats,
  dequantizeRows,
  GGML_TYPE_NAMES,
  GGML_TYPES,
  type GgmlTypeName,
  quantizeRows,
} from '../src/quant/index.js';
import { checkRoundTripBound } from './helpers/quant-bounds.js';
import { createRandom, type Random } from './helpers/quant-random.js';

/** A random row: mixtures of scales, tails, zeros, constants and exact ties, as real weights (and worse) have. */
function randomRow(random: Random, n: number, blockElements: number): Float32Array {
  const row = new Float32Array(n);
  const scale = 10 ** random.integer(-8, 3);
  const kind = random.integer(0, 5);
  for (let i = 0; i < n; i++) {
    switch (kind) {
      case 0:
        row[i] = random.normal() * scale;
        break;
      case 1:
        // Student-t-ish tails: normal over |normal|.
        row[i] = ((random.normal() / Math.max(0.05, Math.abs(random.normal()))) * scale) / 10;
        break;
      case 2:
        row[i] = (random.next() * 2 - 1) * scale;
        break;
      case 3:
        // Values on half steps: rounding ties everywhere.
        row[i] = ((random.integer(0, 16) - 8) / 8 + 1 / 16) * scale;
        break;
      case 4:
        row[i] = random.next() < 0.7 ? 0 : random.normal() * scale;
        break;
      default:
        row[i] = Math.abs(random.normal()) * scale + scale;
    }
  }
  // Sometimes a whole block is zero or constant.
  if (random.next() < 0.3) {
    const start = random.integer(0, n / blockElements - 1) * blockElements;
    const value = random.next() < 0.5 ? 0 : random.normal() * scale;
    row.fill(value, start, Math.min(n, start + blockElements));
  }
  return row;
}

/** Importance weights like an imatrix's: log-normal, `spread` the σ of the log. */
function randomImportance(random: Random, n: number, spread: number): Float32Array {
  return Float32Array.from({ length: n }, () => Math.exp(spread * random.normal()));
}

describe('quantization round trips', () => {
  for (const scheme of GGML_TYPE_NAMES) {
    const info = GGML_TYPES[scheme];
    it(`keeps every ${scheme} element within the type's analytical bound (${info.roundTripBound.slice(0, 60)}…)`, () => {
      const random = createRandom(0x9e3779b9 ^ info.id);
      for (let trial = 0; trial < 24; trial++) {
        const blocks = random.integer(1, info.blockElements === 1 ? 300 : info.blockElements === 32 ? 12 : 3);
        const nPerRow = blocks * info.blockElements;
        const rows = random.integer(1, 3);
        const weighted = trial % 2 === 1;
        const importance = weighted ? randomImportance(random, nPerRow, trial % 4 === 3 ? 2 : 1) : undefined;
        for (let row = 0; row < rows; row++) {
          const original = randomRow(random, nPerRow, info.blockElements);
          const bytes = quantizeRows(scheme, original, nPerRow, { importance });
          expect(bytes.length).toBe((nPerRow / info.blockElements) * info.blockBytes);
          const reconstructed = dequantizeRows(scheme, bytes, nPerRow);
          const message = checkRoundTripBound(scheme, original, bytes, reconstructed, importance);
          expect(message, `${scheme} trial ${trial} row ${row}${weighted ? ' (importance)' : ''}: ${message}`).toBeNull();
        }
      }
    });

    it(`is a fixed point for ${scheme}: re-quantizing dequantized values of a quantized row changes little`, () => {
      const random = createRandom(0x51ed ^ info.id);
      const nPerRow = info.blockElements === 1 ? 64 : 2 * Math.max(info.blockElements, 32);
      const original = Float32Array.from({ length: nPerRow }, () => random.normal() * 0.02);
      const once = dequantizeRows(scheme, quantizeRows(scheme, original, nPerRow), nPerRow);
      const twice = dequantizeRows(scheme, quantizeRows(scheme, once, nPerRow), nPerRow);
      const stats = createErrorStats();
      stats.add(once, twice);
      const first = createErrorStats();
      first.add(original, once);
      // A second pass must not add more error than the first one made.
      expect(stats.result().rmse).toBeLessThanOrEqual(first.result().rmse + 1e-12);
    });
  }

  it('reaches the quality expected of each type on normal(0, 0.02) weights', () => {
    // SQNR floors (dB) about 1 dB under what ggml's algorithms reach on this data (about 6 dB per bit).
    const floors: Record<GgmlTypeName, number> = {
      F32: Number.POSITIVE_INFINITY,
      F16: 72,
      BF16: 54,
      Q8_0: 44,
      Q6_K: 33.5,
      Q5_K: 27.5,
      Q5_1: 27,
      Q5_0: 26,
      Q4_K: 21.5,
      Q4_1: 21,
      IQ4_NL: 21,
      IQ4_XS: 21,
      Q4_0: 20,
      Q3_K: 15,
      Q2_K: 9.5,
    };
    const random = createRandom(7);
    const nPerRow = 1024;
    const original = Float32Array.from({ length: nPerRow * 8 }, () => random.normal() * 0.02);
    for (const scheme of GGML_TYPE_NAMES) {
      const stats = createErrorStats();
      stats.add(original, dequantizeRows(scheme, quantizeRows(scheme, original, nPerRow), nPerRow));
      const result = stats.result();
      expect(result.sqnrDb, scheme).toBeGreaterThanOrEqual(floors[scheme]);
      expect(result.cosineSimilarity, scheme).toBeGreaterThan(0.95);
    }
  });
});
