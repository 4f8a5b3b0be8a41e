/**
 * Fuzzing the GGUF reader with seeded mutations of a real q8_0 file (fixtures/tiny-neox converted by our
 * own converter): every outcome must be a parsed header whose tensors lie inside the file, or a
 * PolyquantError — never a RangeError, TypeError or hang — and through the CLI, exit 0 or 2.
 * 400 cases by default; POLYQUANT_BIG_TESTS=1 runs 20,000.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readGgufHeader } from '../src/converters/gguf/format.js';
import { ERROR_CODES, PolyquantError } from '../src/errors.js';
import { runCli } from './helpers/cli.js';
import { type GgufFields, ggufFields, mutateGguf, tinyQ8Gguf } from './helpers/gguf-fixtures.js';
import { mulberry32 } from './helpers/safetensors-fixtures.js';
import { tempDir } from './helpers/tiny-model.js';

const BIG = process.env['POLYQUANT_BIG_TESTS'] === '1';
const CASES = BIG ? 20_000 : 400;
/** Cases also written to disk and run through `polyquant inspect`. */
const THROUGH_CLI = BIG ? 1_000 : 60;

const scratch = tempDir('polyquant-gguf-fuzz-');
afterAll(() => scratch.remove());

let base: Uint8Array;
let fields: GgufFields;
beforeAll(async () => {
  ({ bytes: base } = await tinyQ8Gguf(scratch.path));
  fields = ggufFields(base);
});

async function parse(bytes: Uint8Array): Promise<unknown> {
  try {
    const header = await readGgufHeader('fuzz.gguf', bytes.length, async (n) => bytes.subarray(0, n));
    for (const tensor of header.tensors) {
      if (header.dataStart + tensor.offset + tensor.bytes > bytes.length) throw new Error(`tensor ${tensor.name} accepted past the end of the file`);
      if (!Number.isSafeInteger(tensor.bytes) || tensor.bytes <= 0) throw new Error(`tensor ${tensor.name} accepted with ${tensor.bytes} bytes`);
    }
    return 'accepted';
  } catch (error) {
    return error;
  }
}

describe('fuzzing the GGUF reader', () => {
  it(`only ever throws PolyquantError on ${CASES} seeded mutations of a real q8_0 file, reaching every header check`, async () => {
    expect(await parse(base)).toBe('accepted');
    const random = mulberry32(0x6f0f_0001);
    let accepted = 0;
    const foreign: string[] = [];
    const codes = new Set<string>();
    // Each check the mutations must reach at least once, so that the fuzz test cannot quietly degrade
    // into testing only the magic.
    const checks = [
      'bad magic', 'is not supported (2 or 3)', 'unknown GGUF value type', 'ends early', 'not a ggml type', 'polyquant does not read',
      'general.alignment', 'not a power of two', 'zero dimension', 'dimensions; GGUF allows', 'not a multiple of the alignment',
      'overlaps the tensor before it', 'leaves a gap', 'runs past the end of the file', 'is not a multiple of',
    ];
    const reached = new Set<string>();
    for (let index = 0; index < CASES; index += 1) {
      const outcome = await parse(mutateGguf(base, fields, random));
      if (outcome === 'accepted') {
        accepted += 1;
      } else if (outcome instanceof PolyquantError && !(outcome.cause instanceof Error)) {
        codes.add(outcome.code);
        for (const check of checks) if (outcome.detail.includes(check)) reached.add(check);
      } else if (foreign.length < 5) {
        foreign.push(`case ${index}: ${String(outcome)} ${(outcome as Error)?.stack ?? ''}`);
      }
    }
    expect(foreign).toEqual([]);
    expect(accepted).toBeGreaterThan(0);
    expect([...codes].every((code) => [ERROR_CODES.MALFORMED, ERROR_CODES.LIMIT, ERROR_CODES.UNSUPPORTED].includes(code as never))).toBe(true);
    expect(checks.filter((check) => !reached.has(check))).toEqual([]);
  }, 600_000);

  it(`exits 0 or 2 through polyquant inspect on ${THROUGH_CLI} mutated files on disk, with no internal error`, async () => {
    const random = mulberry32(0x6f0f_0002);
    const exits = new Set<number>();
    for (let index = 0; index < THROUGH_CLI; index += 1) {
      const path = join(scratch.path, `case-${index}.gguf`);
      writeFileSync(path, mutateGguf(base, fields, random));
      const run = await runCli('inspect', path, '--json');
      expect(run.stderr, `case ${index}`).not.toContain('internal error');
      expect([0, 2], `case ${index}: ${run.stderr}`).toContain(run.code);
      if (run.code === 2) expect(run.stderr).toContain(path);
      exits.add(run.code);
      rmSync(path);
    }
    expect([...exits].sort()).toEqual([0, 2]);
  }, 600_000);
});
