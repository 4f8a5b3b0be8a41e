/**
 * `polyquant imatrix` against llama-imatrix (issue #13): speed on the same text, ctx, chunks and threads,
 * the agreement of the two matrices, and what the matrix buys — GGUF files quantized without an imatrix,
 * with ours and with llama-imatrix's, each verified in llama.cpp against the HF folder in the reference
 * engine on held-out text (mean KL divergence, top-1 agreement, perplexity). Prints Markdown for
 * BENCHMARKS.md.
 *
 *   npx tsx bench/imatrix.ts [--model DIR] [--calibrate train.txt] [--text valid.txt] [--ctx 512]
 *                            [--chunks N] [--threads 2] [--types q4_k_m,q4_0] [--windows N]
 *                            [--skip speed|fidelity]
 *
 * Needs llama-imatrix and llama-quantize from bench/build-llama.sh (the llama-imatrix rows and the
 * agreement are skipped without them). A model past the reference engine (synth polyglot-ko-1.3b) runs in
 * llama.cpp (`--skip fidelity`: the fidelity part's baseline needs the reference engine). llama-imatrix runs on our f16 GGUF with --no-ppl; it still
 * computes the output head for every token (its batches ask for all logits), which ours skips.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { computeImatrix } from '../src/calibrate/imatrix.js';
import { writeImatrixGguf } from '../src/calibrate/imatrix-file.js';
import { convertToGguf } from '../src/converters/gguf/convert.js';
import { readGgufHeader } from '../src/converters/gguf/format.js';
import { readImatrix } from '../src/converters/gguf/imatrix.js';
import { verify } from '../src/verify/verify.js';

function argument(name: string, fallback: string): string {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? (process.argv[index + 1] ?? fallback) : fallback;
}

const shared = resolve(import.meta.dirname, '..', '..', 'shared');
const model = resolve(argument('model', join(shared, 'fixtures', 'polyglot-ko-tiny')));
const calibration = resolve(argument('calibrate', join(shared, 'data', 'korean-text', 'train.txt')));
const text = resolve(argument('text', join(shared, 'data', 'korean-text', 'valid.txt')));
const ctx = Number(argument('ctx', '512'));
const chunksArgument = argument('chunks', '');
const chunks = chunksArgument === '' ? undefined : Number(chunksArgument);
const threads = Number(argument('threads', '2'));
const types = argument('types', 'q4_k_m,q4_0').split(',');
const windowsArgument = argument('windows', '');
const skip = argument('skip', '');
const bin = resolve(import.meta.dirname, '..', 'vendor-build', 'llama.cpp', 'build', 'bin');
const llamaImatrix = join(bin, 'llama-imatrix');
const hasLlama = existsSync(llamaImatrix);
const scratch = mkdtempSync(join(tmpdir(), 'polyquant-bench-imatrix-'));
const load = (): string => loadavg()[0]?.toFixed(1) ?? '?';

async function importances(path: string): Promise<ReadonlyMap<string, Float32Array>> {
  return (await readImatrix(path)).entries;
}

function relativeError(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i += 1) {
    num += ((a[i] as number) - (b[i] as number)) ** 2;
    den += (b[i] as number) ** 2;
  }
  return Math.sqrt(num / den);
}

try {
  const ours = join(scratch, 'ours.gguf');
  const theirs = join(scratch, 'theirs.gguf');
  const f16 = join(scratch, 'f16.gguf');
  await convertToGguf(model, { type: 'f16', out: f16, workers: threads });
  console.log(`${cpus()[0]?.model ?? 'cpu'} × ${cpus().length}, ${new Date().toISOString().slice(0, 10)}; ${model.split('/').pop()}; calibration ${calibration.split('/').pop()}, ctx ${ctx}, ${chunks ?? 'all'} chunks, ${threads} threads`);
  console.log('');

  // ---- speed (and the matrices the fidelity part uses)
  const loadBefore = load();
  let started = performance.now();
  const result = await computeImatrix(model, { texts: [calibration], ctx, ...(chunks !== undefined && { chunks }), threads });
  const oursWall = (performance.now() - started) / 1000;
  await writeImatrixGguf(ours, result);
  console.log('| imatrix | chunks | tokens | wall | chunks only | tokens/s (chunks only) | load (1 min) |');
  console.log('|---|---:|---:|---:|---:|---:|---|');
  console.log(
    `| polyquant imatrix (${result.engine.name === 'reference' ? 'reference engine' : 'llama.cpp on its cached f16 GGUF'}, ${threads} threads) | ${result.chunkCount} | ${result.tokens} | ${oursWall.toFixed(1)} s | ${result.seconds.toFixed(1)} s | ${(result.tokens / result.seconds).toFixed(0)} | ${loadBefore} → ${load()} |`,
  );
  if (hasLlama) {
    const before = load();
    started = performance.now();
    const args = ['-m', f16, '-f', calibration, '-c', String(ctx), '-o', theirs, '-t', String(threads), '--no-ppl', ...(chunks !== undefined ? ['--chunks', String(chunks)] : [])];
    const run = spawnSync(llamaImatrix, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
    const wall = (performance.now() - started) / 1000;
    if (run.status !== 0) throw new Error(`llama-imatrix failed: ${run.stderr}`);
    // "compute_imatrix: 1.23 seconds per pass" is per batch of 2048 / ctx chunks; the wall clock is what compares.
    const passes = /(\d+(?:\.\d+)?) seconds per pass/.exec(run.stderr)?.[1];
    console.log(
      `| llama-imatrix (f16 GGUF, -t ${threads}, --no-ppl) | ${result.chunkCount} | ${result.tokens} | ${wall.toFixed(1)} s | — | ${(result.tokens / wall).toFixed(0)} (wall; first pass ${passes ?? '?'} s) | ${before} → ${load()} |`,
    );
    const [a, b] = await Promise.all([importances(ours), importances(theirs)]);
    let worst = 0;
    let worstName = '';
    for (const [name, values] of a) {
      const error = relativeError(values, b.get(name) as Float32Array);
      if (error > worst) [worst, worstName] = [error, name];
    }
    console.log('');
    console.log(`agreement: largest ‖ours − llama-imatrix‖ / ‖llama-imatrix‖ over the ${a.size} tensors: ${worst.toExponential(2)} (${worstName})`);
  }
  console.log('');
  if (skip === 'fidelity') process.exit(0);

  // ---- fidelity: the same types without an imatrix, with ours, with llama-imatrix's
  const ppl = (report: Awaited<ReturnType<typeof verify>>) => {
    const section = report.perplexity[0];
    if (section === undefined) throw new Error('no perplexity section');
    return section;
  };
  const rows: string[] = [];
  let baselinePpl = 0;
  let scored = 0;
  for (const type of types) {
    const variants: [string, string | undefined][] = [
      ['none', undefined],
      ['polyquant imatrix', ours],
      ...(hasLlama ? ([['llama-imatrix', theirs]] as [string, string][]) : []),
    ];
    for (const [label, matrix] of variants) {
      const file = join(scratch, `${type}-${label.replace(/\W+/g, '-')}.gguf`);
      const imatrix = matrix === undefined ? undefined : await readImatrix(matrix);
      await convertToGguf(model, {
        type,
        out: file,
        workers: threads,
        ...(imatrix !== undefined && {
          imatrix: imatrix.entries,
          imatrixProvenance: { file: matrix as string, datasets: imatrix.datasets, chunkCount: imatrix.chunkCount, entries: imatrix.entries.size },
        }),
      });
      const before = performance.now();
      const report = await verify({ candidate: file, baseline: model, pplFiles: [text], ctx, threads, device: 'cpu', ...(windowsArgument !== '' && { maxWindows: Number(windowsArgument) }) });
      const section = ppl(report);
      baselinePpl = section.baseline.ppl;
      scored = section.comparison.positions;
      const tensorBytes = (await readGgufHeader(file, statSync(file).size, async (n) => readFileSync(file).subarray(0, n))).tensors.reduce((sum, tensor) => sum + tensor.bytes, 0);
      rows.push(
        `| ${type} | ${label} | ${(statSync(file).size / 1e6).toFixed(2)} MB (${tensorBytes} B of tensors) | ${section.candidate.ppl.toFixed(3)} | ${section.comparison.delta_ppl_pct >= 0 ? '+' : ''}${section.comparison.delta_ppl_pct.toFixed(3)}% | ${(section.comparison.kld?.mean ?? Number.NaN).toExponential(3)} | ${(100 * section.comparison.top1_agreement).toFixed(2)}% | ${((performance.now() - before) / 1000).toFixed(0)} s |`,
      );
      console.error(`${type} ${label}: done`);
    }
  }
  console.log(`fidelity on ${text.split('/').pop()} (windows protocol, ctx ${ctx}${windowsArgument !== '' ? `, first ${windowsArgument} windows` : ''}${scored ? `, ${scored} scored tokens` : ''}), candidates in llama.cpp, baseline the HF folder in the reference engine (PPL ${baselinePpl.toFixed(3)})`);
  console.log('');
  console.log('| type | imatrix | size | PPL | ΔPPL | mean KLD | top-1 | verify |');
  console.log('|---|---|---:|---:|---:|---:|---:|---:|');
  for (const row of rows) console.log(row);
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
