import { describe, expect, it } from 'vitest';
import { accuracy, argmax, macroF1, meanStderr } from '../src/verify/kobest/metrics.js';
import { loadKobestReference } from './helpers/kobest-reference.js';
import { HAS_SHARED } from './helpers/shared.js';

describe('argmax (np.argmax)', () => {
  it('returns the first index of the maximum on ties', () => {
    expect(argmax([-3, -1, -1, -2])).toBe(1);
    expect(argmax([-Infinity, -Infinity])).toBe(0);
  });

  it('returns the first NaN, as numpy does, and −1 for no values', () => {
    expect(argmax([-1, Number.NaN, 0, Number.NaN])).toBe(1);
    expect(argmax([])).toBe(-1);
  });
});

describe('macroF1 (sklearn f1_score average="macro")', () => {
  it('is 1 for perfect predictions', () => {
    expect(macroF1([0, 1, 1, 0], [0, 1, 1, 0])).toBe(1);
  });

  it('counts a gold class that is never predicted as F1 0', () => {
    // class 0: no predictions → P = R = 0 → F1 0; class 1: P = 2/4, R = 1 → F1 2/3.
    expect(macroF1([0, 0, 1, 1], [1, 1, 1, 1])).toBeCloseTo(1 / 3, 15);
  });

  it('counts a predicted class absent from the golds as F1 0', () => {
    // class 0: P = 1, R = 1/2 → 2/3; class 1: P = 0 (tp 0, fp 1), R = 0 (no golds) → 0.
    expect(macroF1([0, 0], [0, 1])).toBeCloseTo(1 / 3, 15);
  });

  it('averages over the union of labels only, not over labels seen in neither', () => {
    // labels {0, 1, 2}: class 0 → 1; class 1 → 0; class 2 → P 1/2, R 1/2 → 1/2. Label 3 is absent.
    expect(macroF1([0, 1, 2, 2], [0, 2, 2, 1])).toBeCloseTo(0.5, 15);
  });

  it('is NaN for no documents', () => {
    expect(macroF1([], [])).toBeNaN();
  });
});

describe('accuracy and mean_stderr', () => {
  it('computes the mean of pred == gold', () => {
    expect(accuracy([0, 1, 2, 3], [0, 1, 0, 0])).toBe(0.5);
  });

  it('uses the sample standard deviation over √n', () => {
    // mean 0.75, Σ(x − mean)² = 0.75, / (n − 1) = 0.25, sd 0.5, / √4 = 0.25
    expect(meanStderr([1, 0, 1, 1])).toBe(0.25);
    expect(meanStderr([1])).toBeNaN();
  });

  it('refuses golds and preds of different lengths', () => {
    expect(() => accuracy([0], [0, 1])).toThrow(RangeError);
  });
});

describe.skipIf(!HAS_SHARED)('metrics against the reference fixture (kobest-validation-limit200.json)', () => {
  it('reproduces every acc and macro_f1 bit for bit from its golds and preds', () => {
    const reference = loadKobestReference();
    const keys = Object.keys(reference.tasks);
    expect(keys).toHaveLength(10);
    for (const key of keys) {
      const entry = reference.tasks[key]!;
      expect(accuracy(entry.golds, entry.preds), key).toBe(entry.acc);
      expect(macroF1(entry.golds, entry.preds), key).toBe(entry.macro_f1);
      expect(entry.loglikelihoods.map((scores) => argmax(scores)), key).toEqual(entry.preds);
    }
  });
});
