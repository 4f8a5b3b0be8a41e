import { copyFileSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToGguf } from '../src/converters/gguf/convert.js';
import type { VerifyReport } from '../src/verify/report.js';
import { firstTokenMismatch, verify } from '../src/verify/verify.js';
import { runCli } from './helpers/cli.js';
import { expectPolyquantError } from './helpers/errors.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, REPO_ROOT, sharedPath } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-llamacpp-verify-');
afterAll(() => scratch.remove());
const TINY_NEOX = join(REPO_ROOT, 'fixtures', 'tiny-neox');

function sampleText(): string {
  const path = join(scratch.path, 'sample.txt');
  const sentences = ['서울은 한강을 끼고 있는 큰 도시이다. ', '오늘은 날씨가 맑고 바람이 시원하다. ', 'The quick brown fox jumps over the lazy dog. '];
  writeFileSync(path, Array.from({ length: 30 }, (_, i) => sentences[i % 3]).join(''));
  return path;
}

describe('firstTokenMismatch', () => {
  it('finds the first differing index, the end of the shorter list, or −1 for identical lists', () => {
    expect(firstTokenMismatch(new Int32Array([1, 2, 3]), new Int32Array([1, 2, 3]))).toBe(-1);
    expect(firstTokenMismatch(new Int32Array([1, 2, 3]), new Int32Array([1, 5, 3]))).toBe(1);
    expect(firstTokenMismatch(new Int32Array([1, 2]), new Int32Array([1, 2, 3]))).toBe(2);
    expect(firstTokenMismatch(new Int32Array(0), new Int32Array(0))).toBe(-1);
  });
});

describe('verify with GGUF files on the bundled tiny GPT-NeoX', () => {
  let f16: string;
  let q8: string;

  beforeAll(async () => {
    f16 = join(scratch.path, 'tiny-neox-f16.gguf');
    q8 = join(scratch.path, 'tiny-neox-q8_0.gguf');
    await convertToGguf(TINY_NEOX, { type: 'f16', out: f16, workers: 0 });
    await convertToGguf(TINY_NEOX, { type: 'q8_0', out: q8, workers: 0 });
  });

  it('runs a .gguf candidate with the llamacpp engine against an HF baseline (engine auto), naming engine and device', async () => {
    const report = await verify({ candidate: f16, baseline: TINY_NEOX, pplFiles: [sampleText()], ctx: 64, threads: 1 });
    expect(report.candidate).toEqual({ path: f16, engine: 'llamacpp', device: 'cpu', threads: expect.any(Number) });
    expect(report.baseline).toMatchObject({ engine: 'reference', device: 'cpu' });
    const [section] = report.perplexity;
    expect(Math.abs(section?.comparison.delta_ppl_pct as number)).toBeLessThan(0.5);
    expect(section?.comparison.top1_agreement).toBeGreaterThanOrEqual(0.99);
    expect(section?.comparison.kld?.mean).toBeLessThan(1e-4);
  });

  it('runs two GGUF files with --engine llamacpp from the CLI, and reports both as llamacpp', async () => {
    const json = join(scratch.path, 'gguf-vs-gguf.json');
    const run = await runCli('verify', q8, '--baseline', f16, '--engine', 'llamacpp', '--device', 'cpu', '--ppl', sampleText(), '--ctx', '64', '--max-windows', '2', '--json', json);
    expect(run.stderr).not.toContain('internal error');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`${q8} (llamacpp, cpu, `);
    expect(run.stdout).toContain(`${f16} (llamacpp, cpu, `);
    const report = JSON.parse(readFileSync(json, 'utf8')) as VerifyReport;
    expect(report.perplexity[0]?.comparison.kld?.mean).toBeGreaterThan(0);
    expect(report.perplexity[0]?.comparison.kld?.mean).toBeLessThan(0.01);
  });

  it('exits 2 naming the file for a missing .gguf and for a truncated one', async () => {
    const missing = join(scratch.path, 'missing.gguf');
    const gone = await runCli('verify', missing, '--baseline', TINY_NEOX, '--ppl', sampleText(), '--ctx', '64');
    expect(gone.code).toBe(2);
    expect(gone.stderr).toContain(missing);
    expect(gone.stderr).toContain('no such file');
    const cut = join(scratch.path, 'cut.gguf');
    copyFileSync(f16, cut);
    truncateSync(cut, 4096);
    const truncated = await runCli('verify', cut, '--baseline', TINY_NEOX, '--ppl', sampleText(), '--ctx', '64');
    expect(truncated.code).toBe(2);
    expect(truncated.stderr).toContain(cut);
    expect(truncated.stderr).not.toContain('internal error');
    await expectPolyquantError(verify({ candidate: TINY_NEOX, baseline: cut, pplFiles: [sampleText()], ctx: 64 }), 'malformed', cut);
  });

  it('exits 2 for a .gguf that is not a GGUF, and for a file that is neither a folder nor a GGUF', async () => {
    const fake = join(scratch.path, 'fake.gguf');
    writeFileSync(fake, '{"not": "a model"}');
    const run = await runCli('verify', fake, '--baseline', TINY_NEOX, '--ppl', sampleText(), '--ctx', '64');
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(fake);
    expect(run.stderr).toContain('not a GGUF file');
    const other = join(TINY_NEOX, 'config.json');
    const neither = await runCli('verify', other, '--baseline', TINY_NEOX, '--ppl', sampleText(), '--ctx', '64');
    expect(neither.code).toBe(2);
    expect(neither.stderr).toContain(other);
    expect(neither.stderr).toContain('neither a Hugging Face model folder nor a GGUF file');
  });

  it('refuses engine/model mismatches, --simulate on a GGUF, and --device gpu where nothing can use it', async () => {
    const text = sampleText();
    const base = { pplFiles: [text], ctx: 64 } as const;
    await expectPolyquantError(verify({ ...base, candidate: f16, baseline: TINY_NEOX, engine: 'reference' }), 'usage', 'the reference engine runs Hugging Face folders', f16);
    // llamacpp runs an HF folder on its cached GGUF (test/baseline-cache.test.ts), but not a simulated quantization.
    await expectPolyquantError(
      verify({ ...base, candidate: TINY_NEOX, baseline: f16, engine: 'llamacpp', simulate: 'Q4_0' }),
      'usage',
      '--simulate runs in the reference engine',
      TINY_NEOX,
    );
    await expectPolyquantError(verify({ ...base, candidate: f16, baseline: TINY_NEOX, simulate: 'Q4_0' }), 'usage', '--simulate quantizes the weights of a Hugging Face folder', f16);
    await expectPolyquantError(verify({ ...base, candidate: TINY_NEOX, baseline: TINY_NEOX, device: 'gpu' }), 'usage', 'the reference engine runs on the CPU only');
    await expectPolyquantError(verify({ ...base, candidate: f16, baseline: TINY_NEOX, ctx: 256 }), 'usage', "--ctx 256 is longer than the model's context length 128");
    const cli = await runCli('verify', f16, '--baseline', TINY_NEOX, '--engine', 'tensorrt', '--ppl', text);
    expect(cli.code).toBe(2);
    expect(cli.stderr).toContain('llamacpp');
    // The onnx engine runs ONNX models only: a GGUF candidate is refused by name.
    const onnx = await runCli('verify', f16, '--baseline', TINY_NEOX, '--engine', 'onnx', '--ppl', text);
    expect(onnx.code).toBe(2);
    expect(onnx.stderr).toMatch(/onnx/i);
  });

  it('fails with a clear error, exit 2, when --device gpu finds no GPU backend', async () => {
    const run = await runCli('verify', f16, '--baseline', TINY_NEOX, '--device', 'gpu', '--ppl', sampleText(), '--ctx', '64');
    // On a machine with a GPU build and a GPU this runs; here (CPU prebuilt only) it must refuse clearly.
    if (run.code !== 0) {
      expect(run.code).toBe(2);
      expect(run.stderr).toContain('the llamacpp engine found no usable GPU');
      expect(run.stderr).toContain(f16);
    } else {
      expect(run.stdout).toContain('(llamacpp, gpu)');
    }
  });
});

describe.skipIf(!HAS_SHARED)('verify: polyglot-ko-tiny GGUF files against the HF folder (the issue acceptance)', () => {
  const valid = sharedPath('data', 'korean-text', 'valid.txt');
  const files = new Map<string, string>();
  const reports = new Map<string, VerifyReport>();

  beforeAll(async () => {
    for (const type of ['f16', 'q4_k_m', 'q4_0'] as const) {
      const out = join(scratch.path, `model-${type}.gguf`);
      await convertToGguf(POLYGLOT_TINY_DIR, { type, out });
      files.set(type, out);
    }
  });

  it('f16 (library): ΔPPL within 0.5 % and top-1 agreement ≥ 99 % on valid.txt', async () => {
    const report = await verify({ candidate: files.get('f16') as string, baseline: POLYGLOT_TINY_DIR, pplFiles: [valid], ctx: 128, maxWindows: 3 });
    reports.set('f16', report);
    const [section] = report.perplexity;
    const comparison = section?.comparison as NonNullable<typeof section>['comparison'];
    console.log(
      `f16: ppl ${section?.baseline.ppl.toFixed(3)} → ${section?.candidate.ppl.toFixed(3)} (${comparison.delta_ppl_pct.toFixed(4)} %), mean KLD ${comparison.kld?.mean.toExponential(2)}, top-1 ${(100 * comparison.top1_agreement).toFixed(2)} % over ${comparison.positions}`,
    );
    expect(report.candidate.engine).toBe('llamacpp');
    expect(Math.abs(comparison.delta_ppl_pct)).toBeLessThan(0.5);
    expect(comparison.top1_agreement).toBeGreaterThanOrEqual(0.99);
    expect(comparison.positions).toBe(3 * 127);
  });

  it('f16 (CLI): passes --max-ppl-increase 0.5% and --min-top1 99%, exit 0', async () => {
    const json = join(scratch.path, 'cli-f16.json');
    const run = await runCli('verify', files.get('f16') as string, '--baseline', POLYGLOT_TINY_DIR, '--ppl', valid, '--ctx', '128', '--max-windows', '2', '--max-ppl-increase', '0.5%', '--min-top1', '99%', '--json', json);
    expect(run.stderr).not.toContain('internal error');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('PASS (2 checks)');
    expect(run.stdout).toContain('(llamacpp, cpu, ');
    const report = JSON.parse(readFileSync(json, 'utf8')) as VerifyReport;
    expect(report.candidate).toMatchObject({ engine: 'llamacpp', device: 'cpu' });
  });

  it('q4_k_m and q4_0: both reports produced, and q4_k_m has the smaller KL divergence', async () => {
    for (const type of ['q4_k_m', 'q4_0'] as const) {
      reports.set(type, await verify({ candidate: files.get(type) as string, baseline: POLYGLOT_TINY_DIR, pplFiles: [valid], ctx: 128, maxWindows: 2 }));
    }
    const kld = (type: string): number => reports.get(type)?.perplexity[0]?.comparison.kld?.mean as number;
    for (const type of ['q4_k_m', 'q4_0']) {
      const comparison = reports.get(type)?.perplexity[0]?.comparison;
      console.log(`${type}: ΔPPL ${comparison?.delta_ppl_pct.toFixed(3)} %, mean KLD ${kld(type).toFixed(5)}, top-1 ${(100 * (comparison?.top1_agreement ?? 0)).toFixed(2)} %`);
    }
    expect(kld('q4_k_m')).toBeGreaterThan(0);
    expect(kld('q4_k_m')).toBeLessThan(kld('q4_0'));
  });

  it('runs KOBEST through scoreContinuations: the f16 file makes the same predictions as the HF folder', async () => {
    const report = await verify({
      candidate: files.get('f16') as string,
      baseline: POLYGLOT_TINY_DIR,
      kobestDir: sharedPath('data', 'kobest'),
      tasks: ['copa'],
      split: 'validation',
      limit: 12,
    });
    expect(report.kobest).toHaveLength(1);
    expect(report.kobest[0]?.baseline.n).toBe(12);
    expect(report.kobest[0]?.comparison.flips).toBe(0);
  });
});
