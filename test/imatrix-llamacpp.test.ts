/**
 * Importance matrices through llama.cpp (calibrate/imatrix-llamacpp.ts, the native addon's collector): the
 * route for HF models past the reference engine. On the bundled tiny model (always, with the addon built):
 * the same matrices, counts and chunks as the reference engine, to llama.cpp's f16 rounding; the CLI's
 * --engine llamacpp writes a file convert --imatrix reads. With ../shared and bench/build-llama.sh's
 * tools: on polyglot-ko-tiny, llama-imatrix on the same f16 GGUF gives the same matrix up to summation
 * order (it sums in float).
 */
import { execFile } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { computeImatrix, type ImatrixResult } from '../src/calibrate/imatrix.js';
import { readImatrix } from '../src/converters/gguf/imatrix.js';
import { ERROR_CODES } from '../src/errors.js';
import { cachedBaselineGguf } from '../src/verify/baseline-cache.js';
import { NATIVE_ADDON_PATH } from '../src/verify/engines/llamacpp-native.js';
import { runCli } from './helpers/cli.js';
import { expectPolyquantError } from './helpers/errors.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, REPO_ROOT, sharedPath } from './helpers/shared.js';
import { sampleTextContent } from './helpers/sweep.js';
import { tempDir } from './helpers/tiny-model.js';

const HAS_ADDON = existsSync(NATIVE_ADDON_PATH);
const LLAMA_IMATRIX = join(REPO_ROOT, 'vendor-build', 'llama.cpp', 'build', 'bin', 'llama-imatrix');
const TINY = join(REPO_ROOT, 'fixtures', 'tiny-neox');
const scratch = tempDir('polyquant-imatrix-llamacpp-');
afterAll(() => scratch.remove());
let text: string;
let cacheDir: string;
beforeAll(() => {
  text = join(scratch.path, 'train.txt');
  writeFileSync(text, sampleTextContent().repeat(3));
  cacheDir = join(scratch.path, 'cache');
});

/** ‖a − b‖ / ‖b‖ of two importance vectors (sums / count), per tensor; the worst. */
function worstRelativeError(ours: ImatrixResult, reference: ReadonlyMap<string, Float32Array>): number {
  let worst = 0;
  for (const [name, entry] of ours.entries) {
    const other = reference.get(name);
    if (other === undefined) throw new Error(`${name} missing`);
    let num = 0;
    let den = 0;
    for (let i = 0; i < other.length; i += 1) {
      const x = (entry.sums[i] as number) / entry.count;
      num += (x - (other[i] as number)) ** 2;
      den += (other[i] as number) ** 2;
    }
    worst = Math.max(worst, Math.sqrt(num / den));
  }
  return worst;
}

const normalised = (result: ImatrixResult): Map<string, Float32Array> =>
  new Map([...result.entries].map(([name, entry]) => [name, Float32Array.from(entry.sums, (sum) => sum / entry.count)]));

describe.skipIf(!HAS_ADDON)('polyquant imatrix through llama.cpp on the bundled tiny model', () => {
  it('collects the matrices, counts and chunks the reference engine does, to f16 rounding', async () => {
    const options = { texts: [text], ctx: 64, chunks: 4, threads: 2, cacheDir } as const;
    const reference = await computeImatrix(TINY, { ...options, engine: 'reference' });
    const llama = await computeImatrix(TINY, { ...options, engine: 'llamacpp' });
    expect(reference.engine.name).toBe('reference');
    expect(llama.engine).toEqual({ name: 'llamacpp', threads: 2 });
    expect([...llama.entries.keys()]).toEqual([...reference.entries.keys()]);
    for (const [name, entry] of llama.entries) expect(entry.count, name).toBe(4 * 64);
    expect({ ...llama, entries: null, engine: null, seconds: null }).toEqual({ ...reference, entries: null, engine: null, seconds: null });
    // f16 weights, llama.cpp's tanh GELU and f16 attention against float32 and erf: as llama-imatrix differs.
    expect(worstRelativeError(llama, normalised(reference))).toBeLessThan(5e-3);
    // auto: the reference engine for a model it holds.
    expect((await computeImatrix(TINY, { ...options, chunks: 1 })).engine.name).toBe('reference');
  }, 120_000);

  it('collects output.weight with processOutput, as llama-imatrix --process-output', async () => {
    const result = await computeImatrix(TINY, { texts: [text], ctx: 64, chunks: 2, threads: 1, cacheDir, engine: 'llamacpp', processOutput: true });
    expect(result.entries.get('output.weight')?.sums.length).toBe(64);
    expect(result.entries.get('output.weight')?.count).toBe(128);
  }, 120_000);

  it('refuses an unknown engine (USAGE)', async () => {
    await expectPolyquantError(computeImatrix(TINY, { texts: [text], engine: 'gpu' as never }), ERROR_CODES.USAGE, '--engine "gpu"');
  });

  it('CLI: --engine llamacpp writes a file convert --imatrix reads, and says which engine ran', async () => {
    const out = join(scratch.path, 'tiny-imatrix.gguf');
    const run = await runCli('imatrix', TINY, '--text', text, '--ctx', '64', '--chunks', '3', '--engine', 'llamacpp', '--cache-dir', cacheDir, '--out', out, '--json');
    expect(run.code, run.stderr).toBe(0);
    const report = JSON.parse(run.stdout) as { engine: { name: string }; chunk_count: number };
    expect(report.engine.name).toBe('llamacpp');
    expect(report.chunk_count).toBe(3);
    const file = await readImatrix(out);
    expect(file.entries.size).toBe(8);
    const converted = await runCli('convert', TINY, '--type', 'q4_k_m', '--imatrix', out, '--out', join(scratch.path, 'tiny-q4_k_m.gguf'), '--quiet');
    expect(converted.code, converted.stderr).toBe(0);
  }, 120_000);
});

describe.skipIf(!HAS_ADDON || !HAS_SHARED || !existsSync(LLAMA_IMATRIX))('llama.cpp route against llama-imatrix on polyglot-ko-tiny', () => {
  it('equals llama-imatrix on the same f16 GGUF up to summation order', async () => {
    const train = sharedPath('data', 'korean-text', 'train.txt');
    // 4 chunks: llama-imatrix decodes 4 sequences per batch (-b 2048 / -c 512); with a partial last batch (3
    // chunks) its sums move by ~2e-3 even at the first block's input, away from ours and the reference
    // engine's alike (which agree to 4e-8 there) — a llama-imatrix quirk we do not copy.
    const ours = await computeImatrix(POLYGLOT_TINY_DIR, { texts: [train], chunks: 4, threads: 2, cacheDir, engine: 'llamacpp' });
    const gguf = await cachedBaselineGguf(POLYGLOT_TINY_DIR, { dir: cacheDir, type: 'f16' });
    expect(gguf.hit).toBe(true);
    const theirs = join(scratch.path, 'theirs.gguf');
    await promisify(execFile)(LLAMA_IMATRIX, ['-m', gguf.file, '-f', train, '-c', '512', '--chunks', '4', '-t', '2', '--no-ppl', '-o', theirs]);
    expect(worstRelativeError(ours, (await readImatrix(theirs)).entries)).toBeLessThan(1e-5);
  }, 300_000);
});
