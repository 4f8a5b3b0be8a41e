import { cpSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToWebGpu } from '../src/converters/webgpu/convert.js';
import {
  expandBf16,
  parseTensorCache,
  parseTensorCacheJson,
  storedWeight,
  storedWeights,
  tensorCacheRecordBytes,
  tensorCacheRecordMap,
} from '../src/converters/webgpu/manifest.js';
import { readWebGpuFolder } from '../src/converters/webgpu/read.js';
import { PolyquantError } from '../src/errors.js';
import { REPO_ROOT } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-webgpu-read-');
afterAll(() => scratch.remove());
const FIXTURE_DIR = join(REPO_ROOT, 'fixtures', 'tiny-neox');

let converted = '';
beforeAll(async () => {
  converted = join(scratch.path, 'q4f16_1');
  // A small cap gives several shards, so that one can be damaged while the others stay valid.
  await convertToWebGpu(FIXTURE_DIR, { types: ['q4f16_1'], out: converted, workers: 0, shardCapBytes: 24 * 1024 });
});

/** A copy of the converted folder to damage. */
function copy(): string {
  const dir = join(scratch.fresh(), 'model');
  cpSync(converted, dir, { recursive: true });
  return dir;
}

function editManifest(dir: string, edit: (manifest: { records: { dataPath: string; records: Record<string, unknown>[] }[] }) => void): void {
  const manifest = JSON.parse(readFileSync(join(dir, 'tensor-cache.json'), 'utf8'));
  edit(manifest);
  writeFileSync(join(dir, 'tensor-cache.json'), JSON.stringify(manifest, null, 4));
}

async function failure(promise: Promise<unknown>): Promise<PolyquantError> {
  const error = await promise.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(PolyquantError);
  return error as PolyquantError;
}

describe('reading a WebGPU folder', () => {
  it('reads a converted folder, checks every shard hash, and maps parameter names to records', async () => {
    const folder = await readWebGpuFolder(converted, { hashes: 'verify' });
    expect(folder.manifest.shards.length).toBeGreaterThan(2);
    expect(folder.shards.every((shard) => shard.sha256 === 'ok' && shard.md5 === 'ok')).toBe(true);
    expect(folder.legacyManifest).toBe('identical');
    expect(folder.chatConfig?.['quantization']).toBe('q4f16_1');
    expect(folder.warnings).toEqual([]);
    const weights = storedWeights(folder.manifest, ['gpt_neox.layers.0.attention.query_key_value.weight', 'gpt_neox.layers.0.attention.query_key_value.bias', 'embed_out.weight']);
    const qkv = weights.get('gpt_neox.layers.0.attention.query_key_value.weight');
    expect(qkv?.kind).toBe('group-quant');
    if (qkv?.kind === 'group-quant') {
      expect([qkv.qWeight.name, qkv.qWeight.dtype, qkv.qWeight.shape]).toEqual(['gpt_neox.layers.0.attention.query_key_value.q_weight', 'uint32', [192, 8]]);
      expect([qkv.qScale.dtype, qkv.qScale.shape]).toEqual(['float16', [192, 2]]);
      const shard = new Uint8Array(readFileSync(join(converted, qkv.qWeight.dataPath)));
      expect(tensorCacheRecordBytes(shard, qkv.qWeight).length).toBe(192 * 8 * 4);
      expect(() => tensorCacheRecordBytes(shard.subarray(0, qkv.qWeight.byteOffset + 10), qkv.qWeight)).toThrow(/truncated/);
    }
    expect(weights.get('gpt_neox.layers.0.attention.query_key_value.bias')?.kind).toBe('no-quant');
    const missing = (() => {
      try {
        storedWeight(tensorCacheRecordMap(folder.manifest), 'gpt_neox.layers.9.attention.dense.weight');
      } catch (error) {
        return error;
      }
    })();
    expect((missing as PolyquantError).code).toBe('not-found');
    expect((missing as PolyquantError).tensor).toBe('gpt_neox.layers.9.attention.dense.weight');
  });

  it('refuses a manifest naming a shard that does not exist, naming the shard', async () => {
    const dir = copy();
    rmSync(join(dir, 'params_shard_1.bin'));
    const error = await failure(readWebGpuFolder(dir));
    expect(error.code).toBe('not-found');
    expect(error.message).toContain('params_shard_1.bin');
    expect(error.file).toBe(join(dir, 'params_shard_1.bin'));
  });

  it('refuses a truncated shard, naming the shard, its size and a record it cuts', async () => {
    const dir = copy();
    const manifest = parseTensorCacheJson(readFileSync(join(dir, 'tensor-cache.json')));
    const shard = manifest.shards[0];
    truncateSync(join(dir, 'params_shard_0.bin'), (shard?.nbytes ?? 0) - 100);
    const error = await failure(readWebGpuFolder(dir));
    expect(error.code).toBe('malformed');
    expect(error.message).toContain(`the shard has ${(shard?.nbytes ?? 0) - 100} bytes but the manifest says ${shard?.nbytes}: it is truncated`);
    expect(error.tensor).toBe(shard?.records[shard.records.length - 1]?.name);
  });

  it('refuses a shard whose sha256 does not match, and reports it without throwing when asked to', async () => {
    const dir = copy();
    const path = join(dir, 'params_shard_2.bin');
    const bytes = readFileSync(path);
    bytes[7] = (bytes[7] as number) ^ 0x40;
    writeFileSync(path, bytes);
    // Sizes are still right: only a hash check sees the damage.
    await readWebGpuFolder(dir);
    const error = await failure(readWebGpuFolder(dir, { hashes: 'verify' }));
    expect(error.code).toBe('malformed');
    expect(error.message).toContain("sha256 does not match");
    expect(error.file).toBe(path);
    const reported = await readWebGpuFolder(dir, { hashes: 'report' });
    expect(reported.shards.map((shard) => shard.sha256)).toEqual(reported.shards.map((shard) => (shard.dataPath === 'params_shard_2.bin' ? 'mismatch' : 'ok')));
    expect(reported.warnings.some((warning) => warning.includes('params_shard_2.bin'))).toBe(true);
  });

  it('refuses a record that runs past its shard, naming the record and the range', async () => {
    const dir = copy();
    let name = '';
    editManifest(dir, (manifest) => {
      const record = manifest.records[0]?.records[1] as Record<string, unknown>;
      name = record['name'] as string;
      record['byteOffset'] = (manifest.records[0] as unknown as { nbytes: number }).nbytes - 4;
    });
    const error = await failure(readWebGpuFolder(dir));
    expect(error.code).toBe('malformed');
    expect(error.tensor).toBe(name);
    expect(error.message).toContain('run past the end of the shard');
    expect(error.message).toContain('records[0] (params_shard_');
  });

  it('refuses unknown dtypes, sizes that do not match the shape, overlaps, duplicates and paths', () => {
    const base = JSON.parse(readFileSync(join(converted, 'tensor-cache.json'), 'utf8'));
    const variant = (edit: (manifest: typeof base) => void): PolyquantError => {
      const manifest = structuredClone(base);
      edit(manifest);
      try {
        parseTensorCache(manifest, 'tensor-cache.json');
      } catch (error) {
        expect(error).toBeInstanceOf(PolyquantError);
        return error as PolyquantError;
      }
      throw new Error('accepted');
    };
    expect(variant((m) => (m.records[0].records[0].dtype = 'float4')).code).toBe('unsupported');
    expect(variant((m) => (m.records[0].records[0].nbytes += 4)).message).toMatch(/nbytes is \d+, but shape \[\d+, \d+\] of uint32 takes/);
    expect(variant((m) => (m.records[0].records[1].byteOffset = 4)).message).toContain('overlap');
    expect(variant((m) => (m.records[1].records[0].name = m.records[0].records[0].name)).message).toContain('appears twice');
    expect(variant((m) => (m.records[0].dataPath = '../params_shard_0.bin')).message).toContain('plain file name');
    expect(variant((m) => (m.records[0].records[0].shape = [2 ** 40, 2 ** 40])).message).toContain('past the safe integer range');
    expect(variant((m) => (m.records[0].sha256 = 'zz')).message).toContain('64 hex digits');
    expect(variant((m) => (m.records = {})).message).toContain('"records" is {}');
    // f32-to-bf16 float32 records take 2 bytes per element.
    const halved = structuredClone(base);
    const bias = halved.records.flatMap((shard: { records: Record<string, unknown>[] }) => shard.records).find((record: Record<string, unknown>) => record['dtype'] === 'float32');
    bias.format = 'f32-to-bf16';
    expect(() => parseTensorCache(halved)).toThrow(/stored as bf16 \(f32-to-bf16\) takes/);
  });

  it('expands f32-to-bf16 bytes as u16 << 16', () => {
    const values = expandBf16(Uint8Array.from([0x80, 0x3f, 0x00, 0xc0, 0xc0, 0x7f]));
    expect(Array.from(values.subarray(0, 2))).toEqual([1, -2]);
    expect(Number.isNaN(values[2])).toBe(true);
  });

  it('only ever throws PolyquantError on byte-flipped manifests (seeded fuzz)', () => {
    const original = readFileSync(join(converted, 'tensor-cache.json'));
    let seed = 0x9e3779b9;
    const next = (): number => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) / 2 ** 32;
    };
    let accepted = 0;
    for (let round = 0; round < 2000; round++) {
      const bytes = new Uint8Array(original);
      const flips = 1 + Math.floor(next() * 4);
      for (let i = 0; i < flips; i++) {
        const at = Math.floor(next() * bytes.length);
        bytes[at] = next() < 0.5 ? (bytes[at] as number) ^ (1 << Math.floor(next() * 8)) : Math.floor(next() * 256);
      }
      try {
        parseTensorCacheJson(bytes);
        accepted++;
      } catch (error) {
        if (!(error instanceof PolyquantError)) throw error;
      }
    }
    // Some flips land in whitespace or in a name and still parse; most do not.
    expect(accepted).toBeLessThan(2000);
  });
});
