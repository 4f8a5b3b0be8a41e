/**
 * Issue #13 item 5: calibrated sweep cells (`q4_k_m+imatrix`, `q4_k_m+gptq`, `q4+gptq`, `q4f16_1+gptq`) on
 * the bundled tiny model (always runs): the grid, one calibration shared by the calibrated cells, artifacts
 * equal to `convert` with the same calibration, calibration in the settings key, and exit 2 for bad input.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { computeHessians } from '../src/calibrate/hessian.js';
import { computeImatrix, importanceOf } from '../src/calibrate/imatrix.js';
import { convertToGguf } from '../src/converters/gguf/convert.js';
import { readGgufHeader } from '../src/converters/gguf/format.js';
import { convertToOnnx } from '../src/converters/onnx/convert.js';
import { calibrationMethods, planGrid, splitCellType } from '../src/sweep/grid.js';
import { runSweep } from '../src/sweep/sweep.js';
import { runCli } from './helpers/cli.js';
import { REPO_ROOT } from './helpers/shared.js';
import { cellRecords, sampleTextContent } from './helpers/sweep.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-sweep-calibrate-');
afterAll(() => scratch.remove());
const TINY = join(REPO_ROOT, 'fixtures', 'tiny-neox');
let text: string;
let train: string;
let cacheDir: string;
beforeAll(() => {
  text = join(scratch.path, 'valid.txt');
  writeFileSync(text, sampleTextContent());
  // Calibration text other than the measured text.
  train = join(scratch.path, 'train.txt');
  const sentences = ['부산은 바다를 끼고 있는 항구 도시이다. ', '내일은 비가 오고 바람이 강하게 불겠다. ', 'A stitch in time saves nine, they say. '];
  writeFileSync(train, Array.from({ length: 90 }, (_, i) => sentences[i % 3]).join(''));
  cacheDir = join(scratch.path, 'cache');
});

const evaluation = { ctx: 64, maxWindows: 2, threads: 1 } as const;

/** The tensor data of a GGUF file (after its header: KVs may differ in provenance). */
async function tensorData(file: string): Promise<Buffer> {
  const bytes = readFileSync(file);
  const header = await readGgufHeader(file, bytes.length, async (n) => bytes.subarray(0, n));
  return bytes.subarray(header.dataStart);
}

describe('calibrated cells in the grid', () => {
  it('follows each type with its calibrated variants when --calibrate is given, in canonical order', () => {
    expect(planGrid({ calibrate: true }).map((cell) => cell.id)).toEqual([
      'gguf-q4_0', 'gguf-q4_0+imatrix', 'gguf-q4_0+gptq', 'gguf-q8_0', 'gguf-q8_0+gptq', 'gguf-q4_k_m', 'gguf-q4_k_m+imatrix', 'gguf-q4_k_m+gptq',
      'onnx-fp32', 'onnx-fp16', 'onnx-q8', 'onnx-q8+gptq', 'onnx-q4', 'onnx-q4+gptq', 'onnx-q4f16', 'onnx-q4f16+gptq',
      'webgpu-q4f16_1', 'webgpu-q4f16_1+gptq', 'webgpu-q4f32_1', 'webgpu-q4f32_1+gptq', 'webgpu-q0f16', 'webgpu-q0f32',
      'webgpu-q8f16_pq', 'webgpu-q8f16_pq+gptq', 'webgpu-q8f32_pq', 'webgpu-q8f32_pq+gptq',
    ]);
    // Without --calibrate the presets are as they were.
    expect(planGrid().some((cell) => cell.type.includes('+'))).toBe(false);
    // Named types, any case and with llama-quantize's aliases; the suffix stays.
    expect(planGrid({ types: ['Q4_K+gptq', 'q4+gptq', 'webgpu:q4f16_1+gptq', 'q4_k_m'], calibrate: true }).map((cell) => cell.id)).toEqual([
      'gguf-q4_k_m', 'gguf-q4_k_m+gptq', 'onnx-q4+gptq', 'webgpu-q4f16_1+gptq',
    ]);
    expect(splitCellType('q4_k_m+imatrix')).toEqual({ base: 'q4_k_m', method: 'imatrix' });
    // q8_0 ignores importance weights (llama-quantize writes the same bytes), so it has no +imatrix; iq4_xs has no GPTQ quantizer.
    expect(calibrationMethods('gguf', 'q8_0')).toEqual(['gptq']);
    expect(calibrationMethods('gguf', 'iq4_xs')).toEqual(['imatrix']);
    expect(calibrationMethods('gguf', 'f16')).toEqual([]);
    expect(calibrationMethods('onnx', 'fp16')).toEqual([]);
    expect(calibrationMethods('simulate', 'q4_k_m')).toEqual([]);
  });

  it.each([
    [{ types: ['q4_k_m+gptq'] }, /is a calibrated cell and needs calibration text/],
    [{ types: ['onnx:q4+imatrix'], calibrate: true }, /onnx q4 cannot be calibrated with imatrix/],
    [{ types: ['f16+imatrix'], formats: ['gguf'], calibrate: true }, /gguf f16 cannot be calibrated/],
    [{ types: ['q4_k_m+awq'], calibrate: true }, /names no calibration method/],
    [{ types: ['q4_k_m+gptq'], formats: ['simulate'], calibrate: true }, /simulate q4_k_m cannot be calibrated/],
  ])('refuses %j (USAGE)', (options, message) => {
    expect(() => planGrid(options)).toThrow(message);
  });
});

describe('polyquant sweep --calibrate on the bundled tiny model', () => {
  it('calibrates once for every calibrated cell, writes what convert writes with the same calibration, and resumes without calibrating', async () => {
    const out = join(scratch.fresh(), 'sweep');
    const types = ['q4_0', 'q4_0+imatrix', 'q4_0+gptq', 'onnx:q4', 'onnx:q4+gptq', 'webgpu:q4f16_1+gptq'];
    const options = { model: TINY, out, types, pplFiles: [text], calibrate: [train], calibrateChunks: 3, keepArtifacts: true, cacheDir, ...evaluation };
    const run = await runSweep(options);
    expect(run.errors).toEqual([]);
    expect(run.computed).toEqual(['gguf-q4_0', 'gguf-q4_0+imatrix', 'gguf-q4_0+gptq', 'onnx-q4', 'onnx-q4+gptq', 'webgpu-q4f16_1+gptq']);
    expect(run.calibration).toMatchObject({ chunks: 3 });
    const records = cellRecords(out);
    for (const record of records.values()) {
      expect(record.status).toBe('done');
      expect(record.settings.calibration).toEqual({ texts: [expect.objectContaining({ name: 'train.txt' })], chunks: 3 });
    }
    const artifact = (id: string): string => join(out, 'artifacts', records.get(id)?.artifact?.name.replace(/^artifacts\//, '') ?? '');

    // +imatrix: the importance matrix polyquant imatrix computes from the same chunks (the Hessians' diagonals).
    const imatrix = importanceOf(await computeImatrix(TINY, { texts: [train], chunks: 3 }));
    const reference = join(scratch.path, 'reference-imatrix.gguf');
    await convertToGguf(TINY, { type: 'q4_0', out: reference, imatrix, workers: 1 });
    expect((await tensorData(artifact('gguf-q4_0+imatrix'))).equals(await tensorData(reference))).toBe(true);
    expect((await tensorData(artifact('gguf-q4_0+imatrix'))).equals(await tensorData(artifact('gguf-q4_0')))).toBe(false);

    // +gptq: convert --calibrate --optimize, and the same bytes for ONNX's GPTQ.
    const hessians = (await computeHessians(TINY, { texts: [train], chunks: 3, head: true })).entries;
    const optimized = join(scratch.path, 'reference-gptq.gguf');
    await convertToGguf(TINY, { type: 'q4_0', out: optimized, imatrix, hessians, workers: 1 });
    expect((await tensorData(artifact('gguf-q4_0+gptq'))).equals(await tensorData(optimized))).toBe(true);
    expect((await tensorData(artifact('gguf-q4_0+gptq'))).equals(await tensorData(artifact('gguf-q4_0+imatrix')))).toBe(false);
    const onnx = join(scratch.path, 'reference-onnx');
    const plan = await convertToOnnx(TINY, { types: ['q4'], out: onnx, hessians, workers: 1 });
    const data = (plan.models[0]?.dataFiles ?? []).map((file) => file.name);
    expect(data.length).toBeGreaterThan(0);
    for (const name of data) {
      expect(readFileSync(join(artifact('onnx-q4+gptq'), 'onnx', name)).equals(readFileSync(join(onnx, 'onnx', name))), name).toBe(true);
    }
    const manifest = JSON.parse(readFileSync(join(artifact('webgpu-q4f16_1+gptq'), 'tensor-cache.json'), 'utf8')) as { metadata: Record<string, unknown> };
    expect(manifest.metadata.PolyquantCalibration).toMatchObject({ method: 'gptq', chunk_count: 3, datasets: ['train.txt'] });

    // A calibrated cell weighs as its base type (the same tensors; only metadata differs): of the q4_0
    // cells, the one closest to the baseline is recommended, not the one with the fewest metadata bytes.
    const ggufCells = run.report.cells.filter((cell) => cell.format === 'gguf');
    const closest = ggufCells.reduce((a, b) => ((b.kldMean as number) < (a.kldMean as number) ? b : a));
    expect(run.report.recommendationByFormat['gguf']).toBe(closest.id);
    expect(new Set(ggufCells.map((cell) => cell.kldMean)).size).toBe(3);

    // The report names the calibrated cells like any other.
    const report = JSON.parse(readFileSync(join(out, 'sweep.json'), 'utf8')) as { cells?: { id: string }[] };
    expect(JSON.stringify(report)).toContain('gguf-q4_0+gptq');

    // Resumed: every cell done, nothing calibrated.
    const again = await runSweep(options);
    expect(again.computed).toEqual([]);
    expect(again.skipped).toHaveLength(6);
    expect(again.calibration).toBeNull();

    // Other calibration settings are other settings.
    await expect(runSweep({ ...options, calibrateChunks: 2 })).rejects.toThrow(/other settings \(calibration .*"chunks":3.* vs .*"chunks":2/);
  }, 300_000);

  it('exits 2 for calibrated cells without --calibrate, and for calibration text that is also measured', async () => {
    const flags = ['--ppl', text, '--ctx', '64', '--max-windows', '1', '--threads', '1', '--cache-dir', cacheDir];
    const without = await runCli('sweep', TINY, '--out', join(scratch.fresh(), 'a'), '--types', 'q4_k_m+gptq', ...flags);
    expect(without.code).toBe(2);
    expect(without.stderr).toMatch(/needs calibration text.*--calibrate TEXT/s);
    const tuned = await runCli('sweep', TINY, '--out', join(scratch.fresh(), 'b'), '--types', 'q4_0+imatrix', '--calibrate', resolve(text), ...flags);
    expect(tuned.code).toBe(2);
    expect(tuned.stderr).toMatch(/is also a --ppl text/);
    const chunksAlone = await runCli('sweep', TINY, '--out', join(scratch.fresh(), 'c'), '--types', 'q4_0', '--calibrate-chunks', '2', ...flags);
    expect(chunksAlone.code).toBe(2);
    expect(chunksAlone.stderr).toMatch(/--calibrate-chunks needs --calibrate/);
  }, 120_000);

  it('prints the shared calibration on the command line', async () => {
    const out = join(scratch.fresh(), 'cli');
    const run = await runCli('sweep', TINY, '--out', out, '--types', 'q4_0,q4_0+gptq', '--calibrate', train, '--calibrate-chunks', '2', '--ppl', text, '--ctx', '64', '--max-windows', '1', '--threads', '1', '--cache-dir', cacheDir);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/q4_0\+gptq/);
    expect(run.stdout).toMatch(/calibrated once in [\d.]+ s \(2 chunks × 128 tokens\)/);
  }, 120_000);
});
