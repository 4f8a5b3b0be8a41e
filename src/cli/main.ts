/**
 * The command line: each yargs command maps its flags to one library call and picks the exit code
 * (0 ok, 1 a check failed, 2 bad input or usage, 70 an internal error). The library never exits.
 */
import { writeTextAtomically } from '../io/file.js';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import yargs, { type Argv } from 'yargs';
import { ERROR_CODES, isPolyquantError, PolyquantError } from '../errors.js';
import { inspectPath } from '../inspect/index.js';
import { SYNTH_PRESET_NAMES, SYNTH_PRESETS, type SynthPresetName } from '../synth/presets.js';
import { isTokenizerDir, SYNTH_DTYPES, SYNTH_FORMATS, type SynthDType, type SynthFormat, synthCheckpoint } from '../synth/synth.js';
import { defaultDemoModels, runDemo } from '../demo.js';
import { checkOutputFile, refuseOverwritingInputs } from '../io/output.js';
import { modelFolderFiles } from '../readers/checkpoint.js';
import { ONNX_TYPE_NAMES } from '../converters/onnx/types.js';
import { serve } from '../serve/serve.js';
import { renderDemo } from './demo-text.js';
import { attachNegativeValues, integerFlag, THREAD_FLAG_RANGE } from './flags.js';
import { renderGgufInspect, renderInspect } from './inspect-text.js';
import { createProgress, eraseProgress } from './progress.js';
import { POLYQUANT_VERSION } from '../sweep/records.js';
import { sweepCommand } from './sweep-command.js';
import { addConvertCommand } from './convert-command.js';
import { addVerifyCommand } from './verify-command.js';
import { addImatrixCommand } from './imatrix-command.js';
import { setCommandLine } from './command-line.js';
import { commandClock, reportText } from './json-reports.js';

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
  setCommandLine(argv);
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
          .option('json', { type: 'boolean', default: false, describe: 'print the report as JSON (schema polyquant.inspect/2; .gguf files polyquant.inspect-gguf/2, ONNX polyquant.inspect-onnx/2, WebGPU polyquant.inspect-webgpu/2; docs/schemas.md)' })
          .option('tensors', { type: 'boolean', default: false, describe: 'list every tensor' })
          .option('hash', { type: 'boolean', default: false, describe: "add each tensor's sha256 over its stored bytes" })
          .option('weights', {
            choices: ['auto', 'safetensors', 'bin'] as const,
            default: 'auto' as const,
            describe: 'which weights to read when a folder has both',
          }),
      async (args) => {
        const clock = commandClock();
        const progress = args.hash ? createProgress('hashing') : undefined;
        const report = await inspectPath(args.path, {
          weights: args.weights,
          hash: args.hash,
          onProgress: progress ? (done, total) => progress.update(done, total) : undefined,
        });
        progress?.succeed('hashed');
        const text =
          report.kind === 'gguf' ? renderGgufInspect(report, { tensors: args.tensors }) : renderInspect(report, { tensors: args.tensors || args.hash });
        // The documented JSON shape (docs/schemas.md): snake_case, with provenance.
        io.stdout(args.json ? reportText(report, clock) : `${text}\n`);
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
          .option('tokenizer', { type: 'string', describe: 'folder with tokenizer.json to copy (default for the polyglot-ko presets: the real polyglot-ko tokenizer from the shared data next to a development checkout, else a tiny one)' })
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
    );
  addConvertCommand(parser, io);
  addVerifyCommand(parser, io, (code) => {
    exitCode = code;
  });
  addImatrixCommand(parser, io);
  parser
    .command(
      'demo',
      'Convert the bundled tiny model (and the polyglot-ko-tiny fixture, next to a development checkout) to GGUF f16 and q4_k_m and ONNX q4, and verify each result in llama.cpp or onnxruntime against its HF folder in the reference engine',
      (y: Argv) =>
        y
          .option('model', { type: 'string', array: true, describe: 'HF model folder(s) instead of the defaults' })
          .option('types', { type: 'string', default: 'f16,q4_k_m', describe: 'comma-separated GGUF types' })
          .option('onnx-types', { type: 'string', default: 'q4', describe: `comma-separated ONNX types (${ONNX_TYPE_NAMES.join(', ')}), or none` })
          .option('out', { type: 'string', describe: 'keep the GGUF files and ONNX folders in this folder' })
          .option('text', { type: 'string', describe: 'UTF-8 text for perplexity (default: the Korean evaluation text next to a development checkout, else a built-in Korean sample)' })
          .option('device', { choices: ['auto', 'cpu', 'gpu'] as const, default: 'auto' as const })
          .option('threads', { type: 'string', describe: `quantizer and engine threads (${THREAD_FLAG_RANGE.min} to ${THREAD_FLAG_RANGE.max})` })
          .option('json', { type: 'string', describe: 'write the result (schema polyquant.demo/2, with each verify report; docs/schemas.md) to this file' }),
      async (args) => {
        const threads = integerFlag('--threads', args.threads, THREAD_FLAG_RANGE.min, THREAD_FLAG_RANGE.max);
        if (args.json !== undefined) {
          const inputs = [...(args.text === undefined ? [] : [args.text]), ...(await Promise.all((args.model ?? defaultDemoModels()).map((model) => modelFolderFiles(model)))).flat()];
          await refuseOverwritingInputs([await checkOutputFile(args.json, '--json')], inputs);
        }
        const clock = commandClock();
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
        if (args.json !== undefined) await writeTextAtomically(args.json, reportText(result, clock, new Set(result.rows.map((row) => row.engine)).add('reference')));
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
    .demandCommand(1, 'name a command: demo, inspect, convert, verify, imatrix, sweep, synth, serve')
    .help()
    // polyquant's own package.json by its path from this module: yargs' bare .version() reads the package.json
    // nearest the working directory, i.e. the version of whatever project polyquant was installed into.
    .version(POLYQUANT_VERSION);
  try {
    await parser.parseAsync();
  } catch (error) {
    exitCode = reportError(error, io);
  }
  return exitCode;
}

/** Flags that take a value, which may start with `-` (a negative number, refused by the flag's own check). */
const VALUE_FLAGS: ReadonlySet<string> = new Set(
  ['ctx', 'chunks', 'port', 'stride', 'max-windows', 'limit', 'threads', 'workers', 'seed', 'shard-size', 'shots', 'bootstrap-iters', 'max-ppl-increase', 'max-kld', 'min-top1', 'max-acc-drop', 'max-f1-drop', 'shard', 'baseline-cache-limit'].map(
    (name) => `--${name}`,
  ),
);

function reportError(error: unknown, io: CliIO): number {
  // A progress line still on the terminal would run into the message.
  eraseProgress();
  if (isPolyquantError(error)) {
    io.stderr(`polyquant: ${error.message}\n`);
    return error.exitCode;
  }
  io.stderr(`polyquant: internal error (please report): ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  return EXIT_INTERNAL;
}
