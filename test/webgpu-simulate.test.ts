import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { normaliseNeoXConfig } from '../src/arch/gpt-neox.js';
import { convertToWebGpu } from '../src/converters/webgpu/convert.js';
import type { VerifyReport } from '../src/verify/report.js';
import { planSimulation, simulationScheme } from '../src/verify/simulate.js';
import { f16ToF32, f32ToF16 } from '../src/tensor/float.js';
import { runCli } from './helpers/cli.js';
import { REPO_ROOT } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';
import { hfTensor, mlcQkvReorder, writtenRecordBytes } from './helpers/webgpu-expected.js';

const scratch = tempDir('polyquant-webgpu-simulate-');
afterAll(() => scratch.remove());
const TINY = join(REPO_ROOT, 'fixtures', 'tiny-neox');
const config = normaliseNeoXConfig(JSON.parse(readFileSync(join(TINY, 'config.json'), 'utf8')), 'config.json');

/**
 * What a kernel reads from the converted file, decoded here from the spec: MLC int4 `(level − 7) · scale`
 * rounded to the model dtype; polyquant int8 `level · scale` in float32; no-quant the stored values.
 */
function decodeFromFile(dir: string, base: string, type: string, N: number, K: number): Float32Array {
  const out = new Float32Array(N * K);
  const groups = Math.ceil(K / 32);
  if (type.startsWith('q0')) {
    const bytes = writtenRecordBytes(dir, `${base}.weight`);
    if (type === 'q0f32') return new Float32Array(bytes.buffer, bytes.byteOffset, N * K);
    const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, N * K);
    return Float32Array.from(halves, (bits) => f16ToF32(bits));
  }
  const weightBytes = writtenRecordBytes(dir, `${base}.q_weight`);
  const scaleBytes = writtenRecordBytes(dir, `${base}.q_scale`);
  const halfScales = type.includes('f16');
  const scaleOf = (index: number): number =>
    halfScales ? f16ToF32(new Uint16Array(scaleBytes.buffer, scaleBytes.byteOffset)[index] as number) : (new Float32Array(scaleBytes.buffer, scaleBytes.byteOffset)[index] as number);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      const scale = scaleOf(n * groups + Math.floor(k / 32));
      if (type.startsWith('q4')) {
        const word = new Uint32Array(weightBytes.buffer, weightBytes.byteOffset)[n * groups * 4 + Math.floor(k / 8)] as number;
        const level = (word >>> (4 * (k % 8))) & 0xf;
        const product = (level - 7) * scale;
        out[n * K + k] = halfScales ? f16ToF32(f32ToF16(product)) : Math.fround(product);
      } else {
        const level = new Int8Array(weightBytes.buffer, weightBytes.byteOffset)[n * groups * 32 + k] as number;
        out[n * K + k] = Math.fround(level * scale);
      }
    }
  }
  return out;
}

describe('verify --simulate with WebGPU layouts', () => {
  it('accepts the layout names in any case and lists them for an unknown scheme', () => {
    expect(simulationScheme('Q4F16_1')).toEqual({ format: 'webgpu', layout: 'q4f16_1' });
    expect(simulationScheme('q4_k')).toEqual({ format: 'gguf', fileType: 'q4_k_m' });
    expect(() => simulationScheme('q4f64_9')).toThrow(/not a ggml type, GGUF file type or WebGPU layout.*q8f32_pq/);
  });

  it('quantizes every linear, embed_in and embed_out, and leaves norms and biases alone', () => {
    const plan = planSimulation('q4f32_1', config);
    expect(plan.fileType).toBe('q4f32_1');
    expect([...plan.types.keys()]).toEqual([
      'gpt_neox.embed_in.weight',
      ...[0, 1].flatMap((layer) =>
        ['attention.query_key_value', 'attention.dense', 'mlp.dense_h_to_4h', 'mlp.dense_4h_to_h'].map((name) => `gpt_neox.layers.${layer}.${name}.weight`),
      ),
      'embed_out.weight',
    ]);
    const values = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i));
    expect(plan.transform('gpt_neox.final_layer_norm.weight', values, [64])).toBe(values);
    // q0f32 stores float32 weights unchanged: nothing to simulate.
    expect(planSimulation('q0f32', config).types.size).toBe(0);
  });

  for (const type of ['q4f16_1', 'q4f32_1', 'q8f16_pq', 'q0f16'] as const) {
    it(`gives exactly the weights a ${type} file holds`, async () => {
      const out = join(scratch.path, type);
      await convertToWebGpu(TINY, { types: [type], out, workers: 0 });
      const plan = planSimulation(type, config);
      const H = config.hiddenSize;
      for (const [name, base, N, K, reorder] of [
        ['gpt_neox.layers.1.attention.query_key_value.weight', 'gpt_neox.layers.1.attention.query_key_value', 3 * H, H, true],
        ['gpt_neox.layers.0.mlp.dense_4h_to_h.weight', 'gpt_neox.layers.0.mlp.dense_4h_to_h', H, config.intermediateSize, false],
        ['embed_out.weight', 'embed_out', config.vocabSize, H, false],
      ] as const) {
        const simulated = plan.transform(name, await hfTensor(TINY, name), [N, K]);
        // The file holds the fused QKV in MLC's [q; k; v] row order; rows are quantized independently.
        const expected = reorder ? mlcQkvReorder(simulated, config.numHeads, config.headDim, K) : simulated;
        expect(Array.from(decodeFromFile(out, base, type, N, K))).toEqual(Array.from(expected));
      }
    });
  }

  it('runs the reference engine on the simulated weights (verify --simulate q4f16_1)', async () => {
    const text = join(scratch.path, 'sample.txt');
    writeFileSync(text, Array.from({ length: 40 }, (_, i) => ['서울은 한강을 끼고 있는 큰 도시이다. ', 'The quick brown fox jumps over the lazy dog. '][i % 2]).join(''));
    const json = join(scratch.path, 'simulate.json');
    const run = await runCli('verify', TINY, '--baseline', TINY, '--simulate', 'q4f16_1', '--ppl', text, '--ctx', '64', '--max-windows', '2', '--threads', '1', '--json', json);
    expect(run.stderr).not.toContain('internal error');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('simulated q4f16_1');
    const report = JSON.parse(readFileSync(json, 'utf8')) as VerifyReport;
    expect(report.candidate.simulate).toBe('q4f16_1');
    const kld = report.perplexity[0]?.comparison.kld?.mean ?? 0;
    expect(kld).toBeGreaterThan(0);
    expect(kld).toBeLessThan(0.5);
  });
});
