/**
 * `polyquant verify CANDIDATE --baseline MODEL …`: flags to one verify() call; the report to stdout (and
 * --json / --markdown files); exit 1 when a gate fails.
 */
import { writeTextAtomically } from '../io/file.js';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { tasksFlag } from './flags.js';
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import { checkOutputFile, type OutputFile, refuseOverwritingInputs } from '../io/output.js';
import { modelFolderFiles } from '../readers/checkpoint.js';
import { readOnnxModel } from '../converters/onnx/read.js';
import { ONNX_TYPE_NAMES, type OnnxTypeName } from '../converters/onnx/types.js';
import { isOnnxFile, onnxFolderFiles } from '../verify/engines/onnx.js';
import { KOBEST_SPLITS, KOBEST_TASK_NAMES, type KobestTaskName, kobestSplitCandidates } from '../verify/kobest/index.js';
import { PERPLEXITY_PROTOCOLS, type PerplexityProtocol } from '../verify/perplexity.js';
import { renderMarkdown, renderText } from '../verify/report.js';
import { parseThresholdFlags, requireGates, thresholdDescription } from '../verify/thresholds.js';
import { DEFAULT_BOOTSTRAP_ITERATIONS, HARNESS_BOOTSTRAP_ITERATIONS } from '../verify/compare-kobest.js';
import { type KobestSampleRecord, kobestSamplesJsonl } from '../verify/kobest/samples.js';
import { jsonReportText } from '../io/json-shape.js';
import { commandLine } from './command-line.js';
import { DEVICE_NAMES, type DeviceName, ENGINE_NAMES, type EngineName, type SavedBaselineSummary, saveBaseline, verify } from '../verify/verify.js';
import { integerFlag, MAX_CTX, positiveNumberFlag, shotsFlag, THREAD_FLAG_RANGE } from './flags.js';
import { table } from './format.js';
import { createCountProgress, } from './progress.js';

import type { CliIO } from './main.js';

export function addVerifyCommand(parser: Argv, io: CliIO, setExitCode: (code: number) => void): void {
  parser.command(
    'verify [candidate]',
    'Compare a candidate with its baseline: perplexity, KL divergence, top-1 agreement, KOBEST; exit 1 if a threshold fails. Without a candidate, --save-baseline FILE scores the baseline alone for later runs',
    (y: Argv) =>
      y
        .positional('candidate', {
          type: 'string',
          describe: 'model to check: a .gguf file, an ONNX folder or .onnx file, or an HF folder (with --simulate, the HF weights to quantize)',
        })
        .option('baseline', {
          type: 'string',
          demandOption: true,
          describe:
            'model to compare against: an HF folder, a .gguf file, an ONNX folder or a .onnx file; or a file written by --save-baseline (no baseline model loads; texts, --ctx, --protocol, --stride, --max-windows and the KOBEST data, split and limit must be those it was saved with)',
        })
        .option('save-baseline', {
          type: 'string',
          describe:
            "save the baseline's side of this run to this file (with no candidate: score the baseline alone, as llama-perplexity's --kl-divergence-base) (tokens, per-token scores, next-token distributions as 16-bit log-probabilities: 2 bytes × vocabulary per scored token, KOBEST log-likelihoods), for later runs to pass as --baseline",
        })
        .option('ppl', { type: 'string', array: true, describe: 'UTF-8 text file(s) for perplexity' })
        .option('ctx', { type: 'string', describe: 'window length in tokens (default 512)' })
        .option('protocol', { choices: PERPLEXITY_PROTOCOLS, default: 'windows' as PerplexityProtocol })
        .option('stride', { type: 'string', describe: 'strided protocol: tokens between windows' })
        .option('max-windows', { type: 'string', describe: 'score only the first N windows of each text (N ≥ 1)' })
        .option('kld', { type: 'boolean', default: true, describe: 'compare full next-token distributions (KL divergence)' })
        .option('kobest', { type: 'string', describe: 'KOBEST data folder (JSONL <task>/<split>.jsonl or the official TSVs)' })
        .option('tasks', { type: 'string', describe: `comma-separated: ${KOBEST_TASK_NAMES.join(',')}` })
        .option('shots', { type: 'string', default: '0', describe: 'comma-separated shot counts, e.g. 0,5' })
        .option('split', { choices: ['train', 'validation', 'test', 'test_originated'] as const, default: 'test' as const })
        .option('limit', { type: 'string', describe: 'first N documents after the shuffle (N ≥ 1, or a fraction in (0, 1))' })
        .option('simulate', { type: 'string', describe: 'quantize→dequantize the candidate weights: a ggml type (Q4_K), GGUF type (q4_k_m) or WebGPU layout (q4f16_1, q8f16_pq, …)' })
        .option('engine', {
          choices: ENGINE_NAMES,
          default: 'auto' as EngineName,
          describe:
            'auto: reference for HF folders it can hold (≈ 1 B parameters), llamacpp (node-llama-cpp) for .gguf files and, on their cached f16 GGUF, for larger HF folders, onnx (onnxruntime-node) for ONNX folders and .onnx files, webgpu (our WGSL runtime on Dawn) for WebGPU folders',
        })
        .option('onnx-type', {
          choices: ONNX_TYPE_NAMES,
          coerce: (value: string) => value.toLowerCase() as OnnxTypeName,
          describe: 'which onnx/model*.onnx of an ONNX folder runs (needed when it holds several); name a .onnx file to pick one side alone',
        })
        .option('cache-dir', { type: 'string', describe: 'where HF folders run by llama.cpp are converted to (default $POLYQUANT_CACHE_DIR or ~/.cache/polyquant)' })
        .option('baseline-type', { choices: ['f16', 'bf16', 'f32'] as const, default: 'f16' as const, describe: 'GGUF type an HF folder run by llama.cpp is converted to' })
        .option('device', { choices: DEVICE_NAMES, default: 'auto' as DeviceName, describe: 'where the llamacpp, onnx and webgpu engines run (gpu: fail without one; webgpu cpu: a software adapter such as SwiftShader)' })
        .option('threads', {
          type: 'string',
          describe: `per engine: reference worker threads, llama.cpp compute threads, onnxruntime intra-op threads (${THREAD_FLAG_RANGE.min} to ${THREAD_FLAG_RANGE.max})`,
        })
        .option('max-ppl-increase', { type: 'string', describe: thresholdDescription('--max-ppl-increase', 'fail') })
        .option('max-kld', { type: 'string', describe: thresholdDescription('--max-kld', 'fail') })
        .option('min-top1', { type: 'string', describe: thresholdDescription('--min-top1', 'fail') })
        .option('max-acc-drop', { type: 'string', describe: thresholdDescription('--max-acc-drop', 'fail') })
        .option('max-f1-drop', { type: 'string', describe: thresholdDescription('--max-f1-drop', 'fail') })
        .option('require-gates', { type: 'boolean', default: false, describe: 'exit 2 (before any model loads) unless a threshold applies to what is measured: a CI job cannot pass by gating nothing' })
        .option('log-samples', { type: 'string', describe: 'KOBEST: write every document (prompt, choices, both models\' log-likelihoods, predictions, gold) to this JSON Lines file' })
        .option('bootstrap-iters', {
          type: 'string',
          describe: `KOBEST: bootstrap resamples for each model's macro-F1 stderr, lm-eval's method (default ${DEFAULT_BOOTSTRAP_ITERATIONS}; ${HARNESS_BOOTSTRAP_ITERATIONS} is lm-eval's own and gives its exact number; 0 turns it off)`,
        })
        .option('json', { type: 'string', describe: 'write the report (schema polyquant.verify/2, docs/schemas.md) to this file' })
        .option('markdown', { type: 'string', describe: 'write a Markdown summary to this file' })
        .option('html', { type: 'string', describe: 'write the report as one self-contained HTML page with charts (per-window NLL, KLD quantiles, KOBEST with intervals) to this file' }),
    async (args) => {
      const thresholds = parseThresholdFlags(args);
      if (args.candidate === undefined) refuseWithoutCandidate(args, thresholds);
      if (args['require-gates']) requireGates(thresholds, { ppl: (args.ppl ?? []).length > 0, kld: args.kld, kobest: args.kobest !== undefined });
      if (args['log-samples'] !== undefined && args.kobest === undefined) {
        throw new PolyquantError(ERROR_CODES.USAGE, '--log-samples writes KOBEST documents, and no --kobest folder is given', { hint: 'add --kobest DIR, or drop --log-samples' });
      }
      const bootstrapIterations = integerFlag('--bootstrap-iters', args['bootstrap-iters'], 0, 10_000_000);
      const ctx = integerFlag('--ctx', args.ctx, 2, MAX_CTX) ?? 512;
      const stride = integerFlag('--stride', args.stride, 1, MAX_CTX);
      const maxWindows = integerFlag('--max-windows', args['max-windows'], 1);
      const limit = positiveNumberFlag('--limit', args.limit, 'a document count ≥ 1, or a fraction of the split in (0, 1)');
      const threads = integerFlag('--threads', args.threads, THREAD_FLAG_RANGE.min, THREAD_FLAG_RANGE.max);
      const shots = shotsFlag('--shots', args.shots);
      const tasks = args.tasks === undefined ? undefined : tasksFlag(args.tasks);
      // Every output location and every input it might overwrite, before any model is loaded.
      const outputs: OutputFile[] = [];
      if (args.json !== undefined) outputs.push(await checkOutputFile(args.json, '--json'));
      if (args.markdown !== undefined) outputs.push(await checkOutputFile(args.markdown, '--markdown'));
      if (args['save-baseline'] !== undefined) outputs.push(await checkOutputFile(args['save-baseline'], '--save-baseline'));
      if (args.html !== undefined) outputs.push(await checkOutputFile(args.html, '--html'));
      if (args['log-samples'] !== undefined) outputs.push(await checkOutputFile(args['log-samples'], '--log-samples'));
      if (outputs.length > 0) {
        await refuseOverwritingInputs(outputs, await verifyInputFiles(args.candidate, args.baseline, args.ppl ?? [], args.kobest, tasks));
      }
      const settings = {
        baseline: args.baseline,
        pplFiles: args.ppl ?? [],
        ctx,
        protocol: args.protocol,
        ...(stride !== undefined && { stride }),
        ...(maxWindows !== undefined && { maxWindows }),
        kld: args.kld,
        ...(args.kobest !== undefined && { kobestDir: args.kobest }),
        ...(tasks !== undefined && { tasks }),
        shots,
        split: args.split,
        ...(limit !== undefined && { limit }),
        engine: args.engine,
        ...(args['onnx-type'] !== undefined && { onnxType: args['onnx-type'] }),
        device: args.device,
        ...(threads !== undefined && { threads }),
        ...(args['cache-dir'] !== undefined && { cacheDir: args['cache-dir'] }),
        baselineType: args['baseline-type'],
        ...(commandLine() !== undefined && { commandLine: commandLine() }),
      };
      if (args.candidate === undefined) {
        const progress = createCountProgress();
        const saved = await saveBaseline(args['save-baseline'] as string, { ...settings, onProgress: (event) => progress.report(event) });
        progress.done();
        io.stdout(`${savedBaselineText(saved)}\n`);
        return;
      }
      const samples: KobestSampleRecord[] = [];
      const progress = createCountProgress();
      const report = await verify({
        ...settings,
        candidate: args.candidate,
        ...(args.simulate !== undefined && { simulate: args.simulate }),
        ...(args['save-baseline'] !== undefined && { saveBaseline: args['save-baseline'] }),
        thresholds,
        ...(bootstrapIterations !== undefined && { bootstrapIterations }),
        ...(args['log-samples'] !== undefined && { onKobestSamples: (records: readonly KobestSampleRecord[]) => samples.push(...records) }),
        onProgress: (event) => progress.report(event),
      });
      progress.done();
      // The report is printed first: should a write still fail, the results are on the terminal.
      io.stdout(`${renderText(report, table)}\n`);
      if (args.json !== undefined) await writeTextAtomically(args.json, jsonReportText(report));
      if (args['log-samples'] !== undefined) await writeTextAtomically(args['log-samples'], kobestSamplesJsonl(samples));
      if (args.markdown !== undefined) await writeTextAtomically(args.markdown, renderMarkdown(report));
      if (args.html !== undefined) {
        // Vega and resvg load only when a page is drawn (~0.1 s and a native binary every command would pay).
        const { renderVerifyHtml } = await import('../verify/html.js');
        await writeTextAtomically(args.html, await renderVerifyHtml(report));
      }
      if (report.verdict === 'fail') setExitCode(1);
    },
  );
}

/** Flags that mean something only when a candidate is compared: refused (exit 2) when there is none. */
function refuseWithoutCandidate(args: Record<string, unknown>, thresholds: object): void {
  if (args['save-baseline'] === undefined) {
    throw new PolyquantError(ERROR_CODES.USAGE, 'verify needs a candidate model to compare with the baseline', {
      hint: 'give the candidate (a .gguf file, ONNX folder or HF folder), or --save-baseline FILE to score the baseline alone for later runs',
    });
  }
  const comparing = ['simulate', 'json', 'markdown', 'html', 'log-samples', 'bootstrap-iters'].filter((flag) => args[flag] !== undefined);
  if (args['require-gates'] === true) comparing.push('require-gates');
  if (Object.keys(thresholds).length > 0) comparing.push('max-ppl-increase/--max-kld/--min-top1/--max-acc-drop/--max-f1-drop');
  if (comparing.length > 0) {
    throw new PolyquantError(ERROR_CODES.USAGE, `${comparing.map((flag) => `--${flag}`).join(', ')} ${comparing.length === 1 ? 'applies' : 'apply'} to a comparison, and no candidate is given: verify --save-baseline without a candidate only scores and saves the baseline`, {
      hint: 'give a candidate, or drop these flags',
    });
  }
}

function savedBaselineText(saved: SavedBaselineSummary): string {
  const measured = [
    saved.texts > 0 ? `${saved.windows} windows of ${saved.texts} text${saved.texts === 1 ? '' : 's'} (${saved.scoredTokens} scored tokens)` : undefined,
    saved.kobestResults > 0 ? `${saved.kobestResults} KOBEST task×shot result${saved.kobestResults === 1 ? '' : 's'}` : undefined,
  ].filter((part) => part !== undefined);
  return [
    `baseline ${saved.baseline.path} (${saved.baseline.engine}) scored: ${measured.join(', ')} in ${saved.seconds.toFixed(1)} s`,
    `saved to ${saved.file}, ${saved.bytes} bytes; pass it as --baseline to compare candidates without loading the baseline`,
  ].join('\n');
}

/**
 * Every file `verify` may read: the models (a GGUF file, or an HF folder's config, tokenizer and weight
 * files), the perplexity texts and the KOBEST split files of the chosen tasks. No output may be one of them.
 */
async function verifyInputFiles(
  candidate: string | undefined,
  baseline: string,
  pplFiles: readonly string[],
  kobestDir: string | undefined,
  tasks: readonly KobestTaskName[] | undefined,
): Promise<string[]> {
  const files: string[] = [...pplFiles];
  for (const model of candidate === undefined ? [baseline] : [candidate, baseline]) {
    files.push(model);
    if (await isFolder(model)) files.push(...(await modelFolderFiles(model)), ...(await onnxFolderFiles(model)));
    else if (isOnnxFile(model)) files.push(...(await onnxExternalDataFiles(model)));
  }
  if (kobestDir !== undefined) {
    for (const task of tasks ?? KOBEST_TASK_NAMES) {
      for (const split of KOBEST_SPLITS) files.push(...kobestSplitCandidates(resolve(kobestDir), task, split).map((candidate) => candidate.path));
    }
  }
  return files;
}

/** A .onnx file's external data files (none when it cannot be read: verify reports that itself). */
async function onnxExternalDataFiles(file: string): Promise<string[]> {
  const summary = await readOnnxModel(file).catch(() => undefined);
  return summary?.dataFiles.map((dataFile) => dataFile.path) ?? [];
}

async function isFolder(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isDirectory() === true;
}

