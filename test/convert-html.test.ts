/**
 * `convert --dry-run --error --html FILE`: the measured quantization error as a self-contained page
 * (src/cli/convert-html.ts). The CLI measures a q4_k_m conversion of polyglot-ko-tiny (the bundled tiny
 * GPT-NeoX without ../shared) and writes the page; headless Chromium opens it offline, and the chart and
 * tables are held to the plan convertToGguf measures for the same model and type: one marker per weight
 * matrix, placed by its SQNR, and the worst tensor first. Skips, saying why, without Chromium.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToGguf, type GgufConversionPlan } from '../src/converters/gguf/convert.js';
import { runCli } from './helpers/cli.js';
import { HAS_CHROMIUM, NO_CHROMIUM_REASON, type OpenedPage, openHtmlFile } from './helpers/html-page.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, REPO_ROOT } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const MODEL = HAS_SHARED ? POLYGLOT_TINY_DIR : join(REPO_ROOT, 'fixtures', 'tiny-neox');
const scratch = tempDir('polyquant-convert-html-');
afterAll(() => scratch.remove());
if (!HAS_CHROMIUM) console.warn(`convert --html browser tests skipped: ${NO_CHROMIUM_REASON}`);

/** Weight matrices: the 2-D `.weight` tensors (norms and biases are 1-D and stored exactly as F32). */
const isMatrix = (tensor: GgufConversionPlan['tensors'][number]): boolean => tensor.name.endsWith('.weight') && tensor.ne.length === 2;

describe('convert --html usage', () => {
  it('refuses --html without --dry-run --error, for ONNX, and over an input, before reading any weights (exit 2)', async () => {
    const page = join(scratch.path, 'error.html');
    const plain = await runCli('convert', MODEL, '--type', 'q4_k_m', '--dry-run', '--html', page);
    expect(plain.code).toBe(2);
    expect(plain.stderr).toContain('--html draws the quantization error');
    expect(plain.stderr).toContain('add --dry-run --error');
    const onnx = await runCli('convert', MODEL, '--to', 'onnx', '--type', 'q4', '--dry-run', '--error', '--html', page);
    expect(onnx.code).toBe(2);
    const config = join(MODEL, 'config.json');
    const overwrite = await runCli('convert', MODEL, '--type', 'q4_k_m', '--dry-run', '--error', '--html', config);
    expect(overwrite.code).toBe(2);
    expect(overwrite.stderr).toContain(`--html ${config} would overwrite`);
    const missing = await runCli('convert', MODEL, '--type', 'q4_k_m', '--dry-run', '--error', '--html', join(scratch.path, 'nowhere', 'error.html'));
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('does not exist');
  });
});

describe.skipIf(!HAS_CHROMIUM)('convert --dry-run --error --html for q4_k_m, in headless Chromium', () => {
  let plan: GgufConversionPlan;
  let page: OpenedPage;

  beforeAll(async () => {
    const file = join(scratch.path, 'q4_k_m-error.html');
    const run = await runCli('convert', MODEL, '--type', 'q4_k_m', '--dry-run', '--error', '--html', file, '--workers', '2');
    expect(run.stderr).not.toContain('internal error');
    expect(run.code).toBe(0);
    expect(readFileSync(file, 'utf8').startsWith('<!doctype html>')).toBe(true);
    plan = await convertToGguf(MODEL, { type: 'q4_k_m', dryRun: true, error: true, workers: 2 });
    page = await openHtmlFile(file);
  }, 180_000);

  afterAll(async () => {
    await page?.close();
  });

  it('loads offline with no request beyond the page and nothing on the console', () => {
    expect(page.requests).toEqual([page.url]);
    expect(page.problems).toEqual([]);
  });

  it('draws one marker per measured weight matrix, higher for a higher SQNR', async () => {
    const matrices = plan.tensors.filter((tensor) => isMatrix(tensor) && tensor.error !== undefined);
    expect(matrices.length).toBeGreaterThanOrEqual(6);
    const points = await page.tab.locator('figure[data-chart="sqnr"] g.sqnr-points path').evaluateAll((elements) =>
      elements.map((element) => Number(/translate\([-\d.e]+,\s*([-\d.e]+)\)/.exec(element.getAttribute('transform') ?? '')?.[1])),
    );
    expect(points).toHaveLength(matrices.length);
    // In plan order; q4_k_m's Q6_K tensors (output head, some qkv / ffn_down) sit ~12 dB above the Q4_K ones.
    const sqnr = matrices.map((tensor) => tensor.error!.sqnrDb);
    for (let a = 0; a < sqnr.length; a++) {
      for (let b = 0; b < sqnr.length; b++) {
        if (sqnr[a]! > sqnr[b]! + 1) expect(points[a]!, `${matrices[a]!.name} above ${matrices[b]!.name}`).toBeLessThan(points[b]!);
      }
    }
    // q4_k_m's mixture; rows that 256-element blocks do not divide (the bundled model's) take llama-quantize's fallbacks.
    const types = new Set(matrices.map((tensor) => tensor.type));
    expect(types.has('Q6_K') || types.has('Q8_0')).toBe(true);
    expect([...types].every((type) => ['Q4_K', 'Q6_K', 'Q5_0', 'Q5_1', 'Q8_0'].includes(type))).toBe(true);
  });

  it('lists the worst tensor first with its SQNR, and a row per kind including the exact norms and biases', async () => {
    const lossy = plan.tensors.filter((tensor) => Number.isFinite(tensor.error?.sqnrDb));
    const worst = lossy.reduce((a, b) => (b.error!.sqnrDb < a.error!.sqnrDb ? b : a));
    const first = await page.texts('#worst-table tbody tr:first-child td');
    expect(first[0]).toBe(worst.name);
    expect(first[2]).toBe(worst.type);
    expect(first[4]).toBe(worst.error!.sqnrDb.toFixed(2));
    const kinds = await page.texts('#kinds-table tbody tr td:first-child');
    expect(kinds).toEqual(['token embedding', 'attention qkv', 'attention output', 'mlp up', 'mlp down', 'output head', 'norms', 'biases']);
    const exact = await page.texts('#kinds-table tbody tr:nth-child(7) td');
    expect(exact.slice(2)).toEqual(['F32', 'exact', 'exact', 'exact']);
  });
});
