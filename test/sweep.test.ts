/**
 * Issue #12, `polyquant sweep` on the bundled tiny model (always runs): the grid, the cell files, the
 * report (table, polyquant.sweep/1, Markdown, Pareto SVG/PNG), resuming, re-gating, --force, simulate cells,
 * the baseline cache's equivalence, and exit 2 for bad input.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cellId, parseShard, planGrid, SWEEP_PRESETS, shardCells } from '../src/sweep/grid.js';
import type { SweepCellRecord } from '../src/sweep/records.js';
import type { SweepReport } from '../src/sweep/report.js';
import { runSweep } from '../src/sweep/sweep.js';
import { runCli } from './helpers/cli.js';
import { REPO_ROOT } from './helpers/shared.js';
import { cellRecords, expectSameNumbers, sampleTextContent, withoutTimings } from './helpers/sweep.js';
import { makeTinyModel, tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-sweep-');
afterAll(() => scratch.remove());
const TINY = join(REPO_ROOT, 'fixtures', 'tiny-neox');
let text: string;
let cacheDir: string;
beforeAll(() => {
  text = join(scratch.path, 'sample.txt');
  writeFileSync(text, sampleTextContent());
  cacheDir = join(scratch.path, 'cache');
  mkdirSync(cacheDir);
});

/** The evaluation flags every run here shares. */
const evaluation = (overrides: { ctx?: string; maxWindows?: string } = {}): string[] => [
  '--ppl', text, '--ctx', overrides.ctx ?? '64', '--max-windows', overrides.maxWindows ?? '2', '--threads', '1', '--cache-dir', cacheDir,
];

describe('the grid', () => {
  it('takes quick as the default preset: GGUF q8_0, q4_k_m, q4_0 and every ONNX and WebGPU type, in table order', () => {
    const ids = planGrid().map((cell) => cell.id);
    expect(ids).toEqual([
      'gguf-q4_0', 'gguf-q8_0', 'gguf-q4_k_m',
      'onnx-fp32', 'onnx-fp16', 'onnx-q8', 'onnx-q4', 'onnx-q4f16',
      'webgpu-q4f16_1', 'webgpu-q4f32_1', 'webgpu-q0f16', 'webgpu-q0f32', 'webgpu-q8f16_pq', 'webgpu-q8f32_pq',
    ]);
    expect(planGrid({ preset: 'release', formats: ['gguf'] }).map((cell) => cell.type)).toEqual(expect.arrayContaining(['iq4_xs', 'q4_k_s', 'q6_k', 'q2_k', 'q3_k_m', 'f16']));
    expect(SWEEP_PRESETS.release.onnx).toEqual(SWEEP_PRESETS.quick.onnx);
  });

  it('assigns plain types to every chosen format that has them and FORMAT:TYPE to one, in canonical order whatever the flag order', () => {
    expect(planGrid({ types: ['q4', 'q4_0', 'webgpu:q4f16_1'] }).map((cell) => cell.id)).toEqual(['gguf-q4_0', 'onnx-q4', 'webgpu-q4f16_1']);
    expect(planGrid({ types: ['webgpu:q4f16_1', 'q4_0', 'q4'] })).toEqual(planGrid({ types: ['q4', 'q4_0', 'webgpu:q4f16_1'] }));
    expect(planGrid({ formats: ['gguf', 'simulate'], types: ['q4_k_m'] }).map((cell) => cell.id)).toEqual(['gguf-q4_k_m', 'simulate-q4_k_m']);
    // Any case, and llama-quantize's aliases (Q4_K = q4_k_m).
    expect(planGrid({ formats: ['gguf', 'simulate'], types: ['Q4_K', 'GGUF:Q5_K', 'Q8_0'] }).map((cell) => cell.id)).toEqual([
      'gguf-q8_0', 'gguf-q4_k_m', 'gguf-q5_k_m', 'simulate-q8_0', 'simulate-q4_k_m',
    ]);
    expect(planGrid({ simulate: true }).map((cell) => cell.id)).toEqual([
      ...['q4_0', 'q8_0', 'q4_k_m'].map((type) => cellId('simulate', type)),
      ...['q4f16_1', 'q4f32_1', 'q0f16', 'q0f32', 'q8f16_pq', 'q8f32_pq'].map((type) => cellId('simulate', type)),
    ]);
  });

  it('shards round robin over the grid: every cell in exactly one shard', () => {
    const cells = planGrid();
    const shards = [0, 1, 2].map((index) => shardCells(cells, parseShard(`${index}/3`)).map((cell) => cell.id));
    expect(shards.flat().sort()).toEqual(cells.map((cell) => cell.id).sort());
    expect(shards[0]).toEqual(['gguf-q4_0', 'onnx-fp32', 'onnx-q4', 'webgpu-q4f32_1', 'webgpu-q8f16_pq']);
    expect(() => parseShard('3/3')).toThrow(/0 ≤ I < N/);
    expect(() => parseShard('-1/3')).toThrow(/I\/N/);
    expect(() => parseShard('0/0')).toThrow(/I\/N/);
  });
});

describe('polyquant sweep on the bundled tiny model', () => {
  it('runs the quick preset: a table per format, cells, sweep.json, the Pareto SVG and PNG, and the recommendation', async () => {
    const out = join(scratch.fresh(), 'sweep');
    const markdown = join(scratch.path, 'quick.md');
    const run = await runCli('sweep', TINY, '--out', out, '--preset', 'quick', '--max-kld', '0.01', '--markdown', markdown, ...evaluation());
    expect(run.stderr).not.toContain('internal error');
    expect(run.code, run.stderr).toBe(0);
    for (const title of ['GGUF (llama.cpp)', 'ONNX (onnxruntime)', 'WebGPU (MLC tensor cache)']) expect(run.stdout).toContain(title);
    expect(run.stdout).toMatch(/^type\s+size\s+bits\/w\s+ΔPPL\s+mean KLD\s+p99 KLD\s+top-1\s+convert\s+verify\s+result$/m);
    expect(run.stdout).toMatch(/^recommendation: \w+ \S+ \(/m);
    expect(run.stdout).toContain('plot: pareto.svg, pareto.png');
    expect(run.stdout).toMatch(/^sweep: 14 computed, 0 already done; baseline scored once in/m);
    const report = JSON.parse(readFileSync(join(out, 'sweep.json'), 'utf8')) as SweepReport;
    expect(report.schema).toBe('polyquant.sweep/2');
    expect(report.cells).toHaveLength(14);
    expect(report.complete).toBe(true);
    expect(report.verdict).toBe('pass');
    expect(report.plot).toEqual({ svg: 'pareto.svg', png: 'pareto.png' });
    expect(readFileSync(join(out, 'pareto.svg'), 'utf8')).toContain('<svg');
    expect(readFileSync(join(out, 'pareto.png')).subarray(1, 4).toString('latin1')).toBe('PNG');
    // The recommendation is the smallest passing exported cell.
    const passing = report.cells.filter((cell) => cell.status === 'pass');
    const smallest = Math.min(...passing.map((cell) => cell.bytes as number));
    expect(report.recommendation?.bytes).toBe(smallest);
    expect(report.cells.find((cell) => cell.id === 'gguf-q4_k_m')).toMatchObject({ engine: 'llamacpp', status: 'pass' });
    expect(report.cells.find((cell) => cell.id === 'onnx-q4')).toMatchObject({ engine: 'onnx' });
    expect(report.cells.find((cell) => cell.id === 'webgpu-q4f16_1')).toMatchObject({ engine: 'webgpu' });
    expect(report.baseline).toMatchObject({ engine: 'reference' });
    const records = cellRecords(out);
    expect([...records.keys()].sort()).toEqual(report.grid.slice().sort());
    const q4km = records.get('gguf-q4_k_m') as SweepCellRecord;
    expect(q4km.bitsPerWeight).toBeCloseTo(((q4km.bytes as number) * 8) / q4km.model.parameters, 12);
    expect(q4km.report?.schema).toBe('polyquant.verify/2');
    expect(q4km.report?.candidate.path).toBe('gguf-q4_k_m.gguf');
    expect(q4km.summary?.kldMean).toBe(q4km.report?.perplexity[0]?.comparison.kld?.mean);
    // Nothing converted is left behind without --keep-artifacts.
    expect(readdirSync(out).sort()).toEqual(['baseline', 'cells', 'pareto.png', 'pareto.svg', 'sweep.json']);
    const md = readFileSync(markdown, 'utf8');
    expect(md).toMatch(/^## polyquant sweep: PASS — ship /);
    expect(md).toContain('| type | size | bits/w |');
  }, 180_000); // 14 cells converted and verified: ~30 s alone, past 60 s on a loaded 2-core machine

  it('resumes: a rerun skips finished cells, new thresholds gate them again without recomputing, --force redoes them', async () => {
    const out = join(scratch.fresh(), 'sweep');
    const flags = ['--types', 'q8_0,q4_0,onnx:q4', ...evaluation()];
    const first = await runCli('sweep', TINY, '--out', out, ...flags);
    expect(first.code, first.stderr).toBe(0);
    const before = cellRecords(out);
    const mtimes = new Map([...before.keys()].map((id) => [id, statSync(join(out, 'cells', `${id}.json`)).mtimeMs]));
    const again = await runCli('sweep', TINY, '--out', out, ...flags);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/^sweep: 0 computed, 3 already done;/m);
    for (const id of before.keys()) expect(statSync(join(out, 'cells', `${id}.json`)).mtimeMs).toBe(mtimes.get(id));
    // A threshold every cell fails: numbers kept, verdicts changed, exit 1.
    const strict = await runCli('sweep', TINY, '--out', out, ...flags, '--max-kld', '1e-12');
    expect(strict.code).toBe(1);
    expect(strict.stdout).toMatch(/^sweep: 0 computed, 3 already done;/m);
    expect(strict.stdout).toContain('recommendation: none');
    const regated = cellRecords(out);
    for (const [id, record] of regated) {
      expect(record.verdict).toBe('fail');
      expect(record.summary).toEqual(before.get(id)?.summary);
      expect(record.convertSeconds).toBe(before.get(id)?.convertSeconds);
      expect(record.failed[0]).toMatch(/mean_kld/);
    }
    const forced = await runCli('sweep', TINY, '--out', out, ...flags, '--force');
    expect(forced.stdout).toMatch(/^sweep: 3 computed, 0 already done;/m);
    for (const [id, record] of cellRecords(out)) expectSameNumbers(withoutTimings(record), withoutTimings(before.get(id)));
  });

  it('refuses with exit 2 a folder of another model or of other settings, and takes it over with --force', async () => {
    const out = join(scratch.fresh(), 'sweep');
    const run = await runCli('sweep', TINY, '--out', out, '--types', 'q8_0', ...evaluation());
    expect(run.code).toBe(0);
    const other = await makeTinyModel(scratch.fresh());
    const otherModel = await runCli('sweep', other, '--out', out, '--types', 'q8_0', ...evaluation());
    expect(otherModel.code).toBe(2);
    expect(otherModel.stderr).toMatch(/holds a sweep of another model/);
    const otherSettings = await runCli('sweep', TINY, '--out', out, '--types', 'q8_0', ...evaluation({ maxWindows: '1' }));
    expect(otherSettings.code).toBe(2);
    expect(otherSettings.stderr).toMatch(/holds a sweep with other settings \(maxWindows 2 vs 1\)/);
    const forced = await runCli('sweep', TINY, '--out', out, '--types', 'q4_0', ...evaluation({ maxWindows: '1' }), '--force');
    expect(forced.code, forced.stderr).toBe(0);
    expect([...cellRecords(out).keys()]).toEqual(['gguf-q4_0']);
  });

  it('exits 2 on bad input before converting anything', async () => {
    const out = join(scratch.fresh(), 'sweep');
    const cases: [string[], RegExp][] = [
      [['--formats', 'tflite'], /--formats: "tflite" is not a format/],
      [['--types', 'q9_9'], /--types: "q9_9" is not a type of gguf, onnx, webgpu/],
      [['--formats', 'gguf', '--types', 'q4'], /q4 is a onnx type: add it to --formats/],
      [['--shard', '3/3'], /--shard "3\/3" is not I\/N/],
      [['--shard', 'abc'], /--shard "abc" is not I\/N/],
      [['--preset', 'huge'], /Invalid values|preset/],
      [['--baseline-cache-limit', 'lots'], /--baseline-cache-limit "lots" is not a size/],
    ];
    for (const [flags, message] of cases) {
      const run = await runCli('sweep', TINY, '--out', out, ...evaluation(), ...flags);
      expect(run.code, `${flags.join(' ')}: ${run.stderr}`).toBe(2);
      expect(run.stderr).toMatch(message);
    }
    const shortCtx = await runCli('sweep', TINY, '--out', out, ...evaluation({ ctx: '1' }));
    expect(shortCtx.code).toBe(2);
    expect(shortCtx.stderr).toMatch(/--ctx 1 is out of range/);
    const nothing = await runCli('sweep', TINY, '--out', out, '--ctx', '64');
    expect(nothing.code).toBe(2);
    expect(nothing.stderr).toMatch(/nothing to measure/);
    const missing = await runCli('sweep', join(scratch.path, 'no-such-model'), '--out', out, ...evaluation());
    expect(missing.code).toBe(2);
    const noCells = await runCli('sweep', 'report', scratch.fresh());
    expect(noCells.code).toBe(2);
    expect(noCells.stderr).toMatch(/holds no sweep cells/);
    expect(existsSync(join(out, 'cells')) ? readdirSync(join(out, 'cells')) : []).toEqual([]);
  });

  it('simulate cells: the reference engine on quantized weights, sizes from the plan, no file written', async () => {
    const out = join(scratch.fresh(), 'sweep');
    const result = await runSweep({ model: TINY, out, simulate: true, types: ['q4_0', 'q4f16_1'], pplFiles: [text], ctx: 64, maxWindows: 2, threads: 1, cacheDir });
    expect(result.computed).toEqual(['simulate-q4_0', 'simulate-q4f16_1']);
    const records = cellRecords(out);
    const q4 = records.get('simulate-q4_0') as SweepCellRecord;
    expect(q4).toMatchObject({ engine: 'reference', artifact: { planned: true, kept: false } });
    expect(q4.report?.candidate.simulate).toBe('q4_0');
    expect(q4.bytes).toBeGreaterThan(0);
    // The recommendation falls back on simulate cells when the sweep has nothing else.
    expect(result.report.recommendation?.format).toBe('simulate');
  });

  it('keeps the artifacts with --keep-artifacts, and the report command re-gates and writes JSON and Markdown', async () => {
    const out = join(scratch.fresh(), 'sweep');
    const run = await runCli('sweep', TINY, '--out', out, '--types', 'q4_0,onnx:q4,webgpu:q4f16_1', '--keep-artifacts', ...evaluation());
    expect(run.code, run.stderr).toBe(0);
    expect(readdirSync(join(out, 'artifacts')).sort()).toEqual(['gguf-q4_0.gguf', 'onnx-q4', 'webgpu-q4f16_1']);
    expect(cellRecords(out).get('onnx-q4')?.report?.candidate.path).toBe('artifacts/onnx-q4/onnx/model_q4.onnx');
    const json = join(scratch.path, 'report.json');
    const markdown = join(scratch.path, 'report.md');
    const report = await runCli('sweep', 'report', out, '--json', json, '--markdown', markdown);
    expect(report.code).toBe(0);
    expect(report.stdout).toContain('★ recommended');
    expect((JSON.parse(readFileSync(json, 'utf8')) as SweepReport).verdict).toBe('pass');
    expect(readFileSync(markdown, 'utf8')).toContain('### GGUF (llama.cpp)');
    const gated = await runCli('sweep', 'report', out, '--max-kld', '1e-12');
    expect(gated.code).toBe(1);
    expect(gated.stdout).toContain('recommendation: none — no cell passes every threshold');
    // report re-gates in memory only: the cell files keep the thresholds they ran with.
    expect(cellRecords(out).get('gguf-q4_0')?.verdict).toBe('pass');
  });

  it('gives the same numbers with and without the baseline cache', async () => {
    const options = { model: TINY, types: ['q4_0', 'onnx:q8'], pplFiles: [text], ctx: 64, maxWindows: 2, threads: 1, cacheDir };
    const cached = await runSweep({ ...options, out: join(scratch.fresh(), 'cached') });
    const plain = await runSweep({ ...options, out: join(scratch.fresh(), 'plain'), baselineCache: false });
    expect(cached.baselineStats).toMatchObject({ windowsScored: 2, windowsReplayed: 4, engineLoads: 1 });
    expect(plain.baselineStats).toBeNull();
    const a = cellRecords(cached.dir);
    const b = cellRecords(plain.dir);
    for (const [id, record] of a) expectSameNumbers(withoutTimings(record), withoutTimings(b.get(id)));
  });
});
