/**
 * The HF model folder reader: config.json + weights (sharded or single safetensors, sharded or single
 * PyTorch .bin) + tokenizer files → a Checkpoint of lazy tensors. Weight discovery follows transformers'
 * `from_pretrained` (modeling_utils.py): safetensors index, single safetensors, .bin index, single .bin —
 * safetensors first when both are present, unless the caller asks for one.
 */
import { stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import {
  type ExpectedTensor,
  expectedTensors,
  bufferKind,
  type NeoXConfig,
  normaliseNeoXConfig,
} from '../arch/gpt-neox.js';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { fileSize, ioError, pathExists } from '../io/file.js';
import { DTYPES, elementCount } from '../tensor/dtype.js';
import { isRecord, readJsonFile } from './json-file.js';
import { readSafetensors } from './safetensors.js';
import type { TensorRef } from './tensor-ref.js';
import { readTokenizerFiles, summariseTokenizer, TOKENIZER_FILE_NAMES, type TokenizerFiles, type TokenizerSummary } from './tokenizer.js';
import { readTorchBin } from './torch-bin.js';

export type WeightsFormat = 'safetensors' | 'bin';
export type WeightsPreference = WeightsFormat | 'auto';

/** The weight files transformers looks for, in its order of preference (modeling_utils.py constants). */
export const WEIGHT_FILES = [
  { format: 'safetensors', index: 'model.safetensors.index.json', single: 'model.safetensors' },
  { format: 'bin', index: 'pytorch_model.bin.index.json', single: 'pytorch_model.bin' },
] as const satisfies readonly { format: WeightsFormat; index: string; single: string }[];

export interface WeightFile {
  readonly path: string;
  readonly bytes: number;
}

export interface SkippedTensor {
  readonly tensor: TensorRef;
  /** `attention.bias` etc. for known buffers; `unexpected` for anything else that is not a parameter. */
  readonly reason: string;
}

export interface WeightSet {
  readonly format: WeightsFormat;
  /** The shard index file, when the weights are sharded. */
  readonly index: string | undefined;
  readonly files: readonly WeightFile[];
  /** Every tensor in the files, parameters and buffers alike, in file order. */
  readonly tensors: readonly TensorRef[];
}

export interface Checkpoint {
  readonly dir: string;
  readonly config: NeoXConfig;
  readonly rawConfig: Readonly<Record<string, unknown>>;
  readonly weights: Omit<WeightSet, 'tensors'>;
  /** The model's parameters by HF name, in HF state-dict order. */
  readonly tensors: ReadonlyMap<string, TensorRef>;
  /** Tensors present in the weights that are not parameters (buffers such as attention.bias). */
  readonly skipped: readonly SkippedTensor[];
  readonly tokenizer: TokenizerFiles;
  readonly warnings: readonly string[];
}

export interface ReadCheckpointOptions {
  /** Which weights to read when a folder has both (default: safetensors, as transformers prefers). */
  readonly weights?: WeightsPreference;
  /**
   * Weights of layers past config.json's num_hidden_layers: `refuse` (default) is a CONFIG error, since
   * a model built from the config would silently lose them; `drop` skips them with a warning (what
   * transformers does when loading, and `convert --drop-extra-layers`).
   */
  readonly extraLayers?: 'refuse' | 'drop';
}

/** A per-layer tensor name and its layer index (modeling_gpt_neox.py's `gpt_neox.layers.N.`). */
const LAYER_TENSOR = /^gpt_neox\.layers\.(\d+)\./;

/** Shard file names in an index must be plain names in the same folder: no paths, no traversal. */
const SHARD_NAME = /^(?!\.\.?$)[^/\\\0]+$/;

export async function readCheckpoint(path: string, options: ReadCheckpointOptions = {}): Promise<Checkpoint> {
  const dir = resolve(path);
  await requireDirectory(dir);
  const configPath = join(dir, 'config.json');
  if (!(await pathExists(configPath))) {
    throw new PolyquantError(ERROR_CODES.NOT_FOUND, 'the model folder has no config.json', {
      file: configPath,
      hint: 'point polyquant at a Hugging Face model folder (config.json + weights + tokenizer.json)',
    });
  }
  const rawConfig = await readJsonFile(configPath);
  const config = normaliseNeoXConfig(rawConfig, configPath);
  const weights = await findWeights(dir, options.weights ?? 'auto');
  const tokenizer = await readTokenizerFiles(dir);
  const warnings: string[] = [];
  const { tensors, skipped } = matchTensors(config, weights, warnings);
  checkExtraLayers(config, skipped, configPath, options.extraLayers ?? 'refuse', warnings);
  const tokenizerSummary = summariseTokenizer(tokenizer);
  if (tokenizerSummary !== undefined) {
    checkVocabulary(config, tokenizerSummary, dir);
    warnings.push(...tokenizerSummary.notes);
  }
  if (tokenizer.tokenizer === undefined) warnings.push('no tokenizer.json: verification and GGUF tokenizer metadata need it');
  const { tensors: _all, ...weightInfo } = weights;
  return {
    dir,
    config,
    rawConfig: rawConfig as Record<string, unknown>,
    weights: weightInfo,
    tensors,
    skipped,
    tokenizer,
    warnings,
  };
}

async function requireDirectory(dir: string): Promise<void> {
  let isDirectory: boolean;
  try {
    isDirectory = (await stat(dir)).isDirectory();
  } catch (error) {
    throw ioError(dir, 'open the model folder', error);
  }
  if (!isDirectory) {
    throw new PolyquantError(ERROR_CODES.USAGE, 'expected a model folder, got a file', { file: dir });
  }
}

/** Finds and opens the weights of a model folder (headers only; no tensor data is read). */
export async function findWeights(dir: string, preference: WeightsPreference): Promise<WeightSet> {
  const candidates = WEIGHT_FILES.filter((entry) => preference === 'auto' || entry.format === preference);
  for (const entry of candidates) {
    const indexPath = join(dir, entry.index);
    if (await pathExists(indexPath)) return readShardedWeights(entry.format, indexPath);
    const singlePath = join(dir, entry.single);
    if (await pathExists(singlePath)) {
      const tensors = await readWeightFile(entry.format, singlePath);
      return {
        format: entry.format,
        index: undefined,
        files: [{ path: singlePath, bytes: await fileSize(singlePath) }],
        tensors,
      };
    }
  }
  const looked = candidates.flatMap((entry) => [entry.index, entry.single]).join(', ');
  throw new PolyquantError(ERROR_CODES.NOT_FOUND, `no ${preference === 'auto' ? '' : `${preference} `}weights found`, {
    file: dir,
    hint: `looked for ${looked}`,
  });
}

export async function readWeightFile(format: WeightsFormat, path: string): Promise<TensorRef[]> {
  return format === 'safetensors' ? (await readSafetensors(path)).tensors : (await readTorchBin(path)).tensors;
}

async function readShardedWeights(format: WeightsFormat, indexPath: string): Promise<WeightSet> {
  const index = await readJsonFile(indexPath);
  const weightMap = isRecord(index) ? index['weight_map'] : undefined;
  if (!isRecord(weightMap)) {
    throw new PolyquantError(ERROR_CODES.MALFORMED, 'the shard index has no `weight_map` object', { file: indexPath });
  }
  const dir = resolve(indexPath, '..');
  const shardOf = new Map<string, string>();
  for (const [name, shard] of Object.entries(weightMap)) {
    if (typeof shard !== 'string' || !SHARD_NAME.test(shard)) {
      throw new PolyquantError(ERROR_CODES.MALFORMED, `weight_map entry names shard ${JSON.stringify(shard)}`, {
        file: indexPath,
        tensor: name,
        hint: 'shards must be plain file names in the same folder',
      });
    }
    shardOf.set(name, shard);
  }
  const shardNames = [...new Set(shardOf.values())];
  const files: WeightFile[] = [];
  const tensors: TensorRef[] = [];
  const seen = new Map<string, string>();
  for (const shard of shardNames) {
    const shardPath = join(dir, shard);
    if (!(await pathExists(shardPath))) {
      const example = [...shardOf].find(([, value]) => value === shard)?.[0];
      throw new PolyquantError(ERROR_CODES.NOT_FOUND, `the shard index names ${shard}, which does not exist`, {
        file: indexPath,
        tensor: example,
        hint: `download or restore ${shard} next to ${basename(indexPath)}`,
      });
    }
    files.push({ path: shardPath, bytes: await fileSize(shardPath) });
    for (const tensor of await readWeightFile(format, shardPath)) {
      const previous = seen.get(tensor.name);
      if (previous !== undefined) {
        throw new PolyquantError(ERROR_CODES.MALFORMED, `tensor appears in both ${previous} and ${shard}`, {
          file: shardPath,
          tensor: tensor.name,
        });
      }
      seen.set(tensor.name, shard);
      tensors.push(tensor);
    }
  }
  for (const [name, shard] of shardOf) {
    const found = seen.get(name);
    if (found !== shard) {
      throw new PolyquantError(
        ERROR_CODES.MALFORMED,
        found === undefined ? `the shard index places it in ${shard}, which does not hold it` : `the shard index places it in ${shard}, but it is in ${found}`,
        { file: indexPath, tensor: name },
      );
    }
  }
  for (const tensor of tensors) {
    if (!shardOf.has(tensor.name)) {
      throw new PolyquantError(ERROR_CODES.MALFORMED, 'tensor is in a shard but not in the shard index', {
        file: join(dir, seen.get(tensor.name) ?? ''),
        tensor: tensor.name,
      });
    }
  }
  return { format, index: indexPath, files, tensors };
}

/** Sorts the weights into parameters (checked against the config) and skipped buffers. */
function matchTensors(
  config: NeoXConfig,
  weights: WeightSet,
  warnings: string[],
): { tensors: Map<string, TensorRef>; skipped: SkippedTensor[] } {
  const byName = new Map(weights.tensors.map((tensor) => [tensor.name, tensor]));
  const expected = expectedTensors(config);
  const expectedNames = new Set(expected.map((entry) => entry.name));
  const tensors = new Map<string, TensorRef>();
  for (const entry of expected) {
    const tensor = byName.get(entry.name);
    if (tensor === undefined) {
      if (entry.optional) continue;
      throw new PolyquantError(ERROR_CODES.CONFIG, 'the weights lack this tensor, which config.json implies', {
        file: weights.index ?? weights.files[0]?.path,
        tensor: entry.name,
        hint: describeExpectation(entry),
      });
    }
    checkParameter(tensor, entry);
    tensors.set(entry.name, tensor);
  }
  const skipped: SkippedTensor[] = [];
  const unexpected: string[] = [];
  for (const tensor of weights.tensors) {
    if (expectedNames.has(tensor.name)) continue;
    const kind = bufferKind(tensor.name);
    if (kind === undefined) unexpected.push(tensor.name);
    skipped.push({ tensor, reason: kind ?? 'unexpected' });
  }
  if (unexpected.length > 0) {
    const shown = unexpected.slice(0, 5).join(', ');
    warnings.push(
      `${unexpected.length} tensor(s) are not GPT-NeoX parameters and were skipped: ${shown}${unexpected.length > 5 ? ', …' : ''}`,
    );
  }
  return { tensors, skipped };
}

/**
 * Parameters of layers the config does not have (num_hidden_layers 2, weights for 4): a conversion would
 * drop them without a word, so they are refused unless the caller asks to drop them.
 */
function checkExtraLayers(config: NeoXConfig, skipped: readonly SkippedTensor[], configPath: string, policy: 'refuse' | 'drop', warnings: string[]): void {
  const layers = new Set<number>();
  let example: string | undefined;
  for (const { tensor, reason } of skipped) {
    if (reason !== 'unexpected') continue;
    const layer = Number(LAYER_TENSOR.exec(tensor.name)?.[1] ?? Number.NaN);
    if (Number.isSafeInteger(layer) && layer >= config.numLayers) {
      layers.add(layer);
      example ??= tensor.name;
    }
  }
  if (layers.size === 0) return;
  const sorted = [...layers].sort((a, b) => a - b);
  const span = sorted.length === 1 ? `layer ${sorted[0]}` : `layers ${sorted[0]}–${sorted[sorted.length - 1]}`;
  const detail = `the weights have ${span} (e.g. ${example}), past config.json num_hidden_layers ${config.numLayers}`;
  if (policy === 'drop') {
    warnings.push(`${detail}: not used`);
    return;
  }
  throw new PolyquantError(ERROR_CODES.CONFIG, `${detail}; a model built from this config would silently drop them`, {
    file: configPath,
    hint: `fix num_hidden_layers in config.json, or pass --drop-extra-layers to convert only the first ${config.numLayers} layer(s)`,
  });
}

function describeExpectation(entry: ExpectedTensor): string {
  return `expected shape [${entry.shape.join(', ')}]`;
}

function checkParameter(tensor: TensorRef, entry: ExpectedTensor): void {
  const same = tensor.shape.length === entry.shape.length && tensor.shape.every((dim, i) => dim === entry.shape[i]);
  if (!same) {
    throw new PolyquantError(
      ERROR_CODES.CONFIG,
      `shape [${tensor.shape.join(', ')}] does not match config.json, which implies [${entry.shape.join(', ')}]`,
      { file: tensor.file, tensor: tensor.name },
    );
  }
  if (!DTYPES[tensor.dtype].isFloat) {
    throw new PolyquantError(ERROR_CODES.UNSUPPORTED, `parameter has dtype ${tensor.dtype}; expected a float type`, {
      file: tensor.file,
      tensor: tensor.name,
    });
  }
}

function checkVocabulary(config: NeoXConfig, summary: TokenizerSummary, dir: string): void {
  if (summary.vocabSize > config.vocabSize) {
    throw new PolyquantError(
      ERROR_CODES.CONFIG,
      `tokenizer.json has ${summary.vocabSize} token ids but config.json vocab_size is ${config.vocabSize}`,
      { file: join(dir, 'tokenizer.json'), hint: 'the tokenizer does not belong to this model' },
    );
  }
}

/** The model card converters read for metadata (the license). */
export const MODEL_CARD_FILE = 'README.md';

/**
 * Every file a command may read from a model folder — config.json, the tokenizer files, the model card,
 * both weight formats' single files and indexes, and each shard an index names — for the check that no
 * output overwrites an input. Absent files are listed too (they are skipped there); an index that does not
 * parse contributes only itself (reading the checkpoint reports it).
 */
export async function modelFolderFiles(path: string): Promise<string[]> {
  const dir = resolve(path);
  const files = [join(dir, 'config.json'), join(dir, MODEL_CARD_FILE), ...Object.values(TOKENIZER_FILE_NAMES).map((name) => join(dir, name))];
  for (const entry of WEIGHT_FILES) {
    files.push(join(dir, entry.single));
    const indexPath = join(dir, entry.index);
    files.push(indexPath);
    if (!(await pathExists(indexPath))) continue;
    const index = await readJsonFile(indexPath).catch(() => undefined);
    const weightMap = isRecord(index) ? index['weight_map'] : undefined;
    if (!isRecord(weightMap)) continue;
    for (const shard of new Set(Object.values(weightMap))) {
      if (typeof shard === 'string' && SHARD_NAME.test(shard)) files.push(join(dir, shard));
    }
  }
  return files;
}

/** Parameters (not buffers) in the checkpoint. */
export function parameterCount(checkpoint: Pick<Checkpoint, 'tensors'>): number {
  let total = 0;
  for (const tensor of checkpoint.tensors.values()) total += elementCount(tensor.shape);
  return total;
}
