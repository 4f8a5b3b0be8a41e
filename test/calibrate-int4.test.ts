/**
 * Calibrated int4 for ONNX (MatMulNBits) and WebGPU (q4f16_1): the converters with calibration Hessians
 * quantize with GPTQ into the same layouts, the files load in the engines that run them (onnxruntime-node;
 * the webgpu engine on Dawn, skipped where no adapter can be made), record the calibration in their
 * metadata, and measure closer to the baseline than round-to-nearest; and `convert --calibrate` does it
 * from the command line. On the bundled tiny model, and on polyglot-ko-tiny when ../shared is there.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { computeHessians, type HessianResult } from '../src/calibrate/hessian.js';
import { convertToOnnx } from '../src/converters/onnx/convert.js';
import { readOnnxModel } from '../src/converters/onnx/read.js';
import { convertToWebGpu } from '../src/converters/webgpu/convert.js';
import { ERROR_CODES, PolyquantError } from '../src/errors.js';
import { verify } from '../src/verify/verify.js';
import { runCli } from './helpers/cli.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, REPO_ROOT, sharedPath } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';
import { openTestDevice } from './helpers/webgpu.js';

const probe = await openTestDevice();
const webgpu = probe.dawn !== undefined;
probe.dawn?.release();
if (!webgpu) console.warn(`calibrate-int4 WebGPU checks skipped: no WebGPU adapter (${probe.reason})`);

const TINY = join(REPO_ROOT, 'fixtures', 'tiny-neox');
const scratch = tempDir('polyquant-calibrate-int4-');
afterAll(() => scratch.remove());

/** Calibration and evaluation texts that share a style but not their sentences. */
const CALIBRATION = `${Array.from({ length: 80 }, (_, i) => `문장 ${i}: 한국어 모델을 양자화합니다. The quick brown fox ${i * 7} jumps.`).join('\n')}\n`;
const EVALUATION = `${Array.from({ length: 40 }, (_, i) => `평가 ${i}: 작은 모델이 다음 낱말을 맞힙니다. A lazy dog ${i * 3 + 1} sleeps.`).join('\n')}\n`;

/** Mean KLD of a candidate folder against the HF folder, in the engine that runs the candidate. */
async function meanKld(candidate: string, baseline: string, text: string, ctx: number, windows: number, onnxType?: 'q4'): Promise<number> {
  const report = await verify({ candidate, baseline, pplFiles: [text], ctx, maxWindows: windows, threads: 1, device: 'cpu', ...(onnxType && { onnxType }) });
  const kld = report.perplexity[0]?.comparison.kld?.mean;
  expect(kld).toBeTypeOf('number');
  return kld as number;
}

describe('GPTQ-calibrated ONNX q4 and WebGPU q4f16_1 on the bundled tiny model', () => {
  let calibration: string;
  let evaluation: string;
  let hessians: HessianResult;
  beforeAll(async () => {
    calibration = join(scratch.path, 'calibration.txt');
    evaluation = join(scratch.path, 'evaluation.txt');
    writeFileSync(calibration, CALIBRATION);
    writeFileSync(evaluation, EVALUATION);
    hessians = await computeHessians(TINY, { texts: [calibration], ctx: 64, threads: 1, head: true });
  }, 60_000);

  it('writes the same initializers as RTN with other bytes, records GPTQ in the model metadata, and measures closer to the baseline in onnxruntime', async () => {
    const rtn = join(scratch.path, 'onnx-rtn');
    const gptq = join(scratch.path, 'onnx-gptq');
    const plain = await convertToOnnx(TINY, { types: ['q4'], out: rtn, workers: 0 });
    const calibrated = await convertToOnnx(TINY, { types: ['q4'], out: gptq, workers: 0, hessians: hessians.entries, gptq: { provenance: { datasets: ['calibration.txt'] } } });
    const [plainModel, calibratedModel] = [plain.models[0]!, calibrated.models[0]!];
    expect(plainModel.calibrated).toEqual([]);
    // Four linears per block and the head: every MatMulNBits weight has a Hessian.
    expect(calibratedModel.calibrated).toHaveLength(2 * 4 + 1);
    expect(calibratedModel.calibrated).toContain('embed_out.weight');
    expect(calibratedModel.initializers).toEqual(plainModel.initializers);
    const data = (folder: string): Buffer => readFileSync(join(folder, 'onnx', 'model_q4.onnx_data'));
    expect(data(gptq).equals(data(rtn))).toBe(false);

    const summary = await readOnnxModel(join(gptq, 'onnx', 'model_q4.onnx'));
    const note = JSON.parse(summary.metadata['polyquant.calibration'] ?? '{}') as Record<string, unknown>;
    expect(note).toMatchObject({ method: 'gptq', dampening: 0.01, datasets: ['calibration.txt'] });
    expect(note['tensors']).toEqual(calibratedModel.calibrated);
    expect((await readOnnxModel(join(rtn, 'onnx', 'model_q4.onnx'))).metadata['polyquant.calibration']).toBeUndefined();

    const [rtnKld, gptqKld] = [await meanKld(rtn, TINY, evaluation, 64, 4, 'q4'), await meanKld(gptq, TINY, evaluation, 64, 4, 'q4')];
    expect(gptqKld).toBeLessThan(rtnKld);
  }, 120_000);

  it('writes the same records as RTN with GPTQ recorded in the tensor cache metadata (the embedding, a lookup, stays RTN)', async () => {
    const rtn = join(scratch.path, 'webgpu-rtn');
    const gptq = join(scratch.path, 'webgpu-gptq');
    await convertToWebGpu(TINY, { types: ['q4f16_1'], out: rtn, workers: 0 });
    const plan = await convertToWebGpu(TINY, { types: ['q4f16_1'], out: gptq, workers: 0, hessians: hessians.entries });
    expect(plan.calibrated).toHaveLength(2 * 4 + 1);
    const manifest = (folder: string): { metadata: Record<string, unknown>; records: { records: { name: string; byteOffset: number }[] }[] } =>
      JSON.parse(readFileSync(join(folder, 'tensor-cache.json'), 'utf8'));
    const [plain, calibrated] = [manifest(rtn), manifest(gptq)];
    expect(calibrated.records.map((shard) => shard.records)).toEqual(plain.records.map((shard) => shard.records));
    expect(plain.metadata['PolyquantCalibration']).toBeUndefined();
    expect(calibrated.metadata['PolyquantCalibration']).toMatchObject({ method: 'gptq', tensors: plan.calibrated });
    expect(calibrated.metadata['ParamSize']).toBe(plain.metadata['ParamSize']);
  }, 60_000);

  it.skipIf(!webgpu)('the calibrated WebGPU folder runs in the webgpu engine and measures closer to the baseline than RTN', async () => {
    const [rtnKld, gptqKld] = [
      await meanKld(join(scratch.path, 'webgpu-rtn'), TINY, evaluation, 64, 2),
      await meanKld(join(scratch.path, 'webgpu-gptq'), TINY, evaluation, 64, 2),
    ];
    expect(gptqKld).toBeLessThan(rtnKld);
  }, 120_000);

  it('refuses a Hessian of another model, naming the tensor and both sizes', async () => {
    const wrong = new Map([['gpt_neox.layers.0.attention.dense.weight', { columns: 32, matrix: new Float64Array(32 * 32) }]]);
    const error = await convertToOnnx(TINY, { types: ['q4'], out: join(scratch.fresh(), 'out'), workers: 0, hessians: wrong }).then(
      () => undefined,
      (reason: unknown) => reason,
    );
    expect(error).toBeInstanceOf(PolyquantError);
    expect((error as PolyquantError).code).toBe(ERROR_CODES.CONFIG);
    expect((error as PolyquantError).message).toMatch(/32 columns .* K = 64/);
    expect((error as PolyquantError).tensor).toBe('gpt_neox.layers.0.attention.dense.weight');
  });
});

describe('convert --calibrate for ONNX and WebGPU on the command line', () => {
  let text: string;
  beforeAll(() => {
    text = join(scratch.path, 'cli-calibration.txt');
    writeFileSync(text, CALIBRATION);
  });

  it('--to onnx --type q4 --calibrate TEXT --calibrate-chunks N quantizes with GPTQ, says so, and records the text and chunks', async () => {
    const out = join(scratch.fresh(), 'onnx');
    const run = await runCli('convert', TINY, '--to', 'onnx', '--type', 'q4', '--calibrate', text, '--calibrate-chunks', '2', '--threads', '1', '--out', out);
    expect(run.stderr).not.toMatch(/error/i);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/calibrate +GPTQ on .*cli-calibration\.txt \(2 chunks\): 9 Hessians, 2 chunks × 128 tokens .*; 9 weights quantized with GPTQ/);
    const note = JSON.parse((await readOnnxModel(join(out, 'onnx', 'model_q4.onnx'))).metadata['polyquant.calibration'] ?? '{}') as Record<string, unknown>;
    expect(note).toMatchObject({ method: 'gptq', datasets: [text], chunk_count: 2, chunk_size: 128 });
  }, 60_000);

  it('--to onnx --keep-head leaves the head in float and computes no Hessian for it', async () => {
    const out = join(scratch.fresh(), 'onnx');
    const run = await runCli('convert', TINY, '--to', 'onnx', '--type', 'q4', '--keep-head', '--calibrate', text, '--calibrate-chunks', '1', '--threads', '1', '--out', out);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/: 8 Hessians, .*; 8 weights quantized with GPTQ/);
  }, 60_000);

  it('--to webgpu --type q4f16_1 --calibrate TEXT quantizes with GPTQ and records it in tensor-cache.json', async () => {
    const out = join(scratch.fresh(), 'webgpu');
    const run = await runCli('convert', TINY, '--to', 'webgpu', '--type', 'q4f16_1', '--calibrate', text, '--calibrate-chunks', '2', '--threads', '1', '--out', out);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/calibrate +GPTQ on .*: 9 Hessians, .*; 9 weights quantized with GPTQ/);
    const manifest = JSON.parse(readFileSync(join(out, 'tensor-cache.json'), 'utf8')) as { metadata: Record<string, unknown> };
    expect(manifest.metadata['PolyquantCalibration']).toMatchObject({ method: 'gptq', datasets: [text], chunk_count: 2 });
  }, 60_000);

  it.each([
    [['--to', 'onnx', '--type', 'q8', '--q8-format', 'integer'], /--calibrate needs a type whose weights are quantized in blocks/],
    [['--to', 'webgpu', '--type', 'q0f32'], /calibration \(GPTQ\) applies to WebGPU/],
  ])('exits 2 for a type GPTQ cannot fill: %j', async (flags, message) => {
    const run = await runCli('convert', TINY, '--calibrate', text, ...flags, '--out', join(scratch.fresh(), 'out'));
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(message);
  });

  it('--calibrate-chunks needs --calibrate for ONNX and WebGPU too', async () => {
    for (const flags of [['--to', 'onnx', '--type', 'q4'], ['--to', 'webgpu', '--type', 'q4f16_1']]) {
      const run = await runCli('convert', TINY, ...flags, '--calibrate-chunks', '2', '--dry-run');
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(/--calibrate-chunks needs --calibrate/);
    }
  });
});

describe.skipIf(!HAS_SHARED)('GPTQ-calibrated int4 on polyglot-ko-tiny (calibrated on train.txt, measured on valid.txt)', () => {
  const valid = sharedPath('data', 'korean-text', 'valid.txt');
  let hessians: HessianResult;
  beforeAll(async () => {
    hessians = await computeHessians(POLYGLOT_TINY_DIR, { texts: [sharedPath('data', 'korean-text', 'train.txt')], ctx: 128, chunks: 4, threads: 2, head: true });
  }, 120_000);

  it('ONNX q4: the GPTQ file loads in onnxruntime and its mean KLD is lower than the RTN file\'s', async () => {
    const rtn = join(scratch.path, 'polyglot-onnx-rtn');
    const gptq = join(scratch.path, 'polyglot-onnx-gptq');
    await convertToOnnx(POLYGLOT_TINY_DIR, { types: ['q4'], out: rtn, workers: 1 });
    await convertToOnnx(POLYGLOT_TINY_DIR, { types: ['q4'], out: gptq, workers: 1, hessians: hessians.entries });
    const [rtnKld, gptqKld] = [await meanKld(rtn, POLYGLOT_TINY_DIR, valid, 128, 2, 'q4'), await meanKld(gptq, POLYGLOT_TINY_DIR, valid, 128, 2, 'q4')];
    expect(gptqKld).toBeLessThan(rtnKld);
  }, 180_000);

  it.skipIf(!webgpu)('WebGPU q4f16_1: the GPTQ folder runs in the webgpu engine and its mean KLD is lower than the RTN folder\'s', async () => {
    const rtn = join(scratch.path, 'polyglot-webgpu-rtn');
    const gptq = join(scratch.path, 'polyglot-webgpu-gptq');
    await convertToWebGpu(POLYGLOT_TINY_DIR, { types: ['q4f16_1'], out: rtn, workers: 1 });
    await convertToWebGpu(POLYGLOT_TINY_DIR, { types: ['q4f16_1'], out: gptq, workers: 1, hessians: hessians.entries });
    const [rtnKld, gptqKld] = [await meanKld(rtn, POLYGLOT_TINY_DIR, valid, 128, 2), await meanKld(gptq, POLYGLOT_TINY_DIR, valid, 128, 2)];
    expect(gptqKld).toBeLessThan(rtnKld);
  }, 240_000);
});
