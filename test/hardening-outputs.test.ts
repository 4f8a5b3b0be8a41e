/**
 * Issue #14, outputs: non-regular output paths are refused (a symlink is followed), no output may
 * overwrite an input, output locations are checked before any work, and `synth --force` replaces only a
 * folder of its own files.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, linkSync, lstatSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SYNTH_PRESETS } from '../src/synth/presets.js';
import { synthCheckpoint } from '../src/synth/synth.js';
import { runCli } from './helpers/cli.js';
import { expectPolyquantError } from './helpers/errors.js';
import { TINY_NEOX_DIR } from './helpers/gguf-fixtures.js';
import { makeTinyModel, tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-outputs-');
afterAll(() => scratch.remove());

const freshDir = (): string => scratch.fresh();

const sha = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');
const mkfifo = (path: string): void => {
  expect(spawnSync('mkfifo', [path]).status).toBe(0);
};
/** Names in `dir` that look like our temp files or folders. */
const temps = (dir: string): string[] => readdirSync(dir).filter((name) => /\.(tmp|partial|old)$/.test(name));
const convert = (out: string, model = TINY_NEOX_DIR) => runCli('convert', model, '--type', 'q8_0', '--out', out, '--workers', '1');
const TEXT = '오늘은 아침부터 비가 내렸다. 우산을 챙겨 집을 나섰지만 바람이 세서 옷이 조금 젖었다.\n'.repeat(8);

describe('item 1: output paths that are not regular files', () => {
  it('refuses a FIFO as convert --out with exit 2, naming it, and leaves it a FIFO', async () => {
    const dir = freshDir();
    const fifo = join(dir, 'out.gguf');
    mkfifo(fifo);
    const run = await convert(fifo);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(fifo);
    expect(run.stderr).toContain('FIFO');
    expect(lstatSync(fifo).isFIFO()).toBe(true);
    expect(temps(dir)).toEqual([]);
  });

  it('refuses a character device, and a symlink to one, as convert --out, never turning the device into a file', async () => {
    const run = await convert('/dev/null');
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('/dev/null');
    expect(run.stderr).toContain('character device');
    expect(statSync('/dev/null').isCharacterDevice()).toBe(true);
    const link = join(freshDir(), 'null.gguf');
    symlinkSync('/dev/null', link);
    const viaLink = await convert(link);
    expect(viaLink.code).toBe(2);
    expect(viaLink.stderr).toContain('character device');
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
  });

  it('follows a symlink output: the file it points to is replaced atomically and the link stays a link', async () => {
    const dir = freshDir();
    const targetDir = freshDir();
    const target = join(targetDir, 'real.gguf');
    writeFileSync(target, 'old contents');
    const link = join(dir, 'link.gguf');
    symlinkSync(target, link);
    const run = await convert(link);
    expect(run.code, run.stderr).toBe(0);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(readFileSync(target).subarray(0, 4).toString()).toBe('GGUF');
    expect(temps(dir)).toEqual([]);
    expect(temps(targetDir)).toEqual([]);
  });

  it('refuses a FIFO and a device as verify --json / --markdown before any model is loaded', async () => {
    const dir = freshDir();
    const fifo = join(dir, 'report.json');
    mkfifo(fifo);
    const text = join(dir, 't.txt');
    writeFileSync(text, TEXT);
    // The candidate does not exist: the output check must come first, or the message would be about it.
    const missing = join(dir, 'no-such-model');
    const json = await runCli('verify', missing, '--baseline', TINY_NEOX_DIR, '--ppl', text, '--json', fifo);
    expect(json.code).toBe(2);
    expect(json.stderr).toContain('--json');
    expect(json.stderr).toContain('FIFO');
    const markdown = await runCli('verify', missing, '--baseline', TINY_NEOX_DIR, '--ppl', text, '--markdown', '/dev/null');
    expect(markdown.code).toBe(2);
    expect(markdown.stderr).toContain('--markdown');
    expect(markdown.stderr).toContain('character device');
  });
});

describe('item 2: an output never overwrites an input', () => {
  it('refuses convert --out onto a shard or config.json of the model it reads, leaving them unchanged', async () => {
    const dir = freshDir();
    const model = await makeTinyModel(dir, { shardBytes: 100_000 });
    const shard = join(model, readdirSync(model).find((name) => /^model-00001-of-\d{5}\.safetensors$/.test(name)) ?? 'no shard');
    const config = join(model, 'config.json');
    const before = [sha(shard), sha(config)];
    for (const out of [shard, config]) {
      const run = await convert(out, model);
      expect(run.code).toBe(2);
      expect(run.stderr).toContain(out);
      expect(run.stderr).toContain('which this command reads');
    }
    expect([sha(shard), sha(config)]).toEqual(before);
    expect(temps(model)).toEqual([]);
  });

  it('refuses an output that is an input under another name: a symlink or a hard link', async () => {
    const dir = freshDir();
    const model = await makeTinyModel(dir);
    const weights = join(model, 'model.safetensors');
    const before = sha(weights);
    const symlink = join(dir, 'via-symlink.gguf');
    symlinkSync(weights, symlink);
    const hardLink = join(dir, 'via-hard-link.gguf');
    linkSync(weights, hardLink);
    for (const out of [symlink, hardLink]) {
      const run = await convert(out, model);
      expect(run.code).toBe(2);
      expect(run.stderr).toContain('which this command reads');
    }
    expect(sha(weights)).toBe(before);
  });

  it('refuses the imatrix as convert --out', async () => {
    const dir = freshDir();
    const imatrix = join(dir, 'imatrix.dat');
    writeFileSync(imatrix, new Uint8Array(8));
    const run = await runCli('convert', TINY_NEOX_DIR, '--type', 'q4_0', '--imatrix', imatrix, '--out', imatrix);
    expect(run.code).toBe(2);
    // Reading the (invalid) imatrix or refusing the output: either way it is untouched.
    expect(readFileSync(imatrix)).toEqual(Buffer.from(new Uint8Array(8)));
  });

  it('refuses verify --json onto the --ppl text, and --json and --markdown naming the same file', async () => {
    const dir = freshDir();
    const text = join(dir, 't.txt');
    writeFileSync(text, TEXT);
    const run = await runCli('verify', TINY_NEOX_DIR, '--baseline', TINY_NEOX_DIR, '--ppl', text, '--json', text);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--json');
    expect(run.stderr).toContain('which this command reads');
    expect(readFileSync(text, 'utf8')).toBe(TEXT);
    const report = join(dir, 'r.json');
    const same = await runCli('verify', TINY_NEOX_DIR, '--baseline', TINY_NEOX_DIR, '--ppl', text, '--json', report, '--markdown', report);
    expect(same.code).toBe(2);
    expect(same.stderr).toContain('--json and --markdown name the same file');
    expect(existsSync(report)).toBe(false);
  });

  it('refuses verify --json onto a file of the baseline model folder', async () => {
    const dir = freshDir();
    const model = await makeTinyModel(dir);
    const text = join(dir, 't.txt');
    writeFileSync(text, TEXT);
    const tokenizer = join(model, 'tokenizer.json');
    const before = sha(tokenizer);
    const run = await runCli('verify', model, '--baseline', model, '--ppl', text, '--json', tokenizer);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(tokenizer);
    expect(sha(tokenizer)).toBe(before);
  });
});

describe('item 3: output locations are checked before the work starts', () => {
  it('fails verify --json into a missing folder at once, naming the folder', async () => {
    const dir = freshDir();
    const text = join(dir, 't.txt');
    writeFileSync(text, TEXT);
    const out = join(dir, 'missing-dir', 'r.json');
    const run = await runCli('verify', join(dir, 'no-such-model'), '--baseline', TINY_NEOX_DIR, '--ppl', text, '--json', out);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--json');
    expect(run.stderr).toContain(join(dir, 'missing-dir'));
    expect(run.stderr).toContain('does not exist');
  });

  it('fails convert --out that is a folder before reading the model, and writes nothing into it', async () => {
    const dir = freshDir();
    const run = await convert(dir, join(dir, 'no-such-model'));
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--out');
    expect(run.stderr).toContain('is a folder');
    expect(readdirSync(dir)).toEqual([]);
  });

  it('fails convert --out in an unwritable folder before reading the model', async () => {
    if (process.getuid?.() === 0) return; // root writes anywhere
    const dir = freshDir();
    const locked = join(dir, 'locked');
    mkdirSync(locked, { mode: 0o555 });
    const run = await convert(join(locked, 'x.gguf'), join(dir, 'no-such-model'));
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('not writable');
  });

  it('fails demo --json into a missing folder before converting anything', async () => {
    const dir = freshDir();
    const run = await runCli('demo', '--model', join(dir, 'no-such-model'), '--json', join(dir, 'nope', 'demo.json'));
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('--json');
    expect(run.stderr).toContain('does not exist');
  });
});

describe('item 4: synth --force replaces only a folder of its own files', () => {
  const synth = (out: string) =>
    synthCheckpoint({
      config: SYNTH_PRESETS.tiny.config,
      out,
      format: 'safetensors',
      seed: 3,
      dtype: 'F16',
      shardBytes: undefined,
      buffers: false,
      tokenizerDir: undefined,
      force: true,
    });

  it('refuses to replace a folder holding a file synth does not write, leaving everything in place', async () => {
    const dir = freshDir();
    const out = join(dir, 'model');
    await synth(out);
    writeFileSync(join(out, 'notes.txt'), 'mine');
    await expectPolyquantError(synth(out), 'usage', 'notes.txt', 'synth');
    expect(readFileSync(join(out, 'notes.txt'), 'utf8')).toBe('mine');
    expect(existsSync(join(out, 'config.json'))).toBe(true);
    expect(temps(dir)).toEqual([]);
  });

  it('refuses a folder holding a subfolder', async () => {
    const dir = freshDir();
    const out = join(dir, 'model');
    await synth(out);
    mkdirSync(join(out, 'checkpoints'));
    await expectPolyquantError(synth(out), 'usage', 'checkpoints', 'a folder');
    expect(existsSync(join(out, 'checkpoints'))).toBe(true);
  });

  it('replaces a folder of its own files, with no temp or old folder left beside it', async () => {
    const dir = freshDir();
    const out = join(dir, 'model');
    await synth(out);
    const run = await runCli('synth', '--preset', 'tiny', '--out', out, '--force', '--seed', '4');
    expect(run.code, run.stderr).toBe(0);
    expect(readdirSync(dir)).toEqual(['model']);
  });

  it('never replaces the filesystem root, the home folder or the working folder', async () => {
    for (const folder of ['/', homedir(), process.cwd()]) {
      const run = await runCli('synth', '--preset', 'tiny', '--out', folder, '--force');
      expect(run.code, folder).toBe(2);
      expect(run.stderr).toMatch(/will not replace|holds/);
      expect(existsSync(folder)).toBe(true);
    }
    expect(existsSync(join(process.cwd(), 'package.json'))).toBe(true);
  });

  it('refuses an --out that is a file, a FIFO or a device', async () => {
    const dir = freshDir();
    const file = join(dir, 'file');
    writeFileSync(file, 'x');
    const fifo = join(dir, 'fifo');
    mkfifo(fifo);
    for (const out of [file, fifo, '/dev/null']) {
      const run = await runCli('synth', '--preset', 'tiny', '--out', out, '--force');
      expect(run.code, out).toBe(2);
      expect(run.stderr).toContain('not a folder');
    }
    expect(readFileSync(file, 'utf8')).toBe('x');
  });
});
