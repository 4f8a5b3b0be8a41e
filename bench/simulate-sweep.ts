/**
 * Simulated-quantization sweep (issue: verification core): `verify --simulate` for several schemes on
 * polyglot-ko-tiny, perplexity on valid.txt and KOBEST validation, one report per scheme plus a summary
 * table for BENCHMARKS.md.
 *
 *   npx tsx bench/simulate-sweep.ts [--schemes Q8_0,Q4_K,Q4_0] [--ctx 512] [--shots 0,5] [--limit 200] [--out bench/out/sweep]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { verify } from '../src/verify/verify.js';

function argument(name: string, fallback: string): string {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? (process.argv[index + 1] ?? fallback) : fallback;
}

const shared = resolve(import.meta.dirname, '..', '..', 'shared');
const model = join(shared, 'fixtures', 'polyglot-ko-tiny');
const schemes = argument('schemes', 'Q8_0,Q4_K,Q4_0').split(',');
const ctx = Number(argument('ctx', '512'));
const shots = argument('shots', '0,5').split(',').map(Number);
const limit = Number(argument('limit', '200'));
const out = resolve(argument('out', 'bench/out/sweep'));
mkdirSync(out, { recursive: true });

const rows: string[] = [];
for (const scheme of schemes) {
  const started = performance.now();
  const report = await verify({
    candidate: model,
    baseline: model,
    simulate: scheme,
    pplFiles: [join(shared, 'data', 'korean-text', 'valid.txt')],
    ctx,
    kobestDir: join(shared, 'data', 'kobest'),
    split: 'validation',
    limit,
    shots,
  });
  const seconds = (performance.now() - started) / 1000;
  writeFileSync(join(out, `${scheme}.json`), `${JSON.stringify(report, null, 2)}\n`);
  const ppl = report.perplexity[0];
  const kobest = report.kobest
    .map((section) => `${section.task.replace('kobest_', '')}/${section.shots}: ${(100 * section.comparison.delta_acc).toFixed(1)}/${(100 * section.comparison.delta_macro_f1).toFixed(1)} (${section.comparison.flips})`)
    .join('; ');
  rows.push(
    `| ${scheme} (${report.candidate.simulate}) | ${ppl?.baseline.ppl.toFixed(3)} | ${ppl?.candidate.ppl.toFixed(3)} | ${ppl?.comparison.delta_ppl_pct.toFixed(3)}% | ${ppl?.comparison.kld?.mean.toExponential(3)} | ${ppl?.comparison.kld?.p99.toExponential(3)} | ${(100 * (ppl?.comparison.top1_agreement ?? Number.NaN)).toFixed(2)}% | ${kobest} | ${seconds.toFixed(0)} s |`,
  );
  process.stderr.write(`${rows.at(-1)}\n`);
}
process.stdout.write(`machine: ${cpus().length}× ${cpus()[0]?.model ?? '?'}; ${new Date().toISOString()}; ctx ${ctx}, KOBEST validation --limit ${limit}, shots ${shots.join(',')}\n\n`);
process.stdout.write('| scheme | PPL fp16 | PPL simulated | ΔPPL | mean KLD | p99 KLD | top-1 | KOBEST Δacc/ΔF1 in points (flips) | time |\n|---|---|---|---|---|---|---|---|---|\n');
process.stdout.write(`${rows.join('\n')}\n`);
