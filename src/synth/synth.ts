/**
 * `polyquant synth`: writes a random GPT-NeoX checkpoint in HF layout — config.json, weights (sharded
 * safetensors + index, or pytorch_model.bin), tokenizer files — streaming, so a 7.6 GB model is written
 * with memory bounded by one chunk. Also the generator behind the test fixtures. The folder is built under
 * a temp name and renamed into place at the end: a failure leaves nothing behind.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { expectedTensors, normaliseNeoXConfig, type NeoXConfig } from '../arch/gpt-neox.js';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { pathExists, readWholeFile, writeAtomically } from '../io/file.js';
import { checkFolderOutput, type FolderOwnership, writeFolderAtomically } from '../io/output-folder.js';
import { MAX_JSON_FILE_BYTES } from '../readers/json-file.js';
import { writeSafetensors } from '../readers/safetensors.js';
import type { TensorToWrite } from '../readers/tensor-ref.js';
import { TOKENIZER_FILE_NAMES } from '../readers/tokenizer.js';
import { writeTorchBin } from '../readers/torch-bin.js';
import { DTYPES, type DType, elementCount } from '../tensor/dtype.js';
import { fillFromTable, hashString, mix32, normalTable, toHalfTable, Xorshift32 } from './random.js';
import { buildTinyTokenizer, TINY_SPECIAL_TOKENS_MAP, TINY_TOKENIZER_CONFIG } from './tiny-tokenizer.js';

export type SynthDType = 'F32' | 'F16' | 'BF16';
export const SYNTH_DTYPES: readonly SynthDType[] = ['F32', 'F16', 'BF16'];
export type SynthFormat = 'safetensors' | 'bin' | 'both';
export const SYNTH_FORMATS: readonly SynthFormat[] = ['safetensors', 'bin', 'both'];

export interface SynthOptions {
  /** config.json to write (the raw HF form). */
  readonly config: Readonly<Record<string, unknown>>;
  readonly out: string;
  /** `both` writes safetensors shards and one pytorch_model.bin side by side, as the real repos do. */
  readonly format: SynthFormat;
  readonly seed: number;
  readonly dtype: SynthDType;
  /** Split the safetensors weights into shards of at most this many bytes (plus an index); undefined: one file. */
  readonly shardBytes: number | undefined;
  /** The same for the .bin weights (the real repos have one unsharded pytorch_model.bin). */
  readonly binShardBytes?: number | undefined;
  /** Also save the per-layer buffers real polyglot-ko checkpoints carry. */
  readonly buffers: boolean;
  /** A folder with the real tokenizer files to copy; undefined: build the tiny byte-level BPE tokenizer. */
  readonly tokenizerDir: string | undefined;
  /** Replace `out` if it exists. */
  readonly force?: boolean;
  readonly onProgress?: (done: number, total: number) => void;
}

export interface SynthResult {
  readonly dir: string;
  readonly files: readonly string[];
  readonly tensors: number;
  readonly bytes: number;
}

/** Weights are drawn from normal(0, 0.02), GPT-NeoX's initializer_range. */
const WEIGHT_STD = 0.02;
/** Elements generated per chunk (even, so chunking never changes the random stream). */
const CHUNK_ELEMENTS = 1 << 22;

/**
 * How a tensor is filled: matrices and biases normal(0, 0.02); norm weights 1 + normal(0, 0.02) (not
 * exactly 1 and 0, so a converter that drops or misplaces a bias or a norm weight changes the output).
 */
type Fill = 'normal' | 'one-plus-normal' | 'causal-mask' | 'masked-bias' | 'inv-freq';

interface PlannedTensor {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly fill: Fill;
}

/** The tensors of a checkpoint in HF state-dict order, buffers after each layer's attention.dense.bias. */
export function planSynthTensors(config: NeoXConfig, dtype: SynthDType, buffers: boolean): PlannedTensor[] {
  const plan: PlannedTensor[] = [];
  for (const entry of expectedTensors(config)) {
    if (entry.optional) continue;
    const fill: Fill = entry.role.endsWith('norm-weight') ? 'one-plus-normal' : 'normal';
    plan.push({ name: entry.name, dtype, shape: entry.shape, fill });
    if (buffers && entry.role === 'attn-output-bias') {
      const prefix = `gpt_neox.layers.${entry.layer}.attention`;
      const positions = config.maxPositionEmbeddings;
      plan.push({ name: `${prefix}.bias`, dtype: 'BOOL', shape: [1, 1, positions, positions], fill: 'causal-mask' });
      plan.push({ name: `${prefix}.masked_bias`, dtype: 'F32', shape: [], fill: 'masked-bias' });
      plan.push({ name: `${prefix}.rotary_emb.inv_freq`, dtype: 'F32', shape: [config.rotaryDims / 2], fill: 'inv-freq' });
    }
  }
  return plan;
}

/** Streams one planned tensor's bytes. */
function tensorChunks(tensor: PlannedTensor, config: NeoXConfig, seed: number, tables: Tables): () => AsyncIterable<Uint8Array> {
  const count = elementCount(tensor.shape);
  const itemBytes = DTYPES[tensor.dtype].bytes;
  return async function* chunks() {
    if (tensor.fill === 'causal-mask') {
      // torch.tril(torch.ones(P, P)): row i is true up to column i (modeling_gpt_neox.py).
      const positions = tensor.shape[3] ?? 0;
      const rowsPerChunk = Math.max(1, Math.floor(CHUNK_ELEMENTS / Math.max(1, positions)));
      for (let row = 0; row < positions; row += rowsPerChunk) {
        const rows = Math.min(rowsPerChunk, positions - row);
        const out = new Uint8Array(rows * positions);
        for (let r = 0; r < rows; r += 1) out.fill(1, r * positions, r * positions + row + r + 1);
        yield out;
      }
      return;
    }
    if (tensor.fill === 'masked-bias') {
      yield new Uint8Array(Float32Array.of(-1e9).buffer);
      return;
    }
    if (tensor.fill === 'inv-freq') {
      // inv_freq = 1 / base^(arange(0, dim, 2) / dim), computed in float32 (GPTNeoXRotaryEmbedding).
      const dim = config.rotaryDims;
      const values = Float32Array.from({ length: dim / 2 }, (_, i) => 1 / config.rotaryBase ** ((2 * i) / dim));
      yield new Uint8Array(values.buffer);
      return;
    }
    const rng = new Xorshift32(mix32(seed) ^ hashString(tensor.name));
    for (let start = 0; start < count; start += CHUNK_ELEMENTS) {
      const n = Math.min(CHUNK_ELEMENTS, count - start);
      const bytes = new Uint8Array(n * itemBytes);
      const set = tensor.fill === 'normal' ? tables.centred : tables.aroundOne;
      if (tensor.dtype === 'F32') fillFromTable(rng, set.f32, new Float32Array(bytes.buffer));
      else fillFromTable(rng, tensor.dtype === 'F16' ? set.f16 : set.bf16, new Uint16Array(bytes.buffer));
      yield bytes;
    }
  };
}

interface TableSet {
  readonly f32: Float32Array;
  readonly f16: Uint16Array;
  readonly bf16: Uint16Array;
}

interface Tables {
  /** normal(0, std) */
  readonly centred: TableSet;
  /** 1 + normal(0, std) */
  readonly aroundOne: TableSet;
}

function makeTables(): Tables {
  const set = (f32: Float32Array): TableSet => ({ f32, f16: toHalfTable(f32, 'F16'), bf16: toHalfTable(f32, 'BF16') });
  const centred = normalTable(WEIGHT_STD);
  return { centred: set(centred), aroundOne: set(centred.map((value) => 1 + value)) };
}

/** Greedy sharding in state-dict order, as transformers' shard_checkpoint does. */
export function shardPlan<T extends { dtype: DType; shape: readonly number[] }>(tensors: readonly T[], maxBytes: number | undefined): T[][] {
  if (maxBytes === undefined) return [tensors.slice()];
  const shards: T[][] = [];
  let current: T[] = [];
  let size = 0;
  for (const tensor of tensors) {
    const bytes = elementCount(tensor.shape) * DTYPES[tensor.dtype].bytes;
    if (current.length > 0 && size + bytes > maxBytes) {
      shards.push(current);
      current = [];
      size = 0;
    }
    current.push(tensor);
    size += bytes;
  }
  if (current.length > 0) shards.push(current);
  return shards;
}

type WeightFormat = Exclude<SynthFormat, 'both'>;

function shardName(format: WeightFormat, index: number, count: number): string {
  const pad = (n: number): string => String(n).padStart(5, '0');
  if (count === 1) return format === 'safetensors' ? 'model.safetensors' : 'pytorch_model.bin';
  return format === 'safetensors'
    ? `model-${pad(index + 1)}-of-${pad(count)}.safetensors`
    : `pytorch_model-${pad(index + 1)}-of-${pad(count)}.bin`;
}

async function writeJson(path: string, value: unknown): Promise<void> {
  await writeAtomically(path, (file) => file.write(new TextEncoder().encode(`${JSON.stringify(value, null, 2)}\n`)));
}

/**
 * The only files synth writes (and so the only ones `--force` may delete): config and tokenizer JSON,
 * safetensors / .bin weights (single or `-00001-of-00002` shards) and their index files.
 */
const SYNTH_FILE_NAMES: readonly RegExp[] = [
  /^config\.json$/,
  /^generation_config\.json$/,
  /^tokenizer\.json$/,
  /^tokenizer_config\.json$/,
  /^special_tokens_map\.json$/,
  /^model(-\d{5}-of-\d{5})?\.safetensors$/,
  /^model\.safetensors\.index\.json$/,
  /^pytorch_model(-\d{5}-of-\d{5})?\.bin$/,
  /^pytorch_model\.bin\.index\.json$/,
];

export function isSynthFileName(name: string): boolean {
  return SYNTH_FILE_NAMES.some((pattern) => pattern.test(name));
}

const SYNTH_OWNERSHIP: FolderOwnership = {
  writer: 'synth',
  owns: (name, folder) => !folder && isSynthFileName(name),
  describe: 'config.json, tokenizer files, *.safetensors, pytorch_model*.bin and index JSON',
  flag: '--out',
};

export async function synthCheckpoint(options: SynthOptions): Promise<SynthResult> {
  const force = options.force === true;
  const out = await checkFolderOutput(options.out, force, SYNTH_OWNERSHIP);
  const config = normaliseNeoXConfig(options.config, join(out, 'config.json'));
  if (options.shardBytes !== undefined && !(Number.isSafeInteger(options.shardBytes) && options.shardBytes > 0)) {
    throw new PolyquantError(ERROR_CODES.USAGE, `shard size ${options.shardBytes} is not a positive byte count`);
  }
  const result = await writeFolderAtomically(out, force, SYNTH_OWNERSHIP, (temp) => writeSynthFolder(temp, config, options));
  return { ...result, dir: out };
}

async function writeSynthFolder(dir: string, config: NeoXConfig, options: SynthOptions): Promise<SynthResult> {
  const plan = planSynthTensors(config, options.dtype, options.buffers);
  const tables = makeTables();
  const total = plan.reduce((sum, tensor) => sum + elementCount(tensor.shape) * DTYPES[tensor.dtype].bytes, 0);
  const grandTotal = total * (options.format === 'both' ? 2 : 1);
  let done = 0;
  const toWrite = (tensor: PlannedTensor): TensorToWrite => {
    const chunks = tensorChunks(tensor, config, options.seed, tables);
    return {
      name: tensor.name,
      dtype: tensor.dtype,
      shape: tensor.shape,
      async *chunks() {
        for await (const chunk of chunks()) {
          yield chunk;
          done += chunk.length;
          options.onProgress?.(done, grandTotal);
        }
      },
    };
  };

  const files: string[] = [];
  const configToWrite = { ...options.config, torch_dtype: { F32: 'float32', F16: 'float16', BF16: 'bfloat16' }[options.dtype] };
  await writeJson(join(dir, 'config.json'), configToWrite);
  files.push('config.json');
  await writeJson(join(dir, TOKENIZER_FILE_NAMES.generationConfig), {
    _from_model_config: true,
    bos_token_id: config.bosTokenId,
    eos_token_id: config.eosTokenId,
    transformers_version: options.config['transformers_version'] ?? '4.29.2',
  });
  files.push(TOKENIZER_FILE_NAMES.generationConfig);
  files.push(...(await writeTokenizer(dir, config, options.tokenizerDir)));

  const formats: WeightFormat[] = options.format === 'both' ? ['safetensors', 'bin'] : [options.format];
  for (const format of formats) {
    const shards = shardPlan(plan, format === 'safetensors' ? options.shardBytes : options.binShardBytes);
    const weightMap: Record<string, string> = {};
    for (const [index, shard] of shards.entries()) {
      const name = shardName(format, index, shards.length);
      const tensors = shard.map(toWrite);
      if (format === 'safetensors') await writeSafetensors(join(dir, name), tensors, { format: 'pt' });
      else await writeTorchBin(join(dir, name), tensors);
      for (const tensor of shard) weightMap[tensor.name] = name;
      files.push(name);
    }
    if (shards.length > 1) {
      const indexName = format === 'safetensors' ? 'model.safetensors.index.json' : 'pytorch_model.bin.index.json';
      await writeJson(join(dir, indexName), { metadata: { total_size: total }, weight_map: weightMap });
      files.push(indexName);
    }
  }
  return { dir, files, tensors: plan.length, bytes: total * formats.length };
}

async function writeTokenizer(dir: string, config: NeoXConfig, tokenizerDir: string | undefined): Promise<string[]> {
  const names = [TOKENIZER_FILE_NAMES.tokenizer, TOKENIZER_FILE_NAMES.tokenizerConfig, TOKENIZER_FILE_NAMES.specialTokensMap];
  if (tokenizerDir !== undefined) {
    const written: string[] = [];
    for (const name of names) {
      const source = join(tokenizerDir, name);
      if (!(await pathExists(source))) continue;
      // Read and rewrite rather than copyFile, which would carry over a read-only source's mode bits.
      const bytes = await readWholeFile(source, 'the tokenizer file', MAX_JSON_FILE_BYTES);
      await writeAtomically(join(dir, name), (file) => file.write(bytes));
      written.push(name);
    }
    if (!written.includes(TOKENIZER_FILE_NAMES.tokenizer)) {
      throw new PolyquantError(ERROR_CODES.NOT_FOUND, 'the tokenizer folder has no tokenizer.json', { file: tokenizerDir });
    }
    return written;
  }
  const { tokenizer, vocabSize } = buildTinyTokenizer();
  if (vocabSize > config.vocabSize) {
    throw new PolyquantError(ERROR_CODES.CONFIG, `the tiny tokenizer has ${vocabSize} ids, over vocab_size ${config.vocabSize}`);
  }
  await writeJson(join(dir, TOKENIZER_FILE_NAMES.tokenizer), tokenizer);
  await writeJson(join(dir, TOKENIZER_FILE_NAMES.tokenizerConfig), TINY_TOKENIZER_CONFIG);
  await writeJson(join(dir, TOKENIZER_FILE_NAMES.specialTokensMap), TINY_SPECIAL_TOKENS_MAP);
  return names;
}

/** Whether `path` is a folder that looks like a polyglot-ko tokenizer source. */
export async function isTokenizerDir(path: string): Promise<boolean> {
  return (await stat(join(path, TOKENIZER_FILE_NAMES.tokenizer)).catch(() => undefined))?.isFile() === true;
}
