import { cpSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToWebGpu } from '../src/converters/webgpu/convert.js';
import { INSPECT_WEBGPU_SCHEMA, type WebGpuInspectReport } from '../src/inspect/webgpu.js';
import { runCli } from './helpers/cli.js';
import { REPO_ROOT } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-webgpu-inspect-');
afterAll(() => scratch.remove());
const FIXTURE_DIR = join(REPO_ROOT, 'fixtures', 'tiny-neox');

let q4 = '';
let bf16 = '';
beforeAll(async () => {
  q4 = join(scratch.path, 'q4f16_1');
  bf16 = join(scratch.path, 'q4f32_1-bf16');
  await convertToWebGpu(FIXTURE_DIR, { types: ['q4f16_1'], out: q4, workers: 0 });
  await convertToWebGpu(FIXTURE_DIR, { types: ['q4f32_1'], out: bf16, workers: 0, f32Storage: 'bf16', shardCapBytes: 24 * 1024 });
});

/** `inspect --json` of a WebGPU folder as printed: the report's fields in their documented snake_case names (docs/schemas.md). */
type WebGpuInspectJson = Pick<WebGpuInspectReport, 'schema' | 'kind' | 'quantization' | 'records' | 'shards' | 'parameters' | 'metadata'> & {
  readonly known_layout: boolean;
  readonly by_dtype: WebGpuInspectReport['byDtype'];
  readonly memory_bytes: number;
  readonly disk_bytes: number;
  readonly bits_per_weight: number;
  readonly model_config: WebGpuInspectReport['modelConfig'];
};

describe('inspect on a WebGPU folder', () => {
  it('describes the quantization, model, shards, records by dtype and bits per weight', async () => {
    const run = await runCli('inspect', q4);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`${q4}  (WebGPU folder, q4f16_1)`);
    expect(run.stdout).toContain('model         gpt_neox: hidden 64, layers 2, heads 4 (head 16), ffn 256, vocab 384');
    expect(run.stdout).toContain('manifest      tensor-cache.json (ndarray-cache.json identical): 38 records');
    expect(run.stdout).toContain('shards        1 file, 87,808 bytes (87.8 KB), largest 87.8 KB; sha256 ok 1; md5sum ok 1');
    expect(run.stdout).toMatch(/weights {7}149,248 parameters in 87\.8 KB \(87\.8 KB on disk\): 4\.707 bits per weight \(manifest says 4\.707\)/);
    expect(run.stdout).toMatch(/uint32 +raw +10 +18,432 +73,728/);
    expect(run.stdout).toMatch(/float32 +raw +4 +640 +2,560/);
    expect(run.stdout).not.toContain('warning');
    const tensors = await runCli('inspect', q4, '--tensors');
    expect(tensors.stdout).toMatch(/embed_out\.q_scale +float16 +raw +\[384, 2\] +1,536 +params_shard_0\.bin +86,272/);
  });

  it('prints the polyquant.inspect-webgpu/2 report (snake_case) with --json', async () => {
    const run = await runCli('inspect', bf16, '--json');
    expect(run.code).toBe(0);
    const report = JSON.parse(run.stdout) as WebGpuInspectJson;
    expect(report.schema).toBe(INSPECT_WEBGPU_SCHEMA);
    expect(report).toMatchObject({ kind: 'webgpu-folder', quantization: 'q4f32_1', known_layout: true, model_type: 'gpt_neox', legacy_manifest: 'identical', b16_manifest: true, records: 38 });
    expect(report.shards.count).toBeGreaterThan(2);
    expect(report.shards.sha256).toEqual({ ok: report.shards.count, mismatch: 0, absent: 0, 'not-checked': 0 });
    // mlc_llm's bf16 storage: every record says f32-to-bf16; float32 ones take 2 bytes per element on disk.
    expect(report.by_dtype.map((group) => group.format)).toEqual(['f32-to-bf16', 'f32-to-bf16']);
    const floats = report.by_dtype.find((group) => group.dtype === 'float32');
    expect(floats?.bytes).toBe((floats?.elements ?? 0) * 2);
    expect(report.memory_bytes).toBe(report.disk_bytes + (floats?.bytes ?? 0));
    expect(report.parameters).toBe(149_248);
    expect(report.bits_per_weight).toBeCloseTo(report.metadata['BitsPerParam'] as number, 12);
    expect(report.model_config?.['hidden_size']).toBe(64);
  });

  it('reports a damaged shard and a missing legacy manifest as warnings rather than failing', async () => {
    const dir = join(scratch.fresh(), 'damaged');
    cpSync(q4, dir, { recursive: true });
    const shard = readFileSync(join(dir, 'params_shard_0.bin'));
    shard[100] = (shard[100] as number) ^ 1;
    writeFileSync(join(dir, 'params_shard_0.bin'), shard);
    renameSync(join(dir, 'ndarray-cache.json'), join(dir, 'old.json'));
    const run = await runCli('inspect', dir);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('sha256 mismatch 1; md5sum mismatch 1');
    expect(run.stdout).toContain('warning       params_shard_0.bin: sha256 does not match the manifest');
    expect(run.stdout).toContain('no ndarray-cache.json');
  });

  it('fails with a typed error (exit 2) when a shard is missing', async () => {
    const dir = join(scratch.fresh(), 'missing');
    cpSync(q4, dir, { recursive: true });
    renameSync(join(dir, 'params_shard_0.bin'), join(dir, 'moved.bin'));
    const run = await runCli('inspect', dir);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('params_shard_0.bin');
    expect(run.stderr).toContain('does not exist');
  });
});
