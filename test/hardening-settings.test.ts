/**
 * Issue #14, settings and messages: settings that cannot mean anything exit 2 naming the flag before any
 * work; non-finite model output is reported as such and fails every gate; messages name the file or flag.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertToGguf } from '../src/converters/gguf/convert.js';
import { readGgufHeader } from '../src/converters/gguf/format.js';
import { withFile } from '../src/io/file.js';
import { runKobest } from '../src/verify/kobest/run.js';
import type { VerifyReport } from '../src/verify/report.js';
import { simulationFileType } from '../src/verify/simulate.js';
import { runCli } from './helpers/cli.js';
import { expectPolyquantError } from './helpers/errors.js';
import { ggufFields, patchU64, TINY_NEOX_DIR, tinyQ8Gguf } from './helpers/gguf-fixtures.js';
import { fakeKobestEngine } from './helpers/kobest-reference.js';
import { makeTinyModel, tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-settings-');
afterAll(() => scratch.remove());

const TEXT = `${'오늘은 아침부터 비가 내렸다. 우산을 챙겨 집을 나섰지만 바람이 세서 옷이 조금 젖었다. 회사에 도착하니 동료들이 따뜻한 차를 준비해 두었다.\n'.repeat(6)}`;
let text: string;
/** A model path that does not exist: an error about a flag (not about it) proves the flag was checked first. */
let missing: string;
beforeAll(() => {
  text = join(scratch.path, 't.txt');
  writeFileSync(text, TEXT);
  missing = join(scratch.path, 'no-such-model');
});

const verifyWith = (...flags: string[]) => runCli('verify', missing, '--baseline', TINY_NEOX_DIR, '--ppl', text, ...flags);

describe('item 10: verify settings that cannot mean anything exit 2 naming the flag, before any work', () => {
  it.each([
    [['--max-windows', '0'], '--max-windows 0 is out of range'],
    [['--max-windows', '-1'], '--max-windows -1 is out of range'],
    [['--max-windows=-1'], '--max-windows -1 is out of range'],
    [['--max-windows', '1.5'], '--max-windows "1.5" is not an integer'],
    [['--limit', '0'], '--limit 0 must be greater than 0'],
    [['--limit', '-3'], '--limit -3 must be greater than 0'],
    [['--min-top1', '150%'], '--min-top1 150% is past 1 (100%)'],
    [['--min-top1', '1.5'], '--min-top1 1.5 is past 1'],
    [['--max-acc-drop', '120%'], '--max-acc-drop 120% is past 1'],
    [['--shots', ''], '--shots "" is not a comma-separated list'],
    [['--shots', '0,,5'], '--shots "0,,5" is not a comma-separated list'],
    [['--stride', '4'], '--stride applies only to --protocol strided'],
  ])('refuses %j', async (flags, message) => {
    const run = await verifyWith(...flags);
    expect(run.code, run.stderr).toBe(2);
    expect(run.stderr).toContain(message);
  });

  it('refuses --limit without --kobest, and a --limit that keeps no KOBEST document', async () => {
    const none = await verifyWith('--limit', '5');
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('--limit applies to KOBEST');
    const dir = join(scratch.path, 'kobest-small');
    mkdirSync(join(dir, 'copa'), { recursive: true });
    writeFileSync(join(dir, 'copa', 'test.jsonl'), `${JSON.stringify(copaRecord(0))}\n`);
    const fraction = await runCli('verify', missing, '--baseline', TINY_NEOX_DIR, '--kobest', dir, '--tasks', 'copa', '--limit', '0.5');
    expect(fraction.code).toBe(2);
    expect(fraction.stderr).toContain('keeps no documents');
  });
});

function copaRecord(index: number): object {
  return { premise: `전제 ${index}.`, question: '원인', alternative_1: `답 ${index}.`, alternative_2: `다른 답 ${index}.`, label: index % 2 };
}

describe('item 11: non-finite model output', () => {
  /** A copy of the tiny model whose every weight is NaN (F16 0xffff). */
  async function nanModel(dir: string): Promise<string> {
    const model = await makeTinyModel(dir);
    const path = join(model, 'model.safetensors');
    const bytes = readFileSync(path);
    const dataStart = 8 + Number(bytes.readBigUInt64LE(0));
    bytes.fill(0xff, dataStart);
    writeFileSync(path, bytes);
    return model;
  }

  it('is reported as non-finite (side and first token) with no perplexity, and fails every gate (reference engine)', async () => {
    const dir = join(scratch.path, 'nan-hf');
    mkdirSync(dir);
    const baseline = await makeTinyModel(dir);
    const candidate = await nanModel(dir);
    const json = join(dir, 'report.json');
    const run = await runCli(
      'verify', candidate, '--baseline', baseline, '--ppl', text, '--ctx', '32', '--max-windows', '2',
      '--max-ppl-increase', '1000%', '--min-top1', '0', '--json', json,
    );
    expect(run.code, run.stderr).toBe(1);
    expect(run.stdout).toContain('non-finite');
    const report = JSON.parse(readFileSync(json, 'utf8')) as VerifyReport;
    const section = report.perplexity[0];
    expect(section?.candidate.ppl).toBeNull();
    expect(section?.candidate.non_finite_positions).toBeGreaterThan(0);
    expect(section?.candidate.first_non_finite_token).toBe(1);
    expect(section?.baseline.non_finite_positions).toBe(0);
    expect(section?.baseline.ppl).toBeGreaterThan(0);
    expect(report.verdict).toBe('fail');
    // The finiteness check and both gates (even --min-top1 0) fail.
    expect(report.checks.map((check) => [check.where.endsWith('candidate') ? 'finite' : check.metric, check.passed])).toEqual(
      expect.arrayContaining([['finite', false], ['ppl_increase_pct', false], ['top1_agreement', false]]),
    );
    expect(report.checks.every((check) => !check.passed)).toBe(true);
  }, 120_000);

  it('is caught in a GGUF whose tensor data are all 0xff, through the llamacpp engine', async () => {
    const dir = join(scratch.path, 'nan-gguf');
    mkdirSync(dir);
    const path = join(dir, 'nan.gguf');
    await convertToGguf(TINY_NEOX_DIR, { type: 'f16', out: path, workers: 1 });
    const header = await withFile(path, (file) => readGgufHeader(path, file.size, (n) => file.read(0, n)));
    const bytes = readFileSync(path);
    bytes.fill(0xff, header.dataStart);
    writeFileSync(path, bytes);
    const json = join(dir, 'report.json');
    const run = await runCli('verify', path, '--baseline', TINY_NEOX_DIR, '--ppl', text, '--ctx', '32', '--max-windows', '2', '--json', json);
    expect(run.code, run.stderr).toBe(1);
    const report = JSON.parse(readFileSync(json, 'utf8')) as VerifyReport;
    expect(report.perplexity[0]?.candidate.non_finite_positions).toBeGreaterThan(0);
    expect(report.perplexity[0]?.candidate.ppl).toBeNull();
    expect(report.verdict).toBe('fail');
  }, 120_000);
});

describe('item 12: messages name the flag or file', () => {
  it('says "bad magic" for a .gguf file that is not one, not "not a model folder"', async () => {
    const path = join(scratch.path, 'fake.gguf');
    writeFileSync(path, 'not a gguf at all');
    const run = await runCli('inspect', path);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(path);
    expect(run.stderr).toContain('bad magic');
    expect(run.stderr).not.toContain('not a model folder');
  });

  it('names --ctx and its value for --ctx abc', async () => {
    const run = await verifyWith('--ctx', 'abc');
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--ctx "abc" is not an integer');
    expect(run.stderr).not.toContain('NaN');
  });

  it('keeps --max-ppl-increase -5% together and refuses it as negative', async () => {
    const run = await verifyWith('--max-ppl-increase', '-5%');
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--max-ppl-increase must be a non-negative number, got "-5%"');
    expect(run.stderr).not.toContain('Unknown arguments');
  });

  it('gives every thread flag the same range and message', async () => {
    const runs = [
      await runCli('convert', TINY_NEOX_DIR, '--type', 'q8_0', '--dry-run', '--workers', '0'),
      await verifyWith('--threads', '0'),
      await runCli('demo', '--threads', '0'),
      await runCli('convert', TINY_NEOX_DIR, '--type', 'q8_0', '--dry-run', '--workers', '65'),
      await verifyWith('--threads', '65'),
      await runCli('demo', '--threads', '65'),
    ];
    for (const run of runs) {
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(/--(threads|workers) (0|65) is out of range: expected an integer from 1 to 64/);
    }
  });

  it('accepts --simulate type names in any case, and refuses an unknown one before any work', async () => {
    expect(simulationFileType('q4_k')).toBe('q4_k_m');
    expect(simulationFileType('Q4_K')).toBe('q4_k_m');
    expect(simulationFileType('Q4_K_M')).toBe('q4_k_m');
    expect(simulationFileType('q8_0')).toBe('q8_0');
    const accepted = await verifyWith('--simulate', 'q4_k');
    expect(accepted.stderr).not.toContain('--simulate');
    const refused = await verifyWith('--simulate', 'q4_z');
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('--simulate "q4_z"');
  });

  it('notices a missing KOBEST task before any document is scored', async () => {
    const dir = join(scratch.path, 'kobest-copa-only');
    mkdirSync(join(dir, 'copa'), { recursive: true });
    writeFileSync(join(dir, 'copa', 'test.jsonl'), `${Array.from({ length: 4 }, (_, i) => JSON.stringify(copaRecord(i))).join('\n')}\n`);
    const engine = fakeKobestEngine({ contextLength: 4096 });
    await expectPolyquantError(runKobest(engine, { dir, tasks: ['copa', 'boolq'] }), 'not-found', 'boolq');
    expect(engine.calls).toHaveLength(0);
    const run = await runCli('verify', missing, '--baseline', TINY_NEOX_DIR, '--kobest', dir, '--tasks', 'copa,boolq');
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('boolq');
  });

  it('names the file in a GGUF row-length error', async () => {
    const dir = join(scratch.path, 'row-length');
    mkdirSync(dir);
    const { bytes } = await tinyQ8Gguf(dir);
    const fields = ggufFields(bytes);
    // The token embedding is Q8_0 (32-element blocks): a row of 33 cannot be stored.
    const q8 = fields.tensors.find((tensor) => tensor.name === 'token_embd.weight');
    const path = join(dir, 'row-33.gguf');
    writeFileSync(path, patchU64(bytes, q8?.neAt[0] as number, 33));
    const run = await runCli('inspect', path);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(path);
    expect(run.stderr).toContain('row length 33 is not a multiple of Q8_0');
  });
});
