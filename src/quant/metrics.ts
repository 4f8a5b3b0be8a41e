/**
 * Streaming error statistics between original and reconstructed (dequantized) values: feed chunks with
 * `add`, read the totals with `result`. Sums are kept in double precision (exact enough for 10^10
 * elements of float32 data); nothing is stored per element.
 */

import { ERROR_CODES, PolyquantError } from '../errors.js';

export interface ErrorStatsResult {
  /** Number of values compared. */
  count: number;
  /** Root mean squared error, √(Σ(x − x̂)²/n). */
  rmse: number;
  /** Largest |x − x̂|. */
  maxAbsError: number;
  /** Mean squared error. */
  mse: number;
  /**
   * Signal-to-quantization-noise ratio in dB, 10·log10(Σx² / Σ(x − x̂)²): +Infinity for an exact
   * reconstruction, −Infinity when the signal is all zero but the reconstruction is not.
   */
  sqnrDb: number;
  /** Cosine similarity Σx·x̂ / (‖x‖·‖x̂‖): 1 when both are all zero, 0 when exactly one is. */
  cosineSimilarity: number;
}

export interface ErrorStats {
  /** Adds a chunk of original values and their reconstruction (same length). */
  add(original: ArrayLike<number>, reconstructed: ArrayLike<number>): void;
  result(): ErrorStatsResult;
}

export function createErrorStats(): ErrorStats {
  let count = 0;
  let sumSquaredError = 0;
  let sumSquaredOriginal = 0;
  let sumSquaredReconstructed = 0;
  let sumProduct = 0;
  let maxAbsError = 0;
  return {
    add(original, reconstructed) {
      const length = original.length;
      if (reconstructed.length !== length) {
        throw new PolyquantError(
          ERROR_CODES.USAGE,
          `error statistics need equal lengths, got ${length} original and ${reconstructed.length} reconstructed values`,
        );
      }
      // Chunk-local sums keep the inner loop free of closure-variable writes.
      let squaredError = 0;
      let squaredOriginal = 0;
      let squaredReconstructed = 0;
      let product = 0;
      let largest = maxAbsError;
      for (let i = 0; i < length; i++) {
        const x = original[i]!;
        const y = reconstructed[i]!;
        const error = x - y;
        squaredError += error * error;
        squaredOriginal += x * x;
        squaredReconstructed += y * y;
        product += x * y;
        const magnitude = Math.abs(error);
        // NaN errors (a NaN on either side) make the maximum NaN rather than vanish.
        if (magnitude > largest || Number.isNaN(magnitude)) largest = magnitude;
      }
      count += length;
      sumSquaredError += squaredError;
      sumSquaredOriginal += squaredOriginal;
      sumSquaredReconstructed += squaredReconstructed;
      sumProduct += product;
      maxAbsError = largest;
    },
    result() {
      const mse = count === 0 ? 0 : sumSquaredError / count;
      let sqnrDb: number;
      if (sumSquaredError === 0) sqnrDb = Number.POSITIVE_INFINITY;
      else if (sumSquaredOriginal === 0) sqnrDb = Number.NEGATIVE_INFINITY;
      else sqnrDb = 10 * Math.log10(sumSquaredOriginal / sumSquaredError);
      // √(a·b) is exact for identical vectors (cosine exactly 1); √a·√b only if a·b overflows.
      let norms = Math.sqrt(sumSquaredOriginal * sumSquaredReconstructed);
      if (!Number.isFinite(norms)) norms = Math.sqrt(sumSquaredOriginal) * Math.sqrt(sumSquaredReconstructed);
      let cosineSimilarity: number;
      if (sumSquaredOriginal === 0 && sumSquaredReconstructed === 0) cosineSimilarity = 1;
      else if (norms === 0) cosineSimilarity = 0;
      else cosineSimilarity = Math.max(-1, Math.min(1, sumProduct / norms));
      return { count, rmse: Math.sqrt(mse), maxAbsError, mse, sqnrDb, cosineSimilarity };
    },
  };
}
