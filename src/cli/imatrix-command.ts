/**
 * `polyquant imatrix MODEL --text FILE… [--ctx 512] [--chunks N] [--out FILE]`: an importance matrix from
 * calibration text, as llama-imatrix computes it (calibrate/imatrix.ts), written in llama.cpp's GGUF
 * imatrix form (calibrate/imatrix-file.ts) for `convert --imatrix` and `llama-quantize --imatrix`.
 */
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import { computeHessians, hessianImatrix } from '../calibrate/hessian.js';
import { computeImatrix, IMATRIX_DEFAULT_CTX, IMATRIX_ENGINE_NAMES, type ImatrixEngineName, type ImatrixResult, importanceOf } from '../calibrate/imatrix.js';
import { writeImatrixGguf } from '../calibrate/imatrix-file.js';
import { isGgufInput } from '../converters/gguf/requantize.js';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { checkOutputFile, refuseOverwritingInputs } from '../io/output.js';
import { modelFolderFiles } from '../readers/checkpoint.js';
import { integerFlag, MAX_CTX, THREAD_FLAG_RANGE } from './flags.js';
import { formatBytes, formatCount } from './format.js';
import type { CliIO } from './main.js';
import { createProgress } from './progress.js';

/** The `--json` report's schema name. */
export const IMATRIX_SCHEMA = 'polyquant.imatrix/1';

export function addImatrixCommand(parser: Argv, io: CliIO): void {
  parser.command(
    'imatrix <model>',
    "Compute an importance matrix (Σ x² per input column of every quantized matmul, llama-imatrix's definition) from calibration text — the reference engine for models up to ~1 B parameters, llama.cpp on the model's f16 GGUF past that — in llama.cpp's GGUF imatrix format for convert --imatrix and llama-quantize --imatrix",
    (y: Argv) =>
      y
        .positional('model', { type: 'string', demandOption: true, describe: 'HF GPT-NeoX folder (any size: past ~1 B parameters llama.cpp runs its f16 GGUF, converted once into --cache-dir)' })
        .option('text', { type: 'string', array: true, demandOption: true, describe: 'UTF-8 calibration text file(s); each is tokenized on its own and cut into chunks' })
        .option('ctx', { type: 'string', describe: `tokens per chunk, as llama-imatrix -c (default ${IMATRIX_DEFAULT_CTX}, or the model's max_position_embeddings when less)` })
        .option('chunks', { type: 'string', describe: 'use at most N chunks, in file order, as llama-imatrix --chunks (default: all)' })
        .option('out', { type: 'string', describe: 'output file (default <model>-imatrix.gguf next to the model)' })
        .option('threads', { type: 'string', describe: `engine threads, ${THREAD_FLAG_RANGE.min} to ${THREAD_FLAG_RANGE.max} (default: all cores; the reference engine at most 8)` })
        .option('engine', {
          choices: IMATRIX_ENGINE_NAMES,
          default: 'auto' as ImatrixEngineName,
          describe: 'reference: the float32 HF model (up to ~1 B parameters); llamacpp: its f16 GGUF in llama.cpp on the CPU (any size; what llama-imatrix computes on that file); auto: reference when the model fits',
        })
        .option('cache-dir', { type: 'string', describe: "where --engine llamacpp keeps the model's f16 GGUF (verify's baseline cache; default $POLYQUANT_CACHE_DIR or ~/.cache/polyquant)" })
        .option('process-output', { type: 'boolean', default: false, describe: 'also collect output.weight, as llama-imatrix --process-output' })
        .option('weights', { choices: ['auto', 'safetensors', 'bin'] as const, default: 'auto' as const })
        .option('quiet', { type: 'boolean', default: false, describe: 'print nothing but errors (--json still prints the report)' })
        .option('json', { type: 'boolean', default: false, describe: `print the report as JSON (schema ${IMATRIX_SCHEMA})` }),
    async (args) => {
      const model = resolve(args.model);
      const ctx = integerFlag('--ctx', args.ctx, 1, MAX_CTX);
      const chunks = integerFlag('--chunks', args.chunks, 1);
      const threads = integerFlag('--threads', args.threads, THREAD_FLAG_RANGE.min, THREAD_FLAG_RANGE.max);
      const texts = ([] as unknown[]).concat(args.text).map(String);
      if (texts.length === 0 || texts.some((text) => text === '')) {
        throw new PolyquantError(ERROR_CODES.USAGE, '--text needs a file name', { hint: 'e.g. --text train.txt' });
      }
      if (await isGgufInput(model)) {
        throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `${model} is a GGUF file; polyquant imatrix runs an HF folder`, {
          hint: `give the HF folder it was converted from, or run llama.cpp's llama-imatrix -m ${args.model} -f TEXT on it (convert --imatrix reads its output)`,
        });
      }
      const out = await checkOutputFile(args.out ?? `${model.replace(/[/\\]+$/, '')}-imatrix.gguf`, '--out');
      await refuseOverwritingInputs([out], [...texts, ...(await modelFolderFiles(model))]);
      const progress = args.quiet || args.json ? undefined : createProgress('imatrix', { unit: { noun: 'chunks' } });
      const conversion = args.quiet || args.json ? undefined : createProgress('converting to a cached f16 GGUF for llama.cpp');
      let converting = false;
      const result = await computeImatrix(model, {
        engine: args.engine as ImatrixEngineName,
        ...(args['cache-dir'] !== undefined && { cacheDir: args['cache-dir'] as string }),
        onConvert: conversion
          ? (done, total) => {
              converting = true;
              conversion.update(done, total);
            }
          : undefined,
        texts,
        ...(ctx !== undefined && { ctx }),
        ...(chunks !== undefined && { chunks }),
        ...(threads !== undefined && { threads }),
        processOutput: args['process-output'],
        weights: args.weights,
        onProgress: progress
          ? (done, total) => {
              if (converting) {
                conversion?.succeed('converted');
                converting = false;
              }
              progress.update(done, total);
            }
          : undefined,
      });
      const plan = await writeImatrixGguf(out.path, result);
      progress?.succeed(`wrote ${out.path}`);
      if (args.json) {
        io.stdout(`${JSON.stringify(imatrixReport(result, out.path, plan.fileBytes), null, 2)}\n`);
        return;
      }
      if (args.quiet) return;
      io.stdout(`${renderImatrix(result, out.path, plan.fileBytes)}\n`);
      for (const warning of result.warnings) io.stderr(`warning: ${warning}\n`);
    },
  );
}

/** The `--json` report: polyquant.imatrix/1, snake_case like every polyquant report. */
export function imatrixReport(result: ImatrixResult, out: string, fileBytes: number): Record<string, unknown> {
  return {
    schema: IMATRIX_SCHEMA,
    out,
    file_bytes: fileBytes,
    datasets: result.datasets,
    chunk_count: result.chunkCount,
    chunk_size: result.chunkSize,
    tokens: result.tokens,
    texts: result.texts.map((text) => ({ file: text.file, tokens: text.tokens, chunks: text.chunks })),
    engine: result.engine,
    seconds: result.seconds,
    tokens_per_second: result.tokens / Math.max(result.seconds, 1e-9),
    entries: [...result.entries].map(([name, entry]) => {
      let sum = 0;
      let max = 0;
      for (const value of entry.sums) {
        sum += value;
        if (value > max) max = value;
      }
      return { name, columns: entry.sums.length, count: entry.count, mean_importance: sum / entry.sums.length / entry.count, max_importance: max / entry.count };
    }),
    warnings: result.warnings,
  };
}

/** A few lines: what was collected, how fast, where it went. */
export function renderImatrix(result: ImatrixResult, out: string, fileBytes: number): string {
  const rate = result.tokens / Math.max(result.seconds, 1e-9);
  const sources = result.texts.map((text) => `${text.file} (${formatCount(text.chunks)} of ${formatCount(Math.floor(text.tokens / result.chunkSize))})`).join(', ');
  return [
    `wrote      ${out} (${formatBytes(fileBytes)})`,
    `matrices   ${result.entries.size}: ${[...new Set([...result.entries.keys()].map((name) => name.replace(/^blk\.\d+\./, 'blk.N.')))].join(', ')}`,
    `chunks     ${formatCount(result.chunkCount)} × ${result.chunkSize} tokens from ${sources}`,
    `engine     ${result.engine.name}, ${result.engine.threads} thread(s): ${formatCount(result.tokens)} tokens in ${result.seconds.toFixed(1)} s (${rate.toFixed(0)} tokens/s)`,
  ].join('\n');
}

/** `--calibrate`'s input checked (file names given, an HF folder: a GGUF cannot run), then its progress line. */
async function startCalibration(model: string, texts: readonly string[], progress: boolean, hint: string): Promise<ReturnType<typeof createProgress> | undefined> {
  if (texts.some((text) => text === '')) throw new PolyquantError(ERROR_CODES.USAGE, '--calibrate needs a file name', { hint: 'e.g. --calibrate train.txt' });
  if (await isGgufInput(model)) throw new PolyquantError(ERROR_CODES.USAGE, '--calibrate runs the HF model folder; a GGUF input cannot be calibrated', { hint });
  return progress ? createProgress('calibrating', { unit: { noun: 'chunks' } }) : undefined;
}

/** The calibration's progress line closed and its warnings printed; the texts it used, for the summary. */
function finishCalibration(
  progress: Awaited<ReturnType<typeof startCalibration>>,
  result: { readonly warnings: readonly string[]; readonly texts: readonly { readonly file: string; readonly chunks: number }[] },
  options: { readonly progress: boolean; readonly io: CliIO },
): string {
  progress?.succeed('calibrated');
  if (options.progress) for (const warning of result.warnings) options.io.stderr(`warning: ${warning}\n`);
  return result.texts.map((text) => `${text.file} (${formatCount(text.chunks)} chunks)`).join(', ');
}

/** What `convert --calibrate` records as quantize.imatrix.file: there is no file, the matrix was computed in memory. */
export const CALIBRATE_PROVENANCE_FILE = 'polyquant convert --calibrate';

/**
 * `convert --calibrate TEXT…`: the importance matrix computed on the fly (llama-imatrix's defaults: chunks
 * of 512 tokens, all of them unless `chunks`), normalised exactly as `readImatrix` normalises the file
 * `polyquant imatrix` would have written, so the conversion equals `convert --imatrix` of that file.
 * `summary` is the line convert prints to say that the matrix was computed and used.
 */
export async function calibrateForConvert(
  model: string,
  texts: readonly string[],
  options: { readonly chunks?: number | undefined; readonly threads?: number | undefined; readonly progress: boolean; readonly io: CliIO },
): Promise<{ entries: Map<string, Float32Array>; datasets: readonly string[]; chunkCount: number; summary: string }> {
  const progress = await startCalibration(model, texts, options.progress, 'convert the HF folder with --calibrate, or pass an importance matrix with --imatrix');
  const result = await computeImatrix(model, {
    texts,
    ...(options.chunks !== undefined && { chunks: options.chunks }),
    ...(options.threads !== undefined && { threads: options.threads }),
    onProgress: progress ? (done, total) => progress.update(done, total) : undefined,
  });
  const sources = finishCalibration(progress, result, options);
  const summary = `imatrix    calibrated on ${sources}: ${result.entries.size} matrices, ${formatCount(result.chunkCount)} chunks × ${result.chunkSize} tokens in ${result.seconds.toFixed(1)} s; used as --imatrix`;
  return { entries: importanceOf(result), datasets: result.datasets, chunkCount: result.chunkCount, summary };
}

/** What calibrateHessiansForConvert gives a conversion. */
export interface CalibratedHessians {
  /** GPTQ's Hessians by HF tensor name. */
  readonly hessians: ReadonlyMap<string, { readonly columns: number; readonly matrix: Float64Array }>;
  /**
   * Their diagonals as the importance matrix (by GGUF name), normalised as readImatrix normalises a file:
   * the matrix `--calibrate` alone computes from the same chunks (hessianImatrix), for GGUF `--optimize`.
   */
  readonly imatrix: { readonly entries: Map<string, Float32Array>; readonly datasets: readonly string[]; readonly chunkCount: number };
  /** What calibrated ONNX and WebGPU files record of the calibration. */
  readonly provenance: Record<string, unknown>;
  /** The line convert prints. */
  readonly summary: string;
}

/**
 * `convert --calibrate TEXT…` for GPTQ (ONNX and WebGPU, and GGUF with `--optimize`): the calibration
 * Hessians (calibrate/hessian.ts: the same chunks as the importance matrix, chunks of 512 tokens, all of
 * them unless `chunks`), with the output head's when the format quantizes it.
 */
export async function calibrateHessiansForConvert(
  model: string,
  texts: readonly string[],
  options: { readonly chunks?: number | undefined; readonly threads?: number | undefined; readonly head: boolean; readonly progress: boolean; readonly io: CliIO },
): Promise<CalibratedHessians> {
  const progress = await startCalibration(model, texts, options.progress, 'convert the HF folder with --calibrate TEXT');
  const result = await computeHessians(model, {
    texts,
    head: options.head,
    ...(options.chunks !== undefined && { chunks: options.chunks }),
    ...(options.threads !== undefined && { threads: options.threads }),
    onProgress: progress ? (done, total) => progress.update(done, total) : undefined,
  });
  const sources = finishCalibration(progress, result, options);
  return {
    hessians: result.entries,
    imatrix: { entries: importanceOf({ entries: hessianImatrix(result) }), datasets: [...texts], chunkCount: result.chunkCount },
    provenance: { datasets: [...texts], chunk_count: result.chunkCount, chunk_size: result.chunkSize, tokens: result.tokens },
    summary: `calibrate  GPTQ on ${sources}: ${result.entries.size} Hessians, ${formatCount(result.chunkCount)} chunks × ${result.chunkSize} tokens in ${result.seconds.toFixed(1)} s`,
  };
}
