/**
 * Saved baselines (issue #15 item 9): `verify --baseline MODEL --save-baseline FILE` once with no candidate
 * (the baseline scored alone, as llama-perplexity's --kl-divergence-base), then three candidates with
 * `--baseline FILE`, against three full runs (each loading and scoring the baseline model), wall time of
 * the built CLI as a user runs it (one process per run). The runs are paired (full q8_0 / save, full
 * q4_k_m / reuse q4_k_m, full q4_0 / reuse q4_0, then reuse q8_0) so a change in machine load
 * hits both sides alike. Each reused report is checked against its full run: PPL, top-1 and KOBEST equal, KL
 * divergence within the documented tolerance.
 *
 *   npm run build
 *   npx tsx bench/saved-baseline.ts --model ../shared/fixtures/polyglot-ko-tiny [--ctx 512] [--max-windows 8]
 *     [--tasks copa,boolq] [--limit 40] [--threads 2] [--repeat 1] [--out bench/out/saved-baseline]
 *
 * With --repeat N the paired sequence runs N times and each run's shortest time is kept (on a shared
 * machine the minimum is the least disturbed measurement).
 *
 * An HF folder the reference engine cannot hold (polyglot-ko-1.3b and up) runs in llama.cpp on its cached
 * f16 GGUF: a small untimed run fills the cache first, so no timed run pays the conversion.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { basename, join, resolve } from 'node:path';
import type { VerifyReport } from '../src/verify/report.js';

function argument(name: string, fallback: string): string {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? (process.argv[index + 1] ?? fallback) : fallback;
}

const root = resolve(import.meta.dirname, '..');
const shared = resolve(root, '..', 'shared');
const model = resolve(argument('model', join(shared, 'fixtures', 'polyglot-ko-tiny')));
const out = resolve(argument('out', join(root, 'bench', 'out', 'saved-baseline', basename(model))));
const text = resolve(argument('text', join(shared, 'data', 'korean-text', 'valid.txt')));
const evaluation = [
  '--ppl',
  text,
  '--ctx',
  argument('ctx', '512'),
  '--max-windows',
  argument('max-windows', '8'),
  ...(argument('tasks', 'copa,boolq') === 'none' ? [] : ['--kobest', join(shared, 'data', 'kobest'), '--tasks', argument('tasks', 'copa,boolq'), '--split', 'validation', '--limit', argument('limit', '40')]),
  '--threads',
  argument('threads', String(cpus().length)),
];
const types = ['q8_0', 'q4_k_m', 'q4_0'];
mkdirSync(out, { recursive: true });
const cli = join(root, 'bin', 'polyquant.js');

/**
 * Runs the CLI under /usr/bin/time; returns its wall time and CPU time (user + system, all threads) in
 * seconds. On a shared machine the CPU time is the steadier measure of the work done.
 */
function polyquant(args: readonly string[]): { wall: number; cpu: number } {
  const timing = join(out, 'time.txt');
  rmSync(timing, { force: true });
  execFileSync('/usr/bin/time', ['-f', '%e %U %S', '-o', timing, process.execPath, cli, ...args], { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, CI: '1' } });
  const [wall, user, system] = readFileSync(timing, 'utf8').trim().split(/\s+/).slice(-3).map(Number);
  return { wall: wall as number, cpu: (user as number) + (system as number) };
}

for (const type of types) {
  const file = join(out, `${type}.gguf`);
  if (!existsSync(file)) polyquant(['convert', model, '--to', 'gguf', '--type', type, '--out', file]);
}
// Untimed: fills the baseline cache (an HF folder run by llama.cpp is converted to f16 once) and the page cache.
polyquant(['verify', join(out, 'q8_0.gguf'), '--baseline', model, '--ppl', text, '--ctx', '32', '--max-windows', '1', '--threads', argument('threads', String(cpus().length))]);

const saved = join(out, 'baseline.pqbaseline');
const report = (name: string): VerifyReport => JSON.parse(readFileSync(join(out, `${name}.json`), 'utf8')) as VerifyReport;
type Time = { wall: number; cpu: number };
const times: { full: Record<string, Time>; saved: Record<string, Time> } = { full: {}, saved: {} };
const keep = (table: Record<string, Time>, key: string, time: Time): void => {
  const known = table[key];
  table[key] = known === undefined || time.wall < known.wall ? time : known;
};
const load = [loadavg()[0] ?? 0];
const repeat = Number(argument('repeat', '1'));
for (let round = 0; round < repeat; round += 1) {
  for (const type of types) {
    const gguf = join(out, `${type}.gguf`);
    keep(times.full, type, polyquant(['verify', gguf, '--baseline', model, ...evaluation, '--json', join(out, `full-${type}.json`)]));
    if (type === 'q8_0') {
      rmSync(saved, { force: true });
      keep(times.saved, 'save', polyquant(['verify', '--baseline', model, '--save-baseline', saved, ...evaluation]));
    } else {
      keep(times.saved, type, polyquant(['verify', gguf, '--baseline', saved, ...evaluation, '--json', join(out, `saved-${type}.json`)]));
    }
    load.push(loadavg()[0] ?? 0);
  }
  keep(times.saved, 'q8_0', polyquant(['verify', join(out, 'q8_0.gguf'), '--baseline', saved, ...evaluation, '--json', join(out, 'reused-q8_0.json')]));
  load.push(loadavg()[0] ?? 0);
}

// The reused reports against the full runs.
let worstKld = 0;
for (const type of types) {
  const full = report(`full-${type}`);
  const reused = report(type === 'q8_0' ? 'reused-q8_0' : `saved-${type}`);
  for (const [index, section] of reused.perplexity.entries()) {
    const expected = full.perplexity[index];
    if (expected === undefined || JSON.stringify(section.baseline) !== JSON.stringify(expected.baseline) || JSON.stringify(section.candidate) !== JSON.stringify(expected.candidate)) {
      throw new Error(`${type}: perplexity differs from the full run`);
    }
    if (section.comparison.top1_agreement !== expected.comparison.top1_agreement) throw new Error(`${type}: top-1 differs`);
    const mean = expected.comparison.kld?.mean ?? 0;
    worstKld = Math.max(worstKld, Math.abs((section.comparison.kld?.mean ?? 0) / mean - 1));
  }
  if (JSON.stringify(reused.kobest) !== JSON.stringify(full.kobest)) throw new Error(`${type}: KOBEST differs from the full run`);
}

const sum = (values: Record<string, Time>, key: 'wall' | 'cpu'): number => Object.values(values).reduce((total, value) => total + value[key], 0);
const cell = (time: Time | undefined): string => (time === undefined ? '–' : `${time.wall.toFixed(1)} s (CPU ${time.cpu.toFixed(1)} s)`);
const total = (key: 'wall' | 'cpu'): string => `${sum(times.saved, key).toFixed(1)} / ${sum(times.full, key).toFixed(1)} s = ${((100 * sum(times.saved, key)) / sum(times.full, key)).toFixed(0)} %`;
const fullQ8 = report('full-q8_0').perplexity[0];
process.stdout.write(
  `${basename(model)} — ${new Date().toISOString().slice(0, 10)}, ${cpus().length}× ${cpus()[0]?.model ?? '?'}, ${Math.round(totalmem() / 2 ** 30)} GiB; load average during the runs ${load.map((value) => value.toFixed(1)).join(' → ')}\n` +
    `settings: ${evaluation.join(' ').replaceAll(shared, '../shared')}; shortest of ${repeat} run${repeat === 1 ? '' : 's'} each; ${fullQ8?.comparison.positions ?? 0} scored positions per run; saved baseline ${(statSync(saved).size / 2 ** 20).toFixed(1)} MiB\n\n` +
    '| run | full (baseline model loaded and scored) | saved baseline |\n|---|---|---|\n' +
    types.map((type) => `| ${type} | ${cell(times.full[type])} | ${type === 'q8_0' ? `save (no candidate) ${cell(times.saved['save'])}; reuse ${cell(times.saved['q8_0'])}` : cell(times.saved[type])} |`).join('\n') +
    `\n| save + 3 reuses / 3 full runs | wall ${total('wall')} | CPU ${total('cpu')} |\n` +
    '\n' +
    `Numbers: PPL, top-1 and KOBEST equal to the full runs; mean KLD within ${(100 * worstKld).toFixed(4)} %.\n`,
);
