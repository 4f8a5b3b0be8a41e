import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ERROR_CODES, PolyquantError } from '../src/errors.js';
import { loadKobestSplit } from '../src/verify/kobest/load.js';
import { buildKobestRequests, planKobest } from '../src/verify/kobest/requests.js';
import { type KobestProgress, keptContextLength, runKobest } from '../src/verify/kobest/run.js';
import { KOBEST_TASKS } from '../src/verify/kobest/tasks.js';
import {
  codePointTokenize,
  compareWithReference,
  fakeKobestEngine,
  KOBEST_DATA_DIR,
  loadKobestReference,
  type RecordedCall,
  referenceRuns,
  replayKobestEngine,
} from './helpers/kobest-reference.js';
import { HAS_SHARED } from './helpers/shared.js';

const scratch = mkdtempSync(join(tmpdir(), 'polyquant-kobest-run-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** A tiny dataset in our JSONL layout: 12 train and 9 validation documents for COPA and SentiNeg. */
function writeTinyKobest(): string {
  const root = join(scratch, 'tiny');
  const write = (task: string, split: string, records: object[]): void => {
    mkdirSync(join(root, task), { recursive: true });
    writeFileSync(join(root, task, `${split}.jsonl`), records.map((record) => JSON.stringify(record)).join('\n'));
  };
  const sentences = (count: number, prefix: string): object[] =>
    Array.from({ length: count }, (_, index) => ({ sentence: `${prefix} 문장 ${index}`, label: index % 2 }));
  write('sentineg', 'train', sentences(12, '학습'));
  write('sentineg', 'validation', sentences(9, '검증'));
  const copa = (count: number, prefix: string): object[] =>
    Array.from({ length: count }, (_, index) => ({
      premise: `${prefix} 전제 ${index}.`,
      question: index % 3 === 0 ? '원인' : '결과',
      alternative_1: `짧은 답 ${index}.`,
      alternative_2: `훨씬 더 긴 두 번째 대안 ${index}.`,
      label: (index * 7) % 2,
    }));
  write('copa', 'train', copa(12, '학습'));
  write('copa', 'validation', copa(9, '검증'));
  return root;
}

describe('runKobest with a fake engine', () => {
  const dir = writeTinyKobest();

  it('scores each document with one scoreContinuations call, tokenizing its prompt once', async () => {
    const engine = fakeKobestEngine({ contextLength: 4096 });
    const report = await runKobest(engine, { dir, tasks: ['sentineg'], shots: [0], split: 'validation' });
    expect(engine.calls).toHaveLength(9);
    const prompts = engine.tokenized.filter((text) => text.startsWith('문장: '));
    expect(prompts).toHaveLength(9);
    // " 부정" and " 긍정" are tokenized once for the whole run, not once per document.
    expect(engine.tokenized.filter((text) => text === ' 부정' || text === ' 긍정')).toHaveLength(2);
    const [result] = report.results;
    const order = planKobest({ documentCount: 9, trainCount: 0, shots: 0 }).order;
    expect(result!.documents.map((document) => document.idx)).toEqual(order);
    expect(result!.documents.map((document) => document.index)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    engine.calls.forEach((call, position) => {
      const text = `문장: 검증 문장 ${order[position]} 긍부정:`;
      expect([...call.context]).toEqual([...codePointTokenize(text)]);
      expect(call.continuations.map((continuation) => [...continuation])).toEqual([
        [...codePointTokenize(' 부정')],
        [...codePointTokenize(' 긍정')],
      ]);
    });
  });

  it('predicts the argmax of the engine scores and reports acc and macro-F1 from them', async () => {
    // The fake prefers " 긍정" when the document's number is even: label = number % 2, so odd documents
    // (label 1) are predicted 0 and even ones (label 0) are predicted 1 — every prediction wrong.
    const engine = fakeKobestEngine({
      contextLength: 4096,
      score: (context, continuation) => {
        const number = Number(String.fromCodePoint(...context).match(/(\d+) 긍부정:$/)![1]);
        const positive = String.fromCodePoint(...continuation) === ' 긍정';
        return positive === (number % 2 === 0) ? -1 : -2;
      },
    });
    const report = await runKobest(engine, { dir, tasks: ['sentineg'], split: 'validation' });
    const [result] = report.results;
    expect(result!.n).toBe(9);
    expect(result!.documents.every((document) => document.pred === 1 - document.gold)).toBe(true);
    expect(result!.documents[0]!.logLikelihoods).toHaveLength(2);
    expect(result!.acc).toBe(0);
    expect(result!.macro_f1).toBe(0);
    expect(result!.acc_norm).toBeUndefined();
  });

  it('runs each shot count with a fresh Random(42), few-shot examples from train, and reports progress', async () => {
    const engine = fakeKobestEngine({ contextLength: 4096 });
    const progress: KobestProgress[] = [];
    const report = await runKobest(engine, {
      dir,
      tasks: ['copa', 'sentineg'],
      shots: [0, 2],
      split: 'validation',
      limit: 4,
      onProgress: (update) => progress.push(update),
    });
    expect(report.results.map((result) => [result.task, result.shots, result.n])).toEqual([
      ['copa', 0, 4],
      ['copa', 2, 4],
      ['sentineg', 0, 4],
      ['sentineg', 2, 4],
    ]);
    const plan = planKobest({ documentCount: 9, trainCount: 12, shots: 2, limit: 4 });
    const twoShot = report.results[1]!;
    expect(twoShot.documents.map((document) => document.idx)).toEqual(plan.order);
    expect(twoShot.documents.map((document) => document.fewshotIdx)).toEqual(plan.fewshot);
    expect(report.results[0]!.documents.map((document) => document.idx)).toEqual(plan.order);
    expect(progress.filter((update) => update.task === 'copa' && update.shots === 2).map((update) => update.done)).toEqual([1, 2, 3, 4]);
    expect(progress.every((update) => update.total === 4)).toBe(true);
  });

  it('left-truncates as (context + continuation)[-(max_length + 1):], grouping continuations by the context they keep', async () => {
    const engine = fakeKobestEngine({ contextLength: 4096 });
    const maxLength = 30;
    const report = await runKobest(engine, { dir, tasks: ['copa'], split: 'validation', shots: [2], limit: 2, maxLength });
    const [result] = report.results;
    expect(result!.truncated).toBe(2);
    // COPA's two alternatives differ in length, so each document needs two calls with different context tails.
    expect(engine.calls).toHaveLength(4);
    for (const call of engine.calls) {
      expect(call.continuations).toHaveLength(1);
      expect(call.context.length + call.continuations[0]!.length).toBe(maxLength + 1);
    }
    // The kept context is the *tail* of the full prompt.
    const requests = buildKobestRequests({
      task: 'copa',
      documents: (await loadKobestSplit(dir, 'copa', 'validation')).documents,
      train: (await loadKobestSplit(dir, 'copa', 'train')).documents,
      shots: 2,
      limit: 2,
    });
    const prompt = codePointTokenize(requests[0]!.context);
    const [first, second] = engine.calls as [RecordedCall, RecordedCall];
    expect([...first.context]).toEqual([...prompt.subarray(prompt.length - first.context.length)]);
    expect([...second.context]).toEqual([...prompt.subarray(prompt.length - second.context.length)]);
    expect(first.context.length).not.toBe(second.context.length);
    expect(keptContextLength(100, 5, maxLength)).toBe(26);
    expect(keptContextLength(10, 5, maxLength)).toBe(10);
  });

  it('refuses a continuation longer than max_length with a LIMIT error', async () => {
    const engine = fakeKobestEngine({ contextLength: 4 });
    await expect(runKobest(engine, { dir, tasks: ['copa'], split: 'validation' })).rejects.toMatchObject({
      code: ERROR_CODES.LIMIT,
    });
  });

  it('reports HellaSwag acc_norm from log-likelihood per character of the ending', async () => {
    const root = join(scratch, 'hellaswag');
    mkdirSync(join(root, 'hellaswag'), { recursive: true });
    const record = { context: '문맥', ending_1: '가', ending_2: '가나다라', ending_3: '가나', ending_4: '가나다', label: 1 };
    writeFileSync(join(root, 'hellaswag', 'validation.jsonl'), `${JSON.stringify(record)}\n`);
    // Scores −(1 + characters): raw argmax is the shortest ending (0); per character, the longest (1) wins.
    const engine = fakeKobestEngine({ contextLength: 4096, score: (_context, continuation) => -continuation.length });
    const report = await runKobest(engine, { dir: root, tasks: ['hellaswag'], split: 'validation' });
    const [result] = report.results;
    expect(result!.documents[0]).toMatchObject({ gold: 1, pred: 0, predNorm: 1, logLikelihoods: [-2, -5, -3, -4] });
    expect(result!.acc).toBe(0);
    expect(result!.acc_norm).toBe(1);
    expect(KOBEST_TASKS.hellaswag.normalizationTexts!({ ...record, idx: 0, id: null })).toEqual(['가', '가나다라', '가나', '가나다']);
  });

  it('rejects an unknown task, a bad shot count and a missing folder with PolyquantErrors', async () => {
    const engine = fakeKobestEngine({ contextLength: 4096 });
    await expect(runKobest(engine, { dir, tasks: ['kobest_copa' as 'copa'] })).rejects.toMatchObject({
      code: ERROR_CODES.USAGE,
    });
    await expect(runKobest(engine, { dir, tasks: ['copa'], shots: [-1] })).rejects.toMatchObject({ code: ERROR_CODES.USAGE });
    const missing = join(scratch, 'nowhere');
    const error = await runKobest(engine, { dir: missing, tasks: ['copa'] }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(PolyquantError);
    expect((error as PolyquantError).code).toBe(ERROR_CODES.NOT_FOUND);
    expect((error as PolyquantError).message).toContain(join(missing, 'copa', 'test.jsonl'));
  });
});

describe.skipIf(!HAS_SHARED)('runKobest against the reference fixture (validation, --limit 200, 0/5-shot)', () => {
  it('visits the reference documents in order and reproduces acc, macro_f1 and acc_norm from its scores', async () => {
    const reference = loadKobestReference();
    const { tasks, shots } = referenceRuns(reference);
    expect(tasks).toEqual(['boolq', 'copa', 'hellaswag', 'sentineg', 'wic']);
    expect(shots).toEqual([0, 5]);
    const engine = replayKobestEngine(reference);
    const report = await runKobest(engine, { dir: KOBEST_DATA_DIR, tasks, shots, split: 'validation', limit: reference.limit });
    expect(engine.remaining()).toBe(0);
    const comparison = compareWithReference(report, reference, { tolerance: 0 });
    expect(comparison.mismatches).toEqual([]);
    expect(comparison.maxAbsDifference).toBe(0);
    for (const result of report.results) {
      const expected = reference.tasks[`${result.task}/${result.shots}shot`]!;
      expect(result.acc).toBe(expected.acc);
      expect(result.macro_f1).toBe(expected.macro_f1);
      if (expected.acc_norm !== undefined) expect(result.acc_norm).toBe(expected.acc_norm);
    }
  });

  it('flags a document order, a score or a prediction that differs from the reference', async () => {
    const reference = loadKobestReference();
    const { tasks, shots } = referenceRuns(reference);
    const report = await runKobest(replayKobestEngine(reference), {
      dir: KOBEST_DATA_DIR,
      tasks,
      shots,
      split: 'validation',
      limit: reference.limit,
    });
    const results = report.results.map((result) => ({ ...result, documents: [...result.documents] }));
    // Nudge one score past the tolerance, and swap two documents of another task.
    const copa = results.find((result) => result.task === 'copa' && result.shots === 0)!;
    const document = copa.documents[3]!;
    copa.documents[3] = { ...document, logLikelihoods: document.logLikelihoods.map((value, index) => (index === 0 ? value + 1 : value)) };
    const wic = results.find((result) => result.task === 'wic' && result.shots === 5)!;
    [wic.documents[0], wic.documents[1]] = [wic.documents[1]!, wic.documents[0]!];
    const comparison = compareWithReference({ ...report, results }, reference);
    expect(comparison.maxAbsDifference).toBeCloseTo(1, 6);
    expect(comparison.mismatches.some((line) => line.startsWith('copa/0shot: document 3'))).toBe(true);
    expect(comparison.mismatches.some((line) => line.startsWith('wic/5shot: document 0 is idx'))).toBe(true);
  });
});
