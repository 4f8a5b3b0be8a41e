/**
 * `polyquant sweep MODEL --out DIR …`, `polyquant sweep merge DIR… --out DIR`, `polyquant sweep report DIR`:
 * flags to src/sweep's library calls, the report to the terminal, the verdict to the exit code (0 a cell
 * passes and the sweep is complete, 1 none passes or cells are missing or failed to run, 2 bad input).
 */
import { tasksFlag } from './flags.js';
import { resolve } from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { checkOutputFile, type OutputFile, refuseOverwritingInputs } from '../io/output.js';
import { modelFolderFiles } from '../readers/checkpoint.js';
import { SWEEP_FORMATS, SWEEP_PRESET_NAMES } from '../sweep/grid.js';
import { renderSweepText, type SweepReport } from '../sweep/report.js';
import { mergeSweeps, runSweep, writeSweepReport } from '../sweep/sweep.js';
import { DEFAULT_MAX_ROW_BYTES } from '../verify/baseline-session.js';
import { KOBEST_TASK_NAMES, } from '../verify/kobest/index.js';
import { PERPLEXITY_PROTOCOLS, type PerplexityProtocol } from '../verify/perplexity.js';
import { parseThresholdFlags, requireGates, THRESHOLD_FLAGS, type Thresholds, thresholdDescription } from '../verify/thresholds.js';
import { DEVICE_NAMES, type DeviceName } from '../verify/verify.js';
import { integerFlag, MAX_CTX, positiveNumberFlag, shotsFlag, THREAD_FLAG_RANGE } from './flags.js';
import { table } from './format.js';
import type { CliIO } from './main.js';
import { createSweepProgress } from './progress.js';

const SIZE_UNITS: Readonly<Record<string, number>> = { '': 1, b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 };

/** A byte count: `2147483648`, `2GiB`, `500MB`, `0`. */
export function sizeFlag(flag: string, raw: unknown): number | undefined {
  if (raw === undefined) return undefined;
  const text = String(raw).trim();
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text);
  const unit = match === null ? undefined : SIZE_UNITS[(match[2] ?? '').toLowerCase()];
  const value = match === null || unit === undefined ? Number.NaN : Math.round(Number(match[1]) * unit);
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new PolyquantError(ERROR_CODES.USAGE, `${flag} ${JSON.stringify(text)} is not a size`, { hint: 'e.g. 2GiB, 500MB or a number of bytes; 0 keeps no rows' });
  }
  return value;
}


const list = (raw: string | undefined): string[] | undefined =>
  raw === undefined
    ? undefined
    : raw
        .split(',')
        .map((part) => part.trim())
        .filter((part) => part !== '');

/** The threshold flags (verify/thresholds.ts THRESHOLD_FLAGS: one meaning and one notation each, shared with verify). */
function thresholdOptions(y: Argv): Argv {
  return Object.keys(THRESHOLD_FLAGS).reduce((options, flag) => options.option(flag.slice(2), { type: 'string', describe: thresholdDescription(flag, 'a cell fails') }), y);
}

/** The threshold flags that were given (undefined when none was). */
function thresholdsOf(args: Record<string, unknown>): Thresholds | undefined {
  const thresholds = parseThresholdFlags(args);
  return Object.keys(thresholds).length > 0 ? thresholds : undefined;
}

async function reportOutputs(json: string | undefined, markdown: string | undefined): Promise<OutputFile[]> {
  const outputs: OutputFile[] = [];
  if (json !== undefined) outputs.push(await checkOutputFile(json, '--json'));
  if (markdown !== undefined) outputs.push(await checkOutputFile(markdown, '--markdown'));
  return outputs;
}

const printReport = (io: CliIO, report: SweepReport): void => io.stdout(`${renderSweepText(report, table)}\n`);

/** The `sweep` command and its `merge` and `report` subcommands; `setExitCode` carries the verdict to main. */
export function sweepCommand(io: CliIO, setExitCode: (code: number) => void): CommandModule<object, object> {
  return {
    command: 'sweep',
    describe: 'Convert and verify a model over a grid of formats × types (resumable, shardable); table, JSON, Markdown, Pareto plot and the smallest passing cell',
    builder: (y: Argv) =>
      y
        .command(
          'merge <dirs..>',
          'Gather the cell files of shard folders (sweep --shard I/N) into one sweep folder and write its report',
          (m: Argv) =>
            m
              .positional('dirs', { type: 'string', array: true, demandOption: true, describe: 'sweep folders of the shards' })
              .option('out', { type: 'string', demandOption: true, describe: 'merged sweep folder (created; may be one of the inputs)' })
              .option('json', { type: 'string', describe: 'also write the report (schema polyquant.sweep/1) to this file' })
              .option('markdown', { type: 'string', describe: 'write the report as Markdown (a PR comment) to this file' }),
          async (args) => {
            await reportOutputs(args.json, args.markdown);
            const merged = await mergeSweeps(args.dirs as string[], args.out, { json: args.json, markdown: args.markdown });
            const from = new Set(merged.cells.map((cell) => cell.from));
            io.stdout(
              `merged ${merged.cells.length} cell(s) from ${from.size} folder(s) into ${merged.out}${merged.duplicates.length > 0 ? ` (${merged.duplicates.length} in more than one: ${merged.duplicates.join(', ')})` : ''}\n` +
                `verdict: ${merged.report.verdict}; gate with: polyquant sweep report ${merged.out}\n`,
            );
          },
        )
        .command(
          'report <dir>',
          'Print (and write) the report of a sweep folder: tables, recommendation, DIR/sweep.json, DIR/pareto.svg and .png; exit 1 when no cell passes or the sweep is incomplete',
          (r: Argv) =>
            thresholdOptions(
              r
                .positional('dir', { type: 'string', demandOption: true, describe: 'sweep folder (its cells/*.json)' })
                .option('json', { type: 'string', describe: 'also write the report (schema polyquant.sweep/1) to this file' })
                .option('markdown', { type: 'string', describe: 'write the report as Markdown (a PR comment) to this file' })
                .option('plot', { type: 'boolean', default: true, describe: 'draw pareto.svg and pareto.png' }),
            ),
          async (args) => {
            const thresholds = thresholdsOf(args);
            await reportOutputs(args.json as string | undefined, args.markdown as string | undefined);
            const report = await writeSweepReport(args.dir as string, {
              thresholds,
              json: args.json as string | undefined,
              markdown: args.markdown as string | undefined,
              plot: args.plot as boolean,
            });
            printReport(io, report);
            setExitCode(report.verdict === 'pass' ? 0 : 1);
          },
        )
        .command(
          '$0 <model>',
          'Sweep MODEL (an HF folder) into --out DIR',
          (s: Argv) =>
            thresholdOptions(
              s
                .positional('model', { type: 'string', demandOption: true, describe: 'HF model folder: converted for every cell, and the baseline' })
                .option('out', { type: 'string', demandOption: true, describe: 'sweep folder (created): cells/, baseline/, sweep.json, pareto.svg, pareto.png' })
                .option('formats', { type: 'string', describe: `comma-separated: ${SWEEP_FORMATS.join(', ')} (default gguf,onnx,webgpu)` })
                .option('types', { type: 'string', describe: 'comma-separated TYPE or FORMAT:TYPE (overrides the preset), e.g. q8_0,q4_k_m,onnx:q4' })
                .option('preset', { choices: SWEEP_PRESET_NAMES, default: 'quick' as const, describe: 'quick: GGUF q8_0/q4_k_m/q4_0 + every ONNX and WebGPU type; release: a wider GGUF grid' })
                .option('simulate', { type: 'boolean', default: false, describe: 'add simulate cells (reference engine on quantize→dequantize weights, no file); alone unless --formats names others' })
                .option('calibrate', {
                  type: 'string',
                  array: true,
                  describe:
                    'calibration text for calibrated cells (TYPE+imatrix, TYPE+gptq: convert --calibrate, and --optimize for GGUF), computed once and shared; a preset grid gets every calibrated variant of its types. Not the --ppl text',
                })
                .option('calibrate-chunks', { type: 'string', describe: '--calibrate: use at most N chunks of 512 tokens (default all)' })
                .option('ppl', { type: 'string', array: true, describe: 'UTF-8 text file(s) for perplexity' })
                .option('ctx', { type: 'string', describe: 'window length in tokens (default 512)' })
                .option('protocol', { choices: PERPLEXITY_PROTOCOLS, default: 'windows' as PerplexityProtocol })
                .option('stride', { type: 'string', describe: 'strided protocol: tokens between windows' })
                .option('max-windows', { type: 'string', describe: 'score only the first N windows of each text (N ≥ 1)' })
                .option('kld', { type: 'boolean', default: true, describe: 'compare full next-token distributions (KL divergence; the plot needs it)' })
                .option('kobest', { type: 'string', describe: 'KOBEST data folder' })
                .option('tasks', { type: 'string', describe: `comma-separated: ${KOBEST_TASK_NAMES.join(',')}` })
                .option('shots', { type: 'string', default: '0', describe: 'comma-separated shot counts, e.g. 0,5' })
                .option('split', { choices: ['train', 'validation', 'test', 'test_originated'] as const, default: 'test' as const })
                .option('limit', { type: 'string', describe: 'first N documents after the shuffle (N ≥ 1, or a fraction in (0, 1))' })
                .option('device', { choices: DEVICE_NAMES, default: 'auto' as DeviceName, describe: 'where the llamacpp, onnx and webgpu engines run' })
                .option('threads', { type: 'string', describe: `engine threads and converter workers (${THREAD_FLAG_RANGE.min} to ${THREAD_FLAG_RANGE.max})` })
                .option('cache-dir', { type: 'string', describe: "where a large baseline's GGUF and the model's file hashes are kept (default $POLYQUANT_CACHE_DIR or ~/.cache/polyquant)" })
                .option('baseline-type', { choices: ['f16', 'bf16', 'f32'] as const, default: 'f16' as const, describe: 'GGUF type an HF baseline too large for the reference engine runs from' })
                .option('shard', { type: 'string', describe: 'run shard I of N (I/N, 0 ≤ I < N, as JOB_COMPLETION_INDEX counts): cell k of the grid when k mod N = I' })
                .option('force', { type: 'boolean', default: false, describe: 'redo every cell of this run, and replace cells of other settings in DIR' })
                .option('require-gates', { type: 'boolean', default: false, describe: 'exit 2 (before anything runs) unless a threshold applies to what is measured' })
                .option('keep-artifacts', { type: 'boolean', default: false, describe: 'keep the converted files in DIR/artifacts (default: deleted after each verify)' })
                .option('baseline-cache', { type: 'boolean', default: true, describe: 'score the baseline once and replay it for every cell (--no-baseline-cache: rescore it in every cell)' })
                .option('baseline-cache-limit', { type: 'string', describe: `most bytes of baseline next-token rows kept in DIR/baseline (default ${DEFAULT_MAX_ROW_BYTES / 2 ** 30}GiB); windows past it are rescored per cell` })
                .option('json', { type: 'string', describe: 'also write the report (schema polyquant.sweep/1) to this file' })
                .option('markdown', { type: 'string', describe: 'write the report as Markdown (a PR comment) to this file' }),
            ),
          async (args) => {
            const ctx = integerFlag('--ctx', args.ctx, 2, MAX_CTX);
            const stride = integerFlag('--stride', args.stride, 1, MAX_CTX);
            const maxWindows = integerFlag('--max-windows', args['max-windows'], 1);
            const limit = positiveNumberFlag('--limit', args.limit, 'a document count ≥ 1, or a fraction of the split in (0, 1)');
            const threads = integerFlag('--threads', args.threads, THREAD_FLAG_RANGE.min, THREAD_FLAG_RANGE.max);
            const calibrate = ((args.calibrate as unknown[] | undefined) ?? []).map(String);
            if (calibrate.some((text) => text === '')) throw new PolyquantError(ERROR_CODES.USAGE, '--calibrate needs a file name', { hint: 'e.g. --calibrate train.txt' });
            const calibrateChunks = integerFlag('--calibrate-chunks', args['calibrate-chunks'], 1);
            const shots = shotsFlag('--shots', args.shots);
            const tasks = args.tasks === undefined ? undefined : tasksFlag(args.tasks as string);
            const thresholds = thresholdsOf(args);
            if (args['require-gates'] === true) {
              requireGates(thresholds ?? {}, { ppl: ((args.ppl as string[] | undefined) ?? []).length > 0, kld: args.kld as boolean, kobest: args.kobest !== undefined });
            }
            const baselineCacheBytes = sizeFlag('--baseline-cache-limit', args['baseline-cache-limit']);
            const outputs = await reportOutputs(args.json as string | undefined, args.markdown as string | undefined);
            if (outputs.length > 0) {
              await refuseOverwritingInputs(outputs, [...((args.ppl as string[] | undefined) ?? []), ...calibrate, ...(await modelFolderFiles(args.model as string).catch(() => []))]);
            }
            const progress = createSweepProgress();
            let run: Awaited<ReturnType<typeof runSweep>>;
            try {
              run = await runSweep({
                model: args.model as string,
                out: args.out as string,
                formats: list(args.formats as string | undefined),
                types: list(args.types as string | undefined),
                preset: args.preset as string,
                simulate: args.simulate as boolean,
                ...(calibrate.length > 0 && { calibrate }),
                ...(calibrateChunks !== undefined && { calibrateChunks }),
                pplFiles: (args.ppl as string[] | undefined) ?? [],
                ...(ctx !== undefined && { ctx }),
                protocol: args.protocol as PerplexityProtocol,
                ...(stride !== undefined && { stride }),
                ...(maxWindows !== undefined && { maxWindows }),
                kld: args.kld as boolean,
                ...(args.kobest !== undefined && { kobestDir: args.kobest as string }),
                ...(tasks !== undefined && { tasks }),
                shots,
                split: args.split as 'test',
                ...(limit !== undefined && { limit }),
                ...(thresholds !== undefined && { thresholds }),
                device: args.device as DeviceName,
                ...(threads !== undefined && { threads }),
                ...(args['cache-dir'] !== undefined && { cacheDir: args['cache-dir'] as string }),
                baselineType: args['baseline-type'] as 'f16',
                ...(args.shard !== undefined && { shard: args.shard as string }),
                force: args.force as boolean,
                keepArtifacts: args['keep-artifacts'] as boolean,
                baselineCache: args['baseline-cache'] as boolean,
                ...(baselineCacheBytes !== undefined && { baselineCacheBytes }),
                json: args.json as string | undefined,
                markdown: args.markdown as string | undefined,
                onProgress: (event) => progress.report(event),
              });
            } finally {
              progress.done();
            }
            printReport(io, run.report);
            const counts = [`${run.computed.length} computed`, `${run.skipped.length + run.regated.length} already done`];
            if (run.errors.length > 0) counts.push(`${run.errors.length} failed to run`);
            const once = [
              ...(run.baselineSeconds === null ? [] : [`baseline scored once in ${run.baselineSeconds.toFixed(1)} s`]),
              ...(run.calibration === null ? [] : [`calibrated once in ${run.calibration.seconds.toFixed(1)} s (${run.calibration.chunks} chunks × ${run.calibration.chunkSize} tokens)`]),
            ];
            io.stdout(
              `${run.shard === null ? 'sweep' : `shard ${run.shard}`}: ${counts.join(', ')}${once.map((part) => `; ${part}`).join('')}; ${run.seconds.toFixed(1)} s in all; ${resolve(run.dir)}\n`,
            );
            if (run.shard !== null) {
              // A shard does not gate: its folder holds a part of the grid. Merge the shards, then `sweep report`.
              io.stdout(`merge the shard folders (polyquant sweep merge DIR… --out DIR) and gate with polyquant sweep report DIR\n`);
              setExitCode(run.errors.length > 0 ? 1 : 0);
            } else setExitCode(run.report.verdict === 'pass' ? 0 : 1);
          },
        ),
    handler: () => undefined,
  };
}
