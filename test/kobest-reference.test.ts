/**
 * KOBEST end to end with the reference engine on polyglot-ko-tiny, against an independent implementation
 * of the polyglot-branch protocol (reference/kobest-validation-limit200.json): every document's prediction
 * and each choice's summed log-likelihood within 1e-3. The default suite checks the quick tasks at 0 shots;
 * POLYQUANT_BIG_TESTS=1 runs all five tasks at 0 and 5 shots (about ten minutes on two cores).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createReferenceEngine, type ReferenceEngine } from '../src/verify/engines/reference.js';
import { runKobest } from '../src/verify/kobest/index.js';
import type { KobestTaskName } from '../src/verify/kobest/tasks.js';
import { compareWithReference, KOBEST_DATA_DIR, type KobestReference, loadKobestReference } from './helpers/kobest-reference.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR } from './helpers/shared.js';

const BIG = process.env['POLYQUANT_BIG_TESTS'] === '1';

function only(reference: KobestReference, keys: readonly string[]): KobestReference {
  return { ...reference, tasks: Object.fromEntries(Object.entries(reference.tasks).filter(([key]) => keys.includes(key))) };
}

describe.skipIf(!HAS_SHARED)('KOBEST with the reference engine against the independent reference', () => {
  let engine: ReferenceEngine;
  beforeAll(async () => {
    engine = await createReferenceEngine(POLYGLOT_TINY_DIR);
  });
  afterAll(async () => {
    await engine?.close();
  });

  const check = async (tasks: KobestTaskName[], shots: number[]) => {
    const reference = loadKobestReference();
    const keys = tasks.flatMap((task) => shots.map((shot) => `${task}/${shot}shot`));
    const report = await runKobest(engine, { dir: KOBEST_DATA_DIR, tasks, shots, split: 'validation', limit: reference.limit });
    const selected = only(reference, keys);
    expect(Object.keys(selected.tasks)).toHaveLength(keys.length);
    const comparison = compareWithReference(report, selected, { tolerance: 1e-3 });
    expect(comparison.mismatches.slice(0, 10)).toEqual([]);
    expect(report.results.every((result) => result.documents.every((document, i) => document.pred === reference.tasks[`${result.task}/${result.shots}shot`]?.preds[i]))).toBe(true);
    return comparison;
  };

  it('reproduces COPA and SentiNeg at 0 shots document for document', async () => {
    const comparison = await check(['copa', 'sentineg'], [0]);
    expect(comparison.maxAbsDifference).toBeLessThan(1e-3);
  });

  it.skipIf(!BIG)('reproduces all five tasks at 0 and 5 shots', async () => {
    const comparison = await check(['boolq', 'copa', 'wic', 'hellaswag', 'sentineg'], [0, 5]);
    expect(comparison.maxAbsDifference).toBeLessThan(1e-3);
  }, 3_600_000);
});
