/**
 * `verify --html`: the report as one self-contained page (src/verify/html.ts). The main test verifies a
 * q4_k_m GGUF of polyglot-ko-tiny against the HF fixture through the CLI (perplexity on Korean text, two
 * KOBEST tasks, one threshold), opens the page offline in Debian's headless Chromium and holds it to the
 * JSON report written by the same run: the summary tables carry its numbers, every chart has one mark per
 * window / quantile / task and draws them where the numbers say, nothing is requested and nothing is logged.
 * The screenshot goes to bench/out/verify-html.png (gitignored); POLYQUANT_UPDATE_DOCS=1 also writes
 * docs/verify-html.png, the README's picture.
 *
 * Skips, saying why, without ../shared or Chromium; the rendering checks on a hand-made report run anyway.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToGguf } from '../src/converters/gguf/convert.js';
import { renderVerifyHtml, type VerifyPageReport } from '../src/verify/html.js';
import type { VerifyReport } from '../src/verify/report.js';
import { runCli } from './helpers/cli.js';
import { HAS_CHROMIUM, NO_CHROMIUM_REASON, type OpenedPage, openHtmlFile } from './helpers/html-page.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, REPO_ROOT, sharedPath } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-verify-html-');
afterAll(() => scratch.remove());
const TINY_NEOX = join(REPO_ROOT, 'fixtures', 'tiny-neox');

const skipReason = !HAS_SHARED ? 'no ../shared (the polyglot-ko-tiny fixture and the KOBEST data)' : !HAS_CHROMIUM ? NO_CHROMIUM_REASON : undefined;
if (skipReason !== undefined) console.warn(`verify --html browser tests skipped: ${skipReason}`);

/** A small report as verify writes it, with markup in every string a user controls. */
function handMadeReport(): VerifyPageReport {
  const windows = [5.9, 6.4, 6.3, 5.7];
  return {
    schema: 'polyquant.verify/2',
    created: '2026-01-01T00:00:00.000Z',
    candidate: { path: '/models/<script>alert(1)</script>&q4.gguf', engine: 'llamacpp', device: 'cpu', threads: 2 },
    baseline: { path: '/models/"base" & <b>bold</b>', engine: 'reference', device: 'cpu' },
    perplexity: [
      {
        file: '/texts/<img src=x onerror=alert(1)>.txt',
        protocol: 'windows',
        ctx: 64,
        tokens: 300,
        baseline: { ppl: 400, ppl_stderr: 40, scored_tokens: 252, bits_per_byte: 2.1, window_nll: windows },
        candidate: { ppl: 401, ppl_stderr: 40, scored_tokens: 252, bits_per_byte: 2.11, window_nll: windows.map((nll, index) => nll + (index % 2 === 0 ? 0.004 : -0.002)) },
        comparison: {
          delta_ppl_pct: 0.25,
          delta_ppl_pct_stderr: 0.1,
          kld: { mean: 9e-4, mean_stderr: 4e-5, median: 6e-4, p99: 4e-3, max: 1.5e-2, percentiles: { p99_9: 1.3e-2, p99: 4e-3, p95: 2e-3, p90: 1.7e-3, p50: 6e-4, p10: 2.7e-4, p5: 2e-4, p1: 3e-5 } },
          delta_p: { mean: -3e-4, mean_stderr: 1e-4, rms: 4e-3, rms_stderr: 3e-4 },
          same_top_p: { value: 0.96, stderr: 0.007 },
          top1_agreement: 0.96,
          positions: 252,
        },
      },
    ],
    kobest: [
      {
        task: 'kobest_<copa>&',
        shots: 0,
        split: 'validation',
        baseline: { n: 24, acc: 0.5, acc_stderr: 0.1, macro_f1: 0.49, macro_f1_ci: { low: 0.3, high: 0.7 } },
        candidate: { n: 24, acc: 0.46, acc_stderr: 0.1, macro_f1: 0.45, macro_f1_ci: { low: 0.27, high: 0.66 } },
        comparison: {
          delta_acc: -0.04,
          delta_acc_ci: { low: -0.125, high: 0 },
          delta_macro_f1: -0.04,
          delta_macro_f1_ci: { low: -0.13, high: 0.01 },
          flips: 1,
          lost: 1,
          gained: 0,
          mcnemar_p: 1,
          ci_note: null,
        },
      },
    ],
    checks: [{ where: 'ppl <b>x</b>', metric: 'mean_kld', unit: 'nats', value: 9e-4, limit: 0.01, passed: true }],
    gated: true,
    verdict: 'pass',
  };
}

describe('the verify page, rendered without a browser', () => {
  it('escapes paths, task names and check names, and refers to nothing outside the file', async () => {
    const html = await renderVerifyHtml(handMadeReport());
    expect(html.startsWith('<!doctype html>')).toBe(true);
    // No element that runs or fetches anything, no attribute that points outside the page, no user markup.
    expect(html).not.toMatch(/<(script|img|link|iframe|object|embed|b)[\s>]/i);
    expect(html).not.toMatch(/<[^>]+\s(src|href|xlink:href)="(?!#)/);
    expect(html).not.toMatch(/@import|url\((?!#)/);
    expect(html).toContain('&lt;script&gt;alert(1)&lt;/script&gt;&amp;q4.gguf');
    expect(html).toContain('&quot;base&quot; &amp; &lt;b&gt;bold&lt;/b&gt;');
    // Vega escapes its own SVG text: the task name inside the KOBEST chart.
    expect(html).toContain('kobest_&lt;copa&gt;&amp; 0-shot');
    expect(html).toContain("default-src 'none'");
  });

  it('gives the same bytes for the same report, with ids that no two charts share', async () => {
    const report = handMadeReport();
    const first = await renderVerifyHtml(report);
    expect(await renderVerifyHtml(report)).toBe(first);
    const ids = [...first.matchAll(/ id="([^"]+)"/g)].map((match) => match[1]);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it('degrades to notes for a report without KOBEST, without KL divergence, without percentiles or stderrs', async () => {
    const full = handMadeReport();
    const [section] = full.perplexity;
    const bare: VerifyPageReport = {
      candidate: full.candidate,
      baseline: full.baseline,
      perplexity: [{ ...section!, comparison: { delta_ppl_pct: 0.25, kld: null, top1_agreement: 0.96 } }],
      kobest: [],
      checks: [],
      verdict: 'pass',
    };
    const html = await renderVerifyHtml(bare);
    expect(html).toContain('KL divergence was not measured (--no-kld).');
    expect(html).toContain('KOBEST was not run (--kobest).');
    expect(html).toContain('nothing was gated');
    expect(html).toContain('data-chart="window-nll"');
    expect(html).not.toContain('data-chart="kld"');
    // A verify/1 report: the median, p99 and max are drawn, and the caption says that is all there is.
    const old: VerifyPageReport = {
      ...bare,
      perplexity: [{ ...section!, comparison: { delta_ppl_pct: 0.25, kld: { mean: 9e-4, median: 6e-4, p99: 4e-3, max: 1.5e-2 }, top1_agreement: 0.96 } }],
    };
    const oldHtml = await renderVerifyHtml(old);
    expect(oldHtml).toContain('data-chart="kld" data-points="3"');
    expect(oldHtml).toContain('holds only the median, 99th percentile and maximum');
    // Read back from JSON, NaN is null: shown as a dash, never as "NaN" or "null".
    const nulls = JSON.parse(JSON.stringify({ ...full, perplexity: [{ ...section!, baseline: { ...section!.baseline, ppl: Number.NaN, ppl_stderr: Number.NaN } }] })) as VerifyPageReport;
    const nullHtml = await renderVerifyHtml(nulls);
    expect(nullHtml).not.toMatch(/>[^<]*(NaN|null)[^<]*</);
  });

  it('refuses an --html path in a missing folder, or naming an input, before loading any model (exit 2)', async () => {
    const missing = join(scratch.path, 'no-such-folder', 'report.html');
    const run = await runCli('verify', TINY_NEOX, '--baseline', TINY_NEOX, '--html', missing);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--html');
    expect(run.stderr).toContain('does not exist');
    const config = join(TINY_NEOX, 'config.json');
    const overwrite = await runCli('verify', TINY_NEOX, '--baseline', TINY_NEOX, '--html', config);
    expect(overwrite.code).toBe(2);
    expect(overwrite.stderr).toContain(`--html ${config} would overwrite`);
  });
});

/** The first number in a cell's text: "436.467 ± 57.219" → 436.467, "9.011e-4 ± 3.6e-5" → 9.011e-4. */
function leadingNumber(text: string): number {
  const match = /[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?/i.exec(text.replace('−', '-'));
  return match === null ? Number.NaN : Number(match[0]);
}

/** SVG translate(x,y) of each element matching a selector, in document (= data) order. */
async function translations(page: OpenedPage, selector: string): Promise<{ x: number; y: number }[]> {
  return page.tab.locator(selector).evaluateAll((elements) =>
    elements.map((element) => {
      const match = /translate\(([-\d.e]+),\s*([-\d.e]+)\)/.exec(element.getAttribute('transform') ?? '');
      return { x: Number(match?.[1]), y: Number(match?.[2]) };
    }),
  );
}

/** Width of each element's SVG bounding box, in document order. */
async function widths(page: OpenedPage, selector: string): Promise<number[]> {
  return page.tab.locator(selector).evaluateAll((elements) => elements.map((element) => (element as unknown as { getBBox(): { width: number } }).getBBox().width));
}

describe.skipIf(skipReason !== undefined)('verify --html for q4_k_m of polyglot-ko-tiny, in headless Chromium', () => {
  let report: VerifyReport;
  let page: OpenedPage;
  let stdout: string;

  beforeAll(async () => {
    const gguf = join(scratch.path, 'polyglot-ko-tiny-q4_k_m.gguf');
    await convertToGguf(POLYGLOT_TINY_DIR, { type: 'q4_k_m', out: gguf, workers: 0 });
    // The first lines of the Korean validation text (~3.6 kB, whole lines: valid UTF-8): eight 64-token windows.
    const lines = readFileSync(sharedPath('data', 'korean-text', 'valid.txt'), 'utf8').split('\n');
    const text = join(scratch.path, 'korean.txt');
    writeFileSync(text, `${lines.slice(0, 40).join('\n')}\n`);
    const json = join(scratch.path, 'report.json');
    const html = join(scratch.path, 'report.html');
    const run = await runCli(
      'verify', gguf, '--baseline', POLYGLOT_TINY_DIR,
      '--ppl', text, '--ctx', '64', '--max-windows', '8',
      '--kobest', sharedPath('data', 'kobest'), '--tasks', 'copa,sentineg', '--split', 'validation', '--limit', '16', '--bootstrap-iters', '1000',
      '--max-kld', '0.05', '--threads', '2',
      '--json', json, '--html', html,
    );
    expect(run.stderr).not.toContain('internal error');
    expect(run.code).toBe(0);
    stdout = run.stdout;
    report = JSON.parse(readFileSync(json, 'utf8')) as VerifyReport;
    page = await openHtmlFile(html, { width: 1200, height: 900 });
  }, 240_000);

  afterAll(async () => {
    await page?.close();
  });

  it('loads offline from file:// with no request beyond the page and nothing on the console', () => {
    expect(page.requests).toEqual([page.url]);
    expect(page.problems).toEqual([]);
  });

  it('shows the verdict and the report’s numbers in the summary tables', async () => {
    expect(stdout).toContain('PASS');
    expect(await page.texts('[data-verdict]')).toEqual(['PASS']);
    const [section] = report.perplexity;
    const cells = await page.texts('#perplexity-table tbody tr:first-child td');
    expect(cells[0]).toBe('korean.txt (windows, ctx 64)');
    expect(await page.tab.locator('#perplexity-table tbody tr:first-child td').first().getAttribute('data-file')).toBe(section!.file);
    expect(leadingNumber(cells[1]!)).toBe(section!.comparison.positions);
    expect(leadingNumber(cells[2]!)).toBeCloseTo(section!.baseline.ppl, 3);
    expect(leadingNumber(cells[3]!)).toBeCloseTo(section!.candidate.ppl, 3);
    expect(cells[3]).toContain(`± ${section!.candidate.ppl_stderr.toFixed(3)}`);
    expect(leadingNumber(cells[4]!)).toBeCloseTo(section!.comparison.delta_ppl_pct, 3);
    const kld = section!.comparison.kld!;
    expect(Math.abs(leadingNumber(cells[5]!) / kld.mean - 1)).toBeLessThan(1e-3);
    expect(leadingNumber(cells[7]!)).toBeCloseTo(100 * section!.comparison.same_top_p.value, 2);

    const kobestRows = await page.count('#kobest-table tbody tr');
    expect(kobestRows).toBe(report.kobest.length);
    for (const [index, kobest] of report.kobest.entries()) {
      const row = await page.texts(`#kobest-table tbody tr:nth-child(${index + 1}) td`);
      expect(row[0]).toBe(`${kobest.task} ${kobest.shots}-shot`);
      expect(leadingNumber(row[1]!)).toBe(kobest.baseline.n);
      expect(leadingNumber(row[2]!)).toBeCloseTo(100 * kobest.baseline.acc, 1);
      expect(leadingNumber(row[3]!)).toBeCloseTo(100 * kobest.candidate.acc, 1);
      expect(leadingNumber(row[8]!)).toBe(kobest.comparison.flips);
    }
    const checks = await page.texts('#checks-table tbody tr td');
    expect(report.checks).toHaveLength(1);
    expect(checks.slice(0, 3)).toEqual(['pass', report.checks[0]!.where, 'mean_kld']);
    expect((await page.texts('#provenance'))[0]).toContain(`polyquant ${report.provenance.polyquant}`);
  });

  it('draws each window of each text as a point per model and a difference bar, where the NLLs say', async () => {
    expect(await page.count('figure[data-chart="window-nll"]')).toBe(report.perplexity.length);
    const [section] = report.perplexity;
    const windows = section!.baseline.window_nll.length;
    expect(windows).toBe(8);
    const chart = 'figure[data-chart="window-nll"]';
    const box = await page.tab.locator(`${chart} svg`).boundingBox();
    expect(box?.width).toBeGreaterThan(600);
    expect(box?.height).toBeGreaterThan(300);
    const points = await translations(page, `${chart} g.window-nll-points path`);
    expect(points).toHaveLength(2 * windows);
    expect(await page.count(`${chart} g.window-nll-delta path`)).toBe(windows);
    // Data order is baseline, candidate per window: x grows with the window, and y falls as the NLL rises.
    const baselinePoints = points.filter((_, index) => index % 2 === 0);
    for (let window = 1; window < windows; window++) expect(baselinePoints[window]!.x).toBeGreaterThan(baselinePoints[window - 1]!.x);
    const byNll = [...section!.baseline.window_nll.keys()].sort((a, b) => section!.baseline.window_nll[a]! - section!.baseline.window_nll[b]!);
    const byHeight = [...baselinePoints.keys()].sort((a, b) => baselinePoints[b]!.y - baselinePoints[a]!.y);
    expect(byHeight).toEqual(byNll);
  });

  it('draws the KL-divergence quantiles from the 1st percentile to the maximum, rising', async () => {
    const chart = 'figure[data-chart="kld"]';
    const points = await translations(page, `${chart} g.kld-quantiles path`);
    expect(points).toHaveLength(9 * report.perplexity.length);
    const kld = report.perplexity[0]!.comparison.kld!;
    const values = [kld.percentiles.p1, kld.percentiles.p5, kld.percentiles.p10, kld.percentiles.p50, kld.percentiles.p90, kld.percentiles.p95, kld.percentiles.p99, kld.percentiles.p99_9, kld.max];
    for (let index = 1; index < values.length; index++) {
      expect(values[index]!).toBeGreaterThanOrEqual(values[index - 1]!);
      expect(points[index]!.y).toBeLessThanOrEqual(points[index - 1]!.y);
      expect(points[index]!.x).toBeGreaterThan(points[index - 1]!.x);
    }
  });

  it('draws KOBEST accuracy and macro-F1 bars of both models at their values, and the paired differences', async () => {
    const chart = 'figure[data-chart="kobest"]';
    const rows = report.kobest.length;
    expect(rows).toBe(2);
    const accuracy = await widths(page, `${chart} g.kobest-acc-bars path`);
    const f1 = await widths(page, `${chart} g.kobest-f1-bars path`);
    expect(accuracy).toHaveLength(2 * rows);
    expect(f1).toHaveLength(2 * rows);
    expect(await page.count(`${chart} g.kobest-delta-points path`)).toBe(2 * rows);
    // Bars in data order (per task: baseline, candidate), their length proportional to the value (0–100 %).
    const scale = accuracy[0]! / report.kobest[0]!.baseline.acc;
    report.kobest.forEach((section, index) => {
      expect(accuracy[2 * index]! / scale).toBeCloseTo(section.baseline.acc, 2);
      expect(accuracy[2 * index + 1]! / scale).toBeCloseTo(section.candidate.acc, 2);
      expect(f1[2 * index]! / scale).toBeCloseTo(section.baseline.macro_f1, 2);
      expect(f1[2 * index + 1]! / scale).toBeCloseTo(section.candidate.macro_f1, 2);
    });
    // Accuracy whiskers: one per bar, from lm-eval's acc_stderr.
    expect(await page.count(`${chart} g.kobest-acc-bars-ci line`)).toBe(2 * rows);
    const unchanged = report.kobest.filter((section) => section.comparison.flips === 0).length;
    expect(await page.count(`${chart} g.kobest-no-flips text`)).toBe(unchanged);
  });

  it('saves a screenshot of the whole page', async () => {
    const out = join(REPO_ROOT, 'bench', 'out');
    mkdirSync(out, { recursive: true });
    const file = join(out, 'verify-html.png');
    await page.tab.screenshot({ path: file, fullPage: true });
    const png = PNG.sync.read(readFileSync(file));
    expect(png.width).toBe(1200);
    expect(png.height).toBeGreaterThan(1500);
    if (process.env['POLYQUANT_UPDATE_DOCS'] === '1') copyFileSync(file, join(REPO_ROOT, 'docs', 'verify-html.png'));
    expect(existsSync(file)).toBe(true);
  });
});
