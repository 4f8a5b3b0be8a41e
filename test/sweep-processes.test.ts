/**
 * Issue #12 acceptance, with real processes (the CLI entry point with its signal handlers, as
 * hardening-interrupts.test.ts spawns it): a sweep killed with SIGKILL in the middle of a cell and run
 * again equals an uninterrupted run, recomputing no finished cell; three `--shard I/3` processes (I = 0, 1, 2) run at
 * once and merged equal the single-process run, each cell computed by exactly one shard.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SweepCellRecord } from '../src/sweep/records.js';
import type { SweepReport } from '../src/sweep/report.js';
import { runSweep } from '../src/sweep/sweep.js';
import { runCli } from './helpers/cli.js';
import { REPO_ROOT } from './helpers/shared.js';
import { cellRecords, expectSameNumbers, sampleTextContent, withoutTimings } from './helpers/sweep.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-sweep-processes-');
afterAll(() => scratch.remove());
const TINY = join(REPO_ROOT, 'fixtures', 'tiny-neox');
const TYPES = 'q8_0,q4_k_m,q4_0,onnx:q8,onnx:q4,webgpu:q4f16_1';
const GRID = ['gguf-q4_0', 'gguf-q8_0', 'gguf-q4_k_m', 'onnx-q8', 'onnx-q4', 'webgpu-q4f16_1'];

let text: string;
let cacheDir: string;
/** The uninterrupted single-process run every other run is compared with. */
let reference: Map<string, SweepCellRecord>;

const flags = (): string[] => ['--types', TYPES, '--ppl', text, '--ctx', '64', '--max-windows', '2', '--threads', '1', '--cache-dir', cacheDir, '--max-kld', '0.01'];

beforeAll(async () => {
  text = join(scratch.path, 'sample.txt');
  writeFileSync(text, sampleTextContent());
  cacheDir = join(scratch.path, 'cache');
  const run = await runSweep({
    model: TINY,
    out: join(scratch.path, 'reference'),
    types: TYPES.split(','),
    pplFiles: [text],
    ctx: 64,
    maxWindows: 2,
    threads: 1,
    cacheDir,
    thresholds: { maxKld: 0.01 },
  });
  expect(run.computed).toEqual(GRID);
  reference = cellRecords(run.dir);
}, 300_000);

function spawnCli(args: readonly string[]): { child: ChildProcess; exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> } {
  const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'src', 'cli', 'bin.ts'), ...args], {
    cwd: REPO_ROOT,
    env: process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr })),
  );
  return { child, exited };
}

async function waitFor(found: () => boolean, child: ChildProcess, what: string): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (!found()) {
    if (child.exitCode !== null) throw new Error(`the sweep exited (${child.exitCode}) before ${what}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const cellFiles = (dir: string): string[] => (existsSync(join(dir, 'cells')) ? readdirSync(join(dir, 'cells')).filter((name) => name.endsWith('.json') && !name.startsWith('.')) : []);
const inFlight = (dir: string): string[] => (existsSync(join(dir, 'scratch')) ? readdirSync(join(dir, 'scratch')) : []);

describe('a killed sweep', () => {
  it('loses only the cell in flight: the rerun skips every finished cell and ends equal to an uninterrupted run', async () => {
    const out = join(scratch.fresh(), 'sweep');
    const { child, exited } = spawnCli(['sweep', TINY, '--out', out, ...flags()]);
    // Kill once a cell is recorded and the next one is being converted or verified.
    await waitFor(() => cellFiles(out).length >= 1 && inFlight(out).length > 0, child, 'a cell finished and the next started');
    child.kill('SIGKILL');
    const killed = await exited;
    expect(killed.signal).toBe('SIGKILL');
    const finished = cellFiles(out).map((name) => name.replace(/\.json$/, ''));
    expect(finished.length).toBeGreaterThanOrEqual(1);
    expect(finished.length).toBeLessThan(GRID.length);
    const before = new Map(finished.map((id) => {
      const file = join(out, 'cells', `${id}.json`);
      return [id, { text: readFileSync(file, 'utf8'), mtime: statSync(file).mtimeMs }];
    }));
    // SIGKILL runs no handler: the scratch folder of the cell in flight is left for the next run.
    expect(inFlight(out).length).toBeLessThanOrEqual(1);

    const rerun = spawnCli(['sweep', TINY, '--out', out, ...flags()]);
    const { code, stdout, stderr } = await rerun.exited;
    expect(code, stderr).toBe(0);
    for (const [id, { text: content, mtime }] of before) {
      expect(readFileSync(join(out, 'cells', `${id}.json`), 'utf8')).toBe(content);
      expect(statSync(join(out, 'cells', `${id}.json`)).mtimeMs).toBe(mtime);
      expect(stderr).toMatch(new RegExp(`\\] ${id}: skipped, already done`));
      expect(stderr).not.toMatch(new RegExp(`\\] ${id}: converting and verifying`));
    }
    expect(stdout).toContain(`sweep: ${GRID.length - finished.length} computed, ${finished.length} already done`);
    // The killed process's scratch folder is gone (its pid is dead), and so is this run's.
    expect(existsSync(join(out, 'scratch'))).toBe(false);
    const resumed = cellRecords(out);
    expect([...resumed.keys()].sort()).toEqual([...GRID].sort());
    for (const [id, record] of resumed) expectSameNumbers(withoutTimings(record), withoutTimings(reference.get(id)));
  }, 300_000);
});

describe('a sharded sweep', () => {
  it('runs three --shard I/3 processes at once; merged, they equal the single-process run, each cell computed once', async () => {
    const root = scratch.fresh();
    const shards = [0, 1, 2].map((index) => join(root, `shard-${index}`));
    const runs = shards.map((out, index) => spawnCli(['sweep', TINY, '--out', out, '--shard', `${index}/3`, ...flags()]));
    const results = await Promise.all(runs.map((run) => run.exited));
    for (const result of results) expect(result.code, result.stderr).toBe(0);
    // Each shard computed its round-robin third, and no cell ran in two shards.
    const perShard = shards.map((out) => cellFiles(out).map((name) => name.replace(/\.json$/, '')).sort());
    expect(perShard).toEqual([
      ['gguf-q4_0', 'onnx-q8'],
      ['gguf-q8_0', 'onnx-q4'],
      ['gguf-q4_k_m', 'webgpu-q4f16_1'],
    ]);
    results.forEach((result, index) => {
      expect(result.stdout).toContain(`shard ${index}/3: 2 computed, 0 already done`);
      const report = JSON.parse(readFileSync(join(shards[index] as string, 'sweep.json'), 'utf8')) as SweepReport;
      expect(report.complete).toBe(false);
      expect(report.missing).toHaveLength(4);
    });
    const merged = join(root, 'merged');
    const merge = await runCli('sweep', 'merge', ...shards, '--out', merged);
    expect(merge.code, merge.stderr).toBe(0);
    expect(merge.stdout).toContain(`merged ${GRID.length} cell(s) from 3 folder(s)`);
    const cells = cellRecords(merged);
    expect([...cells.keys()].sort()).toEqual([...GRID].sort());
    for (const [id, record] of cells) {
      expect(record.shard).toBe(`${GRID.indexOf(id) % 3}/3`);
      expectSameNumbers(withoutTimings(record), withoutTimings(reference.get(id)));
    }
    const report = await runCli('sweep', 'report', merged);
    expect(report.code).toBe(0);
    const single = JSON.parse(readFileSync(join(scratch.path, 'reference', 'sweep.json'), 'utf8')) as SweepReport;
    const combined = JSON.parse(readFileSync(join(merged, 'sweep.json'), 'utf8')) as SweepReport;
    expect(combined.recommendation).toEqual(single.recommendation);
    expectSameNumbers(withoutTimings(combined.cells.map(({ file: _file, ...cell }) => cell)), withoutTimings(single.cells.map(({ file: _file, ...cell }) => cell)));
    // A cell merged twice with the same key is fine; a folder of other settings is refused.
    const twice = await runCli('sweep', 'merge', shards[0] as string, merged, '--out', join(root, 'merged-again'));
    expect(twice.code).toBe(0);
    expect(twice.stdout).toContain('2 in more than one');
    const other = join(root, 'other');
    const otherRun = await runCli('sweep', TINY, '--out', other, '--types', 'q8_0', '--ppl', text, '--ctx', '32', '--max-windows', '2', '--threads', '1', '--cache-dir', cacheDir);
    expect(otherRun.code, otherRun.stderr).toBe(0);
    const refused = await runCli('sweep', 'merge', merged, other, '--out', join(root, 'mixed'));
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/holds a sweep of other settings .*ctx 32 vs 64/);
    expect(existsSync(join(root, 'mixed', 'cells'))).toBe(false);
  }, 300_000);
});
