/**
 * The distributed-sweep examples' own commands, run: the `polyquant sweep …` lines read from
 * examples/github-actions/sweep.yml and examples/kubernetes/sweep-job.yaml (test/helpers/sweep-examples.ts),
 * with polyglot-ko-tiny as MODEL (skipped without ../shared) — the shard runs concurrently, as the matrix / Indexed Job runs them,
 * each in its own process, then `merge` and `report` — must give a complete, passing sweep in which every
 * cell ran exactly once.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { githubActionsSweep, kubernetesSweep } from './helpers/sweep-examples.js';
import { sampleTextContent } from './helpers/sweep.js';
import { HAS_SHARED, POLYGLOT_TINY_DIR, REPO_ROOT } from './helpers/shared.js';
import { tempDir } from './helpers/tiny-model.js';

const scratch = tempDir('polyquant-sweep-examples-');
afterAll(() => scratch.remove());
// The examples evaluate at verify's default context (512): polyglot-ko-tiny's is 2048, the bundled tiny
// model's only 128.
const MODEL = POLYGLOT_TINY_DIR;

function run(argv: readonly string[], cwd: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done, fail) => {
    // `npx polyquant` as the examples run it: the package's bin over the built dist/ (npm ci builds it), in
    // the example's working directory (tsx cannot follow the quantizer's worker threads out of the repo).
    const child = spawn(process.execPath, [join(REPO_ROOT, 'bin', 'polyquant.js'), ...argv], {
      cwd,
      env: { ...process.env, NO_COLOR: '1', POLYQUANT_CACHE_DIR: join(scratch.path, 'cache') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.once('error', fail);
    child.once('close', (code) => done({ code, stdout, stderr }));
  });
}

/** The cell files of a sweep folder, by name. */
function cells(dir: string): string[] {
  const folder = join(dir, 'cells');
  return existsSync(folder) ? readdirSync(folder).filter((name) => name.endsWith('.json')).sort() : [];
}

describe.skipIf(!HAS_SHARED || !existsSync(join(REPO_ROOT, 'dist', 'cli', 'bin.js')))('the distributed-sweep examples, run as written on polyglot-ko-tiny', () => {
  it('GitHub Actions: three shard jobs at once, then merge and report — every cell once, a passing report', async () => {
    const sweep = githubActionsSweep({ model: MODEL });
    const cwd = scratch.fresh();
    // The workflow's default TEXT input, relative to the repository it runs in.
    mkdirSync(join(cwd, 'data'));
    writeFileSync(join(cwd, 'data', 'valid.txt'), sampleTextContent());
    const shards = await Promise.all(sweep.shardRuns.map((argv) => run(argv, cwd)));
    for (const [index, shard] of shards.entries()) expect([index, shard.code, shard.stderr.slice(-2000)]).toEqual([index, 0, expect.any(String)]);
    const shardFolders = readdirSync(cwd).filter((name) => name.startsWith('cells-')).sort();
    expect(shardFolders).toHaveLength(sweep.shards);
    const perShard = shardFolders.map((folder) => cells(join(cwd, folder)));
    const all = perShard.flat();
    expect(new Set(all).size).toBe(all.length);
    expect(all.length).toBeGreaterThan(sweep.shards);

    const merge = await run(sweep.merge, cwd);
    expect([merge.code, merge.stderr.slice(-2000)]).toEqual([0, expect.any(String)]);
    const merged = sweep.merge[sweep.merge.indexOf('--out') + 1] as string;
    expect(cells(join(cwd, merged))).toEqual([...all].sort());

    const report = await run(sweep.report, cwd);
    expect([report.code, report.stderr.slice(-2000)]).toEqual([0, expect.any(String)]);
    const markdown = sweep.report[sweep.report.indexOf('--markdown') + 1] as string;
    expect(readFileSync(join(cwd, markdown), 'utf8')).toContain('recommend');
    expect(existsSync(join(cwd, merged, 'pareto.png'))).toBe(true);
  }, 600_000);

  it('Kubernetes: the Indexed Job’s shard commands and the merge Job’s, under a stand-in for the shared volume', async () => {
    const volume = scratch.fresh();
    mkdirSync(volume, { recursive: true });
    writeFileSync(join(volume, 'valid.txt'), sampleTextContent());
    const sweep = kubernetesSweep({ model: MODEL, volume });
    const shards = await Promise.all(sweep.shardRuns.map((argv) => run(argv, volume)));
    for (const [index, shard] of shards.entries()) expect([index, shard.code, shard.stderr.slice(-2000)]).toEqual([index, 0, expect.any(String)]);
    const merge = await run(sweep.merge, volume);
    expect([merge.code, merge.stderr.slice(-2000)]).toEqual([0, expect.any(String)]);
    const report = await run(sweep.report, volume);
    expect([report.code, report.stderr.slice(-2000)]).toEqual([0, expect.any(String)]);
  }, 600_000);
});
