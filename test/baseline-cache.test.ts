import { cpSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { normaliseNeoXConfig } from '../src/arch/gpt-neox.js';
import { readGgufHeader } from '../src/converters/gguf/format.js';
import { withFile } from '../src/io/file.js';
import { readCheckpoint } from '../src/readers/checkpoint.js';
import { cachedBaselineGguf, defaultCacheDir } from '../src/verify/baseline-cache.js';
import { referenceEngineFits } from '../src/verify/engines/reference.js';
import { verify } from '../src/verify/verify.js';
import { HAS_SHARED, REPO_ROOT, sharedPath } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const TINY_NEOX = join(REPO_ROOT, 'fixtures', 'tiny-neox');
const SAMPLE = '서울은 한강을 끼고 있는 큰 도시이다. The quick brown fox jumps over the lazy dog. 오늘은 날씨가 맑다. 1234 부산은 바다가 보이는 항구 도시이다. '.repeat(6);

describe('the baseline GGUF cache', () => {
  const scratch = tempDir('polyquant-baseline-cache-');
  afterAll(() => scratch.remove());

  it('converts an HF folder once, then finds it by content; a copy elsewhere hits, a changed weight misses', async () => {
    const cache = join(scratch.path, 'cache');
    const first = await cachedBaselineGguf(TINY_NEOX, { dir: cache, workers: 1 });
    expect(first.hit).toBe(false);
    expect(first.type).toBe('f16');
    expect(first.file.startsWith(join(cache, 'gguf'))).toBe(true);
    const header = await withFile(first.file, (file) => readGgufHeader(first.file, file.size, (n) => file.read(0, n)));
    expect(header.kvs.get('general.file_type')?.value).toBe(1); // LLAMA_FTYPE_MOSTLY_F16
    const sidecar = JSON.parse(readFileSync(first.file.replace(/\.gguf$/, '.json'), 'utf8')) as { source: string; key: string };
    expect(sidecar).toMatchObject({ source: TINY_NEOX, key: first.key });
    expect(existsSync(join(cache, 'hashes.json'))).toBe(true);

    const again = await cachedBaselineGguf(TINY_NEOX, { dir: cache });
    expect(again).toMatchObject({ hit: true, file: first.file, key: first.key });

    const copy = join(scratch.path, 'copy');
    cpSync(TINY_NEOX, copy, { recursive: true });
    expect((await cachedBaselineGguf(copy, { dir: cache })).file).toBe(first.file);

    // One changed byte in the weights (same size): a different key, a new file.
    const weights = join(copy, 'model-00002-of-00002.safetensors');
    const bytes = readFileSync(weights);
    bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 1;
    writeFileSync(weights, bytes);
    const changed = await cachedBaselineGguf(copy, { dir: cache, workers: 1 });
    expect(changed.hit).toBe(false);
    expect(changed.key).not.toBe(first.key);

    const f32 = await cachedBaselineGguf(TINY_NEOX, { dir: cache, type: 'f32', workers: 1 });
    expect(f32.key).not.toBe(first.key);
  });

  it('lives in POLYQUANT_CACHE_DIR, else XDG_CACHE_HOME/polyquant, else ~/.cache/polyquant', () => {
    const saved = { dir: process.env['POLYQUANT_CACHE_DIR'], xdg: process.env['XDG_CACHE_HOME'] };
    try {
      process.env['POLYQUANT_CACHE_DIR'] = '/tmp/pq-cache';
      expect(defaultCacheDir()).toBe('/tmp/pq-cache');
      delete process.env['POLYQUANT_CACHE_DIR'];
      process.env['XDG_CACHE_HOME'] = '/tmp/xdg';
      expect(defaultCacheDir()).toBe('/tmp/xdg/polyquant');
    } finally {
      for (const [key, value] of [
        ['POLYQUANT_CACHE_DIR', saved.dir],
        ['XDG_CACHE_HOME', saved.xdg],
      ] as const) {
        if (value === undefined) delete process.env[key];
        else process.env[key] = value;
      }
    }
  });

  it('refuses a type it does not cache', async () => {
    await expect(cachedBaselineGguf(TINY_NEOX, { dir: join(scratch.path, 'x'), type: 'q4_0' as 'f16' })).rejects.toMatchObject({ code: 'usage' });
  });

  it('verify runs an HF baseline in llama.cpp on its cached GGUF when asked, and the report names the file', async () => {
    const cache = join(scratch.path, 'verify-cache');
    const text = join(scratch.path, 'text.txt');
    writeFileSync(text, SAMPLE);
    const report = await verify({ candidate: TINY_NEOX, baseline: TINY_NEOX, pplFiles: [text], ctx: 64, engine: 'llamacpp', device: 'cpu', cacheDir: cache, threads: 1 });
    expect(report.baseline.engine).toBe('llamacpp');
    expect(report.baseline.artifact).toMatchObject({ type: 'f16' });
    expect(report.baseline.artifact?.file.startsWith(join(cache, 'gguf'))).toBe(true);
    // The candidate is the same folder: the second load hits the cache the first one filled.
    expect(report.candidate.artifact).toMatchObject({ file: report.baseline.artifact?.file, cached: true });
    const section = report.perplexity[0];
    expect(section?.comparison.delta_ppl_pct).toBe(0);
    expect(section?.comparison.top1_agreement).toBe(1);
  });
});

describe.skipIf(!HAS_SHARED)('which HF folders the reference engine can hold (verify --engine auto)', () => {
  it('holds polyglot-ko-tiny, not polyglot-ko-1.3b or larger (float32 in one 4 GiB WebAssembly memory)', async () => {
    const tiny = await readCheckpoint(sharedPath('fixtures', 'polyglot-ko-tiny'));
    expect(referenceEngineFits(tiny.config)).toBe(true);
    for (const size of ['1.3b', '3.8b', '5.8b', '12.8b']) {
      const file = sharedPath('data', 'polyglot-ko', `config.polyglot-ko-${size}.json`);
      expect(referenceEngineFits(normaliseNeoXConfig(JSON.parse(readFileSync(file, 'utf8')), file), { threads: 1 })).toBe(false);
    }
  });
});
