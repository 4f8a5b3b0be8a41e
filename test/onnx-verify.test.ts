/**
 * Every ONNX type, verified against its HF folder in the engine that runs it: the mean KL divergence from
 * the HF model orders the types by precision (issue #9's acceptance, on polyglot-ko-tiny).
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToOnnx } from '../src/converters/onnx/convert.js';
import { ONNX_TYPE_NAMES } from '../src/converters/onnx/types.js';
import { verify } from '../src/verify/verify.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, sharedPath } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-onnx-verify-');
afterAll(() => scratch.remove());

describe.skipIf(!HAS_SHARED)('verify on every ONNX type of polyglot-ko-tiny', () => {
  const folder = join(scratch.path, 'polyglot-ko-tiny-onnx');
  beforeAll(async () => {
    await convertToOnnx(POLYGLOT_TINY_DIR, { types: [...ONNX_TYPE_NAMES], out: folder });
  }, 120_000);

  it('loads each type in onnxruntime-node and orders mean KLD fp32 < fp16 < q8 < q4', async () => {
    const kld: Record<string, number> = {};
    for (const onnxType of ONNX_TYPE_NAMES) {
      const report = await verify({
        candidate: folder,
        onnxType,
        baseline: POLYGLOT_TINY_DIR,
        pplFiles: [sharedPath('data', 'korean-text', 'valid.txt')],
        ctx: 256,
        maxWindows: 2,
        device: 'cpu',
      });
      expect(report.candidate.engine).toBe('onnx');
      expect(report.candidate.path).toBe(join(folder, 'onnx', onnxType === 'fp32' ? 'model.onnx' : `model_${{ fp16: 'fp16', q8: 'quantized', q4: 'q4', q4f16: 'q4f16' }[onnxType]}.onnx`));
      const section = report.perplexity[0];
      expect(section?.candidate.non_finite_positions).toBe(0);
      kld[onnxType] = section?.comparison.kld?.mean ?? Number.NaN;
    }
    expect(kld.fp32).toBeLessThan(kld.fp16 as number);
    expect(kld.fp16).toBeLessThan(kld.q8 as number);
    expect(kld.q8).toBeLessThan(kld.q4 as number);
    // q4f16 quantizes like q4 and runs in float16: close to q4, far above fp16.
    expect(kld.q4f16).toBeGreaterThan(kld.fp16 as number);
  }, 300_000);
});
