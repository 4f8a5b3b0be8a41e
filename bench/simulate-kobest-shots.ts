/**
 * KOBEST part of the simulated-quantization sweep at a given shot count, scoring the fp16 baseline once
 * and each simulated candidate after it (what `verify --simulate` does per scheme, without recomputing
 * the baseline each time): per task Δacc / Δmacro-F1 with bootstrap intervals and flips.
 *
 *   npx tsx bench/simulate-kobest-shots.ts [--schemes Q8_0,Q4_K,Q4_0] [--shots 5] [--limit 200]
 */
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { readCheckpoint } from '../src/readers/checkpoint.js';
import { compareKobest } from '../src/verify/compare-kobest.js';
import { createReferenceEngine } from '../src/verify/engines/reference.js';
import { runKobest } from '../src/verify/kobest/index.js';
import { planSimulation } from '../src/verify/simulate.js';

function argument(name: string, fallback: string): string {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? (process.argv[index + 1] ?? fallback) : fallback;
}

const shared = resolve(import.meta.dirname, '..', '..', 'shared');
const model = join(shared, 'fixtures', 'polyglot-ko-tiny');
const dir = join(shared, 'data', 'kobest');
const schemes = argument('schemes', 'Q8_0,Q4_K,Q4_0').split(',');
const shots = [Number(argument('shots', '5'))];
const limit = Number(argument('limit', '200'));

const checkpoint = await readCheckpoint(model);
const baselineEngine = await createReferenceEngine(checkpoint);
const started = performance.now();
const baseline = await runKobest(baselineEngine, { dir, shots, split: 'validation', limit });
await baselineEngine.close();
process.stderr.write(`baseline ${((performance.now() - started) / 1000).toFixed(0)} s\n`);
const rows: string[] = [];
for (const scheme of schemes) {
  const simulation = planSimulation(scheme, checkpoint.config);
  const engine = await createReferenceEngine(checkpoint, { weightTransform: simulation.transform });
  const candidate = await runKobest(engine, { dir, shots, split: 'validation', limit });
  await engine.close();
  for (const [i, base] of baseline.results.entries()) {
    const cand = candidate.results[i];
    if (cand === undefined) throw new Error('missing result');
    const c = compareKobest(base, cand);
    rows.push(
      `| ${scheme} (${simulation.fileType}) | ${base.harnessName} ${base.shots}-shot | ${(100 * base.acc).toFixed(1)} → ${(100 * cand.acc).toFixed(1)} | ${(100 * c.delta_acc).toFixed(1)} [${(100 * c.delta_acc_ci.low).toFixed(1)}, ${(100 * c.delta_acc_ci.high).toFixed(1)}] | ${(100 * base.macro_f1).toFixed(1)} → ${(100 * cand.macro_f1).toFixed(1)} | ${c.flips} (−${c.lost}/+${c.gained}) | ${c.mcnemar_p.toFixed(3)} |`,
    );
    process.stderr.write(`${rows.at(-1)}\n`);
  }
}
process.stdout.write(`machine: ${cpus().length}× ${cpus()[0]?.model ?? '?'}; ${new Date().toISOString()}; KOBEST validation --limit ${limit}, ${shots[0]}-shot\n\n`);
process.stdout.write('| scheme | task | acc % | Δacc (95% CI) | macro-F1 % | flips | McNemar p |\n|---|---|---|---|---|---|---|\n');
process.stdout.write(`${rows.join('\n')}\n`);
