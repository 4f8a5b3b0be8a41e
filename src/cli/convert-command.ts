/**
 * `polyquant convert MODEL --type T [--to gguf|onnx|webgpu]`: flags to one converter call, the plan to stdout.
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
import { GGUF_FILE_TYPE_NAMES, isGgufFileType } from '../quant/policy.js';
import { integerFlag, THREAD_FLAG_RANGE } from './flags.js';
import { renderOnnxConversionPlan, renderWebGpuConversionPlan } from './convert-text.js';
import { renderConversionPlan, } from './inspect-text.js';
import { createProgress } from './progress.js';

import type { CliIO } from './main.js';

export function addConvertCommand(parser: Argv, io: CliIO): void {
  parser.command(
    'convert <model>',
    'Convert an HF GPT-NeoX folder to GGUF (llama-quantize\'s tensor types for each --type), to an ONNX folder (transformers.js / onnxruntime-genai layout) or to a WebGPU folder (MLC tensor cache: tensor-cache.json + params_shard_N.bin), streaming',
    (y: Argv) =>
      y
        .positional('model', { type: 'string', demandOption: true, describe: 'HF model folder' })
        .option('to', { choices: ['gguf', 'onnx', 'webgpu'] as const, default: 'gguf' as const, describe: 'output format' })
        .option('type', {
          type: 'string',
          demandOption: true,
          describe: `GGUF: one file type (${GGUF_FILE_TYPE_NAMES.join(', ')}); ONNX: one or more of ${ONNX_TYPE_NAMES.join(', ')}, comma-separated; WebGPU: one or more of ${WEBGPU_LAYOUT_NAMES.join(', ')} (several: one sub-folder each)`,
        })
        .option('out', { type: 'string', describe: 'output file (GGUF; default <model>-<type>.gguf) or folder (ONNX: default <model>-onnx; WebGPU: <model>-<type>-webgpu, or <model>-webgpu for several types) next to the model' })
        .option('force', { type: 'boolean', default: false, describe: 'ONNX, WebGPU: replace an existing output folder that holds only files this converter writes' })
        .option('f32-storage', {
          choices: TENSOR_CACHE_STORAGES,
          describe: 'WebGPU: float32 tensors written raw (default: exact, format "raw") or as bf16 (mlc_llm convert_weight\'s "f32-to-bf16" bytes)',
        })
        .option('dry-run', { type: 'boolean', default: false, describe: 'print the plan (tensors, types, bytes) without writing' })
        .option('error', { type: 'boolean', default: false, describe: "GGUF, with --dry-run: quantize each tensor and report its error (RMSE, max, SQNR, cosine); reads the whole model" })
        .option('weights', { choices: ['auto', 'safetensors', 'bin'] as const, default: 'auto' as const })
        .option('workers', { type: 'string', describe: `quantizer threads, ${THREAD_FLAG_RANGE.min} to ${THREAD_FLAG_RANGE.max} (default: all cores)` })
        .option('drop-extra-layers', {
          type: 'boolean',
          default: false,
          describe: 'convert a checkpoint whose weights have more layers than config.json says, keeping only the configured ones (refused otherwise)',
        })
        .option('imatrix', { type: 'string', describe: "GGUF: llama.cpp importance matrix (its GGUF or legacy .dat form), as llama-quantize --imatrix" })
        .option('attention', { choices: ATTENTION_FORMS, default: 'plain' as AttentionForm, describe: 'ONNX: plain opset-21 ops (exact with left padding) or com.microsoft GroupQueryAttention (onnxruntime-genai, GPUs; right padding only)' })
        .option('block-size', { choices: ONNX_BLOCK_SIZES, default: 32, describe: 'ONNX q4/q4f16: MatMulNBits block size along K' })
        .option('asymmetric', { type: 'boolean', default: false, describe: 'ONNX q4/q4f16: zero points per block (default symmetric)' })
        .option('accuracy-level', { choices: ONNX_ACCURACY_LEVELS, default: 4, describe: 'ONNX: MatMulNBits accuracy_level (0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 activations)' })
        .option('keep-head', { type: 'boolean', default: false, describe: 'ONNX: keep the output head in float instead of quantizing it like the other linears' })
        .option('q8-format', { choices: ['integer', 'nbits'] as const, default: 'nbits' as const, describe: 'ONNX q8: MatMulNBits bits=8 (batch-invariant, default) or DynamicQuantizeLinear+MatMulInteger (faster prefill on CPU; per-call activation scale)' })
        .option('json', { type: 'boolean', default: false, describe: 'print the plan as JSON' }),
    async (args) => {
      const model = resolve(args.model);
      const workers = integerFlag('--workers', args.workers, THREAD_FLAG_RANGE.min, THREAD_FLAG_RANGE.max);
      const json = (value: unknown): string => `${JSON.stringify(value, (_key, item) => (typeof item === 'bigint' ? item.toString() : item), 2)}\n`;
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
        const progress = args['dry-run'] ? undefined : createProgress('converting');
        const plan = await convertToWebGpu(model, {
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
        io.stdout(args.json ? json(plan) : `${renderWebGpuConversionPlan(plan)}\n`);
        return;
      }
      if (args.to === 'onnx') {
        for (const flag of ['error', 'imatrix'] as const) {
          if (args[flag] !== undefined && args[flag] !== false) {
            throw new PolyquantError(ERROR_CODES.USAGE, `--${flag} applies to --to gguf only`);
          }
        }
        const progress = args['dry-run'] ? undefined : createProgress('converting');
        const plan = await convertToOnnx(model, {
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
        io.stdout(args.json ? json(plan) : `${renderOnnxConversionPlan(plan)}\n`);
        return;
      }
      const type = args.type.trim().toLowerCase();
      if (!isGgufFileType(type)) {
        throw new PolyquantError(ERROR_CODES.USAGE, `${JSON.stringify(args.type)} is not a GGUF file type`, {
          hint: `GGUF types are ${GGUF_FILE_TYPE_NAMES.join(', ')}${isOnnxTypeName(type) ? `; ${type} is an ONNX type: add --to onnx` : ''}${isWebGpuLayoutName(type) ? `; ${type} is a WebGPU type: add --to webgpu` : ''}`,
        });
      }
      for (const flag of ['force', 'asymmetric', 'keep-head'] as const) {
        if (args[flag]) throw new PolyquantError(ERROR_CODES.USAGE, `--${flag} applies to --to onnx only`);
      }
      const out = args.out ?? `${model.replace(/[/\\]+$/, '')}-${type}.gguf`;
      const progress = args['dry-run'] && !args.error ? undefined : createProgress(args['dry-run'] ? 'measuring' : 'converting');
      const imatrixPath = args.imatrix === undefined ? undefined : resolve(args.imatrix);
      const imatrix = imatrixPath === undefined ? undefined : await readImatrix(imatrixPath);
      const plan = await convertToGguf(model, {
        ...(imatrix !== undefined && { imatrix: imatrix.entries }),
        ...(imatrixPath !== undefined && { inputFiles: [imatrixPath] }),
        dropExtraLayers: args['drop-extra-layers'],
        type,
        out,
        weights: args.weights,
        dryRun: args['dry-run'],
        error: args.error,
        ...(workers !== undefined && { workers }),
        onProgress: progress ? (done, total) => progress.update(done, total) : undefined,
      });
      progress?.succeed(plan.out === undefined ? 'measured' : `wrote ${plan.out}`);
      io.stdout(args.json ? json(plan) : `${renderConversionPlan(plan)}\n`);
    },
  );
}
