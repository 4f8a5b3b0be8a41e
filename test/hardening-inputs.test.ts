/**
 * Issue #14, inputs: non-regular input files are refused (a FIFO never hangs), the GGUF reader validates
 * like gguf.cpp, a checkpoint with more layers than its config is refused unless asked, and a tokenizer
 * whose merges the vocabulary cannot cover is refused at convert time.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readGgufHeader } from '../src/converters/gguf/format.js';
import { withFile } from '../src/io/file.js';
import { runCli } from './helpers/cli.js';
import { alignmentKv, type GgufFields, ggufFields, patchU32, patchU64, TINY_NEOX_DIR, tinyQ8Gguf, withKv } from './helpers/gguf-fixtures.js';
import { makeTinyModel, tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-inputs-');
afterAll(() => scratch.remove());

const freshDir = (): string => scratch.fresh();
const mkfifo = (path: string): void => {
  expect(spawnSync('mkfifo', [path]).status).toBe(0);
};
const TEXT = '오늘은 아침부터 비가 내렸다. 우산을 챙겨 집을 나섰지만 바람이 세서 옷이 조금 젖었다.\n'.repeat(8);

describe('item 6: non-regular input files', () => {
  it('refuses a FIFO to inspect with exit 2 instead of hanging', async () => {
    const fifo = join(freshDir(), 'f.safetensors');
    mkfifo(fifo);
    const run = await runCli('inspect', fifo);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(fifo);
    expect(run.stderr).toContain('FIFO');
  });

  it('refuses a FIFO shard and a FIFO config.json in a model folder given to convert', async () => {
    const dir = freshDir();
    const model = await makeTinyModel(dir);
    rmSync(join(model, 'model.safetensors'));
    mkfifo(join(model, 'model.safetensors'));
    const shard = await runCli('convert', model, '--type', 'q8_0', '--out', join(dir, 'a.gguf'));
    expect(shard.code).toBe(2);
    expect(shard.stderr).toContain(join(model, 'model.safetensors'));
    expect(shard.stderr).toContain('FIFO');
    rmSync(join(model, 'config.json'));
    mkfifo(join(model, 'config.json'));
    const config = await runCli('convert', model, '--type', 'q8_0', '--out', join(dir, 'b.gguf'));
    expect(config.code).toBe(2);
    expect(config.stderr).toContain(join(model, 'config.json'));
  });

  it('refuses verify --ppl FIFO before loading any model, and a FIFO candidate', async () => {
    const dir = freshDir();
    const fifo = join(dir, 'text.txt');
    mkfifo(fifo);
    const text = await runCli('verify', join(dir, 'no-such-model'), '--baseline', TINY_NEOX_DIR, '--ppl', fifo);
    expect(text.code).toBe(2);
    expect(text.stderr).toContain(fifo);
    expect(text.stderr).toContain('FIFO');
    const real = join(dir, 'real.txt');
    writeFileSync(real, TEXT);
    const candidate = join(dir, 'candidate.gguf');
    mkfifo(candidate);
    const model = await runCli('verify', candidate, '--baseline', TINY_NEOX_DIR, '--ppl', real);
    expect(model.code).toBe(2);
    expect(model.stderr).toContain('FIFO');
  });
});

describe('item 7: the GGUF reader validates like gguf.cpp', () => {
  let dir: string;
  let base: Uint8Array;
  let fields: GgufFields;
  beforeAll(async () => {
    dir = freshDir();
    ({ bytes: base } = await tinyQ8Gguf(dir));
    fields = ggufFields(base);
  });

  /** Writes a variant and runs `polyquant inspect` on it. */
  async function inspectVariant(name: string, bytes: Uint8Array): Promise<{ code: number; stderr: string; path: string }> {
    const path = join(dir, `${name}.gguf`);
    writeFileSync(path, bytes);
    return { ...(await runCli('inspect', path)), path };
  }

  const first = () => fields.tensors[0] as GgufFields['tensors'][number];
  const second = () => fields.tensors[1] as GgufFields['tensors'][number];

  it('reads the unmodified file', async () => {
    expect((await inspectVariant('valid', base)).code).toBe(0);
  });

  it.each([
    ['an unknown tensor type id (200)', () => patchU32(base, first().typeAt, 200), 'ggml type id 200, which is not a ggml type'],
    ['a ggml type polyquant cannot size (IQ2_XXS, 16)', () => patchU32(base, first().typeAt, 16), 'ggml type id 16, which polyquant does not read'],
    ['general.alignment 0', () => withKv(base, alignmentKv(0)), 'general.alignment 0 is not a power of two'],
    ['general.alignment 7', () => withKv(base, alignmentKv(7)), 'general.alignment 7 is not a power of two'],
    ['a negative general.alignment (INT32 −32)', () => withKv(base, alignmentKv(-32, 'INT32')), 'general.alignment is INT32; GGUF requires a UINT32'],
    ['general.alignment as a UINT64', () => withKv(base, alignmentKv(32, 'UINT64')), 'general.alignment is UINT64'],
    ['an unaligned tensor offset', () => patchU64(base, second().offsetAt, 7), 'not a multiple of the alignment 32'],
    ['overlapping tensor offsets', () => patchU64(base, second().offsetAt, 0), 'overlaps the tensor before it'],
    ['a gap between tensors', () => patchU64(base, second().offsetAt, 1 << 20), 'leaves a gap'],
    ['a zero dimension', () => patchU64(base, first().neAt[0] as number, 0), 'zero dimension'],
    ['an element count past 2^53', () => patchU64(patchU64(base, first().neAt[0] as number, 2 ** 32), first().neAt[1] as number, 2 ** 32), 'past 2^53'],
    ['a dimension past 2^63 (negative in ggml)', () => patchU64(base, first().neAt[0] as number, 2n ** 63n), 'too large'],
  ])('refuses %s with exit 2, naming the file', async (name, variant, message) => {
    const run = await inspectVariant(name.replace(/\W+/g, '-'), variant());
    expect(run.code, run.stderr).toBe(2);
    expect(run.stderr).toContain(run.path);
    expect(run.stderr).toContain(message);
    expect(run.stderr).not.toContain('internal error');
  });

  it('reads a file with a valid general.alignment of 32', async () => {
    const run = await inspectVariant('alignment-32', withKv(base, alignmentKv(32)));
    // The KV moves the data section; the file stays well-formed as long as the tensors still fit.
    expect([0, 2]).toContain(run.code);
    expect(run.stderr).not.toContain('general.alignment');
  });

  it('refuses general.alignment 0 in verify as a bad GGUF, not "NaN cannot be converted to a BigInt"', async () => {
    const path = join(dir, 'alignment-0-verify.gguf');
    writeFileSync(path, withKv(base, alignmentKv(0)));
    const text = join(dir, 't.txt');
    writeFileSync(text, TEXT);
    const run = await runCli('verify', path, '--baseline', TINY_NEOX_DIR, '--ppl', text, '--ctx', '16');
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('not a power of two');
    expect(run.stderr).not.toContain('BigInt');
  });

  it('reports a header the reader returns with its alignment', async () => {
    const path = join(dir, 'valid-again.gguf');
    writeFileSync(path, base);
    const header = await withFile(path, (file) => readGgufHeader(path, file.size, (n) => file.read(0, n)));
    expect(header.alignment).toBe(32);
  });
});

describe('item 8: more layers in the weights than in config.json', () => {
  let model: string;
  beforeAll(async () => {
    model = await makeTinyModel(freshDir(), { configPatch: { num_hidden_layers: 4 } });
    const configPath = join(model, 'config.json');
    const config = JSON.parse(readFileSync(configPath, 'utf8')) as Record<string, unknown>;
    writeFileSync(configPath, JSON.stringify({ ...config, num_hidden_layers: 2 }));
  });

  it('refuses to convert with exit 2, naming config.json, the extra layers and the flag', async () => {
    const out = join(freshDir(), 'x.gguf');
    const run = await runCli('convert', model, '--type', 'q8_0', '--out', out);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(join(model, 'config.json'));
    expect(run.stderr).toContain('layers 2–3');
    expect(run.stderr).toContain('--drop-extra-layers');
    expect(() => readFileSync(out)).toThrow();
  });

  it('converts the configured layers with --drop-extra-layers, saying so', async () => {
    const out = join(freshDir(), 'x.gguf');
    const run = await runCli('convert', model, '--type', 'q8_0', '--out', out, '--json', '--drop-extra-layers');
    expect(run.code, run.stderr).toBe(0);
    const plan = JSON.parse(run.stdout) as { warnings: string[]; kvs: { key: string; value: unknown }[] };
    expect(plan.warnings.some((warning) => warning.includes('layers 2–3'))).toBe(true);
    expect(plan.kvs.find((kv) => kv.key === 'gptneox.block_count')?.value).toBe(2);
  });

  it('still inspects the folder, reporting the extra layers as a warning', async () => {
    const run = await runCli('inspect', model, '--json');
    expect(run.code).toBe(0);
    expect((JSON.parse(run.stdout) as { warnings: string[] }).warnings.join(' ')).toContain('layers 2–3');
  });
});

describe('item 9: a tokenizer whose merges the vocabulary cannot cover', () => {
  it('is refused at convert time with exit 2, naming tokenizer.json and the first bad merge', async () => {
    const dir = freshDir();
    const model = await makeTinyModel(dir);
    const path = join(model, 'tokenizer.json');
    const tokenizer = JSON.parse(readFileSync(path, 'utf8')) as { model: { vocab: Record<string, number>; merges: unknown[] } };
    tokenizer.model.vocab = Object.fromEntries(Object.entries(tokenizer.model.vocab).filter(([, id]) => id < 100));
    expect(tokenizer.model.merges.length).toBeGreaterThan(0);
    writeFileSync(path, JSON.stringify(tokenizer));
    const out = join(dir, 'x.gguf');
    const run = await runCli('convert', model, '--type', 'q8_0', '--out', out);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(path);
    expect(run.stderr).toMatch(/\d+ of \d+ merges use tokens that are not in model\.vocab \(100 entries\)/);
    expect(() => readFileSync(out)).toThrow();
  });
});
