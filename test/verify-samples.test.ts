/**
 * `verify --log-samples FILE` and the lm-eval `results` block (issue #15 item 6): per-document KOBEST
 * records of both models as JSON Lines, and the candidate's numbers in lm-evaluation-harness's results
 * shape, from a real run of polyglot-ko-tiny against a simulated Q4_0 of itself.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { KOBEST_SAMPLE_SCHEMA, type KobestSampleRecord } from '../src/verify/kobest/samples.js';
import { argmax } from '../src/verify/kobest/metrics.js';
import type { VerifyReport } from '../src/verify/report.js';
import { runCli } from './helpers/cli.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, REPO_ROOT, sharedPath } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir();
afterAll(() => scratch.remove());

describe.skipIf(!HAS_SHARED)('verify --log-samples on polyglot-ko-tiny', () => {
  it('writes one record per document and shot count with both models\' log-likelihoods, and lm-eval\'s results block', async () => {
    const json = join(scratch.path, 'report.json');
    const samples = join(scratch.path, 'samples.jsonl');
    const run = await runCli(
      'verify', POLYGLOT_TINY_DIR, '--baseline', POLYGLOT_TINY_DIR, '--simulate', 'q4_0',
      '--kobest', sharedPath('data', 'kobest'), '--tasks', 'copa', '--split', 'validation', '--limit', '12', '--shots', '0,1',
      '--json', json, '--log-samples', samples,
    );
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(readFileSync(json, 'utf8')) as VerifyReport;
    const records = readFileSync(samples, 'utf8').trimEnd().split('\n').map((line) => JSON.parse(line) as KobestSampleRecord);
    expect(records).toHaveLength(24);
    for (const [shots, section] of [[0, report.kobest[0]], [1, report.kobest[1]]] as const) {
      const mine = records.filter((record) => record.shots === shots);
      expect(mine.map((record) => record.doc_id)).toEqual(Array.from({ length: 12 }, (_, i) => i));
      // The records are what the report counted: predictions are the argmax of the logged log-likelihoods.
      for (const record of mine) {
        expect(record).toMatchObject({ schema: KOBEST_SAMPLE_SCHEMA, task: 'kobest_copa', split: 'validation' });
        expect(record.choices).toHaveLength(2);
        expect(record.baseline.pred).toBe(argmax(record.baseline.loglikelihoods as number[]));
        expect(record.candidate.pred).toBe(argmax(record.candidate.loglikelihoods as number[]));
        expect(record.baseline.correct).toBe(record.baseline.pred === record.gold);
        // COPA's context ends with its connector ("because" / "so"), the prompt the harness protocol builds.
        expect(record.context).toMatch(/ (왜냐하면|그래서)$/);
        expect(record.fewshot_idx).toHaveLength(shots);
        expect(record.context.split('\n\n')).toHaveLength(shots + 1);
      }
      expect(mine.filter((record) => record.changed)).toHaveLength(section?.comparison.flips ?? -1);
      expect(mine.filter((record) => record.candidate.correct).length / 12).toBe(section?.candidate.acc);
    }
    // The candidate's numbers as lm-evaluation-harness writes them.
    expect(Object.keys(report.results)).toEqual(['kobest_copa_0shot', 'kobest_copa_1shot']);
    expect(report.results['kobest_copa_1shot']).toMatchObject({
      alias: 'kobest_copa (1-shot)',
      'acc,none': report.kobest[1]?.candidate.acc,
      'acc_stderr,none': report.kobest[1]?.candidate.acc_stderr,
      'macro_f1,none': report.kobest[1]?.candidate.macro_f1,
    });
    expect(report['n-shot']).toEqual({ kobest_copa_0shot: 0, kobest_copa_1shot: 1 });
    expect(report['n-samples']['kobest_copa_0shot']).toEqual({ original: report.kobest[0]?.split_documents, effective: 12 });
    expect(report.versions).toEqual({ kobest_copa_0shot: 0, kobest_copa_1shot: 0 });
  });
});

describe('verify --log-samples refusals', () => {
  it('exits 2 when there is no KOBEST run to log, before any model loads', async () => {
    const out = join(scratch.path, 'never.jsonl');
    const run = await runCli('verify', join(REPO_ROOT, 'fixtures', 'tiny-neox'), '--baseline', join(REPO_ROOT, 'fixtures', 'tiny-neox'), '--ppl', join(REPO_ROOT, 'README.md'), '--log-samples', out);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--log-samples');
    expect(existsSync(out)).toBe(false);
  });
});
