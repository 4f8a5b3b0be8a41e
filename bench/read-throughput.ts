/**
 * Reader throughput benchmark (issue: foundation). On a `synth --preset polyglot-ko-3.8b` checkpoint,
 * compares streaming every tensor through the reader in row chunks with `cat` over the same files, in the
 * same warm page cache, and records peak RSS. Also times `synth` itself.
 *
 *   npx tsx bench/read-throughput.ts [--preset polyglot-ko-3.8b] [--dir /tmp/pq-bench] [--keep] [--reuse]
 *
 * Each measurement runs in its own child process so that peak RSS is that step's alone.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { readCheckpoint, type WeightsFormat } from '../src/readers/checkpoint.js';
import { rowsForChunkBytes } from '../src/readers/tensor-ref.js';

/** Chunk size and buffer reuse as the library's own streaming (hashing, converting) uses them. */
const CHUNK_BYTES = 1 << 20;

function argument(name: string, fallback: string): string {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? (process.argv[index + 1] ?? fallback) : fallback;
}

/** Child mode: stream every tensor (parameters and buffers) of a folder and report bytes, seconds, RSS. */
async function readAll(dir: string, weights: WeightsFormat): Promise<void> {
  const started = process.hrtime.bigint();
  const checkpoint = await readCheckpoint(dir, { weights });
  const opened = process.hrtime.bigint();
  let bytes = 0;
  let checksum = 0;
  const tensors = [...checkpoint.tensors.values(), ...checkpoint.skipped.map((entry) => entry.tensor)];
  for (const tensor of tensors) {
    for await (const chunk of tensor.rows(rowsForChunkBytes(tensor, CHUNK_BYTES), { reuseBuffer: true })) {
      bytes += chunk.length;
      checksum ^= chunk[chunk.length - 1] ?? 0; // touch the data so nothing is optimised away
    }
  }
  const ended = process.hrtime.bigint();
  const seconds = Number(ended - started) / 1e9;
  const streamSeconds = Number(ended - opened) / 1e9;
  process.stdout.write(`${JSON.stringify({ bytes, seconds, streamSeconds, maxRssKb: process.resourceUsage().maxRSS, checksum })}\n`);
}

interface Timed {
  seconds: number;
  maxRssKb: number;
}

/** Runs a command under /usr/bin/time-like accounting: wall seconds and the child's peak RSS. */
function timed(command: string, args: string[]): Timed & { stdout: string } {
  const started = process.hrtime.bigint();
  const result = spawnSync(command, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed: ${result.stderr}`);
  const rss = /Maximum resident set size \(kbytes\): (\d+)/.exec(result.stderr ?? '');
  return { seconds, maxRssKb: rss ? Number(rss[1]) : Number.NaN, stdout: result.stdout };
}

const here = resolve(import.meta.dirname);
const tsx = join(here, '..', 'node_modules', '.bin', 'tsx');
const cli = join(here, '..', 'src', 'cli', 'bin.ts');

async function parent(): Promise<void> {
  const preset = argument('preset', 'polyglot-ko-3.8b');
  const root = argument('dir', '/tmp/polyquant-bench');
  const rows: string[] = [];
  const mb = (bytes: number, seconds: number): string => (bytes / 1e6 / seconds).toFixed(0);
  for (const format of ['safetensors', 'bin'] as const) {
    const dir = join(root, `${preset}-${format}`);
    const reuse = process.argv.includes('--reuse') && existsSync(dir);
    if (!reuse) {
      if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
      const synth = timed('/usr/bin/time', ['-v', tsx, cli, 'synth', '--preset', preset, '--format', format, '--out', dir]);
      const written = synth.stdout.trim().split('\n').filter((file) => /\.(safetensors|bin)$/.test(file));
      const bytes = written.reduce((sum, file) => sum + statSync(file).size, 0);
      rows.push(`| synth ${format} | ${(bytes / 1e9).toFixed(2)} GB | ${synth.seconds.toFixed(1)} s | ${mb(bytes, synth.seconds)} MB/s | ${(synth.maxRssKb / 1024).toFixed(0)} MiB |`);
    }
    const files = readdirSync(dir).filter((name) => /\.(safetensors|bin)$/.test(name)).map((name) => join(dir, name));
    const total = files.reduce((sum, file) => sum + statSync(file).size, 0);
    // Warm the page cache, then measure cat and the reader back to back, twice each, best of two.
    execFileSync('sh', ['-c', `cat ${files.map((file) => `'${file}'`).join(' ')} > /dev/null`]);
    let catBest = Number.POSITIVE_INFINITY;
    let readBest: Timed & { bytes: number; streamSeconds: number } = { seconds: Number.POSITIVE_INFINITY, streamSeconds: 0, maxRssKb: 0, bytes: 0 };
    for (let round = 0; round < 2; round += 1) {
      catBest = Math.min(catBest, timed('sh', ['-c', `cat ${files.map((file) => `'${file}'`).join(' ')} > /dev/null`]).seconds);
      const read = timed('/usr/bin/time', ['-v', tsx, join(here, 'read-throughput.ts'), '--child', dir, '--weights', format]);
      const report = JSON.parse(read.stdout) as { bytes: number; seconds: number; streamSeconds: number };
      if (report.seconds < readBest.seconds) readBest = { ...report, maxRssKb: read.maxRssKb };
    }
    rows.push(`| cat ${format} (warm) | ${(total / 1e9).toFixed(2)} GB | ${catBest.toFixed(2)} s | ${mb(total, catBest)} MB/s | – |`);
    const ofCat = (seconds: number): string => `${((100 * (readBest.bytes / seconds)) / (total / catBest)).toFixed(0)}% of cat`;
    rows.push(
      `| reader ${format}: open + stream rows (warm) | ${(readBest.bytes / 1e9).toFixed(2)} GB | ${readBest.seconds.toFixed(2)} s | ${mb(readBest.bytes, readBest.seconds)} MB/s (${ofCat(readBest.seconds)}) | ${(readBest.maxRssKb / 1024).toFixed(0)} MiB |`,
      `| reader ${format}: stream rows only | | ${readBest.streamSeconds.toFixed(2)} s | ${mb(readBest.bytes, readBest.streamSeconds)} MB/s (${ofCat(readBest.streamSeconds)}) | |`,
    );
    if (!process.argv.includes('--keep')) rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(
    `machine: ${cpus().length}× ${cpus()[0]?.model ?? '?'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}; ${new Date().toISOString()}\n`,
  );
  process.stdout.write('| step | bytes | wall | throughput | peak RSS |\n|---|---|---|---|---|\n');
  process.stdout.write(`${rows.join('\n')}\n`);
}

const childIndex = process.argv.indexOf('--child');
if (childIndex >= 0) {
  await readAll(process.argv[childIndex + 1] ?? '', argument('weights', 'safetensors') as WeightsFormat);
} else {
  await parent();
}
