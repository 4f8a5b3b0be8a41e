/**
 * Issue #12 acceptance on ../shared/fixtures/polyglot-ko-tiny (skipped without ../shared): `sweep --preset
 * quick` writes the table, the JSON, the SVG and the PNG (the PNG's pixels are test/sweep-plot.test.ts's
 * business; here the files exist and the report names them), on a short evaluation to stay near a minute.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { SweepReport } from '../src/sweep/report.js';
import { runCli } from './helpers/cli.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, sharedPath } from './helpers/shared.js';
import { cellRecords } from './helpers/sweep.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-sweep-polyglot-');
afterAll(() => scratch.remove());

describe.skipIf(!HAS_SHARED)('sweep --preset quick on polyglot-ko-tiny', () => {
  it('converts and verifies every quick cell, tabulates, recommends and plots', async () => {
    const out = join(scratch.path, 'sweep');
    const markdown = join(scratch.path, 'sweep.md');
    const run = await runCli(
      'sweep', POLYGLOT_TINY_DIR, '--out', out, '--preset', 'quick',
      '--ppl', sharedPath('data', 'korean-text', 'valid.txt'), '--ctx', '64', '--max-windows', '2',
      '--max-kld', '0.01', '--min-top1', '85%', '--cache-dir', join(scratch.path, 'cache'), '--markdown', markdown,
    );
    expect(run.stderr).not.toContain('internal error');
    expect(run.code, run.stderr).toBe(0);
    for (const title of ['GGUF (llama.cpp)', 'ONNX (onnxruntime)', 'WebGPU (MLC tensor cache)']) expect(run.stdout).toContain(title);
    expect(run.stdout).toMatch(/^q4_k_m\s+14\.\d MB\s+6\.\d\d\s/m);
    expect(run.stdout).toContain('plot: pareto.svg, pareto.png');
    const report = JSON.parse(readFileSync(join(out, 'sweep.json'), 'utf8')) as SweepReport;
    expect(report.schema).toBe('polyquant.sweep/2');
    expect(report.model?.parameters).toBe(cellRecords(out).get('gguf-q8_0')?.model.parameters);
    expect(report.cells.map((cell) => cell.id).sort()).toEqual(
      ['gguf-q8_0', 'gguf-q4_k_m', 'gguf-q4_0', 'onnx-fp32', 'onnx-fp16', 'onnx-q8', 'onnx-q4', 'onnx-q4f16', 'webgpu-q4f16_1', 'webgpu-q4f32_1', 'webgpu-q0f16', 'webgpu-q0f32', 'webgpu-q8f16_pq', 'webgpu-q8f32_pq'].sort(),
    );
    expect(report.cells.every((cell) => cell.status === 'pass' || cell.status === 'fail')).toBe(true);
    expect(report.complete).toBe(true);
    expect(report.recommendation).not.toBeNull();
    expect(report.plot).toEqual({ svg: 'pareto.svg', png: 'pareto.png' });
    for (const file of ['pareto.svg', 'pareto.png']) expect(statSync(join(out, file)).size).toBeGreaterThan(1000);
    // Ordering that holds on any machine: 8-bit types are closer to the baseline than 4-bit ones.
    // sweep.json is snake_case (docs/schemas.md): the cell's kldMean is kld_mean there.
    const kld = (id: string): number => (report.cells.find((cell) => cell.id === id) as unknown as { kld_mean: number } | undefined)?.kld_mean as number;
    expect(kld('gguf-q8_0')).toBeLessThan(kld('gguf-q4_0'));
    expect(kld('onnx-q8')).toBeLessThan(kld('onnx-q4'));
    expect(kld('webgpu-q8f16_pq')).toBeLessThan(kld('webgpu-q4f16_1'));
    expect(existsSync(markdown)).toBe(true);
  }, 300_000);
});
