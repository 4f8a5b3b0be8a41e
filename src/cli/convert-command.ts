/**
 * `polyquant convert MODEL --type T [--to gguf|onnx|webgpu]`: flags to one converter call; a summary,
 * the plan (--dry-run, --verbose) or nothing (--quiet) to stdout (convert-text.ts printConversion).
 */
import { resolve } from 'node:path';
import type { Argv } from 'yargs';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { convertToGguf } from '../converters/gguf/convert.js';
import { readImatrix } from '../converters/gguf/imatrix.js';
import { convertToOnnx, ONNX_ACCURACY_LEVELS, ONNX_BLOCK_SIZES } from '../converters/onnx/convert.js';
import { convertToWebGpu } from '../converters/webgpu/convert.js';
import { isWebGpuLayoutName, TENSOR_CACHE_STORAGES, WEBGPU_LAYOUT_NAMES } from '../quant/webgpu-layouts.js';
import { ATTENTION_FORMS, type AttentionForm } from '../converters/onnx/graph.js';
import { isOnnxTypeName, ONNX_TYPE_NAMES } from '../converters/onnx/types.js';
import { isGgufInput } from '../converters/gguf/requantize.js';
import { canonicalGgufFileType, GGUF_FILE_TYPE_NAMES } from '../quant/policy.js';
import { integerFlag, THREAD_FLAG_RANGE } from './flags.js';
import {
  type ConvertOutputOptions,
  printConversion,
  renderGgufSummary,
  renderOnnxConversionPlan,
  renderOnnxSummary,
  renderWebGpuConversionPlan,
  renderWebGpuSummary,
} from './convert-text.js';
import { renderConversionPlan, } from './inspect-text.js';
import { writeTextAtomically } from '../io/file.js';
import { createProgress } from './progress.js';
import { CALIBRATE_PROVENANCE_FILE, calibrateForConvert, calibrateHessiansForConvert } from './imatrix-command.js';
import { ONNX_TYPES } from '../converters/onnx/types.js';
import { webGpuLayout } from '../quant/webgpu-layouts.js';

import type { CliIO } from './main.js';

export function addConvertCommand(parser: Argv, io: CliIO): void {
  parser.command(
    'convert <model>',
    'Convert an HF GPT-NeoX folder to GGUF (llama-quantize\'s tensor types and options for each --type; a GGUF file is requantized, as llama-quantize does), to an ONNX folder (transformers.js / onnxruntime-genai layout) or to a WebGPU folder (MLC tensor cache: tensor-cache.json + params_shard_N.bin), streaming',
    (y: Argv) =>
      y
        .positional('model', { type: 'string', demandOption: true, describe: 'HF model folder, or (--to gguf) a GGUF file to requantize: f32, f16 or bf16 (a quantized one needs --allow-requantize)' })
        .option('to', { choices: ['gguf', 'onnx', 'webgpu'] as const, default: 'gguf' as const, describe: 'output format' })
        .option('type', {
          type: 'string',
          demandOption: true,
          describe: `any case; GGUF: one file type (${GGUF_FILE_TYPE_NAMES.join(', ')}; Q4_K, Q3_K, Q5_K = their _M mixtures, as llama-quantize); ONNX: one or more of ${ONNX_TYPE_NAMES.join(', ')}, comma-separated; WebGPU: one or more of ${WEBGPU_LAYOUT_NAMES.join(', ')} (several: one sub-folder each)`,
        })
        .option('out', { type: 'string', describe: 'output file (GGUF; default <model>-<type>.gguf, for a GGUF input its name less .gguf and a file-type suffix) or folder (ONNX: default <model>-onnx; WebGPU: <model>-<type>-webgpu, or <model>-webgpu for several types) next to the model' })
        .option('force', { type: 'boolean', default: false, describe: 'ONNX, WebGPU: replace an existing output folder that holds only files this converter writes' })
        .option('f32-storage', {
          choices: TENSOR_CACHE_STORAGES,
          describe: 'WebGPU: float32 tensors written raw (default: exact, format "raw") or as bf16 (mlc_llm convert_weight\'s "f32-to-bf16" bytes)',
        })
        .option('dry-run', { type: 'boolean', default: false, describe: 'print the plan (tensors, types, bytes) without writing' })
        .option('verbose', { type: 'boolean', describe: 'print the whole plan (every tensor or shard) after converting, not just the summary' })
        .option('quiet', { type: 'boolean', describe: 'print nothing but errors: no progress, summary or warnings (--json still prints the plan)' })
        .conflicts('quiet', 'verbose')
        .option('error', { type: 'boolean', default: false, describe: "GGUF, with --dry-run: quantize each tensor and report its error (RMSE, max, SQNR, cosine); reads the whole model" })
        .option('html', { type: 'string', describe: 'GGUF, with --dry-run --error: also write the error as one self-contained HTML page (SQNR by layer, the worst tensors) to this file' })
        .option('weights', { choices: ['auto', 'safetensors', 'bin'] as const, default: 'auto' as const })
        .option('threads', { type: 'string', alias: 'workers', describe: `quantizer threads, ${THREAD_FLAG_RANGE.min} to ${THREAD_FLAG_RANGE.max} (default: all cores; --workers is the old name)` })
        .option('drop-extra-layers', {
          type: 'boolean',
          default: false,
          describe: 'convert a checkpoint whose weights have more layers than config.json says, keeping only the configured ones (refused otherwise)',
        })
        .option('imatrix', { type: 'string', describe: "GGUF: llama.cpp importance matrix (its GGUF or legacy .dat form), as llama-quantize --imatrix" })
        .option('calibrate', {
          type: 'string',
          array: true,
          describe: 'from an HF folder, calibrate on this text (chunks of 512 tokens, as polyquant imatrix). GGUF: compute the importance matrix (llama-imatrix\'s definition) and quantize with it, as --imatrix; ONNX q4/q4f16/q8 (MatMulNBits) and WebGPU q4f16_1/q4f32_1/q8f*_pq: GPTQ with the calibration Hessians, same file layout',
        })
        .option('calibrate-chunks', { type: 'string', describe: '--calibrate: use at most N chunks (default: all)' })
        .option('optimize', {
          type: 'boolean',
          default: false,
          describe: 'GGUF with --calibrate: quantize with GPTQ error feedback from the calibration Hessians (their diagonals as the imatrix) — the same tensor types and file size, standard blocks any llama.cpp loads; slower',
        })
        .option('output-tensor-type', { type: 'string', describe: 'GGUF: ggml type of output.weight (any case, e.g. q8_0), as llama-quantize --output-tensor-type' })
        .option('token-embedding-type', { type: 'string', describe: 'GGUF: ggml type of token_embd.weight, as llama-quantize --token-embedding-type' })
        .option('pure', { type: 'boolean', default: false, describe: "GGUF: no k-quant mixture: every quantizable tensor gets the file type's own type (then llama-quantize's fallback), as llama-quantize --pure" })
        .option('tensor-type', {
          type: 'string',
          describe: 'GGUF: PATTERN=TYPE, repeatable: tensors whose GGUF name the regular expression PATTERN finds get TYPE (first match wins; quantized file types only), as llama-quantize --tensor-type, e.g. --tensor-type attn_qkv=q8_0',
        })
        .option('allow-requantize', {
          type: 'boolean',
          default: false,
          describe: 'GGUF input: requantize tensors that are already quantized (dequantized, then quantized again; quality is worse than from f16), as llama-quantize --allow-requantize',
        })
        .option('attention', { choices: ATTENTION_FORMS, default: 'plain' as AttentionForm, describe: 'ONNX: plain opset-21 ops (exact with left padding) or com.microsoft GroupQueryAttention (onnxruntime-genai, GPUs; right padding only)' })
        .option('block-size', { choices: ONNX_BLOCK_SIZES, default: 32, describe: 'ONNX q4/q4f16: MatMulNBits block size along K' })
        .option('asymmetric', { type: 'boolean', default: false, describe: 'ONNX q4/q4f16: zero points per block (default symmetric)' })
        .option('accuracy-level', { choices: ONNX_ACCURACY_LEVELS, default: 4, describe: 'ONNX: MatMulNBits accuracy_level (0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 activations)' })
        .option('keep-head', { type: 'boolean', default: false, describe: 'ONNX: keep the output head in float instead of quantizing it like the other linears' })
        .option('q8-format', { choices: ['integer', 'nbits'] as const, default: 'nbits' as const, describe: 'ONNX q8: MatMulNBits bits=8 (batch-invariant, default) or DynamicQuantizeLinear+MatMulInteger (faster prefill on CPU; per-call activation scale)' })
        .option('json', { type: 'boolean', default: false, describe: 'print the plan as JSON' }),
    async (args) => {
      const model = resolve(args.model);
      const workers = integerFlag('--threads', args.threads, THREAD_FLAG_RANGE.min, THREAD_FLAG_RANGE.max);
      const started = performance.now();
      const output = (): ConvertOutputOptions => ({
        json: args.json,
        format: args.to,
        quiet: args.quiet === true,
        verbose: args.verbose === true,
        dryRun: args['dry-run'],
        seconds: (performance.now() - started) / 1000,
      });
      const tensorTypes = ([] as unknown[]).concat(args['tensor-type'] ?? []).map(String);
      // Vega and resvg load only when a page is drawn (~0.1 s and a native binary every command would pay).
      const errorPage = args.html === undefined ? undefined : await import('./convert-html.js');
      if (errorPage !== undefined && args.html !== undefined) {
        await errorPage.checkConversionErrorPage(args.html, { to: args.to, dryRun: args['dry-run'], error: args.error, model, inputFiles: args.imatrix === undefined ? [] : [resolve(args.imatrix)] });
      }
      if (args.to !== 'gguf') {
        if (await isGgufInput(model)) {
          throw new PolyquantError(ERROR_CODES.USAGE, `--to ${args.to} reads an HF model folder, and ${model} is a GGUF file`, {
            hint: `convert the HF folder the GGUF was made from with --to ${args.to}; a GGUF input converts --to gguf only`,
          });
        }
        const given = [
          ...(['output-tensor-type', 'token-embedding-type', 'allow-requantize', 'pure'] as const).filter((flag) => args[flag] !== undefined && args[flag] !== false),
          ...(tensorTypes.length > 0 ? ['tensor-type'] : []),
        ];
        if (given.length > 0) throw new PolyquantError(ERROR_CODES.USAGE, `--${given[0]} applies to --to gguf only`);
      }
      if (args.optimize && args.to !== 'gguf') {
        throw new PolyquantError(ERROR_CODES.USAGE, '--optimize applies to --to gguf only', { hint: `--to ${args.to} quantizes with GPTQ from --calibrate TEXT alone` });
      }
      if (args.to !== 'webgpu' && args['f32-storage'] !== undefined) {
        throw new PolyquantError(ERROR_CODES.USAGE, '--f32-storage applies to --to webgpu only');
      }
      if (args.to === 'webgpu') {
        for (const flag of ['error', 'imatrix', 'asymmetric', 'keep-head'] as const) {
          if (args[flag] !== undefined && args[flag] !== false) {
            throw new PolyquantError(ERROR_CODES.USAGE, `--${flag} does not apply to --to webgpu`);
          }
        }
        const types = args.type.split(',');
        const stem = model.replace(/[/\\]+$/, '');
        const calibration = await gptqCalibration(args, model, workers, io, {
          head: true,
          // Unknown names are the converter's to refuse, with its own message.
          quantizes: types.some((type) => {
            const name = type.trim().toLowerCase();
            return isWebGpuLayoutName(name) && webGpuLayout(name).kind === 'group-quant';
          }),
          types: 'WebGPU q4f16_1, q4f32_1, q8f16_pq or q8f32_pq',
        });
        const progress = args['dry-run'] || args.quiet === true ? undefined : createProgress('converting');
        const plan = await convertToWebGpu(model, {
          ...(calibration !== undefined && { hessians: calibration.hessians, gptq: { provenance: calibration.provenance } }),
          types,
          out: args.out ?? (types.length === 1 ? `${stem}-${(types[0] as string).trim().toLowerCase()}-webgpu` : `${stem}-webgpu`),
          force: args.force,
          dryRun: args['dry-run'],
          weights: args.weights,
          dropExtraLayers: args['drop-extra-layers'],
          f32Storage: args['f32-storage'],
          ...(workers !== undefined && { workers }),
          onProgress: progress ? (done, total) => progress.update(done, total) : undefined,
        });
        progress?.succeed(`wrote ${plan.out}`);
        if (calibration !== undefined && !args.json && !args.quiet) io.stdout(`${calibration.summary}; ${plan.calibrated.length} weights quantized with GPTQ\n`);
        printConversion(io, plan, output(), { plan: renderWebGpuConversionPlan, summary: renderWebGpuSummary });
        return;
      }
      if (args.to === 'onnx') {
        for (const flag of ['error', 'imatrix'] as const) {
          if (args[flag] !== undefined && args[flag] !== false) {
            throw new PolyquantError(ERROR_CODES.USAGE, `--${flag} applies to --to gguf only`);
          }
        }
        const onnxTypes = args.type.split(',').map((type) => type.trim().toLowerCase());
        const calibration = await gptqCalibration(args, model, workers, io, {
          head: !args['keep-head'],
          quantizes: onnxTypes.some((type) => isOnnxTypeName(type) && (ONNX_TYPES[type].linear === 'nbits4' || (ONNX_TYPES[type].linear === 'integer8' && args['q8-format'] === 'nbits'))),
          types: 'ONNX q4, q4f16 or q8 (MatMulNBits, the default --q8-format)',
        });
        const progress = args['dry-run'] || args.quiet === true ? undefined : createProgress('converting');
        const plan = await convertToOnnx(model, {
          ...(calibration !== undefined && { hessians: calibration.hessians, gptq: { provenance: calibration.provenance } }),
          types: args.type.split(','),
          out: args.out ?? `${model.replace(/[/\\]+$/, '')}-onnx`,
          force: args.force,
          dryRun: args['dry-run'],
          weights: args.weights,
          dropExtraLayers: args['drop-extra-layers'],
          attention: args.attention,
          blockSize: args['block-size'],
          asymmetric: args.asymmetric,
          accuracyLevel: args['accuracy-level'],
          keepHead: args['keep-head'],
          q8Format: args['q8-format'],
          ...(workers !== undefined && { workers }),
          onProgress: progress ? (done, total) => progress.update(done, total) : undefined,
        });
        progress?.succeed(`wrote ${plan.out}`);
        if (calibration !== undefined && !args.json && !args.quiet) {
          io.stdout(`${calibration.summary}; ${Math.max(0, ...plan.models.map((planned) => planned.calibrated.length))} weights quantized with GPTQ\n`);
        }
        printConversion(io, plan, output(), { plan: renderOnnxConversionPlan, summary: renderOnnxSummary });
        return;
      }
      const lower = args.type.trim().toLowerCase();
      const type = canonicalGgufFileType(lower);
      if (type === undefined) {
        throw new PolyquantError(ERROR_CODES.USAGE, `${JSON.stringify(args.type)} is not a GGUF file type`, {
          hint: `GGUF types are ${GGUF_FILE_TYPE_NAMES.join(', ')} (any case)${isOnnxTypeName(lower) ? `; ${lower} is an ONNX type: add --to onnx` : ''}${isWebGpuLayoutName(lower) ? `; ${lower} is a WebGPU type: add --to webgpu` : ''}`,
        });
      }
      for (const flag of ['force', 'asymmetric', 'keep-head'] as const) {
        if (args[flag]) throw new PolyquantError(ERROR_CODES.USAGE, `--${flag} applies to --to onnx only`);
      }
      const ggufInput = await isGgufInput(model);
      const stem = ggufInput ? model.replace(/\.gguf$/i, '').replace(/[-_.](f32|f16|bf16|q\d\w*|iq\d\w*)$/i, '') : model.replace(/[/\\]+$/, '');
      const out = args.out ?? `${stem}-${type}.gguf`;
      const progress = (args['dry-run'] && !args.error) || args.quiet === true ? undefined : createProgress(args['dry-run'] ? 'measuring' : 'converting');
      const imatrixPath = args.imatrix === undefined ? undefined : resolve(args.imatrix);
      const calibrateTexts = ([] as unknown[]).concat(args.calibrate ?? []).map(String);
      const calibrateChunks = integerFlag('--calibrate-chunks', args['calibrate-chunks'], 1);
      if (calibrateChunks !== undefined && calibrateTexts.length === 0) throw new PolyquantError(ERROR_CODES.USAGE, '--calibrate-chunks needs --calibrate TEXT');
      if (calibrateTexts.length > 0 && imatrixPath !== undefined) {
        throw new PolyquantError(ERROR_CODES.USAGE, '--calibrate computes the importance matrix that --imatrix reads; give one of them');
      }
      if (args.optimize && calibrateTexts.length === 0) {
        throw new PolyquantError(ERROR_CODES.USAGE, '--optimize needs --calibrate TEXT: GPTQ feeds each rounding error forward through the Hessians of calibration activations', {
          hint: 'e.g. --calibrate train.txt --optimize (an --imatrix file holds only their diagonals)',
        });
      }
      const calibrationOptions = { chunks: calibrateChunks, threads: workers, progress: !args.quiet && !args.json, io };
      // --optimize: one calibration pass gives GPTQ's Hessians and, from their diagonals, the importance matrix.
      const optimized = args.optimize ? await calibrateHessiansForConvert(model, calibrateTexts, { ...calibrationOptions, head: true }) : undefined;
      const calibrated = optimized?.imatrix ?? (calibrateTexts.length === 0 ? undefined : await calibrateForConvert(model, calibrateTexts, calibrationOptions));
      const imatrix = calibrated ?? (imatrixPath === undefined ? undefined : await readImatrix(imatrixPath));
      const plan = await convertToGguf(model, {
        ...(imatrix !== undefined && { imatrix: imatrix.entries }),
        ...(imatrix !== undefined && {
          // As llama-quantize records it: the argument as typed, the first dataset, the counts.
          imatrixProvenance: { file: args.imatrix ?? CALIBRATE_PROVENANCE_FILE, datasets: imatrix.datasets, chunkCount: imatrix.chunkCount, entries: imatrix.entries.size },
        }),
        ...(imatrixPath !== undefined && { inputFiles: [imatrixPath] }),
        ...(calibrated !== undefined && { inputFiles: calibrateTexts.map((text) => resolve(text)) }),
        ...(optimized !== undefined && { hessians: optimized.hessians }),
        outputTensorType: args['output-tensor-type'],
        tokenEmbeddingType: args['token-embedding-type'],
        pure: args.pure,
        tensorTypes,
        allowRequantize: args['allow-requantize'],
        dropExtraLayers: args['drop-extra-layers'],
        type,
        out,
        ...(!(ggufInput && args.weights === 'auto') && { weights: args.weights }),
        dryRun: args['dry-run'],
        error: args.error,
        ...(workers !== undefined && { workers }),
        onProgress: progress ? (done, total) => progress.update(done, total) : undefined,
      });
      progress?.succeed(plan.out === undefined ? 'measured' : 'converted');
      if (!args.json && !args.quiet) {
        if (optimized !== undefined) io.stdout(`${optimized.summary}; their diagonals as --imatrix\noptimize   ${plan.tensors.filter((tensor) => tensor.gptq).length} tensors quantized with GPTQ\n`);
        else if (calibrated !== undefined && 'summary' in calibrated) io.stdout(`${calibrated.summary}\n`);
      }
      printConversion(io, plan, output(), { plan: renderConversionPlan, summary: renderGgufSummary });
      // After the text: should the write fail, the numbers are on the terminal.
      if (args.html !== undefined && errorPage !== undefined) await writeTextAtomically(args.html, await errorPage.renderConversionErrorHtml(plan, { model }));
    },
  );
}

/**
 * `--calibrate` for ONNX and WebGPU: the calibration Hessians for GPTQ (undefined without the flag). Refused
 * when no requested type has levels GPTQ could choose (float types, MatMulInteger q8), or for a GGUF input.
 */
async function gptqCalibration(
  args: { readonly calibrate?: unknown; readonly 'calibrate-chunks'?: string | undefined; readonly quiet?: boolean | undefined; readonly json: boolean },
  model: string,
  workers: number | undefined,
  io: CliIO,
  options: { readonly head: boolean; readonly quantizes: boolean; readonly types: string },
): Promise<Awaited<ReturnType<typeof calibrateHessiansForConvert>> | undefined> {
  const texts = ([] as unknown[]).concat(args.calibrate ?? []).map(String);
  const chunks = integerFlag('--calibrate-chunks', args['calibrate-chunks'], 1);
  if (texts.length === 0) {
    if (chunks !== undefined) throw new PolyquantError(ERROR_CODES.USAGE, '--calibrate-chunks needs --calibrate TEXT');
    return undefined;
  }
  if (!options.quantizes) {
    throw new PolyquantError(ERROR_CODES.USAGE, '--calibrate needs a type whose weights are quantized in blocks', {
      hint: `calibration (GPTQ) applies to ${options.types}`,
    });
  }
  return calibrateHessiansForConvert(model, texts, { chunks, threads: workers, head: options.head, progress: args.quiet !== true && !args.json, io });
}
