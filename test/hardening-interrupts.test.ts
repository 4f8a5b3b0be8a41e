/**
 * Issue #14, interrupts: SIGINT / SIGTERM during convert, synth and demo remove the temp files and
 * folders in flight and exit 130 / 143, never touching the final name; a later run removes stale temps of
 * its own naming pattern whose process is gone, and leaves everything else alone.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runDemo } from '../src/demo.js';
import { PolyquantError } from '../src/errors.js';
import { writeAtomically } from '../src/io/file.js';
import { isProcessAlive, removeTrackedTempsSync, trackedTemps, trackTemp } from '../src/io/temp.js';
import { runCli } from './helpers/cli.js';
import { REPO_ROOT } from './helpers/shared.js';
import { makeTinyModel, tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-interrupts-');
afterAll(() => scratch.remove());

/** A pid no process can have: above Linux's largest pid_max (2^22). */
const DEAD_PID = 4_194_400;

const freshDir = (): string => scratch.fresh();

/** Runs the real CLI entry point (with its signal handlers) in a child process. */
function spawnCli(args: readonly string[], env: NodeJS.ProcessEnv = {}): { child: ChildProcess; exited: Promise<{ code: number | null; stderr: string }> } {
  const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'src', 'cli', 'bin.ts'), ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exited = new Promise<{ code: number | null; stderr: string }>((resolve) => child.on('exit', (code) => resolve({ code, stderr })));
  return { child, exited };
}

/** Polls until `found()` returns true (or the child exits first, which fails the test). */
async function waitFor(found: () => boolean, child: ChildProcess, what: string): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (!found()) {
    if (child.exitCode !== null) throw new Error(`the process exited (${child.exitCode}) before ${what}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const tempNames = (dir: string): string[] => (existsSync(dir) ? readdirSync(dir).filter((name) => /\.(tmp|partial|old)$/.test(name)) : []);

/**
 * A checkpoint large enough that converting it to q4_k_m on one worker takes seconds (112 M parameters,
 * 224 MB of F16), so that a signal reliably arrives mid-conversion.
 */
let bigModel: string;
beforeAll(async () => {
  bigModel = await makeTinyModel(scratch.path, {
    configPatch: { hidden_size: 1024, intermediate_size: 4096, num_hidden_layers: 4, num_attention_heads: 8, vocab_size: 30080 },
    buffers: false,
  });
}, 300_000);

describe('item 5: interrupts leave nothing behind', () => {
  it('removes the temp GGUF in flight on SIGTERM during convert and exits 143, leaving the final name untouched', async () => {
    const dir = freshDir();
    const out = join(dir, 'big.gguf');
    writeFileSync(out, 'the previous file');
    const { child, exited } = spawnCli(['convert', bigModel, '--type', 'q4_k_m', '--out', out, '--workers', '1']);
    await waitFor(() => tempNames(dir).length > 0, child, 'the temp GGUF appeared');
    child.kill('SIGTERM');
    const { code, stderr } = await exited;
    expect(code, stderr).toBe(143);
    expect(stderr).toContain('interrupted by SIGTERM');
    expect(readdirSync(dir)).toEqual(['big.gguf']);
    expect(existsSync(out) && readdirSync(dir).length).toBe(1);
  }, 300_000);

  it('removes the partial folder and its temp shard on SIGINT during synth and exits 130', async () => {
    const dir = freshDir();
    const out = join(dir, 'model');
    const { child, exited } = spawnCli(['synth', '--preset', 'polyglot-ko-1.3b', '--out', out]);
    const partial = (): string | undefined => readdirSync(dir).find((name) => name.endsWith('.partial'));
    await waitFor(() => {
      const folder = partial();
      return folder !== undefined && readdirSync(join(dir, folder)).some((name) => name.endsWith('.tmp'));
    }, child, 'a temp shard appeared in the partial folder');
    child.kill('SIGINT');
    const { code, stderr } = await exited;
    expect(code, stderr).toBe(130);
    expect(readdirSync(dir)).toEqual([]);
  }, 300_000);

  it('removes its scratch folder in the OS temp folder on SIGTERM during demo', async () => {
    const tmp = freshDir();
    const { child, exited } = spawnCli(['demo', '--model', bigModel, '--types', 'q4_k_m', '--threads', '1'], { TMPDIR: tmp });
    await waitFor(() => {
      const scratchDir = readdirSync(tmp).find((name) => name.startsWith('polyquant-demo-'));
      return scratchDir !== undefined && readdirSync(join(tmp, scratchDir)).some((name) => name.endsWith('.tmp'));
    }, child, 'the demo converted into its scratch folder');
    child.kill('SIGTERM');
    const { code, stderr } = await exited;
    expect(code, stderr).toBe(143);
    // (tsx keeps its own cache there: only the demo's folders count.)
    expect(readdirSync(tmp).filter((name) => name.startsWith('polyquant-'))).toEqual([]);
  }, 300_000);

  it('removes every tracked temp path when the signal handler runs', async () => {
    const dir = freshDir();
    const file = join(dir, '.x.gguf.1.abcdef01.tmp');
    const folder = join(dir, '.model.1.partial');
    writeFileSync(file, 'partial');
    mkdirSync(folder);
    writeFileSync(join(folder, 'config.json'), '{}');
    const untrack = [trackTemp(file), trackTemp(folder)];
    expect(trackedTemps()).toEqual(expect.arrayContaining([file, folder]));
    expect(removeTrackedTempsSync()).toEqual(expect.arrayContaining([file, folder]));
    expect(readdirSync(dir)).toEqual([]);
    for (const done of untrack) done();
  });
});

describe('item 5: a later run removes stale temps of its own, and only those', () => {
  it('an atomic write removes stale temps of the same output whose process is gone, keeping live and foreign ones', async () => {
    expect(isProcessAlive(DEAD_PID)).toBe(false);
    const dir = freshDir();
    const stale = `.report.json.${DEAD_PID}.deadbeef.tmp`;
    const live = `.report.json.${process.pid}.cafebabe.tmp`;
    const otherOutput = `.other.json.${DEAD_PID}.deadbeef.tmp`;
    const notOurs = `.report.json.${DEAD_PID}.tmp`;
    for (const name of [stale, live, otherOutput, notOurs]) writeFileSync(join(dir, name), 'x');
    await writeAtomically(join(dir, 'report.json'), (file) => file.write(new TextEncoder().encode('{}\n')));
    expect(readdirSync(dir).sort()).toEqual([live, notOurs, otherOutput, 'report.json'].sort());
  });

  it('convert removes a stale temp GGUF of its output', async () => {
    const dir = freshDir();
    const stale = `.tiny.gguf.${DEAD_PID}.0badc0de.tmp`;
    writeFileSync(join(dir, stale), 'left by a killed run');
    const run = await runCli('convert', join(REPO_ROOT, 'fixtures', 'tiny-neox'), '--type', 'q8_0', '--out', join(dir, 'tiny.gguf'), '--workers', '1');
    expect(run.code, run.stderr).toBe(0);
    expect(readdirSync(dir)).toEqual(['tiny.gguf']);
  });

  it('synth removes a stale partial and old folder of its output', async () => {
    const dir = freshDir();
    for (const name of [`.model.${DEAD_PID}.partial`, `.model.${DEAD_PID}.old`]) {
      mkdirSync(join(dir, name));
      writeFileSync(join(dir, name, 'config.json'), '{}');
    }
    mkdirSync(join(dir, `.model.${process.pid + 1_000_000}.keep`));
    const run = await runCli('synth', '--preset', 'tiny', '--out', join(dir, 'model'));
    expect(run.code, run.stderr).toBe(0);
    expect(readdirSync(dir).sort()).toEqual([`.model.${process.pid + 1_000_000}.keep`, 'model'].sort());
  });

  it('demo removes a stale scratch folder of a demo whose process is gone, and not one of a live process', async () => {
    const tmp = freshDir();
    const stale = join(tmp, `polyquant-demo-${DEAD_PID}-AbC123`);
    const live = join(tmp, `polyquant-demo-${process.pid}-XyZ789`);
    mkdirSync(stale);
    mkdirSync(live);
    const previous = process.env['TMPDIR'];
    process.env['TMPDIR'] = tmp;
    try {
      // The model is missing: the demo fails right after the sweep, before converting anything.
      await expect(runDemo({ models: [join(tmp, 'no-such-model')] })).rejects.toBeInstanceOf(PolyquantError);
    } finally {
      if (previous === undefined) delete process.env['TMPDIR'];
      else process.env['TMPDIR'] = previous;
    }
    expect(existsSync(stale)).toBe(false);
    expect(existsSync(live)).toBe(true);
  });
});
