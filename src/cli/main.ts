/**
 * The command line: each yargs command maps its flags to one library call and picks the exit code
 * (0 ok, 1 a check failed, 2 bad input or usage, 70 an internal error). The library never exits.
 */
import { stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import yargs, { type Argv } from 'yargs';
import { ERROR_CODES, isPolyquantError, PolyquantError } from '../errors.js';
import { inspectPath } from '../inspect/index.js';
import { SYNTH_PRESET_NAMES, SYNTH_PRESETS, type SynthPresetName } from '../synth/presets.js';
import { isTokenizerDir, SYNTH_DTYPES, SYNTH_FORMATS, type SynthDType, type SynthFormat, synthCheckpoint } from '../synth/synth.js';
import { convertToGguf } from '../converters/gguf/convert.js';
import { defaultDemoModels, runDemo } from '../demo.js';
import { readImatrix } from '../converters/gguf/imatrix.js';
import { writeAtomically } from '../io/file.js';
import { checkOutputFile, type OutputFile, refuseOverwritingInputs } from '../io/output.js';
import { modelFolderFiles } from '../readers/checkpoint.js';
import { convertToOnnx, ONNX_ACCURACY_LEVELS, ONNX_BLOCK_SIZES } from '../converters/onnx/convert.js';
import { convertToWebGpu } from '../converters/webgpu/convert.js';
import { isWebGpuLayoutName, TENSOR_CACHE_STORAGES, WEBGPU_LAYOUT_NAMES } from '../quant/webgpu-layouts.js';
import { ATTENTION_FORMS, type AttentionForm } from '../converters/onnx/graph.js';
import { readOnnxModel } from '../converters/onnx/read.js';
import { isOnnxTypeName, ONNX_TYPE_NAMES } from '../converters/onnx/types.js';
import { isOnnxFile, onnxFolderFiles } from '../verify/engines/onnx.js';
import { GGUF_FILE_TYPE_NAMES, isGgufFileType } from '../quant/policy.js';
import { KOBEST_SPLITS, KOBEST_TASK_NAMES, type KobestTaskName, kobestSplitCandidates } from '../verify/kobest/index.js';
import { PERPLEXITY_PROTOCOLS, type PerplexityProtocol } from '../verify/perplexity.js';
import { renderMarkdown, renderText } from '../verify/report.js';
import { parseThreshold } from '../verify/thresholds.js';
import { DEVICE_NAMES, type DeviceName, ENGINE_NAMES, type EngineName, verify } from '../verify/verify.js';
import { serve } from '../serve/serve.js';
import { renderDemo } from './demo-text.js';
import { attachNegativeValues, integerFlag, MAX_CTX, positiveNumberFlag, shotsFlag, THREAD_FLAG_RANGE } from './flags.js';
import { table } from './format.js';
import { renderOnnxConversionPlan, renderWebGpuConversionPlan } from './convert-text.js';
import { renderConversionPlan, renderGgufInspect, renderInspect } from './inspect-text.js';
import { createCountProgress, createProgress } from './progress.js';
import { sweepCommand } from './sweep-command.js';

export interface CliIO {
  stdout(text: string): void;
  stderr(text: string): void;
}

export const processIO: CliIO = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
};

/** Exit status for an error that is a bug rather than bad input (sysexits EX_SOFTWARE). */
export const EXIT_INTERNAL = 70;

/** The repository root (src/cli or dist/cli → two levels up), to find ../shared next to a checkout. */
const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const SHARED_TOKENIZER_DIR = join(PACKAGE_ROOT, '..', 'shared', 'data', 'polyglot-ko');

export async function main(argv: readonly string[], io: CliIO = processIO): Promise<number> {
  let exitCode = 0;
  const parser = yargs(attachNegativeValues(argv, VALUE_FLAGS))
    .scriptName('polyquant')
    .strict()
    .exitProcess(false)
    .wrap(Math.min(110, process.stdout.columns ?? 100))
    .fail((message, error) => {
      throw error ?? new PolyquantError(ERROR_CODES.USAGE, message ?? 'invalid usage', { hint: 'see polyquant --help' });
    })
    .command(
      'inspect <path>',
      'Describe an HF model folder, .safetensors, .bin or .gguf file: config, parameters, tensors, tokenizer',
      (y: Argv) =>
        y
          .positional('path', { type: 'string', demandOption: true, describe: 'model folder or tensor file' })
          .option('json', { type: 'boolean', default: false, describe: 'print the report as JSON (schema polyquant.inspect/1)' })
          .option('tensors', { type: 'boolean', default: false, describe: 'list every tensor' })
          .option('hash', { type: 'boolean', default: false, describe: "add each tensor's sha256 over its stored bytes" })
          .option('weights', {
            choices: ['auto', 'safetensors', 'bin'] as const,
            default: 'auto' as const,
            describe: 'which weights to read when a folder has both',
          }),
      async (args) => {
        const progress = args.hash ? createProgress('hashing') : undefined;
        const report = await inspectPath(args.path, {
          weights: args.weights,
          hash: args.hash,
          onProgress: progress ? (done, total) => progress.update(done, total) : undefined,
        });
        progress?.succeed('hashed');
        const text =
          report.kind === 'gguf' ? renderGgufInspect(report, { tensors: args.tensors }) : renderInspect(report, { tensors: args.tensors || args.hash });
        io.stdout(args.json ? `${JSON.stringify(report, null, 2)}\n` : `${text}\n`);
      },
    )
    .command(
      'synth',
      'Write a random GPT-NeoX checkpoint with a real config, sharded like the real HF repository',
      (y: Argv) =>
        y
          .option('preset', { choices: SYNTH_PRESET_NAMES, demandOption: true, describe: 'model to imitate' })
          .option('out', { type: 'string', demandOption: true, describe: 'output folder (created)' })
          .option('format', { choices: SYNTH_FORMATS, default: 'safetensors' as SynthFormat, describe: 'weights to write; both = safetensors shards + one pytorch_model.bin' })
          .option('seed', { type: 'string', default: '0', describe: 'non-negative integer' })
          .option('dtype', { choices: SYNTH_DTYPES, default: 'F16' as SynthDType })
          .option('shard-size', { type: 'string', describe: 'bytes per shard (default: the real repo layout)' })
          .option('tokenizer', { type: 'string', describe: 'folder with tokenizer.json to copy (default: ../shared polyglot-ko, else a tiny one)' })
          .option('buffers', { type: 'boolean', default: true, describe: 'save the attention.bias / masked_bias / inv_freq buffers' })
          .option('force', { type: 'boolean', default: false, describe: "replace the output folder, if it holds only synth's own files" }),
      async (args) => {
        const preset = SYNTH_PRESETS[args.preset as SynthPresetName];
        const seed = integerFlag('--seed', args.seed, 0, 0xffff_ffff) ?? 0;
        const shardSize = integerFlag('--shard-size', args['shard-size'], 1);
        let tokenizerDir = args.tokenizer;
        if (tokenizerDir === undefined && preset.realTokenizer && (await isTokenizerDir(SHARED_TOKENIZER_DIR))) {
          tokenizerDir = SHARED_TOKENIZER_DIR;
        }
        const progress = createProgress('writing');
        const result = await synthCheckpoint({
          config: preset.config,
          out: args.out,
          format: args.format,
          seed,
          dtype: args.dtype,
          // The real repos: ~1 GB safetensors shards, one pytorch_model.bin.
          shardBytes: shardSize ?? preset.shardBytes,
          binShardBytes: shardSize,
          buffers: args.buffers,
          tokenizerDir,
          force: args.force,
          onProgress: (done, total) => progress.update(done, total),
        });
        progress.succeed(`wrote ${result.tensors} tensors to ${result.dir}`);
        io.stdout(`${result.files.map((file) => join(result.dir, file)).join('\n')}\n`);
      },
    )
    .command(
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
    )
    .command(
      'verify <candidate>',
      'Compare a candidate with its baseline: perplexity, KL divergence, top-1 agreement, KOBEST; exit 1 if a threshold fails',
      (y: Argv) =>
        y
          .positional('candidate', {
            type: 'string',
            demandOption: true,
            describe: 'model to check: a .gguf file, an ONNX folder or .onnx file, or an HF folder (with --simulate, the HF weights to quantize)',
          })
          .option('baseline', { type: 'string', demandOption: true, describe: 'model to compare against: an HF folder, a .gguf file, an ONNX folder or a .onnx file' })
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
            describe: 'which onnx/model*.onnx of an ONNX folder runs (needed when it holds several); name a .onnx file to pick one side alone',
          })
          .option('cache-dir', { type: 'string', describe: 'where HF folders run by llama.cpp are converted to (default $POLYQUANT_CACHE_DIR or ~/.cache/polyquant)' })
          .option('baseline-type', { choices: ['f16', 'bf16', 'f32'] as const, default: 'f16' as const, describe: 'GGUF type an HF folder run by llama.cpp is converted to' })
          .option('device', { choices: DEVICE_NAMES, default: 'auto' as DeviceName, describe: 'where the llamacpp, onnx and webgpu engines run (gpu: fail without one; webgpu cpu: a software adapter such as SwiftShader)' })
          .option('threads', {
            type: 'string',
            describe: `per engine: reference worker threads, llama.cpp compute threads, onnxruntime intra-op threads (${THREAD_FLAG_RANGE.min} to ${THREAD_FLAG_RANGE.max})`,
          })
          .option('max-ppl-increase', { type: 'string', describe: 'fail above this perplexity increase, e.g. 3%' })
          .option('max-kld', { type: 'string', describe: 'fail above this mean KL divergence (nats/token)' })
          .option('min-top1', { type: 'string', describe: 'fail below this top-1 agreement, e.g. 0.9 or 90%' })
          .option('max-acc-drop', { type: 'string', describe: 'fail above this KOBEST accuracy drop, e.g. 0.02 or 2%' })
          .option('max-f1-drop', { type: 'string', describe: 'fail above this KOBEST macro-F1 drop' })
          .option('json', { type: 'string', describe: 'write the report (schema polyquant.verify/1) to this file' })
          .option('markdown', { type: 'string', describe: 'write a Markdown summary to this file' }),
      async (args) => {
        const thresholds = {
          maxPplIncreasePct: parseThreshold('--max-ppl-increase', args['max-ppl-increase'], 'percent'),
          maxKld: parseThreshold('--max-kld', args['max-kld'], 'fraction'),
          minTop1: parseThreshold('--min-top1', args['min-top1'], 'fraction', 1),
          maxAccDrop: parseThreshold('--max-acc-drop', args['max-acc-drop'], 'fraction', 1),
          maxF1Drop: parseThreshold('--max-f1-drop', args['max-f1-drop'], 'fraction', 1),
        };
        const ctx = integerFlag('--ctx', args.ctx, 2, MAX_CTX) ?? 512;
        const stride = integerFlag('--stride', args.stride, 1, MAX_CTX);
        const maxWindows = integerFlag('--max-windows', args['max-windows'], 1);
        const limit = positiveNumberFlag('--limit', args.limit, 'a document count ≥ 1, or a fraction of the split in (0, 1)');
        const threads = integerFlag('--threads', args.threads, THREAD_FLAG_RANGE.min, THREAD_FLAG_RANGE.max);
        const shots = shotsFlag('--shots', args.shots);
        const tasks = args.tasks === undefined ? undefined : parseTasks(args.tasks);
        // Every output location and every input it might overwrite, before any model is loaded.
        const outputs: OutputFile[] = [];
        if (args.json !== undefined) outputs.push(await checkOutputFile(args.json, '--json'));
        if (args.markdown !== undefined) outputs.push(await checkOutputFile(args.markdown, '--markdown'));
        if (outputs.length > 0) {
          await refuseOverwritingInputs(outputs, await verifyInputFiles(args.candidate, args.baseline, args.ppl ?? [], args.kobest, tasks));
        }
        const progress = createCountProgress();
        const report = await verify({
          candidate: args.candidate,
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
          ...(args.simulate !== undefined && { simulate: args.simulate }),
          engine: args.engine,
          ...(args['onnx-type'] !== undefined && { onnxType: args['onnx-type'] }),
          device: args.device,
          ...(threads !== undefined && { threads }),
          ...(args['cache-dir'] !== undefined && { cacheDir: args['cache-dir'] }),
          baselineType: args['baseline-type'],
          thresholds: Object.fromEntries(Object.entries(thresholds).filter(([, value]) => value !== undefined)),
          onProgress: (event) => progress.report(event),
        });
        progress.done();
        // The report is printed first: should a write still fail, the results are on the terminal.
        io.stdout(`${renderText(report, table)}\n`);
        if (args.json !== undefined) await writeTextFile(args.json, `${JSON.stringify(report, null, 2)}\n`);
        if (args.markdown !== undefined) await writeTextFile(args.markdown, renderMarkdown(report));
        if (report.verdict === 'fail') exitCode = 1;
      },
    )
    .command(
      'demo',
      'Convert the bundled tiny model (and ../shared polyglot-ko-tiny when present) to GGUF f16 and q4_k_m, and verify each file in llama.cpp against its HF folder in the reference engine',
      (y: Argv) =>
        y
          .option('model', { type: 'string', array: true, describe: 'HF model folder(s) instead of the defaults' })
          .option('types', { type: 'string', default: 'f16,q4_k_m', describe: 'comma-separated GGUF types' })
          .option('onnx-types', { type: 'string', default: 'q4', describe: `comma-separated ONNX types (${ONNX_TYPE_NAMES.join(', ')}), or none` })
          .option('out', { type: 'string', describe: 'keep the GGUF files and ONNX folders in this folder' })
          .option('text', { type: 'string', describe: 'UTF-8 text for perplexity (default ../shared korean-text, else a built-in sample)' })
          .option('device', { choices: ['auto', 'cpu', 'gpu'] as const, default: 'auto' as const })
          .option('threads', { type: 'string', describe: `quantizer and engine threads (${THREAD_FLAG_RANGE.min} to ${THREAD_FLAG_RANGE.max})` })
          .option('json', { type: 'string', describe: 'write the result (schema polyquant.demo/1, with each verify report) to this file' }),
      async (args) => {
        const threads = integerFlag('--threads', args.threads, THREAD_FLAG_RANGE.min, THREAD_FLAG_RANGE.max);
        if (args.json !== undefined) {
          const inputs = [...(args.text === undefined ? [] : [args.text]), ...(await Promise.all((args.model ?? defaultDemoModels()).map((model) => modelFolderFiles(model)))).flat()];
          await refuseOverwritingInputs([await checkOutputFile(args.json, '--json')], inputs);
        }
        const progress = createProgress('demo');
        const result = await runDemo({
          models: args.model,
          types: args.types.split(',').map((type) => type.trim()),
          onnxTypes: args['onnx-types'] === 'none' || args['onnx-types'] === '' ? [] : args['onnx-types'].split(',').map((type) => type.trim()),
          outDir: args.out,
          text: args.text,
          device: args.device,
          threads,
          onProgress: (message) => progress.message(message),
        });
        progress.succeed('demo finished');
        io.stdout(`${renderDemo(result)}\n`);
        if (args.json !== undefined) await writeTextFile(args.json, `${JSON.stringify(result, null, 2)}\n`);
        if (result.verdict === 'fail') exitCode = 1;
      },
    )
    .command(
      'serve <dir>',
      'Serve the WebGPU browser page over a WebGPU folder (convert --to webgpu): the page loads the model in the browser, shows the adapter, load progress, tokens/s and a greedy continuation',
      (y: Argv) =>
        y
          .positional('dir', { type: 'string', demandOption: true, describe: 'WebGPU folder (tensor-cache.json + params_shard_*.bin)' })
          .option('port', { type: 'string', default: '8080', describe: 'TCP port (0: any free port)' })
          .option('host', { type: 'string', default: '127.0.0.1', describe: 'address to listen on (browsers allow WebGPU on localhost; other hosts need HTTPS)' }),
      async (args) => {
        const port = integerFlag('--port', args.port, 0, 65535) as number;
        const server = await serve(resolve(args.dir), { port, host: args.host });
        io.stdout(`serving ${resolve(args.dir)} at ${server.url} (Ctrl-C stops)\n`);
        // Runs until the process is interrupted (the CLI's signal handlers exit 130 / 143).
        await new Promise<never>(() => {});
      },
    )
    .command(
      sweepCommand(io, (code) => {
        exitCode = code;
      }),
    )
    .demandCommand(1, 'name a command: demo, inspect, convert, verify, sweep, synth, serve')
    .help()
    .version();
  try {
    await parser.parseAsync();
  } catch (error) {
    exitCode = reportError(error, io);
  }
  return exitCode;
}

async function writeTextFile(path: string, text: string): Promise<void> {
  await writeAtomically(resolve(path), (file) => file.write(new TextEncoder().encode(text)));
}

/** Flags that take a value, which may start with `-` (a negative number, refused by the flag's own check). */
const VALUE_FLAGS: ReadonlySet<string> = new Set(
  ['ctx', 'port', 'stride', 'max-windows', 'limit', 'threads', 'workers', 'seed', 'shard-size', 'shots', 'max-ppl-increase', 'max-kld', 'min-top1', 'max-acc-drop', 'max-f1-drop', 'shard', 'baseline-cache-limit'].map(
    (name) => `--${name}`,
  ),
);

/**
 * Every file `verify` may read: the models (a GGUF file, or an HF folder's config, tokenizer and weight
 * files), the perplexity texts and the KOBEST split files of the chosen tasks. No output may be one of them.
 */
async function verifyInputFiles(
  candidate: string,
  baseline: string,
  pplFiles: readonly string[],
  kobestDir: string | undefined,
  tasks: readonly KobestTaskName[] | undefined,
): Promise<string[]> {
  const files: string[] = [...pplFiles];
  for (const model of [candidate, baseline]) {
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

function parseTasks(raw: string): KobestTaskName[] {
  return raw.split(',').map((part) => {
    const name = part.trim().replace(/^kobest_/, '');
    if (!(KOBEST_TASK_NAMES as readonly string[]).includes(name)) {
      throw new PolyquantError(ERROR_CODES.USAGE, `--tasks: unknown KOBEST task ${JSON.stringify(part)}`, {
        hint: `choose from ${KOBEST_TASK_NAMES.join(', ')}`,
      });
    }
    return name as KobestTaskName;
  });
}

function reportError(error: unknown, io: CliIO): number {
  if (isPolyquantError(error)) {
    io.stderr(`polyquant: ${error.message}\n`);
    return error.exitCode;
  }
  io.stderr(`polyquant: internal error (please report): ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  return EXIT_INTERNAL;
}
