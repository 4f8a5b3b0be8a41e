/**
 * GGUF conversion benchmark (issue: HF → GGUF converter). On a `synth --preset polyglot-ko-3.8b` checkpoint,
 * times polyquant's one-pass conversion to each GGUF type (wall time, peak RSS) next to llama-quantize
 * quantizing polyquant's F16 GGUF to the same type with the same thread count, and checks that the two
 * outputs are byte-identical (they are for every type on polyglot-ko-tiny; test/gguf-convert-llama.test.ts).
 *
 *   npx tsx bench/gguf-convert.ts [--preset polyglot-ko-3.8b] [--dir /tmp/polyquant-bench-gguf]
 *                                 [--types f16,q8_0,q4_0,q4_k_m] [--threads N] [--keep]
 *
 * Each measurement runs in its own child process under /usr/bin/time -v, so peak RSS is that step's alone.
 * Needs llama-quantize from bench/build-llama.sh; without it only polyquant is timed. Disk: the checkpoint,
 * the F16 GGUF and two outputs at a time (≈ 24 GB for 3.8b).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, cpus, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { convertToGguf } from '../src/converters/gguf/convert.js';
import { GGUF_FILE_TYPES, type GgufFileType, isGgufFileType } from '../src/quant/policy.js';

function argument(name: string, fallback: string): string {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? (process.argv[index + 1] ?? fallback) : fallback;
}

interface Timed {
  seconds: number;
  maxRssKb: number;
  stdout: string;
}

/** Runs a command under /usr/bin/time -v: wall seconds and the child's peak RSS. */
function timed(command: string, args: string[]): Timed {
  const started = process.hrtime.bigint();
  const result = spawnSync('/usr/bin/time', ['-v', command, ...args], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed: ${result.stderr}`);
  const rss = /Maximum resident set size \(kbytes\): (\d+)/.exec(result.stderr ?? '');
  return { seconds, maxRssKb: rss ? Number(rss[1]) : Number.NaN, stdout: result.stdout };
}

/** Child mode: one conversion, reported as JSON (the library call `polyquant convert --to gguf` makes). */
async function child(dir: string, type: string, out: string, workers: number): Promise<void> {
  const started = process.hrtime.bigint();
  const plan = await convertToGguf(dir, { type, out, workers });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  process.stdout.write(`${JSON.stringify({ seconds, bytes: plan.fileBytes, tensors: plan.tensors.length })}\n`);
}

/** Whether two files hold the same bytes (cmp streams them, whatever their size). */
function sameFile(a: string, b: string): boolean {
  const result = spawnSync('cmp', ['-s', a, b]);
  return result.status === 0;
}

/** llama-quantize's name for a file type (`llama-quantize --help`: Q4_K_M, F16, …). */
const llamaTypeName = (type: GgufFileType): string => type.toUpperCase();

async function parent(): Promise<void> {
  const preset = argument('preset', 'polyglot-ko-3.8b');
  const root = resolve(argument('dir', '/tmp/polyquant-bench-gguf'));
  const threads = Number(argument('threads', String(availableParallelism())));
  const types = argument('types', 'f16,q8_0,q4_0,q4_k_m').split(',');
  for (const type of types) if (!isGgufFileType(type)) throw new Error(`unknown type ${type}; one of ${Object.keys(GGUF_FILE_TYPES).join(', ')}`);
  const here = resolve(import.meta.dirname);
  const tsx = join(here, '..', 'node_modules', '.bin', 'tsx');
  const cli = join(here, '..', 'src', 'cli', 'bin.ts');
  const llamaQuantize = join(here, '..', 'vendor-build', 'llama.cpp', 'build', 'bin', 'llama-quantize');
  const hasLlama = existsSync(llamaQuantize);

  const model = join(root, preset);
  const rows: string[] = [];
  const gb = (bytes: number): string => (bytes >= 1e9 ? `${(bytes / 1e9).toFixed(2)} GB` : `${(bytes / 1e6).toFixed(1)} MB`);
  const mib = (kb: number): string => `${(kb / 1024).toFixed(0)} MiB`;
  const synthesized = !existsSync(join(model, 'config.json'));
  if (synthesized) {
    const synth = timed(tsx, [cli, 'synth', '--preset', preset, '--out', model]);
    rows.push(`| synth ${preset} | – | ${synth.seconds.toFixed(1)} s | ${mib(synth.maxRssKb)} | – |`);
  }

  // The F16 GGUF first: llama-quantize's input for every other type.
  const outputOf = (type: GgufFileType): string => join(root, `${preset}-polyquant-${type}.gguf`);
  const f16 = outputOf('f16');
  const ordered = ['f16' as GgufFileType, ...types.filter((type) => type !== 'f16')] as GgufFileType[];
  for (const type of ordered) {
    const out = outputOf(type);
    const run = timed(tsx, [join(here, 'gguf-convert.ts'), '--child', model, '--type', type, '--out', out, '--workers', String(threads)]);
    const report = JSON.parse(run.stdout) as { seconds: number; bytes: number };
    const measured = types.includes(type);
    if (measured) {
      rows.push(`| polyquant convert → ${type} (${threads} workers) | ${gb(report.bytes)} | ${run.seconds.toFixed(1)} s | ${mib(run.maxRssKb)} | – |`);
    }
    if (hasLlama && type !== 'f16') {
      const reference = join(root, `${preset}-llama-quantize-${type}.gguf`);
      const quantize = timed(llamaQuantize, [f16, reference, llamaTypeName(type), String(threads)]);
      const identical = sameFile(out, reference) ? 'yes' : 'NO';
      rows.push(`| llama-quantize F16 → ${llamaTypeName(type)} (${threads} threads) | ${gb(statSync(reference).size)} | ${quantize.seconds.toFixed(1)} s | ${mib(quantize.maxRssKb)} | ${identical} |`);
      rmSync(reference, { force: true });
    }
    if (type !== 'f16' && !process.argv.includes('--keep')) rmSync(out, { force: true });
  }
  if (!process.argv.includes('--keep')) {
    rmSync(f16, { force: true });
    if (synthesized) rmSync(model, { recursive: true, force: true });
  }
  const load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  process.stdout.write(
    `machine: ${cpus().length}× ${cpus()[0]?.model ?? '?'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}, load ${load}; ${new Date().toISOString()}\n`,
  );
  process.stdout.write('| step | output | wall | peak RSS | byte-identical to polyquant |\n|---|---|---|---|---|\n');
  process.stdout.write(`${rows.join('\n')}\n`);
}

const childIndex = process.argv.indexOf('--child');
if (childIndex >= 0) {
  await child(process.argv[childIndex + 1] ?? '', argument('type', 'f16'), argument('out', ''), Number(argument('workers', '0')));
} else {
  await parent();
}
