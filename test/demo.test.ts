import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BUNDLED_MODEL, defaultDemoModels, runDemo } from '../src/demo.js';
import { runCli } from './helpers/cli.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-demo-');
afterAll(() => scratch.remove());

describe('polyquant demo', () => {
  it('uses the bundled model, and polyglot-ko-tiny when ../shared is there', () => {
    expect(defaultDemoModels()).toEqual(HAS_SHARED ? [BUNDLED_MODEL, POLYGLOT_TINY_DIR] : [BUNDLED_MODEL]);
  });

  it('converts the bundled model to GGUF f16 and q4_k_m and ONNX q4 and verifies each in its engine against the HF baseline', async () => {
    const out = join(scratch.path, 'kept');
    const result = await runDemo({ models: [BUNDLED_MODEL], outDir: out, threads: 1 });
    expect(result.schema).toBe('polyquant.demo/2');
    expect(result.rows.map((row) => `${row.format} ${row.type}`)).toEqual(['gguf f16', 'gguf q4_k_m', 'onnx q4']);
    for (const row of result.rows) {
      expect(existsSync(row.file)).toBe(true);
      if (row.format === 'gguf') expect(readFileSync(row.file).subarray(0, 4).toString('latin1')).toBe('GGUF');
      expect(row.engine).toBe(row.format === 'gguf' ? 'llamacpp' : 'onnx');
      expect(row.verdict, row.failed.join('; ')).toBe('pass');
    }
    const [f16, q4, onnxQ4] = result.rows;
    expect(onnxQ4!.file.endsWith(join('tiny-neox-onnx', 'onnx', 'model_q4.onnx'))).toBe(true);
    expect(onnxQ4!.kldMean).toBeGreaterThan(f16!.kldMean!);
    // f16 reproduces the baseline; q4_k_m is measurably further away, but still close.
    expect(Math.abs(f16!.deltaPplPct)).toBeLessThan(0.5);
    expect(f16!.top1).toBeGreaterThanOrEqual(0.99);
    expect(q4!.kldMean).toBeGreaterThan(f16!.kldMean!);
    expect(q4!.fileBytes).toBeLessThan(f16!.fileBytes);
    expect(result.reports.every((report) => report.baseline.engine === 'reference')).toBe(true);
  });

  it('prints the table and exits 1 when a gate fails, 2 on a bad type', async () => {
    const bad = await runCli('demo', '--model', BUNDLED_MODEL, '--types', 'q9_9');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/unknown GGUF type "q9_9"/);
    // Whatever the verdict, the table renders and the exit code follows it.
    const run = await runCli('demo', '--model', BUNDLED_MODEL, '--types', 'q8_0', '--onnx-types', 'none', '--threads', '1', '--json', join(scratch.path, 'demo.json'));
    expect(run.stdout).toMatch(/tiny-neox\s+gguf q8_0\s/);
    expect(run.stdout).not.toMatch(/onnx/);
    expect(run.stdout).toMatch(/^verdict: (pass|fail)$/m);
    const json = JSON.parse(readFileSync(join(scratch.path, 'demo.json'), 'utf8')) as { verdict: string };
    expect(run.code).toBe(json.verdict === 'pass' ? 0 : 1);
  });
});
