/**
 * Type names in any case, everywhere a user or a library caller names one (as llama-quantize's
 * `striequals`): GGUF file types, ggml types, ONNX types and WebGPU layouts. Messages keep listing the
 * canonical spellings.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { convertToGguf } from '../src/converters/gguf/convert.js';
import { convertToOnnx } from '../src/converters/onnx/convert.js';
import { convertToWebGpu } from '../src/converters/webgpu/convert.js';
import { ERROR_CODES, PolyquantError } from '../src/errors.js';
import {
  canonicalGgmlTypeName,
  dequantizeRows,
  dequantizeRowsInto,
  type GgmlTypeName,
  quantizeRows,
  quantizeRowsInto,
  rowBytes,
  tensorBytes,
} from '../src/quant/index.js';
import { canonicalGgufFileType, tensorTypeFor } from '../src/quant/policy.js';
import { quantizeWebGpu, webGpuLayout } from '../src/quant/webgpu-layouts.js';
import { planGrid } from '../src/sweep/grid.js';
import type { VerifyReport } from '../src/verify/report.js';
import { simulationScheme } from '../src/verify/simulate.js';
import { runCli } from './helpers/cli.js';
import { REPO_ROOT } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-type-names-');
afterAll(() => scratch.remove());
const TINY = join(REPO_ROOT, 'fixtures', 'tiny-neox');

function rows(length: number): Float32Array {
  return Float32Array.from({ length }, (_, i) => Math.sin(i * 0.37) * 0.05 + (i % 7) * 0.001);
}

function caught(body: () => unknown): PolyquantError {
  try {
    body();
  } catch (error) {
    if (error instanceof PolyquantError) return error;
    throw error;
  }
  throw new Error('expected a PolyquantError');
}

describe('the library takes type names in any case', () => {
  it('quantizes and dequantizes with q4_k, Q4_K and q4_K alike (quantizeRows, quantizeRowsInto, dequantizeRows, dequantizeRowsInto)', () => {
    const src = rows(512);
    const canonical = quantizeRows('Q4_K', src, 256);
    expect(quantizeRows('q4_k', src, 256)).toEqual(canonical);
    expect(quantizeRows('q4_K' as GgmlTypeName, src, 256)).toEqual(canonical);
    expect(quantizeRowsInto('q4_k', src, 256, new Uint8Array(canonical.length))).toEqual(canonical);
    expect(dequantizeRows('q4_k', canonical, 256)).toEqual(dequantizeRows('Q4_K', canonical, 256));
    expect(dequantizeRowsInto('iq4_nl', quantizeRows('IQ4_NL', src, 256), 256, new Float32Array(512))).toEqual(
      dequantizeRows('IQ4_NL', quantizeRows('iq4_nl', src, 256), 256),
    );
    expect(quantizeRows('bf16', src, 256)).toEqual(quantizeRows('BF16', src, 256));
    expect(rowBytes('q8_0', 64)).toBe(rowBytes('Q8_0', 64));
    expect(tensorBytes('q6_k', 512, 256)).toBe(2 * 210);
    expect(canonicalGgmlTypeName('iq4_xs')).toBe('IQ4_XS');
  });

  it('still refuses a name that is no type in any case, listing the canonical names', () => {
    const error = caught(() => quantizeRows('q4_z' as GgmlTypeName, rows(32), 32));
    expect(error.code).toBe(ERROR_CODES.UNSUPPORTED);
    expect(error.message).toContain('"q4_z"');
    expect(error.message).toContain('Q4_K');
    expect(error.message).toContain('IQ4_XS');
  });

  it('chooses GGUF tensor types for Q4_K_M as for q4_k_m, and reads llama-quantize\'s Q4_K alias as q4_k_m', () => {
    const model = { numLayers: 8, tiedEmbeddings: false, imatrix: false };
    for (const name of ['blk.0.attn_qkv.weight', 'blk.3.ffn_down.weight', 'output.weight', 'token_embd.weight']) {
      expect(tensorTypeFor('Q4_K_M', { name, ne: [256, 256] }, model)).toBe(tensorTypeFor('q4_k_m', { name, ne: [256, 256] }, model));
    }
    expect(canonicalGgufFileType('Q4_K')).toBe('q4_k_m');
    expect(canonicalGgufFileType(' IQ4_XS ')).toBe('iq4_xs');
    expect(canonicalGgufFileType('q4_k_xl')).toBeUndefined();
    expect(() => tensorTypeFor('Q9_K' as 'q4_k_m', { name: 'output.weight', ne: [256, 256] }, model)).toThrow(/q4_k_m/);
  });

  it('converts to GGUF Q4_K_M, ONNX Q4,FP16 and WebGPU Q4F16_1 as to their lower-case names', async () => {
    const gguf = await convertToGguf(TINY, { type: 'Q4_K_M', dryRun: true });
    expect(gguf.fileType).toBe('q4_k_m');
    expect(gguf.tensors).toEqual((await convertToGguf(TINY, { type: 'q4_k_m', dryRun: true })).tensors);
    const onnx = await convertToOnnx(TINY, { types: ['Q4', 'FP16'], out: join(scratch.path, 'onnx'), dryRun: true });
    expect(onnx.models.map((model) => model.type)).toEqual(['q4', 'fp16']);
    const webgpu = await convertToWebGpu(TINY, { types: ['Q4F16_1'], out: join(scratch.path, 'webgpu'), dryRun: true });
    expect(webgpu.models.map((model) => model.type)).toEqual(['q4f16_1']);
  });

  it('reads WebGPU layouts, --simulate schemes and sweep grid types in any case', () => {
    expect(webGpuLayout('Q4F16_1').name).toBe('q4f16_1');
    const weight = rows(64 * 32);
    expect(quantizeWebGpu('Q4F16_1', weight, 64, 32)).toEqual(quantizeWebGpu('q4f16_1', weight, 64, 32));
    expect(simulationScheme('Q4_K_M')).toEqual({ format: 'gguf', fileType: 'q4_k_m' });
    expect(simulationScheme('q4_k')).toEqual({ format: 'gguf', fileType: 'q4_k_m' });
    expect(simulationScheme('Q4F16_1')).toEqual({ format: 'webgpu', layout: 'q4f16_1' });
    const cells = planGrid({ formats: ['GGUF', 'WebGPU'], types: ['GGUF:Q4_K_M', 'Q8_0', 'WEBGPU:Q4F16_1'] });
    expect(cells.map((cell) => cell.id)).toEqual(planGrid({ formats: ['gguf', 'webgpu'], types: ['gguf:q4_k_m', 'q8_0', 'webgpu:q4f16_1'] }).map((cell) => cell.id));
  });
});

describe('the command line takes type names in any case', () => {
  it('convert --type Q4_K_M, --to onnx --type Q4,FP16 and --to webgpu --type Q4F16_1', async () => {
    const gguf = await runCli('convert', TINY, '--type', 'Q4_K_M', '--dry-run');
    expect(gguf.code, gguf.stderr).toBe(0);
    expect(gguf.stdout).toContain('file type  q4_k_m (general.file_type 15)');
    const alias = await runCli('convert', TINY, '--type', 'Q4_K', '--dry-run');
    expect(alias.stdout).toContain('file type  q4_k_m (general.file_type 15)');
    const onnx = await runCli('convert', TINY, '--to', 'onnx', '--type', 'Q4,FP16', '--dry-run', '--out', join(scratch.path, 'cli-onnx'));
    expect(onnx.code, onnx.stderr).toBe(0);
    expect(onnx.stdout).toMatch(/^q4 +onnx\/model_q4\.onnx/m);
    expect(onnx.stdout).toMatch(/^fp16 +onnx\/model_fp16\.onnx/m);
    const webgpu = await runCli('convert', TINY, '--to', 'webgpu', '--type', 'Q4F16_1', '--dry-run', '--out', join(scratch.path, 'cli-webgpu'));
    expect(webgpu.code, webgpu.stderr).toBe(0);
    expect(webgpu.stdout).toMatch(/^q4f16_1 /m);
  });

  it('convert --type with an unknown name exits 2 listing the canonical names', async () => {
    const run = await runCli('convert', TINY, '--type', 'Q4_K_XL', '--dry-run');
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('"Q4_K_XL" is not a GGUF file type');
    expect(run.stderr).toContain('q4_k_m');
    const tensorType = await runCli('convert', TINY, '--type', 'Q4_0', '--tensor-type', 'FFN_UP=Q8_0', '--output-tensor-type', 'F16', '--dry-run', '--json');
    expect(tensorType.code, tensorType.stderr).toBe(0);
    const plan = JSON.parse(tensorType.stdout) as { tensors: { name: string; type: string }[] };
    expect(plan.tensors.find((tensor) => tensor.name === 'blk.0.ffn_up.weight')?.type).toBe('Q8_0');
    expect(plan.tensors.find((tensor) => tensor.name === 'output.weight')?.type).toBe('F16');
  });

  it('verify --simulate Q4_K_M runs the q4_k_m mixture', async () => {
    const text = join(scratch.path, 'sample.txt');
    writeFileSync(text, '서울은 한강을 끼고 있는 큰 도시이다. The quick brown fox jumps over the lazy dog. '.repeat(12));
    const json = join(scratch.path, 'simulate.json');
    const run = await runCli('verify', TINY, '--baseline', TINY, '--simulate', 'Q4_K_M', '--ppl', text, '--ctx', '32', '--max-windows', '1', '--threads', '1', '--json', json);
    expect(run.code, run.stderr).toBe(0);
    expect((JSON.parse(readFileSync(json, 'utf8')) as VerifyReport).candidate.simulate).toBe('q4_k_m');
  }, 60_000);

  it('sweep --types SIMULATE:Q4_K_M runs the simulate q4_k_m cell', async () => {
    const text = join(scratch.path, 'sweep.txt');
    writeFileSync(text, '서울은 한강을 끼고 있는 큰 도시이다. '.repeat(20));
    const out = join(scratch.path, 'sweep');
    const run = await runCli('sweep', TINY, '--out', out, '--simulate', '--types', 'SIMULATE:Q4_K_M', '--ppl', text, '--ctx', '32', '--max-windows', '1', '--threads', '1', '--no-kld', '--cache-dir', join(scratch.path, 'cache'));
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^q4_k_m +\d/m);
    expect(run.stdout).toContain('recommendation: simulate q4_k_m');
  }, 60_000);
});
