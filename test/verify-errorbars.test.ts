/**
 * Error bars as llama-perplexity and lm-evaluation-harness print them (issue #15 item 4): the statistics
 * against independent implementations of the upstream formulas (llama.cpp's running sums, lm-eval's
 * bootstrap in CPython), and the report of real verify runs on the bundled tiny model and polyglot-ko-tiny.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compareKobest, kobestSection, macroF1Bootstrap, NO_CHANGE_NOTE } from '../src/verify/compare-kobest.js';
import type { KobestTaskResult } from '../src/verify/kobest/index.js';
import { macroF1 } from '../src/verify/kobest/metrics.js';
import { PythonRandom } from '../src/verify/python-random.js';
import { comparisonSection, lmEvalBlock, type VerifyReport } from '../src/verify/report.js';
import { DistributionComparer, meanAndStderr, percentile } from '../src/verify/stats.js';
import { runCli } from './helpers/cli.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, REPO_ROOT, sharedPath } from './helpers/shared.js';
import { sampleTextContent } from './helpers/sweep.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir();
afterAll(() => scratch.remove());
const TINY = join(REPO_ROOT, 'fixtures', 'tiny-neox');

/** llama.cpp's mean_and_uncertainty and covariance, from running sums (tools/perplexity/perplexity.cpp). */
function llamaSums(base: number[], cand: number[]) {
  const n = base.length;
  let sb = 0;
  let sb2 = 0;
  let sc = 0;
  let sc2 = 0;
  let sbc = 0;
  for (let i = 0; i < n; i += 1) {
    const b = base[i] as number;
    const c = cand[i] as number;
    sb += b;
    sb2 += b * b;
    sc += c;
    sc2 += c * c;
    sbc += b * c;
  }
  const meanAndUncertainty = (sum: number, sum2: number) => {
    const f = sum / n;
    const df = sum2 / n - f * f;
    return [f, df > 0 && n > 10 ? Math.sqrt(df / (n - 1)) : 0] as const;
  };
  const [mb, ub] = meanAndUncertainty(sb, sb2);
  const [mc, uc] = meanAndUncertainty(sc, sc2);
  const cov = (sbc / n - (sb / n) * (sc / n)) / (n - 1);
  return { mb, ub, mc, uc, cov };
}

/** llama.cpp's percentile lambda over sorted values. */
function llamaPercentile(sorted: number[], fraction: number): number {
  if (fraction <= 0) return sorted[0] as number;
  if (fraction >= 1) return sorted[sorted.length - 1] as number;
  let p = fraction * (sorted.length - 1);
  const ip = Math.floor(p);
  p -= ip;
  return (1 - p) * (sorted[ip] as number) + p * (sorted[Math.min(ip + 1, sorted.length - 1)] as number);
}

const close = (actual: number, expected: number, relative = 1e-9): void => {
  expect(Math.abs(actual - expected), `${actual} vs ${expected}`).toBeLessThanOrEqual(relative * Math.max(Math.abs(expected), 1e-12));
};

describe('llama-perplexity statistics', () => {
  const random = new PythonRandom(7);
  const n = 5000;
  // Per-position NLLs of a baseline and a slightly worse, correlated candidate; KLDs; argmax agreement.
  const base = Array.from({ length: n }, () => -Math.log(0.02 + 0.96 * random.random()));
  const cand = base.map((value) => Math.max(0, value + 0.05 * (random.random() - 0.45)));
  const klds = Array.from({ length: n }, () => 0.01 * random.random() ** 3);
  const baseArgmax = Int32Array.from({ length: n }, (_, i) => i % 7);
  const candArgmax = Int32Array.from({ length: n }, (_, i) => (i % 19 === 0 ? 99 : i % 7));
  const comparer = new DistributionComparer();
  // Two windows, as verify feeds them.
  for (const [from, to] of [[0, 3000], [3000, n]] as const) {
    comparer.addKlds(klds.slice(from, to), baseArgmax.slice(from, to), candArgmax.slice(from, to));
    comparer.addTargets(base.slice(from, to).map((value) => -value), cand.slice(from, to).map((value) => -value));
  }
  const result = comparer.result(n);
  const section = comparisonSection(result, true, (Math.exp(result.nll!.candidate.value - result.nll!.baseline.value) - 1) * 100);
  const sums = llamaSums(base, cand);

  it('gives PPL ± and the PPL ratio, its log and difference ± as llama.cpp computes them from running sums', () => {
    close(result.nll!.baseline.value, sums.mb, 1e-12);
    close(result.nll!.baseline.stderr, sums.ub, 1e-6);
    close(result.nll!.candidate.stderr, sums.uc, 1e-6);
    const lnRatio = sums.mc - sums.mb;
    const lnRatioStderr = Math.sqrt(sums.uc ** 2 + sums.ub ** 2 - 2 * sums.cov);
    close(section.ln_ppl_ratio.value, lnRatio, 1e-9);
    close(section.ln_ppl_ratio.stderr, lnRatioStderr, 1e-5);
    close(section.ppl_ratio.value, Math.exp(lnRatio), 1e-12);
    close(section.ppl_ratio.stderr, Math.exp(lnRatio) * lnRatioStderr, 1e-5);
    close(section.delta_ppl_pct_stderr, 100 * section.ppl_ratio.stderr, 1e-12);
    const pplQ = Math.exp(sums.mc);
    const pplB = Math.exp(sums.mb);
    close(section.delta_ppl.value, pplQ - pplB, 1e-9);
    close(section.delta_ppl.stderr, Math.sqrt((pplQ * sums.uc) ** 2 + (pplB * sums.ub) ** 2 - 2 * pplQ * pplB * sums.cov), 1e-5);
    close(section.ln_ppl_correlation, sums.cov / (sums.ub * sums.uc), 1e-6);
  });

  it('gives mean KLD ±, its percentiles, Δp statistics and same top p as llama.cpp prints them', () => {
    const kld = section.kld!;
    const kldSums = llamaSums(klds, klds);
    close(kld.mean, kldSums.mb, 1e-12);
    close(kld.mean_stderr, kldSums.ub, 1e-6);
    const sorted = [...klds].sort((a, b) => a - b);
    for (const [name, fraction] of [['p99_9', 0.999], ['p99', 0.99], ['p95', 0.95], ['p90', 0.9], ['p50', 0.5], ['p10', 0.1], ['p5', 0.05], ['p1', 0.01]] as const) {
      close(kld.percentiles[name], llamaPercentile(sorted, fraction), 1e-12);
    }
    // llama.cpp's median: the mean of the two middle values for an even count.
    close(kld.median, ((sorted[n / 2] as number) + (sorted[n / 2 - 1] as number)) / 2, 1e-12);
    expect([kld.max, kld.min]).toEqual([sorted[n - 1], sorted[0]]);
    const deltaP = cand.map((c, i) => Math.exp(-c) - Math.exp(-(base[i] as number)));
    const dp = llamaSums(deltaP, deltaP);
    close(section.delta_p!.mean, dp.mb, 1e-9);
    close(section.delta_p!.mean_stderr, dp.ub, 1e-6);
    const squares = deltaP.map((value) => value * value);
    const sq = llamaSums(squares, squares);
    close(section.delta_p!.rms, Math.sqrt(sq.mb), 1e-9);
    close(section.delta_p!.rms_stderr, (0.5 / Math.sqrt(sq.mb)) * sq.ub, 1e-6);
    const sortedDp = [...deltaP].sort((a, b) => a - b);
    close(section.delta_p!.percentiles.p90, llamaPercentile(sortedDp, 0.9), 1e-12);
    const same = Array.from(baseArgmax).filter((value, i) => value === candArgmax[i]).length / n;
    close(section.same_top_p.value, same, 1e-15);
    close(section.same_top_p.stderr, Math.sqrt((same * (1 - same)) / (n - 1)), 1e-12);
  });

  it('reports exactly zero uncertainty for a model compared with itself, and NaN (null) below two positions', () => {
    const self = new DistributionComparer();
    self.addKlds([0, 0, 0], Int32Array.of(1, 2, 3), Int32Array.of(1, 2, 3));
    self.addTargets([-1.5, -0.2, -3], [-1.5, -0.2, -3]);
    const same = comparisonSection(self.result(3), true, 0);
    expect([same.ln_ppl_ratio, same.ppl_ratio, same.delta_ppl]).toEqual([{ value: 0, stderr: 0 }, { value: 1, stderr: 0 }, { value: 0, stderr: 0 }]);
    expect([same.delta_p?.rms, same.delta_p?.rms_stderr, same.kld?.mean_stderr, same.same_top_p.stderr]).toEqual([0, 0, 0, 0]);
    expect(meanAndStderr([4]).stderr).toBeNaN();
    expect(percentile([1, 2, 3, 4], 0.5)).toBe(2.5);
  });

  it('keeps Δp and the PPL ratio without full distributions (--no-kld), with kld null', () => {
    const partial = new DistributionComparer();
    partial.addArgmax(Int32Array.of(1, 2), Int32Array.of(1, 3));
    partial.addTargets([-1, -2], [-1.1, -1.9]);
    const without = comparisonSection(partial.result(2), false, 0);
    expect(without.kld).toBeNull();
    expect(without.delta_p?.mean).toBeCloseTo((Math.exp(-1.1) - Math.exp(-1) + Math.exp(-1.9) - Math.exp(-2)) / 2, 12);
    expect(without.same_top_p.value).toBe(0.5);
  });
});

/** A KOBEST task result from golds and predictions (the runner's shape; only what the statistics read). */
function taskResult(golds: number[], preds: number[], task = 'copa'): KobestTaskResult {
  const acc = golds.filter((gold, i) => gold === preds[i]).length / golds.length;
  return {
    task: task as 'copa',
    harnessName: `kobest_${task}` as 'kobest_copa',
    shots: 0,
    split: 'test',
    file: 'test.jsonl',
    splitDocuments: golds.length + 10,
    n: golds.length,
    acc,
    acc_stderr: Math.sqrt((acc * (1 - acc)) / (golds.length - 1)),
    macro_f1: macroF1(golds, preds),
    truncated: 0,
    documents: golds.map((gold, index) => ({ index, idx: index, gold, pred: preds[index] as number, logLikelihoods: [0, 0], fewshotIdx: [], truncated: false })),
  };
}

/** lm-evaluation-harness's bootstrap_stderr and sample_stddev (lm_eval/metrics.py) with sklearn's macro-F1, in CPython. */
const LM_EVAL_BOOTSTRAP = `
import json, math, random, sys
golds, preds, iters = json.load(sys.stdin)
def macro_f1(items):
    g = [x[0] for x in items]; p = [x[1] for x in items]
    labels = sorted(set(g) | set(p)); total = 0.0
    for label in labels:
        tp = sum(1 for a, b in zip(g, p) if a == label and b == label)
        fp = sum(1 for a, b in zip(g, p) if a != label and b == label)
        fn = sum(1 for a, b in zip(g, p) if a == label and b != label)
        prec = 0.0 if tp + fp == 0 else tp / (tp + fp)
        rec = 0.0 if tp + fn == 0 else tp / (tp + fn)
        total += 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)
    return total / len(labels)
xs = list(zip(golds, preds)); res = []; chunk = min(1000, iters)
for i in range(iters // chunk):
    rnd = random.Random(); rnd.seed(i)
    for _ in range(chunk):
        res.append(macro_f1(rnd.choices(xs, k=len(xs))))
mu = sum(res) / len(res)
print(json.dumps(math.sqrt(sum([(x - mu) ** 2 for x in res]) / (len(res) - 1))))
`;
const HAS_PYTHON = spawnSync('python3', ['--version']).status === 0;

describe('KOBEST uncertainties as lm-evaluation-harness reports them', () => {
  const random = new PythonRandom(11);
  const golds = Array.from({ length: 60 }, () => random.randbelow(4));
  const preds = golds.map((gold) => (random.random() < 0.6 ? gold : random.randbelow(4)));

  it.skipIf(!HAS_PYTHON)("bootstraps macro-F1's stderr with the harness's own resamples (CPython's Random(i).choices)", () => {
    const python = spawnSync('python3', ['-c', LM_EVAL_BOOTSTRAP], { input: JSON.stringify([golds, preds, 2000]), encoding: 'utf8' });
    expect(python.status, python.stderr).toBe(0);
    const expected = JSON.parse(python.stdout) as number;
    const ours = macroF1Bootstrap(golds, preds, 2000);
    close(ours.stderr, expected, 1e-12);
    expect(ours.ci.low).toBeLessThan(macroF1(golds, preds));
    expect(ours.ci.high).toBeGreaterThan(macroF1(golds, preds));
  });

  it('gives each model acc ± mean_stderr and macro-F1 ± bootstrap stderr with its interval, and says when no document changed', () => {
    const section = kobestSection(taskResult(golds, preds), taskResult(golds, preds), { bootstrapIterations: 1000 });
    expect(section.baseline.acc_stderr).toBeCloseTo(Math.sqrt((section.baseline.acc * (1 - section.baseline.acc)) / 59), 12);
    expect(section.baseline.macro_f1_stderr).toBe(macroF1Bootstrap(golds, preds, 1000).stderr);
    expect(section.comparison.flips).toBe(0);
    expect(section.comparison.delta_acc_ci).toMatchObject({ low: 0, high: 0 });
    expect(section.comparison.ci_note).toBe(NO_CHANGE_NOTE);
    const flipped = preds.map((pred, i) => (i < 6 ? (pred + 1) % 4 : pred));
    const changed = compareKobest(taskResult(golds, preds), taskResult(golds, flipped));
    expect(changed.flips).toBe(6);
    expect(changed.ci_note).toBeNull();
    expect(macroF1Bootstrap(golds, preds, 0).stderr).toBeNaN();
  });

  it("writes the candidate's numbers as lm-eval's results JSON, one key per task (and per shot count when several)", () => {
    const section = kobestSection(taskResult(golds, preds), taskResult(golds, preds), { bootstrapIterations: 1000 });
    const block = lmEvalBlock([section, { ...section, shots: 5 }]);
    expect(Object.keys(block.results)).toEqual(['kobest_copa_0shot', 'kobest_copa_5shot']);
    expect(block.results['kobest_copa_5shot']).toMatchObject({
      alias: 'kobest_copa (5-shot)',
      'acc,none': section.candidate.acc,
      'acc_stderr,none': section.candidate.acc_stderr,
      'macro_f1,none': section.candidate.macro_f1,
      'f1,none': section.candidate.macro_f1,
    });
    expect(block['n-shot']).toEqual({ kobest_copa_0shot: 0, kobest_copa_5shot: 5 });
    expect(block['n-samples']['kobest_copa_0shot']).toEqual({ original: 70, effective: 60 });
    expect(block.configs['kobest_copa_0shot']).toMatchObject({ dataset_path: 'skt/kobest_v1', dataset_name: 'copa', num_fewshot: 0 });
    expect(Object.keys(lmEvalBlock([section]).results)).toEqual(['kobest_copa']);
  });
});

function sampleText(): string {
  const path = join(scratch.path, 'sample.txt');
  writeFileSync(path, sampleTextContent());
  return path;
}

describe('error bars in verify reports', () => {
  it('reports PPL ±, ΔPPL ±, the KLD distribution, Δp and same-top-p for a simulated Q4_0 candidate, in JSON, text and Markdown', async () => {
    const json = join(scratch.path, 'q4.json');
    const markdown = join(scratch.path, 'q4.md');
    const run = await runCli('verify', TINY, '--baseline', TINY, '--simulate', 'Q4_0', '--ppl', sampleText(), '--ctx', '64', '--threads', '1', '--json', json, '--markdown', markdown);
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(readFileSync(json, 'utf8')) as VerifyReport;
    const [section] = report.perplexity;
    const c = section!.comparison;
    expect(section!.baseline.ppl_stderr).toBeGreaterThan(0);
    expect(section!.candidate.ppl_stderr).toBeLessThan(section!.candidate.ppl / 10);
    close(c.ppl_ratio.value, 1 + c.delta_ppl_pct / 100, 1e-9);
    close(c.delta_ppl_pct_stderr, 100 * c.ppl_ratio.stderr, 1e-12);
    expect(c.ln_ppl_ratio.stderr).toBeGreaterThan(0);
    const p = c.kld!.percentiles;
    expect([c.kld!.min, p.p1, p.p5, p.p10, p.p50, p.p90, p.p95, p.p99, p.p99_9, c.kld!.max]).toEqual(
      [c.kld!.min, p.p1, p.p5, p.p10, p.p50, p.p90, p.p95, p.p99, p.p99_9, c.kld!.max].slice().sort((a, b) => a - b),
    );
    expect(c.kld!.median).toBe(p.p50);
    expect(c.kld!.mean_stderr).toBeGreaterThan(0);
    expect(c.delta_p!.rms).toBeGreaterThan(0);
    expect(c.same_top_p.value).toBe(c.top1_agreement);
    expect(c.same_top_p.stderr).toBeCloseTo(Math.sqrt((c.top1_agreement * (1 - c.top1_agreement)) / (c.positions - 1)), 12);
    expect(run.stdout).toMatch(/Mean PPL\(Q\)\/PPL\(base\)\s+: 1\.\d{6} ± 0\.\d{6}/);
    expect(run.stdout).toMatch(/KLD max \/ 99\.9% \/ 99% \/ 95% \/ 90%/);
    expect(run.stdout).toContain('Same top p');
    expect(readFileSync(markdown, 'utf8')).toContain('| Mean ln(PPL(Q)/PPL(base)) |');
  });

  it.skipIf(!HAS_SHARED)('reports KOBEST acc ± stderr and macro-F1 ± stderr, and says "no document changed" for a model against itself', async () => {
    const json = join(scratch.path, 'kobest-self.json');
    const run = await runCli('verify', POLYGLOT_TINY_DIR, '--baseline', POLYGLOT_TINY_DIR, '--kobest', sharedPath('data', 'kobest'), '--tasks', 'copa', '--split', 'validation', '--limit', '16', '--json', json);
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(readFileSync(json, 'utf8')) as VerifyReport;
    const [section] = report.kobest;
    expect(section!.baseline.acc_stderr).toBeGreaterThan(0);
    expect(section!.baseline.macro_f1_stderr).toBeGreaterThan(0);
    expect(section!.baseline.macro_f1_ci.low).toBeLessThanOrEqual(section!.baseline.macro_f1);
    expect(section!.comparison.ci_note).toBe(NO_CHANGE_NOTE);
    expect(run.stdout).toContain('(no document changed)');
    expect(run.stdout).not.toContain('[+0.0, +0.0]');
  });
});
