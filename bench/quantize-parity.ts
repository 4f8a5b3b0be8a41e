/**
 * llama-quantize parity (issue #15): wall time of polyquant converting an HF folder and requantizing an
 * F16 GGUF, next to llama-quantize quantizing the same F16 GGUF, per type, at the same thread count. The
 * three steps of a type run back to back, `--repeat` rounds in turn (ABCABC…), so a change in the machine's
 * load touches all three; the table gives each step's median and the ratios of medians. Each step is its
 * own process (the built CLI, `npm run build` first) under /usr/bin/time; the outputs are compared with cmp.
 *
 *   npx tsx bench/quantize-parity.ts --model DIR --f16 FILE.gguf [--types q8_0,q4_0,q4_k_m] [--threads 2]
 *                                    [--repeat 2] [--dir /tmp/polyquant-parity]
 *
 * Needs llama-quantize from bench/build-llama.sh. Make the F16 GGUF with
 * `node bin/polyquant.js convert DIR --type f16 --out FILE.gguf` (llama-quantize has no HF input).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, cpus, totalmem } from 'node:os';
import { join, resolve } from 'node:path';

function argument(name: string, fallback?: string): string {
  const index = process.argv.indexOf(`--${name}`);
  const value = index >= 0 ? process.argv[index + 1] : fallback;
  if (value === undefined) throw new Error(`--${name} is required`);
  return value;
}

interface Timed {
  readonly seconds: number;
  readonly maxRssKb: number;
}

function timed(command: string, args: readonly string[]): Timed {
  const started = process.hrtime.bigint();
  const result = spawnSync('/usr/bin/time', ['-v', command, ...args], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed:\n${result.stderr}`);
  const rss = /Maximum resident set size \(kbytes\): (\d+)/.exec(result.stderr ?? '');
  return { seconds, maxRssKb: rss ? Number(rss[1]) : Number.NaN };
}

const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? (sorted[middle] as number) : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
};

const here = resolve(import.meta.dirname);
const cli = join(here, '..', 'bin', 'polyquant.js');
const llamaQuantize = join(here, '..', 'vendor-build', 'llama.cpp', 'build', 'bin', 'llama-quantize');
if (!existsSync(llamaQuantize)) throw new Error(`no ${llamaQuantize}: run bash bench/build-llama.sh`);
const model = resolve(argument('model'));
const f16 = resolve(argument('f16'));
const types = argument('types', 'q8_0,q4_0,q4_k_m').split(',');
const threads = argument('threads', String(availableParallelism()));
const repeat = Number(argument('repeat', '2'));
const dir = resolve(argument('dir', '/tmp/polyquant-parity'));
mkdirSync(dir, { recursive: true });

const rows: string[] = [];
for (const type of types) {
  const outputs = { llama: join(dir, `llama-${type}.gguf`), hf: join(dir, `hf-${type}.gguf`), gguf: join(dir, `gguf-${type}.gguf`) };
  const steps = {
    llama: () => timed(llamaQuantize, [f16, outputs.llama, type.toUpperCase(), threads]),
    hf: () => timed('node', [cli, 'convert', model, '--type', type, '--out', outputs.hf, '--threads', threads, '--quiet']),
    gguf: () => timed('node', [cli, 'convert', f16, '--type', type, '--out', outputs.gguf, '--threads', threads, '--quiet']),
  };
  const runs: Record<keyof typeof steps, Timed[]> = { llama: [], hf: [], gguf: [] };
  for (let round = 0; round < repeat; round += 1) {
    for (const step of Object.keys(steps) as (keyof typeof steps)[]) {
      rmSync(outputs[step], { force: true });
      runs[step].push(steps[step]());
    }
  }
  const same = (a: string, b: string): string => (spawnSync('cmp', ['-s', a, b]).status === 0 ? 'yes' : 'NO');
  const wall = (step: keyof typeof steps): number => median(runs[step].map((run) => run.seconds));
  const rss = (step: keyof typeof steps): string => `${(Math.max(...runs[step].map((run) => run.maxRssKb)) / 1024).toFixed(0)} MiB`;
  const all = (step: keyof typeof steps): string => runs[step].map((run) => run.seconds.toFixed(1)).join(' / ');
  rows.push(`| ${type} | llama-quantize F16 GGUF → ${type.toUpperCase()} | ${wall('llama').toFixed(1)} s (${all('llama')}) | ${rss('llama')} | 1.00× | – |`);
  rows.push(`| ${type} | polyquant HF folder → ${type} | ${wall('hf').toFixed(1)} s (${all('hf')}) | ${rss('hf')} | **${(wall('hf') / wall('llama')).toFixed(2)}×** | ${same(outputs.hf, outputs.llama)} |`);
  rows.push(`| ${type} | polyquant F16 GGUF → ${type} | ${wall('gguf').toFixed(1)} s (${all('gguf')}) | ${rss('gguf')} | **${(wall('gguf') / wall('llama')).toFixed(2)}×** | ${same(outputs.gguf, outputs.llama)} |`);
  for (const output of Object.values(outputs)) rmSync(output, { force: true });
}
const load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
process.stdout.write(
  `${model} (${f16}); ${threads} threads; ${repeat} rounds; ${cpus().length}× ${cpus()[0]?.model ?? '?'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}, load at the end ${load}; ${new Date().toISOString()}\n`,
);
process.stdout.write('| type | step | wall: median (each round) | peak RSS | ratio to llama-quantize | byte-identical to llama-quantize\'s |\n|---|---|---|---|---|---|\n');
process.stdout.write(`${rows.join('\n')}\n`);
