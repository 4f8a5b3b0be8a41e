/**
 * Thresholds with one meaning (issue #15 item 7) at the command line: units on every threshold flag,
 * ambiguous bare numbers refused before any model loads, the check table in a notation that shows small
 * limits, "nothing was gated" said in words, and --require-gates turning that into exit 2 for CI.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import type { VerifyReport } from '../src/verify/report.js';
import { runCli } from './helpers/cli.js';
import { REPO_ROOT } from './helpers/shared.js';
import { sampleTextContent } from './helpers/sweep.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir();
afterAll(() => scratch.remove());
const TINY = join(REPO_ROOT, 'fixtures', 'tiny-neox');
const text = join(scratch.path, 'sample.txt');
writeFileSync(text, sampleTextContent());
/** A command's --help (yargs writes it with console.log). */
async function helpText(command: string): Promise<string> {
  const log = vi.spyOn(console, 'log').mockImplementation(() => {});
  try {
    await runCli(command, '--help');
    // yargs wraps descriptions to the terminal: compare with whitespace collapsed.
    return log.mock.calls.map((call) => call.join(' ')).join(' ').replace(/\s+/g, ' ');
  } finally {
    log.mockRestore();
  }
}
const quick = ['--ppl', text, '--ctx', '64', '--max-windows', '3', '--threads', '1'];

describe('verify thresholds at the command line', () => {
  it('refuses an ambiguous bare --max-ppl-increase before loading anything, naming both spellings', async () => {
    const run = await runCli('verify', TINY, '--baseline', TINY, ...quick, '--max-ppl-increase', '0.05');
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--max-ppl-increase 0.05 is ambiguous');
    expect(run.stderr).toContain('0.05% or 5%');
    expect(run.stdout).toBe('');
  });

  it('says plainly that nothing was gated when no threshold is given, in text, Markdown and JSON', async () => {
    const json = join(scratch.path, 'ungated.json');
    const markdown = join(scratch.path, 'ungated.md');
    const run = await runCli('verify', TINY, '--baseline', TINY, ...quick, '--json', json, '--markdown', markdown);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^NOT GATED: no threshold was given, so nothing was checked/m);
    expect(run.stdout).toContain('--require-gates');
    expect(readFileSync(markdown, 'utf8')).toContain('## polyquant verify: NOT GATED');
    const report = JSON.parse(readFileSync(json, 'utf8')) as VerifyReport;
    expect([report.gated, report.verdict, report.checks]).toEqual([false, 'pass', []]);
  });

  it('--require-gates exits 2 before any model loads when nothing would be gated', async () => {
    const none = await runCli('verify', TINY, '--baseline', TINY, ...quick, '--require-gates');
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('--require-gates: no threshold was given');
    expect(none.stdout).toBe('');
    const inapplicable = await runCli('verify', TINY, '--baseline', TINY, ...quick, '--require-gates', '--max-acc-drop', '2pp', '--no-kld', '--max-kld', '0.1');
    expect(inapplicable.code).toBe(2);
    expect(inapplicable.stderr).toMatch(/none of the thresholds given applies .*--max-kld, --max-acc-drop/);
  });

  it('gates with units and prints small limits visibly, with --require-gates satisfied', async () => {
    const json = join(scratch.path, 'gated.json');
    const run = await runCli('verify', TINY, '--baseline', TINY, '--simulate', 'Q4_0', ...quick, '--require-gates', '--max-ppl-increase', '50%', '--max-kld', '1e-7', '--min-top1', '0.5', '--json', json);
    expect(run.code).toBe(1);
    const report = JSON.parse(readFileSync(json, 'utf8')) as VerifyReport & { thresholds: Record<string, number> };
    expect(report.gated).toBe(true);
    expect(report.thresholds).toEqual({ max_ppl_increase_pct: 50, max_kld: 1e-7, min_top1: 0.5 });
    expect(report.checks.map((check) => [check.metric, check.unit, check.passed])).toEqual([
      ['ppl_increase_pct', 'percent', true],
      ['mean_kld', 'nats', false],
      ['top1_agreement', 'fraction', true],
    ]);
    // The limit 1e-7 is shown as such, never as 0.000000.
    expect(run.stdout).toMatch(/FAIL +ppl \S+ +mean_kld +\d\.\d+e-\d +≤ 1e-7/);
    expect(run.stdout).toMatch(/pass +ppl \S+ +ppl_increase_pct +[+-]?[\d.e-]+ % +≤ 50 %/);
    expect(run.stdout).toMatch(/pass +ppl \S+ +top1_agreement +[\d.]+ % +≥ 50 %/);
    expect(run.stdout).toContain('FAIL: 1 of 3 checks failed');
  });

  it('documents the bare-number unit of every threshold flag in verify --help and sweep --help', async () => {
    const help = { stdout: await helpText('verify') };
    expect(help.stdout).toContain('a bare number is a percentage: 3 = 3 %');
    expect(help.stdout).toContain('a bare number is a fraction: 0.02 = 2 points');
    expect(help.stdout).toContain('--require-gates');
    const sweep = { stdout: await helpText('sweep') };
    expect(sweep.stdout).toContain('a bare number is a fraction: 0.9 = 90 %');
    const refused = await runCli('sweep', TINY, '--out', join(scratch.path, 'sweep'), '--types', 'q8_0', '--ppl', text, '--require-gates');
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('--require-gates');
  });
});
