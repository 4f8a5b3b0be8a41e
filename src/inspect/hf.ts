/**
 * `polyquant inspect` for Hugging Face inputs: a model folder, or a single .safetensors / .bin file.
 * Produces an InspectReport (the documented JSON shape, schema `polyquant.inspect/2`, docs/schemas.md) that
 * the CLI prints as a table or as JSON.
 */
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { basename, dirname, relative, resolve } from 'node:path';
import { GPT_NEOX_ARCHITECTURE, type NeoXConfig, bufferKind } from '../arch/gpt-neox.js';
import { ERROR_CODES, PolyquantError } from '../errors.js';
import { ioError, withFile } from '../io/file.js';
import { type WeightsPreference, parameterCount, readCheckpoint } from '../readers/checkpoint.js';
import { readSafetensors } from '../readers/safetensors.js';
import { rowsForChunkBytes, type TensorRef } from '../readers/tensor-ref.js';
import { summariseTokenizer, type TokenizerSummary } from '../readers/tokenizer.js';
import { readTorchBin } from '../readers/torch-bin.js';
import type { DType } from '../tensor/dtype.js';

export const INSPECT_SCHEMA = 'polyquant.inspect/2';

export interface InspectTensor {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly bytes: number;
  /** File holding the tensor, relative to the inspected folder (or the file's own name). */
  readonly file: string;
  /** sha256 of the tensor's bytes as stored (with --hash). */
  readonly sha256?: string;
}

export interface InspectSkipped extends InspectTensor {
  readonly reason: string;
}

export interface InspectReport {
  readonly schema: typeof INSPECT_SCHEMA;
  readonly path: string;
  readonly kind: 'hf-folder' | 'safetensors' | 'torch-bin';
  /** GPTNeoXForCausalLM, or null for a bare tensor file whose names do not say. */
  readonly architecture: string | null;
  /** Normalised config (null for a bare tensor file). */
  readonly config: NeoXConfig | null;
  /** Number of parameters (elements of parameter tensors; buffers excluded). */
  readonly parameters: number;
  /** Bytes of parameter tensors as stored. */
  readonly bytes: number;
  readonly bytesByDtype: Readonly<Record<string, number>>;
  readonly weights: {
    readonly format: 'safetensors' | 'bin';
    readonly index: string | null;
    readonly files: readonly { readonly file: string; readonly bytes: number }[];
  };
  readonly tensors: readonly InspectTensor[];
  readonly skipped: readonly InspectSkipped[];
  readonly tokenizer: TokenizerSummary | null;
  readonly warnings: readonly string[];
}

export interface InspectOptions {
  readonly weights?: WeightsPreference;
  /** Compute each tensor's sha256 (reads every byte). */
  readonly hash?: boolean;
  /** Called as bytes are hashed: done and total bytes. */
  readonly onProgress?: (done: number, total: number) => void;
}

/** Bytes per read while hashing: ~1 MiB chunks in one reused buffer stream fastest (BENCHMARKS.md). */
const HASH_CHUNK_BYTES = 1 << 20;

export async function inspectHf(path: string, options: InspectOptions = {}): Promise<InspectReport> {
  const absolute = resolve(path);
  let isDirectory: boolean;
  try {
    isDirectory = (await stat(absolute)).isDirectory();
  } catch (error) {
    throw ioError(absolute, 'open the input', error);
  }
  return isDirectory ? inspectFolder(absolute, options) : inspectTensorFile(absolute, options);
}

async function inspectFolder(dir: string, options: InspectOptions): Promise<InspectReport> {
  // inspect describes what is there: extra layers are reported as a warning, not refused.
  const checkpoint = await readCheckpoint(dir, { weights: options.weights ?? 'auto', extraLayers: 'drop' });
  const parameters = [...checkpoint.tensors.values()];
  const buffers = checkpoint.skipped.map((entry) => entry.tensor);
  const hashes = options.hash ? await hashTensors([...parameters, ...buffers], options) : undefined;
  const describe = (tensor: TensorRef): InspectTensor => describeTensor(tensor, dir, hashes);
  return {
    schema: INSPECT_SCHEMA,
    path: dir,
    kind: 'hf-folder',
    architecture: checkpoint.config.architecture,
    config: checkpoint.config,
    parameters: parameterCount(checkpoint),
    ...byteTotals(parameters),
    weights: {
      format: checkpoint.weights.format,
      index: checkpoint.weights.index === undefined ? null : relative(dir, checkpoint.weights.index),
      files: checkpoint.weights.files.map((file) => ({ file: relative(dir, file.path), bytes: file.bytes })),
    },
    tensors: parameters.map(describe),
    skipped: checkpoint.skipped.map((entry) => ({ ...describe(entry.tensor), reason: entry.reason })),
    tokenizer: summariseTokenizer(checkpoint.tokenizer) ?? null,
    warnings: checkpoint.warnings,
  };
}

async function inspectTensorFile(file: string, options: InspectOptions): Promise<InspectReport> {
  const kind = await sniffTensorFile(file);
  const all = kind === 'safetensors' ? (await readSafetensors(file)).tensors : (await readTorchBin(file)).tensors;
  const parameters = all.filter((tensor) => bufferKind(tensor.name) === undefined);
  const buffers = all.filter((tensor) => bufferKind(tensor.name) !== undefined);
  const hashes = options.hash ? await hashTensors(all, options) : undefined;
  const dir = dirname(file);
  const describe = (tensor: TensorRef): InspectTensor => describeTensor(tensor, dir, hashes);
  const looksNeoX = all.some((tensor) => tensor.name === 'gpt_neox.embed_in.weight');
  let count = 0;
  for (const tensor of parameters) count += tensor.shape.reduce((a, b) => a * b, 1);
  return {
    schema: INSPECT_SCHEMA,
    path: file,
    kind,
    architecture: looksNeoX ? GPT_NEOX_ARCHITECTURE : null,
    config: null,
    parameters: count,
    ...byteTotals(parameters),
    weights: {
      format: kind === 'safetensors' ? 'safetensors' : 'bin',
      index: null,
      files: [{ file: basename(file), bytes: (await stat(file)).size }],
    },
    tensors: parameters.map(describe),
    skipped: buffers.map((tensor) => ({ ...describe(tensor), reason: bufferKind(tensor.name) as string })),
    tokenizer: null,
    warnings: [],
  };
}

/** Tells a safetensors file from a torch zip by its first bytes, whatever its extension. */
async function sniffTensorFile(file: string): Promise<'safetensors' | 'torch-bin'> {
  const head = await withFile(file, (handle) => handle.read(0, Math.min(handle.size, 9)));
  if (head[0] === 0x50 && head[1] === 0x4b) return 'torch-bin';
  if (head[0] === 0x80) return 'torch-bin'; // legacy pickle: readTorchBin explains how to re-save it
  if (file.endsWith('.safetensors') || head[8] === 0x7b) return 'safetensors';
  throw new PolyquantError(ERROR_CODES.UNSUPPORTED, 'not a model folder, .safetensors or PyTorch .bin file', {
    file,
    hint: 'inspect takes an HF model folder, a .safetensors file or a pytorch_model.bin',
  });
}

function describeTensor(tensor: TensorRef, dir: string, hashes: Map<TensorRef, string> | undefined): InspectTensor {
  const hash = hashes?.get(tensor);
  return {
    name: tensor.name,
    dtype: tensor.dtype,
    shape: tensor.shape,
    bytes: tensor.byteLength,
    file: relative(dir, tensor.file),
    ...(hash === undefined ? {} : { sha256: hash }),
  };
}

function byteTotals(tensors: readonly TensorRef[]): { bytes: number; bytesByDtype: Record<string, number> } {
  const bytesByDtype: Record<string, number> = {};
  let bytes = 0;
  for (const tensor of tensors) {
    bytes += tensor.byteLength;
    bytesByDtype[tensor.dtype] = (bytesByDtype[tensor.dtype] ?? 0) + tensor.byteLength;
  }
  return { bytes, bytesByDtype };
}

/** sha256 over each tensor's stored bytes, streamed in row chunks. */
export async function hashTensors(tensors: readonly TensorRef[], options: InspectOptions = {}): Promise<Map<TensorRef, string>> {
  const total = tensors.reduce((sum, tensor) => sum + tensor.byteLength, 0);
  let done = 0;
  const out = new Map<TensorRef, string>();
  for (const tensor of tensors) {
    out.set(tensor, await hashTensor(tensor, (bytes) => {
      done += bytes;
      options.onProgress?.(done, total);
    }));
  }
  return out;
}

export async function hashTensor(tensor: TensorRef, onBytes?: (bytes: number) => void): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of tensor.rows(rowsForChunkBytes(tensor, HASH_CHUNK_BYTES), { reuseBuffer: true })) {
    hash.update(chunk);
    onBytes?.(chunk.length);
  }
  return hash.digest('hex');
}
