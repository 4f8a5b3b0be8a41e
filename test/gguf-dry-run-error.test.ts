import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { convertToGguf } from '../src/converters/gguf/convert.js';
import { readAsF32 } from '../src/converters/gguf/source-rows.js';
import { dequantizeRows, quantizeRows } from '../src/quant/api.js';
import { readCheckpoint } from '../src/readers/checkpoint.js';
import { runCli } from './helpers/cli.js';
import { expectPolyquantError } from './helpers/errors.js';

const FIXTURE_DIR = join(import.meta.dirname, '..', 'fixtures', 'tiny-neox');

describe('convert --dry-run --error', () => {
  it("reports each tensor's quantization error, equal to quantize → dequantize of the source", async () => {
    const plan = await convertToGguf(FIXTURE_DIR, { type: 'q4_k_m', dryRun: true, error: true, workers: 1 });
    expect(plan.out).toBeUndefined();
    expect(plan.tensors.every((tensor) => tensor.error !== undefined)).toBe(true);
    for (const tensor of plan.tensors.filter((t) => t.type === 'F32')) {
      expect(tensor.error).toMatchObject({ rmse: 0, maxAbsError: 0, sqnrDb: Number.POSITIVE_INFINITY, cosineSimilarity: 1 });
    }
    // An independent recomputation for a tensor the converter does not reorder.
    const checkpoint = await readCheckpoint(FIXTURE_DIR);
    const down = plan.tensors.find((tensor) => tensor.name === 'blk.1.ffn_down.weight');
    expect(down?.type).toBe('Q6_K');
    const source = await readAsF32(checkpoint.tensors.get(down?.source ?? '')!);
    const rowLength = down!.ne[0]!;
    const decoded = dequantizeRows('Q6_K', quantizeRows('Q6_K', source, rowLength), rowLength);
    let squared = 0;
    let max = 0;
    for (let i = 0; i < source.length; i++) {
      const error = source[i]! - decoded[i]!;
      squared += error * error;
      max = Math.max(max, Math.abs(error));
    }
    expect(down!.error!.count).toBe(source.length);
    expect(down!.error!.rmse).toBeCloseTo(Math.sqrt(squared / source.length), 12);
    expect(down!.error!.maxAbsError).toBe(max);
    expect(down!.error!.sqnrDb).toBeGreaterThan(20);
    // Every quantized tensor loses something; Q8_0 loses less than Q5_0 on the same kind of weights.
    const quantized = plan.tensors.filter((tensor) => tensor.type !== 'F32');
    expect(quantized.every((tensor) => tensor.error!.rmse > 0 && tensor.error!.cosineSimilarity < 1)).toBe(true);
  });

  it('prints error columns and the worst tensor; refuses --error without --dry-run', async () => {
    const run = await runCli('convert', FIXTURE_DIR, '--type', 'q4_0', '--dry-run', '--error', '--workers', '1');
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/rmse\s+max \|err\|\s+sqnr dB\s+cosine/);
    expect(run.stdout).toMatch(/^worst {6}blk\.\d\.\w+\.weight \(Q4_0\): SQNR \d+\.\d\d dB/m);
    const refused = await runCli('convert', FIXTURE_DIR, '--type', 'q4_0', '--error', '--out', join(FIXTURE_DIR, 'never.gguf'));
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/dry run/);
    await expectPolyquantError(convertToGguf(FIXTURE_DIR, { type: 'q4_0', out: '/nonexistent/x.gguf', error: true }), 'usage', 'dry run');
  });
});
