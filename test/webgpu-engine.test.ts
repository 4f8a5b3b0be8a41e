/**
 * The webgpu engine end to end: folders written by `convert --to webgpu`, run by the WGSL runtime on Dawn
 * (SwiftShader here), against the reference engine, PyTorch's logits and `verify --simulate`; KV-cache
 * reuse; typed errors for a missing or corrupt shard and for --device gpu without a GPU.
 * Skips, saying why, where no WebGPU adapter can be created.
 */
import { cpSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToWebGpu } from '../src/converters/webgpu/convert.js';
import { PolyquantError } from '../src/errors.js';
import { createReferenceEngine } from '../src/verify/engines/reference.js';
import { createWebGpuEngine } from '../src/verify/engines/webgpu.js';
import { openDawnDevice } from '../src/verify/engines/webgpu-dawn.js';
import { verify } from '../src/verify/verify.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, REPO_ROOT, sharedPath } from './helpers/shared.js';
import { makeTinyModel, tempDir } from './helpers/tiny-model.js';
import { openTestDevice } from './helpers/webgpu.js';

const probe = await openTestDevice();
const available = probe.dawn !== undefined;
const softwareOnly = probe.dawn?.software === true;
probe.dawn?.release();
if (!available) console.warn(`webgpu-engine tests skipped: no WebGPU adapter (${probe.reason})`);

const scratch = tempDir('polyquant-webgpu-engine-');
afterAll(() => scratch.remove());
const FIXTURE_DIR = join(REPO_ROOT, 'fixtures', 'tiny-neox');
const TOKENS = Int32Array.from([1, 17, 200, 33, 5, 90, 301, 12, 7, 64, 128, 255, 3, 44]);

function maxAbsDifference(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

async function caught(promise: Promise<unknown>): Promise<PolyquantError> {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(PolyquantError);
  return error as PolyquantError;
}

describe.skipIf(!available)('webgpu engine on the bundled tiny model', () => {
  const out = join(scratch.path, 'tiny');
  let reference: Float32Array;
  beforeAll(async () => {
    await convertToWebGpu(FIXTURE_DIR, { types: ['q0f32', 'q4f16_1'], out, workers: 0 });
    const engine = await createReferenceEngine(FIXTURE_DIR, { threads: 0 });
    reference = await engine.logits(TOKENS);
    await engine.close();
  }, 120_000);

  it('gives q0f32 logits within 1e-4 of the reference engine, also through binding windows and 3-token steps', async () => {
    const plain = await createWebGpuEngine(join(out, 'q0f32'), { device: 'auto' });
    expect(plain.model.windowed).toEqual([]);
    expect(maxAbsDifference(await plain.logits(TOKENS), reference)).toBeLessThan(1e-4);
    await plain.close();
    // 4 KiB windows: the 384×64 float32 embeddings (96 KiB) are bound as 16-row windows, the MLP as 16-row ones.
    const windowed = await createWebGpuEngine(join(out, 'q0f32'), { device: 'auto', runtime: { maxBindingBytes: 4096, stepTokens: 3 } });
    expect(windowed.model.windowed.map((entry) => entry.name)).toEqual(expect.arrayContaining(['gpt_neox.embed_in.weight', 'embed_out.weight']));
    expect(windowed.model.windowed.find((entry) => entry.name === 'embed_out.weight')?.windows).toBe(24);
    expect(maxAbsDifference(await windowed.logits(TOKENS), reference)).toBeLessThan(1e-4);
    await windowed.close();
  });

  it('decodes token by token (the one-token kernels of both families) to the logits of the whole pass', async () => {
    for (const family of ['software', 'hardware'] as const) {
      const engine = await createWebGpuEngine(join(out, 'q0f32'), { device: 'auto', runtime: { family } });
      const { model } = engine;
      expect(model.family).toBe(family);
      const whole = await engine.logits(TOKENS);
      expect(maxAbsDifference(whole, reference), family).toBeLessThan(1e-4);
      const cache = model.newCache(32);
      const rows: Float32Array[] = [];
      for (const token of TOKENS) rows.push(await model.forward(Int32Array.of(token), cache));
      expect(cache.length).toBe(TOKENS.length);
      const stepped = new Float32Array(whole.length);
      rows.forEach((row, index) => {
        stepped.set(row, index * engine.vocabSize);
      });
      expect(maxAbsDifference(stepped, whole), family).toBeLessThan(1e-5);
      // Truncating and running the tail again gives the same rows.
      model.truncate(cache, 5);
      const tail = await model.forward(TOKENS.subarray(5), cache, { logitsFrom: 2 });
      expect(maxAbsDifference(tail, whole.subarray(7 * engine.vocabSize)), family).toBeLessThan(1e-5);
      cache.dispose();
      await engine.close();
    }
  });

  it('reports the adapter it runs on, and verify names it', async () => {
    const engine = await createWebGpuEngine(join(out, 'q4f16_1'), { device: 'auto' });
    expect(engine.name).toBe('webgpu');
    expect(engine.quantization).toBe('q4f16_1');
    if (engine.device === 'cpu') expect(engine.adapter).toMatch(/^software WebGPU adapter: /);
    else expect(engine.gpu).toMatch(/^webgpu: /);
    await engine.close();
    const text = join(scratch.path, 'text.txt');
    writeFileSync(text, 'hello world, this is a small text for the tiny model. '.repeat(4));
    const report = await verify({ candidate: join(out, 'q4f16_1'), baseline: FIXTURE_DIR, pplFiles: [text], ctx: 32, maxWindows: 2 });
    expect(report.candidate.engine).toBe('webgpu');
    expect(report.candidate.device).toBe(engine.device);
    if (engine.device === 'cpu') expect(report.candidate.adapter).toContain('software WebGPU adapter');
    expect(report.perplexity[0]?.candidate.non_finite_positions).toBe(0);
  });

  for (const family of ['software', 'hardware'] as const) {
    it(`scoreContinuations on the cached context equals score on context + continuation (${family} kernels)`, async () => {
      const engine = await createWebGpuEngine(join(out, 'q4f16_1'), { device: 'auto', runtime: { family } });
      const context = TOKENS.subarray(0, 6);
      const continuations = [TOKENS.subarray(6, 9), TOKENS.subarray(9), Int32Array.of(42), new Int32Array(0)];
      const sums = await engine.scoreContinuations(context, continuations);
      for (const [index, continuation] of continuations.entries()) {
        if (continuation.length === 0) {
          expect(sums[index]).toBe(0);
          continue;
        }
        const whole = new Int32Array(context.length + continuation.length);
        whole.set(context);
        whole.set(continuation, context.length);
        const scored = await engine.score(whole, { from: context.length });
        const expected = scored.tokenLogProbs.reduce((sum, value) => sum + value, 0);
        expect(Math.abs(sums[index]! - expected), `continuation ${index}`).toBeLessThanOrEqual(1e-6 * Math.abs(expected));
      }
      await engine.close();
    });
  }

  it('runs a sequential-residual model (use_parallel_residual false) as the reference engine does', async () => {
    const model = await makeTinyModel(scratch.fresh(), { configPatch: { use_parallel_residual: false } });
    const folder = join(scratch.path, 'sequential');
    await convertToWebGpu(model, { types: ['q0f32'], out: folder, workers: 0 });
    const chat = JSON.parse(readFileSync(join(folder, 'mlc-chat-config.json'), 'utf8'));
    expect(chat.model_config.use_parallel_residual).toBe(false);
    const base = await createReferenceEngine(model, { threads: 0 });
    const engine = await createWebGpuEngine(folder, { device: 'auto' });
    const tokens = TOKENS.map((id) => id % engine.vocabSize);
    expect(maxAbsDifference(await engine.logits(tokens), await base.logits(tokens))).toBeLessThan(1e-4);
    await Promise.all([engine.close(), base.close()]);
  });

  it('refuses a missing shard, a shard with the wrong sha256 and a truncated shard, naming the shard', async () => {
    const broken = (name: string) => {
      const dir = join(scratch.path, name);
      cpSync(join(out, 'q4f16_1'), dir, { recursive: true });
      return dir;
    };
    const manifest = JSON.parse(readFileSync(join(out, 'q4f16_1', 'tensor-cache.json'), 'utf8'));
    const shard = manifest.records[0].dataPath as string;

    const missing = broken('missing-shard');
    rmSync(join(missing, shard));
    const notFound = await caught(createWebGpuEngine(missing, { device: 'auto' }));
    expect(notFound.code).toBe('not-found');
    expect(notFound.message).toContain(shard);

    const corrupt = broken('corrupt-shard');
    const bytes = readFileSync(join(corrupt, shard));
    bytes[bytes.length >> 1] = bytes[bytes.length >> 1]! ^ 0x40;
    writeFileSync(join(corrupt, shard), bytes);
    const mismatch = await caught(createWebGpuEngine(corrupt, { device: 'auto' }));
    expect(mismatch.code).toBe('malformed');
    expect(mismatch.message).toMatch(new RegExp(`${shard} has sha256 [0-9a-f]{64}; the manifest says ${manifest.records[0].sha256}`));

    const truncated = broken('truncated-shard');
    writeFileSync(join(truncated, shard), bytes.subarray(0, bytes.length - 4));
    const short = await caught(createWebGpuEngine(truncated, { device: 'auto' }));
    expect(short.code).toBe('malformed');
    expect(short.message).toContain(`${shard} has ${bytes.length - 4} bytes; the manifest says ${bytes.length}`);
  });

  it.skipIf(!softwareOnly)('--device gpu without a hardware adapter is UNSUPPORTED (exit 2), naming the adapters seen', async () => {
    const error = await caught(createWebGpuEngine(join(out, 'q4f16_1'), { device: 'gpu' }));
    expect(error.code).toBe('unsupported');
    expect(error.exitCode).toBe(2);
    // Without a GPU device node it fails before loading Dawn; with one, it names the software adapters Dawn offers.
    expect(error.message).toMatch(/--device gpu: the webgpu engine found no hardware WebGPU adapter: (no GPU device node|Dawn offers only software adapter \(.+\))/);
    // The device itself refuses the same way (what openDawnDevice tells the engine).
    expect((await caught(openDawnDevice({ device: 'gpu' }))).code).toBe('unsupported');
  });

  it('reports load progress shard by shard, and refuses a binding limit no aligned window fits, naming the tensor', async () => {
    const events: { shard: number; shards: number; bytes: number; totalBytes: number }[] = [];
    const engine = await createWebGpuEngine(join(out, 'q4f16_1'), { device: 'auto', onProgress: (event) => events.push(event) });
    const manifest = JSON.parse(readFileSync(join(out, 'q4f16_1', 'tensor-cache.json'), 'utf8')) as { records: { nbytes: number }[] };
    const total = manifest.records.reduce((sum, shard) => sum + shard.nbytes, 0);
    expect(events.map((event) => event.shard)).toEqual(manifest.records.map((_, index) => index + 1));
    expect(events.at(-1)).toMatchObject({ shards: manifest.records.length, bytes: total, totalBytes: total });
    expect(engine.model.verifiedShards).toBe(manifest.records.length);
    await engine.close();
    // q4 rows of the 384×64 embedding: 32 bytes of words, 4 of scales → windows start every 64 rows (2 KiB).
    const error = await caught(createWebGpuEngine(join(out, 'q4f16_1'), { device: 'auto', runtime: { maxBindingBytes: 1024 } }));
    expect(error.code).toBe('unsupported');
    expect(error.message).toContain('gpt_neox.embed_in.q_weight');
    expect(error.message).toContain('binding limit 1024');
  });

  it('refuses a folder without tensor-cache.json, and a tokenizer-less one, before opening a device', async () => {
    expect((await caught(createWebGpuEngine(FIXTURE_DIR))).code).toBe('usage');
    const bare = join(scratch.path, 'no-tokenizer');
    cpSync(join(out, 'q0f32'), bare, { recursive: true });
    rmSync(join(bare, 'tokenizer.json'));
    expect((await caught(createWebGpuEngine(bare))).code).toBe('not-found');
    // verify: the webgpu engine takes WebGPU folders only, and only it takes them.
    const text = join(scratch.path, 'refusals.txt');
    writeFileSync(text, 'a few words of text. '.repeat(10));
    const onHf = await caught(verify({ candidate: FIXTURE_DIR, baseline: FIXTURE_DIR, pplFiles: [text], engine: 'webgpu' }));
    expect(onHf.code).toBe('usage');
    expect(onHf.message).toContain('the webgpu engine runs WebGPU folders (tensor-cache.json); the baseline is a folder without tensor-cache.json');
    const byReference = await caught(verify({ candidate: join(out, 'q0f32'), baseline: FIXTURE_DIR, pplFiles: [text], engine: 'reference' }));
    expect(byReference.code).toBe('usage');
    const simulated = await caught(verify({ candidate: join(out, 'q0f32'), baseline: FIXTURE_DIR, pplFiles: [text], simulate: 'q4f16_1' }));
    expect(simulated.message).toContain('a WebGPU folder is already converted');
  });
});

describe.skipIf(!available || !HAS_SHARED)('webgpu engine on polyglot-ko-tiny', () => {
  const out = join(scratch.path, 'polyglot');
  const valid = sharedPath('data', 'korean-text', 'valid.txt');
  beforeAll(async () => {
    await convertToWebGpu(POLYGLOT_TINY_DIR, { types: ['q0f32', 'q0f16', 'q8f16_pq', 'q4f16_1', 'q4f32_1'], out });
  }, 180_000);

  it('gives q0f32 logits within 1e-4 of the PyTorch reference', async () => {
    const engine = await createWebGpuEngine(join(out, 'q0f32'), { device: 'auto' });
    const reference = JSON.parse(readFileSync(sharedPath('fixtures', 'polyglot-ko-tiny', 'reference', 'reference.json'), 'utf8')) as {
      sequences: { token_ids: number[]; logits_file: string }[];
    };
    for (const sequence of reference.sequences) {
      const bytes = readFileSync(sharedPath('fixtures', 'polyglot-ko-tiny', 'reference', sequence.logits_file));
      const expected = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
      expect(maxAbsDifference(await engine.logits(Int32Array.from(sequence.token_ids)), expected)).toBeLessThan(1e-4);
    }
    await engine.close();
  });

  it('orders mean KLD from the HF model q0f16 < q8f16_pq < q4f16_1 (verify)', async () => {
    const kld: Record<string, number> = {};
    for (const type of ['q0f16', 'q8f16_pq', 'q4f16_1']) {
      const report = await verify({ candidate: join(out, type), baseline: POLYGLOT_TINY_DIR, pplFiles: [valid], ctx: 128, maxWindows: 2, device: 'cpu' });
      expect(report.candidate.engine).toBe('webgpu');
      expect(report.perplexity[0]?.candidate.non_finite_positions).toBe(0);
      kld[type] = report.perplexity[0]?.comparison.kld?.mean ?? Number.NaN;
    }
    expect(kld.q0f16).toBeLessThan(kld.q8f16_pq!);
    expect(kld.q8f16_pq).toBeLessThan(kld.q4f16_1!);
  }, 300_000);

  it('gives q4f32_1 perplexity and mean KLD within 1 % of verify --simulate q4f32_1', async () => {
    const settings = { baseline: POLYGLOT_TINY_DIR, pplFiles: [valid], ctx: 128, maxWindows: 2 };
    const real = (await verify({ ...settings, candidate: join(out, 'q4f32_1') })).perplexity[0]!;
    const simulated = (await verify({ ...settings, candidate: POLYGLOT_TINY_DIR, simulate: 'q4f32_1' })).perplexity[0]!;
    expect(Math.abs(real.candidate.ppl / simulated.candidate.ppl - 1)).toBeLessThan(0.01);
    expect(Math.abs(real.comparison.kld!.mean / simulated.comparison.kld!.mean - 1)).toBeLessThan(0.01);
  }, 300_000);
});

