/**
 * Issue #15 item 9, saved baselines (as llama-perplexity's --kl-divergence-base): `verify --save-baseline
 * FILE` writes the baseline's side of a run to one file, and `verify --baseline FILE` compares later
 * candidates against it without loading any baseline model — with the numbers a full run gives (PPL, top-1
 * and KOBEST exactly, KL divergence within the documented tolerance) — and refuses a file made on other
 * texts, settings, KOBEST data or tokenizer. Damaged files are typed errors naming the file.
 */
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToGguf } from '../src/converters/gguf/convert.js';
import { ERROR_CODES, PolyquantError } from '../src/errors.js';
import { readCheckpoint } from '../src/readers/checkpoint.js';
import { createReferenceEngine } from '../src/verify/engines/reference.js';
import type { PerplexitySection, VerifyReport } from '../src/verify/report.js';
import { decodeRows, encodeRows, ROW_RANGE_NATS, SavedBaselineFile, savedKldTolerance, windowRecordBytes } from '../src/verify/saved-baseline.js';
import { planSimulation } from '../src/verify/simulate.js';
import { klDivergenceRow } from '../src/verify/stats.js';
import { saveBaseline, type VerifyOptions, verify } from '../src/verify/verify.js';
import { runCli } from './helpers/cli.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, REPO_ROOT, sharedPath } from './helpers/shared.js';
import { makeTinyModel, tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-saved-baseline-');
afterAll(() => scratch.remove());
const TINY = join(REPO_ROOT, 'fixtures', 'tiny-neox');

function sampleText(dir: string): string {
  const path = join(dir, 'sample.txt');
  const sentences = ['서울은 한강을 끼고 있는 큰 도시이다. ', '오늘은 날씨가 맑고 바람이 시원하다. ', 'The quick brown fox jumps over the lazy dog. '];
  writeFileSync(path, Array.from({ length: 60 }, (_, i) => sentences[i % 3]).join(''));
  return path;
}

/** The KL divergence from a row stored in the saved form vs from the full row, position by position. */
function codecErrors(base: Float32Array, candidate: Float32Array, vocab: number): { exact: number[]; saved: number[]; steps: Float64Array } {
  const positions = base.length / vocab;
  const offsets = new Float64Array(positions);
  const steps = new Float64Array(positions);
  const codes = new Uint16Array(positions * vocab);
  encodeRows(base, positions, vocab, offsets, steps, codes);
  const decoded = new Float32Array(positions * vocab);
  decodeRows(offsets, steps, codes, positions, vocab, decoded);
  const exact: number[] = [];
  const saved: number[] = [];
  for (let position = 0; position < positions; position += 1) {
    exact.push(klDivergenceRow(base, candidate, position * vocab, vocab));
    saved.push(klDivergenceRow(decoded, candidate, position * vocab, vocab));
  }
  return { exact, saved, steps };
}

/** Rows of one window of `text` from the reference engine on `dir`, optionally with simulated quantization. */
async function windowRows(dir: string, text: string, length: number, simulate?: string): Promise<{ rows: Float32Array; vocab: number }> {
  const checkpoint = await readCheckpoint(dir);
  const engine = await createReferenceEngine(checkpoint, { threads: 0, ...(simulate !== undefined && { weightTransform: planSimulation(simulate, checkpoint.config).transform }) });
  try {
    const tokens = engine.tokenize(text).slice(0, length);
    const score = await engine.score(tokens, { distributions: 'full', from: 1 });
    return { rows: score.full as Float32Array, vocab: engine.vocabSize };
  } finally {
    await engine.close();
  }
}

/** Holds the KL divergence from saved rows to the documented bound at every position, and the mean within 0.1 % (+ 1e-8 nats). */
function expectWithinTolerance(base: Float32Array, candidate: Float32Array, vocab: number): number {
  const { exact, saved, steps } = codecErrors(base, candidate, vocab);
  exact.forEach((kld, position) => {
    const step = steps[position] as number;
    expect(step).toBeLessThanOrEqual(ROW_RANGE_NATS / 65535);
    expect(Math.abs((saved[position] as number) - kld)).toBeLessThanOrEqual(savedKldTolerance(step, kld, vocab));
  });
  const mean = (values: number[]) => values.reduce((sum, value) => sum + value, 0) / values.length;
  expect(Math.abs(mean(saved) - mean(exact))).toBeLessThanOrEqual(1e-3 * mean(exact) + 1e-8);
  return Math.abs(mean(saved) / mean(exact) - 1);
}

/** A report's perplexity section without the KL divergence block (the one part a saved baseline may change). */
const withoutKld = (section: PerplexitySection) => ({ ...section, comparison: { ...section.comparison, kld: null } });

/**
 * PPL (both models, every window), top-1 and every other comparison number and the KOBEST sections equal;
 * the KL divergence statistics within the tolerance (relative 1e-3 or 1e-6 nats, far looser than measured).
 */
function expectSameNumbers(reused: VerifyReport, full: VerifyReport): void {
  expect(reused.perplexity.map(withoutKld)).toEqual(full.perplexity.map(withoutKld));
  expect(reused.kobest).toEqual(full.kobest);
  reused.perplexity.forEach((section, index) => {
    const expected = full.perplexity[index]?.comparison.kld;
    const got = section.comparison.kld;
    expect(got === null).toBe(expected === null);
    if (got === null || expected === null || expected === undefined) return;
    const flat = (value: unknown, prefix = ''): [string, number][] =>
      typeof value === 'number' ? [[prefix, value]] : Object.entries(value as object).flatMap(([key, inner]) => flat(inner, `${prefix}.${key}`));
    const wanted = new Map(flat(expected));
    for (const [key, value] of flat(got)) {
      const reference = wanted.get(key) as number;
      expect(Math.abs(value - reference), key).toBeLessThanOrEqual(Math.max(1e-6, 1e-3 * Math.abs(reference)));
    }
  });
}

describe('the saved form of next-token rows', () => {
  it('keeps the KL divergence within the documented bound of the full rows (bundled tiny model: q4_0, q8_0, itself)', async () => {
    const text = readFileSync(sampleText(scratch.fresh()), 'utf8');
    const base = await windowRows(TINY, text, 96);
    for (const type of ['q4_0', 'q8_0']) expectWithinTolerance(base.rows, (await windowRows(TINY, text, 96, type)).rows, base.vocab);
    // Against itself the full-row KLD is 0, and the saved form's only its rounding.
    const { saved, steps } = codecErrors(base.rows, base.rows, base.vocab);
    for (const [position, kld] of saved.entries()) expect(kld).toBeLessThanOrEqual(savedKldTolerance(steps[position] as number, 0, base.vocab));
  });

  it.skipIf(!HAS_SHARED)('keeps the KL divergence within the documented bound on polyglot-ko-tiny (30,080 rows; q8_0, q4_0, q2_k)', async () => {
    const text = readFileSync(sharedPath('data', 'korean-text', 'valid.txt'), 'utf8').slice(0, 4000);
    const base = await windowRows(POLYGLOT_TINY_DIR, text, 128);
    for (const type of ['q8_0', 'q4_0', 'q2_k']) {
      // Measured: 0.04 % for q8_0 (mean KLD 1e-5: the codes' ½ Var(e) ≈ step² / 24 per position), 0.002 % for q4_0 and q2_k.
      const relative = expectWithinTolerance(base.rows, (await windowRows(POLYGLOT_TINY_DIR, text, 128, type)).rows, base.vocab);
      expect(relative).toBeLessThan(type === 'q8_0' ? 1e-3 : 1e-4);
    }
  });

  it("decodes rows with their own mass: −∞ entries, a flat row, a row wider than the range; NaN rows stay NaN", () => {
    const vocab = 8;
    const rows = new Float32Array([
      ...[-0.1, -3, Number.NEGATIVE_INFINITY, -5, -7, Number.NEGATIVE_INFINITY, -2.5, -9],
      ...Array.from({ length: vocab }, () => -Math.log(vocab)),
      ...[-0.001, -10, -20, -40, -60, -80, -100, -7],
      ...[-1, Number.NaN, -2, -3, -4, -5, -6, -7],
    ]);
    const positions = 4;
    const offsets = new Float64Array(positions);
    const steps = new Float64Array(positions);
    const codes = new Uint16Array(positions * vocab);
    encodeRows(rows, positions, vocab, offsets, steps, codes);
    const decoded = new Float32Array(positions * vocab);
    decodeRows(offsets, steps, codes, positions, vocab, decoded);
    for (let position = 0; position < 3; position += 1) {
      const row = decoded.subarray(position * vocab, (position + 1) * vocab);
      expect(row.every(Number.isFinite)).toBe(true);
      const original = rows.subarray(position * vocab, (position + 1) * vocab);
      const mass = original.reduce((sum, value) => sum + Math.exp(value), 0);
      expect(row.reduce((sum, value) => sum + Math.exp(value), 0) / mass).toBeCloseTo(1, 6);
      // The top entry keeps its place and (up to the renormalisation) its value.
      expect(row.indexOf(Math.max(...row))).toBe(rows.subarray(position * vocab, (position + 1) * vocab).indexOf(Math.max(...rows.subarray(position * vocab, (position + 1) * vocab))));
    }
    expect(steps[1]).toBe(0);
    expect(decoded[8]).toBeCloseTo(-Math.log(vocab), 6);
    // The wide row: everything past 32 nats below the top sits at the floor.
    expect(decoded[2 * vocab + 3]).toBeCloseTo((decoded[2 * vocab] as number) - ROW_RANGE_NATS, 3);
    expect(decoded.subarray(3 * vocab).every(Number.isNaN)).toBe(true);
  });
});

describe('verify --save-baseline and --baseline FILE (bundled tiny model)', () => {
  const options = (dir: string): Omit<VerifyOptions, 'candidate' | 'baseline'> => ({ pplFiles: [sampleText(dir)], ctx: 64, maxWindows: 3, threads: 0 });

  it('compares later candidates without the baseline model: the numbers of a full run, and says where they came from', async () => {
    const dir = scratch.fresh();
    // The baseline is a copy that is deleted once saved: the reuse cannot have loaded it.
    const copy = join(dir, 'baseline-model');
    cpSync(TINY, copy, { recursive: true });
    const settings = options(dir);
    const file = join(dir, 'tiny.pqbaseline');
    const saving = await verify({ candidate: TINY, simulate: 'q8_0', baseline: copy, ...settings, saveBaseline: file });
    expect(saving.baseline.saved_baseline).toMatchObject({ file, role: 'written', schema: 'polyquant.saved-baseline/1' });
    const fulls = [saving, await verify({ candidate: TINY, simulate: 'q4_0', baseline: copy, ...settings }), await verify({ candidate: TINY, simulate: 'q2_k', baseline: copy, ...settings })];
    rmSync(copy, { recursive: true });
    for (const [index, type] of ['q8_0', 'q4_0', 'q2_k'].entries()) {
      const reused = await verify({ candidate: TINY, simulate: type, baseline: file, ...settings });
      expectSameNumbers(reused, fulls[index] as VerifyReport);
      expect(reused.baseline).toMatchObject({ path: copy, engine: 'reference', saved_baseline: { file, role: 'read', created: saving.baseline.saved_baseline?.created } });
    }
    // 3 windows × 63 scored positions × (12 bytes + 16 + 2 × 384) of windows, the tokens, and the header and footer.
    const saved = await SavedBaselineFile.open(file);
    await saved.close();
    expect(windowRecordBytes(63, 384, true)).toBe(63 * 796);
    expect(saved.size).toBeGreaterThan(3 * 63 * 796);
    expect(saved.size).toBeLessThan(3 * 63 * 796 + 20_000);
    expect(readdirSync(dir).filter((name) => name.endsWith('.tmp'))).toEqual([]);
  });

  it('refuses a run it was not made for, before loading any model, naming what differs', async () => {
    const dir = scratch.fresh();
    const settings = options(dir);
    const file = join(dir, 'saved.pqbaseline');
    await verify({ candidate: TINY, simulate: 'q8_0', baseline: TINY, ...settings, saveBaseline: file });
    const other = join(dir, 'other.txt');
    writeFileSync(other, `${readFileSync(settings.pplFiles?.[0] as string, 'utf8')}!`);
    // Each refusal comes from the settings and inputs alone, before any model loads.
    const refusal = async (changes: Partial<VerifyOptions>): Promise<string> => {
      const error = await verify({ candidate: TINY, simulate: 'q4_0', baseline: file, ...settings, ...changes }).then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(error).toBeInstanceOf(PolyquantError);
      expect((error as PolyquantError).code).toBe(ERROR_CODES.USAGE);
      expect((error as PolyquantError).file).toBe(file);
      return (error as PolyquantError).message;
    };
    expect(await refusal({ pplFiles: [other] })).toMatch(/text .*other\.txt .* is not one it was saved with/);
    expect(await refusal({ ctx: 32 })).toContain('--ctx 32 (saved with 64)');
    expect(await refusal({ maxWindows: 2 })).toContain('--max-windows 2 (saved with 3)');
    expect(await refusal({ protocol: 'strided', stride: 16 })).toContain('--protocol strided (saved with windows)');
    expect(await refusal({ protocol: 'llamacpp' })).toContain('--protocol llamacpp (saved with windows)');
    expect(await refusal({ saveBaseline: join(dir, 'again.pqbaseline') })).toContain('--baseline is already a saved baseline');
    // The strided protocol's stride, the default one resolved (ctx / 2 = 32).
    const strided = join(dir, 'strided.pqbaseline');
    await verify({ candidate: TINY, simulate: 'q8_0', baseline: TINY, ...settings, protocol: 'strided', saveBaseline: strided });
    const stride = await verify({ candidate: TINY, simulate: 'q8_0', baseline: strided, ...settings, protocol: 'strided', stride: 16 }).catch((caught: unknown) => caught);
    expect((stride as PolyquantError).message).toContain('--stride 16 (saved with 32)');
    await verify({ candidate: TINY, simulate: 'q8_0', baseline: strided, ...settings, protocol: 'strided', stride: 32 });
  });

  it('refuses KL divergence from a baseline saved with --no-kld, and compares without it', async () => {
    const dir = scratch.fresh();
    const settings = { ...options(dir), kld: false };
    const file = join(dir, 'nokld.pqbaseline');
    await verify({ candidate: TINY, simulate: 'q8_0', baseline: TINY, ...settings, saveBaseline: file });
    const error = await verify({ candidate: TINY, simulate: 'q4_0', baseline: file, ...settings, kld: true }).catch((caught: unknown) => caught);
    expect((error as PolyquantError).message).toContain('KL divergence (saved with --no-kld');
    const reused = await verify({ candidate: TINY, simulate: 'q4_0', baseline: file, ...settings });
    expectSameNumbers(reused, await verify({ candidate: TINY, simulate: 'q4_0', baseline: TINY, ...settings }));
    // 12 bytes per scored position without rows.
    const saved = await SavedBaselineFile.open(file);
    await saved.close();
    expect(saved.header.rows).toBeNull();
    expect(saved.size).toBeLessThan(3 * 63 * 12 + 10_000);
  });

  it('refuses a candidate with another vocabulary, and a failed save leaves no file', async () => {
    const dir = scratch.fresh();
    const settings = options(dir);
    const file = join(dir, 'saved.pqbaseline');
    await verify({ candidate: TINY, simulate: 'q8_0', baseline: TINY, ...settings, saveBaseline: file });
    const wide = await makeTinyModel(dir, { configPatch: { vocab_size: 512 } });
    const error = await verify({ candidate: wide, baseline: file, ...settings }).catch((caught: unknown) => caught);
    expect((error as PolyquantError).code).toBe(ERROR_CODES.CONFIG);
    expect((error as PolyquantError).message).toContain('the candidate has 512 vocabulary rows; the saved baseline 384');
    // The save fails after its file was opened (the comparison refuses the vocabularies): nothing is left.
    const failed = join(dir, 'failed.pqbaseline');
    await expect(verify({ candidate: wide, baseline: TINY, ...settings, saveBaseline: failed })).rejects.toThrow(PolyquantError);
    expect(existsSync(failed)).toBe(false);
    expect(readdirSync(dir).filter((name) => name.endsWith('.tmp'))).toEqual([]);
  });

  it('saves the baseline alone (no candidate), and later candidates get the numbers of a full run', async () => {
    const dir = scratch.fresh();
    const settings = options(dir);
    const file = join(dir, 'alone.pqbaseline');
    const saved = await saveBaseline(file, { baseline: TINY, ...settings });
    expect(saved).toMatchObject({ file, texts: 1, windows: 3, scoredTokens: 3 * 63, kobestResults: 0 });
    expect(saved.baseline.saved_baseline).toMatchObject({ file, role: 'written', bytes: saved.bytes });
    expect(statSync(file).size).toBe(saved.bytes);
    for (const type of ['q4_0', 'q2_k']) {
      const reused = await verify({ candidate: TINY, simulate: type, baseline: file, ...settings });
      expectSameNumbers(reused, await verify({ candidate: TINY, simulate: type, baseline: TINY, ...settings }));
      expect(reused.baseline.saved_baseline).toMatchObject({ file, role: 'read' });
    }
    await expect(saveBaseline(join(dir, 'again.pqbaseline'), { baseline: file, ...settings })).rejects.toThrow('--baseline is already a saved baseline');
    expect(readdirSync(dir).filter((name) => name.endsWith('.tmp'))).toEqual([]);
  });

  it('CLI: verify --baseline MODEL --save-baseline FILE with no candidate; without a candidate, comparison flags are refused', async () => {
    const dir = scratch.fresh();
    const text = sampleText(dir);
    const file = join(dir, 'cli.pqbaseline');
    const flags = ['--ppl', text, '--ctx', '64', '--max-windows', '2', '--threads', '1'];
    const saving = await runCli('verify', '--baseline', TINY, '--save-baseline', file, ...flags);
    expect(saving.code, saving.stderr).toBe(0);
    expect(saving.stdout).toMatch(/scored: 2 windows of 1 text \(126 scored tokens\) in [\d.]+ s/);
    expect(saving.stdout).toContain(`saved to ${file}, ${statSync(file).size} bytes`);
    const json = join(dir, 'reused.json');
    const reused = await runCli('verify', TINY, '--simulate', 'q4_0', '--baseline', file, ...flags, '--json', json);
    expect(reused.code, reused.stderr).toBe(0);
    expect(reused.stdout).toContain(`from the saved baseline ${file}`);
    const refused = async (expected: string, ...argv: string[]): Promise<void> => {
      const result = await runCli('verify', '--baseline', TINY, ...argv, ...flags);
      expect(result.code, result.stderr).toBe(2);
      expect(result.stderr).toContain(expected);
    };
    await refused('verify needs a candidate model to compare with the baseline');
    await refused('--json applies to a comparison, and no candidate is given', '--save-baseline', join(dir, 'x.pqbaseline'), '--json', json);
    await refused('--simulate, --require-gates, --max-ppl-increase', '--save-baseline', join(dir, 'x.pqbaseline'), '--simulate', 'q4_0', '--require-gates', '--max-kld', '0.01');
    expect(existsSync(join(dir, 'x.pqbaseline'))).toBe(false);
  });

  it('reports a damaged file as MALFORMED, naming it and what is wrong (truncated, flipped bytes, never a TypeError)', async () => {
    const dir = scratch.fresh();
    const settings = options(dir);
    const file = join(dir, 'saved.pqbaseline');
    await verify({ candidate: TINY, simulate: 'q8_0', baseline: TINY, ...settings, kld: false, saveBaseline: file });
    const bytes = readFileSync(file);
    const damaged = join(dir, 'damaged.pqbaseline');
    const openError = async (content: Uint8Array): Promise<PolyquantError | undefined> => {
      writeFileSync(damaged, content);
      try {
        const saved = await SavedBaselineFile.open(damaged);
        try {
          // Every section, as a comparison would read them.
          for (let text = 0; text < saved.header.texts.length; text += 1) {
            const { tokens, windows } = saved.text(text);
            await saved.read(tokens, 'tokens');
            for (const window of windows) await saved.read(window, 'window');
          }
          if (saved.kobest !== null) await saved.read(saved.kobest, 'KOBEST');
        } finally {
          await saved.close();
        }
        return undefined;
      } catch (error) {
        if (!(error instanceof PolyquantError)) throw error;
        return error;
      }
    };
    expect((await openError(bytes.subarray(0, bytes.length - 1)))?.message).toContain('does not end with "PQBASEND" (truncated');
    expect((await openError(bytes.subarray(0, 200)))?.message).toContain('does not fit');
    expect((await openError(bytes.subarray(0, 10)))?.message).toContain('shorter than');
    const headerFlip = Uint8Array.from(bytes);
    headerFlip[30] = (headerFlip[30] as number) ^ 1;
    expect((await openError(headerFlip))?.message).toContain('header fails its CRC-32 check');
    const saved = await SavedBaselineFile.open(file);
    const window = saved.text(0).windows[1];
    await saved.close();
    const dataFlip = Uint8Array.from(bytes);
    dataFlip[(window?.offset as number) + 5] = (dataFlip[(window?.offset as number) + 5] as number) ^ 0x40;
    const flipped = await openError(dataFlip);
    expect(flipped?.code).toBe(ERROR_CODES.MALFORMED);
    expect(flipped?.file).toBe(damaged);
    expect(flipped?.message).toContain('fails its CRC-32 check');
    // And through verify: the damaged window is refused when it is read.
    writeFileSync(damaged, dataFlip);
    await expect(verify({ candidate: TINY, simulate: 'q4_0', baseline: damaged, ...settings, kld: false })).rejects.toThrow(/fails its CRC-32 check/);
    // Fuzz: truncations and byte flips anywhere only ever give PolyquantError (or, rarely, an intact read).
    let seed = 7;
    const random = (): number => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed / 2 ** 32;
    };
    for (let trial = 0; trial < 150; trial += 1) {
      const mutated = trial % 3 === 0 ? bytes.subarray(0, Math.floor(random() * bytes.length)) : Uint8Array.from(bytes);
      if (trial % 3 !== 0) for (let flips = 0; flips < 1 + (trial % 4); flips += 1) mutated[Math.floor(random() * bytes.length)] = Math.floor(random() * 256);
      await openError(mutated);
    }
  });
});

describe.skipIf(!HAS_SHARED)('verify --save-baseline on polyglot-ko-tiny, then three GGUF candidates with --baseline FILE (the acceptance run)', () => {
  const dir = scratch.fresh();
  const file = join(dir, 'polyglot-ko-tiny.pqbaseline');
  const ggufs: Record<string, string> = {};
  const text = join(dir, 'valid-slice.txt');
  const kobest = sharedPath('data', 'kobest');
  const settings = ['--ppl', text, '--ctx', '64', '--max-windows', '2', '--kobest', kobest, '--tasks', 'copa,boolq', '--split', 'validation', '--limit', '4', '--threads', '1'];

  beforeAll(async () => {
    writeFileSync(text, readFileSync(sharedPath('data', 'korean-text', 'valid.txt'), 'utf8').slice(0, 3000));
    for (const type of ['q8_0', 'q4_k_m', 'q4_0']) {
      ggufs[type] = join(dir, `${type}.gguf`);
      await convertToGguf(POLYGLOT_TINY_DIR, { type, out: ggufs[type] as string });
    }
  }, 120_000);

  const run = async (...argv: string[]): Promise<{ report: VerifyReport; stdout: string }> => {
    const json = join(dir, `report-${Math.random().toString(36).slice(2)}.json`);
    const result = await runCli('verify', ...argv, '--json', json);
    expect(result.code, result.stderr).toBe(0);
    return { report: JSON.parse(readFileSync(json, 'utf8')) as VerifyReport, stdout: result.stdout };
  };

  it('gives the numbers of three full runs: PPL, top-1 and KOBEST exactly, KL divergence within tolerance', async () => {
    const saving = await run(ggufs['q8_0'] as string, '--baseline', POLYGLOT_TINY_DIR, ...settings, '--save-baseline', file);
    expect(saving.stdout).toContain(`saved to ${file}`);
    const fulls = {
      q8_0: saving.report,
      q4_k_m: (await run(ggufs['q4_k_m'] as string, '--baseline', POLYGLOT_TINY_DIR, ...settings)).report,
      q4_0: (await run(ggufs['q4_0'] as string, '--baseline', POLYGLOT_TINY_DIR, ...settings)).report,
    };
    for (const [type, full] of Object.entries(fulls)) {
      const reused = await run(ggufs[type] as string, '--baseline', file, ...settings);
      expect(reused.stdout).toContain(`from the saved baseline ${file}`);
      expect(reused.report.baseline.saved_baseline).toMatchObject({ file, role: 'read' });
      expect(reused.report.baseline.path).toBe(POLYGLOT_TINY_DIR);
      expectSameNumbers(reused.report, full);
      expect(reused.report.kobest.length).toBe(2);
      expect(reused.report.perplexity[0]?.comparison.kld?.mean).toBeGreaterThan(0);
    }
  }, 300_000);

  it('a baseline saved alone (no candidate) gives the numbers of full runs, KOBEST included', async () => {
    const alone = join(dir, 'alone.pqbaseline');
    const saving = await runCli('verify', '--baseline', POLYGLOT_TINY_DIR, ...settings, '--save-baseline', alone);
    expect(saving.code, saving.stderr).toBe(0);
    expect(saving.stdout).toContain('2 KOBEST task×shot results');
    for (const type of ['q4_k_m', 'q4_0']) {
      const full = (await run(ggufs[type] as string, '--baseline', POLYGLOT_TINY_DIR, ...settings)).report;
      expectSameNumbers((await run(ggufs[type] as string, '--baseline', alone, ...settings)).report, full);
    }
  }, 300_000);

  it('refuses other texts, settings, KOBEST data and tokenizers with exit 2, naming what differs', async () => {
    expect(existsSync(file)).toBe(true);
    const refused = async (expected: string | RegExp, ...argv: string[]): Promise<void> => {
      const result = await runCli('verify', ...argv);
      expect(result.code, result.stderr).toBe(2);
      expect(result.stderr).toMatch(expected);
      expect(result.stderr).toContain(file);
    };
    const replace = (flag: string, value: string): string[] => settings.map((item, index) => (settings[index - 1] === flag ? value : item));
    const q4 = ggufs['q4_0'] as string;
    const otherText = join(dir, 'other.txt');
    writeFileSync(otherText, readFileSync(sharedPath('data', 'korean-text', 'valid.txt'), 'utf8').slice(0, 3001));
    await refused(/text .*other\.txt .*is not one it was saved with/, q4, '--baseline', file, ...replace('--ppl', otherText));
    await refused('--ctx 32 (saved with 64)', q4, '--baseline', file, ...replace('--ctx', '32'));
    await refused('--max-windows 1 (saved with 2)', q4, '--baseline', file, ...replace('--max-windows', '1'));
    await refused('--protocol strided (saved with windows)', q4, '--baseline', file, ...settings, '--protocol', 'strided', '--stride', '32');
    await refused('--limit 5 (saved with 4)', q4, '--baseline', file, ...replace('--limit', '5'));
    await refused('--split train (saved with validation)', q4, '--baseline', file, ...replace('--split', 'train'));
    await refused('--shots 1 (saved with 0)', q4, '--baseline', file, ...settings, '--shots', '1');
    await refused('task wic (saved with copa,boolq)', q4, '--baseline', file, ...replace('--tasks', 'copa,wic'));
    // The same KOBEST folder with one document changed.
    const otherKobest = join(dir, 'kobest');
    for (const task of ['copa', 'boolq']) {
      mkdirSync(join(otherKobest, task), { recursive: true });
      symlinkSync(join(kobest, task, 'train.jsonl'), join(otherKobest, task, 'train.jsonl'));
      const lines = readFileSync(join(kobest, task, 'validation.jsonl'), 'utf8').split('\n');
      if (task === 'copa') lines[0] = (lines[0] as string).replace('전쟁이 시작되었다.', '전쟁이 끝났다.');
      writeFileSync(join(otherKobest, task, 'validation.jsonl'), lines.join('\n'));
    }
    await refused(/the copa validation documents in .* differ from the saved ones/, q4, '--baseline', file, ...replace('--kobest', otherKobest));
    // Another tokenizer with the same vocabulary size: polyglot-ko-tiny's weights with a tokenizer missing some merges.
    const otherTokenizer = join(dir, 'other-tokenizer');
    mkdirSync(otherTokenizer);
    for (const name of readdirSync(POLYGLOT_TINY_DIR)) if (name !== 'tokenizer.json') symlinkSync(join(POLYGLOT_TINY_DIR, name), join(otherTokenizer, name));
    const tokenizer = JSON.parse(readFileSync(join(POLYGLOT_TINY_DIR, 'tokenizer.json'), 'utf8')) as { model: { merges: unknown[] } };
    tokenizer.model.merges = tokenizer.model.merges.slice(0, tokenizer.model.merges.length - 2000);
    writeFileSync(join(otherTokenizer, 'tokenizer.json'), JSON.stringify(tokenizer));
    await refused("the candidate's tokenizer differs from the saved baseline's", otherTokenizer, '--baseline', file, ...settings);
    // Another vocabulary: the bundled tiny model (384 rows).
    await refused('the candidate has 384 vocabulary rows; the saved baseline 30080', TINY, '--baseline', file, '--ppl', text, '--ctx', '64', '--max-windows', '2');
  }, 120_000);
});
