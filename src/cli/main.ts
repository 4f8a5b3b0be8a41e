/**
 * The command line: each yargs command maps its flags to one library call and picks the exit code
 * (0 ok, 1 a check failed, 2 bad input or usage, 70 an internal error). The library never exits.
 */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import yargs, { type Argv } from 'yargs';
import { ERROR_CODES, isPolyquantError, PolyquantError } from '../errors.js';
import { inspectHf } from '../inspect/hf.js';
import { SYNTH_PRESET_NAMES, SYNTH_PRESETS, type SynthPresetName } from '../synth/presets.js';
import { isTokenizerDir, SYNTH_DTYPES, SYNTH_FORMATS, type SynthDType, type SynthFormat, synthCheckpoint } from '../synth/synth.js';
import { renderInspect } from './inspect-text.js';
import { createProgress } from './progress.js';

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
  const parser = yargs([...argv])
    .scriptName('polyquant')
    .strict()
    .exitProcess(false)
    .wrap(Math.min(110, process.stdout.columns ?? 100))
    .fail((message, error) => {
      throw error ?? new PolyquantError(ERROR_CODES.USAGE, message ?? 'invalid usage', { hint: 'see polyquant --help' });
    })
    .command(
      'inspect <path>',
      'Describe an HF model folder, .safetensors or .bin file: config, parameters, tensors, tokenizer',
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
        const report = await inspectHf(args.path, {
          weights: args.weights,
          hash: args.hash,
          onProgress: progress ? (done, total) => progress.update(done, total) : undefined,
        });
        progress?.succeed('hashed');
        io.stdout(args.json ? `${JSON.stringify(report, null, 2)}\n` : `${renderInspect(report, { tensors: args.tensors || args.hash })}\n`);
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
          .option('seed', { type: 'number', default: 0 })
          .option('dtype', { choices: SYNTH_DTYPES, default: 'F16' as SynthDType })
          .option('shard-size', { type: 'number', describe: 'bytes per shard (default: the real repo layout)' })
          .option('tokenizer', { type: 'string', describe: 'folder with tokenizer.json to copy (default: ../shared polyglot-ko, else a tiny one)' })
          .option('buffers', { type: 'boolean', default: true, describe: 'save the attention.bias / masked_bias / inv_freq buffers' })
          .option('force', { type: 'boolean', default: false, describe: 'replace the output folder' }),
      async (args) => {
        const preset = SYNTH_PRESETS[args.preset as SynthPresetName];
        if (!Number.isSafeInteger(args.seed) || args.seed < 0) {
          throw new PolyquantError(ERROR_CODES.USAGE, `--seed ${args.seed} is not a non-negative integer`);
        }
        let tokenizerDir = args.tokenizer;
        if (tokenizerDir === undefined && preset.realTokenizer && (await isTokenizerDir(SHARED_TOKENIZER_DIR))) {
          tokenizerDir = SHARED_TOKENIZER_DIR;
        }
        const progress = createProgress('writing');
        const result = await synthCheckpoint({
          config: preset.config,
          out: args.out,
          format: args.format,
          seed: args.seed,
          dtype: args.dtype,
          // The real repos: ~1 GB safetensors shards, one pytorch_model.bin.
          shardBytes: args['shard-size'] ?? preset.shardBytes,
          binShardBytes: args['shard-size'],
          buffers: args.buffers,
          tokenizerDir,
          force: args.force,
          onProgress: (done, total) => progress.update(done, total),
        });
        progress.succeed(`wrote ${result.tensors} tensors to ${result.dir}`);
        io.stdout(`${result.files.map((file) => join(result.dir, file)).join('\n')}\n`);
      },
    )
    .demandCommand(1, 'name a command: inspect, synth')
    .help()
    .version();
  try {
    await parser.parseAsync();
  } catch (error) {
    exitCode = reportError(error, io);
  }
  return exitCode;
}

function reportError(error: unknown, io: CliIO): number {
  if (isPolyquantError(error)) {
    io.stderr(`polyquant: ${error.message}\n`);
    return error.exitCode;
  }
  io.stderr(`polyquant: internal error (please report): ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  return EXIT_INTERNAL;
}
