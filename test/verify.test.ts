import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { VERIFY_SCHEMA, type VerifyReport } from '../src/verify/report.js';
import { planSimulation, simulationFileType } from '../src/verify/simulate.js';
import { normaliseNeoXConfig } from '../src/arch/gpt-neox.js';
import { runCli } from './helpers/cli.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, REPO_ROOT, sharedPath } from './helpers/shared.js';
import { makeTinyModel, tempDir } from './helpers/tiny-model.js';

const scratch = tempDir();
afterAll(() => scratch.remove());
const TINY = join(REPO_ROOT, 'fixtures', 'tiny-neox');

function sampleText(): string {
  const path = join(scratch.path, 'sample.txt');
  const sentences = ['서울은 한강을 끼고 있는 큰 도시이다. ', '오늘은 날씨가 맑고 바람이 시원하다. ', 'The quick brown fox jumps over the lazy dog. '];
  writeFileSync(path, Array.from({ length: 60 }, (_, i) => sentences[i % 3]).join(''));
  return path;
}

describe('verify on the bundled tiny model', () => {
  it('finds no difference between a model and itself, and passes tight thresholds', async () => {
    const json = join(scratch.path, 'self.json');
    const markdown = join(scratch.path, 'self.md');
    const run = await runCli('verify', TINY, '--baseline', TINY, '--ppl', sampleText(), '--ctx', '64', '--max-ppl-increase', '0.001%', '--max-kld', '0', '--min-top1', '100%', '--json', json, '--markdown', markdown, '--threads', '1');
    expect(run.stderr).not.toContain('internal error');
    expect(run.code).toBe(0);
    const report = JSON.parse(readFileSync(json, 'utf8')) as VerifyReport;
    expect(report.schema).toBe(VERIFY_SCHEMA);
    expect(report.verdict).toBe('pass');
    const [section] = report.perplexity;
    expect(section?.comparison.delta_ppl_pct).toBe(0);
    expect(section?.comparison.kld?.max).toBe(0);
    expect(section?.comparison.top1_agreement).toBe(1);
    expect(section?.baseline.ppl).toBeGreaterThan(1);
    expect(report.checks).toHaveLength(3);
    expect(readFileSync(markdown, 'utf8')).toContain('## polyquant verify: PASS');
    expect(run.stdout).toContain('PASS (3 checks)');
  });

  it('measures a simulated Q4_0 candidate and exits 1 when a threshold fails', async () => {
    const json = join(scratch.path, 'q4.json');
    const run = await runCli('verify', TINY, '--baseline', TINY, '--simulate', 'Q4_0', '--ppl', sampleText(), '--ctx', '64', '--max-kld', '1e-9', '--json', json, '--threads', '1');
    expect(run.stderr).not.toContain('internal error');
    expect(run.code).toBe(1);
    const report = JSON.parse(readFileSync(json, 'utf8')) as VerifyReport;
    expect(report.candidate.simulate).toBe('q4_0');
    expect(report.verdict).toBe('fail');
    expect(report.perplexity[0]?.comparison.kld?.mean).toBeGreaterThan(0);
    expect(run.stdout).toContain('FAIL: 1 of 1 checks failed');
  });

  it('exits 2 for a text shorter than one window, naming the file', async () => {
    const path = join(scratch.path, 'short.txt');
    writeFileSync(path, '짧은 글');
    const run = await runCli('verify', TINY, '--baseline', TINY, '--ppl', path, '--ctx', '64');
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(path);
    expect(run.stderr).toContain('fewer than one window of 64');
  });

  it('exits 2 for a missing KOBEST folder and for nothing to measure', async () => {
    const missing = await runCli('verify', TINY, '--baseline', TINY, '--kobest', join(scratch.path, 'no-kobest'), '--tasks', 'copa', '--split', 'validation');
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('no-kobest');
    const nothing = await runCli('verify', TINY, '--baseline', TINY);
    expect(nothing.code).toBe(2);
    expect(nothing.stderr).toContain('--ppl');
  });

  it('refuses to compare models whose tokenizers differ', async () => {
    const other = await makeTinyModel(scratch.path);
    const tokenizerPath = join(other, 'tokenizer.json');
    const tokenizer = JSON.parse(readFileSync(tokenizerPath, 'utf8'));
    tokenizer.model.merges = tokenizer.model.merges.slice(0, 10);
    writeFileSync(tokenizerPath, JSON.stringify(tokenizer));
    const run = await runCli('verify', other, '--baseline', TINY, '--ppl', sampleText(), '--ctx', '64');
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('tokenize the text differently');
  });
});

describe('simulated quantization plans', () => {
  it('maps ggml types to the GGUF mixes and quantizes only matrices', () => {
    expect(simulationFileType('Q4_K')).toBe('q4_k_m');
    expect(simulationFileType('q4_k_s')).toBe('q4_k_s');
    expect(() => simulationFileType('Q7_X')).toThrow(/not a ggml type or GGUF file type/);
    const config = normaliseNeoXConfig(JSON.parse(readFileSync(join(TINY, 'config.json'), 'utf8')), 'config.json');
    const plan = planSimulation('Q4_0', config);
    expect(plan.types.get('embed_out.weight')).toBe('Q8_0'); // 64-wide rows: Q6_K does not fit, llama-quantize uses Q8_0
    expect(plan.types.get('gpt_neox.layers.0.attention.query_key_value.weight')).toBe('Q4_0');
    expect(plan.types.has('gpt_neox.layers.0.input_layernorm.weight')).toBe(false);
    const values = Float32Array.from({ length: 64 * 2 }, (_, i) => Math.sin(i) / 10);
    const transformed = plan.transform('gpt_neox.layers.0.attention.dense.weight', values, [2, 64]);
    expect(transformed).not.toEqual(values);
    expect(Math.max(...transformed.map((value, i) => Math.abs(value - (values[i] as number))))).toBeLessThan(0.02);
    expect(plan.transform('gpt_neox.final_layer_norm.weight', values, [128])).toBe(values);
  });
});

describe.skipIf(!HAS_SHARED)('verify on polyglot-ko-tiny', () => {
  it('finds ΔPPL 0, KLD 0 and no flips against itself on text and KOBEST', async () => {
    const json = join(scratch.path, 'polyglot-self.json');
    const run = await runCli('verify', POLYGLOT_TINY_DIR, '--baseline', POLYGLOT_TINY_DIR, '--ppl', sharedPath('data', 'korean-text', 'valid.txt'), '--ctx', '128', '--max-windows', '4', '--kobest', sharedPath('data', 'kobest'), '--tasks', 'copa,boolq', '--split', 'validation', '--limit', '20', '--shots', '0', '--json', json);
    expect(run.stderr).not.toContain('internal error');
    expect(run.code).toBe(0);
    const report = JSON.parse(readFileSync(json, 'utf8')) as VerifyReport;
    expect(report.perplexity[0]?.comparison.delta_ppl_pct).toBe(0);
    expect(report.perplexity[0]?.comparison.kld?.max).toBe(0);
    expect(report.kobest.map((section) => [section.task, section.comparison.flips, section.comparison.delta_acc])).toEqual([
      ['kobest_copa', 0, 0],
      ['kobest_boolq', 0, 0],
    ]);
  });
});
